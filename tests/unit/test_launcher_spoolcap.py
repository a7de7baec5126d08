"""HL_LOG_SPOOL_MAX_BYTES: the run-log spool is bounded; the oldest finished run's spool goes
first, never a running run's, and every drop is audited and counted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.audit import MemoryAuditLog, Outcome
from hardened_launcher.launcher.gates import ShippingSinkFactory
from hardened_launcher.launcher.logship import ChunkedLogSink
from hardened_launcher.launcher.metrics import LauncherMetrics
from hardened_launcher.launcher.spoolcap import (
    SpooledRun,
    choose_evictions,
    remove_run_spool,
    spool_usage,
)
from hardened_launcher.settings import SettingsError, load_settings

MIB = 1024 * 1024

runs_strategy = st.lists(
    st.builds(
        SpooledRun,
        run_id=st.sampled_from([f"run-{i}" for i in range(12)]),
        size=st.integers(0, 5000),
        last_write=st.integers(0, 20).map(float),
    ),
    max_size=12,
    unique_by=lambda run: run.run_id,
)


@given(runs=runs_strategy, cap=st.integers(0, 30000), active=st.sets(st.integers(0, 11)))
@settings(max_examples=150, deadline=None)
def test_the_eviction_rule(runs: list[SpooledRun], cap: int, active: set[int]) -> None:
    busy = {f"run-{i}" for i in active}
    chosen = choose_evictions(runs, cap=cap, active=busy)
    by_id = {run.run_id: run for run in runs}
    assert len(chosen) == len(set(chosen))
    assert not busy & set(chosen), "a running run's spool is never dropped"
    total = sum(run.size for run in runs)
    left = total - sum(by_id[run_id].size for run_id in chosen)
    finished = sorted(
        (run for run in runs if run.run_id not in busy), key=lambda r: (r.last_write, r.run_id)
    )
    # Oldest first: what goes is a prefix of the finished runs in age order...
    assert chosen == [run.run_id for run in finished[: len(chosen)]]
    if total <= cap:
        assert chosen == []
    # ...and the shortest one that fits (or all of them when nothing else can go).
    assert left <= cap or len(chosen) == len(finished)
    if chosen:
        assert left + by_id[chosen[-1]].size > cap


def _spool(spool: Path, run_id: str, size: int, mtime: float) -> None:
    directory = spool / run_id
    directory.mkdir(parents=True)
    chunk = directory / "chunk-000000"
    chunk.write_bytes(b"x" * size)
    os.utime(chunk, (mtime, mtime))


def test_usage_and_removal(tmp_path: Path) -> None:
    _spool(tmp_path, "run-a", 10, 100.0)
    (tmp_path / "run-a" / "urls.json").write_text("[]")
    os.utime(tmp_path / "run-a" / "urls.json", (50.0, 50.0))
    (tmp_path / "not a run").mkdir()
    (tmp_path / "stray-file").write_text("x")
    (tmp_path / "run-link").symlink_to(tmp_path / "run-a")
    usage = spool_usage(tmp_path)
    assert usage == [SpooledRun(run_id="run-a", size=12, last_write=100.0)]
    assert remove_run_spool(tmp_path, "run-a") == 12
    assert not (tmp_path / "run-a").exists()
    assert remove_run_spool(tmp_path, "run-a") == 0
    assert remove_run_spool(tmp_path, "../x") == 0
    assert spool_usage(tmp_path / "missing") == []


def _settings(tmp_path: Path, cap: str = "1MiB") -> object:
    return load_settings(
        {
            "HL_STATE_DIR": str(tmp_path),
            "HL_AUDIT_DIR": str(tmp_path / "audit"),
            "HL_LOG_SPOOL_MAX_BYTES": cap,
        }
    )


@pytest.mark.parametrize(("text", "expected"), [("1MiB", MIB), (" 2 GiB ", 2048 * MIB)])
def test_the_setting_parses(tmp_path: Path, text: str, expected: int) -> None:
    assert _settings(tmp_path, text).log_spool_max_bytes == expected  # type: ignore[attr-defined]


@pytest.mark.parametrize("text", ["512KiB", "1025GiB", "1TiB", "big", "-1MiB", "1048576"])
def test_a_bad_setting_is_one_clear_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(SettingsError, match="HL_LOG_SPOOL_MAX_BYTES"):
        _settings(tmp_path, text)


def test_the_default_is_two_gib(tmp_path: Path) -> None:
    settings_ = load_settings({"HL_STATE_DIR": str(tmp_path), "HL_AUDIT_DIR": str(tmp_path)})
    assert settings_.log_spool_max_bytes == 2048 * MIB


def _close(sink: object, timeout_seconds: float = 0) -> None:
    """Close a factory's tee without waiting for uploads that cannot happen (no URLs); an empty
    run's sink is given ``timeout_seconds`` to remove its directory (its uploader thread does)."""
    for inner in sink.sinks:  # type: ignore[attr-defined]
        if isinstance(inner, ChunkedLogSink):
            inner.close(timeout_seconds)
        else:
            inner.close()


