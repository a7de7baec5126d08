"""Outages during a run: the broker restarted, object storage down, the launcher SIGKILLed."""

from __future__ import annotations

import re
import time

import pytest

from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.demo.environment import Environment
from hardened_launcher.demo.processes import wait_until
from hardened_launcher.demo.stories import new_run_id
from tests.e2e.conftest import EnvFactory

pytestmark = pytest.mark.integration


def _counting_run(env: Environment, prefix: str, lines: int, interval: str) -> str:
    run_id = new_run_id(prefix)
    command = (
        f'i=1; while [ $i -le {lines} ]; do echo "line $i"; i=$((i+1)); sleep {interval}; done'
    )
    env.submit(env.spec(run_id, [command]))
    env.wait_for_run(run_id, {RunState.RUNNING}, timeout_seconds=60)
    return run_id


def _assert_every_line_once(env: Environment, run_id: str, lines: int) -> list[int]:
    chunks, log = env.logs(run_id)
    assert chunks, "no log chunk in object storage (blocked on: log shipping via presigned URLs)"
    assert chunks == list(range(len(chunks))), f"chunk numbers have gaps: {chunks}"
    seen = re.findall(rb"^line (\d+)$", log, flags=re.MULTILINE)
    numbers = [int(n) for n in seen]
    assert numbers == list(range(1, lines + 1)), (
        f"expected lines 1..{lines} exactly once in order, got {len(numbers)}: "
        f"missing {sorted(set(range(1, lines + 1)) - set(numbers))}, "
        f"duplicated {sorted({n for n in numbers if numbers.count(n) > 1})}"
    )
    return chunks


def test_broker_restarted_mid_run(make_env: EnvFactory) -> None:
    env = make_env(launchers=1, protocol="mqtt")
    run_id = _counting_run(env, "broker", 40, "0.25")
    time.sleep(2)
    env.restart_broker(down_seconds=3)
    run = env.wait_for_run(run_id, timeout_seconds=120)
    assert run.state is RunState.FINISHED, (run.state, run.reason, run.message)
    _assert_every_line_once(env, run_id, 40)


def test_control_plane_restarted_mid_run_over_poll(make_env: EnvFactory) -> None:
    """serve stops (SIGTERM) and starts again while a run streams: the launcher's session is
    gone (410), it opens a new one and resends what was not acknowledged; the run finishes
    once, every log line once."""
    env = make_env(launchers=1, protocol="poll")
    run_id = _counting_run(env, "cp-restart", 40, "0.25")
    time.sleep(2)
    env.restart_serve(down_seconds=3)
    run = env.wait_for_run(run_id, timeout_seconds=120)
    assert run.state is RunState.FINISHED, (run.state, run.reason, run.message)
    _assert_every_line_once(env, run_id, 40)
    history = [kind for _, kind, _ in env.run_history(run_id)]
    assert history.count("run.accepted") == 1, history


def test_object_storage_down_for_30_seconds(make_env: EnvFactory) -> None:
    env = make_env(launchers=1)
    run_id = _counting_run(env, "s3down", 50, "1")
    time.sleep(3)
    env.stop_s3()
    time.sleep(30)
    env.start_s3()
    run = env.wait_for_run(run_id, timeout_seconds=180)
    assert run.state is RunState.FINISHED, (run.state, run.reason, run.message)

    def complete() -> bool:
        _, log = env.logs(run_id)
        return log.count(b"line ") >= 50

    assert wait_until(complete, timeout_seconds=120, interval=2), (
        "the spooled log chunks were not uploaded within 120 s after object storage returned"
    )
    _assert_every_line_once(env, run_id, 50)


def test_launcher_sigkilled_mid_run(make_env: EnvFactory) -> None:
    env = make_env(launchers=1)
    launcher = env.workers[0]
    (record,) = env.wait_for_workers(1)
    run_id = new_run_id("killed")
    env.submit(env.spec(run_id, ["echo started", "sleep 300"]))
    env.wait_for_run(run_id, {RunState.RUNNING}, timeout_seconds=60)
    assert launcher.child is not None
    assert wait_until(lambda: bool(env.containers_of(run_id)), timeout_seconds=20), (
        f"no container for the RUNNING run {run_id} (run: {env.run(run_id)}):\n"
        f"{launcher.child.output()}"
    )
    launcher.child.kill()  # SIGKILL to the launcher only; Docker keeps the container

    run = env.wait_for_run(run_id, {RunState.CRASHED}, timeout_seconds=120)
    assert run.state is RunState.CRASHED
    gone = [r for r in env.worker_records() if r.worker.id == record.worker.id]
    assert gone
    assert not gone[0].worker.alive, "the last will should mark the worker gone"
    assert env.containers_of(run_id), "the container should outlive the SIGKILLed launcher"

    env.start_launcher(launcher)  # same state dir, same launcher id
    assert wait_until(lambda: not env.containers_of(run_id), timeout_seconds=60), (
        "the next start should remove the leftover container"
    )
    assert env.run(run_id).state is RunState.CRASHED, "a crashed run is never re-run"
