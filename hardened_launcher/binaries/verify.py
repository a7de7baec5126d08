"""Gate 2 (binaries): a file is accepted only through a SHA256SUMS file signed by a pinned key.

Order of checks, so that nothing untrusted is parsed before it is authenticated:

1. pins are normalised; none → ``no_pinned_keys`` (an empty pin list denies);
2. the keyring is loaded and must hold a pinned key;
3. the sums file is read once (bounded) and the detached signature is verified over exactly
   those bytes (:mod:`hardened_launcher.binaries.openpgp`);
4. only then are those same bytes parsed (:mod:`hardened_launcher.binaries.sums`) and the single
   entry for the file's name is looked up;
5. the file is hashed streaming, 1 MiB at a time, and must match that entry.

The result is a :class:`VerifiedBinary` proof. Its ``path`` is the file that was hashed; a file
can change after it was hashed, so callers that execute it should first
:meth:`~hardened_launcher.binaries.cache.VerifiedBinaryCache.admit` it into the cache, which
copies and re-hashes it into a read-only, content-addressed location.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from hardened_launcher import bounded_input
from hardened_launcher.audit import AuditSink
from hardened_launcher.audit.gates import record_pass, record_refusal
from hardened_launcher.binaries.openpgp import (
    MAX_CLOCK_SKEW,
    MAX_SIGNATURE_BYTES,
    DetachedSignature,
    Keyring,
    normalize_pins,
    verify_detached,
)
from hardened_launcher.binaries.sums import MAX_SUMS_BYTES, check_sums_size, parse_sums
from hardened_launcher.bounded_input import describe_path
from hardened_launcher.errors import (
    InputFileError,
    LauncherError,
    UntrustedInputError,
)

log = logging.getLogger(__name__)

GATE = "binaries"
HASH_CHUNK_BYTES = 1024 * 1024
_SHA256_HEX_CHARS = 64


def is_sha256_hex(text: str) -> bool:
    """64 lower-case hex digits."""
    return len(text) == _SHA256_HEX_CHARS and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True, kw_only=True)
class VerifiedBinary:
    """Proof that a file matched its entry in a SHA256SUMS file signed by a pinned key."""

    name: str  # the name its sums entry has
    path: Path  # where the verified bytes are (the cache path once admitted)
    sha256: str  # lower-case hex
    size: int  # bytes
    signer_fingerprint: str  # the pinned primary key
    signing_key_fingerprint: str  # the primary key or subkey that made the signature
    signature_created: datetime
    sums_sha256: str  # of the exact SHA256SUMS bytes the signature covers

    def __post_init__(self) -> None:
        if not is_sha256_hex(self.sha256) or not is_sha256_hex(self.sums_sha256):
            raise ValueError("VerifiedBinary digests must be 64 lower-case hex digits")
        if self.size < 0:
            raise ValueError("VerifiedBinary.size must not be negative")
        if self.signature_created.tzinfo is None:
            raise ValueError("VerifiedBinary.signature_created must be timezone-aware")


def _unreadable(role: str, path: Path, what: str, reason: str) -> InputFileError:
    return InputFileError(
        f"cannot read the {role} {describe_path(path)}: {what}",
        hint=f"check the path and that the launcher's user may read it; the {role} must be a "
        "regular file",
        reason=reason,
    )


def open_regular(path: Path, *, role: str, reason: str) -> int:
    """Open ``path`` read-only and return the descriptor; refuse anything but a regular file.

    ``O_NONBLOCK`` keeps a FIFO from blocking the open; it has no effect on regular files.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise _unreadable(role, path, exc.strerror or "cannot open", reason) from None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError as exc:
        os.close(fd)
        raise _unreadable(role, path, exc.strerror or "cannot inspect", reason) from None
    if not regular:
        os.close(fd)
        raise _unreadable(role, path, "not a regular file", reason)
    return fd


def read_bounded(path: Path, *, limit_bytes: int, role: str, reason: str) -> bytes:
    """Read at most ``limit_bytes + 1`` bytes (so the caller can tell an oversized file)."""

    def unreadable(message: str, *, hint: str, reason: str) -> InputFileError:
        return InputFileError(message, hint=hint, reason=reason)

    def oversized(message: str, *, hint: str, reason: str) -> _OversizedError:
        return _OversizedError(message, hint=hint, reason=reason)

    try:
        return bytes(
            bounded_input.read_bounded(
                path,
                max_bytes=limit_bytes,
                what=role,
                unreadable=unreadable,
                too_large=oversized,
                reason=reason,
            )
        )
    except _OversizedError:
        # The caller's size check names the limit in its own words: give it one byte too many.
        return bytes(limit_bytes + 1)


class _OversizedError(InputFileError):
    """Internal: the file is larger than the limit."""


