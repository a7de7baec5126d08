from __future__ import annotations

import errno
import io
import itertools
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from hardened_launcher.audit import canonical as c
from hardened_launcher.audit.chain import ChainedAuditLog
from hardened_launcher.audit.keys import (
    SIGNING_KEY_FILE,
    key_id,
    keyed_hash,
    load_or_create_hmac_key,
    load_or_create_signing_key,
)
from hardened_launcher.audit.reader import list_segments, split_lines
from hardened_launcher.audit.verify import verify_log
from hardened_launcher.cli import main
from hardened_launcher.errors import ConfigurationError, InfrastructureError
from tests.unit.audit_support import KEY, Clock, event, open_log, write_log
from tests.unprivileged import unprivileged


def _records(directory: Path) -> list[dict[str, Any]]:
    out = []
    for _, name in list_segments(directory):
        out += [json.loads(line) for line in split_lines((directory / name).read_bytes())]
    return out


def test_records_are_chained_canonical_and_verify(tmp_path: Path) -> None:
    write_log(tmp_path, 12)
    records = _records(tmp_path)
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert records[0]["prev"] == c.GENESIS_HASH
    for before, after in itertools.pairwise(records):
        assert after["prev"] == before["hash"]
    for r in records:
        assert c.record_hash(r) == r["hash"]
    assert records[0]["type"] == "audit.log_opened"
    assert records[-1]["type"] == "audit.checkpoint"
    assert records[-1]["fields"]["trigger"] == "close"
    report = verify_log(tmp_path, KEY.public_key())
    assert report.sealed
    assert report.records == len(records)


def test_every_line_is_the_canonical_encoding(tmp_path: Path) -> None:
    write_log(tmp_path, 3)
    for _, name in list_segments(tmp_path):
        for line in split_lines((tmp_path / name).read_bytes()):
            assert c.canonical_json(json.loads(line)) == line
            assert b" " not in line.replace(b"a|b", b"")  # no whitespace outside strings
            line.decode("ascii")


def test_checkpoint_every_n_records_and_at_segment_ends(tmp_path: Path) -> None:
    write_log(tmp_path, 40, segment_bytes=2000, checkpoint_records=4)
    segments = list_segments(tmp_path)
    assert len(segments) > 3
    for first, name in segments:
        lines = [json.loads(x) for x in split_lines((tmp_path / name).read_bytes())]
        assert lines[0]["seq"] == first
        assert lines[-1]["type"] == "audit.checkpoint"
        assert lines[-1]["fields"]["trigger"] in c.SEGMENT_ENDING_TRIGGERS
    records = _records(tmp_path)
    since = 0
    for r in records:
        if r["type"] == "audit.checkpoint":
            since = 0
        else:
            since += 1
        assert since <= 4
    assert verify_log(tmp_path, KEY.public_key()).checkpoints >= 10


def test_checkpoint_after_t_seconds(tmp_path: Path) -> None:
    clock = Clock()
    log = open_log(tmp_path, clock, checkpoint_records=1000, checkpoint_seconds=60)
    log.record(event(1))
    clock.tick(61)
    log.record(event(2))  # due: a "seconds" checkpoint follows it
    log.record(event(3))
    clock.tick(61)
    log.checkpoint_if_due()  # the daemon's timer signs an idle tail
    log.close()
    triggers = [
        r["fields"]["trigger"] for r in _records(tmp_path) if r["type"] == "audit.checkpoint"
    ]
    assert triggers == ["seconds", "seconds", "close"]


def test_segment_rotates_on_age(tmp_path: Path) -> None:
    clock = Clock()
    log = open_log(tmp_path, clock, segment_seconds=3600)
    log.record(event(1))
    clock.tick(3601)
    log.record(event(2))
    log.record(event(3))
    log.close()
    assert len(list_segments(tmp_path)) == 2
    verify_log(tmp_path, KEY.public_key())


