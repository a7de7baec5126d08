"""transport/factory.py: which transport `start` builds, and where it connects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.errors import ConfigurationError
from hardened_launcher.identity.csr import create_csr, parse_subject
from hardened_launcher.identity.issuing import CertificateAuthority, issue_pool_token
from hardened_launcher.identity.keys import PoolPrivateKey
from hardened_launcher.identity.token import Token
from hardened_launcher.settings import Settings
from hardened_launcher.transport.client import MqttTransport
from hardened_launcher.transport.factory import (
    comms_endpoint,
    reconnect_cap_seconds,
    worker_transport,
)
from hardened_launcher.transport.poll_client import PollTransport

NOW = datetime.now(UTC)


def _token(control_plane_url: str) -> tuple[Token, PoolPrivateKey]:
    key = PoolPrivateKey.generate_ec()
    token = issue_pool_token(
        CertificateAuthority.generate(key_type="EC-P256"),
        create_csr(key, parse_subject("/CN=x")),
        pool_id="pool-a",
        broker_url="mqtts://broker.example.net:8883",
        control_plane_url=control_plane_url,
        run_state_signing_key=ed25519.Ed25519PrivateKey.generate().public_key(),
        not_before=NOW - timedelta(minutes=5),
        not_after=NOW + timedelta(days=1),
    )
    return token, key


def _settings(**kwargs: object) -> Settings:
    return Settings(
        state_dir=Path("/s"),
        cache_dir=Path("/c"),
        audit_dir=Path("/a"),
        **kwargs,  # type: ignore[arg-type]
    )


def test_poll_is_the_default_and_uses_the_comms_url_or_the_token() -> None:
    token, key = _token("https://cp.example.net/api")
    endpoint = comms_endpoint(_settings(), token)
    assert (endpoint.protocol, endpoint.host, endpoint.port) == ("poll", "cp.example.net", 443)
    assert endpoint.source == "SPACELIFT_TOKEN control_plane_url"
    settings = _settings(worker_comms_url="https://poll.example.net:9443/x")
    endpoint = comms_endpoint(settings, token)
    assert (endpoint.host, endpoint.port, endpoint.source) == (
        "poll.example.net",
        9443,
        "SPACELIFT_WORKER_COMMS_URL",
    )
    transport = worker_transport(settings, token=token, key=key, worker_id="w1")
    assert isinstance(transport, PollTransport)
    assert transport.local is not None
    assert transport.local.pool_id == "pool-a"


def test_mqtt_uses_the_token_broker() -> None:
    token, key = _token("https://cp.example.net")
    settings = _settings(worker_comms_protocol="mqtt")
    endpoint = comms_endpoint(settings, token)
    assert (endpoint.protocol, endpoint.host, endpoint.port) == ("mqtt", "broker.example.net", 8883)
    transport = worker_transport(settings, token=token, key=key, worker_id="w1")
    assert isinstance(transport, MqttTransport)


@pytest.mark.parametrize("url", ["http://localhost:8080", "http://127.0.0.1:1"])
def test_poll_refuses_a_token_url_that_is_not_https(url: str) -> None:
    token, key = _token(url)
    with pytest.raises(ConfigurationError) as info:
        worker_transport(_settings(), token=token, key=key, worker_id="w1")
    assert info.value.reason == "comms_url_not_https"
    assert "SPACELIFT_WORKER_COMMS_URL" in info.value.hint


def test_the_reconnect_cap_follows_the_heartbeat_interval() -> None:
    """Three heartbeat intervals, at most 30 s: after an outage a worker is heard again well
    inside the control plane's grace (issue 18); the default stays 30 s."""
    token, key = _token("https://cp.example.net")
    assert reconnect_cap_seconds(_settings()) == 30.0
    fast = _settings(heartbeat_interval=timedelta(seconds=1))
    assert reconnect_cap_seconds(fast) == 3.0
    assert reconnect_cap_seconds(_settings(heartbeat_interval=timedelta(minutes=5))) == 30.0
    poll = worker_transport(fast, token=token, key=key, worker_id="w1")
    assert isinstance(poll, PollTransport)
    assert poll._options.reconnect_max_seconds == 3.0
    mqtt = worker_transport(
        _settings(heartbeat_interval=timedelta(seconds=2), worker_comms_protocol="mqtt"),
        token=token,
        key=key,
        worker_id="w1",
    )
    assert isinstance(mqtt, MqttTransport)
    assert mqtt._options.reconnect_max_seconds == 6.0
