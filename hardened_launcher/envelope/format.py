"""The run-state envelope's binary layout: pure encode and strict parse, no cryptography.

Layout (all integers big-endian; ``docs/envelope.md`` has the byte-by-byte table)::

    magic "HLRS" | version u8 | algorithm u8 | key id (32) |
    run id length u8 | run id | pool id length u8 | pool id |
    issued_at u64 | expires_at u64 | key material length u16 | key material |
    nonce (12) | ciphertext length u32 | ciphertext+tag | Ed25519 signature (64)

Everything before the ciphertext is the *header*: it is the AES-GCM associated data, and the
signature covers the header and the ciphertext. The parser checks every length against the bytes
that are actually there and insists that the fields consume the input exactly.

Nothing here touches keys; :mod:`.seal` and :mod:`.open` do the cryptography.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import IntEnum

from hardened_launcher.envelope.errors import (
    EnvelopeConfigurationError,
    EnvelopeError,
    Reason,
)

MAGIC = b"HLRS"
FORMAT_VERSION = 1

KEY_ID_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SIGNATURE_BYTES = 64
DATA_KEY_BYTES = 32

MAX_RUN_ID_BYTES = 128
MAX_POOL_ID_BYTES = 128
#: Largest timestamp accepted: 9999-12-31T23:59:59Z, so every value maps to a ``datetime``.
MAX_TIMESTAMP_SECONDS = 253_402_300_799
MIN_RSA_KEY_BITS = 2048
MAX_RSA_KEY_BITS = 16384  # the identity module accepts the same range
#: Uncompressed SEC1 point sizes (0x04 || X || Y) of the supported curves: P-256 and P-384.
EC_POINT_BYTES = frozenset({65, 97})
EC_POINT_UNCOMPRESSED = 0x04
#: Largest ciphertext length the u32 field can carry; real limits are far lower.
MAX_CIPHERTEXT_BYTES = 0xFFFF_FFFF

#: Fixed-size parts: magic, version, algorithm, key id, two id lengths, two times,
#: key-material length, nonce, ciphertext length, signature.
FIXED_OVERHEAD_BYTES = (
    len(MAGIC) + 1 + 1 + KEY_ID_BYTES + 1 + 1 + 8 + 8 + 2 + NONCE_BYTES + 4 + SIGNATURE_BYTES
)

_IDENTIFIER = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]*")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

_FORMAT_HINT = "the envelope is damaged or was not produced by a compatible control plane"


class Algorithm(IntEnum):
    """How the AES-256-GCM data key reaches the pool."""

    #: The data key is wrapped with RSA-OAEP (SHA-256, MGF1-SHA-256, empty label).
    RSA_OAEP_SHA256_AES256GCM = 1
    #: ECDH with an ephemeral key on the pool key's curve, then HKDF-SHA256 to the data key.
    ECDH_ES_HKDF_SHA256_AES256GCM = 2


def envelope_size_bytes(
    *, run_id_bytes: int, pool_id_bytes: int, key_material_bytes: int, plaintext_bytes: int
) -> int:
    """Exact size of an envelope with these field sizes."""
    return (
        FIXED_OVERHEAD_BYTES
        + run_id_bytes
        + pool_id_bytes
        + key_material_bytes
        + plaintext_bytes
        + TAG_BYTES
    )


def check_identifier(value: str, *, what: str, max_bytes: int) -> bytes:
    """Validate a run or pool id for sealing and return its encoding.

    Raises :class:`EnvelopeConfigurationError` (the sealer passed an id the format cannot carry).
    """
    raw = value.encode("utf-8", errors="replace")
    if not 1 <= len(raw) <= max_bytes or _IDENTIFIER.fullmatch(raw) is None:
        raise EnvelopeConfigurationError(
            f"the {what} cannot be sealed: it must be 1 to {max_bytes} bytes of "
            "A-Z a-z 0-9 . _ - and start with a letter or digit",
            reason=Reason.SEAL_FIELD_INVALID,
            hint=f"pass the {what} exactly as the control plane issued it",
        )
    return raw


def check_key_material_length(algorithm: Algorithm, material: bytes | memoryview) -> bool:
    """Whether ``material`` has a plausible size (and prefix) for ``algorithm``."""
    size = len(material)
    if algorithm is Algorithm.RSA_OAEP_SHA256_AES256GCM:
        return MIN_RSA_KEY_BITS // 8 <= size <= MAX_RSA_KEY_BITS // 8
    return size in EC_POINT_BYTES and material[0] == EC_POINT_UNCOMPRESSED


def encode_header(
    *,
    algorithm: Algorithm,
    key_id: bytes,
    run_id: str,
    pool_id: str,
    issued_at_seconds: int,
    expires_at_seconds: int,
    key_material: bytes,
    nonce: bytes,
    ciphertext_bytes: int,
) -> bytes:
    """Encode the header (everything before the ciphertext). Raises on values the format refuses."""
    run_raw = check_identifier(run_id, what="run id", max_bytes=MAX_RUN_ID_BYTES)
    pool_raw = check_identifier(pool_id, what="pool id", max_bytes=MAX_POOL_ID_BYTES)
    problems = []
    if len(key_id) != KEY_ID_BYTES:
        problems.append(f"key id must be {KEY_ID_BYTES} bytes")
    for name, value in (("issued_at", issued_at_seconds), ("expires_at", expires_at_seconds)):
        if not 0 <= value <= MAX_TIMESTAMP_SECONDS:
            problems.append(f"{name} must be between 1970 and 9999")
    if not check_key_material_length(algorithm, key_material):
        problems.append("key material has the wrong size for the algorithm")
    if len(nonce) != NONCE_BYTES:
        problems.append(f"nonce must be {NONCE_BYTES} bytes")
    if not TAG_BYTES <= ciphertext_bytes <= MAX_CIPHERTEXT_BYTES:
        problems.append("ciphertext length is out of range")
    if problems:
        raise EnvelopeConfigurationError(
            "the envelope header cannot be encoded: " + "; ".join(problems),
            reason=Reason.SEAL_FIELD_INVALID,
            hint="this is a bug in the sealing code; report it",
        )
    return b"".join(
        (
            MAGIC,
            bytes((FORMAT_VERSION, int(algorithm))),
            key_id,
            bytes((len(run_raw),)),
            run_raw,
            bytes((len(pool_raw),)),
            pool_raw,
            _U64.pack(issued_at_seconds),
            _U64.pack(expires_at_seconds),
            _U16.pack(len(key_material)),
            key_material,
            nonce,
            _U32.pack(ciphertext_bytes),
        )
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class ParsedEnvelope:
    """A structurally valid envelope. Nothing in it is authenticated yet.

    ``raw`` is the whole envelope; the ciphertext and the signed region are exposed as
    zero-copy views of it.
    """

    version: int
    algorithm: Algorithm
    key_id: bytes
    run_id: str
    pool_id: str
    issued_at_seconds: int
    expires_at_seconds: int
    key_material: bytes
    nonce: bytes
    raw: bytes
    header_bytes: int
    ciphertext_bytes: int

    @property
    def header(self) -> memoryview:
        """Everything before the ciphertext: the AES-GCM associated data."""
        return memoryview(self.raw)[: self.header_bytes]

    @property
    def ciphertext(self) -> memoryview:
        """Ciphertext followed by the 16-byte GCM tag."""
        return memoryview(self.raw)[self.header_bytes : self.header_bytes + self.ciphertext_bytes]

    @property
    def signed(self) -> memoryview:
        """Header and ciphertext: the bytes the control plane signed."""
        return memoryview(self.raw)[: self.header_bytes + self.ciphertext_bytes]

    @property
    def signature(self) -> bytes:
        return self.raw[self.header_bytes + self.ciphertext_bytes :]

    @property
    def plaintext_bytes(self) -> int:
        return self.ciphertext_bytes - TAG_BYTES


class _Reader:
    """Bounds-checked cursor over the envelope; every read names the field it reads."""

    __slots__ = ("_data", "pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.pos = 0

    def take(self, size: int, field: str) -> bytes:
        end = self.pos + size
        if end > len(self._data):
            raise EnvelopeError(
                f"the envelope ends inside its {field} field "
                f"({len(self._data)} bytes, at least {end} needed)",
                reason=Reason.TRUNCATED,
                hint=_FORMAT_HINT,
            )
        out = self._data[self.pos : end]
        self.pos = end
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        value: int = _U16.unpack(self.take(2, field))[0]
        return value

    def u32(self, field: str) -> int:
        value: int = _U32.unpack(self.take(4, field))[0]
        return value

    def u64(self, field: str) -> int:
        value: int = _U64.unpack(self.take(8, field))[0]
        return value

    @property
    def remaining(self) -> int:
        return len(self._data) - self.pos


def _field_invalid(message: str) -> EnvelopeError:
    return EnvelopeError(message, reason=Reason.FIELD_INVALID, hint=_FORMAT_HINT)


def _identifier(reader: _Reader, *, what: str, max_bytes: int) -> str:
    size = reader.u8(f"{what} length")
    if not 1 <= size <= max_bytes:
        raise _field_invalid(f"the envelope's {what} length {size} is outside 1..{max_bytes}")
    raw = reader.take(size, what)
    if _IDENTIFIER.fullmatch(raw) is None:
        raise _field_invalid(
            f"the envelope's {what} has characters outside A-Z a-z 0-9 . _ - "
            "or does not start with a letter or digit"
        )
    return raw.decode("ascii")


def parse_envelope(data: bytes) -> ParsedEnvelope:
    """Parse ``data`` strictly. Raises :class:`EnvelopeError`; never any other exception.

    The caller enforces the size limit *before* calling this; the parser itself allocates
    nothing proportional to the declared lengths (it slices what is there).
    """
    reader = _Reader(data)
    magic = reader.take(len(MAGIC), "magic")
    if magic != MAGIC:
        raise EnvelopeError(
            "the data is not a run-state envelope (wrong magic bytes)",
            reason=Reason.BAD_MAGIC,
            hint="check that the run state came from the control plane unmodified",
        )
    version = reader.u8("version")
    if version != FORMAT_VERSION:
        raise EnvelopeError(
            f"the envelope format version {version} is not supported "
            f"(this launcher reads version {FORMAT_VERSION})",
            reason=Reason.VERSION_UNSUPPORTED,
            hint="upgrade the launcher to match the control plane",
        )
    algorithm_id = reader.u8("algorithm")
    try:
        algorithm = Algorithm(algorithm_id)
    except ValueError:
        raise EnvelopeError(
            f"the envelope algorithm id {algorithm_id} is not supported",
            reason=Reason.ALGORITHM_UNSUPPORTED,
            hint="upgrade the launcher to match the control plane",
        ) from None
    key_id = reader.take(KEY_ID_BYTES, "key id")
    run_id = _identifier(reader, what="run id", max_bytes=MAX_RUN_ID_BYTES)
    pool_id = _identifier(reader, what="pool id", max_bytes=MAX_POOL_ID_BYTES)
    issued_at = reader.u64("issued_at")
    expires_at = reader.u64("expires_at")
    for name, value in (("issued_at", issued_at), ("expires_at", expires_at)):
        if value > MAX_TIMESTAMP_SECONDS:
            raise _field_invalid(f"the envelope's {name} is beyond the year 9999")
    material_size = reader.u16("key material length")
    key_material = reader.take(material_size, "key material")
    if not check_key_material_length(algorithm, key_material):
        raise _field_invalid(
            f"the envelope's key material ({material_size} bytes) does not fit "
            f"algorithm {algorithm.name}"
        )
    nonce = reader.take(NONCE_BYTES, "nonce")
    ciphertext_size = reader.u32("ciphertext length")
    header_size = reader.pos
    if ciphertext_size < TAG_BYTES:
        raise _field_invalid(
            f"the envelope's ciphertext length {ciphertext_size} is shorter than the GCM tag"
        )
    expected_rest = ciphertext_size + SIGNATURE_BYTES
    if reader.remaining < expected_rest:
        raise EnvelopeError(
            f"the envelope is truncated: {reader.remaining} bytes follow the header, "
            f"{expected_rest} expected",
            reason=Reason.TRUNCATED,
            hint=_FORMAT_HINT,
        )
    if reader.remaining > expected_rest:
        raise EnvelopeError(
            f"the envelope has {reader.remaining - expected_rest} unexpected bytes "
            "after its signature",
            reason=Reason.TRAILING_BYTES,
            hint=_FORMAT_HINT,
        )
    return ParsedEnvelope(
        version=version,
        algorithm=algorithm,
        key_id=key_id,
        run_id=run_id,
        pool_id=pool_id,
        issued_at_seconds=issued_at,
        expires_at_seconds=expires_at,
        key_material=key_material,
        nonce=nonce,
        raw=data,
        header_bytes=header_size,
        ciphertext_bytes=ciphertext_size,
    )


# -- limits shared by both sides ---------------------------------------------------------------

DEFAULT_MAX_ENVELOPE_BYTES = 16 * 1024 * 1024
#: No setting may raise the envelope limit above this (AES-GCM and memory stay sane).
MAX_ENVELOPE_BYTES_CEILING = 1024 * 1024 * 1024
#: Longest validity window (expires_at - issued_at) an envelope may claim, in seconds (24 h).
MAX_ENVELOPE_LIFETIME_SECONDS = 24 * 60 * 60
#: Largest clock skew a launcher may be configured to tolerate, in seconds (1 h).
MAX_CLOCK_SKEW_SECONDS = 60 * 60


def check_max_envelope_bytes(max_envelope_bytes: int) -> None:
    """Refuse a size limit that is not a positive int at most the ceiling."""
    if (
        isinstance(max_envelope_bytes, bool)
        or not isinstance(max_envelope_bytes, int)
        or not 1 <= max_envelope_bytes <= MAX_ENVELOPE_BYTES_CEILING
    ):
        raise EnvelopeConfigurationError(
            f"max_envelope_bytes must be an integer from 1 to {MAX_ENVELOPE_BYTES_CEILING}",
            reason=Reason.LIMIT_INVALID,
            hint=f"leave it at the default ({DEFAULT_MAX_ENVELOPE_BYTES}) unless runs need more",
        )
