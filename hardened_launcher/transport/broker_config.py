"""Generate a mosquitto 2.x configuration for the transport (docs/transport.md).

:func:`write_broker_config` writes, into one directory (0700, files 0600):

* ``mosquitto.conf`` — one TLS listener, client certificates required, the certificate CN as
  user name, no anonymous access, the ACL file, the CRL file, deliberate queue limits,
  persistence off;
* ``acl`` — a pool certificate (user name = pool id) may read ``<ns>/readonly/<pool>/#`` and
  write ``<ns>/writeonly/<pool>/#`` only; the control plane's certificate may read
  ``<ns>/writeonly/#`` and write ``<ns>/readonly/#``;
* ``ca.pem``, ``server.pem``, ``server.key`` (a fresh EC P-256 key), ``crl.pem``.

:func:`write_revocation_list` rewrites the CRL (atomically) and :func:`reload_broker` sends
mosquitto SIGHUP. Measured with mosquitto 2.0.11 (tests/integration/test_transport_broker.py):
a CRL rewritten on disk is NOT read until SIGHUP; after SIGHUP new TLS handshakes with a
revoked certificate are refused, while connections already open stay open — the control plane
must therefore also tell the pool's workers to ``cycle`` (or restart the broker) after a reset.
"""

from __future__ import annotations

import ipaddress
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hardened_launcher.errors import ConfigurationError, InfrastructureError
from hardened_launcher.identity.issuing import (
    CONTROL_PLANE_COMMON_NAME,
    DEFAULT_CRL_VALIDITY,
    CertificateAuthority,
    build_revocation_list,
    issue_server_certificate,
)
from hardened_launcher.identity.token import DEFAULT_MQTT_NAMESPACE
from hardened_launcher.private_files import replace_atomically
from hardened_launcher.transport.messages import MAX_MESSAGE_BYTES
from hardened_launcher.transport.topics import READONLY, WRITEONLY, check_namespace

CONFIG_FILE: Final = "mosquitto.conf"
ACL_FILE: Final = "acl"
CA_FILE: Final = "ca.pem"
SERVER_CERT_FILE: Final = "server.pem"
SERVER_KEY_FILE: Final = "server.key"
CRL_FILE: Final = "crl.pem"
CRL_NUMBER_FILE: Final = "crl.number"
DEFAULT_SERVER_CERT_VALIDITY: Final = timedelta(days=365)


class BrokerConfigError(ConfigurationError):
    """The broker configuration cannot be written as asked."""

    default_reason = "broker_config_invalid"


@dataclass(frozen=True, kw_only=True)
class BrokerLimits:
    """The broker's per-client limits, chosen deliberately (see docs/transport.md).

    ``max_queued_messages``: QoS 1 messages the broker holds per client above those in flight.
    The default of mosquitto (1000) silently dropped 13,791 of 20,000 messages to a subscriber
    in a burst. 100,000 absorbs a burst of every worker's heartbeat and status messages while
    the control plane is briefly slow or reconnecting (1,000 workers x 10 s heartbeats = 6,000
    messages a minute); the protocol detects anything beyond that (seq gaps) and retransmits
    critical messages. ``max_queued_bytes`` caps the memory the same queue may take (64 MiB),
    so a flood of large messages cannot exhaust the broker.
    """

    max_queued_messages: int = 100_000
    max_queued_bytes: int = 64 * 1024 * 1024
    max_inflight_messages: int = 64
    max_packet_size_bytes: int = MAX_MESSAGE_BYTES + 64 * 1024
    max_keepalive_seconds: int = 120

    def __post_init__(self) -> None:
        if self.max_queued_messages < 1 or self.max_queued_bytes < MAX_MESSAGE_BYTES:
            raise BrokerConfigError(
                "the broker queue limits are too small or unlimited",
                hint="queue at least one message and one maximum-size message's bytes",
            )
        if self.max_inflight_messages < 1 or self.max_packet_size_bytes <= MAX_MESSAGE_BYTES:
            raise BrokerConfigError(
                "max_inflight_messages must be positive and max_packet_size_bytes must exceed "
                "the largest protocol message",
                hint="keep the defaults unless measured otherwise",
            )
        if not 10 <= self.max_keepalive_seconds <= 65535:
            raise BrokerConfigError(
                "max_keepalive_seconds must be 10 to 65535", hint="keep the default"
            )


