"""A real mosquitto with the generated TLS configuration, for integration tests.

``MosquittoBroker.start(tmp_path)`` makes a CA, writes the configuration with
:func:`~hardened_launcher.transport.broker_config.write_broker_config` on a free loopback port,
starts ``mosquitto -c`` and waits until the TLS port accepts connections. ``restart()`` stops
and starts it on the same port (an outage), ``revoke()`` rewrites the CRL and sends SIGHUP,
``stop()`` ends it. ``pool()`` issues a pool certificate and token; ``control_plane()`` the
control plane's client credentials.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from hardened_launcher.demo.mosquitto import BrokerStartError, MosquittoProcess
from hardened_launcher.demo.processes import free_port
from hardened_launcher.identity.csr import create_csr, parse_subject
from hardened_launcher.identity.issuing import (
    CertificateAuthority,
    issue_control_plane_certificate,
    issue_pool_token,
)
from hardened_launcher.identity.keys import PoolPrivateKey
from hardened_launcher.identity.token import Token
from hardened_launcher.secrets import Secret
from hardened_launcher.transport.broker_config import (
    BrokerConfig,
    BrokerLimits,
    RevokedCertificate,
    reload_broker,
    write_broker_config,
    write_revocation_list,
)
from hardened_launcher.transport.client import ClientOptions, MqttTransport
from hardened_launcher.transport.tls import TlsCredentials
from tests.conftest import require_tool

FAST_OPTIONS = ClientOptions(
    keepalive_seconds=5,
    connect_timeout_seconds=3.0,
    reconnect_min_seconds=0.1,
    reconnect_max_seconds=1.0,
    will_delay_seconds=1,
)


@dataclass(kw_only=True)
class Pool:
    pool_id: str
    token: Token
    key: PoolPrivateKey


@dataclass(kw_only=True)
class MosquittoBroker:
    directory: Path
    ca: CertificateAuthority
    config: BrokerConfig
    mosquitto: str
    log_path: Path
    revoked: list[RevokedCertificate] = field(default_factory=list)

    @classmethod
    def create(
        cls, directory: Path, *, limits: BrokerLimits | None = None, namespace: str = "spacelift"
    ) -> MosquittoBroker:
        mosquitto = require_tool("mosquitto")
        ca = CertificateAuthority.generate(key_type="EC-P256")
        log_path = directory / "mosquitto.log"
        config = write_broker_config(
            directory / "broker",
            ca=ca,
            port=free_port(),
            namespace=namespace,
            limits=limits,
            log_path=log_path,
            # Started as root, mosquitto would switch to "mosquitto" and lose the 0600 files.
            run_as_user=pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None,
        )
        return cls(
            directory=directory, ca=ca, config=config, mosquitto=mosquitto, log_path=log_path
        )

    # -- process -----------------------------------------------------------------------------
    _process: MosquittoProcess | None = None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process.process if self._process is not None else None

    def start(self, *, timeout_seconds: float = 10.0) -> None:
        self._process = MosquittoProcess(
            config_path=self.config.config_path,
            port=self.config.port,
            output_path=self.directory / "mosquitto.stderr",
            mosquitto=self.mosquitto,
        )
        try:
            self._process.start(timeout_seconds=timeout_seconds)
        except BrokerStartError as exc:
            self._process = None
            pytest.fail(f"{exc}\n{self.log()}")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.stop()
        self._process = None

    def restart(self, *, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    # -- identities --------------------------------------------------------------------------
    def pool(self, pool_id: str, *, ca: CertificateAuthority | None = None) -> Pool:
        issuer = ca or self.ca
        key = PoolPrivateKey.generate_ec()
        now = datetime.now(UTC)
        token = issue_pool_token(
            issuer,
            create_csr(key, parse_subject(f"/CN={pool_id}")),
            pool_id=pool_id,
            broker_url=f"mqtts://localhost:{self.config.port}",
            control_plane_url="https://localhost:1",
            run_state_signing_key=ed25519.Ed25519PrivateKey.generate().public_key(),
            not_before=now - timedelta(minutes=5),
            not_after=now + timedelta(days=1),
            mqtt_namespace=self.config.namespace,
        )
        # The token carries the broker CA: with a foreign issuer, still trust the real broker.
        if ca is not None:
            token = Token(
                pool_id=token.pool_id,
                broker_url=token.broker_url,
                mqtt_namespace=token.mqtt_namespace,
                control_plane_url=token.control_plane_url,
                pool_certificate=token.pool_certificate,
                ca_certificate=self.ca.certificate,
                run_state_signing_key=token.run_state_signing_key,
            )
        return Pool(pool_id=pool_id, token=token, key=key)

    def control_plane_credentials(self) -> TlsCredentials:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        certificate = issue_control_plane_certificate(
            self.ca,
            key.public_key(),
            not_before=now - timedelta(minutes=5),
            not_after=now + timedelta(days=1),
        )
        return TlsCredentials(
            ca_certificate=self.ca.certificate,
            certificate=certificate,
            private_key_pem=Secret(PoolPrivateKey(key).to_pem().reveal()),
        )

    def worker(
        self, pool: Pool, worker_id: str, *, options: ClientOptions = FAST_OPTIONS, **session: float
    ) -> MqttTransport:
        return MqttTransport.for_worker(
            token=pool.token,
            key=pool.key,
            worker_id=worker_id,
            options=options,
            session_options=dict(session),
        )

    def control_plane(
        self, *, options: ClientOptions = FAST_OPTIONS, **session: float
    ) -> MqttTransport:
        return MqttTransport.for_control_plane(
            host="localhost",
            port=self.config.port,
            namespace=self.config.namespace,
            credentials=self.control_plane_credentials(),
            options=options,
            session_options=dict(session),
        )

    def revoke(self, pool: Pool) -> None:
        """What ``pool reset`` does to the broker: CRL rewritten, then SIGHUP."""
        self.revoked.append(RevokedCertificate.of(pool.token.pool_certificate))
        write_revocation_list(self.config.directory, ca=self.ca, revoked=self.revoked)
        assert self.process is not None
        reload_broker(self.process.pid)
        time.sleep(0.3)

    def tls_handshake_error(self, context: ssl.SSLContext) -> str | None:
        """Raw TLS probe: the error the broker's handshake (and first read) ends with, or None."""
        with socket.create_connection(("127.0.0.1", self.config.port), timeout=3) as raw:
            try:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    # TLS 1.3 would report the refusal of the client certificate on read; an
                    # accepted client meets silence (the broker waits for CONNECT).
                    tls.settimeout(1)
                    tls.recv(1)
            except TimeoutError:
                return None
            except (ssl.SSLError, OSError) as exc:
                return f"{type(exc).__name__}: {exc}"
        return None


@contextlib.contextmanager
def running_broker(
    directory: Path, *, limits: BrokerLimits | None = None
) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker.create(directory, limits=limits)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with running_broker(tmp_path) as running:
        yield running
