"""The audit log heals after ENOSPC/EIO once writes succeed again, by the start-up rule.

The failing writer is injected (``os.write``/``os.fsync`` replaced): it writes part of a line
then fails, as a full disk does. Then writes succeed again: ``try_recover`` cuts the
unacknowledged partial line, ends the segment with a ``recovery`` checkpoint, opens a new one
with ``audit.log_recovered`` and a checkpoint; the whole log verifies; and ``doctor``'s rule
(``verify_log(allow_open_tail=True)``) accepts a partial last line that start-up cuts.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.audit import canonical as c
from hardened_launcher.audit.chain import ChainedAuditLog
from hardened_launcher.audit.reader import AuditFormatError, list_segments, split_lines
from hardened_launcher.audit.verify import verify_log
from hardened_launcher.errors import InfrastructureError
from tests.unit.audit_support import KEY, die, event, open_log


def _records(directory: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _, name in list_segments(directory):
        out.extend(json.loads(line) for line in split_lines((directory / name).read_bytes()))
    return out


def _healthy(log: ChainedAuditLog) -> bool:
    return log.healthy  # a call, so mypy does not keep an earlier narrowing


def _short_then_fail(keep: int, err: int) -> Callable[[int, Any], int]:
    """A writer that writes ``keep`` bytes of the first call, then fails with ``err``."""
    real = os.write
    state = {"written": False}

    def write(fd: int, data: Any) -> int:
        if not state["written"] and keep:
            state["written"] = True
            return real(fd, bytes(data[:keep]))
        raise OSError(err, os.strerror(err))

    return write


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO, errno.EDQUOT])
@pytest.mark.parametrize("keep", [0, 1, 17, 120])
def test_a_failed_write_recovers_once_writes_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, keep: int
) -> None:
    log = open_log(tmp_path)
    log.record(event(1))
    real = os.write
    monkeypatch.setattr(os, "write", _short_then_fail(keep, err))
    with pytest.raises(InfrastructureError) as info:
        log.record(event(2))
    assert info.value.reason == "audit_unavailable"
    assert not log.healthy
    assert not log.try_recover()  # the disk still refuses: stays failed, nothing lost
    assert not log.healthy
    monkeypatch.setattr(os, "write", real)
    assert log.try_recover()
    assert _healthy(log)
    log.record(event(3))
    log.close()
    report = verify_log(tmp_path, KEY.public_key())
    assert report.sealed
    records = _records(tmp_path)
    kinds = [r["type"] for r in records]
    recovered = [r for r in records if r["type"] == c.LOG_RECOVERED_TYPE]
    assert len(recovered) == 1
    assert recovered[0]["fields"]["cut_partial_bytes"] == keep
    assert os.strerror(err) in recovered[0]["fields"]["failure"]
    # The acknowledged record 1 and the new record 3 are there; the failed record 2 is not.
    numbers = {r["fields"]["n"] for r in records if r["type"].endswith(".checked")}
    assert numbers == {1, 3}
    # The failed segment ends with a recovery checkpoint; the new one starts with the record.
    i = kinds.index(c.LOG_RECOVERED_TYPE)
    assert records[i - 1]["fields"]["trigger"] == c.TRIGGER_RECOVERY
    assert records[i + 1]["type"] == c.CHECKPOINT_TYPE
    assert len(list_segments(tmp_path)) == 2


def test_an_fsync_failure_recovers_and_the_chain_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(tmp_path)
    real = os.fsync

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(InfrastructureError):
        log.record(event(1))
    assert not log.try_recover()
    monkeypatch.setattr(os, "fsync", real)
    assert log.try_recover()
    log.record(event(2))
    log.close()
    assert verify_log(tmp_path, KEY.public_key()).sealed


def test_recovery_is_repeatable_through_several_outages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(tmp_path)
    real = os.write
    for round_ in range(5):
        monkeypatch.setattr(os, "write", _short_then_fail(round_ * 7, errno.ENOSPC))
        with pytest.raises(InfrastructureError):
            log.record(event(100 + round_))
        monkeypatch.setattr(os, "write", real)
        assert log.try_recover()
        log.record(event(round_))
    log.close()
    report = verify_log(tmp_path, KEY.public_key())
    assert report.sealed
    assert [r["type"] for r in _records(tmp_path)].count(c.LOG_RECOVERED_TYPE) == 5


def test_recovery_while_rotating_a_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = open_log(tmp_path, segment_bytes=1)  # every record ends its segment
    log.record(event(1))
    real_open = os.open

    def no_space(path: Any, flags: int, *args: Any) -> int:
        if flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_space)
    with pytest.raises(InfrastructureError):
        log.record(event(2))
    assert not log.try_recover()
    monkeypatch.setattr(os, "open", real_open)
    assert log.try_recover()
    log.record(event(3))
    log.close()
    assert verify_log(tmp_path, KEY.public_key()).sealed


def test_recovery_never_waits_for_a_hung_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading  # noqa: PLC0415 - only this test
    import time  # noqa: PLC0415

    log = open_log(tmp_path)
    real = os.write
    monkeypatch.setattr(os, "write", _short_then_fail(5, errno.ENOSPC))
    with pytest.raises(InfrastructureError):
        log.record(event(1))
    monkeypatch.setattr(os, "write", real)
    holding = threading.Event()
    release = threading.Event()

    def hung_writer() -> None:
        with log._write_lock:  # stands in for a write stuck in the kernel
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hung_writer)
    thread.start()
    holding.wait(5)
    started = time.monotonic()
    assert not log.try_recover()
    assert time.monotonic() - started < 0.5
    release.set()
    thread.join(5)
    assert log.try_recover()
    log.close()
    assert verify_log(tmp_path, KEY.public_key()).sealed


def test_a_closed_log_does_not_recover(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.close()
    assert not log.try_recover()
    assert log.try_recover() is False


def test_a_healthy_log_recovers_trivially(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    assert log.try_recover()
    log.close()
    assert len([r for r in _records(tmp_path) if r["type"] == c.LOG_RECOVERED_TYPE]) == 0


# -- doctor and start agree on a partial last line --------------------------------------------
@given(junk=st.binary(min_size=1, max_size=300).filter(lambda b: b"\n" not in b))
@settings(max_examples=40, deadline=None)
def test_doctor_accepts_a_partial_last_line_and_start_cuts_exactly_it(
    tmp_path_factory: pytest.TempPathFactory, junk: bytes
) -> None:
    directory = tmp_path_factory.mktemp("audit")
    log = open_log(directory)
    log.record(event(1))
    # The process dies mid-write: a partial line at the end of the last segment.
    last = directory / list_segments(directory)[-1][1]
    with last.open("ab") as f:
        f.write(junk)
    die(log)
    # doctor's rule: accepted, counted, not "tampering".
    report = verify_log(directory, KEY.public_key(), allow_open_tail=True)
    assert report.partial_tail_bytes == len(junk)
    # A sealed-log verification still refuses it.
    with pytest.raises(AuditFormatError) as info:
        verify_log(directory, KEY.public_key())
    assert info.value.reason == "audit_segment_truncated"
    # start's rule: the same bytes are cut, the chain continues and verifies.
    reopened = ChainedAuditLog(directory, signing_key=KEY)
    reopened.close()
    opened = [r for r in _records(directory) if r["type"] == c.LOG_OPENED_TYPE]
    assert opened[-1]["fields"]["cut_partial_bytes"] == len(junk)
    assert verify_log(directory, KEY.public_key()).sealed


def test_a_partial_line_before_the_last_segment_is_still_truncation(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=1)
    log.record(event(1))
    log.record(event(2))
    log.close()
    first = tmp_path / list_segments(tmp_path)[0][1]
    with first.open("ab") as f:
        f.write(b'{"partial')
    with pytest.raises(AuditFormatError) as info:
        verify_log(tmp_path, KEY.public_key(), allow_open_tail=True)
    assert info.value.reason in {"audit_segment_truncated", "audit_sequence_broken"}


def test_a_last_segment_holding_only_a_partial_line_is_accepted_as_open(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=1)
    log.record(event(1))
    log.close()
    nxt = list_segments(tmp_path)[-1][0]
    head = _records(tmp_path)[-1]["seq"] + 1
    assert nxt < head
    (tmp_path / c.segment_name(head)).write_bytes(b'{"v":1,"se')
    report = verify_log(tmp_path, KEY.public_key(), allow_open_tail=True)
    assert report.partial_tail_bytes == 10
    reopened = ChainedAuditLog(tmp_path, signing_key=KEY)
    reopened.close()
    assert verify_log(tmp_path, KEY.public_key()).sealed