@dataclass(frozen=True, kw_only=True)
class RevokedCertificate:
    """A certificate that must stop working (e.g. a reset pool's previous certificate)."""

    serial_number: int
    revoked_at: datetime

    @classmethod
    def of(
        cls, certificate: x509.Certificate, *, revoked_at: datetime | None = None
    ) -> RevokedCertificate:
        return cls(
            serial_number=certificate.serial_number, revoked_at=revoked_at or datetime.now(UTC)
        )


@dataclass(frozen=True, kw_only=True)
class BrokerConfig:
    """Where the generated files are, and the listener."""

    directory: Path
    host: str
    port: int
    namespace: str
    control_plane_common_name: str

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_FILE

    @property
    def acl_path(self) -> Path:
        return self.directory / ACL_FILE

    @property
    def ca_path(self) -> Path:
        return self.directory / CA_FILE

    @property
    def crl_path(self) -> Path:
        return self.directory / CRL_FILE

    @property
    def broker_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtts://{host}:{self.port}"


def _check_value(value: str, what: str) -> str:
    # Values go into mosquitto's line-oriented files: no whitespace or control characters.
    if not value or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        raise BrokerConfigError(
            f"the {what} cannot be written into a mosquitto configuration",
            hint="use a value without spaces or control characters",
        )
    return value


def render_acl(*, namespace: str, control_plane_common_name: str) -> str:
    """The ACL file. There is no anonymous section: anything not granted is denied."""
    ns = check_namespace(namespace)
    cn = _check_value(control_plane_common_name, "control plane common name")
    return (
        "# Generated by hardened-launcher (transport/broker_config.py). Do not edit.\n"
        "# User names are certificate CNs (use_identity_as_username): pool id for pools.\n"
        f"user {cn}\n"
        f"topic read {ns}/{WRITEONLY}/#\n"
        f"topic write {ns}/{READONLY}/#\n"
        "\n"
        "# Every pool: only its own topics. %u is the certificate CN = the pool id.\n"
        f"pattern read {ns}/{READONLY}/%u/#\n"
        f"pattern write {ns}/{WRITEONLY}/%u/#\n"
    )


def render_config(
    directory: Path,
    *,
    host: str,
    port: int,
    limits: BrokerLimits,
    log_path: Path | None = None,
    run_as_user: str | None = None,
) -> str:
    """The mosquitto.conf text for files in ``directory``.

    ``run_as_user``: the user mosquitto switches to when started as root (its default is
    ``mosquitto``, which cannot re-read this directory's 0600 files on SIGHUP). Leave it unset
    when the broker runs as the directory's owner.
    """
    _check_value(str(directory), "configuration directory")
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise BrokerConfigError(
            "the broker listener host must be a literal IP address",
            hint="use 127.0.0.1 for a local broker",
        ) from exc
    if not 0 < port < 65536:
        raise BrokerConfigError("the broker port is out of range", hint="use 1-65535")
    log_lines = (
        f"log_dest file {_check_value(str(log_path), 'log path')}\n"
        if log_path is not None
        else "log_dest stderr\n"
    )
    return (
        "# Generated by hardened-launcher (transport/broker_config.py). Do not edit.\n"
        f"{'user ' + _check_value(run_as_user, 'user') + chr(10) if run_as_user else ''}"
        "per_listener_settings false\n"
        "allow_anonymous false\n"
        "allow_zero_length_clientid false\n"
        f"acl_file {directory / ACL_FILE}\n"
        # Reliability is end to end (outbox + acks + seq); the broker keeps nothing on disk.
        "persistence false\n"
        f"max_queued_messages {limits.max_queued_messages}\n"
        f"max_queued_bytes {limits.max_queued_bytes}\n"
        f"max_inflight_messages {limits.max_inflight_messages}\n"
        f"max_packet_size {limits.max_packet_size_bytes}\n"
        f"max_keepalive {limits.max_keepalive_seconds}\n"
        "queue_qos0_messages false\n"
        "retain_available false\n"
        "set_tcp_nodelay true\n"
        f"{log_lines}"
        "log_type error\n"
        "log_type warning\n"
        "log_type notice\n"
        "log_type information\n"
        "connection_messages true\n"
        "log_timestamp true\n"
        "\n"
        f"listener {port} {host}\n"
        "protocol mqtt\n"
        f"cafile {directory / CA_FILE}\n"
        f"certfile {directory / SERVER_CERT_FILE}\n"
        f"keyfile {directory / SERVER_KEY_FILE}\n"
        f"crlfile {directory / CRL_FILE}\n"
        "tls_version tlsv1.2\n"
        "require_certificate true\n"
        "use_identity_as_username true\n"
    )


