"""Gates record every decision through one interface, and never a secret."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.audit import MemoryAuditLog, Outcome
from hardened_launcher.audit.gates import record_refusal
from hardened_launcher.envelope import MemoryReplayCache, open_run_state, seal_run_state
from hardened_launcher.errors import InfrastructureError, LauncherError
from hardened_launcher.identity import PoolPrivateKey, check_pool_identity
from hardened_launcher.identity.csr import create_csr, parse_subject
from hardened_launcher.identity.issuing import CertificateAuthority, issue_pool_token

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CANARY = b"CANARY-plaintext-3b9e0f"


@pytest.fixture(scope="module")
def pool() -> dict[str, object]:
    ca = CertificateAuthority.generate(not_before=NOW - timedelta(days=1))
    key = PoolPrivateKey.generate(rsa_key_bits=2048)
    signer = ed25519.Ed25519PrivateKey.generate()
    token = issue_pool_token(
        ca,
        create_csr(key, parse_subject("/CN=x")),
        pool_id="pool-a",
        not_before=NOW - timedelta(hours=1),
        not_after=NOW + timedelta(days=1),
        broker_url="mqtts://127.0.0.1:8883",
        control_plane_url="https://127.0.0.1:8443",
        run_state_signing_key=signer.public_key(),
    )
    return {"key": key, "token": token, "signer": signer, "ca": ca}


def _all_text(log: MemoryAuditLog) -> str:
    return "\n".join(json.dumps(e.to_json_dict()) for e in log.events)


def test_identity_pass_and_refusal_are_recorded(pool: dict[str, object]) -> None:
    log = MemoryAuditLog()
    key, token = pool["key"], pool["token"]
    assert isinstance(key, PoolPrivateKey)
    check_pool_identity(
        token=token,  # type: ignore[arg-type]
        private_key=key,
        pinned_ca_sha256=None,
        now=NOW,
        clock_skew=timedelta(minutes=5),
        audit=log,
    )
    with pytest.raises(LauncherError):
        check_pool_identity(
            token=token,  # type: ignore[arg-type]
            private_key=key,
            pinned_ca_sha256=None,
            now=NOW + timedelta(days=3),
            clock_skew=timedelta(minutes=5),
            audit=log,
        )
    allow, deny = log.events
    assert (allow.type, allow.outcome, allow.gate) == (
        "identity.verified",
        Outcome.ALLOW,
        "credentials",
    )
    assert allow.fields["pool_id"] == "pool-a"
    assert (deny.type, deny.outcome, deny.reason) == (
        "identity.rejected",
        Outcome.DENY,
        "certificate_expired",
    )


def test_envelope_open_and_refusals_are_recorded_without_plaintext(
    pool: dict[str, object],
) -> None:
    key, signer = pool["key"], pool["signer"]
    assert isinstance(key, PoolPrivateKey)
    assert isinstance(signer, ed25519.Ed25519PrivateKey)
    sealed = seal_run_state(
        CANARY,
        pool_public_key=key.public_key,
        signing_key=signer,
        run_id="run-7",
        pool_id="pool-a",
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=10),
    )
    log = MemoryAuditLog()
    cache = MemoryReplayCache()

    def attempt(data: bytes) -> None:
        with open_run_state(
            data,
            pool_private_key=key.private_key,
            signer_public_key=signer.public_key(),
            expected_pool_id="pool-a",
            replay_cache=cache,
            now=NOW,
            clock_skew=timedelta(minutes=5),
            max_envelope_bytes=1 << 20,
            audit=log,
        ):
            pass

    attempt(sealed)
    with pytest.raises(LauncherError):
        attempt(sealed)  # replay
    tampered = bytearray(sealed)
    tampered[-70] ^= 1
    with pytest.raises(LauncherError):
        attempt(bytes(tampered))
    with pytest.raises(LauncherError):
        attempt(b"\0" * ((1 << 20) + 1))

    opened, replayed, tampered_event, oversized = log.events
    assert (opened.type, opened.outcome, opened.run_id) == (
        "envelope.opened",
        Outcome.ALLOW,
        "run-7",
    )
    assert opened.fields["envelope_sha256"]
    assert replayed.reason == "envelope_replayed"
    assert tampered_event.outcome is Outcome.DENY
    assert tampered_event.run_id is None  # never authenticated, never recorded
    assert oversized.reason == "envelope_too_large"
    assert "envelope_sha256" not in oversized.fields
    assert CANARY.decode() not in _all_text(log)


def test_infrastructure_failures_are_errors_not_denials() -> None:
    log = MemoryAuditLog()
    record_refusal(
        log,
        gate="envelope",
        event_type="envelope.rejected",
        error=InfrastructureError("disk gone", reason="replay_cache_unavailable"),
    )
    assert log.events[0].outcome is Outcome.ERROR
    assert log.events[0].reason == "replay_cache_unavailable"
