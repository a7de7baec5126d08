"""Phases, outputs and confirmation end to end: real dockerd (busybox runs), the control plane's
``serve``, SeaweedFS for the sealed plans, the launcher daemon.

One environment runs four stories: a confirmed run (phases shown while it runs, stops
UNCONFIRMED, confirm, the applying run reads the exact bytes the planning run wrote, outputs
shown by ``run show`` with the secret masked), a discarded one (nothing applied), and two whose
stored plan is altered or swapped with another run's before confirm (the applying run is
refused before it executes, and the launcher's audit log says why).
"""

from __future__ import annotations

from typing import Any

import pytest

from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.controlplane.logs import LogStorage, LogStorageConfig, plan_key
from hardened_launcher.demo.environment import Environment
from hardened_launcher.demo.stories import new_run_id
from tests.e2e.conftest import EnvFactory

pytestmark = pytest.mark.integration

CANARY = "hl-canary-7f3a9c1e5d"


def _confirmed_spec(env: Environment, run_id: str) -> dict[str, Any]:
    spec = env.spec(run_id, ["true"], secret_env={"DEPLOY_TOKEN": CANARY})
    spec["run_type"] = "wo"
    spec["metadata"] = {"commit_sha": "0123456789abcdef0123456789abcdef01234567"}
    spec["confirm_after"] = "planning"
    spec["phases"] = [
        {"name": "initializing", "commands": ["echo init"]},
        {
            "name": "planning",
            "commands": [
                # A plan that differs each run (so the applying run proves it read this one).
                'printf "plan %s %s" "$(date +%s)" "$(head -c 12 /dev/urandom | base64)" '
                '> "$HL_PLAN_FILE"',
                'cp "$HL_PLAN_FILE" "$HL_OUTPUTS/planned"',
                'echo "token=$DEPLOY_TOKEN" > "$HL_OUTPUTS/leak.txt"',
            ],
        },
        {
            "name": "applying",
            "commands": [
                'test "$(stat -c %a "$HL_PLAN_FILE")" = 400',
                'cp "$HL_PLAN_FILE" "$HL_OUTPUTS/applied"',
            ],
        },
    ]
    return spec


def _storage(env: Environment) -> LogStorage:
    config = LogStorageConfig.from_environ(env.cp_environ())
    assert config is not None
    return LogStorage(config)


def _object(env: Environment, key: str) -> bytes:
    storage = _storage(env)
    body = storage._client.get_object(Bucket=storage.config.bucket, Key=key)["Body"]
    try:
        return bytes(body.read())
    finally:
        body.close()


def _put_object(env: Environment, key: str, data: bytes) -> None:
    storage = _storage(env)
    storage._client.put_object(Bucket=storage.config.bucket, Key=key, Body=data)


def _planned(env: Environment, label: str) -> str:
    run_id = env.submit(_confirmed_spec(env, new_run_id(label)))
    run = env.wait_for_run(run_id, {RunState.UNCONFIRMED, RunState.FAILED}, timeout_seconds=60)
    assert run.state is RunState.UNCONFIRMED, (run, env.run_history(run_id))
    return run_id


def test_phases_outputs_confirm_discard_and_tampered_plans(make_env: EnvFactory) -> None:
    env = make_env(launchers=1, run_timeout="60s")

    # A confirmed run: the planning half runs its phases and stops UNCONFIRMED.
    planned = _planned(env, "confirm")
    with env.store() as store:
        assert [p.name for p in store.phases(planned)] == ["initializing", "planning"]
        outputs = store.outputs(planned)
        plan = store.plan_of(planned)
    assert outputs is not None and plan is not None and plan.artifact_sha256
    shown = env.cp("run", "show", planned).stdout
    assert "UNCONFIRMED" in shown and "initializing" in shown and "planning" in shown, shown
    assert "leak.txt" in shown and CANARY not in shown, shown
    listed = env.cp("runs", "list").stdout
    assert "UNCONFIRMED" in listed and "planning" in listed, listed
    # Only sealed bytes are stored: the plan's text is not in the object.
    sealed = _object(env, plan_key("", planned))
    assert b"plan " not in sealed and len(sealed) > 512

    env.cp("run", "confirm", planned)
    assert env.run(planned).state is RunState.CONFIRMED
    applied = env.wait_for_run(plan.apply_run_id, timeout_seconds=60)
    assert applied.state is RunState.FINISHED, (applied, env.run_history(applied.id))
    with env.store() as store:
        assert [p.name for p in store.phases(applied.id)] == ["applying"]
        apply_outputs = store.outputs(applied.id)
    assert apply_outputs is not None
    # The applying run read exactly the bytes the planning run wrote.
    assert apply_outputs[0]["applied"] == outputs[0]["planned"]
    assert all(CANARY not in v for v in (*outputs[0].values(), *apply_outputs[0].values()))
    again = env.cp("run", "confirm", planned, check=False)
    assert again.returncode != 0 and "UNCONFIRMED" in again.stderr

    # Discard: the run ends, nothing is applied.
    discarded = _planned(env, "discard")
    env.cp("run", "discard", discarded)
    assert env.run(discarded).state is RunState.DISCARDED
    with env.store() as store:
        assert store.find_run(f"{discarded}.apply") is None

    # A stored plan altered after planning, and one swapped with another run's plan: both are
    # refused before the applying run executes (the digest in its signed ticket).
    tampered = _planned(env, "tampered")
    data = bytearray(_object(env, plan_key("", tampered)))
    data[len(data) // 2] ^= 0x01
    _put_object(env, plan_key("", tampered), bytes(data))
    swapped = _planned(env, "swapped")
    _put_object(env, plan_key("", swapped), sealed)
    for run_id in (tampered, swapped):
        env.cp("run", "confirm", run_id)
        refused = env.wait_for_run(f"{run_id}.apply", timeout_seconds=60)
        assert (refused.state, refused.reason) == (RunState.REFUSED, "plan_digest_mismatch")
        with env.store() as store:
            assert store.phases(refused.id) == []  # nothing executed
    audit = "".join(p.read_text() for p in env.workers[0].audit_dir.rglob("*.jsonl"))
    assert audit.count('"plan_digest_mismatch"') >= 2
