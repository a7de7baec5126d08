"""The generated mosquitto configuration (text and files; the real broker is in integration)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509

from hardened_launcher.identity.issuing import CertificateAuthority
from hardened_launcher.transport.broker_config import (
    BrokerConfigError,
    BrokerLimits,
    RevokedCertificate,
    render_acl,
    write_broker_config,
    write_revocation_list,
)


def test_acl_grants_only_the_layout() -> None:
    acl = render_acl(namespace="spacelift", control_plane_common_name="controlplane.hl")
    lines = [line for line in acl.splitlines() if line and not line.startswith("#")]
    assert lines == [
        "user controlplane.hl",
        "topic read spacelift/writeonly/#",
        "topic write spacelift/readonly/#",
        "pattern read spacelift/readonly/%u/#",
        "pattern write spacelift/writeonly/%u/#",
    ]
    with pytest.raises(ValueError, match="namespace"):
        render_acl(namespace="a/b", control_plane_common_name="cp.x")
    with pytest.raises(BrokerConfigError):
        render_acl(namespace="ns", control_plane_common_name="cp x\ntopic readwrite #")


def test_files_are_private_and_config_is_deliberate(tmp_path: Path) -> None:
    ca = CertificateAuthority.generate(key_type="EC-P256")
    config = write_broker_config(tmp_path / "b", ca=ca, port=18883)
    assert stat.S_IMODE(config.directory.stat().st_mode) == 0o700
    for path in config.directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    text = config.config_path.read_text()
    for line in (
        "allow_anonymous false",
        "require_certificate true",
        "use_identity_as_username true",
        "persistence false",
        "max_queued_messages 100000",
        "max_inflight_messages 64",
        "listener 18883 127.0.0.1",
        f"crlfile {config.crl_path}",
        f"acl_file {config.acl_path}",
    ):
        assert line in text.splitlines()
    assert config.broker_url == "mqtts://127.0.0.1:18883"
    crl = x509.load_pem_x509_crl(config.crl_path.read_bytes())
    assert len(crl) == 0


def test_revocation_list_update_counts_up(tmp_path: Path) -> None:
    ca = CertificateAuthority.generate(key_type="EC-P256")
    config = write_broker_config(tmp_path, ca=ca, port=18883)
    write_revocation_list(config.directory, ca=ca, revoked=[RevokedCertificate.of(ca.certificate)])
    crl = x509.load_pem_x509_crl(config.crl_path.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(ca.certificate.serial_number) is not None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2


def test_limits_are_checked(tmp_path: Path) -> None:
    with pytest.raises(BrokerConfigError):
        BrokerLimits(max_queued_messages=0)
    with pytest.raises(BrokerConfigError):
        BrokerLimits(max_packet_size_bytes=1000)
    with pytest.raises(BrokerConfigError):
        write_broker_config(
            Path("/nonexistent-x"), ca=CertificateAuthority.generate(), host="localhost", port=1
        )