def hash_fd(fd: int) -> tuple[str, int]:
    """SHA-256 hex and size of everything readable from ``fd``, 1 MiB at a time."""
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK_BYTES)
    view = memoryview(buffer)
    size = 0
    while True:
        count = os.readv(fd, [buffer])
        if count == 0:
            break
        digest.update(view[:count])
        size += count
    return digest.hexdigest(), size


def hash_file(
    path: Path, *, role: str = "binary", reason: str = "binary_unreadable"
) -> tuple[str, int]:
    """SHA-256 hex and size of a regular file, streamed; never loads the file whole."""
    fd = open_regular(path, role=role, reason=reason)
    try:
        return hash_fd(fd)
    except OSError as exc:
        raise _unreadable(role, path, exc.strerror or "read failed", reason) from None
    finally:
        os.close(fd)


def _audit(
    audit: AuditSink | None,
    *,
    run_id: str | None,
    name: str,
    error: LauncherError | None = None,
    proof: VerifiedBinary | None = None,
) -> None:
    if proof is not None:
        record_pass(
            audit,
            gate=GATE,
            event_type="binary.verified",
            run_id=run_id,
            fields={
                "name": proof.name,
                "sha256": proof.sha256,
                "size": proof.size,
                "signer_fingerprint": proof.signer_fingerprint,
                "signing_key_fingerprint": proof.signing_key_fingerprint,
                "signature_created": proof.signature_created.isoformat(),
                "sums_sha256": proof.sums_sha256,
            },
        )
    elif error is not None:
        record_refusal(
            audit,
            gate=GATE,
            event_type="binary.rejected",
            run_id=run_id,
            error=error,
            fields={"name": name[:256]},
        )


def verify_binary(
    binary: Path,
    *,
    sums: Path,
    signature: Path,
    keyring: Keyring | Path,
    pins: Iterable[str],
    name: str | None = None,
    now: datetime | None = None,
    max_clock_skew: timedelta = MAX_CLOCK_SKEW,
    audit: AuditSink | None = None,
    run_id: str | None = None,
) -> VerifiedBinary:
    """Return a :class:`VerifiedBinary` for ``binary`` or raise a :class:`LauncherError`.

    ``name`` is the entry to look up in the sums file; it defaults to the file's basename.
    ``pins`` are primary-key fingerprints (any spacing or case); none at all is refused.
    ``max_clock_skew`` is how far in the future a signature's creation time may lie.
    Every decision is recorded to ``audit`` when one is given.
    """
    entry_name = name if name is not None else binary.name
    try:
        proof = _verify(
            binary,
            sums=sums,
            signature=signature,
            keyring=keyring,
            pins=pins,
            entry_name=entry_name,
            now=now,
            max_clock_skew=max_clock_skew,
        )
    except LauncherError as exc:
        log.info("binaries.rejected reason=%s", exc.reason)
        _audit(audit, run_id=run_id, name=entry_name, error=exc)
        raise
    log.info("binaries.verified sha256=%s signer=%s", proof.sha256, proof.signer_fingerprint)
    _audit(audit, run_id=run_id, name=entry_name, proof=proof)
    return proof


def _verify(
    binary: Path,
    *,
    sums: Path,
    signature: Path,
    keyring: Keyring | Path,
    pins: Iterable[str],
    entry_name: str,
    now: datetime | None,
    max_clock_skew: timedelta,
) -> VerifiedBinary:
    pinned = normalize_pins(pins)
    ring = keyring if isinstance(keyring, Keyring) else Keyring.from_file(keyring)

    sums_bytes = read_bounded(
        sums, limit_bytes=MAX_SUMS_BYTES, role="sums file", reason="sums_unreadable"
    )
    check_sums_size(sums_bytes, source=str(sums))
    sig_bytes = read_bounded(
        signature,
        limit_bytes=MAX_SIGNATURE_BYTES,
        role="signature file",
        reason="signature_unreadable",
    )
    detached = DetachedSignature.from_bytes(sig_bytes, source=str(signature))
    checked = verify_detached(
        sums_bytes, detached, ring, pinned, now=now, max_clock_skew=max_clock_skew
    )

    entry = parse_sums(sums_bytes, source=str(sums)).lookup(entry_name)
    actual, size = hash_file(binary)
    if not hmac.compare_digest(actual, entry.sha256):
        raise UntrustedInputError(
            f"the SHA-256 of {binary} ({actual}) does not match its entry in {sums} "
            f"({entry.sha256})",
            hint="the file was altered or is from another release; download it again",
            reason="binary_hash_mismatch",
        )
    return VerifiedBinary(
        name=entry.name,
        path=binary,
        sha256=actual,
        size=size,
        signer_fingerprint=checked.signer_fingerprint,
        signing_key_fingerprint=checked.signing_key_fingerprint,
        signature_created=checked.created,
        sums_sha256=hashlib.sha256(sums_bytes).hexdigest(),
    )
