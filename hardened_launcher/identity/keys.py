"""The pool private key: loading it from ``SPACELIFT_POOL_PRIVATE_KEY``, generating one.

``SPACELIFT_POOL_PRIVATE_KEY`` holds the base64 of the whole PEM key file, exactly as the
upstream worker-pool instructions produce it (``base64 -w 0 spacelift.key``). Accepted:

* PEM labels ``PRIVATE KEY`` (PKCS#8), ``RSA PRIVATE KEY`` (PKCS#1), ``EC PRIVATE KEY`` (SEC1),
  optionally preceded by the ``EC PARAMETERS`` block ``openssl ecparam -genkey`` writes;
* RSA keys of 2048 to 16384 bits, EC keys on P-256 or P-384;
* base64 from ``base64 -w 0``, ``base64 -b 0`` (macOS), plain ``base64`` (wrapped lines), CRLF
  line endings, a trailing newline, missing ``=`` padding.

Every refusal is a :class:`PoolKeyError` with its own reason slug; none of them carries any part
of the input. The decoded PEM lives in a ``bytearray`` that is wiped once parsed (the key then
lives in OpenSSL memory, which OpenSSL clears when the key object is freed).
"""

from __future__ import annotations

import hashlib
import re
from typing import NoReturn, Self

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)

from hardened_launcher.errors import ConfigurationError
from hardened_launcher.identity.base64text import Base64DecodeError, decode_base64
from hardened_launcher.identity.pem import (
    CERTIFICATE_LABELS,
    CSR_LABELS,
    ENCRYPTED_KEY_LABEL,
    PRIVATE_KEY_LABELS,
    PUBLIC_KEY_LABELS,
    PemBlock,
    find_blocks,
    has_begin_line,
)
from hardened_launcher.secrets import Secret, wipe_bytearray

POOL_KEY_VARIABLE = "SPACELIFT_POOL_PRIVATE_KEY"

#: Upper bound on the encoded variable; an RSA-16384 PKCS#8 PEM in base64 is about 17 KiB.
MAX_ENCODED_KEY_BYTES = 64 * 1024
MIN_RSA_KEY_BITS = 2048
#: RSA keys above this size only make every run slower; they are refused as unsupported.
MAX_RSA_KEY_BITS = 16384
DEFAULT_RSA_KEY_BITS = 4096

#: Curves accepted for pool keys, by cryptography curve name → the name we print.
SUPPORTED_CURVES: dict[str, str] = {"secp256r1": "P256", "secp384r1": "P384"}

PoolKeyTypes = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PoolPublicKeyTypes = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_ENCODE_HINT = (
    "Encode the key file on one line: base64 -w 0 spacelift.key "
    "(macOS: base64 -b 0 -i spacelift.key)"
)
_LEGACY_ENCRYPTED = re.compile(rb"Proc-Type:[ \t]*4,[ \t]*ENCRYPTED")
_CURVE_NAMES: dict[str, str] = {"secp521r1": "P521", "secp224r1": "P224", "secp192r1": "P192"}


#: Every reason slug :func:`load_pool_private_key` can raise.
POOL_KEY_REASONS = frozenset(
    {
        "pool_key_empty",
        "pool_key_too_large",
        "pool_key_not_encoded",
        "pool_key_not_base64",
        "pool_key_double_encoded",
        "pool_key_not_pem",
        "pool_key_not_private_key",
        "pool_key_is_csr",
        "pool_key_is_certificate",
        "pool_key_is_public_key",
        "pool_key_encrypted",
        "pool_key_ambiguous",
        "pool_key_truncated",
        "pool_key_unsupported",
        "pool_key_too_small",
    }
)


class PoolKeyError(ConfigurationError):
    """The pool private key was refused. The message never contains any part of the key."""

    default_reason = "pool_key_invalid"


# -- describing keys --------------------------------------------------------------------------


def describe_public_key(key: PublicKeyTypes | CertificatePublicKeyTypes) -> str:
    """A short algorithm label: ``RSA-4096``, ``EC-P256``, ``EC-P384``, ``Ed25519``…"""
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        name = key.curve.name
        return f"EC-{SUPPORTED_CURVES.get(name) or _CURVE_NAMES.get(name, name)}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA-{key.key_size}"
    if isinstance(key, x25519.X25519PublicKey):
        return "X25519"
    if isinstance(key, x448.X448PublicKey):
        return "X448"
    return "unknown"


