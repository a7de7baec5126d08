"""The ``SPACELIFT_TOKEN`` format: base64 of a versioned JSON document (see docs/token.md).

Version 1 is a JSON object with exactly these fields, all required::

    version                1
    pool_id                [a-z0-9], then [a-z0-9-], ending in [a-z0-9]; 1 to 63 characters
    broker_url             mqtts://HOST:PORT (port required, no path, no credentials)
    mqtt_namespace         first topic level, usually "spacelift": [A-Za-z0-9][A-Za-z0-9_-]{0,63}
    control_plane_url      https://HOST[:PORT][/PATH], or http:// to localhost/127.0.0.1/[::1]
    pool_certificate       PEM of the pool's client certificate (one block, at most 16 KiB)
    ca_certificate         PEM of the CA that issued it (one block, at most 16 KiB)
    run_state_signing_key  base64 of the control plane's 32-byte raw Ed25519 public key

Unknown versions, unknown fields, missing fields, duplicate fields and wrong types are refused,
each with its own reason slug. The decoded document is at most 64 KiB. A :class:`Token` is
always valid: the constructor checks every field, so ``from_encoded`` and direct construction
(``build_token`` on the control-plane side) share one set of rules.

The token is a credential: the encoded form is handled as a :class:`Secret`. Its fields are not
secret and ``token inspect`` prints them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, Self
from urllib.parse import SplitResult, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.errors import ConfigurationError
from hardened_launcher.identity.base64text import Base64DecodeError, decode_base64
from hardened_launcher.identity.pem import X509_PARSE_ERRORS, find_blocks
from hardened_launcher.secrets import Secret, wipe_bytearray

TOKEN_VARIABLE = "SPACELIFT_TOKEN"  # noqa: S105 -- the variable name, not a token
SUPPORTED_TOKEN_VERSIONS: tuple[int, ...] = (1,)
CURRENT_TOKEN_VERSION = 1
DEFAULT_MQTT_NAMESPACE = "spacelift"

#: Bound on the decoded JSON document.
MAX_TOKEN_BYTES = 64 * 1024
#: Bound on the encoded text before decoding (base64 expands by 4/3; whitespace is allowed).
MAX_ENCODED_TOKEN_BYTES = 128 * 1024
MAX_POOL_ID_CHARS = 63
MAX_URL_CHARS = 2048
MAX_CERTIFICATE_PEM_CHARS = 16 * 1024
ED25519_PUBLIC_KEY_BYTES = 32

POOL_ID_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
MQTT_NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

FIELD_TYPES: dict[str, type] = {
    "version": int,
    "pool_id": str,
    "broker_url": str,
    "mqtt_namespace": str,
    "control_plane_url": str,
    "pool_certificate": str,
    "ca_certificate": str,
    "run_state_signing_key": str,
}
#: Optional fields of version 1: absent in tokens from older control planes.
OPTIONAL_FIELD_TYPES: dict[str, type] = {
    # Standard base64 of the pool's 32-byte sanitize key (docs/token.md, docs/policy.md).
    "policy_sanitize_key": str,
}
_SANITIZE_KEY_BYTES = 32
_SAFE_FIELD_NAME = re.compile(r"[A-Za-z0-9_]{1,40}")
_REISSUE_HINT = "Copy the token again exactly as the control plane issued it"


#: Every reason slug :meth:`Token.from_encoded` can raise.
TOKEN_REASONS = frozenset(
    {
        "token_empty",
        "token_too_large",
        "token_not_base64",
        "token_not_json",
        "token_field_duplicate",
        "token_not_object",
        "token_version_unsupported",
        "token_field_missing",
        "token_field_unknown",
        "token_field_type",
        "token_field_invalid",
        "token_certificate_invalid",
        "token_signing_key_invalid",
    }
)


class TokenError(ConfigurationError):
    """``SPACELIFT_TOKEN`` was refused. The message names fields, never values."""

    default_reason = "token_invalid"


def is_valid_pool_id(value: str) -> bool:
    """Whether ``value`` is a pool id: a DNS label (lower-case letters, digits, inner hyphens)."""
    return POOL_ID_PATTERN.fullmatch(value) is not None


def _fail(message: str, reason: str, *, hint: str = _REISSUE_HINT) -> NoReturn:
    raise TokenError(message, hint=hint, reason=reason)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    name = host.removesuffix(".")
    if not name or len(name) > 253:
        return False
    return all(_DNS_LABEL.fullmatch(label) for label in name.split("."))


def _split_url(value: str, field: str) -> SplitResult:
    if len(value) > MAX_URL_CHARS:
        _fail(
            f"{field} in the token is longer than {MAX_URL_CHARS} characters", "token_field_invalid"
        )
    if not value.isascii() or any(
        ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value
    ):
        _fail(
            f"{field} in the token contains spaces, control or non-ASCII characters",
            "token_field_invalid",
        )
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is not a number in 0..65535
    except ValueError:
        _fail(f"{field} in the token is not a valid URL", "token_field_invalid")
    if parts.username is not None or parts.password is not None:
        _fail(f"{field} in the token carries credentials; it must not", "token_field_invalid")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        _fail(f"{field} in the token has a query or fragment; it must not", "token_field_invalid")
    host = parts.hostname
    if not host or not _valid_host(host):
        _fail(f"{field} in the token has no valid host name", "token_field_invalid")
    return parts


def _check_broker_url(value: str) -> tuple[str, int]:
    parts = _split_url(value, "broker_url")
    if parts.scheme != "mqtts":
        _fail("broker_url in the token must use mqtts:// (MQTT over TLS)", "token_field_invalid")
    if not parts.port:
        _fail("broker_url in the token must name a port (mqtts://host:8883)", "token_field_invalid")
    if parts.path not in ("", "/"):
        _fail("broker_url in the token must not have a path", "token_field_invalid")
    # _split_url refused a URL without a host, and the port was checked just above.
    return parts.hostname or "", parts.port


def _check_control_plane_url(value: str) -> None:
    parts = _split_url(value, "control_plane_url")
    if parts.scheme == "https":
        pass
    elif parts.scheme == "http":
        if parts.hostname not in _LOOPBACK_HOSTS:
            _fail(
                "control_plane_url in the token uses http:// to a host other than localhost; "
                "only https:// is accepted there",
                "token_field_invalid",
            )
    else:
        _fail("control_plane_url in the token must use https://", "token_field_invalid")
    if parts.port == 0:
        _fail("control_plane_url in the token has port 0", "token_field_invalid")


def check_token_urls(*, broker_url: str, control_plane_url: str) -> None:
    """Raise :class:`TokenError` when a token carrying these URLs would be refused; the
    control plane checks its defaults with this before it issues any token."""
    _check_broker_url(broker_url)
    _check_control_plane_url(control_plane_url)


def _load_certificate(pem: str, field: str) -> x509.Certificate:
    if len(pem) > MAX_CERTIFICATE_PEM_CHARS:
        _fail(
            f"{field} in the token is larger than {MAX_CERTIFICATE_PEM_CHARS // 1024} KiB",
            "token_certificate_invalid",
        )
    if not pem.isascii():
        _fail(f"{field} in the token is not a PEM certificate", "token_certificate_invalid")
    data = pem.encode("ascii")
    blocks = find_blocks(data)
    if len(blocks) != 1 or blocks[0].label != "CERTIFICATE" or not blocks[0].complete:
        _fail(
            f"{field} in the token is not exactly one complete PEM certificate",
            "token_certificate_invalid",
        )
    if data[: blocks[0].start].strip() or data[blocks[0].end :].strip():
        _fail(f"{field} in the token has text around its PEM block", "token_certificate_invalid")
    try:
        cert = x509.load_pem_x509_certificate(data)
        # cryptography parses these lazily; touch them so a Token never holds a broken one.
        _ = (cert.subject, cert.issuer, cert.extensions, cert.not_valid_after_utc)
        cert.public_key()
    except X509_PARSE_ERRORS as exc:
        raise TokenError(
            f"{field} in the token is a PEM block that does not parse as an X.509 certificate",
            hint=_REISSUE_HINT,
            reason="token_certificate_invalid",
        ) from exc
    return cert


def _load_sanitize_key(value: str) -> Secret:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        _fail("policy_sanitize_key in the token is not standard base64", "token_field_invalid")
    if len(raw) != _SANITIZE_KEY_BYTES:
        _fail(
            f"policy_sanitize_key in the token is not {_SANITIZE_KEY_BYTES} bytes",
            "token_field_invalid",
        )
    return Secret(raw)


def _load_signing_key(value: str) -> ed25519.Ed25519PublicKey:
    raw = bytearray()
    try:
        raw = decode_base64(value.encode("utf-8"))
        if len(raw) != ED25519_PUBLIC_KEY_BYTES:
            _fail(
                "run_state_signing_key in the token is not 32 bytes of Ed25519 public key",
                "token_signing_key_invalid",
            )
        return ed25519.Ed25519PublicKey.from_public_bytes(bytes(raw))
    except (Base64DecodeError, ValueError) as exc:
        raise TokenError(
            "run_state_signing_key in the token is not a base64 Ed25519 public key",
            hint=_REISSUE_HINT,
            reason="token_signing_key_invalid",
        ) from exc
    finally:
        wipe_bytearray(raw)


class _DuplicateFieldError(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateFieldError(key)
        result[key] = value
    return result


def _reject_constant(_name: str) -> NoReturn:
    raise ValueError("NaN and Infinity are not JSON")


def _field_label(name: str) -> str:
    return repr(name) if _SAFE_FIELD_NAME.fullmatch(name) else "a field with an unusual name"


@dataclass(frozen=True, kw_only=True, repr=False)
class Token:
    """A parsed, validated token. Build with :meth:`from_encoded` or by keyword."""

    version: int = CURRENT_TOKEN_VERSION
    pool_id: str
    broker_url: str
    mqtt_namespace: str = DEFAULT_MQTT_NAMESPACE
    control_plane_url: str
    pool_certificate: x509.Certificate
    ca_certificate: x509.Certificate
    run_state_signing_key: ed25519.Ed25519PublicKey
    #: The pool's sanitize key (policy input's ``sanitized:`` form); None in older tokens.
    policy_sanitize_key: Secret | None = field(default=None, compare=False)
    broker_host: str = field(init=False, compare=False)
    broker_port: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if type(self.version) is not int:
            _fail("version in the token must be an integer", "token_field_type")
        if self.version not in SUPPORTED_TOKEN_VERSIONS:
            _fail(
                f"token version {self.version} is not supported; this launcher reads "
                f"version {', '.join(map(str, SUPPORTED_TOKEN_VERSIONS))}",
                "token_version_unsupported",
                hint="Upgrade the launcher, or ask the control plane for a token of a "
                "supported version",
            )
        for name in ("pool_id", "broker_url", "mqtt_namespace", "control_plane_url"):
            if not isinstance(getattr(self, name), str):
                _fail(f"{name} in the token must be a string", "token_field_type")
        if not is_valid_pool_id(self.pool_id):
            _fail(
                "pool_id in the token is not a pool id (1-63 lower-case letters, digits and "
                "inner hyphens)",
                "token_field_invalid",
            )
        if MQTT_NAMESPACE_PATTERN.fullmatch(self.mqtt_namespace) is None:
            _fail(
                "mqtt_namespace in the token is not one MQTT topic level (1-64 letters, "
                "digits, '_' or '-')",
                "token_field_invalid",
            )
        host, port = _check_broker_url(self.broker_url)
        object.__setattr__(self, "broker_host", host)
        object.__setattr__(self, "broker_port", port)
        _check_control_plane_url(self.control_plane_url)
        for name in ("pool_certificate", "ca_certificate"):
            if not isinstance(getattr(self, name), x509.Certificate):
                _fail(f"{name} in the token must be a certificate", "token_field_type")
        if not isinstance(self.run_state_signing_key, ed25519.Ed25519PublicKey):
            _fail(
                "run_state_signing_key in the token must be an Ed25519 public key",
                "token_field_type",
            )
        if self.policy_sanitize_key is not None and (
            not isinstance(self.policy_sanitize_key, Secret)
            or len(self.policy_sanitize_key) != _SANITIZE_KEY_BYTES
        ):
            _fail(
                f"policy_sanitize_key in the token must be {_SANITIZE_KEY_BYTES} bytes",
                "token_field_invalid",
            )

    # -- parsing ---------------------------------------------------------------------------
    @classmethod
    def from_encoded(cls, encoded: str | bytes | Secret) -> Self:
        """Decode the ``SPACELIFT_TOKEN`` text (base64 of the JSON document)."""
        if isinstance(encoded, Secret):
            with encoded.view() as view:
                return cls._from_encoded_bytes(view)
        raw = encoded.encode("utf-8", "surrogatepass") if isinstance(encoded, str) else encoded
        return cls._from_encoded_bytes(memoryview(raw))

    @classmethod
    def _from_encoded_bytes(cls, view: memoryview) -> Self:
        if len(view) > MAX_ENCODED_TOKEN_BYTES:
            _fail(
                f"{TOKEN_VARIABLE} is larger than {MAX_ENCODED_TOKEN_BYTES // 1024} KiB",
                "token_too_large",
            )
        stripped = bytes(view).strip()
        if not stripped:
            _fail(
                f"{TOKEN_VARIABLE} is empty",
                "token_empty",
                hint="Set it to the token the control plane issued when the pool was created",
            )
        if stripped.startswith(b"{"):
            _fail(
                f"{TOKEN_VARIABLE} holds JSON itself, not its base64 encoding",
                "token_not_base64",
                hint="Set it to the token exactly as issued (it is base64 text)",
            )
        try:
            decoded = decode_base64(view)
        except Base64DecodeError as exc:
            raise TokenError(
                f"{TOKEN_VARIABLE} is not base64 text",
                hint=_REISSUE_HINT,
                reason="token_not_base64",
            ) from exc
        if len(decoded) > MAX_TOKEN_BYTES:
            _fail(
                f"{TOKEN_VARIABLE} decodes to more than {MAX_TOKEN_BYTES // 1024} KiB",
                "token_too_large",
            )
        try:
            text = decoded.decode("utf-8")
            document = json.loads(
                text,
                object_pairs_hook=_object_without_duplicates,
                parse_constant=_reject_constant,
            )
        except _DuplicateFieldError as exc:
            raise TokenError(
                f"{TOKEN_VARIABLE} repeats a field",
                hint=_REISSUE_HINT,
                reason="token_field_duplicate",
            ) from exc
        except (ValueError, RecursionError) as exc:
            raise TokenError(
                f"{TOKEN_VARIABLE} does not decode to JSON",
                hint=_REISSUE_HINT,
                reason="token_not_json",
            ) from exc
        finally:
            wipe_bytearray(decoded)
        if not isinstance(document, dict):
            _fail(f"{TOKEN_VARIABLE} decodes to JSON that is not an object", "token_not_object")
        return cls.from_document(document)

    @classmethod
    def from_document(cls, document: Mapping[str, object]) -> Self:
        """Build a token from the decoded JSON object, checking every field."""
        if "version" not in document:
            _fail("the token has no version field", "token_field_missing")
        version = document["version"]
        if type(version) is not int:
            _fail("version in the token must be an integer", "token_field_type")
        if version not in SUPPORTED_TOKEN_VERSIONS:
            shown = str(version) if -(10**6) < version < 10**6 else "(out of range)"
            _fail(
                f"token version {shown} is not supported; this launcher reads version "
                f"{', '.join(map(str, SUPPORTED_TOKEN_VERSIONS))}",
                "token_version_unsupported",
                hint="Upgrade the launcher, or ask the control plane for a token of a "
                "supported version",
            )
        missing = sorted(set(FIELD_TYPES) - set(document))
        if missing:
            _fail(f"the token is missing field(s): {', '.join(missing)}", "token_field_missing")
        unknown = sorted(set(document) - set(FIELD_TYPES) - set(OPTIONAL_FIELD_TYPES))
        if unknown:
            names = ", ".join(_field_label(name) for name in unknown[:5])
            _fail(
                f"the token has unknown field(s) for version {version}: {names}",
                "token_field_unknown",
            )
        for name, expected in (FIELD_TYPES | OPTIONAL_FIELD_TYPES).items():
            if name in document and type(document[name]) is not expected:
                _fail(
                    f"{name} in the token must be a {'string' if expected is str else 'integer'}",
                    "token_field_type",
                )
        fields: dict[str, str] = {
            name: value for name, value in document.items() if isinstance(value, str)
        }
        return cls(
            version=version,
            pool_id=fields["pool_id"],
            broker_url=fields["broker_url"],
            mqtt_namespace=fields["mqtt_namespace"],
            control_plane_url=fields["control_plane_url"],
            pool_certificate=_load_certificate(fields["pool_certificate"], "pool_certificate"),
            ca_certificate=_load_certificate(fields["ca_certificate"], "ca_certificate"),
            run_state_signing_key=_load_signing_key(fields["run_state_signing_key"]),
            policy_sanitize_key=(
                _load_sanitize_key(fields["policy_sanitize_key"])
                if "policy_sanitize_key" in fields
                else None
            ),
        )

    # -- encoding --------------------------------------------------------------------------
    def to_document(self) -> dict[str, object]:
        """The JSON object, fields in their documented order."""
        document: dict[str, object] = {
            "version": self.version,
            "pool_id": self.pool_id,
            "broker_url": self.broker_url,
            "mqtt_namespace": self.mqtt_namespace,
            "control_plane_url": self.control_plane_url,
            "pool_certificate": self.pool_certificate.public_bytes(
                serialization.Encoding.PEM
            ).decode("ascii"),
            "ca_certificate": self.ca_certificate.public_bytes(serialization.Encoding.PEM).decode(
                "ascii"
            ),
            "run_state_signing_key": base64.b64encode(
                self.run_state_signing_key.public_bytes_raw()
            ).decode("ascii"),
        }
        if self.policy_sanitize_key is not None:
            document["policy_sanitize_key"] = base64.b64encode(
                self.policy_sanitize_key.reveal()
            ).decode("ascii")
        return document

    def to_encoded(self) -> Secret:
        """The ``SPACELIFT_TOKEN`` text: standard base64 (padded, one line) of compact JSON."""
        document = json.dumps(self.to_document(), separators=(",", ":")).encode("utf-8")
        return Secret.from_bytearray(bytearray(binascii.b2a_base64(document, newline=False)))

    # -- derived, non-secret values --------------------------------------------------------
    @property
    def pool_certificate_sha256(self) -> bytes:
        return self.pool_certificate.fingerprint(hashes.SHA256())

    @property
    def ca_certificate_sha256(self) -> bytes:
        return self.ca_certificate.fingerprint(hashes.SHA256())

    @property
    def signing_key_sha256(self) -> bytes:
        """SHA-256 of the 32 raw bytes of the run-state signing key."""
        return hashlib.sha256(self.run_state_signing_key.public_bytes_raw()).digest()

    def __repr__(self) -> str:
        return (
            f"Token(version={self.version}, pool_id={self.pool_id!r}, "
            f"broker_url={self.broker_url!r}, mqtt_namespace={self.mqtt_namespace!r}, "
            f"control_plane_url={self.control_plane_url!r}, "
            f"pool_certificate_sha256={self.pool_certificate_sha256.hex()[:16]!r}, "
            f"ca_certificate_sha256={self.ca_certificate_sha256.hex()[:16]!r})"
        )

    __str__ = __repr__
