"""Pool identity at the broker: a foreign CA's certificate and a reset pool's old one."""

from __future__ import annotations

import base64
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.demo.environment import Environment
from hardened_launcher.errors import EXIT_CONFIGURATION, EXIT_UNTRUSTED_INPUT
from hardened_launcher.identity.csr import create_csr, parse_subject
from hardened_launcher.identity.issuing import CertificateAuthority, issue_pool_token
from hardened_launcher.identity.keys import PoolPrivateKey
from hardened_launcher.identity.token import Token
from hardened_launcher.transport.base import Transport
from hardened_launcher.transport.client import MqttTransport
from hardened_launcher.transport.poll_client import PollTransport
from hardened_launcher.transport.tls import BrokerRefusedError
from tests.e2e.conftest import EnvFactory

pytestmark = pytest.mark.integration


def _refused(
    env: Environment, *, token: str, key_b64: str, name: str, codes: tuple[int, ...] = ()
) -> None:
    # Workers the control plane already counts as alive: a launcher of a reset pool cycled
    # just before, whose `bye` may still be on its way (over poll, within the reset grace).
    before = {r.worker.id for r in env.worker_records() if r.worker.alive}
    launcher = env.add_launcher(
        env={"SPACELIFT_TOKEN": token, "SPACELIFT_POOL_PRIVATE_KEY": key_b64}, start=True
    )
    assert launcher.child is not None
    code = launcher.child.wait(60)
    output = launcher.child.output()
    assert code in (codes or (EXIT_CONFIGURATION,)), (
        f"{name}: `hardened-launcher start` should exit {EXIT_CONFIGURATION} (broker refused "
        f"the certificate), got {code} (blocked on the launcher daemon if it is not "
        f"implemented):\n{output}"
    )
    assert "refused" in output.lower() or "certificate" in output.lower(), output
    alive = [r.worker.id for r in env.worker_records() if r.worker.alive]
    registered = sorted(set(alive) - before)
    assert registered == [], f"{name}: a worker registered: {registered}"


@pytest.mark.parametrize("protocol", ["poll", "mqtt"])
def test_pool_certificate_from_another_ca_is_refused_by_the_broker(
    make_env: EnvFactory, protocol: str
) -> None:
    env = make_env(launchers=0, protocol=protocol)
    real = Token.from_encoded(env.token)
    key = PoolPrivateKey.generate_ec()
    now = datetime.now(UTC)
    foreign = issue_pool_token(
        CertificateAuthority.generate(key_type="EC-P256"),
        create_csr(key, parse_subject(f"/CN={env.pool}")),
        pool_id=env.pool,
        broker_url=real.broker_url,
        control_plane_url=real.control_plane_url,
        run_state_signing_key=ed25519.Ed25519PrivateKey.generate().public_key(),
        not_before=now - timedelta(minutes=5),
        not_after=now + timedelta(days=1),
        mqtt_namespace=real.mqtt_namespace,
    )
    # Trust the real broker and keep the real signing key: only the client certificate is wrong.
    token = dataclasses.replace(real, pool_certificate=foreign.pool_certificate)
    with token.to_encoded() as encoded, encoded.view() as view:
        token_text = bytes(view).decode()
    with key.to_pem() as pem, pem.view() as view:
        key_b64 = base64.b64encode(bytes(view)).decode()
    # The broker itself refuses the certificate in the TLS handshake (no local check first).
    transport: Transport = (
        MqttTransport.for_worker(token=token, key=key, worker_id="foreign-1")
        if protocol == "mqtt"
        else PollTransport.for_worker(
            token=token, key=key, worker_id="foreign-1", url=real.control_plane_url, environ={}
        )
    )
    with pytest.raises(BrokerRefusedError):
        transport.start(timeout_seconds=15)
    transport.close()
    # The launcher refuses it before connecting (gate 1, exit 65) or is refused (exit 78).
    _refused(
        env,
        token=token_text,
        key_b64=key_b64,
        name="foreign CA",
        codes=(EXIT_UNTRUSTED_INPUT, EXIT_CONFIGURATION),
    )


@pytest.mark.parametrize("protocol", ["poll", "mqtt"])
def test_reset_pool_old_certificate_is_refused(make_env: EnvFactory, protocol: str) -> None:
    env = make_env(launchers=1, protocol=protocol)
    old_token, old_key = env.token, env.pool_key_b64
    first = env.workers[0]
    _, csr = env.new_pool_credentials("pool-reset")
    env.cp("pool", "reset", "--name", env.pool, "--csr", str(csr))
    if protocol == "mqtt":
        env.reload_broker()  # what the operator does after reset (docs/controlplane.md)
    # (poll: serve checks every request against the pool's current certificate)
    # The connected worker is told to cycle: it exits after its runs.
    assert first.child is not None
    code = first.child.wait(60)
    if protocol == "poll" and code == 78:
        # Within HL_CP_RESET_GRACE_SECONDS the old certificate may still finish (statuses,
        # bye); with the grace set to 0 it is refused outright once serve re-reads the pool's
        # serial (every 2 s): the launcher exits 78 (refused), never runs on with it.
        assert "refused" in first.child.output(), first.child.output()
        code = 0
    assert code == 0, (
        f"the launcher connected with the old certificate should exit 0 on `cycle` after the "
        f"reset, got {code} (blocked on the launcher daemon / serve):\n{first.child.output()}"
    )
    _refused(env, token=old_token, key_b64=old_key, name="reset pool, old certificate")
