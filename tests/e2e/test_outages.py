"""Outages during a run: the broker and the control plane down longer than every grace (issue
18's drills, with the short limits of drills.py), object storage down, the launcher SIGKILLed."""

from __future__ import annotations

import re
import time

import pytest

from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.demo.environment import Environment
from hardened_launcher.demo.processes import wait_until
from hardened_launcher.demo.stories import new_run_id
from tests.e2e.conftest import EnvFactory
from tests.e2e.drills import (
    FAST_HEARTBEAT,
    HEARTBEAT_TIMEOUT,
    OUTAGE,
    SHORT_GRACES,
    assert_finished_once,
    assert_healthy_end,
    start_counting_run,
)

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


def test_broker_then_control_plane_down_longer_than_every_grace_over_mqtt(
    make_env: EnvFactory,
) -> None:
    """mosquitto stopped for 10 s (it publishes the live launcher's will), then ``serve`` stopped
    for 10 s while a run is submitted: the in-flight run goes on and reports, the new one runs
    once after the restart."""
    env = make_env(launchers=1, protocol="mqtt", cp_env=SHORT_GRACES, launcher_env=FAST_HEARTBEAT)
    since = time.time() - 1
    lines = 100
    in_flight = start_counting_run(env, "mqtt-outages", lines, "0.3")
    env.restart_broker(down_seconds=OUTAGE)
    time.sleep(HEARTBEAT_TIMEOUT)  # heard again, then the control plane goes
    assert env.run(in_flight).state is RunState.RUNNING, env.run(in_flight)
    assert env.serve is not None
    env.serve.stop()
    queued = new_run_id("mqtt-cp-down")
    env.submit(env.spec(queued, ["echo submitted while the control plane was down"]))
    time.sleep(OUTAGE)
    env.start_serve()
    assert_healthy_end(env, in_flight, lines, since=since)
    assert_finished_once(env, queued, since=since)


def test_control_plane_down_longer_than_every_grace_over_poll(make_env: EnvFactory) -> None:
    """``serve`` stopped for 10 s (the long-poll sessions are gone with it) while a run streams
    and another is submitted: the run goes on, resends what was not acknowledged, and reports;
    the submitted one runs once."""
    env = make_env(launchers=1, protocol="poll", cp_env=SHORT_GRACES, launcher_env=FAST_HEARTBEAT)
    since = time.time() - 1
    lines = 40
    in_flight = start_counting_run(env, "poll-cp-down", lines, "0.3")
    assert env.serve is not None
    env.serve.stop()
    queued = new_run_id("poll-queued")
    env.submit(env.spec(queued, ["echo submitted while the control plane was down"]))
    time.sleep(OUTAGE)
    env.start_serve()
    assert_healthy_end(env, in_flight, lines, since=since)
    assert_finished_once(env, queued, since=since)


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
