"""The verified-binary cache: verify, then keep; re-check on every read; never use a bad entry."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from pathlib import Path

import pytest

from hardened_launcher.audit import MemoryAuditLog, Outcome
from hardened_launcher.binaries.cache import DIR_MODE, FILE_MODE, VerifiedBinaryCache
from hardened_launcher.binaries.verify import VerifiedBinary
from hardened_launcher.errors import ConfigurationError, InfrastructureError, UntrustedInputError
from tests.unit.test_binaries_support import now_plus

CONTENT = b"#!/bin/sh\necho verified\n"


def proof_for(path: Path, content: bytes = CONTENT) -> VerifiedBinary:
    return VerifiedBinary(
        name=path.name,
        path=path,
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
        signer_fingerprint="a" * 40,
        signing_key_fingerprint="b" * 40,
        signature_created=now_plus(),
        sums_sha256="c" * 64,
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "download" / "tool"
    path.parent.mkdir()
    path.write_bytes(CONTENT)
    return path


@pytest.fixture
def audit() -> MemoryAuditLog:
    return MemoryAuditLog()


@pytest.fixture
def cache(tmp_path: Path, audit: MemoryAuditLog) -> VerifiedBinaryCache:
    return VerifiedBinaryCache(tmp_path / "cache", audit=audit)


def leftovers(cache: VerifiedBinaryCache) -> list[str]:
    return sorted(p.name for p in cache.directory.iterdir() if p.name.startswith("."))


def make_writable_and_write(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    path.chmod(0o755)
    path.write_bytes(data)
    path.chmod(mode)


def test_admit_stores_a_read_only_content_addressed_copy(
    cache: VerifiedBinaryCache, source: Path
) -> None:
    proof = proof_for(source)
    admitted = cache.admit(source, proof)
    assert admitted.path == cache.root / "sha256" / proof.sha256
    assert admitted.path.read_bytes() == CONTENT
    assert stat.S_IMODE(admitted.path.stat().st_mode) == FILE_MODE
    assert stat.S_IMODE(cache.directory.stat().st_mode) == DIR_MODE
    assert stat.S_IMODE(cache.root.stat().st_mode) == DIR_MODE
    assert dataclasses.replace(admitted, path=source) == proof
    assert leftovers(cache) == []
    assert cache.get(proof.sha256) == admitted.path


def test_admit_is_idempotent(cache: VerifiedBinaryCache, source: Path) -> None:
    proof = proof_for(source)
    first = cache.admit(source, proof)
    second = cache.admit(source, proof)
    assert first == second
    assert len(list(cache.directory.iterdir())) == 1


def test_source_changed_after_verification_is_refused_and_nothing_kept(
    cache: VerifiedBinaryCache, source: Path
) -> None:
    proof = proof_for(source)
    source.write_bytes(CONTENT.replace(b"verified", b"swapped!"))  # same size, new content
    with pytest.raises(UntrustedInputError) as caught:
        cache.admit(source, proof)
    assert caught.value.reason == "binary_changed_after_verification"
    assert list(cache.directory.iterdir()) == []


def test_source_grown_after_verification_is_refused(
    cache: VerifiedBinaryCache, source: Path
) -> None:
    proof = proof_for(source)
    source.write_bytes(CONTENT + b"more")
    with pytest.raises(UntrustedInputError) as caught:
        cache.admit(source, proof)
    assert caught.value.reason == "binary_changed_after_verification"
    assert leftovers(cache) == []


def test_write_failure_leaves_no_temporary_file(
    cache: VerifiedBinaryCache, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(InfrastructureError) as caught:
        cache.admit(source, proof_for(source))
    assert caught.value.reason == "cache_unavailable"
    assert list(cache.directory.iterdir()) == []


def test_get_of_an_absent_entry_is_none(cache: VerifiedBinaryCache) -> None:
    assert cache.get("0" * 64) is None


def test_get_rejects_a_malformed_key(cache: VerifiedBinaryCache) -> None:
    with pytest.raises(ValueError, match="hex"):
        cache.get("../../etc/passwd")


def test_corrupted_entry_is_removed_reported_and_not_used(
    cache: VerifiedBinaryCache, source: Path, audit: MemoryAuditLog
) -> None:
    admitted = cache.admit(source, proof_for(source))
    make_writable_and_write(admitted.path, CONTENT.replace(b"verified", b"CORRUPT!"))
    assert cache.get(admitted.sha256) is None
    assert not admitted.path.exists()
    (event,) = audit.events
    assert (event.type, event.outcome, event.reason) == (
        "binary.cache_entry_removed",
        Outcome.ERROR,
        "cache_entry_corrupt",
    )
    assert event.fields["sha256"] == admitted.sha256
    # A fresh admit repairs it.
    assert cache.admit(source, proof_for(source)).path.read_bytes() == CONTENT


@pytest.mark.parametrize("mode", [0o755, 0o444, 0o4555])
def test_entry_with_the_wrong_mode_is_removed(
    cache: VerifiedBinaryCache, source: Path, mode: int
) -> None:
    admitted = cache.admit(source, proof_for(source))
    admitted.path.chmod(mode)
    assert cache.get(admitted.sha256) is None
    assert not admitted.path.exists()


def test_symlink_entry_is_removed_not_followed(
    cache: VerifiedBinaryCache, source: Path, tmp_path: Path
) -> None:
    proof = proof_for(source)
    target = tmp_path / "elsewhere"
    target.write_bytes(CONTENT)
    target.chmod(FILE_MODE)
    cache.path_for(proof.sha256).symlink_to(target)
    assert cache.get(proof.sha256) is None
    assert not cache.path_for(proof.sha256).is_symlink()
    assert target.exists()


def test_directory_in_place_of_an_entry_is_removed(cache: VerifiedBinaryCache) -> None:
    digest = "d" * 64
    (cache.directory / digest / "x").mkdir(parents=True)
    assert cache.get(digest) is None
    assert not (cache.directory / digest).exists()


def test_existing_cache_writable_by_others_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    (root / "sha256").mkdir(parents=True)
    (root / "sha256").chmod(0o777)
    with pytest.raises(ConfigurationError) as caught:
        VerifiedBinaryCache(root)
    assert caught.value.reason == "cache_insecure"


def test_existing_cache_directory_0755_is_accepted(tmp_path: Path, source: Path) -> None:
    root = tmp_path / "cache"
    (root / "sha256").mkdir(parents=True)
    for path in (root, root / "sha256"):
        path.chmod(0o755)
    cache = VerifiedBinaryCache(root)
    assert cache.admit(source, proof_for(source)).path.exists()


def test_cache_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("not a directory")
    with pytest.raises(ConfigurationError) as caught:
        VerifiedBinaryCache(tmp_path / "cache")
    assert caught.value.reason == "cache_insecure"


def test_umask_does_not_loosen_directory_modes(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        cache = VerifiedBinaryCache(tmp_path / "cache")
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache.directory.stat().st_mode) == DIR_MODE


def test_default_root_is_under_the_settings_cache_dir(tmp_path: Path) -> None:
    @dataclasses.dataclass(frozen=True)
    class FakeSettings:
        cache_dir: Path

    cache = VerifiedBinaryCache.from_settings(FakeSettings(cache_dir=tmp_path))
    assert cache.root == tmp_path / "binaries"
    assert cache.directory.is_dir()