def write_revocation_list(
    directory: Path,
    *,
    ca: CertificateAuthority,
    revoked: Iterable[RevokedCertificate] = (),
    now: datetime | None = None,
    validity: timedelta = DEFAULT_CRL_VALIDITY,
) -> Path:
    """(Re)write ``crl.pem`` with ``revoked`` (the full list, not a delta); returns its path.

    The broker reads it only on start and on SIGHUP (:func:`reload_broker`). Its
    ``next_update`` is ``now + validity`` (a year by default): the broker refuses every client
    once it passes, so the control plane rewrites the CRL whenever it starts serving.
    """
    start = now or datetime.now(UTC)
    number_path = directory / CRL_NUMBER_FILE
    try:
        previous = int(number_path.read_text(encoding="ascii").strip())
    except (FileNotFoundError, ValueError):
        previous = 0
    number = previous + 1
    crl = build_revocation_list(
        ca,
        revoked=tuple((r.serial_number, r.revoked_at) for r in revoked),
        crl_number=number,
        last_update=start - timedelta(minutes=5),
        next_update=start + validity,
    )
    path = directory / CRL_FILE
    replace_atomically(path, crl.public_bytes(serialization.Encoding.PEM))
    replace_atomically(number_path, f"{number}\n".encode("ascii"))
    return path


def write_broker_config(
    directory: Path,
    *,
    ca: CertificateAuthority,
    host: str = "127.0.0.1",
    port: int,
    namespace: str = DEFAULT_MQTT_NAMESPACE,
    server_dns_names: tuple[str, ...] = ("localhost",),
    server_ip_addresses: tuple[str, ...] = ("127.0.0.1",),
    revoked: Iterable[RevokedCertificate] = (),
    limits: BrokerLimits | None = None,
    control_plane_common_name: str = CONTROL_PLANE_COMMON_NAME,
    log_path: Path | None = None,
    now: datetime | None = None,
    server_cert_validity: timedelta = DEFAULT_SERVER_CERT_VALIDITY,
    run_as_user: str | None = None,
) -> BrokerConfig:
    """Write the broker's configuration, ACL, CA, server certificate and key, and CRL.

    Start the broker with ``mosquitto -c <directory>/mosquitto.conf``. The directory must be
    owned by the user the broker runs as (mosquitto reads the key file).
    """
    directory = directory.resolve()
    # Validate everything before the first file is written.
    render_config(
        directory,
        host=host,
        port=port,
        limits=limits or BrokerLimits(),
        log_path=log_path,
        run_as_user=run_as_user,
    )
    render_acl(namespace=namespace, control_plane_common_name=control_plane_common_name)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    start = now or datetime.now(UTC)
    ns = check_namespace(namespace)
    server_key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(start + server_cert_validity, ca.certificate.not_valid_after_utc)
    certificate = issue_server_certificate(
        ca,
        server_key.public_key(),
        dns_names=server_dns_names,
        ip_addresses=server_ip_addresses,
        not_before=max(start - timedelta(minutes=5), ca.certificate.not_valid_before_utc),
        not_after=not_after,
    )
    replace_atomically(
        directory / SERVER_KEY_FILE,
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    replace_atomically(
        directory / SERVER_CERT_FILE, certificate.public_bytes(serialization.Encoding.PEM)
    )
    replace_atomically(directory / CA_FILE, ca.certificate_pem())
    write_revocation_list(directory, ca=ca, revoked=revoked, now=start)
    replace_atomically(
        directory / ACL_FILE,
        render_acl(namespace=ns, control_plane_common_name=control_plane_common_name).encode(),
    )
    replace_atomically(
        directory / CONFIG_FILE,
        render_config(
            directory,
            host=host,
            port=port,
            limits=limits or BrokerLimits(),
            log_path=log_path,
            run_as_user=run_as_user,
        ).encode(),
    )
    return BrokerConfig(
        directory=directory,
        host=host,
        port=port,
        namespace=ns,
        control_plane_common_name=control_plane_common_name,
    )


def reload_broker(pid: int) -> None:
    """Ask mosquitto (process ``pid``) to re-read its ACL, CRL and limits (SIGHUP)."""
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise InfrastructureError(
            "the broker process is not running",
            hint="start the broker; it reads the new files when it starts",
            reason="broker_not_running",
        ) from exc
