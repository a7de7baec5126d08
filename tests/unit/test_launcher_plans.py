"""A confirmed run on the launcher (GatedRun with fakes for Docker and object storage): the
planning run's plan leaves only sealed and its digest is reported; the applying run gets the
exact bytes, and an altered, swapped or other-commit plan is refused, audited with gate
``plan``, and never reaches the runner. The policy sees each half's ``stage`` and ``plan_of``
(policies/confirmed_apply.rego on the real gates)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from hardened_launcher.envelope.ticket import PlanBinding, manifest_from_spec, sign_ticket
from hardened_launcher.executor.runner import RunResult
from hardened_launcher.executor.runspec import parse_run_spec, split_for_confirmation
from hardened_launcher.launcher.logship import UploadError
from hardened_launcher.pipeline import PolicyStep, policy_metadata
from hardened_launcher.policy import LauncherFacts, PolicyGate, Sanitizer, check_policy_path
from hardened_launcher.policy.input import build_input
from hardened_launcher.secrets import Secret
from hardened_launcher.transport.messages import Assign, Status
from tests.unit.test_launcher_gates import (
    CANARY,
    POOL,
    POOL_SIGNER,
    SANITIZER,
    WORKER_VERSION,
    FakeRunner,
    Harness,
    Pool,
    manifest_of,
    seal,
)
from tests.unit.test_launcher_gates import pool as pool  # noqa: PLC0414 - the module's fixture

LIBRARY = Path(__file__).resolve().parents[2] / "policies"
PLAN = b"plan: + aws_s3_bucket.logs\n\x00\xff"
COMMIT = "9" * 40
PUT_URL = "https://s3.example/plan?X-Amz-Signature=put"
GET_URL = "https://s3.example/plan?X-Amz-Signature=get"


def _spec(run_id: str, stage: str, **extra: Any) -> bytes:
    return yaml.safe_dump(
        {
            "version": 1,
            "run_id": run_id,
            "run_type": "wo",
            "image": "busybox",
            "phases": [{"name": stage + "ing", "commands": ["true"]}],
            "secret_env": {"TOKEN": CANARY},
            "metadata": {"commit_sha": COMMIT},
            "stage": stage,
            **extra,
        }
    ).encode()


class PlanningRunner(FakeRunner):
    def run(self, container: Any, instructions: bytearray, **kwargs: Any) -> RunResult:
        result = super().run(container, instructions, **kwargs)
        return dataclasses.replace(result, plan=Secret(PLAN))


def _assign(
    pool: Pool, plaintext: bytes, run_id: str, *, plan: PlanBinding | None, url: str | None
) -> Assign:
    sealed = seal(pool, plaintext, run_id=run_id)
    ticket = sign_ticket(
        manifest_of(plaintext),
        pool_id=POOL,
        worker_id="launcher-t",
        lease_id="lease-1",
        envelope=sealed.envelope,
        signing_key=POOL_SIGNER[0],
        plan=plan,
    )
    return dataclasses.replace(
        Assign.with_envelope(
            run_id=run_id,
            lease_id="lease-1",
            lease_expires_at=datetime.now(UTC) + timedelta(seconds=30),
            envelope=sealed.envelope,
            ticket=ticket.encoded,
            ticket_signature=ticket.signature,
        ),
        plan_url=url,
    )


def sealed_expiry() -> Any:
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    return datetime.now(UTC) + timedelta(seconds=30)


def _plan(pool: Pool, tmp_path: Path) -> tuple[bytes, Status]:
    stored: dict[str, bytes] = {}
    h = Harness(pool=pool, state_dir=tmp_path / "plan", runner=PlanningRunner())
    gated = dataclasses.replace(h.gated_run(), plan_put=stored.__setitem__)
    h.gated_run = lambda: gated  # type: ignore[method-assign]
    status = h.run(_assign(pool, _spec("run-p", "plan"), "run-p", plan=None, url=PUT_URL))
    assert (status.state, status.reason) == ("FINISHED", "run_succeeded")
    sealed = stored[PUT_URL]
    assert status.plan_sha256 == hashlib.sha256(sealed).hexdigest()
    assert PLAN not in sealed
    assert b"aws_s3_bucket" not in sealed
    assert [e.type for e in h.audit.events if e.type.startswith("plan.")] == ["plan.sealed"]
    return sealed, status


def _apply(
    pool: Pool, tmp_path: Path, stored: bytes, binding: PlanBinding, name: str = "apply"
) -> tuple[Harness, Status]:
    h = Harness(pool=pool, state_dir=tmp_path / name)
    gated = dataclasses.replace(h.gated_run(), plan_get=lambda url: {GET_URL: stored}[url])
    h.gated_run = lambda: gated  # type: ignore[method-assign]
    plaintext = _spec("run-p.apply", "apply", plan_of="run-p")
    return h, h.run(_assign(pool, plaintext, "run-p.apply", plan=binding, url=GET_URL))


def test_plan_then_apply_gets_the_exact_bytes(pool: Pool, tmp_path: Path) -> None:
    sealed, status = _plan(pool, tmp_path)
    assert status.plan_sha256 is not None
    binding = PlanBinding(run_id="run-p", sha256=status.plan_sha256, commit_sha=COMMIT)
    h, applied = _apply(pool, tmp_path, sealed, binding)
    assert applied.state == "FINISHED"
    ((_, instructions),) = h.runner.calls
    assert b"\nL %d\n" % len(PLAN) in instructions
    assert instructions.endswith(b"\nGO\n" + PLAN)  # raw, after GO: one `head -c` reads it
    assert [e.type for e in h.audit.events if e.type.startswith("plan.")] == ["plan.verified"]


def test_a_planning_run_without_storage_or_with_a_failed_upload_fails(
    pool: Pool, tmp_path: Path
) -> None:
    h = Harness(pool=pool, state_dir=tmp_path, runner=PlanningRunner())
    status = h.run(_assign(pool, _spec("run-p", "plan"), "run-p", plan=None, url=None))
    assert (status.state, status.reason, status.plan_sha256) == (
        "FAILED",
        "plan_storage_unavailable",
        None,
    )

    def refuse(_url: str, _data: bytes) -> None:
        raise UploadError("the store answered HTTP 403", status=403)

    h = Harness(pool=pool, state_dir=tmp_path / "upload", runner=PlanningRunner())
    gated = dataclasses.replace(h.gated_run(), plan_put=refuse)
    h.gated_run = lambda: gated  # type: ignore[method-assign]
    status = h.run(_assign(pool, _spec("run-p", "plan"), "run-p", plan=None, url=PUT_URL))
    assert (status.state, status.reason, status.plan_sha256) == (
        "FAILED",
        "plan_upload_failed",
        None,
    )


@pytest.mark.parametrize("attack", ["altered", "swapped", "other_commit", "unbound"])
def test_a_bad_plan_is_refused_before_the_runner(pool: Pool, tmp_path: Path, attack: str) -> None:
    sealed, status = _plan(pool, tmp_path)
    assert status.plan_sha256 is not None
    binding = PlanBinding(run_id="run-p", sha256=status.plan_sha256, commit_sha=COMMIT)
    expected = "plan_digest_mismatch"
    if attack == "altered":
        sealed = sealed[:100] + bytes([sealed[100] ^ 1]) + sealed[101:]
    elif attack == "swapped":
        other, _ = _plan(pool, tmp_path / "other")
        sealed = other
    elif attack == "other_commit":
        binding = dataclasses.replace(binding, commit_sha="0" * 40)
        expected = "plan_commit_mismatch"
    else:
        binding = dataclasses.replace(binding, run_id="run-q")
        expected = "plan_run_mismatch"  # the signed ticket's binding is not the spec's plan_of
    h = Harness(pool=pool, state_dir=tmp_path / "apply")
    gated = dataclasses.replace(h.gated_run(), plan_get=lambda _url: sealed)
    h.gated_run = lambda: gated  # type: ignore[method-assign]
    plaintext = _spec("run-p.apply", "apply", plan_of="run-p")
    status = h.run(_assign(pool, plaintext, "run-p.apply", plan=binding, url=GET_URL))
    assert status.state == "REFUSED"
    assert status.reason == expected
    assert h.runner.calls == []
    refused = [e for e in h.audit.events if e.type == "run.refused"]
    assert refused
    assert refused[-1].reason == status.reason


# -- the policy sees the stage ------------------------------------------------------------------
def test_the_policy_input_names_each_halfs_stage_and_the_plan_it_applies() -> None:
    spec = yaml.safe_dump(
        {
            "version": 1,
            "run_id": "run-s",
            "run_type": "wo",
            "image": "busybox",
            "phases": [
                {"name": "planning", "commands": ["true"]},
                {"name": "applying", "commands": ["true"]},
            ],
            "confirm_after": "planning",
        }
    ).encode()
    halves = split_for_confirmation(spec)
    assert halves is not None
    facts = LauncherFacts(pool_id=POOL, worker_id="launcher-t", version=WORKER_VERSION)
    static = []
    for half in halves:
        manifest = manifest_from_spec(parse_run_spec(half), SANITIZER)
        document = build_input(
            policy_metadata(manifest, worker_version=WORKER_VERSION, environment={}),
            launcher=facts,
            sanitizer=SANITIZER,
        )
        static.append(document["static_run_environment"])
    plan, apply = static
    assert isinstance(plan, dict)
    assert isinstance(apply, dict)
    assert (plan["stage"], "plan_of" in plan) == ("plan", False)
    assert (apply["stage"], apply["plan_of"]) == ("apply", "run-s")
    # A run that is not confirmed has neither.
    whole = manifest_from_spec(
        parse_run_spec(_spec("run-u", "plan").replace(b"stage: plan\n", b"")), SANITIZER
    )
    plain = policy_metadata(whole, worker_version=WORKER_VERSION, environment={})
    assert isinstance(plain["static_run_environment"], dict)
    assert not {"stage", "plan_of"} & plain["static_run_environment"].keys()


@pytest.fixture
def confirmed_apply() -> Iterator[PolicyStep]:
    """The library's confirmed_apply.rego as the launcher's policy."""
    sanitizer = Sanitizer(b"s" * 32)
    compiled = check_policy_path(LIBRARY / "confirmed_apply.rego", sanitizer=sanitizer)
    with PolicyGate.start(compiled, sanitizer=sanitizer, isolated=False) as gate:
        yield PolicyStep(
            gate=gate,
            sanitizer=sanitizer,
            launcher=LauncherFacts(pool_id=POOL, worker_id="launcher-t", version=WORKER_VERSION),
        )


def test_a_policy_allows_a_write_run_only_as_a_confirmed_plan_and_its_apply(
    pool: Pool, tmp_path: Path, confirmed_apply: PolicyStep
) -> None:
    """confirmed_apply.rego on the real gates: the planning half and the applying half of the
    confirmed plan run; the same write run without confirmation, or an apply that names another
    run's plan, is denied before anything is decrypted."""
    sealed, status = _plan(pool, tmp_path)
    assert status.plan_sha256 is not None
    binding = PlanBinding(run_id="run-p", sha256=status.plan_sha256, commit_sha=COMMIT)
    h = Harness(pool=pool, state_dir=tmp_path / "apply", policy=confirmed_apply)
    gated = dataclasses.replace(h.gated_run(), plan_get=lambda _url: sealed)
    h.gated_run = lambda: gated  # type: ignore[method-assign]
    plaintext = _spec("run-p.apply", "apply", plan_of="run-p")
    applied = h.run(_assign(pool, plaintext, "run-p.apply", plan=binding, url=GET_URL))
    assert applied.state == "FINISHED", applied

    planned = Harness(
        pool=pool, state_dir=tmp_path / "plan2", runner=PlanningRunner(), policy=confirmed_apply
    )
    planned_gated = dataclasses.replace(planned.gated_run(), plan_put=lambda _u, _d: None)
    planned.gated_run = lambda: planned_gated  # type: ignore[method-assign]
    status = planned.run(_assign(pool, _spec("run-r", "plan"), "run-r", plan=None, url=PUT_URL))
    assert (status.state, status.reason) == ("FINISHED", "run_succeeded")

    unconfirmed = _spec("run-w", "plan").replace(b"stage: plan\n", b"")
    h = Harness(pool=pool, state_dir=tmp_path / "w", policy=confirmed_apply)
    denied = h.run(_assign(pool, unconfirmed, "run-w", plan=None, url=None))
    assert (denied.state, denied.reason) == ("REFUSED", "policy_denied")
    assert denied.message is not None
    assert "confirm_after" in denied.message
    assert h.runner.calls == []

    other = _spec("run-x.apply", "apply", plan_of="run-p")
    binding_x = dataclasses.replace(binding, run_id="run-p")
    h = Harness(pool=pool, state_dir=tmp_path / "x", policy=confirmed_apply)
    gated = dataclasses.replace(h.gated_run(), plan_get=lambda _url: sealed)
    h.gated_run = lambda: gated  # type: ignore[method-assign]
    denied = h.run(_assign(pool, other, "run-x.apply", plan=binding_x, url=GET_URL))
    assert (denied.state, denied.reason) == ("REFUSED", "policy_denied")
    assert h.runner.calls == []
