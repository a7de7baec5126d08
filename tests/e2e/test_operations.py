"""Operator actions end to end: drain/undrain a worker, cycle a pool."""

from __future__ import annotations

import time

import pytest

from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.demo.stories import new_run_id
from tests.e2e.conftest import EnvFactory

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("protocol", ["poll", "mqtt"])
def test_drain_then_undrain_then_cycle(make_env: EnvFactory, protocol: str) -> None:
    env = make_env(launchers=1, protocol=protocol)
    (record,) = env.wait_for_workers(1)
    env.cp("worker", "drain", record.worker.id)
    run_id = new_run_id("drained")
    env.submit(env.spec(run_id, ["echo after undrain"]))
    time.sleep(8)
    assert env.run(run_id).state is RunState.QUEUED, "a drained worker was given a run"
    listed = env.cp("workers", "list").stdout
    assert "DRAINED" in listed, f"workers list should show DRAINED:\n{listed}"
    env.cp("worker", "undrain", record.worker.id)
    assert env.wait_for_run(run_id, timeout_seconds=60).state is RunState.FINISHED

    # cycle: the launcher finishes its current run, then exits 0.
    long_run = new_run_id("cycle")
    env.submit(env.spec(long_run, ["sleep 5", "echo finished"]))
    env.wait_for_run(long_run, {RunState.RUNNING}, timeout_seconds=60)
    env.cp("pool", "cycle", "--name", env.pool)
    launcher = env.workers[0]
    assert launcher.child is not None
    code = launcher.child.wait(60)
    assert code == 0, f"cycle: the launcher should exit 0, got {code}:\n{launcher.child.output()}"
    assert env.run(long_run).state is RunState.FINISHED, "cycle must let the current run finish"
    # The worker reported the run's phase over this transport, and the control plane kept it.
    with env.store() as store:
        assert [p.name for p in store.phases(long_run)] == ["main"]
