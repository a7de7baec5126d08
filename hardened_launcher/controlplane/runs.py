"""Operator actions on runs: submit (validate, seal, queue), cancel, confirm and discard.

``submit`` reads the run spec, validates it with the executor's parser (the launcher parses
the same bytes again after opening the envelope), and seals the *original bytes* to the pool
key taken from the pool's current certificate, signed with the control plane's Ed25519 key.
Only the sealed envelope is stored: the plaintext spec (with its secrets) never reaches the
store or a log. The run id is the spec's ``run_id``; ids are never reused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hardened_launcher.controlplane import dispatch
from hardened_launcher.controlplane.ca import StateDir
from hardened_launcher.controlplane.dispatch import Run
from hardened_launcher.controlplane.doorbell import ring
from hardened_launcher.controlplane.errors import ConflictError
from hardened_launcher.controlplane.store import PlanRecord, Store
from hardened_launcher.envelope import MAX_ENVELOPE_LIFETIME_SECONDS, key_id_of, seal_run_state
from hardened_launcher.envelope.ticket import (
    MAX_TICKET_BYTES,
    manifest_from_spec,
    pool_sanitize_key,
)
from hardened_launcher.executor.runspec import (
    MAX_RUN_SPEC_BYTES,
    parse_run_spec,
    split_for_confirmation,
)
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.secrets import wipe_bytearray
from hardened_launcher.transport.messages import is_valid_run_id

#: Default validity of a sealed run state: the run must be dispatched within it.
DEFAULT_ENVELOPE_LIFETIME: Final = timedelta(hours=24)


def submit_run(
    state: StateDir,
    store: Store,
    *,
    pool: str,
    spec: bytes | bytearray,
    now: datetime,
    lifetime: timedelta = DEFAULT_ENVELOPE_LIFETIME,
) -> Run:
    """Validate ``spec``, seal it to the pool's key and queue it (a spec with
    ``confirm_after``: its planning half, see :func:`_submit_confirmed`), then ring serve's
    doorbell so it assigns the run at once (:mod:`.doorbell`)."""
    parsed = parse_run_spec(spec, max_bytes=MAX_RUN_SPEC_BYTES)
    stage, confirm_after = parsed.stage, parsed.confirm_after
    parsed.wipe()
    if stage is not None:
        raise ConflictError(
            "the run spec sets stage, which only the control plane's split of a confirmed run "
            "writes",
            hint="Use confirm_after: PHASE to stop the run for confirmation after that phase",
            reason="stage_reserved",
        )
    if confirm_after is not None:
        run = _submit_confirmed(state, store, pool=pool, spec=spec, now=now, lifetime=lifetime)
    else:
        run = _queue_run(state, store, pool=pool, spec=spec, now=now, lifetime=lifetime)
    ring(state.path)
    return run


def _queue_run(
    state: StateDir,
    store: Store,
    *,
    pool: str,
    spec: bytes | bytearray,
    now: datetime,
    lifetime: timedelta = DEFAULT_ENVELOPE_LIFETIME,
) -> Run:
    """Seal ``spec`` to the pool's key and queue it."""
    sealed = _sealed(state, store, pool=pool, spec=spec, now=now, lifetime=lifetime)
    return store.add_run(
        run_id=sealed.run_id,
        pool_id=sealed.pool_id,
        spec_sha256=hashlib.sha256(spec).hexdigest(),
        key_id=sealed.key_id,
        envelope=sealed.envelope,
        envelope_expires_at=sealed.expires_at,
        now=now.timestamp(),
        manifest=sealed.manifest,
    )


def cancel_run(store: Store, run_id: str, *, now: float) -> Run:
    """Cancel a run (see :func:`dispatch.cancel`); returns the run as it is afterwards."""
    for _ in range(5):  # a concurrent transition may win the compare-and-swap: re-read
        run = store.get_run(run_id)
        outcome = dispatch.cancel(run, now=now)
        if isinstance(outcome, dispatch.Rejection):
            if outcome.reason == "already_final":
                raise ConflictError(
                    f"run {run_id} already ended ({run.state})",
                    hint="Nothing to cancel",
                    reason="run_final",
                )
            store.enqueue(list(outcome.notices), now=now)
            return run
        if store.apply(outcome):
            return outcome.after
    raise ConflictError(
        f"run {run_id} keeps changing; try again", reason="run_busy"
    )  # pragma: no cover


def _submit_confirmed(
    state: StateDir,
    store: Store,
    *,
    pool: str,
    spec: bytes | bytearray,
    now: datetime,
    lifetime: timedelta,
) -> Run:
    """A spec with ``confirm_after``: its planning half is queued now; its applying half is
    sealed now too (the plaintext exists only now) and kept until the operator confirms."""
    halves = split_for_confirmation(spec)
    if halves is None:  # pragma: no cover - the caller saw confirm_after
        raise ConflictError("the run spec has no confirm_after", reason="runspec_invalid")
    plan_spec, apply_spec = (bytearray(h) for h in halves)
    try:
        applying = parse_run_spec(apply_spec)
        try:
            commit_sha = applying.commit_sha
        finally:
            applying.wipe()
        # Sealed and described like any run (same checks), but not queued: the pieces are
        # kept in the plans table until confirm.
        sealed = _sealed(state, store, pool=pool, spec=apply_spec, now=now, lifetime=lifetime)
        run = _queue_run(state, store, pool=pool, spec=plan_spec, now=now, lifetime=lifetime)
        store.add_plan(
            PlanRecord(
                run_id=run.id,
                apply_run_id=sealed.run_id,
                commit_sha=commit_sha,
                apply_spec_sha256=hashlib.sha256(apply_spec).hexdigest(),
                apply_envelope=sealed.envelope,
                apply_manifest=sealed.manifest,
                apply_envelope_expires_at=sealed.expires_at,
                artifact_sha256=None,
            )
        )
        return run
    finally:
        wipe_bytearray(plan_spec)
        wipe_bytearray(apply_spec)


