"""HL_RUN_LOG_RETENTION: local per-run log copies pruned by age and count, never unshipped."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.launcher.gates import ShippingSinkFactory
from hardened_launcher.launcher.runlogs import (
    DEFAULT_RUN_LOG_RETENTION,
    MIN_IDLE,
    RunLogRetention,
    parse_retention,
    prune_run_logs,
)
from hardened_launcher.settings import SettingsError, load_settings

NOW = 2_000_000_000.0
HOUR = 3600.0


def _copy(
    directory: Path, run_id: str, age_seconds: float, stamp: int = 0, now: float = NOW
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{run_id}-20300102T030405{stamp:06d}Z.log"
    path.write_bytes(b"line\n")
    os.utime(path, (now - age_seconds, now - age_seconds))
    return path


def _prune(tmp_path: Path, retention: RunLogRetention, active: tuple[str, ...] = ()) -> set[str]:
    prune_run_logs(
        tmp_path / "runs",
        spool_dir=tmp_path / "log-spool",
        retention=retention,
        active=active,
        now=lambda: NOW,
    )
    return {p.name.split("-2030")[0] for p in (tmp_path / "runs").iterdir()}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("168h", RunLogRetention(max_age=timedelta(hours=168))),
        ("500", RunLogRetention(max_count=500)),
        ("24h,10", RunLogRetention(max_age=timedelta(hours=24), max_count=10)),
        (" 10 , 1h30m ", RunLogRetention(max_age=timedelta(minutes=90), max_count=10)),
        ("OFF", RunLogRetention()),
    ],
)
def test_the_setting_parses(text: str, expected: RunLogRetention) -> None:
    assert parse_retention(text) == expected


@pytest.mark.parametrize(
    "text", ["", "7d", "0", "30s", "8761h", "1000001", "1h,2h", "1,2", "1h,2,3", ",", "-1h", "1e3"]
)
def test_bad_values_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_retention(text)


def test_the_setting_is_loaded_once_with_one_clear_error(tmp_path: Path) -> None:
    base = {"HL_STATE_DIR": str(tmp_path / "state"), "HL_AUDIT_DIR": str(tmp_path / "audit")}
    assert load_settings(base).run_log_retention == DEFAULT_RUN_LOG_RETENTION
    got = load_settings({**base, "HL_RUN_LOG_RETENTION": "2h"}).run_log_retention
    assert got == RunLogRetention(max_age=timedelta(hours=2))
    with pytest.raises(SettingsError, match="HL_RUN_LOG_RETENTION") as caught:
        load_settings({**base, "HL_RUN_LOG_RETENTION": "7d"})
    assert "168h,1000" in str(caught.value.hint) + str(caught.value)


def test_old_copies_go_recent_ones_stay(tmp_path: Path) -> None:
    _copy(tmp_path / "runs", "old", 30 * HOUR)
    _copy(tmp_path / "runs", "new", 2 * HOUR)
    assert _prune(tmp_path, RunLogRetention(max_age=timedelta(hours=24))) == {"new"}


def test_the_newest_count_stay(tmp_path: Path) -> None:
    for i in range(5):
        _copy(tmp_path / "runs", f"run-{i}", (i + 1) * HOUR)
    assert _prune(tmp_path, RunLogRetention(max_count=2)) == {"run-0", "run-1"}


def test_a_copy_whose_chunks_are_not_all_shipped_is_never_removed(tmp_path: Path) -> None:
    _copy(tmp_path / "runs", "unshipped-run", 100 * HOUR)
    _copy(tmp_path / "runs", "shipped-run", 100 * HOUR)
    (tmp_path / "log-spool" / "unshipped-run").mkdir(parents=True)
    report = prune_run_logs(
        tmp_path / "runs",
        spool_dir=tmp_path / "log-spool",
        retention=RunLogRetention(max_age=timedelta(hours=1), max_count=1),
        now=lambda: NOW,
    )
    assert (report.removed, report.kept_unshipped) == (1, 1)
    assert [p.name.split("-2030")[0] for p in (tmp_path / "runs").iterdir()] == ["unshipped-run"]


def test_an_active_or_recently_written_copy_is_never_removed(tmp_path: Path) -> None:
    _copy(tmp_path / "runs", "active", 100 * HOUR)
    _copy(tmp_path / "runs", "fresh", MIN_IDLE.total_seconds() - 5)
    _copy(tmp_path / "runs", "idle", MIN_IDLE.total_seconds() + 5)
    kept = _prune(tmp_path, RunLogRetention(max_age=timedelta(minutes=1)), active=("active",))
    assert kept == {"active", "fresh"}


def test_off_keeps_everything_and_other_files_are_left_alone(tmp_path: Path) -> None:
    _copy(tmp_path / "runs", "old", 1000 * HOUR)
    (tmp_path / "runs" / "notes.txt").write_text("mine")
    assert _prune(tmp_path, RunLogRetention()) == {"old", "notes.txt"}
    assert _prune(tmp_path, RunLogRetention(max_count=1)) == {"old", "notes.txt"}
    (tmp_path / "runs" / "old-20300102T030405000000Z.log").unlink()
    assert _prune(tmp_path, RunLogRetention(max_count=1)) == {"notes.txt"}


def test_a_missing_directory_is_nothing_to_do(tmp_path: Path) -> None:
    report = prune_run_logs(
        tmp_path / "none",
        spool_dir=tmp_path,
        retention=DEFAULT_RUN_LOG_RETENTION,
        now=lambda: NOW,
    )
    assert report.removed == 0


@given(
    ages=st.lists(st.integers(0, 400), min_size=0, max_size=12),
    spooled=st.sets(st.integers(0, 11)),
    max_age=st.none() | st.integers(1, 300),
    max_count=st.none() | st.integers(1, 10),
)
@settings(max_examples=60, deadline=None)
def test_pruning_matches_the_rule(
    tmp_path_factory: pytest.TempPathFactory,
    ages: list[int],
    spooled: set[int],
    max_age: int | None,
    max_count: int | None,
) -> None:
    """A copy is removed exactly when it is beyond a limit, idle, and its run fully shipped."""
    base = tmp_path_factory.mktemp("prune")
    for i, age in enumerate(ages):
        _copy(base / "runs", f"run-{i}", age * 60.0, stamp=i)
        if i in spooled:
            (base / "log-spool" / f"run-{i}").mkdir(parents=True)
    retention = RunLogRetention(
        max_age=None if max_age is None else timedelta(minutes=max_age), max_count=max_count
    )
    kept = _prune(base, retention) if (base / "runs").exists() else set()
    names = {i: f"run-{i}-20300102T030405{i:06d}Z.log" for i in range(len(ages))}
    order = sorted(range(len(ages)), key=lambda i: (NOW - ages[i] * 60.0, names[i]), reverse=True)
    expected = set()
    for rank, i in enumerate(order):
        seconds = ages[i] * 60.0
        beyond = (max_age is not None and seconds > max_age * 60.0) or (
            max_count is not None and rank >= max_count
        )
        if not beyond or seconds < MIN_IDLE.total_seconds() or i in spooled:
            expected.add(f"run-{i}")
    assert kept == expected


def test_the_daemon_sink_factory_prunes_before_each_run(tmp_path: Path) -> None:
    settings_ = load_settings(
        {
            "HL_STATE_DIR": str(tmp_path),
            "HL_AUDIT_DIR": str(tmp_path / "audit"),
            "HL_RUN_LOG_RETENTION": "1",
        }
    )
    _copy(tmp_path / "runs", "older", 2 * HOUR, now=time.time())
    _copy(tmp_path / "runs", "old", 1 * HOUR, now=time.time())
    factory = ShippingSinkFactory(settings=settings_)
    report = factory.prune()
    assert report.removed == 1
    assert {p.name.split("-2030")[0] for p in (tmp_path / "runs").iterdir()} == {"old"}
