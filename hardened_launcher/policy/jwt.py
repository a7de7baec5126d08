"""``io.jwt.decode_verify`` and ``io.jwt.decode`` for Rego, as launcher builtins (regorus has none).

regorus 0.13.0 as packaged ships no ``io.jwt.*`` builtins, so the launcher registers these two as
engine extensions under their OPA names (regorus accepts dotted extension names, so policies call
them exactly as in OPA). Verification uses ``cryptography``.

``io.jwt.decode_verify(token, constraints)`` returns ``[valid, header, payload]`` as in OPA:

- ``constraints`` is an object with exactly one key source — ``cert`` (PEM: one public key or
  X.509 certificate; more than one block is an error, as in OPA) or ``secret`` (HMAC key,
  UTF-8) — and
  optionally ``alg`` (the only algorithm accepted), ``iss``, ``aud`` and ``time`` (nanoseconds
  since the epoch; default: the clock now).
- Order of checks: signature first (``alg`` from the header must be supported, match the
  ``alg`` constraint and the key type), then ``exp`` (valid while ``time < exp``), ``nbf``
  (valid from ``time >= nbf``), ``iss`` (when constrained, the claim must equal it) and ``aud``
  (a token with an ``aud`` claim needs an ``aud`` constraint that equals it or is in its list;
  without the claim, an ``aud`` constraint fails) — OPA's rules.
- A malformed token (not three strict base64url segments with a JSON-object header, or too long)
  raises ``ValueError("io.jwt.decode_verify: the token is malformed")``, as OPA errors: an
  evaluation error denies the run.
- Every other failure that depends on the *token* gives ``[false, {}, {}]``:
  unsupported or mismatched ``alg`` (``none`` included; an RSA/EC/Ed key never verifies an
  ``HS*`` token and a secret never verifies anything but ``HS*``), bad signature, failed claim,
  a ``crit`` header, a nested (``cty: JWT``) token, a payload with duplicate JSON keys or
  numbers the engine cannot hold. Nothing about the token ever reaches an error message.
- A malformed *constraints* object (unknown key, no key or both, a PEM that holds no usable key,
  an RSA key under 2048 bits, an unknown ``alg`` or one the key cannot verify) is the policy's
  own mistake and raises ``ValueError`` naming the constraint, never its value — OPA reports
  these as errors too. In the launcher that is an evaluation error, so the run is denied.

``io.jwt.decode(token)`` returns ``[header, payload, signature_hex]`` without verifying anything;
a malformed token raises ``ValueError("io.jwt.decode: the token is malformed")``.

Algorithms: RS256/384/512, PS256/384/512 (salt length = hash length, RFC 7518), ES256/384/512
(JOSE ``r || s`` signatures of exactly the curve's size), EdDSA (Ed25519, Ed448), HS256/384/512
(constant-time compare). Not supported (OPA supports them): JWK/JWKS in ``cert``, nested tokens,
``kid`` selection (every configured key is tried).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

DECODE_VERIFY_BUILTIN: Final = "io.jwt.decode_verify"
DECODE_BUILTIN: Final = "io.jwt.decode"
MAX_TOKEN_CHARS: Final = 16 * 1024
MAX_CERT_CHARS: Final = 64 * 1024
MAX_PEM_KEYS: Final = 16
MIN_RSA_BITS: Final = 2048
MAX_CLAIM_DEPTH: Final = 32
CONSTRAINT_KEYS: Final = frozenset({"cert", "secret", "alg", "iss", "aud", "time"})

_I64_MIN: Final = -(2**63)
_U64_MAX: Final = 2**64 - 1
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-]*")
_PEM_BEGIN: Final = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")

PublicKey: TypeAlias = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

_HASHES: Final[Mapping[str, Callable[[], hashes.HashAlgorithm]]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_HMAC_DIGESTS: Final = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
# ES alg -> (curve name, bytes per coordinate)
_EC_CURVES: Final = {
    "ES256": ("secp256r1", 32),
    "ES384": ("secp384r1", 48),
    "ES512": ("secp521r1", 66),
}
ASYMMETRIC_ALGS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", *_EC_CURVES, "EdDSA"}
)
HMAC_ALGS: Final = frozenset(_HMAC_DIGESTS)
SUPPORTED_ALGS: Final = ASYMMETRIC_ALGS | HMAC_ALGS

Result: TypeAlias = tuple[bool, dict[str, object], dict[str, object]]


def _unverified() -> Result:
    return False, {}, {}


class _Malformed(Exception):  # noqa: N818 - internal signal, never escapes this module
    """The token is not a well-formed JWS compact serialization (never carries token text)."""


@dataclass(frozen=True, kw_only=True)
class Constraints:
    keys: tuple[PublicKey, ...]
    secret: bytes | None
    alg: str | None
    iss: str | None
    aud: str | None
    time_ns: int


def _constraint_error(text: str) -> ValueError:
    return ValueError(f"{DECODE_VERIFY_BUILTIN}: {text}")


# -- constraints ---------------------------------------------------------------------------------


def _pem_blocks(text: str) -> list[str]:
    """The ``-----BEGIN X-----`` … ``-----END X-----`` blocks, in one linear pass over the lines."""
    blocks: list[str] = []
    label: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if label is None:
            begin = _PEM_BEGIN.fullmatch(stripped)
            if begin:
                label, lines = begin.group(1), [stripped]
        else:
            lines.append(stripped)
            if stripped == f"-----END {label}-----":
                blocks.append("\n".join(lines) + "\n")
                label = None
    return blocks


@functools.lru_cache(maxsize=16)
def _public_keys(pem: str) -> tuple[PublicKey, ...]:
    """Every public key in a PEM text (keys and certificates), checked once per distinct text."""
    if len(pem) > MAX_CERT_CHARS:
        raise _constraint_error(f"constraint cert is longer than {MAX_CERT_CHARS} characters")
    blocks = _pem_blocks(pem)
    if not blocks:
        raise _constraint_error("constraint cert holds no PEM block (JWK is not supported)")
    if len(blocks) > MAX_PEM_KEYS:
        raise _constraint_error(f"constraint cert holds more than {MAX_PEM_KEYS} PEM blocks")
    if len(blocks) > 1:
        # OPA refuses it ("extra data after a PEM certificate block"): a second key that signs
        # here would let through a run OPA denies.
        raise _constraint_error("constraint cert holds more than one PEM block (OPA refuses it)")
    keys: list[PublicKey] = []
    for block in blocks:
        raw = block.encode("ascii", "replace")
        try:
            if block.startswith("-----BEGIN CERTIFICATE-----"):
                loaded: object = x509.load_pem_x509_certificate(raw).public_key()
            else:
                loaded = serialization.load_pem_public_key(raw)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise _constraint_error(
                "constraint cert holds a PEM block that is not a public key or certificate"
            ) from None
        if isinstance(loaded, rsa.RSAPublicKey) and loaded.key_size < MIN_RSA_BITS:
            raise _constraint_error(f"constraint cert holds an RSA key under {MIN_RSA_BITS} bits")
        if not isinstance(
            loaded,
            rsa.RSAPublicKey
            | ec.EllipticCurvePublicKey
            | ed25519.Ed25519PublicKey
            | ed448.Ed448PublicKey,
        ):
            raise _constraint_error("constraint cert holds a key type JWTs cannot use")
        keys.append(loaded)
    return tuple(keys)


def _key_fits(key: PublicKey, alg: str) -> bool:
    if alg.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey)
    if alg in _EC_CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _EC_CURVES[alg][0]
    if alg == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


def _optional_string(constraints: Mapping[str, object], name: str) -> str | None:
    """The constraint's value; absent or ``""`` is ``None`` (OPA treats ``""`` as unset)."""
    if name not in constraints:
        return None
    value = constraints[name]
    if not isinstance(value, str):
        raise _constraint_error(f"constraint {name} must be a string")
    return value or None