@dataclass(frozen=True, kw_only=True)
class _Sealed:
    run_id: str
    pool_id: str
    key_id: str
    envelope: bytes
    manifest: bytes
    expires_at: float


def _sealed(
    state: StateDir,
    store: Store,
    *,
    pool: str,
    spec: bytes | bytearray,
    now: datetime,
    lifetime: timedelta,
) -> _Sealed:
    """Check ``spec`` can be queued (lifetime, manifest size, a new run id), then seal it to
    the pool's key and describe it (the manifest the policy judges)."""
    if not timedelta(seconds=1) <= lifetime <= timedelta(seconds=MAX_ENVELOPE_LIFETIME_SECONDS):
        raise ConflictError(
            "the sealed run state's lifetime must be 1 second to 24 hours",
            hint="Pass a shorter --expires-in",
            reason="envelope_lifetime_invalid",
        )
    record = store.get_pool(pool)
    parsed = parse_run_spec(spec, max_bytes=MAX_RUN_SPEC_BYTES)
    try:
        run_id = parsed.run_id
        # What the launcher's policy judges before it decrypts anything: the spec without a
        # secret byte, secrets as their sanitized form under the pool's key (in its token).
        sanitizer = Sanitizer(pool_sanitize_key(state.signing_key(), record.id))
        manifest = manifest_from_spec(parsed, sanitizer).encoded()
    finally:
        parsed.wipe()
    if len(manifest) > MAX_TICKET_BYTES - 1024:
        raise ConflictError(
            f"the run's non-secret description is {len(manifest)} bytes, over the limit of "
            f"{MAX_TICKET_BYTES - 1024}",
            hint="Move large values into files or secret variables",
            reason="manifest_too_large",
        )
    if not is_valid_run_id(run_id):  # pragma: no cover - the spec grammar is the same
        raise ConflictError("the run id cannot be carried by the protocol", reason="run_id_invalid")
    if store.find_run(run_id) is not None:
        raise ConflictError(
            f"a run with id {run_id!r} already exists",
            hint="Give the run spec a new run_id; run ids are never reused",
            reason="run_exists",
        )
    certificate = x509.load_pem_x509_certificate(record.certificate_pem)
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ConflictError(  # pragma: no cover - CSR checks allow RSA and EC only
            "the pool's key cannot receive sealed run state", reason="pool_key_unsupported"
        )
    expires_at = now + lifetime
    envelope = seal_run_state(
        spec,
        pool_public_key=public_key,
        signing_key=state.signing_key(),
        run_id=run_id,
        pool_id=record.id,
        issued_at=now,
        expires_at=expires_at,
    )
    return _Sealed(
        run_id=run_id,
        pool_id=record.id,
        key_id=key_id_of(public_key).hex(),
        envelope=envelope,
        manifest=manifest,
        expires_at=expires_at.timestamp(),
    )


def _decide(store: Store, run_id: str, *, now: float, confirm: bool) -> Run:
    for _ in range(5):  # a concurrent transition may win the compare-and-swap: re-read
        run = store.get_run(run_id)
        plan = store.plan_of(run_id)
        if plan is None:
            raise ConflictError(
                f"run {run_id} is not a planning run",
                hint="Only a run submitted with confirm_after waits for confirmation",
                reason="not_a_planning_run",
            )
        outcome = dispatch.confirm(run, now=now) if confirm else dispatch.discard(run, now=now)
        if isinstance(outcome, dispatch.Rejection):
            raise ConflictError(
                f"run {run_id} is {run.state}, not UNCONFIRMED",
                hint="Wait until `run show` says UNCONFIRMED (planned); a decided run stays "
                "decided",
                reason="run_not_unconfirmed",
            )
        applied = store.confirm(outcome, plan) if confirm else store.apply(outcome)
        if applied:
            return outcome.after
    raise ConflictError(
        f"run {run_id} keeps changing; try again", reason="run_busy"
    )  # pragma: no cover


def confirm_run(store: Store, run_id: str, *, now: float) -> tuple[Run, str]:
    """Confirm an UNCONFIRMED planning run: its applying run is queued (returns its id)."""
    run = _decide(store, run_id, now=now, confirm=True)
    plan = store.plan_of(run_id)
    assert plan is not None  # noqa: S101 - _decide checked it
    return run, plan.apply_run_id


def discard_run(store: Store, run_id: str, *, now: float) -> Run:
    """Discard an UNCONFIRMED planning run: nothing is applied."""
    return _decide(store, run_id, now=now, confirm=False)