def test_restart_after_clean_close_continues_the_chain(tmp_path: Path) -> None:
    write_log(tmp_path, 3)
    write_log(tmp_path, 3)
    report = verify_log(tmp_path, KEY.public_key())
    assert report.sealed
    assert report.unclean_stops == 0
    opened = [r for r in _records(tmp_path) if r["type"] == "audit.log_opened"]
    assert [r["fields"]["previous_stop"] for r in opened] == ["none", "clean"]


def test_crash_then_restart_cuts_partial_line_and_signs_the_tail(tmp_path: Path) -> None:
    write_log(tmp_path, 3, close=False)  # no close: the process "crashed"
    (_, last) = list_segments(tmp_path)[-1]
    with (tmp_path / last).open("ab") as f:
        f.write(b'{"fields":{"n":')  # a write cut by the crash, never acknowledged
    log = open_log(tmp_path)
    log.record(event(9))
    log.close()
    report = verify_log(tmp_path, KEY.public_key())
    assert report.sealed
    assert report.unclean_stops == 1
    records = _records(tmp_path)
    assert any(
        r["type"] == "audit.checkpoint" and r["fields"]["trigger"] == "recovery" for r in records
    )
    opened = [r for r in records if r["type"] == "audit.log_opened"][-1]
    assert opened["fields"]["cut_partial_bytes"] == 15


def test_damaged_last_segment_refuses_to_start(tmp_path: Path) -> None:
    write_log(tmp_path, 3)
    (_, last) = list_segments(tmp_path)[-1]
    data = (tmp_path / last).read_bytes().replace(b'"n":1', b'"n":7')
    (tmp_path / last).write_bytes(data)
    with pytest.raises(InfrastructureError) as info:
        open_log(tmp_path)
    assert info.value.reason == "audit_unavailable"


def test_segment_files_are_private(tmp_path: Path) -> None:
    write_log(tmp_path / "audit", 2)
    assert stat.S_IMODE((tmp_path / "audit").stat().st_mode) == 0o700
    for _, name in list_segments(tmp_path / "audit"):
        assert stat.S_IMODE((tmp_path / "audit" / name).stat().st_mode) == 0o600


# -- fail closed ------------------------------------------------------------------------------
def test_disk_full_raises_audit_unavailable_and_stays_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(tmp_path)
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(InfrastructureError) as info:
        log.record(event(1))
    assert info.value.reason == "audit_unavailable"
    assert "No space left" in info.value.message
    assert not log.healthy
    monkeypatch.setattr(os, "write", real_write)
    with pytest.raises(InfrastructureError, match="failed earlier"):
        log.record(event(2))  # sticky: no silent resumption with an uncertain chain


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = open_log(tmp_path)
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    log.record(event(1))
    monkeypatch.setattr(os, "write", real_write)
    log.close()
    verify_log(tmp_path, KEY.public_key())


def test_zero_byte_write_is_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = open_log(tmp_path)
    monkeypatch.setattr(os, "write", lambda _fd, _data: 0)
    with pytest.raises(InfrastructureError) as info:
        log.record(event(1))
    assert info.value.reason == "audit_unavailable"


def test_fsync_failure_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = open_log(tmp_path)

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(InfrastructureError) as info:
        log.record(event(1))
    assert info.value.reason == "audit_unavailable"
    assert not log.healthy


@unprivileged
def test_permission_lost_on_rotation(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=1)  # every record ends a segment
    log.record(event(1))
    tmp_path.chmod(0o500)  # the next segment cannot be created
    try:
        with pytest.raises(InfrastructureError) as info:
            log.record(event(2))
        assert info.value.reason == "audit_unavailable"
        assert "Permission denied" in info.value.message
    finally:
        tmp_path.chmod(0o700)


