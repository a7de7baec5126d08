"""Plan artifacts (envelope/plan.py): sealed to the pool key, refused when altered, swapped
between runs, made for another commit, forged without the pool key, replayed or oversized."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hardened_launcher.envelope import MemoryReplayCache, seal_run_state
from hardened_launcher.envelope.plan import (
    MAX_SEALED_PLAN_BYTES,
    PlanArtifactError,
    open_plan,
    plan_envelope_run_id,
    seal_plan,
)
from hardened_launcher.executor.outputs import MAX_PLAN_BYTES
from hardened_launcher.identity import PoolPrivateKey
from hardened_launcher.secrets import Secret

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
COMMIT = "c0ffee" * 6 + "abcd"
POOL = PoolPrivateKey.generate_ec(curve="P256").private_key
OTHER_POOL = PoolPrivateKey.generate_ec(curve="P256").private_key
PLAN = b"\x00terraform plan\xff" * 100


def _seal(run_id: str = "run-1", commit: str = COMMIT, plan: bytes = PLAN) -> tuple[bytes, str]:
    sealed = seal_plan(
        Secret(plan),
        pool_private_key=POOL,
        run_id=run_id,
        pool_id="pool-a",
        commit_sha=commit,
        now=NOW,
    )
    assert sealed.artifact_bytes == len(plan)
    return sealed.data, sealed.sha256


def _open(data: bytes, sha: str, **changes: object) -> bytes:
    args: dict[str, object] = {
        "expected_sha256": sha,
        "planning_run_id": "run-1",
        "commit_sha": COMMIT,
        "pool_private_key": POOL,
        "pool_id": "pool-a",
        "replay_cache": MemoryReplayCache(),
        "now": NOW + timedelta(minutes=5),
        "clock_skew": timedelta(seconds=30),
    }
    args.update(changes)
    return open_plan(data, **args).reveal()  # type: ignore[arg-type]


def test_the_applying_side_gets_the_exact_bytes_and_the_store_only_ciphertext() -> None:
    data, sha = _seal()
    assert PLAN not in data
    assert b"terraform" not in data
    assert _open(data, sha) == PLAN


def test_an_altered_byte_anywhere_is_refused_before_decryption() -> None:
    data, sha = _seal()
    for index in (0, len(data) // 2, len(data) - 1):
        altered = bytearray(data)
        altered[index] ^= 0x01
        with pytest.raises(PlanArtifactError) as caught:
            _open(bytes(altered), sha)
        assert caught.value.reason == "plan_digest_mismatch"


def test_a_plan_swapped_from_another_run_is_refused_even_with_its_own_digest() -> None:
    other, other_sha = _seal(run_id="run-2")
    with pytest.raises(PlanArtifactError) as caught:
        _open(other, _seal()[1])  # the digest the ticket names is run-1's
    assert caught.value.reason == "plan_digest_mismatch"
    with pytest.raises(PlanArtifactError) as caught:
        _open(other, other_sha)  # the control plane's record swapped as well
    assert caught.value.reason == "plan_run_mismatch"


def test_a_plan_for_another_commit_is_refused() -> None:
    data, sha = _seal(commit="f" * 40)
    with pytest.raises(PlanArtifactError) as caught:
        _open(data, sha)
    assert caught.value.reason == "plan_commit_mismatch"


def test_only_a_holder_of_the_pool_key_can_make_a_plan() -> None:
    # The control plane (or anyone with the pool's public key) seals a plan of its own choosing
    # with its own signing key: the applying launcher refuses it.
    forged = seal_run_state(
        b"HLPLAN 1\n{}\n",
        pool_public_key=POOL.public_key(),
        signing_key=Ed25519PrivateKey.generate(),
        run_id=plan_envelope_run_id("run-1"),
        pool_id="pool-a",
        issued_at=NOW,
        expires_at=NOW + timedelta(hours=1),
    )
    with pytest.raises(PlanArtifactError) as caught:
        _open(forged, hashlib.sha256(forged).hexdigest())
    assert caught.value.reason == "plan_envelope_invalid"
    data, sha = _seal()
    with pytest.raises(PlanArtifactError) as caught:
        _open(data, sha, pool_private_key=OTHER_POOL)
    assert caught.value.reason == "plan_envelope_invalid"


def test_a_plan_is_applied_once_and_expires() -> None:
    data, sha = _seal()
    cache = MemoryReplayCache()
    assert _open(data, sha, replay_cache=cache) == PLAN
    with pytest.raises(PlanArtifactError) as caught:
        _open(data, sha, replay_cache=cache)
    assert caught.value.reason == "plan_envelope_invalid"
    with pytest.raises(PlanArtifactError):
        _open(data, sha, now=NOW + timedelta(hours=25))


def test_size_bounds() -> None:
    with pytest.raises(PlanArtifactError) as caught:
        _seal(plan=b"x" * (MAX_PLAN_BYTES + 1))
    assert caught.value.reason == "plan_too_large"
    with pytest.raises(PlanArtifactError) as caught:
        _open(b"x" * (MAX_SEALED_PLAN_BYTES + 1), "0" * 64)
    assert caught.value.reason == "plan_too_large"


def test_the_refusal_names_no_plan_content() -> None:
    data, sha = _seal(plan=b"CANARY-plan-secret-0042")
    with pytest.raises(PlanArtifactError) as caught:
        _open(data, sha, commit_sha="other")
    text = f"{caught.value.message} {caught.value.hint} {caught.value!r}"
    assert "CANARY" not in text


def test_the_commit_a_plan_is_bound_to() -> None:
    from hardened_launcher.envelope.ticket import RunManifest  # noqa: PLC0415

    source = {"url": "https://git.example/x.git", "ref": "main", "commit_sha": "b" * 40}
    with_source = RunManifest(document={"metadata": {"commit_sha": "b" * 40}, "source": source})
    assert with_source.commit_sha == "b" * 40  # the git source's (the worker checks it out)
    assert RunManifest(document={"metadata": {"commit_sha": COMMIT}}).commit_sha == COMMIT
    assert RunManifest(document={"metadata": {}}).commit_sha == ""
