"""Shared by issue 18's e2e drills (test_outages.py, test_drills.py): short limits and checks.

Every drill runs with SHORT limits so that each outage outlasts every grace within seconds: the
control plane's heartbeat timeout is 5 s and its lost-run grace 4 s
(``HL_CP_HEARTBEAT_TIMEOUT_SECONDS``, ``HL_CP_LOST_RUN_GRACE_SECONDS``), each launcher heartbeats
every second (its reconnection back-off is then at most 3 s) and each outage lasts 10 s, twice
the longest of them. What every drill asserts: no run lost (each submitted run ends FINISHED),
none duplicated (one container and one ``run.accepted`` per run), none stuck, none killed while
healthy (every log line once, in order) and no log incomplete without the run saying so.
"""

from __future__ import annotations

import re

from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.demo.environment import Environment
from hardened_launcher.demo.processes import wait_until
from hardened_launcher.demo.stories import new_run_id

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


def counting_command(lines: int, interval: str) -> str:
    return f'i=1; while [ $i -le {lines} ]; do echo "line $i"; i=$((i+1)); sleep {interval}; done'


def start_counting_run(env: Environment, prefix: str, lines: int, interval: str) -> str:
    run_id = new_run_id(prefix)
    env.submit(env.spec(run_id, [counting_command(lines, interval)]))
    env.wait_for_run(run_id, {RunState.RUNNING}, timeout_seconds=60)
    assert wait_until(lambda: bool(env.containers_of(run_id)), timeout_seconds=30, interval=0.2)
    return run_id


def assert_healthy_end(env: Environment, run_id: str, lines: int, *, since: float) -> None:
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


def assert_finished_once(env: Environment, run_id: str, *, since: float) -> None:
    run = env.wait_for_run(run_id, timeout_seconds=120)
    assert (run.state, run.exit_code) == (RunState.FINISHED, 0), (
        run.state,
        run.reason,
        run.message,
    )
    assert env.container_events(run_id, since=since).count("create") == 1
