"""The four stories of ``hardened-launcher demo``, on real components (docs/demo.md), and a
confirmed run (phases, outputs, plan, confirm, discard, a tampered plan) on the same environment."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.controlplane.errors import ConflictError
from hardened_launcher.controlplane.logs import LogStorage, LogStorageConfig, plan_key
from hardened_launcher.controlplane.runs import confirm_run, discard_run, submit_run
from hardened_launcher.demo.environment import Environment
from hardened_launcher.demo.stories import (
    Narrator,
    StoryResult,
    masked_secret,
    new_run_id,
    policy_denied,
    run_story,
    tampered_envelope,
    timed_out,
)

pytestmark = pytest.mark.integration


class _Print:
    def say(self, text: str) -> None:
        print(text)


@pytest.mark.parametrize(
    "story",
    [masked_secret, policy_denied, tampered_envelope, timed_out],
    ids=["masked_secret", "policy_denied", "tampered_envelope", "timeout"],
)
def test_demo_story(
    demo_env: Environment, story: Callable[[Environment, Narrator], StoryResult]
) -> None:
    result = run_story(story, demo_env, _Print())
    assert result.passed, result.problem


CONFIRM_CANARY = "hl-canary-7f3a9c1e5d"


def _confirmed_spec(env: Environment, run_id: str) -> dict[str, Any]:
    spec = env.spec(run_id, ["true"], secret_env={"DEPLOY_TOKEN": CONFIRM_CANARY})
    spec["run_type"] = "wo"
    spec["metadata"] = {"commit_sha": "0123456789abcdef0123456789abcdef01234567"}
    spec["confirm_after"] = "planning"
    spec["phases"] = [
        {"name": "initializing", "commands": ["echo init"]},
        {
            "name": "planning",
            "commands": [
                # A plan that differs each run (so the applying run proves it read this one).
                'printf "plan %s" "$(head -c 12 /dev/urandom | base64)" > "$HL_PLAN_FILE"',
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


def _plan_storage(env: Environment) -> LogStorage:
    config = LogStorageConfig.from_environ(env.cp_environ())
    assert config is not None
    return LogStorage(config)


def _object(env: Environment, key: str) -> bytes:
    storage = _plan_storage(env)
    body = storage._client.get_object(Bucket=storage.config.bucket, Key=key)["Body"]
    try:
        return bytes(body.read())
    finally:
        body.close()


def _put_object(env: Environment, key: str, data: bytes) -> None:
    storage = _plan_storage(env)
    storage._client.put_object(Bucket=storage.config.bucket, Key=key, Body=data)


def _submit(env: Environment, label: str) -> str:
    """``run submit`` in process (the CLI's own path; a subprocess per run costs seconds)."""
    assert env.state is not None
    spec = yaml.safe_dump(_confirmed_spec(env, new_run_id(label))).encode()
    with env.store() as store:
        return submit_run(env.state, store, pool=env.pool, spec=spec, now=datetime.now(UTC)).id


def _unconfirmed(env: Environment, run_id: str) -> None:
    run = env.wait_for_run(run_id, {RunState.UNCONFIRMED, RunState.FAILED}, timeout_seconds=90)
    assert run.state is RunState.UNCONFIRMED, (run, env.run_history(run_id))


def test_confirmed_run_phases_outputs_discard_and_a_tampered_plan(demo_env: Environment) -> None:
    """Phases, outputs and confirmation on the stories' environment (over each transport): a
    confirmed run (its phases recorded, stops UNCONFIRMED, ``run show``/``runs list`` show phases
    and outputs with the secret masked, ``run confirm``, the applying run reads the exact bytes
    the planning run wrote), a discarded one (nothing applied), and one whose stored plan is
    altered before confirm (refused before it executes, and audited). A plan swapped between
    runs, or made for another commit: tests/unit/test_launcher_plans.py."""
    env = demo_env
    planned, discarded, tampered = (_submit(env, k) for k in ("confirm", "discard", "tamper"))
    for run_id in (planned, discarded, tampered):
        _unconfirmed(env, run_id)

    # The planning half ran its phases and stopped UNCONFIRMED, with its outputs (masked).
    with env.store() as store:
        assert [p.name for p in store.phases(planned)] == ["initializing", "planning"]
        outputs = store.outputs(planned)
        plan = store.plan_of(planned)
    assert outputs is not None
    assert plan is not None
    assert plan.artifact_sha256
    shown = env.cp("run", "show", planned).stdout
    for text in ("UNCONFIRMED", "initializing", "planning", "leak.txt", "token=***"):
        assert text in shown, shown
    assert CONFIRM_CANARY not in shown, shown
    listed = env.cp("runs", "list").stdout
    assert "UNCONFIRMED" in listed, listed
    assert "planning" in listed, listed
    # Only sealed bytes are stored: the plan's text is not in the object.
    sealed = _object(env, plan_key("", planned))
    assert b"plan " not in sealed
    assert len(sealed) > 512

    # Confirm: the applying run reads exactly the bytes the planning run wrote.
    env.cp("run", "confirm", planned)
    assert env.run(planned).state is RunState.CONFIRMED
    # Discard: the run ends, nothing is applied.
    with env.store() as store:
        discard_run(store, discarded, now=time.time())
        with pytest.raises(ConflictError, match="UNCONFIRMED"):
            confirm_run(store, discarded, now=time.time())
        assert store.find_run(f"{discarded}.apply") is None
    assert env.run(discarded).state is RunState.DISCARDED
    # A stored plan altered after planning: refused before the applying run executes (the
    # digest in its signed ticket), and audited.
    data = bytearray(_object(env, plan_key("", tampered)))
    data[len(data) // 2] ^= 0x01
    _put_object(env, plan_key("", tampered), bytes(data))
    with env.store() as store:
        confirm_run(store, tampered, now=time.time())

    applied = env.wait_for_run(plan.apply_run_id, timeout_seconds=90)
    assert applied.state is RunState.FINISHED, (applied, env.run_history(applied.id))
    with env.store() as store:
        assert [p.name for p in store.phases(applied.id)] == ["applying"]
        apply_outputs = store.outputs(applied.id)
    assert apply_outputs is not None
    assert apply_outputs[0]["applied"] == outputs[0]["planned"]
    assert all(CONFIRM_CANARY not in v for v in (*outputs[0].values(), *apply_outputs[0].values()))

    refused = env.wait_for_run(f"{tampered}.apply", timeout_seconds=90)
    assert (refused.state, refused.reason) == (RunState.REFUSED, "plan_digest_mismatch")
    with env.store() as store:
        assert store.phases(refused.id) == []  # nothing executed
    audit = "".join(p.read_text() for p in env.workers[0].audit_dir.rglob("*.jsonl"))
    assert '"plan_digest_mismatch"' in audit