@unprivileged
def test_unwritable_directory_at_start(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(InfrastructureError) as info:
            open_log(tmp_path / "audit")
        assert info.value.reason == "audit_unavailable"
    finally:
        tmp_path.chmod(0o700)


def test_a_stuck_writer_times_out_instead_of_hanging(tmp_path: Path) -> None:
    log = open_log(tmp_path, write_timeout_seconds=0.2)
    log._write_lock.acquire()  # a writer stuck in the kernel (hung NFS, frozen disk)
    try:
        with pytest.raises(InfrastructureError, match="did not respond") as info:
            log.record(event(1))
        assert info.value.reason == "audit_unavailable"
    finally:
        log._write_lock.release()
    assert not log.healthy


def _write_many(log: ChainedAuditLog, start: int, count: int) -> None:
    for i in range(start, start + count):
        log.record(event(i))


def test_concurrent_writers_share_fsyncs_and_keep_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = []
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        syncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting)
    log = open_log(tmp_path, checkpoint_records=50)
    before = len(syncs)
    threads = [threading.Thread(target=_write_many, args=(log, k * 100, 25)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    report = verify_log(tmp_path, KEY.public_key())
    events = report.records - report.checkpoints - 1
    assert events == 200
    assert len(syncs) - before <= events + 2  # never more than one fsync per record


def test_the_log_refuses_forged_checkpoint_events(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    from hardened_launcher.audit import AuditEvent, Outcome  # noqa: PLC0415

    with pytest.raises(ValueError, match="written by the log"):
        log.record(AuditEvent(type="audit.checkpoint", outcome=Outcome.INFO))


# -- keys -------------------------------------------------------------------------------------
def test_signing_key_is_created_once_0600(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "state")
    path = tmp_path / "state" / SIGNING_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_signing_key(tmp_path / "state")
    assert key_id(key.public_key()) == key_id(again.public_key())


def test_group_readable_key_is_refused(tmp_path: Path) -> None:
    load_or_create_signing_key(tmp_path)
    (tmp_path / SIGNING_KEY_FILE).chmod(0o640)
    with pytest.raises(ConfigurationError) as info:
        load_or_create_signing_key(tmp_path)
    assert info.value.reason == "audit_key_permissions"


def test_keyed_hash_is_stable_and_keyed(tmp_path: Path) -> None:
    key = load_or_create_hmac_key(tmp_path)
    other = load_or_create_hmac_key(tmp_path / "other")
    h = keyed_hash(key, "10.0.0.7")
    assert h == keyed_hash(key, b"10.0.0.7")
    assert h.startswith("hmac-sha256:")
    assert h != keyed_hash(other, "10.0.0.7")
    assert "10.0.0.7" not in h


def test_cli_audit_key_prints_the_public_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HL_STATE_DIR", str(tmp_path / "state"))
    assert main(["audit", "key"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("-----BEGIN PUBLIC KEY-----")
    key = load_or_create_signing_key(tmp_path / "state")
    assert key_id(key.public_key()) in out
    assert "PRIVATE" not in out


def test_cli_audit_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HL_STATE_DIR", str(tmp_path))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"subject-42\n")))
    assert main(["audit", "hash"]) == 0
    expected = keyed_hash(load_or_create_hmac_key(tmp_path), "subject-42")
    assert capsys.readouterr().out.strip() == expected


def test_chained_log_is_an_audit_sink(tmp_path: Path) -> None:
    from hardened_launcher.audit import AuditSink  # noqa: PLC0415

    log = ChainedAuditLog(tmp_path, signing_key=KEY)
    sink: AuditSink = log  # mypy proves the protocol; the records prove the behaviour
    sink.record(event(1))
    log.close()
    records = _records(tmp_path)
    recorded = [r for r in records if r["type"] == event(1).type]
    assert len(recorded) == 1
    assert recorded[0]["run_id"] == event(1).run_id
    assert recorded[0]["fields"]["n"] == 1
    report = verify_log(tmp_path, KEY.public_key())
    assert report.records == len(records)
