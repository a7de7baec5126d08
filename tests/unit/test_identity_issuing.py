"""The issuing side: the CA, pool certificates from CSRs (whose content is ignored), tokens."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hardened_launcher.identity.certificates import check_pool_identity
from hardened_launcher.identity.csr import CsrError, create_csr, parse_subject
from hardened_launcher.identity.issuing import (
    CertificateAuthority,
    IssuingError,
    build_ca_certificate,
    build_token,
    random_serial_number,
)
from hardened_launcher.identity.keys import PoolPrivateKey
from hardened_launcher.identity.token import TokenError
from hardened_launcher.secrets import Secret

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


@pytest.fixture(scope="module")
def pool_key() -> PoolPrivateKey:
    return PoolPrivateKey.generate(rsa_key_bits=2048)


def _issue(
    ca: CertificateAuthority, csr: x509.CertificateSigningRequest, pool_id: str = "pool-1"
) -> x509.Certificate:
    return ca.issue_pool_certificate(
        csr, pool_id=pool_id, not_before=NOW, not_after=NOW + timedelta(days=30)
    )


@pytest.mark.parametrize(
    ("key_type", "hash_type"),
    [("EC-P384", hashes.SHA384), ("EC-P256", hashes.SHA256), ("RSA-2048", hashes.SHA256)],
)
def test_ca_profile(key_type: str, hash_type: type[hashes.HashAlgorithm]) -> None:
    ca = CertificateAuthority.generate(key_type=key_type)
    cert = ca.certificate
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    assert isinstance(cert.signature_hash_algorithm, hash_type)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=3650)


def test_ca_unsupported_key_type() -> None:
    with pytest.raises(IssuingError) as info:
        CertificateAuthority.generate(key_type="DSA-1024")
    assert info.value.reason == "ca_key_unsupported"


def test_ca_pem_round_trip(ca: CertificateAuthority) -> None:
    with ca.key_to_pem() as key_pem:
        again = CertificateAuthority.from_pem(key_pem=key_pem, certificate_pem=ca.certificate_pem())
    assert again.fingerprint_sha256 == ca.fingerprint_sha256
    rendered = repr(ca)
    assert "BEGIN" not in rendered
    assert "********" in rendered
    with pytest.raises(TypeError):
        pickle.dumps(ca)


def test_ca_from_pem_refusals(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.generate(key_type="EC-P256")
    cases = [
        (other.key_to_pem(), ca.certificate_pem(), "ca_key_mismatch"),
        (Secret(b"not a key"), ca.certificate_pem(), "ca_key_invalid"),
        (ca.key_to_pem(), b"not a cert", "ca_certificate_invalid"),
    ]
    for key_pem, cert_pem, reason in cases:
        with pytest.raises(IssuingError) as info:
            CertificateAuthority.from_pem(key_pem=key_pem, certificate_pem=cert_pem)
        assert info.value.reason == reason


@pytest.mark.parametrize(
    ("is_ca", "key_cert_sign"), [(False, True), (True, False)], ids=["CA=false", "no keyCertSign"]
)
def test_ca_constructor_refuses_non_ca(is_ca: bool, key_cert_sign: bool) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build_ca_certificate(
        key,
        not_before=NOW,
        not_after=NOW + timedelta(days=1),
        is_ca=is_ca,
        key_cert_sign=key_cert_sign,
    )
    with pytest.raises(IssuingError) as info:
        CertificateAuthority(key=key, certificate=cert)
    assert info.value.reason == "ca_not_a_ca"


def test_issue_ignores_csr_subject_and_extensions(
    ca: CertificateAuthority, pool_key: PoolPrivateKey
) -> None:
    hostile = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other-pool")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("evil.example"),
                    x509.UniformResourceIdentifier("urn:hardened-launcher:pool:other-pool"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(pool_key.private_key, hashes.SHA256())
    )
    cert = _issue(ca, hostile)
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pool-1")])
    assert cert.issuer == ca.certificate.subject
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier("urn:hardened-launcher:pool:pool-1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert not constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)
    cert.verify_directly_issued_by(ca.certificate)
    assert {ext.oid.dotted_string for ext in cert.extensions} == {
        x509.OID_BASIC_CONSTRAINTS.dotted_string,
        x509.OID_KEY_USAGE.dotted_string,
        x509.OID_EXTENDED_KEY_USAGE.dotted_string,
        x509.OID_SUBJECT_ALTERNATIVE_NAME.dotted_string,
        x509.OID_SUBJECT_KEY_IDENTIFIER.dotted_string,
        x509.OID_AUTHORITY_KEY_IDENTIFIER.dotted_string,
    }


def test_serials_are_random_128_bit(ca: CertificateAuthority, pool_key: PoolPrivateKey) -> None:
    csr = create_csr(pool_key, parse_subject("/CN=x"))
    serials = {_issue(ca, csr).serial_number for _ in range(5)}
    assert len(serials) == 5
    assert all(0 < serial < 2**128 for serial in serials)
    assert max(random_serial_number() for _ in range(64)) > 2**120


def test_tampered_csr_signature(ca: CertificateAuthority, pool_key: PoolPrivateKey) -> None:
    der = bytearray(
        create_csr(pool_key, parse_subject("/CN=x")).public_bytes(serialization.Encoding.DER)
    )
    der[-5] ^= 0x01
    tampered = x509.load_der_x509_csr(bytes(der))
    with pytest.raises(CsrError) as info:
        _issue(ca, tampered)
    assert info.value.reason == "csr_signature_invalid"


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),  # noqa: S505 -- the weak key is the point
            id="RSA-1024",
        ),
        pytest.param(lambda: ec.generate_private_key(ec.SECP521R1()), id="P-521"),
        pytest.param(ed25519.Ed25519PrivateKey.generate, id="Ed25519"),
    ],
)
def test_weak_or_unsupported_csr_key(ca: CertificateAuthority, make_key: object) -> None:
    key = make_key()  # type: ignore[operator]
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, algorithm)
    with pytest.raises(CsrError) as info:
        _issue(ca, csr)
    assert info.value.reason == "csr_key_unsupported"


def test_bad_pool_id(ca: CertificateAuthority, pool_key: PoolPrivateKey) -> None:
    with pytest.raises(IssuingError) as info:
        _issue(ca, create_csr(pool_key, parse_subject("/CN=x")), pool_id="Bad Pool")
    assert info.value.reason == "pool_id_invalid"


def test_bad_validity(ca: CertificateAuthority, pool_key: PoolPrivateKey) -> None:
    csr = create_csr(pool_key, parse_subject("/CN=x"))
    for not_before, not_after in [
        (NOW, NOW),
        (NOW, NOW - timedelta(days=1)),
        (NOW - timedelta(days=2), NOW + timedelta(days=1)),
        (NOW, NOW + timedelta(days=4000)),
    ]:
        with pytest.raises(IssuingError) as info:
            ca.issue_pool_certificate(
                csr, pool_id="pool-1", not_before=not_before, not_after=not_after
            )
        assert info.value.reason == "certificate_validity_invalid"
    with pytest.raises(ValueError, match="timezone-aware"):
        ca.issue_pool_certificate(
            csr,
            pool_id="pool-1",
            not_before=NOW.replace(tzinfo=None),
            not_after=NOW + timedelta(days=1),
        )


def test_build_token_and_identity(ca: CertificateAuthority, pool_key: PoolPrivateKey) -> None:
    cert = _issue(ca, create_csr(pool_key, parse_subject("/CN=x")))
    signing = ed25519.Ed25519PrivateKey.generate().public_key()
    token = build_token(
        pool_id="pool-1",
        pool_certificate=cert,
        ca_certificate=ca.certificate,
        broker_url="mqtts://localhost:8883",
        control_plane_url="http://localhost:8080",
        run_state_signing_key=signing,
        mqtt_namespace="acme",
    )
    identity = check_pool_identity(
        token=token,
        private_key=pool_key,
        pinned_ca_sha256=ca.fingerprint_sha256,
        now=NOW + timedelta(seconds=1),
        clock_skew=timedelta(0),
    )
    assert identity.mqtt_namespace == "acme"
    with pytest.raises(TokenError) as info:
        build_token(
            pool_id="pool-1",
            pool_certificate=cert,
            ca_certificate=ca.certificate,
            broker_url="mqtt://plaintext:1883",
            control_plane_url="https://cp.example",
            run_state_signing_key=signing,
        )
    assert info.value.reason == "token_field_invalid"
