"""Issue 18's local drills on one long-poll pool: a full state disk and a stepped wall clock.

Real components (``controlplane serve``, the long-poll server, SeaweedFS, dockerd,
``hardened-launcher start``) with the short limits of drills.py. The outages of the broker and
the control plane are test_outages.py; the Docker restart and the full audit disk are
test_local_faults.py.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardened_launcher.controlplane.dispatch import RunState, WorkerState
from hardened_launcher.demo.environment import Environment, Launcher
from hardened_launcher.demo.processes import wait_until
from hardened_launcher.demo.stories import new_run_id
from tests.e2e.clock import SteppedClock
from tests.e2e.conftest import EnvFactory
from tests.e2e.drills import (
    FAST_HEARTBEAT,
    OUTAGE,
    SHORT_GRACES,
    assert_finished_once,
    assert_healthy_end,
    start_counting_run,
)
from tests.e2e.test_local_faults import _free_port, _readyz
from tests.small_tmpfs import fill, mounted_tmpfs, write_until_full

pytestmark = pytest.mark.integration


@pytest.fixture
def state_fs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "statefs", "8M") as target:
        yield target


class _Filler:
    """Keep ``directory``'s filesystem full: take back every byte freed (the launcher's log
    spool removes uploaded chunks) until :meth:`free`."""

    def __init__(self, directory: Path) -> None:
        self.path = fill(directory)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._top_up, daemon=True)
        self._thread.start()

    def _top_up(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            while not self._stop.wait(0.05):
                write_until_full(fd)
        finally:
            os.close(fd)

    def free(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.path.unlink()


def _worker_state(env: Environment, worker_id: str | None) -> WorkerState | None:
    for record in env.worker_records():
        if record.worker.id == worker_id:
            return record.worker.state
    return None


def _state_disk_full(env: Environment, launcher: Launcher, state_fs: Path, port: int) -> None:
    """The state directory (its log spool too) on an 8 MiB tmpfs, kept full for 10 s while a run
    prints: ``/readyz`` says ``disk_full`` and the launcher is DRAINED; the in-flight run ends
    FINISHED and its log is complete or the run says it is not; a run submitted meanwhile waits
    (not REFUSED, not FAILED) and runs once the disk has room."""
    since = time.time() - 1
    lines = 40
    in_flight = start_counting_run(env, "statefull", lines, "0.3")

    filler = _Filler(state_fs)
    filled = time.monotonic()
    assert wait_until(
        lambda: _readyz(port) == "not ready: disk_full", timeout_seconds=15, interval=0.2
    ), _readyz(port)
    unready_after = time.monotonic() - filled
    assert wait_until(
        lambda: _worker_state(env, launcher.launcher_id()) is WorkerState.DRAINED,
        timeout_seconds=15,
        interval=0.2,
    )
    queued = new_run_id("statefull-queued")
    env.submit(env.spec(queued, ["echo after the disk had room again"]))
    time.sleep(OUTAGE)
    assert env.run(queued).state is RunState.QUEUED, env.run(queued)

    filler.free()
    freed = time.monotonic()
    assert wait_until(lambda: _readyz(port) == "ready", timeout_seconds=30, interval=0.2), _readyz(
        port
    )
    ready_after = time.monotonic() - freed

    run = env.wait_for_run(in_flight, timeout_seconds=120)
    assert (run.state, run.exit_code) == (RunState.FINISHED, 0), (
        run.state,
        run.reason,
        run.message,
    )
    _, log = env.logs(in_flight)
    numbers = [int(n) for n in re.findall(rb"^line (\d+)$", log, flags=re.MULTILINE)]
    if numbers != list(range(1, lines + 1)):
        assert "log is incomplete" in run.message, (run.message, numbers)
    assert len(set(numbers)) == len(numbers), f"duplicated lines: {numbers}"
    assert_finished_once(env, queued, since=since)
    print(
        f"state disk: unready {unready_after:.2f}s after full, ready {ready_after:.2f}s after "
        f"freed; in-flight log {len(numbers)}/{lines} lines ({run.message or 'complete'})"
    )


def _clock_steps(env: Environment, skewed: Launcher, clock: SteppedClock, port: int) -> None:
    """The launcher's wall clock stepped -2 min and +2 min while a run is in its container, and
    a second run leased at +2 min: both finish (a lease is timed on the monotonic clock). Then
    +1 h, beyond ``HL_CLOCK_SKEW``: the launcher must not take a run it would drop; a run
    submitted then finishes once on a healthy peer; the in-flight run still reports."""
    since = time.time() - 1
    lines = 40
    in_flight = start_counting_run(env, "clock", lines, "0.3")

    # Back 2 min: the run in its container goes on and the launcher stays ready. (No new run
    # here: the demo's release key and signatures are seconds old, so a clock 2 min behind
    # sees them made in the future and refuses the binary; see docs/launcher.md.)
    clock.step(-120)
    time.sleep(2)
    assert env.run(in_flight).state is RunState.RUNNING, env.run(in_flight)
    assert _readyz(port) == "ready", _readyz(port)
    # Ahead 2 min (within HL_CLOCK_SKEW): a run leased now is accepted, started and finished.
    clock.step(120)
    time.sleep(1)
    leased = new_run_id("clock-plus2m")
    env.submit(env.spec(leased, ["echo leased after a clock step"]))
    assert_finished_once(env, leased, since=since)
    assert env.run(leased).worker_id == skewed.launcher_id()
    assert _readyz(port) == "ready", _readyz(port)

    clock.step(3600)
    ahead = new_run_id("clock-ahead")
    env.submit(env.spec(ahead, ["echo on the healthy peer"]))
    time.sleep(3)
    peer = env.add_launcher(env=FAST_HEARTBEAT)
    env.wait_for_workers(2)
    assert_finished_once(env, ahead, since=since)
    assert env.run(ahead).worker_id == peer.launcher_id(), env.run(ahead)
    print(f"an hour ahead: readyz {_readyz(port)!r}")

    clock.step(0)
    assert_healthy_end(env, in_flight, lines, since=since)
    assert env.run(in_flight).worker_id == skewed.launcher_id()


def test_state_disk_full_and_clock_steps_over_poll(
    make_env: EnvFactory, state_fs: Path, tmp_path: Path
) -> None:
    """Two drills on one long-poll pool (one environment: CI time): one launcher whose state
    directory is a tmpfs and whose wall clock is an ``LD_PRELOAD`` shim (at the true time until
    the clock drill), with two slots."""
    clock = SteppedClock.create(tmp_path)
    env = make_env(launchers=0, protocol="poll", cp_env=SHORT_GRACES)
    port = _free_port()
    launcher = env.add_launcher(
        env={
            **clock.environ(),
            **FAST_HEARTBEAT,
            "HL_STATE_DIR": str(state_fs / "state"),
            "HL_AUDIT_DIR": str(tmp_path / "audit"),  # its own disk (test_local_faults.py)
            "HL_METRICS_ADDRESS": f"127.0.0.1:{port}",
            "HL_MAX_CONCURRENT_RUNS": "2",
        }
    )
    env.wait_for_workers(1)
    assert wait_until(lambda: _readyz(port) == "ready", timeout_seconds=30, interval=0.5)
    _state_disk_full(env, launcher, state_fs, port)
    _clock_steps(env, launcher, clock, port)
