"""Gate 1: check_pool_identity → PoolIdentity, and one negative test per check."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hardened_launcher.identity.certificates import (
    IdentityRejectedError,
    PoolIdentity,
    check_pool_identity,
)
from hardened_launcher.identity.csr import create_csr, parse_subject
from hardened_launcher.identity.issuing import (
    CaKeyTypes,
    CertificateAuthority,
    CertificateProfile,
    build_ca_certificate,
    build_token,
    sign_certificate,
)
from hardened_launcher.identity.keys import PoolPrivateKey
from hardened_launcher.identity.token import Token

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)
POOL = "pool-1"


@pytest.fixture(scope="module")
def ca_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ca_cert(ca_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return build_ca_certificate(
        ca_key, not_before=NOW - timedelta(days=365), not_after=NOW + timedelta(days=3650)
    )


@pytest.fixture(scope="module")
def pool_key() -> PoolPrivateKey:
    return PoolPrivateKey.generate(rsa_key_bits=2048)


@pytest.fixture(scope="module")
def signing_key() -> ed25519.Ed25519PublicKey:
    return ed25519.Ed25519PrivateKey.generate().public_key()


def _leaf(
    ca_key: CaKeyTypes,
    ca_cert: x509.Certificate,
    key: PoolPrivateKey,
    *,
    profile: CertificateProfile | None = None,
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=30),
) -> x509.Certificate:
    return sign_certificate(
        issuer_key=ca_key,
        issuer_certificate=ca_cert,
        subject_public_key=key.public_key,
        profile=profile or CertificateProfile(pool_id=POOL),
        not_before=not_before,
        not_after=not_after,
    )


def _token(
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    signing_key: ed25519.Ed25519PublicKey,
    pool_id: str = POOL,
) -> Token:
    return build_token(
        pool_id=pool_id,
        pool_certificate=cert,
        ca_certificate=ca_cert,
        broker_url="mqtts://broker.example:8883",
        control_plane_url="https://cp.example",
        run_state_signing_key=signing_key,
    )


def _check(
    token: Token,
    key: PoolPrivateKey,
    *,
    pin: bytes | None = None,
    now: datetime = NOW,
    skew: timedelta = SKEW,
) -> PoolIdentity:
    return check_pool_identity(
        token=token, private_key=key, pinned_ca_sha256=pin, now=now, clock_skew=skew
    )


def _rejected(token: Token, key: PoolPrivateKey, **kwargs: object) -> IdentityRejectedError:
    with pytest.raises(IdentityRejectedError) as info:
        _check(token, key, **kwargs)  # type: ignore[arg-type]
    assert info.value.message
    assert info.value.hint
    return info.value


@pytest.fixture(scope="module")
def good_token(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    pool_key: PoolPrivateKey,
    signing_key: ed25519.Ed25519PublicKey,
) -> Token:
    return _token(_leaf(ca_key, ca_cert, pool_key), ca_cert, signing_key)


# -- acceptance -------------------------------------------------------------------------------


def test_good_identity(
    good_token: Token, pool_key: PoolPrivateKey, ca_cert: x509.Certificate
) -> None:
    identity = _check(good_token, pool_key, pin=ca_cert.fingerprint(hashes.SHA256()))
    assert identity.pool_id == POOL
    assert identity.key_id == pool_key.key_id
    assert identity.key_algorithm == "RSA-2048"
    assert identity.ca_sha256 == ca_cert.fingerprint(hashes.SHA256())
    assert identity.certificate_sha256 == good_token.pool_certificate.fingerprint(hashes.SHA256())
    assert identity.not_after == good_token.pool_certificate.not_valid_after_utc
    assert identity.broker_host == "broker.example"
    assert identity.broker_port == 8883
    assert identity.run_state_signing_key == good_token.run_state_signing_key
    assert identity.checked_at == NOW
    with pytest.raises(dataclasses.FrozenInstanceError):
        identity.pool_id = "other"  # type: ignore[misc]


def test_repr_is_short(good_token: Token, pool_key: PoolPrivateKey) -> None:
    rendered = repr(_check(good_token, pool_key))
    assert "BEGIN" not in rendered
    assert "pool-1" in rendered


def test_without_pin(good_token: Token, pool_key: PoolPrivateKey) -> None:
    assert _check(good_token, pool_key, pin=None).pool_id == POOL


def test_within_skew_accepted_at_both_ends(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    pool_key: PoolPrivateKey,
    signing_key: ed25519.Ed25519PublicKey,
) -> None:
    just_expired = _leaf(ca_key, ca_cert, pool_key, not_after=NOW - timedelta(minutes=4))
    not_quite_valid = _leaf(ca_key, ca_cert, pool_key, not_before=NOW + timedelta(minutes=4))
    for cert in (just_expired, not_quite_valid):
        assert _check(_token(cert, ca_cert, signing_key), pool_key).pool_id == POOL


def test_ec_pool_key(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    signing_key: ed25519.Ed25519PublicKey,
) -> None:
    key = PoolPrivateKey.generate_ec(curve="P384")
    identity = _check(_token(_leaf(ca_key, ca_cert, key), ca_cert, signing_key), key)
    assert identity.key_algorithm == "EC-P384"


def test_rsa_ca_through_certificate_authority(
    pool_key: PoolPrivateKey, signing_key: ed25519.Ed25519PublicKey
) -> None:
    ca = CertificateAuthority.generate(
        key_type="RSA-2048", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=9)
    )
    cert = ca.issue_pool_certificate(
        create_csr(pool_key, parse_subject("/CN=ignored")),
        pool_id=POOL,
        not_before=NOW - timedelta(hours=1),
        not_after=NOW + timedelta(days=1),
    )
    identity = _check(
        _token(cert, ca.certificate, signing_key), pool_key, pin=ca.fingerprint_sha256
    )
    assert identity.ca_sha256 == ca.fingerprint_sha256


# -- one refusal per check --------------------------------------------------------------------


def test_pin_mismatch(good_token: Token, pool_key: PoolPrivateKey) -> None:
    error = _rejected(good_token, pool_key, pin=b"\x00" * 32)
    assert error.reason == "ca_pin_mismatch"


def test_pin_of_wrong_length_is_a_programming_error(
    good_token: Token, pool_key: PoolPrivateKey
) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        _check(good_token, pool_key, pin=b"\x00" * 20)


def test_tampered_certificate_signature(
    good_token: Token, pool_key: PoolPrivateKey, ca_cert: x509.Certificate
) -> None:
    der = bytearray(good_token.pool_certificate.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01
    tampered = x509.load_der_x509_certificate(bytes(der))
    token = dataclasses.replace(good_token, pool_certificate=tampered)
    assert _rejected(token, pool_key).reason == "certificate_signature_invalid"


def test_tampered_certificate_body(
    good_token: Token, pool_key: PoolPrivateKey, ca_cert: x509.Certificate
) -> None:
    der = good_token.pool_certificate.public_bytes(serialization.Encoding.DER)
    tampered = x509.load_der_x509_certificate(der.replace(b"pool-1", b"pool-2"))
    token = dataclasses.replace(good_token, pool_certificate=tampered, pool_id="pool-2")
    assert _rejected(token, pool_key).reason == "certificate_signature_invalid"


def test_other_ca_with_the_same_name(
    ca_cert: x509.Certificate,
    pool_key: PoolPrivateKey,
    signing_key: ed25519.Ed25519PublicKey,
) -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_cert = build_ca_certificate(
        other_key, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=9)
    )
    assert other_cert.subject == ca_cert.subject
    cert = _leaf(other_key, other_cert, pool_key)
    token = _token(cert, ca_cert, signing_key)
    assert _rejected(token, pool_key).reason == "certificate_signature_invalid"


def test_other_ca_with_another_name(
    ca_cert: x509.Certificate,
    pool_key: PoolPrivateKey,
    signing_key: ed25519.Ed25519PublicKey,
) -> None:
    other = CertificateAuthority.generate(
        key_type="EC-P256",
        common_name="someone else's CA",
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=9),
    )
    cert = other.issue_pool_certificate(
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(pool_key.private_key, hashes.SHA256()),
        pool_id=POOL,
        not_before=NOW - timedelta(hours=1),
        not_after=NOW + timedelta(days=1),
    )
    token = _token(cert, ca_cert, signing_key)
    assert _rejected(token, pool_key).reason == "certificate_issuer_mismatch"


def test_expired(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    pool_key: PoolPrivateKey,
    signing_key: ed25519.Ed25519PublicKey,
) -> None:
    cert = _leaf(ca_key, ca_cert, pool_key, not_after=NOW - timedelta(minutes=6))
    error = _rejected(_token(cert, ca_cert, signing_key), pool_key)
    assert error.reason == "certificate_expired"
    assert "2030-06-01T11:54:00Z" in error.message


def test_not_yet_valid(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    pool_key: PoolPrivateKey,
    signing_key: ed25519.Ed25519PublicKey,
) -> None:
    cert = _leaf(ca_key, ca_cert, pool_key, not_before=NOW + timedelta(minutes=6))
    error = _rejected(_token(cert, ca_cert, signing_key), pool_key)
    assert error.reason == "certificate_not_yet_valid"
    assert "clock" in error.hint


def test_zero_skew_is_exact(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    pool_key: PoolPrivateKey,
    signing_key: ed25519.Ed25519PublicKey,
) -> None:
    cert = _leaf(ca_key, ca_cert, pool_key, not_after=NOW - timedelta(seconds=1))
    error = _rejected(_token(cert, ca_cert, signing_key), pool_key, skew=timedelta(0))
    assert error.reason == "certificate_expired"


def test_wrong_key(good_token: Token) -> None:
    other = PoolPrivateKey.generate(rsa_key_bits=2048)
    error = _rejected(good_token, other)
    assert error.reason == "certificate_key_mismatch"
    assert "another CSR" in error.hint


def test_pool_id_mismatch(good_token: Token, pool_key: PoolPrivateKey) -> None:
    token = dataclasses.replace(good_token, pool_id="pool-2")
    assert _rejected(token, pool_key).reason == "pool_id_mismatch"


@pytest.mark.parametrize(
    ("profile", "reason"),
    [
        (
            CertificateProfile(
                pool_id=POOL, extended_key_usages=(ExtendedKeyUsageOID.SERVER_AUTH,)
            ),
            "certificate_client_auth_missing",
        ),
        (
            CertificateProfile(pool_id=POOL, extended_key_usages=()),
            "certificate_client_auth_missing",
        ),
        (
            CertificateProfile(pool_id=POOL, digital_signature=False),
            "certificate_key_usage_invalid",
        ),
        (CertificateProfile(pool_id=POOL, ca=True), "certificate_is_ca"),
        (CertificateProfile(pool_id=POOL, san_pool_id=""), "certificate_pool_id_missing"),
        (
            CertificateProfile(pool_id=POOL, san_pool_id="", extra_san_uris=("https://x.example",)),
            "certificate_pool_id_missing",
        ),
        (
            CertificateProfile(pool_id=POOL, extra_san_uris=("urn:hardened-launcher:pool:pool-2",)),
            "certificate_pool_id_ambiguous",
        ),
        (CertificateProfile(pool_id=POOL, common_name="other"), "certificate_common_name_mismatch"),
        (CertificateProfile(pool_id="pool-2"), "pool_id_mismatch"),
        (
            CertificateProfile(
                pool_id=POOL,
                extra_extensions=(
                    x509.Extension(
                        x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"),
                        True,
                        x509.UnrecognizedExtension(
                            x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"
                        ),
                    ),
                ),
            ),
            "certificate_chain_rejected",
        ),
    ],
    ids=[
        "serverAuth only",
        "no EKU",
        "no digitalSignature",
        "leaf is a CA",
        "no SAN",
        "SAN without pool id",
        "two pool ids",
        "CN disagrees",
        "issued for another pool",
        "unknown critical extension",
    ],
)
def test_profile_violations(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    pool_key: PoolPrivateKey,
    signing_key: ed25519.Ed25519PublicKey,
    profile: CertificateProfile,
    reason: str,
) -> None:
    cert = _leaf(ca_key, ca_cert, pool_key, profile=profile)
    assert _rejected(_token(cert, ca_cert, signing_key), pool_key).reason == reason


def test_no_common_name(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    pool_key: PoolPrivateKey,
    signing_key: ed25519.Ed25519PublicKey,
) -> None:
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x")]))
        .issuer_name(ca_cert.subject)
        .public_key(pool_key.public_key)
        .serial_number(7)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("urn:hardened-launcher:pool:pool-1")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    reason = _rejected(_token(cert, ca_cert, signing_key), pool_key).reason
    assert reason == "certificate_common_name_mismatch"


def test_weak_signature_hash(
    pool_key: PoolPrivateKey, signing_key: ed25519.Ed25519PublicKey
) -> None:
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_cert = build_ca_certificate(
        ca_key, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=9)
    )
    good = _leaf(ca_key, ca_cert, pool_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(good.subject)
        .issuer_name(good.issuer)
        .public_key(pool_key.public_key)
        .serial_number(good.serial_number)
        .not_valid_before(good.not_valid_before_utc)
        .not_valid_after(good.not_valid_after_utc)
    )
    for extension in good.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    weak = builder.sign(ca_key, hashes.SHA224())
    reason = _rejected(_token(weak, ca_cert, signing_key), pool_key).reason
    assert reason == "certificate_signature_algorithm_weak"


def test_ca_that_is_not_a_ca(
    pool_key: PoolPrivateKey, signing_key: ed25519.Ed25519PublicKey
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    not_ca = build_ca_certificate(
        key, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=9), is_ca=False
    )
    cert = _leaf(key, not_ca, pool_key)
    assert _rejected(_token(cert, not_ca, signing_key), pool_key).reason == "ca_not_a_ca"


def test_ca_without_key_cert_sign(
    pool_key: PoolPrivateKey, signing_key: ed25519.Ed25519PublicKey
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = build_ca_certificate(
        key,
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=9),
        key_cert_sign=False,
    )
    cert = _leaf(key, ca, pool_key)
    reason = _rejected(_token(cert, ca, signing_key), pool_key).reason
    assert reason == "ca_key_usage_invalid"


def test_ca_issued_by_someone_else(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    pool_key: PoolPrivateKey,
    signing_key: ed25519.Ed25519PublicKey,
) -> None:
    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    intermediate = sign_certificate(
        issuer_key=ca_key,
        issuer_certificate=ca_cert,
        subject_public_key=intermediate_key.public_key(),
        profile=CertificateProfile(pool_id="intermediate", ca=True),
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=9),
    )
    cert = _leaf(intermediate_key, intermediate, pool_key)
    reason = _rejected(_token(cert, intermediate, signing_key), pool_key).reason
    assert reason == "ca_not_self_signed"


def test_ca_self_named_but_signed_by_another_key(
    ca_cert: x509.Certificate,
    pool_key: PoolPrivateKey,
    signing_key: ed25519.Ed25519PublicKey,
) -> None:
    impostor_key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(ca_cert.subject)
        .issuer_name(ca_cert.subject)
        .public_key(ca_cert.public_key())
        .serial_number(9)
        .not_valid_before(ca_cert.not_valid_before_utc)
        .not_valid_after(ca_cert.not_valid_after_utc)
    )
    for extension in ca_cert.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    forged = builder.sign(impostor_key, hashes.SHA256())
    good_leaf_token_ca = _token(_leaf(impostor_key, forged, pool_key), forged, signing_key)
    assert _rejected(good_leaf_token_ca, pool_key).reason == "ca_not_self_signed"


@pytest.mark.parametrize(
    ("not_before", "not_after", "reason"),
    [
        (NOW - timedelta(days=10), NOW - timedelta(hours=1), "ca_certificate_expired"),
        (NOW + timedelta(hours=1), NOW + timedelta(days=10), "ca_certificate_not_yet_valid"),
    ],
)
def test_ca_validity(
    pool_key: PoolPrivateKey,
    signing_key: ed25519.Ed25519PublicKey,
    not_before: datetime,
    not_after: datetime,
    reason: str,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = build_ca_certificate(key, not_before=not_before, not_after=not_after)
    cert = _leaf(key, ca, pool_key)
    assert _rejected(_token(cert, ca, signing_key), pool_key).reason == reason


def test_naive_now_and_negative_skew_are_programming_errors(
    good_token: Token, pool_key: PoolPrivateKey
) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _check(good_token, pool_key, now=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="negative"):
        _check(good_token, pool_key, skew=timedelta(seconds=-1))


# -- recheck ----------------------------------------------------------------------------------


def test_recheck(good_token: Token, pool_key: PoolPrivateKey) -> None:
    identity = _check(good_token, pool_key)
    assert identity.recheck(NOW + timedelta(days=29)) is identity
    with pytest.raises(IdentityRejectedError) as info:
        identity.recheck(NOW + timedelta(days=31))
    assert info.value.reason == "certificate_expired"
    with pytest.raises(IdentityRejectedError) as info:
        identity.recheck(NOW - timedelta(days=2))
    assert info.value.reason == "certificate_not_yet_valid"
    with pytest.raises(ValueError, match="timezone-aware"):
        identity.recheck(NOW.replace(tzinfo=None))


def test_recheck_notices_the_ca_expiring_first(
    pool_key: PoolPrivateKey, signing_key: ed25519.Ed25519PublicKey
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = build_ca_certificate(
        key, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=10)
    )
    cert = _leaf(key, ca, pool_key, not_after=NOW + timedelta(days=5))
    identity = _check(_token(cert, ca, signing_key), pool_key)
    assert identity.recheck(NOW + timedelta(days=4)) is identity
    short_ca = build_ca_certificate(
        key, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=3)
    )
    long_leaf = _leaf(key, short_ca, pool_key, not_after=NOW + timedelta(days=30))
    identity = _check(_token(long_leaf, short_ca, signing_key), pool_key)
    with pytest.raises(IdentityRejectedError) as info:
        identity.recheck(NOW + timedelta(days=4))
    assert info.value.reason == "ca_certificate_expired"
