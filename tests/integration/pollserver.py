"""A real long-poll control-plane endpoint (:class:`PollServer`) on a free loopback port, with
a fresh CA, server certificate and CRL, for integration tests of the poll transport.

``PollHarness.create(tmp_path)`` writes the TLS files, ``start()`` serves, ``restart()`` stops
and serves again on the same port (a control-plane restart: sessions and the outbox are gone),
``pool()`` issues a pool certificate and token (registered as the pool's current certificate
unless ``register=False``), ``reset()`` replaces a pool's certificate, ``worker()`` builds a
:class:`PollTransport`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.demo.processes import free_port
from hardened_launcher.identity.csr import create_csr, parse_subject
from hardened_launcher.identity.issuing import CertificateAuthority, issue_pool_token
from hardened_launcher.identity.keys import PoolPrivateKey
from hardened_launcher.transport.broker_config import (
    BrokerConfig,
    RevokedCertificate,
    write_broker_config,
    write_revocation_list,
)
from hardened_launcher.transport.poll_client import PollClientOptions, PollTransport, Proxy
from hardened_launcher.transport.poll_server import (
    PollServer,
    PollServerOptions,
    PoolCertificates,
    server_tls_context,
)
from tests.integration.broker import Pool

FAST_CLIENT = PollClientOptions(
    poll_wait_seconds=5.0,
    read_slack_seconds=3.0,
    connect_timeout_seconds=3.0,
    reconnect_min_seconds=0.1,
    reconnect_max_seconds=1.0,
)
FAST_SERVER = PollServerOptions(
    will_delay_seconds=1.0, takeover_after_seconds=1.0, housekeeping_seconds=0.05
)


@dataclass(kw_only=True)
class PollHarness:
    directory: Path
    ca: CertificateAuthority
    config: BrokerConfig
    port: int
    namespace: str = "spacelift"
    current: dict[str, int] = field(default_factory=dict)
    revoked: list[RevokedCertificate] = field(default_factory=list)
    server: PollServer | None = None
    options: PollServerOptions = FAST_SERVER
    #: (pool, old serial) -> when ``reset`` retired it (Unix seconds), for the reset grace.
    retired: dict[tuple[str, int], float] = field(default_factory=dict)
    grace_seconds: float = 0.0

    @classmethod
    def create(cls, directory: Path, *, options: PollServerOptions = FAST_SERVER) -> PollHarness:
        ca = CertificateAuthority.generate(key_type="EC-P256")
        port = free_port()
        config = write_broker_config(directory / "tls", ca=ca, port=port)
        return cls(directory=directory, ca=ca, config=config, port=port, options=options)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def start(self, **session: Any) -> PollServer:
        tls = self.config.directory
        context = server_tls_context(
            ca_pem=self.ca.certificate.public_bytes(serialization.Encoding.PEM),
            cert_file=str(tls / "server.pem"),
            key_file=str(tls / "server.key"),
            crl_file=str(tls / "crl.pem"),
        )
        self.server = PollServer(
            host="127.0.0.1",
            port=self.port,
            namespace=self.namespace,
            ssl_context=context,
            certificates=PoolCertificates(
                lambda: dict(self.current),
                load_retired=lambda since: {k: t for k, t in self.retired.items() if t >= since},
                grace_seconds=self.grace_seconds,
                refresh_seconds=0.0,
            ),
            options=self.options,
            session_options=session or None,
        )
        self.server.start(timeout_seconds=10)
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def restart(self, **session: Any) -> PollServer:
        self.stop()
        return self.start(**session)

    def pool(
        self, pool_id: str, *, ca: CertificateAuthority | None = None, register: bool = True
    ) -> Pool:
        issuer = ca or self.ca
        key = PoolPrivateKey.generate_ec()
        now = datetime.now(UTC)
        token = issue_pool_token(
            issuer,
            create_csr(key, parse_subject(f"/CN={pool_id}")),
            pool_id=pool_id,
            broker_url="mqtts://localhost:1",
            control_plane_url=self.url,
            run_state_signing_key=ed25519.Ed25519PrivateKey.generate().public_key(),
            not_before=now - timedelta(minutes=5),
            not_after=now + timedelta(days=1),
            mqtt_namespace=self.namespace,
        )
        if ca is not None:  # still trust the real server
            from hardened_launcher.identity.token import Token  # noqa: PLC0415

            token = Token(
                pool_id=token.pool_id,
                broker_url=token.broker_url,
                mqtt_namespace=token.mqtt_namespace,
                control_plane_url=token.control_plane_url,
                pool_certificate=token.pool_certificate,
                ca_certificate=self.ca.certificate,
                run_state_signing_key=token.run_state_signing_key,
            )
        if register:
            self.current[pool_id] = token.pool_certificate.serial_number
        return Pool(pool_id=pool_id, token=token, key=key)

    def revoke_in_crl(self, pool: Pool) -> None:
        """Put the certificate on the CRL (the TLS layer refuses it) and restart to load it."""
        self.revoked.append(RevokedCertificate.of(pool.token.pool_certificate))
        write_revocation_list(self.config.directory, ca=self.ca, revoked=self.revoked)
        self.restart()

    def reset(self, pool: Pool) -> Pool:
        """What ``pool reset`` does: a new certificate becomes the pool's current one."""
        self.retired[(pool.pool_id, pool.token.pool_certificate.serial_number)] = time.time()
        return self.pool(pool.pool_id)

    def worker(
        self,
        pool: Pool,
        worker_id: str,
        *,
        options: PollClientOptions = FAST_CLIENT,
        proxy: Proxy | None = None,
        url: str | None = None,
        **session: Any,
    ) -> PollTransport:
        transport = PollTransport.for_worker(
            token=pool.token,
            key=pool.key,
            worker_id=worker_id,
            url=url or self.url,
            options=options,
            session_options=session or None,
            environ={},
        )
        if proxy is not None:
            transport._proxy = proxy
        return transport


@contextlib.contextmanager
def running_poll_server(
    directory: Path, *, options: PollServerOptions = FAST_SERVER
) -> Iterator[PollHarness]:
    harness = PollHarness.create(directory, options=options)
    harness.start()
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def poll(tmp_path: Path) -> Iterator[PollHarness]:
    with running_poll_server(tmp_path) as harness:
        yield harness
