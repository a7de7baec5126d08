"""Phases, outputs and confirmation on the control plane: the pure dispatch rules (hypothesis)
and the coordinator on the MemoryBroker (the same session rules and codec as both real
transports: dedupe of retransmissions, acks)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from hardened_launcher.controlplane import dispatch
from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.controlplane.errors import ConflictError
from hardened_launcher.controlplane.runs import cancel_run, confirm_run, discard_run
from hardened_launcher.controlplane.store import PlanRecord, Store
from hardened_launcher.envelope.ticket import manifest_from_spec, verify_ticket
from hardened_launcher.executor.runspec import run_spec_from_mapping
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.transport import messages as wire
from tests.unit.test_controlplane_serve import Rig
from tests.unit.test_controlplane_support import KEY_ID, T0, add_pool, open_store

PHASES = ["initializing", "planning", "applying"]
COMMIT = "ab" * 20
SANITIZER = Sanitizer(b"p" * 32)


def _spec(run_id: str, phases: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "run_id": run_id,
        "run_type": "wo",
        "image": "busybox",
        "phases": [{"name": p, "commands": ["true"]} for p in phases],
        "metadata": {"commit_sha": COMMIT},
        **extra,
    }


def _manifest(document: dict[str, Any]) -> bytes:
    return manifest_from_spec(run_spec_from_mapping(document), SANITIZER).encoded()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path) as s:
        add_pool(s)
        yield s


def _confirmed_run(store: Store, run_id: str = "run-1") -> None:
    """What `run submit` stores for a spec with confirm_after (planning half queued)."""
    store.add_run(
        run_id=run_id,
        pool_id="pool-a",
        spec_sha256="0" * 64,
        key_id=KEY_ID,
        envelope=b"sealed:" + run_id.encode(),
        envelope_expires_at=T0 + 86_400,
        now=T0,
        manifest=_manifest(_spec(run_id, PHASES[:2], stage="plan")),
    )
    store.add_plan(
        PlanRecord(
            run_id=run_id,
            apply_run_id=f"{run_id}.apply",
            commit_sha=COMMIT,
            apply_spec_sha256="1" * 64,
            apply_envelope=b"sealed-apply:" + run_id.encode(),
            apply_manifest=_manifest(
                _spec(f"{run_id}.apply", PHASES[2:], stage="apply", plan_of=run_id)
            ),
            apply_envelope_expires_at=T0 + 86_400,
            artifact_sha256=None,
        )
    )


class _Plans:
    def plan_url(self, run_id: str, *, method: str) -> str:
        return f"https://s3.example/{run_id}/plan.sealed?m={method}"


def _rig(store: Store) -> Rig:
    rig = Rig(store)
    rig.coordinator.signing_key = Ed25519PrivateKey.generate()
    rig.coordinator.plan_urls = _Plans()
    return rig


def _phase(name: str, at: datetime | None = None) -> wire.PhaseStarted:
    return wire.PhaseStarted(run_id="run-1", phase=name, started_at=at or datetime.now(UTC))


def _running(rig: Rig) -> Any:
    worker = rig.worker("w-1")
    worker.register()
    rig.pump()
    (assign,) = [m.body for m in rig.cp.sent if isinstance(m.body, wire.Assign)]
    assert assign.plan_url == "https://s3.example/run-1/plan.sealed?m=PUT"
    worker.accept("run-1", assign.lease_id)
    rig.pump()
    assert "run-1" in worker.running
    return worker


def test_phases_are_recorded_once_in_order_and_only_those_the_manifest_names(
    store: Store,
) -> None:
    _confirmed_run(store)
    rig = _rig(store)
    worker = _running(rig)
    for name in ("initializing", "initializing", "bogus", "planning", "initializing"):
        worker.send(_phase(name))
        rig.pump()
    intruder = rig.worker("w-2")
    intruder.register()
    intruder.send(wire.PhaseStarted(run_id="run-1", phase="applying", started_at=T0_DT))
    rig.pump()
    assert [(p.index, p.name) for p in store.phases("run-1")] == [
        (0, "initializing"),
        (1, "planning"),
    ]
    assert store.current_phases() == {"run-1": "planning"}
    assert [k for _, k, _ in store.events(run_id="run-1")].count("run.phase") == 2


T0_DT = datetime.fromtimestamp(T0, UTC)


def test_a_planning_run_stops_unconfirmed_with_its_outputs_then_confirm_queues_the_apply(
    store: Store,
) -> None:
    _confirmed_run(store)
    rig = _rig(store)
    worker = _running(rig)
    digest = hashlib.sha256(b"sealed plan").hexdigest()
    worker.send(
        wire.Status(
            run_id="run-1",
            state="FINISHED",
            exit_code=0,
            reason="run_succeeded",
            outputs={"plan.txt": base64.b64encode(b"+ 1 to add").decode()},
            plan_sha256=digest,
        )
    )
    rig.pump()
    run = store.get_run("run-1")
    assert (run.state, run.reason) == (RunState.UNCONFIRMED, "awaiting_confirmation")
    assert store.held_counts() == {}  # the worker's slot is free while it waits
    assert store.outputs("run-1") == ({"plan.txt": "KyAxIHRvIGFkZA=="}, False)
    plan = store.plan_of("run-1")
    assert plan is not None
    assert plan.artifact_sha256 == digest

    confirmed, apply_id = confirm_run(store, "run-1", now=T0 + 60)
    assert (confirmed.state, apply_id) == (RunState.CONFIRMED, "run-1.apply")
    with pytest.raises(ConflictError):
        confirm_run(store, "run-1", now=T0 + 61)
    with pytest.raises(ConflictError):
        discard_run(store, "run-1", now=T0 + 61)
    worker.heartbeat("IDLE")
    rig.pump()
    assign = [m.body for m in rig.cp.sent if isinstance(m.body, wire.Assign)][-1]
    assert assign.run_id == "run-1.apply"
    assert assign.plan_url == "https://s3.example/run-1/plan.sealed?m=GET"
    assert assign.envelope == b"sealed-apply:run-1"
    signer = rig.coordinator.signing_key
    assert signer is not None
    ticket = verify_ticket(
        assign.ticket,
        assign.ticket_signature,
        signer_public_key=signer.public_key(),
        run_id="run-1.apply",
        pool_id="pool-a",
        worker_id="w-1",
        lease_id=assign.lease_id,
    )
    assert ticket.plan is not None
    assert (ticket.plan.run_id, ticket.plan.sha256, ticket.plan.commit_sha) == (
        "run-1",
        digest,
        COMMIT,
    )
    assert ticket.manifest.stage == "apply"


def test_discard_and_cancel_end_an_unconfirmed_run_without_applying(store: Store) -> None:
    for run_id, end in (("run-1", "discard"), ("run-2", "cancel")):
        _confirmed_run(store, run_id)
        run = store.get_run(run_id)
        store.apply(
            dispatch.Transition(
                before=run,
                after=dataclasses.replace(run, state=RunState.UNCONFIRMED),
                event="test",
            )
        )
        if end == "discard":
            after = discard_run(store, run_id, now=T0 + 5)
        else:
            after = cancel_run(store, run_id, now=T0 + 5)
        assert after.state is RunState.DISCARDED
        assert store.find_run(f"{run_id}.apply") is None


def test_a_planning_run_without_a_plan_fails(store: Store) -> None:
    _confirmed_run(store)
    rig = _rig(store)
    worker = _running(rig)
    worker.status("run-1", "FINISHED")
    rig.pump()
    run = store.get_run("run-1")
    assert (run.state, run.reason) == (RunState.FAILED, "plan_missing")
    with pytest.raises(ConflictError, match="not UNCONFIRMED"):
        confirm_run(store, "run-1", now=T0 + 60)


def test_only_planning_runs_can_be_confirmed(store: Store) -> None:
    store.add_run(
        run_id="plain",
        pool_id="pool-a",
        spec_sha256="0" * 64,
        key_id=KEY_ID,
        envelope=b"x",
        envelope_expires_at=T0 + 100,
        now=T0,
    )
    with pytest.raises(ConflictError, match="not a planning run"):
        confirm_run(store, "plain", now=T0)


# -- the pure rules ---------------------------------------------------------------------------

_RUN = dispatch.Run(
    id="r",
    pool_id="p",
    state=RunState.RUNNING,
    key_id="k",
    envelope_expires_at=T0 + 100,
    created_at=T0,
    updated_at=T0,
    worker_id="w",
    lease_id="l",
)

_OPS = st.sampled_from(
    [
        "finished_with_plan",
        "finished_without_plan",
        "failed",
        "confirm",
        "discard",
        "cancel",
        "phase",
    ]
)


@given(st.lists(_OPS, max_size=12), st.lists(st.sampled_from([*PHASES, "x"]), max_size=12))
def test_confirmation_rules_hold_for_any_sequence(ops: list[str], names: list[str]) -> None:
    """Whatever arrives in whatever order: UNCONFIRMED only from a planning run that finished
    with a plan; CONFIRMED only from UNCONFIRMED; decided runs never change; recorded phases
    only move forward through the manifest's names."""
    run = _RUN
    history = [run.state]
    last: int | None = None
    recorded: list[int] = []
    for step, op in enumerate(ops):
        now = T0 + step
        outcome: dispatch.Transition | dispatch.Rejection
        if op == "phase":
            name = names[step % len(names)] if names else "x"
            got = dispatch.phase_index(PHASES, run=run, worker_id="w", phase=name, last=last)
            if isinstance(got, int):
                assert run.state is RunState.RUNNING
                assert last is None or got > last
                last = got
                recorded.append(got)
            continue
        if op.startswith("finished") or op == "failed":
            outcome = dispatch.report_status(
                run,
                worker_id="w",
                state=RunState.FAILED if op == "failed" else RunState.FINISHED,
                exit_code=0,
                reason="",
                message="",
                now=now,
                planning=True,
                plan_sha256="ab" * 32 if op == "finished_with_plan" else None,
            )
        elif op == "confirm":
            outcome = dispatch.confirm(run, now=now)
        elif op == "discard":
            outcome = dispatch.discard(run, now=now)
        else:
            outcome = dispatch.cancel(run, now=now)
        if isinstance(outcome, dispatch.Transition):
            before, after = outcome.before.state, outcome.after.state
            assert not outcome.before.terminal
            if after is RunState.UNCONFIRMED:
                assert (before, op) == (RunState.RUNNING, "finished_with_plan")
            if after is RunState.CONFIRMED:
                assert (before, op) == (RunState.UNCONFIRMED, "confirm")
            if after is RunState.DISCARDED:
                assert before is RunState.UNCONFIRMED
            run = outcome.after
            history.append(run.state)
    assert recorded == sorted(set(recorded))
    finals = [s for s in history if s in dispatch.TERMINAL_RUN_STATES]
    assert len(finals) <= 1  # a run ends once
