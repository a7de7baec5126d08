"""A content-addressed, read-only cache of verified binaries.

Layout: ``<root>/sha256/<64 hex>``. Directories are created 0700 (only the launcher's user can
list, add or remove entries; the entries are not secret, but nobody else needs them, and a
directory others can write to would let them swap files). An existing directory is accepted
when it is owned by the launcher's user and not writable by group or others; anything else is
refused as ``cache_insecure``. Entries are files with mode 0555: executable, read-only.

**Verify, then keep.** :meth:`VerifiedBinaryCache.admit` copies the source into a private
temporary file (``mkstemp``: 0600, in the 0700 directory) while hashing exactly the bytes it
writes; since nobody else can write that file, those bytes are the copy's content, so this is
the re-hash of the copy without reading it twice. The digest and size must equal the proof's
(the source may have changed since it was verified: ``binary_changed_after_verification``).
Then the copy is fsynced, made 0555 and moved into place with ``os.replace``; the directory is
fsynced too.

**Cost vs. safety of** :meth:`VerifiedBinaryCache.get`: it re-hashes the whole entry on every
call (about as long as ``sha256sum`` takes on the file; see benchmarks/bench_verify_binary.py)
after checking it is a regular file, owned by the launcher's user, with mode 0555. A size and
mode check alone would miss a same-size corruption or an in-place edit by the owner (mode
changed and restored); binaries are fetched once per run at most, so the full check is
affordable. A corrupt entry is removed, logged (``binaries.cache_entry_removed``) and recorded
to the audit sink when there is one, and ``get`` returns ``None`` so the caller fetches and
verifies again; it is never used.

Between ``get`` and executing the file only the launcher's user (or root) can change it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import hmac
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Protocol

from hardened_launcher.audit import AuditEvent, AuditSink, Outcome
from hardened_launcher.binaries.verify import (
    GATE,
    HASH_CHUNK_BYTES,
    VerifiedBinary,
    hash_fd,
    is_sha256_hex,
    open_regular,
)
from hardened_launcher.errors import (
    ConfigurationError,
    InfrastructureError,
    UntrustedInputError,
)

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o555
CACHE_SUBDIR = "binaries"


class _HasCacheDir(Protocol):
    @property
    def cache_dir(self) -> Path: ...


def _unavailable(path: Path, what: str, exc: OSError | None = None) -> InfrastructureError:
    reason = f": {exc.strerror}" if exc is not None and exc.strerror else ""
    return InfrastructureError(
        f"the binary cache at {path} {what}{reason}",
        hint="check HL_CACHE_DIR: it must be on a writable disk with free space, owned by the "
        "launcher's user",
        reason="cache_unavailable",
    )


def _changed(source: Path, digest: str) -> UntrustedInputError:
    return UntrustedInputError(
        f"{source} changed after it was verified (SHA-256 now {digest})",
        hint="something is modifying downloaded binaries; verify it again and find out what "
        "wrote to it",
        reason="binary_changed_after_verification",
    )


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


class VerifiedBinaryCache:
    """Content-addressed store of verified binaries under ``<root>/sha256/``."""

    def __init__(self, root: Path, *, audit: AuditSink | None = None) -> None:
        self.root = root
        self.directory = root / "sha256"
        self._audit = audit
        for directory in (root, self.directory):
            self._ensure_directory(directory)

    @classmethod
    def from_settings(
        cls, settings: _HasCacheDir, *, audit: AuditSink | None = None
    ) -> VerifiedBinaryCache:
        """The default cache: ``<settings.cache_dir>/binaries``."""
        return cls(settings.cache_dir / CACHE_SUBDIR, audit=audit)

    @staticmethod
    def _ensure_directory(directory: Path) -> None:
        try:
            directory.mkdir(mode=DIR_MODE, parents=True)
        except FileExistsError:
            pass
        except OSError as exc:
            raise _unavailable(directory, "cannot be created", exc) from None
        else:
            try:
                # mkdir's mode is filtered by the umask; set it exactly.
                directory.chmod(DIR_MODE)
            except OSError as exc:
                raise _unavailable(directory, "cannot be made private", exc) from None
        try:
            info = directory.lstat()
        except OSError as exc:
            raise _unavailable(directory, "cannot be inspected", exc) from None
        if not stat.S_ISDIR(info.st_mode):
            raise ConfigurationError(
                f"the binary cache path {directory} is not a directory",
                hint="point HL_CACHE_DIR at a directory the launcher owns",
                reason="cache_insecure",
            )
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ConfigurationError(
                f"the binary cache directory {directory} is not owned by the launcher's user "
                "or is writable by others",
                hint=f"chown it to the launcher's user and `chmod 700 {directory}`",
                reason="cache_insecure",
            )

    def path_for(self, sha256: str) -> Path:
        if not is_sha256_hex(sha256):
            raise ValueError("a cache key is 64 lower-case hex digits")
        return self.directory / sha256

    # ------------------------------------------------------------------------------ admit

    def admit(self, source: Path, proof: VerifiedBinary) -> VerifiedBinary:
        """Copy ``source`` into the cache if it still matches ``proof``; return the new proof.

        The returned proof is ``proof`` with ``path`` set to the cache entry.
        """
        existing = self.get(proof.sha256)
        if existing is not None:
            return dataclasses.replace(proof, path=existing)
        final = self.path_for(proof.sha256)
        source_fd = open_regular(source, role="binary", reason="binary_unreadable")
        try:
            tmp, digest, size = self._copy_to_temp(source_fd)
        finally:
            os.close(source_fd)
        if size != proof.size or not hmac.compare_digest(digest, proof.sha256):
            self._discard(tmp)
            raise _changed(source, digest)
        try:
            tmp.replace(final)
            self._fsync_directory()
        except OSError as exc:
            self._discard(tmp)
            raise _unavailable(self.directory, "cannot store the binary", exc) from None
        log.info("binaries.cache_admitted sha256=%s size=%d", proof.sha256, proof.size)
        return dataclasses.replace(proof, path=final)

    def _copy_to_temp(self, source_fd: int) -> tuple[Path, str, int]:
        """Copy into a private temp file, hashing what is written; fsync and make it 0555."""
        try:
            tmp_fd, tmp_name = tempfile.mkstemp(dir=self.directory, prefix=".admit-")
        except OSError as exc:
            raise _unavailable(self.directory, "cannot hold a new file", exc) from None
        tmp = Path(tmp_name)
        done = False
        try:
            digest, size = self._copy(source_fd, tmp_fd)
            os.fsync(tmp_fd)
            os.fchmod(tmp_fd, FILE_MODE)
            done = True
        except OSError as exc:
            raise _unavailable(self.directory, "cannot store the binary", exc) from None
        finally:
            os.close(tmp_fd)
            if not done:
                self._discard(tmp)
        return tmp, digest, size

    @staticmethod
    def _discard(tmp: Path) -> None:
        with contextlib.suppress(OSError):
            tmp.unlink()

    @staticmethod
    def _copy(source_fd: int, target_fd: int) -> tuple[str, int]:
        digest = hashlib.sha256()
        buffer = bytearray(HASH_CHUNK_BYTES)
        view = memoryview(buffer)
        size = 0
        while True:
            count = os.readv(source_fd, [buffer])
            if count == 0:
                return digest.hexdigest(), size
            chunk = view[:count]
            digest.update(chunk)
            _write_all(target_fd, chunk)
            size += count

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -------------------------------------------------------------------------------- get

    def get(self, sha256: str) -> Path | None:
        """The cached file with this digest, re-hashed now; ``None`` if absent or corrupt."""
        path = self.path_for(sha256)
        try:
            # O_NOFOLLOW: a symlink is refused (ELOOP), never followed; every check below is on
            # the opened file itself, so nothing can be swapped in between check and hash.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise _unavailable(path, "cannot be opened", exc) from None
            self._remove(path, is_dir=False, why="a symbolic link")
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                why = "not a regular file"
            elif stat.S_IMODE(info.st_mode) != FILE_MODE or info.st_uid != os.geteuid():
                why = "wrong mode or owner"
            elif not hmac.compare_digest(hash_fd(fd)[0], sha256):
                why = "content does not match its name"
            else:
                why = ""
        except OSError as exc:
            raise _unavailable(path, "cannot be read", exc) from None
        finally:
            os.close(fd)
        if why:
            self._remove(path, is_dir=stat.S_ISDIR(info.st_mode), why=why)
            return None
        return path

    def _remove(self, path: Path, *, is_dir: bool, why: str) -> None:
        log.warning("binaries.cache_entry_removed sha256=%s why=%s", path.name, why)
        try:
            if is_dir:
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise InfrastructureError(
                f"the cache entry {path} is corrupt ({why}) and cannot be removed: {exc.strerror}",
                hint="remove it by hand; it will not be used",
                reason="cache_entry_corrupt",
            ) from None
        if self._audit is not None:
            self._audit.record(
                AuditEvent(
                    type="binary.cache_entry_removed",
                    outcome=Outcome.ERROR,
                    gate=GATE,
                    reason="cache_entry_corrupt",
                    fields={"sha256": path.name, "why": why},
                )
            )