def _lost(metrics: LauncherMetrics) -> float:
    return metrics.registry.get_sample_value("hl_log_bytes_lost_total") or 0.0


def test_the_factory_drops_the_oldest_finished_spool_first(tmp_path: Path) -> None:
    """Storage unreachable: finished runs' spools pile up; a new run drops the oldest until the
    spool fits, audited and counted; a closed sink still uploading reports the loss."""
    audit = MemoryAuditLog()
    metrics = LauncherMetrics()
    factory = ShippingSinkFactory(
        settings=_settings(tmp_path),  # type: ignore[arg-type]
        metrics=metrics,
        audit=audit,
    )
    spool = factory.spool_dir
    _spool(spool, "run-old", 400 * 1024, 1000.0)  # left by an earlier process
    _spool(spool, "run-newer", 100 * 1024, 2000.0)
    sink = factory("run-live", (), lambda _chunk: None)  # no URLs: nothing can be uploaded
    sink.write("stdout", b"y" * (700 * 1024))
    _close(sink)
    shipper = factory.shippers[0]
    assert shipper.report().spooled_bytes == 700 * 1024
    # 1.2 MiB > 1 MiB: run-old (oldest) goes; then 800 KiB fits.
    _close(factory("run-next", (), lambda _chunk: None), timeout_seconds=30)
    assert sorted(p.name for p in spool.iterdir()) == ["run-live", "run-newer"]
    dropped = [e for e in audit.events if e.type == "run.logs_dropped"]
    assert [(e.run_id, e.reason, e.outcome) for e in dropped] == [
        ("run-old", "log_lines_lost", Outcome.ERROR)
    ]
    assert dropped[0].fields["lost_bytes"] == 400 * 1024
    assert _lost(metrics) == 400 * 1024
    assert metrics.registry.get_sample_value("hl_log_spool_evictions_total") == 1
    # 900 KiB more in a running run: run-newer (older) goes first, then the closed run-live.
    running = factory("run-big", (), lambda _chunk: None)
    running.write("stdout", b"z" * (900 * 1024))
    assert factory.cap_spool() == ["run-newer", "run-live"]
    report = shipper.report()
    assert report.lost_bytes == 700 * 1024
    assert not report.complete
    assert not report.pending
    assert not (spool / "run-live").exists()
    assert (spool / "run-big").is_dir(), "a running run's spool is never dropped"
    assert _lost(metrics) == (400 + 100 + 700) * 1024
    _close(running)


def test_a_running_run_is_kept_even_over_the_cap(tmp_path: Path) -> None:
    factory = ShippingSinkFactory(settings=_settings(tmp_path))  # type: ignore[arg-type]
    sink = factory("run-huge", (), lambda _chunk: None)
    sink.write("stdout", b"z" * (2 * MIB))
    assert factory.cap_spool() == []
    assert (factory.spool_dir / "run-huge").is_dir()
    _close(sink)
    assert factory.cap_spool() == ["run-huge"]


def test_a_sink_still_being_written_is_never_dropped(tmp_path: Path) -> None:
    sink = ChunkedLogSink(
        run_id="run-w", spool_dir=tmp_path, initial_urls=(), request_more=lambda _c: None
    )
    sink.write("stdout", b"a" * 10)
    assert sink.drop_spool() == (0, 0)
    sink.close(0)
    assert sink.drop_spool()[1] == 10
    sink.shutdown()
