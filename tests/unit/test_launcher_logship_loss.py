"""Lost log lines are never reported as a complete log (issue 18).

A spool write that fails (disk full) or a final flush that fails leaves bytes that will never
reach object storage: the sink's report counts them in ``lost_bytes`` and is not ``complete``,
the metric ``hl_log_bytes_lost`` counts them, and the launcher audits ``run.logs_shipped`` with
reason ``log_lines_lost`` and says so in the run's final status.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hardened_launcher.audit import MemoryAuditLog
from hardened_launcher.launcher.gates import GatedRun
from hardened_launcher.launcher.logship import ChunkedLogSink, LogShipReport
from hardened_launcher.launcher.metrics import LauncherMetrics
from hardened_launcher.transport.messages import Status
from tests.unit.test_launcher_logship import RUN, FakeStore, make


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def sinks() -> Iterator[list[ChunkedLogSink]]:
    made: list[ChunkedLogSink] = []
    yield made
    for sink in made:
        sink.shutdown(1.0)


def _lost_metric(metrics: LauncherMetrics) -> float:
    value = metrics.registry.get_sample_value("hl_log_bytes_lost_total")
    return 0.0 if value is None else value


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO, errno.EDQUOT])
@pytest.mark.parametrize("short", [0, 3])
def test_a_failed_spool_write_counts_the_lost_bytes(
    tmp_path: Path,
    store: FakeStore,
    sinks: list[ChunkedLogSink],
    monkeypatch: pytest.MonkeyPatch,
    err: int,
    short: int,
) -> None:
    metrics = LauncherMetrics()
    sink = make(sinks, tmp_path, store, chunk_bytes=1024, metrics=metrics)
    sink.write("stdout", b"first line\n")
    real = os.write
    calls = {"n": 0}

    def failing(fd: int, data: Any) -> int:  # bytes or memoryview
        calls["n"] += 1
        if calls["n"] == 1 and short:
            return real(fd, bytes(data[:short]))
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "write", failing)
    line = b"the line the full disk eats\n"
    sink.write("stdout", line)  # does not raise: the run goes on (issue 18's state-disk drill)
    monkeypatch.setattr(os, "write", real)
    sink.write("stdout", b"after\n")
    report = sink.close(5)
    assert report.lost_bytes == len(line) - short
    assert not report.complete
    assert _lost_metric(metrics) == len(line) - short
    # What did reach the store is exactly what was written, in order.
    assert b"".join(store.chunks()) == b"first line\n" + line[:short] + b"after\n"


def test_a_full_spool_never_stops_the_run_and_later_chunks_still_ship(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full for a while: every write returns (the runner never sees an error), a chunk
    whose seal failed is lost under its own number, and once the disk has room the next
    chunks are spooled and shipped; the report counts exactly what was lost."""
    sink = make(sinks, tmp_path, store, chunk_bytes=16)
    sink.write("stdout", b"0123456789abcdef")  # chunk 0, sealed
    sink.write("stdout", b"ABCDEFGH")  # chunk 1, open
    real_write, real_rename = os.write, Path.rename

    def enospc(*args: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", enospc)
    sink.write("stdout", b"lost while full\n")
    monkeypatch.setattr(os, "write", real_write)
    monkeypatch.setattr(Path, "rename", enospc)
    sink.write("stdout", b"IJKLMNOPQRST")  # fills chunk 1 (8 + 8 bytes); its seal fails
    monkeypatch.setattr(Path, "rename", real_rename)
    sink.write("stdout", b"back\n")
    report = sink.close(5)
    assert report.lost_bytes == len(b"lost while full\n") + 16 + len(b"QRST")
    assert not report.complete
    prefix = f"http://s3.test/b/runs/{RUN}/chunk-"
    shipped = {int(k[len(prefix) :]): v for k, v in store.objects.items() if k.startswith(prefix)}
    assert shipped == {0: b"0123456789abcdef", 2: b"back\n"}  # chunk 1 was lost


def test_a_failed_final_flush_marks_the_log_incomplete(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = LauncherMetrics()
    sink = make(sinks, tmp_path, store, chunk_bytes=1024, metrics=metrics)
    sink.write("stdout", b"a line in the open chunk\n")

    def eio(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", eio)
    report = sink.close(2)  # does not raise: the run's outcome is not the log's
    monkeypatch.undo()
    assert report.closed
    assert report.lost_bytes == len(b"a line in the open chunk\n")
    assert not report.complete
    assert _lost_metric(metrics) == report.lost_bytes


def test_a_clean_log_is_complete_with_nothing_lost(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink]
) -> None:
    sink = make(sinks, tmp_path, store, chunk_bytes=8)
    sink.write("stdout", b"x" * 100)
    report = sink.close(5)
    assert report.complete
    assert report.lost_bytes == 0


def test_chunks_are_cut_on_time_without_more_output(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink]
) -> None:
    """A slow run's line reaches the store within ``flush_seconds`` though no byte follows."""
    sink = make(sinks, tmp_path, store, chunk_bytes=1024 * 1024, flush_seconds=0.2)
    sink.write("stdout", b"one line a minute\n")
    done = threading.Event()
    for _ in range(100):
        if store.chunks():
            done.set()
            break
        threading.Event().wait(0.05)
    assert done.is_set()
    assert store.chunks() == [b"one line a minute\n"]
    sink.close(5)


# -- the launcher's report: audit, metrics, status ----------------------------------------------
class _Shipper:
    def __init__(self, report: LogShipReport) -> None:
        self._report = report

    def report(self) -> LogShipReport:
        return self._report


@pytest.mark.parametrize(
    ("lost", "pending", "reason"),
    [
        (0, (), None),
        (5, (), "log_lines_lost"),
        (0, (3,), "log_chunks_spooled"),
        (9, (1,), "log_lines_lost"),
    ],
)
def test_the_audit_record_and_status_say_when_lines_were_lost(
    monkeypatch: pytest.MonkeyPatch, lost: int, pending: tuple[int, ...], reason: str | None
) -> None:
    from hardened_launcher.launcher import gates  # noqa: PLC0415

    report = LogShipReport(
        run_id=RUN,
        chunks=4,
        uploaded=4 - len(pending),
        pending=pending,
        spooled_bytes=10 * len(pending),
        failed_attempts=0,
        closed=True,
        lost_bytes=lost,
    )
    monkeypatch.setattr(gates, "_chunked", lambda _sink: _Shipper(report))
    audit = MemoryAuditLog()
    gated = object.__new__(GatedRun)
    object.__setattr__(gated, "audit", audit)
    object.__setattr__(gated, "metrics", None)
    object.__setattr__(gated, "log_close_timeout_seconds", 1.0)

    def fake_run(_assign: Any, _context: Any, _redactor: Any, sinks: list[Any], _r: Any) -> Status:
        sinks.append(object())  # the run opened its sink (the report comes from _Shipper)
        return Status(run_id=RUN, state="FINISHED", exit_code=0)

    object.__setattr__(gated, "_run", fake_run)
    status = gated(_assign(), _context())
    (record,) = [e for e in audit.events if e.type == "run.logs_shipped"]
    assert record.reason == reason
    assert record.fields["lost_bytes"] == lost
    assert status.state == "FINISHED"
    assert status.exit_code == 0
    if lost:
        assert status.message == f"the run's log is incomplete: {lost} bytes were lost"
    else:
        assert status.message is None


def _assign() -> Any:
    return type("A", (), {"run_id": RUN})()


def _context() -> Any:
    return None