def parse_constraints(
    constraints: object, *, now_ns: Callable[[], int] = time.time_ns
) -> Constraints:
    """Check ``constraints``; a mistake raises ``ValueError`` naming the field, never a value."""
    if not isinstance(constraints, dict):
        raise _constraint_error("constraints must be an object")
    for name in constraints:
        if name not in CONSTRAINT_KEYS:
            shown = name[:40] if isinstance(name, str) else type(name).__name__
            raise _constraint_error(f"unknown token validation constraint {shown!r}")
    cert = _optional_string(constraints, "cert")
    secret = _optional_string(constraints, "secret")
    if cert is not None and secret is not None:
        raise _constraint_error("give either constraint cert or secret, not both")
    if not cert and not secret:
        raise _constraint_error("constraint cert or secret is required")
    keys = _public_keys(cert) if cert else ()
    alg = _optional_string(constraints, "alg")
    if alg is not None:
        if alg not in SUPPORTED_ALGS:
            raise _constraint_error(
                f"constraint alg must be one of {', '.join(sorted(SUPPORTED_ALGS))}"
            )
        if (secret and alg not in HMAC_ALGS) or (keys and not any(_key_fits(k, alg) for k in keys)):
            raise _constraint_error("constraint alg does not fit the configured key")
    when = constraints.get("time")
    if "time" in constraints:
        if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
            raise _constraint_error("constraint time must be a number (nanoseconds)")
        time_ns = int(when)
    else:
        time_ns = now_ns()
    return Constraints(
        keys=keys,
        secret=secret.encode("utf-8") if secret else None,
        alg=alg,
        iss=_optional_string(constraints, "iss"),
        aud=_optional_string(constraints, "aud"),
        time_ns=time_ns,
    )


