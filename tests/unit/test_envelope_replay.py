"""Replay caches: in memory and in SQLite, atomic under threads, durable across restarts."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from hardened_launcher.envelope import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    EnvelopeConfigurationError,
    EnvelopeError,
    MemoryReplayCache,
    OpenedRunState,
    PoolPrivateKey,
    Reason,
    ReplayCache,
    ReplayCacheError,
    SqliteReplayCache,
    open_run_state,
    parse_envelope,
    seal_run_state,
)
from hardened_launcher.errors import InfrastructureError

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
LIFETIME = timedelta(minutes=10)
SKEW = timedelta(minutes=2)
POOL = "01HPOOL0000000000000000000"
RUN = "01HRUN00000000000000000000"
THREADS = 16


@pytest.fixture(scope="module")
def pool_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def signer() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def seal(key: PoolPrivateKey, signer: ed25519.Ed25519PrivateKey, *, run_id: str = RUN) -> bytes:
    return seal_run_state(
        b"run state",
        pool_public_key=key.public_key(),
        signing_key=signer,
        run_id=run_id,
        pool_id=POOL,
        issued_at=NOW,
        expires_at=NOW + LIFETIME,
    )


def open_(
    envelope: bytes,
    key: Any,
    signer: ed25519.Ed25519PrivateKey,
    cache: ReplayCache,
    *,
    now: datetime = NOW,
) -> OpenedRunState:
    return open_run_state(
        envelope,
        pool_private_key=key,
        signer_public_key=signer.public_key(),
        expected_pool_id=POOL,
        replay_cache=cache,
        now=now,
        clock_skew=SKEW,
        max_envelope_bytes=DEFAULT_MAX_ENVELOPE_BYTES,
    )


def replay_reason(call: Callable[[], object]) -> str:
    with pytest.raises(EnvelopeError) as info:
        call()
    return info.value.reason


def race(worker: Callable[[], object]) -> tuple[list[object], list[BaseException]]:
    """Run ``worker`` in THREADS threads released at once; collect results and errors."""
    barrier = threading.Barrier(THREADS)
    results: list[object] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            value = worker()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on below
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(value)

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


class FailingConnection:
    """Wraps a sqlite3 connection and fails statements containing ``fail_on`` like a bad disk."""

    def __init__(self, real: sqlite3.Connection, fail_on: str) -> None:
        self.real = real
        self.fail_on = fail_on

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        if self.fail_on in sql:
            raise sqlite3.OperationalError("disk I/O error")
        return self.real.execute(sql, params)

    @property
    def in_transaction(self) -> bool:
        return self.real.in_transaction

    def close(self) -> None:
        self.real.close()


# -- replays through open_run_state ------------------------------------------------------------
def test_a_replay_is_refused_with_the_memory_cache(
    pool_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    cache = MemoryReplayCache()
    envelope = seal(pool_key, signer)
    with open_(envelope, pool_key, signer, cache) as opened:
        assert opened.run_id == RUN
    assert replay_reason(lambda: open_(envelope, pool_key, signer, cache)) == Reason.REPLAYED
    # A fresh seal of the same run id is a replay of the run too.
    again = seal(pool_key, signer)
    assert replay_reason(lambda: open_(again, pool_key, signer, cache)) == Reason.REPLAYED


def test_a_replay_is_refused_with_sqlite_and_after_a_restart(
    tmp_path: Path, pool_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    path = tmp_path / "state" / "replay.sqlite3"
    envelope = seal(pool_key, signer)
    with SqliteReplayCache(path) as cache:
        open_(envelope, pool_key, signer, cache).plaintext.wipe()
        assert replay_reason(lambda: open_(envelope, pool_key, signer, cache)) == Reason.REPLAYED
    with SqliteReplayCache(path) as reopened:
        assert len(reopened) == 1
        assert replay_reason(lambda: open_(envelope, pool_key, signer, reopened)) == Reason.REPLAYED
        other = seal(pool_key, signer, run_id="01HRUNOTHER")
        assert open_(other, pool_key, signer, reopened).run_id == "01HRUNOTHER"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_concurrent_opens_of_one_envelope_yield_exactly_one_plaintext(
    tmp_path: Path,
    pool_key: ec.EllipticCurvePrivateKey,
    signer: ed25519.Ed25519PrivateKey,
    kind: str,
) -> None:
    cache: ReplayCache = (
        MemoryReplayCache() if kind == "memory" else SqliteReplayCache(tmp_path / "c" / "r.db")
    )
    envelope = seal(pool_key, signer)
    results, errors = race(lambda: open_(envelope, pool_key, signer, cache))
    assert len(results) == 1
    assert isinstance(results[0], OpenedRunState)
    assert len(errors) == THREADS - 1
    assert {getattr(e, "reason", None) for e in errors} == {Reason.REPLAYED}


def test_separate_sqlite_connections_race_to_exactly_one_record(tmp_path: Path) -> None:
    path = tmp_path / "c" / "r.db"
    SqliteReplayCache(path).close()  # create once, so the racers only open
    caches = [SqliteReplayCache(path) for _ in range(THREADS)]
    counter = iter(range(THREADS))
    lock = threading.Lock()

    def record() -> None:
        with lock:
            cache = caches[next(counter)]
        cache.check_and_record(RUN, NOW + LIFETIME, now=NOW)

    results, errors = race(record)
    assert len(results) == 1
    assert {getattr(e, "reason", None) for e in errors} == {Reason.REPLAYED}
    for cache in caches:
        cache.close()


def test_a_signed_but_undecryptable_envelope_does_not_consume_the_run_id(
    pool_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    cache = MemoryReplayCache()
    good = seal(pool_key, signer)
    broken = bytearray(good)
    broken[parse_envelope(good).header_bytes] ^= 0x01
    body = bytes(broken[:-64])
    resigned = body + signer.sign(body)
    assert replay_reason(lambda: open_(resigned, pool_key, signer, cache)) == (
        Reason.DECRYPT_FAILED
    )
    assert len(cache) == 0
    assert open_(good, pool_key, signer, cache).run_id == RUN


# -- the cache contract ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_entries_live_until_keep_until_and_are_then_pruned(tmp_path: Path, kind: str) -> None:
    cache = MemoryReplayCache() if kind == "memory" else SqliteReplayCache(tmp_path / "c" / "r.db")
    keep_until = NOW + timedelta(seconds=10)
    cache.check_and_record(RUN, keep_until, now=NOW)
    assert replay_reason(lambda: cache.check_not_recorded(RUN, now=keep_until)) == (Reason.REPLAYED)
    assert replay_reason(lambda: cache.check_and_record(RUN, keep_until, now=keep_until)) == (
        Reason.REPLAYED
    )
    later = keep_until + timedelta(seconds=1)
    cache.check_not_recorded(RUN, now=later)  # gone for lookups once keep_until has passed
    assert cache.prune(later) == 1
    assert len(cache) == 0
    cache.check_and_record(RUN, later + LIFETIME, now=later)
    assert len(cache) == 1


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_check_and_record_admits_exactly_one_thread(tmp_path: Path, kind: str) -> None:
    cache = MemoryReplayCache() if kind == "memory" else SqliteReplayCache(tmp_path / "c" / "r.db")
    results, errors = race(lambda: cache.check_and_record(RUN, NOW + LIFETIME, now=NOW))
    assert len(results) == 1
    assert {getattr(e, "reason", None) for e in errors} == {Reason.REPLAYED}


def test_open_passes_expiry_plus_skew_as_keep_until(
    pool_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    cache = MemoryReplayCache()
    open_(seal(pool_key, signer), pool_key, signer, cache).plaintext.wipe()
    last = NOW + LIFETIME + SKEW
    assert replay_reason(lambda: cache.check_not_recorded(RUN, now=last)) == Reason.REPLAYED
    assert cache.prune(last + timedelta(seconds=1)) == 1


# -- the SQLite file ---------------------------------------------------------------------------
def test_sqlite_cache_files_are_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "replay.db"
    with SqliteReplayCache(path) as cache:
        cache.check_and_record(RUN, NOW + LIFETIME, now=NOW)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        wal = path.with_name(path.name + "-wal")
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
        with sqlite3.connect(path) as probe:
            assert probe.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert "replay.db" in repr(cache)


def test_an_existing_directory_open_to_others_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(EnvelopeConfigurationError) as info:
        SqliteReplayCache(shared / "replay.db")
    assert info.value.reason == Reason.REPLAY_CACHE_INSECURE
    assert "chmod 700" in info.value.hint


def test_an_existing_file_open_to_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c" / "replay.db"
    SqliteReplayCache(path).close()
    path.chmod(0o644)
    with pytest.raises(EnvelopeConfigurationError) as info:
        SqliteReplayCache(path)
    assert info.value.reason == Reason.REPLAY_CACHE_INSECURE


def test_a_symlinked_cache_file_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    directory.mkdir(mode=0o700)
    target = tmp_path / "elsewhere.db"
    target.touch(mode=0o600)
    (directory / "replay.db").symlink_to(target)
    with pytest.raises(EnvelopeConfigurationError) as info:
        SqliteReplayCache(directory / "replay.db")
    assert info.value.reason == Reason.REPLAY_CACHE_INSECURE


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_a_cache_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c" / "replay.db"
    SqliteReplayCache(path).close()
    os.chown(path, 4242, -1)
    with pytest.raises(EnvelopeConfigurationError) as info:
        SqliteReplayCache(path)
    assert "another user" in info.value.message


def test_a_corrupt_cache_file_is_unavailable_not_ignored(tmp_path: Path) -> None:
    path = tmp_path / "c" / "replay.db"
    path.parent.mkdir(mode=0o700)
    path.touch(mode=0o600)
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ReplayCacheError) as info:
        SqliteReplayCache(path)
    assert isinstance(info.value, InfrastructureError)
    assert info.value.reason == "replay_cache_unavailable"
    assert info.value.__cause__ is not None


def test_an_unknown_schema_version_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "c" / "replay.db"
    SqliteReplayCache(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(ReplayCacheError):
        SqliteReplayCache(path)


def test_a_write_failure_fails_closed_and_leaves_no_record(
    tmp_path: Path,
    pool_key: ec.EllipticCurvePrivateKey,
    signer: ed25519.Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = SqliteReplayCache(tmp_path / "c" / "r.db")
    real = cache._conn
    monkeypatch.setattr(cache, "_conn", FailingConnection(real, "INSERT"))
    envelope = seal(pool_key, signer)
    with pytest.raises(ReplayCacheError) as info:
        open_(envelope, pool_key, signer, cache)
    assert info.value.reason == "replay_cache_unavailable"
    assert "not opened" in info.value.message
    assert not real.in_transaction
    monkeypatch.setattr(cache, "_conn", real)
    assert len(cache) == 0
    assert open_(envelope, pool_key, signer, cache).run_id == RUN


def test_a_read_failure_fails_closed_before_decryption(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    signer: ed25519.Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = SqliteReplayCache(tmp_path / "c" / "r.db")
    monkeypatch.setattr(cache, "_conn", FailingConnection(cache._conn, "SELECT"))
    decrypts: list[bytes] = []

    class CountingKey(rsa.RSAPrivateKey):
        # Only the methods open_run_state uses; the rest must not be reached.
        def decrypt(self, ciphertext: bytes, padding: Any) -> bytes:
            decrypts.append(ciphertext)
            return rsa_key.decrypt(ciphertext, padding)

        @property
        def key_size(self) -> int:
            return rsa_key.key_size

        def public_key(self) -> rsa.RSAPublicKey:
            return rsa_key.public_key()

        def sign(self, *args: object, **kwargs: object) -> bytes:  # noqa: ARG002
            raise AssertionError

        def private_numbers(self) -> rsa.RSAPrivateNumbers:
            raise AssertionError

        def private_bytes(self, *args: object, **kwargs: object) -> bytes:  # noqa: ARG002
            raise AssertionError

        def __copy__(self) -> rsa.RSAPrivateKey:
            return self

        def __deepcopy__(self, memo: dict[int, object]) -> rsa.RSAPrivateKey:
            return self

    with pytest.raises(ReplayCacheError):
        open_(seal(rsa_key, signer), CountingKey(), signer, cache)
    assert decrypts == []


def test_a_closed_cache_is_unavailable(tmp_path: Path) -> None:
    cache = SqliteReplayCache(tmp_path / "c" / "r.db")
    cache.close()
    with pytest.raises(ReplayCacheError):
        cache.check_and_record(RUN, NOW + LIFETIME, now=NOW)
    with pytest.raises(ReplayCacheError):
        cache.check_not_recorded(RUN, now=NOW)


def test_naive_times_are_a_programming_error() -> None:
    naive = datetime(2030, 1, 1)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        MemoryReplayCache().check_and_record(RUN, naive, now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        MemoryReplayCache().check_not_recorded(RUN, now=naive)