def public_key_der(key: PublicKeyTypes | CertificatePublicKeyTypes) -> bytes:
    """The DER SubjectPublicKeyInfo of ``key``."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_id(key: PublicKeyTypes | CertificatePublicKeyTypes) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo: the key id the envelope header carries."""
    return hashlib.sha256(public_key_der(key)).digest()


def check_key_strength(
    key: PublicKeyTypes | CertificatePublicKeyTypes,
) -> PoolPublicKeyTypes | str:
    """Return ``key`` if it is acceptable as a pool key, else a sentence saying why not."""
    label = describe_public_key(key)
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_KEY_BITS:
            return f"an {label} key is too small; RSA pool keys need at least 2048 bits"
        if key.key_size > MAX_RSA_KEY_BITS:
            return f"an {label} key is larger than the 16384 bits supported"
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name in SUPPORTED_CURVES:
            return key
        return f"an {label} key uses a curve that is not supported; use P-256 or P-384"
    return f"an {label} key is not supported; pool keys are RSA (2048+ bits) or EC P-256/P-384"


# -- the key wrapper --------------------------------------------------------------------------


class PoolPrivateKey:
    """The pool's private key. Its ``repr`` shows only the algorithm and the key id.

    Build one with :func:`load_pool_private_key`, :meth:`from_pem` or :meth:`generate`; the
    constructor refuses key types and sizes the launcher does not support.
    """

    __slots__ = ("_algorithm", "_key", "_key_id")

    def __init__(self, key: PoolKeyTypes) -> None:
        public = key.public_key()
        checked = check_key_strength(public)
        if isinstance(checked, str):
            reason = (
                "pool_key_too_small"
                if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_KEY_BITS
                else "pool_key_unsupported"
            )
            raise PoolKeyError(
                f"the pool key is not usable: {checked}",
                hint="Generate a new key with `hardened-launcher keygen` (RSA-4096)",
                reason=reason,
            )
        self._key = key
        self._algorithm = describe_public_key(public)
        self._key_id = public_key_id(public)

    @classmethod
    def generate(cls, *, rsa_key_bits: int = DEFAULT_RSA_KEY_BITS) -> Self:
        """A fresh RSA key (public exponent 65537)."""
        if not MIN_RSA_KEY_BITS <= rsa_key_bits <= MAX_RSA_KEY_BITS:
            raise PoolKeyError(
                f"cannot generate an RSA key of {rsa_key_bits} bits",
                hint="Use between 2048 and 16384 bits; 4096 is the default",
                reason="pool_key_too_small"
                if rsa_key_bits < MIN_RSA_KEY_BITS
                else "pool_key_unsupported",
            )
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=rsa_key_bits))

    @classmethod
    def generate_ec(cls, *, curve: str = "P256") -> Self:
        """A fresh EC key on P-256 or P-384 (tests and EC pools)."""
        curves: dict[str, ec.EllipticCurve] = {"P256": ec.SECP256R1(), "P384": ec.SECP384R1()}
        if curve not in curves:
            raise PoolKeyError(
                "cannot generate an EC key on that curve",
                hint="Use P256 or P384",
                reason="pool_key_unsupported",
            )
        return cls(ec.generate_private_key(curves[curve]))

    @classmethod
    def from_pem(cls, pem: Secret, *, source: str = "the pool key file") -> Self:
        """Parse a PEM private key (not base64-wrapped), e.g. the content of ``spacelift.key``."""
        buf = bytearray()
        try:
            with pem.view() as view:
                buf = bytearray(view)
            return cls(_parse_pem_key(buf, source=source))
        finally:
            wipe_bytearray(buf)

    # -- public, non-secret properties -------------------------------------------------------
    @property
    def algorithm(self) -> str:
        """``RSA-4096``, ``EC-P256`` or ``EC-P384``."""
        return self._algorithm

    @property
    def key_id(self) -> bytes:
        """SHA-256 of the public key's DER SubjectPublicKeyInfo (32 bytes)."""
        return self._key_id

    @property
    def key_id_hex(self) -> str:
        return self._key_id.hex()

    @property
    def public_key(self) -> PoolPublicKeyTypes:
        return self._key.public_key()

    @property
    def private_key(self) -> PoolKeyTypes:
        """The ``cryptography`` key object, for decrypting run state and TLS. Do not log it."""
        return self._key

    def to_pem(self) -> Secret:
        """The key as unencrypted PKCS#8 PEM (what ``openssl req -nodes`` writes).

        ``cryptography`` returns immutable ``bytes``; that intermediate copy cannot be wiped and
        is left to the garbage collector. Wipe the returned secret when done.
        """
        return Secret.from_bytearray(
            bytearray(
                self._key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        )

    # -- renderings and copies ---------------------------------------------------------------
    def __repr__(self) -> str:
        return f"PoolPrivateKey(algorithm={self._algorithm!r}, key_id={self.key_id_hex[:16]!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PoolPrivateKey):
            return NotImplemented
        return self._key_id == other._key_id

    def __hash__(self) -> int:
        return hash(self._key_id)

    def __reduce__(self) -> NoReturn:
        raise TypeError("pool keys cannot be pickled")

    def __copy__(self) -> NoReturn:
        raise TypeError("pool keys are not copied; pass the same object")

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError("pool keys are not copied; pass the same object")


# -- loading ----------------------------------------------------------------------------------


def load_pool_private_key(encoded: Secret, *, source: str = POOL_KEY_VARIABLE) -> PoolPrivateKey:
    """Decode ``SPACELIFT_POOL_PRIVATE_KEY`` (base64 of the PEM file) into a pool key.

    ``source`` names the variable in messages. ``encoded`` is left as it is; the caller owns it.
    """
    if not encoded:
        raise PoolKeyError(
            f"{source} is empty",
            hint=f"Set it to the base64 of the pool private key file. {_ENCODE_HINT}",
            reason="pool_key_empty",
        )
    if len(encoded) > MAX_ENCODED_KEY_BYTES:
        raise PoolKeyError(
            f"{source} is larger than {MAX_ENCODED_KEY_BYTES // 1024} KiB, far more than a key",
            hint=f"Set it to the base64 of the pool private key file only. {_ENCODE_HINT}",
            reason="pool_key_too_large",
        )
    decoded = bytearray()
    try:
        with encoded.view() as view:
            if has_begin_line(view):
                raise PoolKeyError(
                    f"{source} holds a PEM file itself, not its base64 encoding",
                    hint=_ENCODE_HINT,
                    reason="pool_key_not_encoded",
                )
            try:
                decoded = decode_base64(view)
            except Base64DecodeError as exc:
                raise PoolKeyError(
                    f"{source} is not base64 text",
                    hint=_ENCODE_HINT,
                    reason="pool_key_not_base64",
                ) from exc
        if not decoded or decoded.isspace():  # (strip() would leave an unwiped copy)
            raise PoolKeyError(
                f"{source} decodes to nothing",
                hint=f"Set it to the base64 of the pool private key file. {_ENCODE_HINT}",
                reason="pool_key_empty",
            )
        return PoolPrivateKey(_parse_pem_key(decoded, source=source))
    finally:
        wipe_bytearray(decoded)


def _parse_pem_key(buf: bytearray, *, source: str) -> PoolKeyTypes:
    """Classify the PEM blocks in ``buf`` and parse the one private key. Does not wipe ``buf``."""
    blocks = find_blocks(buf)
    if not blocks:
        if _is_base64_of_pem(buf):
            raise PoolKeyError(
                f"{source} is base64 of base64: the key file was encoded twice",
                hint=f"Encode the PEM file once. {_ENCODE_HINT}",
                reason="pool_key_double_encoded",
            )
        raise PoolKeyError(
            f"{source} does not hold a PEM private key",
            hint=(
                "Use the PEM file made by `hardened-launcher keygen` or `openssl req -nodes`; "
                "a DER key converts with `openssl pkey -inform DER -in k.der -out k.pem`"
            ),
            reason="pool_key_not_pem",
        )
    labels = {block.label for block in blocks}
    if ENCRYPTED_KEY_LABEL in labels:
        _raise_encrypted(source)
    if "OPENSSH PRIVATE KEY" in labels:
        raise PoolKeyError(
            f"{source} holds an OpenSSH-format private key",
            hint="Convert a copy with `ssh-keygen -p -m PKCS8 -f k`, or make a pool key with "
            "`hardened-launcher keygen`",
            reason="pool_key_unsupported",
        )
    if "DSA PRIVATE KEY" in labels:
        raise PoolKeyError(
            f"{source} holds a DSA key; pool keys are RSA (2048+ bits) or EC P-256/P-384",
            hint="Generate a new key with `hardened-launcher keygen`",
            reason="pool_key_unsupported",
        )
    keys = [block for block in blocks if block.label in PRIVATE_KEY_LABELS]
    if not keys:
        _raise_not_a_private_key(labels, source)
    if len(keys) > 1:
        raise PoolKeyError(
            f"{source} holds {len(keys)} private keys; it must hold exactly one",
            hint=f"Encode only the pool key file. {_ENCODE_HINT}",
            reason="pool_key_ambiguous",
        )
    block = keys[0]
    if not block.complete:
        raise PoolKeyError(
            f"{source} holds a PEM private key with no matching END line: it was cut short",
            hint=f"Encode the complete key file again. {_ENCODE_HINT}",
            reason="pool_key_truncated",
        )
    body = memoryview(buf)[block.start : block.end]
    try:
        if _LEGACY_ENCRYPTED.search(body):
            _raise_encrypted(source)
        return _load_block(body, block, source)
    finally:
        body.release()


def _load_block(body: memoryview, block: PemBlock, source: str) -> PoolKeyTypes:
    try:
        key: PrivateKeyTypes = serialization.load_pem_private_key(body, password=None)
    except TypeError as exc:  # cryptography: "Password was not given but private key is encrypted"
        _raise_encrypted(source, cause=exc)
    except UnsupportedAlgorithm as exc:
        raise PoolKeyError(
            f"{source} holds a private key of a type that is not supported",
            hint="Pool keys are RSA (2048+ bits) or EC P-256/P-384; "
            "generate one with `hardened-launcher keygen`",
            reason="pool_key_unsupported",
        ) from exc
    except ValueError as exc:
        raise PoolKeyError(
            f"{source} holds a PEM private key ({_describe_label(block.label)}) whose body "
            "does not parse: it is truncated or corrupted",
            hint=f"Encode the complete, unmodified key file again. {_ENCODE_HINT}",
            reason="pool_key_truncated",
        ) from exc
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        checked = check_key_strength(key.public_key())
        if isinstance(checked, str):
            small = isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_KEY_BITS
            raise PoolKeyError(
                f"{source} holds {checked}",
                hint="Generate a new key with `hardened-launcher keygen` (RSA-4096)",
                reason="pool_key_too_small" if small else "pool_key_unsupported",
            )
        return key
    raise PoolKeyError(
        f"{source} holds {check_key_strength(key.public_key())}",
        hint="Generate a new key with `hardened-launcher keygen` (RSA-4096)",
        reason="pool_key_unsupported",
    )


def _describe_label(label: str) -> str:
    return {
        "PRIVATE KEY": "PKCS#8",
        "RSA PRIVATE KEY": "PKCS#1",
        "EC PRIVATE KEY": "SEC1",
    }.get(label, "unknown format")


def _raise_encrypted(source: str, *, cause: BaseException | None = None) -> NoReturn:
    raise PoolKeyError(
        f"{source} holds an encrypted private key; the launcher cannot prompt for a passphrase",
        hint="Decrypt a copy with `openssl pkey -in k -out k.dec` and encode k.dec instead",
        reason="pool_key_encrypted",
    ) from cause


def _raise_not_a_private_key(labels: set[str], source: str) -> NoReturn:
    if labels & CSR_LABELS:
        raise PoolKeyError(
            f"{source} holds a certificate signing request, not the private key",
            hint="The CSR (spacelift.csr) goes to the control plane; "
            f"set {POOL_KEY_VARIABLE} to the base64 of the key file (spacelift.key)",
            reason="pool_key_is_csr",
        )
    if labels & CERTIFICATE_LABELS:
        raise PoolKeyError(
            f"{source} holds a certificate, not the private key",
            hint="The pool certificate travels inside SPACELIFT_TOKEN; "
            f"set {POOL_KEY_VARIABLE} to the base64 of the key file (spacelift.key)",
            reason="pool_key_is_certificate",
        )
    if labels & PUBLIC_KEY_LABELS:
        raise PoolKeyError(
            f"{source} holds a public key, not the private key",
            hint=f"Set {POOL_KEY_VARIABLE} to the base64 of the private key file (spacelift.key)",
            reason="pool_key_is_public_key",
        )
    raise PoolKeyError(
        f"{source} holds PEM data that is not a private key",
        hint=f"Set {POOL_KEY_VARIABLE} to the base64 of the private key file (spacelift.key)",
        reason="pool_key_not_private_key",
    )


def _is_base64_of_pem(buf: bytearray) -> bool:
    inner = bytearray()
    try:
        inner = decode_base64(buf)
    except Base64DecodeError:
        return False
    else:
        return has_begin_line(inner)
    finally:
        wipe_bytearray(inner)
