"""Plan artifacts: what a planning run made, sealed to the pool key, checked before it is applied.

A confirmed run (docs/runspec.md, ``confirm_after``) is two runs: the planning run writes a file
(``$HL_PLAN_FILE``); its launcher seals it with the run-state envelope (docs/envelope.md) to the
pool's own public key and uploads the sealed bytes to object storage through a presigned URL;
the control plane keeps only their SHA-256. Only the pool's launchers can read it.

The sealed plaintext binds the artifact to where it came from::

    HLPLAN 1\\n{"commit_sha": …, "run_id": <planning run>, "sha256": <of the artifact>}\\n<artifact>

and the envelope is signed with an Ed25519 key *derived from the pool's private key*
(:func:`plan_signing_key`), so it proves that a holder of the pool key sealed it: neither the
control plane nor object storage can make one. The envelope's run id is ``<planning run>.plan``
(a plan is opened once: the launcher's replay cache).

Before the applying run executes, :func:`open_plan` checks, in order: the sealed bytes' SHA-256
against the one in the applying run's *signed* ticket (a tampered or swapped object is refused
before any private-key operation), the envelope (pool, key, signature, window, replay), the
framing, that it was planned by the run the ticket names, for the commit the applying run is
for, and the artifact's own digest. Every refusal is a :class:`PlanArtifactError` with a reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hardened_launcher.envelope.format import MAX_ENVELOPE_LIFETIME_SECONDS
from hardened_launcher.envelope.keys import PoolPrivateKey
from hardened_launcher.envelope.open import open_run_state
from hardened_launcher.envelope.replay import ReplayCache
from hardened_launcher.envelope.seal import seal_run_state
from hardened_launcher.errors import LauncherError, UntrustedInputError
from hardened_launcher.executor.outputs import MAX_PLAN_BYTES
from hardened_launcher.secrets import Secret, wipe_bytearray

__all__ = [
    "MAX_PLAN_BYTES",
    "MAX_SEALED_PLAN_BYTES",
    "PlanArtifactError",
    "SealedPlan",
    "open_plan",
    "plan_envelope_run_id",
    "plan_signing_key",
    "seal_plan",
]

#: Its sealed form: the artifact, the binding header and the envelope's own bytes.
MAX_SEALED_PLAN_BYTES: Final = MAX_PLAN_BYTES + 64 * 1024
MAGIC: Final = b"HLPLAN 1\n"
_KEY_INFO: Final = b"hardened-launcher/plan-artifact-signing/v1"
_MAX_HEADER_BYTES: Final = 1024


class PlanArtifactError(UntrustedInputError):
    """A plan artifact was refused before the applying run executed (``reason`` says why)."""

    default_reason = "plan_invalid"


def _refuse(what: str, reason: str) -> PlanArtifactError:
    return PlanArtifactError(
        f"the plan artifact is refused: {what}",
        hint="discard the planning run and plan again (`controlplane run discard`); the stored "
        "plan may have been altered, or belongs to another run or commit",
        reason=reason,
    )


def plan_envelope_run_id(run_id: str) -> str:
    """The run id inside a plan's envelope (distinct from every run's own)."""
    return f"{run_id}.plan"


def plan_signing_key(pool_private_key: PoolPrivateKey) -> Ed25519PrivateKey:
    """An Ed25519 key only holders of the pool's private key can derive (HKDF of its PKCS#8)."""
    der = bytearray(
        pool_private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    try:
        seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(
            bytes(der)
        )
    finally:
        wipe_bytearray(der)
    return Ed25519PrivateKey.from_private_bytes(seed)


@dataclass(frozen=True, kw_only=True)
class SealedPlan:
    """A sealed plan artifact and the digest the control plane keeps."""

    data: bytes
    sha256: str
    artifact_bytes: int


def seal_plan(
    artifact: Secret,
    *,
    pool_private_key: PoolPrivateKey,
    run_id: str,
    pool_id: str,
    commit_sha: str,
    now: datetime,
) -> SealedPlan:
    """Seal ``artifact`` (the planning run's plan) to the pool's own key, bound to the run and
    its commit; valid for the envelope's longest lifetime (24 hours)."""
    with artifact.view() as view:
        if len(view) > MAX_PLAN_BYTES:
            raise _refuse(f"it is over {MAX_PLAN_BYTES} bytes", "plan_too_large")
        header = json.dumps(
            {
                "commit_sha": commit_sha,
                "run_id": run_id,
                "sha256": hashlib.sha256(view).hexdigest(),
            },
            sort_keys=True,
        ).encode("ascii")
        plaintext = bytearray(MAGIC + header + b"\n")
        plaintext += view
    try:
        sealed = seal_run_state(
            plaintext,
            pool_public_key=pool_private_key.public_key(),
            signing_key=plan_signing_key(pool_private_key),
            run_id=plan_envelope_run_id(run_id),
            pool_id=pool_id,
            issued_at=now,
            expires_at=now + timedelta(seconds=MAX_ENVELOPE_LIFETIME_SECONDS),
            max_envelope_bytes=MAX_SEALED_PLAN_BYTES,
        )
    finally:
        wipe_bytearray(plaintext)
    return SealedPlan(
        data=sealed,
        sha256=hashlib.sha256(sealed).hexdigest(),
        artifact_bytes=len(artifact),
    )


def open_plan(
    sealed: bytes,
    *,
    expected_sha256: str,
    planning_run_id: str,
    commit_sha: str,
    pool_private_key: PoolPrivateKey,
    pool_id: str,
    replay_cache: ReplayCache,
    now: datetime,
    clock_skew: timedelta,
) -> Secret:
    """The artifact inside ``sealed``, after every check (module docstring), or raise."""
    if len(sealed) > MAX_SEALED_PLAN_BYTES:
        raise _refuse(f"it is over {MAX_SEALED_PLAN_BYTES} bytes", "plan_too_large")
    if hashlib.sha256(sealed).hexdigest() != expected_sha256:
        raise _refuse(
            "its SHA-256 is not the one the planning run reported (altered or swapped)",
            "plan_digest_mismatch",
        )
    try:
        opened = open_run_state(
            sealed,
            pool_private_key=pool_private_key,
            signer_public_key=plan_signing_key(pool_private_key).public_key(),
            expected_pool_id=pool_id,
            replay_cache=replay_cache,
            now=now,
            clock_skew=clock_skew,
            max_envelope_bytes=MAX_SEALED_PLAN_BYTES,
        )
    except LauncherError as exc:
        raise _refuse(f"its envelope: {exc.message}", "plan_envelope_invalid") from None
    with opened:
        if opened.run_id != plan_envelope_run_id(planning_run_id):
            raise _refuse("it was sealed for another run", "plan_run_mismatch")
        with opened.plaintext.view() as view:
            data = bytes(view)
    if not data.startswith(MAGIC):
        raise _refuse("it is not a plan artifact", "plan_invalid")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER_BYTES)
    if end < 0:
        raise _refuse("its header is missing", "plan_invalid")
    try:
        header = json.loads(data[len(MAGIC) : end].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise _refuse("its header is not JSON", "plan_invalid") from None
    if not isinstance(header, dict) or set(header) != {"commit_sha", "run_id", "sha256"}:
        raise _refuse("its header does not have the documented fields", "plan_invalid")
    if header["run_id"] != planning_run_id:
        raise _refuse("it was planned by another run", "plan_run_mismatch")
    if header["commit_sha"] != commit_sha:
        raise _refuse("it was planned for another commit", "plan_commit_mismatch")
    artifact = data[end + 1 :]
    if hashlib.sha256(artifact).hexdigest() != header["sha256"]:
        raise _refuse("its content does not match its digest", "plan_digest_mismatch")
    return Secret(artifact)