# -- token parsing -------------------------------------------------------------------------------


def _b64url(segment: str) -> bytes:
    """Strict unpadded base64url: alphabet only, canonical (re-encodes to the same text)."""
    if len(segment) % 4 == 1 or not _SEGMENT.fullmatch(segment):
        raise _Malformed
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise _Malformed from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise _Malformed
    return raw


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _Malformed
        out[key] = value
    return out


def _reject_constant(_: str) -> object:
    raise _Malformed


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Malformed
    return value


def _check_value(value: object, depth: int) -> None:
    """Only values the engine can hold: bounded depth, 64-bit integers, finite floats."""
    if depth > MAX_CLAIM_DEPTH:
        raise _Malformed
    if isinstance(value, dict):
        for item in value.values():
            _check_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)
    elif isinstance(value, int) and not _I64_MIN <= value <= _U64_MAX:
        raise _Malformed


def _json_object(raw: bytes) -> dict[str, object]:
    try:
        doc = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except _Malformed:
        raise
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise _Malformed from None
    if not isinstance(doc, dict):
        raise _Malformed
    _check_value(doc, 1)
    return doc


@dataclass(frozen=True, kw_only=True)
class _Parsed:
    signing_input: bytes
    header: dict[str, object]
    payload_segment: str
    signature: bytes


def _split(token: object) -> _Parsed:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise _Malformed
    parts = token.split(".")
    if len(parts) != 3:
        raise _Malformed
    header_segment, payload_segment, signature_segment = parts
    if not _SEGMENT.fullmatch(payload_segment):
        raise _Malformed
    header = _json_object(_b64url(header_segment))
    return _Parsed(
        signing_input=f"{header_segment}.{payload_segment}".encode("ascii"),
        header=header,
        payload_segment=payload_segment,
        signature=_b64url(signature_segment),
    )


# -- signatures ----------------------------------------------------------------------------------


def _verify_with_key(key: PublicKey, alg: str, data: bytes, signature: bytes) -> bool:
    try:
        if alg.startswith("RS") and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), _HASHES[alg[2:]]())
            return True
        if alg.startswith("PS") and isinstance(key, rsa.RSAPublicKey):
            digest = _HASHES[alg[2:]]()
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            key.verify(signature, data, pss, digest)
            return True
        if alg in _EC_CURVES and isinstance(key, ec.EllipticCurvePublicKey):
            curve, size = _EC_CURVES[alg]
            if key.curve.name != curve or len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(_HASHES[alg[2:]]()))
            return True
        if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
            return True
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return False


