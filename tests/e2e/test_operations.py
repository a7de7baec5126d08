"""Operator actions end to end: drain/undrain a worker, cycle a pool."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hardened_launcher.audit.keys import key_id, load_existing_signing_key, public_key_pem
from hardened_launcher.audit.reader import list_segments, split_lines
from hardened_launcher.audit.verify import verify_log
from hardened_launcher.audit.witness import (
    WitnessError,
    load_witness_path,
    verify_log_with_witnesses,
)
from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.demo.environment import BUCKET, Environment
from hardened_launcher.demo.stories import new_run_id
from tests.e2e.conftest import EnvFactory

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("protocol", ["poll", "mqtt"])
def test_drain_then_undrain_then_cycle(make_env: EnvFactory, protocol: str) -> None:
    # Checkpoints every second, so the launcher sends audit witnesses during the test.
    env = make_env(
        launchers=1, protocol=protocol, launcher_env={"HL_AUDIT_CHECKPOINT_INTERVAL": "1s"}
    )
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
    _witnesses_detect_a_cut_log(env, launcher.state_dir)


def _witnesses_detect_a_cut_log(env: Environment, state_dir: Path) -> None:
    """The launcher's checkpoints reached the control plane over the transport and object
    storage; its log cut after an early witnessed checkpoint verifies alone, not with them."""
    key = load_existing_signing_key(state_dir)
    assert key is not None
    pem = state_dir.parent / "audit.pub"
    pem.write_text(public_key_pem(key.public_key()))
    kid = key_id(key.public_key())
    stored = state_dir.parent / "witnesses.jsonl"
    stored.write_text(env.cp("witnesses", "--key-id", kid).stdout)
    witnesses = load_witness_path(stored)
    assert len(witnesses) >= 2, "the launcher sent too few audit witnesses"
    audit = state_dir / "audit"
    server = env.s3.server if env.s3 is not None else None
    assert server is not None
    s3_env = {**env.cp_environ(), **server.environ()}
    verify = ["audit", "verify", str(audit), "--public-key", str(pem), "--witness"]
    deadline = time.monotonic() + 30  # serve copies them to object storage on its own thread
    while True:
        whole = env.cli(*verify, f"s3://{BUCKET}", env=s3_env, check=False)
        if whole.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert whole.returncode == 0, whole.stderr
    # Cut the log right after the first witnessed checkpoint (the launcher stopped: no writer).
    first = min(w.seq for w in witnesses)
    for _, name in list_segments(audit):
        lines = split_lines((audit / name).read_bytes())
        seqs = [json.loads(line)["seq"] for line in lines]
        if first in seqs:
            keep = seqs.index(first) + 1
            (audit / name).write_bytes(b"".join(x + b"\n" for x in lines[:keep]))
        elif seqs[0] > first:
            (audit / name).unlink()
    verify_log(audit, key.public_key(), allow_open_tail=True)  # alone, the cut log passes
    with pytest.raises(WitnessError) as caught:
        verify_log_with_witnesses(audit, key.public_key(), witnesses, allow_open_tail=True)
    assert caught.value.reason == "audit_log_rolled_back"
