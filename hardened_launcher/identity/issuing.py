"""The issuing side: a pool CA, pool certificates from CSRs, and tokens.

Used by the reference control plane and by the tests. The certificate profile it produces is
the one :func:`~hardened_launcher.identity.certificates.check_pool_identity` expects:

* CA: self-signed, ``basicConstraints`` CA=true pathlen=0 (critical), ``keyUsage``
  keyCertSign+cRLSign (critical), subject and authority key identifiers.
* Pool certificate: subject ``CN=<pool id>``, SAN ``URI:urn:hardened-launcher:pool:<pool id>``,
  ``basicConstraints`` CA=false (critical), ``keyUsage`` digitalSignature (critical),
  ``extendedKeyUsage`` clientAuth, subject and authority key identifiers, a random 128-bit serial.

The CSR's subject and extensions are ignored: only its public key (after its self-signature
verifies and its strength is checked) goes into the certificate.

:func:`sign_certificate` and :func:`build_ca_certificate` take a :class:`CertificateProfile`
so tests can build the certificates the launcher must refuse (wrong EKU, expired, not a CA…);
the control plane only ever uses :meth:`CertificateAuthority.issue_pool_certificate`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn, Self

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hardened_launcher.errors import ConfigurationError
from hardened_launcher.identity.certificates import pool_id_uri
from hardened_launcher.identity.csr import CsrError
from hardened_launcher.identity.keys import check_key_strength, public_key_der
from hardened_launcher.identity.pem import X509_PARSE_ERRORS
from hardened_launcher.identity.token import DEFAULT_MQTT_NAMESPACE, Token, is_valid_pool_id
from hardened_launcher.secrets import Secret, wipe_bytearray

CaKeyTypes = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
DEFAULT_CA_COMMON_NAME = "hardened-launcher pool CA"
DEFAULT_CA_VALIDITY = timedelta(days=3650)
CA_KEY_TYPES = ("EC-P384", "EC-P256", "RSA-4096", "RSA-3072", "RSA-2048")


class IssuingError(ConfigurationError):
    """The issuing side was asked for something it will not do (bad pool id, bad validity…)."""

    default_reason = "issuing_failed"


@dataclass(frozen=True, kw_only=True)
class CertificateProfile:
    """What goes into an issued certificate. The defaults are the pool-certificate profile.

    ``common_name``/``san_pool_id`` default to ``pool_id``; ``san_pool_id=""`` leaves the pool-id
    URI out (and the SAN, unless ``extra_san_uris`` are given). Anything but the defaults is for
    tests that need a certificate the launcher refuses.
    """

    pool_id: str
    common_name: str | None = None
    san_pool_id: str | None = None
    extended_key_usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,)
    digital_signature: bool = True
    ca: bool = False
    extra_san_uris: tuple[str, ...] = ()
    extra_extensions: tuple[x509.Extension[x509.ExtensionType], ...] = ()


def _fail(message: str, reason: str, hint: str) -> NoReturn:
    raise IssuingError(message, hint=hint, reason=reason)


def random_serial_number() -> int:
    """A random positive 128-bit serial number."""
    serial = 0
    while serial == 0:
        serial = secrets.randbits(128)
    return serial


def _hash_for(key: CaKeyTypes) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.public_key()  # type: ignore[arg-type]
        )
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def build_ca_certificate(
    key: CaKeyTypes,
    *,
    common_name: str = DEFAULT_CA_COMMON_NAME,
    not_before: datetime,
    not_after: datetime,
    is_ca: bool = True,
    key_cert_sign: bool = True,
) -> x509.Certificate:
    """A self-signed CA certificate. ``is_ca``/``key_cert_sign`` off only for negative tests."""
    _require_aware(not_before, "not_before")
    _require_aware(not_after, "not_after")
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hardened-launcher"),
        ]
    )
    public = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=not key_cert_sign,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=key_cert_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, _hash_for(key))
    )


def sign_certificate(
    *,
    issuer_key: CaKeyTypes,
    issuer_certificate: x509.Certificate,
    subject_public_key: CertificatePublicKeyTypes,
    profile: CertificateProfile,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """Sign a certificate for ``subject_public_key`` with exactly ``profile``. No checks."""
    _require_aware(not_before, "not_before")
    _require_aware(not_after, "not_after")
    common_name = profile.pool_id if profile.common_name is None else profile.common_name
    san_pool_id = profile.pool_id if profile.san_pool_id is None else profile.san_pool_id
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer_certificate.subject)
        .public_key(subject_public_key)
        .serial_number(random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=profile.ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=profile.digital_signature,
                content_commitment=False,
                key_encipherment=not profile.digital_signature,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=profile.ca,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(subject_public_key), critical=False
        )
        .add_extension(_authority_key_identifier(issuer_certificate), critical=False)
    )
    if profile.extended_key_usages:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(list(profile.extended_key_usages)), critical=False
        )
    uris = [pool_id_uri(san_pool_id)] if san_pool_id else []
    uris.extend(profile.extra_san_uris)
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri) for uri in uris]),
            critical=False,
        )
    for extension in profile.extra_extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(issuer_key, _hash_for(issuer_key))


class CertificateAuthority:
    """A pool CA: its key (never shown) and its self-signed certificate."""

    __slots__ = ("_certificate", "_key")

    def __init__(self, *, key: CaKeyTypes, certificate: x509.Certificate) -> None:
        if public_key_der(certificate.public_key()) != public_key_der(key.public_key()):
            _fail(
                "the CA certificate is not for the CA key",
                "ca_key_mismatch",
                "Load the key and certificate that were generated together",
            )
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
            usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
        except x509.ExtensionNotFound:
            _fail(
                "the CA certificate lacks basicConstraints or keyUsage",
                "ca_not_a_ca",
                "Generate the CA with CertificateAuthority.generate",
            )
        if not constraints.value.ca or not usage.value.key_cert_sign:
            _fail(
                "the CA certificate is not a CA (basicConstraints CA=false or no keyCertSign)",
                "ca_not_a_ca",
                "Generate the CA with CertificateAuthority.generate",
            )
        try:
            certificate.verify_directly_issued_by(certificate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
            raise IssuingError(
                "the CA certificate is not self-signed",
                hint="Generate the CA with CertificateAuthority.generate",
                reason="ca_not_self_signed",
            ) from exc
        self._key = key
        self._certificate = certificate

    @classmethod
    def generate(
        cls,
        *,
        key_type: str = "EC-P384",
        common_name: str = DEFAULT_CA_COMMON_NAME,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> Self:
        """A new CA. ``not_before`` defaults to one hour ago, ``not_after`` to ten years on."""
        key: CaKeyTypes
        if key_type == "EC-P384":
            key = ec.generate_private_key(ec.SECP384R1())
        elif key_type == "EC-P256":
            key = ec.generate_private_key(ec.SECP256R1())
        elif key_type in ("RSA-4096", "RSA-3072", "RSA-2048"):
            key = rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
        else:
            _fail(
                "unsupported CA key type",
                "ca_key_unsupported",
                f"Use one of {', '.join(CA_KEY_TYPES)}",
            )
        start = not_before or datetime.now(UTC) - timedelta(hours=1)
        end = not_after or start + DEFAULT_CA_VALIDITY
        certificate = build_ca_certificate(
            key, common_name=common_name, not_before=start, not_after=end
        )
        return cls(key=key, certificate=certificate)

    @classmethod
    def from_pem(cls, *, key_pem: Secret, certificate_pem: bytes) -> Self:
        """Load a CA saved with :meth:`key_to_pem` and :meth:`certificate_pem`."""
        buf = bytearray()
        try:
            with key_pem.view() as view:
                buf = bytearray(view)
            try:
                key = serialization.load_pem_private_key(buf, password=None)
            except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
                raise IssuingError(
                    "the CA key is not an unencrypted PEM private key",
                    hint="Load the file written by key_to_pem()",
                    reason="ca_key_invalid",
                ) from exc
        finally:
            wipe_bytearray(buf)
        if not isinstance(key, CaKeyTypes):
            _fail("the CA key type is not supported", "ca_key_unsupported", "use EC or RSA")
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem)
            _ = (certificate.extensions, certificate.subject, certificate.issuer)
        except X509_PARSE_ERRORS as exc:
            raise IssuingError(
                "the CA certificate is not a PEM certificate",
                hint="Load the file written by certificate_pem()",
                reason="ca_certificate_invalid",
            ) from exc
        return cls(key=key, certificate=certificate)

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def fingerprint_sha256(self) -> bytes:
        """SHA-256 of the CA certificate's DER: the value launchers pin."""
        return self._certificate.fingerprint(hashes.SHA256())

    def certificate_pem(self) -> bytes:
        return self._certificate.public_bytes(serialization.Encoding.PEM)

    def key_to_pem(self) -> Secret:
        """The CA key as unencrypted PKCS#8 PEM. Store it like any other secret."""
        return Secret.from_bytearray(
            bytearray(
                self._key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        )

    def __repr__(self) -> str:
        subject = self._certificate.subject.rfc4514_string()
        return f"CertificateAuthority(subject={subject!r}, key='********')"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a CertificateAuthority holds a private key and cannot be pickled")

    def issue_pool_certificate(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        pool_id: str,
        not_before: datetime,
        not_after: datetime,
    ) -> x509.Certificate:
        """Issue the pool certificate for ``csr``. Its subject and extensions are ignored."""
        try:
            signature_valid = csr.is_signature_valid
        except X509_PARSE_ERRORS:
            signature_valid = False
        if not signature_valid:
            raise CsrError(
                "the certificate signing request's signature does not verify",
                hint="Submit the spacelift.csr file made together with the key, unmodified",
                reason="csr_signature_invalid",
            )
        try:
            public = csr.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise CsrError(
                "the certificate signing request's key cannot be read",
                hint="Pool keys are RSA (2048+ bits) or EC P-256/P-384",
                reason="csr_key_unsupported",
            ) from exc
        checked = check_key_strength(public)
        if isinstance(checked, str):
            raise CsrError(
                f"the certificate signing request carries {checked}",
                hint="Make a new key and CSR with `hardened-launcher keygen` (RSA-4096)",
                reason="csr_key_unsupported",
            )
        if not is_valid_pool_id(pool_id):
            _fail(
                "the pool id is not valid (1-63 lower-case letters, digits, inner hyphens)",
                "pool_id_invalid",
                "Use a DNS-label-shaped pool id",
            )
        _require_aware(not_before, "not_before")
        _require_aware(not_after, "not_after")
        if not_after <= not_before:
            _fail(
                "the certificate would expire before it becomes valid",
                "certificate_validity_invalid",
                "Pass not_after later than not_before",
            )
        ca = self._certificate
        if not_before < ca.not_valid_before_utc or not_after > ca.not_valid_after_utc:
            _fail(
                "the certificate's validity would reach outside the CA certificate's validity",
                "certificate_validity_invalid",
                "Shorten the validity, or rotate the CA",
            )
        return sign_certificate(
            issuer_key=self._key,
            issuer_certificate=ca,
            subject_public_key=checked,
            profile=CertificateProfile(pool_id=pool_id),
            not_before=not_before,
            not_after=not_after,
        )


def build_token(
    *,
    pool_id: str,
    pool_certificate: x509.Certificate,
    ca_certificate: x509.Certificate,
    broker_url: str,
    control_plane_url: str,
    run_state_signing_key: ed25519.Ed25519PublicKey,
    mqtt_namespace: str = DEFAULT_MQTT_NAMESPACE,
    policy_sanitize_key: bytes | None = None,
) -> Token:
    """The token handed to the operator after the pool is created (validated like any token)."""
    return Token(
        policy_sanitize_key=None if policy_sanitize_key is None else Secret(policy_sanitize_key),
        pool_id=pool_id,
        broker_url=broker_url,
        mqtt_namespace=mqtt_namespace,
        control_plane_url=control_plane_url,
        pool_certificate=pool_certificate,
        ca_certificate=ca_certificate,
        run_state_signing_key=run_state_signing_key,
    )


def issue_pool_token(
    ca: CertificateAuthority,
    csr: x509.CertificateSigningRequest,
    *,
    pool_id: str,
    broker_url: str,
    control_plane_url: str,
    run_state_signing_key: ed25519.Ed25519PublicKey,
    not_before: datetime,
    not_after: datetime,
    mqtt_namespace: str = DEFAULT_MQTT_NAMESPACE,
    policy_sanitize_key: bytes | None = None,
) -> Token:
    """Issue the pool certificate from ``csr`` and wrap it in the pool's token.

    This is what creating (or resetting) a pool does on the control plane's side.
    """
    certificate = ca.issue_pool_certificate(
        csr, pool_id=pool_id, not_before=not_before, not_after=not_after
    )
    return build_token(
        pool_id=pool_id,
        pool_certificate=certificate,
        ca_certificate=ca.certificate,
        broker_url=broker_url,
        control_plane_url=control_plane_url,
        run_state_signing_key=run_state_signing_key,
        mqtt_namespace=mqtt_namespace,
        policy_sanitize_key=policy_sanitize_key,
    )


# -- broker certificates and revocation (transport) ---------------------------------------------
#
# New in the transport work (issue 6). The broker's server certificate, the control plane's own
# MQTT client certificate and the CRL that makes a reset pool's old certificate stop working are
# all signed by the pool CA, whose key only this module holds.

#: Common name of the control plane's MQTT client certificate. It contains a dot, so it can never
#: be a pool id (pool ids are DNS labels) and no pool can be issued the control plane's identity.
CONTROL_PLANE_COMMON_NAME = "controlplane.hardened-launcher"
DEFAULT_CRL_VALIDITY = timedelta(days=365)


def _check_validity(ca: CertificateAuthority, not_before: datetime, not_after: datetime) -> None:
    _require_aware(not_before, "not_before")
    _require_aware(not_after, "not_after")
    if not_after <= not_before:
        _fail(
            "the certificate would expire before it becomes valid",
            "certificate_validity_invalid",
            "Pass not_after later than not_before",
        )
    issuer = ca.certificate
    if not_before < issuer.not_valid_before_utc or not_after > issuer.not_valid_after_utc:
        _fail(
            "the certificate's validity would reach outside the CA certificate's validity",
            "certificate_validity_invalid",
            "Shorten the validity, or rotate the CA",
        )


def issue_server_certificate(
    ca: CertificateAuthority,
    public_key: CertificatePublicKeyTypes,
    *,
    dns_names: tuple[str, ...] = ("localhost",),
    ip_addresses: tuple[str, ...] = ("127.0.0.1",),
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A TLS server certificate for the MQTT broker: EKU serverAuth, the names as SANs.

    The subject CN is the first DNS name (or IP address); clients check the SANs only.
    """
    import ipaddress  # noqa: PLC0415 - only the broker certificate needs it

    if not dns_names and not ip_addresses:
        _fail(
            "a server certificate needs at least one DNS name or IP address",
            "certificate_names_missing",
            "Pass the broker's host name",
        )
    try:
        ips = [ipaddress.ip_address(value) for value in ip_addresses]
        general_names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    except ValueError as exc:
        raise IssuingError(
            "a server certificate name is not a valid DNS name or IP address",
            hint="Pass host names and literal IP addresses",
            reason="certificate_names_invalid",
        ) from exc
    general_names.extend(x509.IPAddress(ip) for ip in ips)
    if isinstance(check_key_strength(public_key), str):
        _fail(
            "the server key is too weak or of an unsupported type",
            "server_key_unsupported",
            "Use EC P-256/P-384 or RSA with 2048+ bits",
        )
    _check_validity(ca, not_before, not_after)
    common_name = dns_names[0] if dns_names else str(ips[0])
    return sign_certificate(
        issuer_key=ca._key,
        issuer_certificate=ca.certificate,
        subject_public_key=public_key,
        profile=CertificateProfile(
            pool_id=common_name,
            san_pool_id="",
            extended_key_usages=(ExtendedKeyUsageOID.SERVER_AUTH,),
            extra_extensions=(
                x509.Extension(
                    x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
                    critical=False,
                    value=x509.SubjectAlternativeName(general_names),
                ),
            ),
        ),
        not_before=not_before,
        not_after=not_after,
    )


def issue_control_plane_certificate(
    ca: CertificateAuthority,
    public_key: CertificatePublicKeyTypes,
    *,
    not_before: datetime,
    not_after: datetime,
    common_name: str = CONTROL_PLANE_COMMON_NAME,
) -> x509.Certificate:
    """The control plane's MQTT client certificate (EKU clientAuth, CN ``common_name``).

    ``common_name`` must not be a valid pool id, so no pool certificate can carry it.
    """
    if is_valid_pool_id(common_name) or not common_name or "/" in common_name:
        _fail(
            "the control plane's common name could be a pool id",
            "control_plane_name_invalid",
            f"Use a name with a dot, such as {CONTROL_PLANE_COMMON_NAME}",
        )
    if any(c in common_name for c in "+#") or any(ord(c) < 0x21 for c in common_name):
        _fail(
            "the control plane's common name contains MQTT wildcards or spaces",
            "control_plane_name_invalid",
            f"Use a name such as {CONTROL_PLANE_COMMON_NAME}",
        )
    if isinstance(check_key_strength(public_key), str):
        _fail(
            "the control plane key is too weak or of an unsupported type",
            "control_plane_key_unsupported",
            "Use EC P-256/P-384 or RSA with 2048+ bits",
        )
    _check_validity(ca, not_before, not_after)
    return sign_certificate(
        issuer_key=ca._key,
        issuer_certificate=ca.certificate,
        subject_public_key=public_key,
        profile=CertificateProfile(pool_id=common_name, san_pool_id=""),
        not_before=not_before,
        not_after=not_after,
    )


def build_revocation_list(
    ca: CertificateAuthority,
    *,
    revoked: tuple[tuple[int, datetime], ...] = (),
    crl_number: int,
    last_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationList:
    """A CRL signed by the CA listing ``(serial number, revocation time)`` pairs.

    An empty list is valid and needed: a broker configured with a CRL file refuses every client
    when the file is missing or its ``next_update`` has passed.
    """
    _require_aware(last_update, "last_update")
    _require_aware(next_update, "next_update")
    if next_update <= last_update:
        _fail(
            "the revocation list would expire before it is issued",
            "crl_validity_invalid",
            "Pass next_update later than last_update",
        )
    if crl_number < 0:
        _fail("the CRL number must not be negative", "crl_number_invalid", "Count up from 1")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(last_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(_authority_key_identifier(ca.certificate), critical=False)
    )
    for serial, revoked_at in revoked:
        _require_aware(revoked_at, "revocation time")
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(revoked_at)
            .build()
        )
    key = ca._key
    return builder.sign(key, _hash_for(key))