def _signature_ok(constraints: Constraints, alg: str, data: bytes, signature: bytes) -> bool:
    if constraints.alg is not None and alg != constraints.alg:
        return False
    if constraints.secret is not None:
        if alg not in HMAC_ALGS:
            return False
        expected = hmac.new(constraints.secret, data, _HMAC_DIGESTS[alg]).digest()
        return hmac.compare_digest(expected, signature)
    # HS* (or anything unknown) with a public key: the key-confusion attack. ``_key_fits``
    # refuses it as well; this is the rule said out loud.
    if alg not in ASYMMETRIC_ALGS:
        return False
    return any(
        _key_fits(key, alg) and _verify_with_key(key, alg, data, signature)
        for key in constraints.keys
    )


# -- claims --------------------------------------------------------------------------------------


def _as_fraction(value: object) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Malformed
    return Fraction(value)


def _audience_ok(constraints: Constraints, payload: Mapping[str, object]) -> bool:
    if "aud" not in payload:
        return constraints.aud is None
    wanted = constraints.aud if constraints.aud is not None else ""
    aud = payload["aud"]
    if isinstance(aud, str):
        return aud == wanted
    return isinstance(aud, list) and any(isinstance(a, str) and a == wanted for a in aud)


def _claims_ok(constraints: Constraints, payload: Mapping[str, object]) -> bool:
    now = Fraction(constraints.time_ns, 10**9)
    if constraints.iss is not None and payload.get("iss") != constraints.iss:
        return False
    if not _audience_ok(constraints, payload):
        return False
    if "exp" in payload and now >= _as_fraction(payload["exp"]):
        return False
    return not ("nbf" in payload and now < _as_fraction(payload["nbf"]))


# -- the builtins --------------------------------------------------------------------------------


def decode_verify(
    token: object, constraints: object, *, now_ns: Callable[[], int] = time.time_ns
) -> Result:
    """OPA's ``io.jwt.decode_verify``; see the module docstring for the exact rules."""
    checked = parse_constraints(constraints, now_ns=now_ns)
    try:
        parsed = _split(token)
    except Exception:  # noqa: BLE001 - never let token text into an error
        # OPA errors on a token that is not three base64url segments with a JSON header: an
        # evaluation error denies the run, where `[false, {}, {}]` could let a rule pass
        raise ValueError(f"{DECODE_VERIFY_BUILTIN}: the token is malformed") from None
    try:
        header = parsed.header
        alg = header.get("alg")
        if not isinstance(alg, str) or "crit" in header:
            return _unverified()
        cty = header.get("cty")
        if isinstance(cty, str) and cty.upper() == "JWT":
            return _unverified()  # nested tokens are not supported
        if not _signature_ok(checked, alg, parsed.signing_input, parsed.signature):
            return _unverified()
        payload = _json_object(_b64url(parsed.payload_segment))
        if not _claims_ok(checked, payload):
            return _unverified()
    except Exception:  # noqa: BLE001 - any token-dependent failure is "not verified", silently
        return _unverified()
    return True, header, payload


def decode(token: object) -> tuple[dict[str, object], dict[str, object], str]:
    """OPA's ``io.jwt.decode``: ``[header, payload, signature_hex]``, verifying nothing."""
    try:
        parsed = _split(token)
        payload = _json_object(_b64url(parsed.payload_segment))
    except Exception:  # noqa: BLE001 - never let token text into an error
        raise ValueError(f"{DECODE_BUILTIN}: the token is malformed") from None
    return parsed.header, payload, parsed.signature.hex()


def extensions() -> tuple[tuple[str, int, Callable[..., object]], ...]:
    """``(name, arity, function)`` for :meth:`regorus.Engine.add_extension`."""

    def decode_verify_builtin(token: object, constraints: object) -> list[object]:
        return list(decode_verify(token, constraints))

    def decode_builtin(token: object) -> list[object]:
        return list(decode(token))

    return (
        (DECODE_VERIFY_BUILTIN, 2, decode_verify_builtin),
        (DECODE_BUILTIN, 1, decode_builtin),
    )
