"""A confirmed run on the launcher (GatedRun with fakes for Docker and object storage): the
planning run's plan leaves only sealed and its digest is reported; the applying run gets the
exact bytes, and an altered, swapped or other-commit plan is refused, audited with gate
``plan``, and never reaches the runner."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from hardened_launcher.envelope.ticket import PlanBinding, sign_ticket
from hardened_launcher.executor.runner import RunResult
from hardened_launcher.launcher.logship import UploadError
from hardened_launcher.secrets import Secret
from hardened_launcher.transport.messages import Assign, Status
from tests.unit.test_launcher_gates import (
    CANARY,
    POOL,
    POOL_SIGNER,
    FakeRunner,
    Harness,
    Pool,
    manifest_of,
    seal,
)
from tests.unit.test_launcher_gates import pool as pool  # noqa: PLC0414 - the module's fixture

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
