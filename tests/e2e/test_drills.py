"""Issue 18's drills as tests: outages longer than every grace, a full state disk, a stepped clock.

Every drill runs real components (``controlplane serve``, mosquitto or the long-poll server,
SeaweedFS, dockerd, ``hardened-launcher start``) with SHORT limits so that each outage outlasts
every grace within seconds: the control plane's heartbeat timeout is 5 s and its lost-run grace
4 s (``HL_CP_HEARTBEAT_TIMEOUT_SECONDS``, ``HL_CP_LOST_RUN_GRACE_SECONDS``), each launcher
heartbeats every second (its reconnection back-off is then at most 3 s), and each outage lasts
10 s, twice the longest of them. What every drill asserts: no run lost (each submitted run ends
FINISHED), none duplicated (one container and one ``run.accepted`` per run), none stuck, none
killed while healthy (every log line once, in order) and no log incomplete without the run saying
so. The Docker restart and the full audit disk are test_local_faults.py; object storage down is
test_outages.py.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardened_launcher.controlplane.dispatch import RunState, WorkerState
from hardened_launcher.demo.environment import Environment, Launcher
from hardened_launcher.demo.processes import wait_until
from hardened_launcher.demo.stories import new_run_id
from tests.conftest import integration_required, require_tool
from tests.e2e.clock import SteppedClock
from tests.e2e.conftest import EnvFactory
from tests.e2e.test_local_faults import _fill, _free_port, _readyz

pytestmark = pytest.mark.integration

HEARTBEAT_TIMEOUT = 5
#: Above the launchers' reconnection cap (three heartbeat intervals: 3 s here).
GRACE = 4
#: Longer than every grace: twice the heartbeat timeout.
OUTAGE = 2 * HEARTBEAT_TIMEOUT
SHORT_GRACES = {
    "HL_CP_HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT),
    "HL_CP_LOST_RUN_GRACE_SECONDS": str(GRACE),
    "HL_CP_LEASE_SECONDS": "10",
}
FAST_HEARTBEAT = {"HL_HEARTBEAT_INTERVAL": "1s"}


def _counting_command(lines: int, interval: str) -> str:
    return f'i=1; while [ $i -le {lines} ]; do echo "line $i"; i=$((i+1)); sleep {interval}; done'


def _start_counting_run(env: Environment, prefix: str, lines: int, interval: str) -> str:
    run_id = new_run_id(prefix)
    env.submit(env.spec(run_id, [_counting_command(lines, interval)]))
    env.wait_for_run(run_id, {RunState.RUNNING}, timeout_seconds=60)
    assert wait_until(lambda: bool(env.containers_of(run_id)), timeout_seconds=30, interval=0.2)
    return run_id


def _assert_healthy_end(env: Environment, run_id: str, lines: int, *, since: float) -> None:
    """FINISHED with exit 0, accepted and created once, every log line once and in order."""
    run = env.wait_for_run(run_id, timeout_seconds=120)
    assert (run.state, run.exit_code) == (RunState.FINISHED, 0), (
        run.state,
        run.reason,
        run.message,
    )
    history = [kind for _, kind, _ in env.run_history(run_id)]
    assert history.count("run.accepted") == 1, history
    creates = env.container_events(run_id, since=since).count("create")
    assert creates == 1, f"{run_id}: {creates} containers"

    def complete() -> bool:
        _, log = env.logs(run_id)
        return log.count(b"line ") >= lines

    assert wait_until(complete, timeout_seconds=30, interval=0.5), env.logs(run_id)[1][-300:]
    chunks, log = env.logs(run_id)
    assert chunks == list(range(len(chunks))), f"chunk numbers have gaps: {chunks}"
    numbers = [int(n) for n in re.findall(rb"^line (\d+)$", log, flags=re.MULTILINE)]
    assert numbers == list(range(1, lines + 1)), numbers


def _assert_finished_once(env: Environment, run_id: str, *, since: float) -> None:
    run = env.wait_for_run(run_id, timeout_seconds=120)
    assert (run.state, run.exit_code) == (RunState.FINISHED, 0), (
        run.state,
        run.reason,
        run.message,
    )
    assert env.container_events(run_id, since=since).count("create") == 1


def test_broker_then_control_plane_down_longer_than_every_grace_over_mqtt(
    make_env: EnvFactory,
) -> None:
    """mosquitto stopped for 10 s (it publishes the live launcher's will), then ``serve`` stopped
    for 10 s while a run is submitted: the in-flight run goes on and reports, the new one runs
    once after the restart."""
    env = make_env(launchers=1, protocol="mqtt", cp_env=SHORT_GRACES, launcher_env=FAST_HEARTBEAT)
    since = time.time() - 1
    lines = 100
    in_flight = _start_counting_run(env, "mqtt-outages", lines, "0.3")
    env.restart_broker(down_seconds=OUTAGE)
    time.sleep(HEARTBEAT_TIMEOUT)  # heard again, then the control plane goes
    assert env.run(in_flight).state is RunState.RUNNING, env.run(in_flight)
    assert env.serve is not None
    env.serve.stop()
    queued = new_run_id("mqtt-cp-down")
    env.submit(env.spec(queued, ["echo submitted while the control plane was down"]))
    time.sleep(OUTAGE)
    env.start_serve()
    _assert_healthy_end(env, in_flight, lines, since=since)
    _assert_finished_once(env, queued, since=since)


@pytest.fixture
def state_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        message = "mounting a tmpfs needs root"
        if integration_required():
            pytest.fail(message)
        pytest.skip(message)
    target = tmp_path / "statefs"
    target.mkdir()
    subprocess.run(
        [require_tool("mount"), "-t", "tmpfs", "-o", "size=8M,mode=0700", "tmpfs", str(target)],
        check=True,
        timeout=30,
    )
    try:
        yield target
    finally:
        subprocess.run([require_tool("umount"), "-l", str(target)], check=True, timeout=30)


class _Filler:
    """Keep ``directory``'s filesystem full: take back every byte freed (the launcher's log
    spool removes uploaded chunks) until :meth:`free`."""

    def __init__(self, directory: Path) -> None:
        self.path = _fill(directory)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._top_up, daemon=True)
        self._thread.start()

    def _top_up(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            while not self._stop.wait(0.05):
                for size in (65536, 4096, 1):
                    try:
                        while True:
                            os.write(fd, b"\0" * size)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
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


def _control_plane_outage(env: Environment, since: float) -> None:
    """``serve`` stopped for 10 s (the long-poll sessions are gone with it) while a run streams
    and another is submitted: the run goes on, resends what was not acknowledged, and reports;
    the submitted one runs once."""
    lines = 40
    in_flight = _start_counting_run(env, "poll-cp-down", lines, "0.3")
    assert env.serve is not None
    env.serve.stop()
    queued = new_run_id("poll-queued")
    env.submit(env.spec(queued, ["echo submitted while the control plane was down"]))
    time.sleep(OUTAGE)
    env.start_serve()
    _assert_healthy_end(env, in_flight, lines, since=since)
    _assert_finished_once(env, queued, since=since)


def _state_disk_full(env: Environment, launcher: Launcher, state_fs: Path, port: int) -> None:
    """The state directory (its log spool too) on an 8 MiB tmpfs, kept full for 10 s while a run
    prints: ``/readyz`` says ``disk_full`` and the launcher is DRAINED; the in-flight run ends
    FINISHED and its log is complete or the run says it is not; a run submitted meanwhile waits
    (not REFUSED, not FAILED) and runs once the disk has room."""
    since = time.time() - 1
    lines = 40
    in_flight = _start_counting_run(env, "statefull", lines, "0.3")

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
    _assert_finished_once(env, queued, since=since)
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
    in_flight = _start_counting_run(env, "clock", lines, "0.3")

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
    _assert_finished_once(env, leased, since=since)
    assert env.run(leased).worker_id == skewed.launcher_id()
    assert _readyz(port) == "ready", _readyz(port)

    clock.step(3600)
    ahead = new_run_id("clock-ahead")
    env.submit(env.spec(ahead, ["echo on the healthy peer"]))
    time.sleep(3)
    peer = env.add_launcher(env=FAST_HEARTBEAT)
    env.wait_for_workers(2)
    _assert_finished_once(env, ahead, since=since)
    assert env.run(ahead).worker_id == peer.launcher_id(), env.run(ahead)
    print(f"an hour ahead: readyz {_readyz(port)!r}")

    clock.step(0)
    _assert_healthy_end(env, in_flight, lines, since=since)
    assert env.run(in_flight).worker_id == skewed.launcher_id()


def test_control_plane_outage_state_disk_full_and_clock_steps_over_poll(
    make_env: EnvFactory, state_fs: Path, tmp_path: Path
) -> None:
    """Three drills on one long-poll pool (one environment: CI time): one launcher whose state
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
    _control_plane_outage(env, time.time() - 1)
    assert wait_until(lambda: _readyz(port) == "ready", timeout_seconds=30, interval=0.5)
    _state_disk_full(env, launcher, state_fs, port)
    _clock_steps(env, launcher, clock, port)
