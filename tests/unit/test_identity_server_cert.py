"""Broker server certificates, the control plane's client certificate, and the CRL."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hardened_launcher.identity.issuing import (
    CONTROL_PLANE_COMMON_NAME,
    CertificateAuthority,
    IssuingError,
    build_revocation_list,
    issue_control_plane_certificate,
    issue_server_certificate,
)
from hardened_launcher.identity.token import is_valid_pool_id

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate(key_type="EC-P256")


def test_server_certificate_profile(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_server_certificate(
        ca, key.public_key(), not_before=NOW, not_after=NOW + timedelta(days=1)
    )
    cert.verify_directly_issued_by(ca.certificate)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"


def test_server_certificate_refusals(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    later = NOW + timedelta(days=1)
    with pytest.raises(IssuingError, match="at least one"):
        issue_server_certificate(
            ca, key, dns_names=(), ip_addresses=(), not_before=NOW, not_after=later
        )
    with pytest.raises(IssuingError) as caught:
        issue_server_certificate(
            ca, key, ip_addresses=("not-an-ip",), not_before=NOW, not_after=later
        )
    assert caught.value.reason == "certificate_names_invalid"
    with pytest.raises(IssuingError, match="outside"):
        issue_server_certificate(ca, key, not_before=NOW, not_after=NOW + timedelta(days=40000))
    with pytest.raises(IssuingError, match="before"):
        issue_server_certificate(ca, key, not_before=later, not_after=NOW)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()  # noqa: S505 - the weak key is the point
    with pytest.raises(IssuingError, match="weak"):
        issue_server_certificate(ca, weak, not_before=NOW, not_after=later)


def test_control_plane_certificate_can_never_be_a_pool(ca: CertificateAuthority) -> None:
    assert not is_valid_pool_id(CONTROL_PLANE_COMMON_NAME)
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    later = NOW + timedelta(days=1)
    cert = issue_control_plane_certificate(ca, key, not_before=NOW, not_after=later)
    assert (
        cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        == CONTROL_PLANE_COMMON_NAME
    )
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    for bad in ("controlplane", "pool-a", "a+b.c", "a#.b", "with space.x", ""):
        with pytest.raises(IssuingError):
            issue_control_plane_certificate(
                ca, key, not_before=NOW, not_after=later, common_name=bad
            )


def test_revocation_list(ca: CertificateAuthority) -> None:
    crl = build_revocation_list(
        ca,
        revoked=((1234, NOW), (5678, NOW)),
        crl_number=7,
        last_update=NOW,
        next_update=NOW + timedelta(days=1),
    )
    assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(1234) is not None
    assert crl.get_revoked_certificate_by_serial_number(99) is None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    empty = build_revocation_list(
        ca, crl_number=1, last_update=NOW, next_update=NOW + timedelta(days=1)
    )
    assert len(empty) == 0
    with pytest.raises(IssuingError):
        build_revocation_list(ca, crl_number=1, last_update=NOW, next_update=NOW)
    with pytest.raises(IssuingError):
        build_revocation_list(
            ca, crl_number=-1, last_update=NOW, next_update=NOW + timedelta(days=1)
        )
