"""The gate end to end with in-process keys: a proof, or a refusal with its reason."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from hardened_launcher.audit import MemoryAuditLog, Outcome
from hardened_launcher.binaries.openpgp import Keyring
from hardened_launcher.binaries.verify import (
    HASH_CHUNK_BYTES,
    VerifiedBinary,
    hash_file,
    verify_binary,
)
from hardened_launcher.errors import (
    ConfigurationError,
    InputFileError,
    LauncherError,
    UntrustedInputError,
)
from tests.unit.test_binaries_support import (
    Release,
    TestKey,
    make_key,
    now_plus,
    sums_line,
    write_release,
)


@pytest.fixture(scope="module")
def key() -> TestKey:
    return make_key()


@pytest.fixture
def release(tmp_path: Path, key: TestKey) -> Release:
    return write_release(tmp_path / "release", key, extra_sums=sums_line("other", b"other"))


def run(release: Release, **overrides: object) -> VerifiedBinary:
    kwargs: dict[str, object] = {
        "sums": release.sums,
        "signature": release.signature,
        "keyring": release.keyring,
        "pins": [release.key.fingerprint],
    }
    kwargs.update(overrides)
    binary = kwargs.pop("binary", release.binary)
    assert isinstance(binary, Path)
    return verify_binary(binary, **kwargs)  # type: ignore[arg-type]


def refused(release: Release, **overrides: object) -> LauncherError:
    with pytest.raises(LauncherError) as caught:
        run(release, **overrides)
    return caught.value


def test_happy_path_returns_a_complete_proof(release: Release) -> None:
    proof = run(release)
    content = release.binary.read_bytes()
    assert proof.name == "tool"
    assert proof.path == release.binary
    assert proof.sha256 == hashlib.sha256(content).hexdigest()
    assert proof.size == len(content)
    assert proof.signer_fingerprint == release.key.fingerprint
    assert proof.signing_key_fingerprint != release.key.fingerprint  # pysequoia signs by subkey
    assert proof.signature_created <= now_plus(seconds=1)
    assert proof.sums_sha256 == hashlib.sha256(release.sums.read_bytes()).hexdigest()


def test_binary_signature_and_parsed_keyring_work(tmp_path: Path, key: TestKey) -> None:
    rel = write_release(tmp_path, key, armor=False)
    keyring = Keyring.from_file(rel.keyring)
    assert run(rel, keyring=keyring).signer_fingerprint == key.fingerprint


def test_tampered_binary_is_a_hash_mismatch(release: Release) -> None:
    release.binary.write_bytes(release.binary.read_bytes() + b"\x00")
    error = refused(release)
    assert isinstance(error, UntrustedInputError)
    assert error.reason == "binary_hash_mismatch"


def test_tampered_sums_file_is_signature_invalid(release: Release) -> None:
    data = release.sums.read_bytes()
    release.sums.write_bytes(data.replace(b"other", b"otheR"))
    assert refused(release).reason == "signature_invalid"


def test_sums_entry_missing_and_duplicate(tmp_path: Path, key: TestKey) -> None:
    content = b"bin"
    rel = write_release(tmp_path / "a", key, name="tool", content=content)
    assert refused(rel, name="absent").reason == "sums_entry_missing"
    dup = write_release(
        tmp_path / "b", key, name="tool", content=content, extra_sums=sums_line("tool", content)
    )
    assert refused(dup).reason == "sums_entry_duplicate"


def test_name_override_looks_up_another_entry(release: Release) -> None:
    other = release.binary.with_name("downloaded.tmp")
    other.write_bytes(b"other")
    proof = run(release, binary=other, name="other")
    assert proof.name == "other"
    assert proof.path == other


def test_signed_but_malformed_sums_is_refused_after_the_signature(
    tmp_path: Path, key: TestKey
) -> None:
    rel = write_release(tmp_path, key, extra_sums=b"not a sums line\n")
    error = refused(rel)
    assert error.reason == "sums_malformed"
    assert "line 2" in error.message


def test_unsigned_garbage_sums_is_refused_by_the_signature_first(release: Release) -> None:
    release.sums.write_bytes(b"\x00\xff garbage")
    assert refused(release).reason == "signature_invalid"


def test_oversized_sums_is_refused_before_verification(release: Release) -> None:
    release.sums.write_bytes(b"\n" * (1024 * 1024 + 1))
    assert refused(release).reason == "sums_too_large"


def test_no_pins_is_refused_before_reading_anything(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(ConfigurationError) as caught:
        verify_binary(missing, sums=missing, signature=missing, keyring=missing, pins=[])
    assert caught.value.reason == "no_pinned_keys"


def test_unreadable_inputs_name_their_role(release: Release, tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    assert refused(release, sums=absent).reason == "sums_unreadable"
    assert refused(release, signature=absent).reason == "signature_unreadable"
    assert refused(release, binary=absent, name="tool").reason == "binary_unreadable"
    assert refused(release, keyring=absent).reason == "keyring_unreadable"
    error = refused(release, binary=tmp_path, name="tool")
    # One exit code for a missing or unreadable input file on every command (66).
    assert isinstance(error, InputFileError)
    assert error.exit_code == 66
    assert "not a regular file" in error.message


def test_a_fifo_is_refused_without_blocking(release: Release, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert refused(release, sums=fifo).reason == "sums_unreadable"


def test_hash_file_streams_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big"
    content = os.urandom(HASH_CHUNK_BYTES * 2 + 123)
    path.write_bytes(content)
    sizes: list[int] = []
    real_readv = os.readv

    def spy(fd: int, buffers: list[bytearray]) -> int:
        sizes.append(sum(len(b) for b in buffers))
        return real_readv(fd, buffers)

    monkeypatch.setattr(os, "readv", spy)
    assert hash_file(path) == (hashlib.sha256(content).hexdigest(), len(content))
    assert set(sizes) == {HASH_CHUNK_BYTES}
    assert len(sizes) == 4  # three reads with data, one at end of file


def test_decisions_are_audited(release: Release) -> None:
    audit = MemoryAuditLog()
    proof = run(release, audit=audit, run_id="run-1")
    release.binary.write_bytes(b"tampered")
    with pytest.raises(UntrustedInputError):
        run(release, audit=audit, run_id="run-2")
    with pytest.raises(ConfigurationError):
        run(release, audit=audit, run_id="run-3", pins=[])
    allowed, denied, errored = audit.events
    assert (allowed.type, allowed.outcome, allowed.run_id) == (
        "binary.verified",
        Outcome.ALLOW,
        "run-1",
    )
    assert allowed.fields["sha256"] == proof.sha256
    assert allowed.fields["signer_fingerprint"] == proof.signer_fingerprint
    assert (denied.type, denied.outcome, denied.reason) == (
        "binary.rejected",
        Outcome.DENY,
        "binary_hash_mismatch",
    )
    assert (errored.outcome, errored.reason) == (Outcome.ERROR, "no_pinned_keys")
    assert all(event.gate == "binaries" for event in audit.events)


def test_proof_validates_itself(release: Release) -> None:
    proof = run(release)
    with pytest.raises(ValueError, match="hex"):
        VerifiedBinary(**{**proof.__dict__, "sha256": "ABC"})
    with pytest.raises(ValueError, match="negative"):
        VerifiedBinary(**{**proof.__dict__, "size": -1})
    with pytest.raises(ValueError, match="timezone"):
        VerifiedBinary(
            **{**proof.__dict__, "signature_created": proof.signature_created.replace(tzinfo=None)}
        )
