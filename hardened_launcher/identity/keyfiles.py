"""Writing the pool key and CSR to disk (``hardened-launcher keygen``).

Both files are created with mode 0600. Without ``force`` they are opened with ``O_EXCL`` (an
existing file, or a symlink planted at the path, is never followed or overwritten). With
``force`` each file is written to a fresh 0600 temporary file in the same directory, flushed to
disk, and moved into place with ``os.replace``: a reader sees the old file or the new one,
never a half-written one; only a regular file is ever replaced (a device, FIFO, directory or
symlink at the path is refused, ``--force`` or not). Both destinations are checked before the
(slow) key generation, and a key written without its CSR is removed again.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from hardened_launcher.bounded_input import describe_path
from hardened_launcher.errors import ConfigurationError, UsageError
from hardened_launcher.identity.csr import create_csr, csr_to_pem
from hardened_launcher.identity.keys import DEFAULT_RSA_KEY_BITS, PoolPrivateKey
from hardened_launcher.private_files import (
    PRIVATE_FILE_MODE,
    create_exclusive,
    non_regular_kind,
    replace_atomically,
)
from hardened_launcher.secrets import Secret

FILE_MODE = PRIVATE_FILE_MODE


class OutputExistsError(UsageError):
    """An output file exists and ``--force`` was not given."""

    default_reason = "output_exists"


class OutputUnwritableError(ConfigurationError):
    """An output file could not be written (permissions, missing directory, disk full…)."""

    default_reason = "output_unwritable"


@dataclass(frozen=True, kw_only=True)
class KeygenResult:
    """What ``keygen`` wrote (no key material)."""

    key_path: Path
    csr_path: Path
    algorithm: str
    key_id: bytes
    csr: x509.CertificateSigningRequest


def _unwritable(path: Path, exc: OSError) -> OutputUnwritableError:
    why = exc.strerror or type(exc).__name__
    return OutputUnwritableError(
        f"cannot write {describe_path(path)}: {why}",
        hint="Choose a writable path (--key-out / --csr-out) in an existing directory",
        reason="output_unwritable",
    )


def _exists(path: Path, flag: str) -> OutputExistsError:
    return OutputExistsError(
        f"{describe_path(path)} already exists; keygen does not overwrite files",
        hint=f"Pass --force to replace it, or choose another path with {flag}",
        reason="output_exists",
    )


def _write_exclusive(path: Path, data: memoryview, flag: str) -> None:
    try:
        create_exclusive(path, data, mode=FILE_MODE)
    except FileExistsError as exc:  # also a symlink planted at the path
        raise _exists(path, flag) from exc
    except OSError as exc:
        raise _unwritable(path, exc) from exc


def _write_replacing(path: Path, data: memoryview) -> None:
    try:
        replace_atomically(path, data, mode=FILE_MODE)
    except OSError as exc:
        raise _unwritable(path, exc) from exc


def write_private_file(path: Path, data: Secret | bytes, *, force: bool, flag: str = "") -> None:
    """Write ``data`` to ``path`` with mode 0600: exclusively, or atomically replacing."""
    if isinstance(data, Secret):
        with data.view() as view:
            _write(path, view, force=force, flag=flag)
        return
    _write(path, memoryview(data), force=force, flag=flag)


def _write(path: Path, view: memoryview, *, force: bool, flag: str) -> None:
    if force:
        check_output_target(path, force=True, flag=flag)
        _write_replacing(path, view)
    else:
        _write_exclusive(path, view, flag)


def check_output_target(path: Path, *, force: bool, flag: str) -> None:
    """Refuse an output path before any work: something already there (without ``force``),
    anything but a regular file or a symlink to one (even with ``force``: a device, FIFO,
    directory, socket or a symlink to one is never replaced), or a directory this user cannot
    write to. A symlink that is replaced is replaced itself; its target is never written."""
    try:
        exists = path.is_symlink() or path.exists()
        kind = non_regular_kind(path)
    except OSError as exc:  # a directory on the way this user cannot search, a looping link
        raise _unwritable(path, exc) from None
    if exists and not force:
        raise _exists(path, flag)
    if kind is not None:
        raise OutputUnwritableError(
            f"{describe_path(path)} is {kind}; keygen --force replaces only a regular file "
            "(or a symlink to one)",
            hint=f"Choose a path for a new file with {flag}",
            reason="output_not_regular",
        )
    directory = path.parent
    if not os.access(directory, os.W_OK | os.X_OK):
        why = "No such directory" if not directory.is_dir() else "Permission denied"
        raise OutputUnwritableError(
            f"cannot write {describe_path(path)}: {why} ({describe_path(directory)})",
            hint="Choose a writable path (--key-out / --csr-out) in an existing directory",
            reason="output_unwritable",
        )


def generate_key_and_csr(
    *,
    key_path: Path,
    csr_path: Path,
    subject: x509.Name,
    force: bool,
    rsa_key_bits: int = DEFAULT_RSA_KEY_BITS,
) -> KeygenResult:
    """Generate an RSA key and its SHA-256 CSR, and write both (0600)."""
    if key_path.absolute() == csr_path.absolute():
        raise UsageError(
            "the key and the CSR would be written to the same file",
            hint="Give --key-out and --csr-out different paths",
            reason="output_conflict",
        )
    for path, flag in ((key_path, "--key-out"), (csr_path, "--csr-out")):
        check_output_target(path, force=force, flag=flag)
    key = PoolPrivateKey.generate(rsa_key_bits=rsa_key_bits)
    csr = create_csr(key, subject)
    with key.to_pem() as pem:
        write_private_file(key_path, pem, force=force, flag="--key-out")
    try:
        write_private_file(csr_path, csr_to_pem(csr), force=force, flag="--csr-out")
    except (OutputExistsError, OutputUnwritableError):
        # A key whose CSR was not written is useless and would block the next attempt.
        if not force:
            with contextlib.suppress(OSError):
                key_path.unlink()
        raise
    return KeygenResult(
        key_path=key_path,
        csr_path=csr_path,
        algorithm=key.algorithm,
        key_id=key.key_id,
        csr=csr,
    )
