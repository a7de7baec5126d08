"""Gate 1 (credentials): the token's certificates and the pool key → :class:`PoolIdentity`.

Where the pool id sits in the pool certificate: the subject common name is the pool id (the
broker's ``use_identity_as_username`` reads the CN, and its ACL keys topics on it) *and* the SAN
carries ``URI:urn:hardened-launcher:pool:<pool id>``. The check reads the pool id from the SAN,
requires it to equal the token's ``pool_id``, and requires the CN to agree.

Checks, in order, each with its own reason slug:

==============================================  ==============================================
``ca_pin_mismatch``                             the CA's SHA-256 DER fingerprint ≠ the pin
``ca_not_self_signed``                          CA subject ≠ issuer, or its self-signature fails
``ca_not_a_ca``                                 CA lacks basicConstraints CA=true
``ca_key_usage_invalid``                        CA keyUsage lacks keyCertSign
``ca_certificate_not_yet_valid`` / ``_expired`` the CA's validity, with clock skew both ends
``certificate_issuer_mismatch``                 the pool certificate names another issuer
``certificate_signature_invalid``               its signature does not verify under the CA key
``certificate_signature_algorithm_weak``        signed with anything but SHA-2 or EdDSA
``certificate_is_ca``                           the pool certificate claims CA=true
``certificate_not_yet_valid`` / ``_expired``    its validity, with clock skew at both ends
``certificate_client_auth_missing``             extendedKeyUsage lacks clientAuth
``certificate_key_usage_invalid``               keyUsage missing or lacks digitalSignature
``certificate_key_mismatch``                    its public key is not the pool key's
``certificate_pool_id_missing`` / ``_ambiguous`` no / several pool-id URIs in the SAN
``pool_id_mismatch``                            the SAN's pool id ≠ the token's pool_id
``certificate_common_name_mismatch``            the CN ≠ the SAN's pool id
``certificate_chain_rejected``                  cryptography's RFC 5280 client-auth verifier
                                                (the web-PKI profile) refuses the chain
==============================================  ==============================================

The explicit checks come first so that every refusal has a precise reason; the final pass through
``cryptography.x509.verification`` (client verifier, clientAuth EKU policy) adds the profile
checks of RFC 5280 (critical extensions, key identifiers, name encodings) as defence in depth.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NoReturn, Self, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from hardened_launcher.audit.events import AuditSink
from hardened_launcher.audit.gates import record_pass, record_refusal
from hardened_launcher.errors import UntrustedInputError
from hardened_launcher.identity.keys import PoolPrivateKey, describe_public_key, public_key_der
from hardened_launcher.identity.token import Token

POOL_ID_URI_PREFIX = "urn:hardened-launcher:pool:"
SHA256_BYTES = 32
_STRONG_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)

_RENEW_HINT = "Ask the control plane for a new token (it carries a renewed certificate)"
_REISSUE_HINT = "Use the token exactly as the control plane issued it, for this pool"
_CLOCK_HINT = (
    "Check this machine's clock (NTP). If it is right, " + _RENEW_HINT[0].lower() + _RENEW_HINT[1:]
)


class IdentityRejectedError(UntrustedInputError):
    """The token's certificates or the pool key failed a credentials check."""

    default_reason = "identity_rejected"


def pool_id_uri(pool_id: str) -> str:
    """The SAN URI that names ``pool_id``: ``urn:hardened-launcher:pool:<pool_id>``."""
    return POOL_ID_URI_PREFIX + pool_id


def format_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _reject(message: str, reason: str, hint: str, *, detail: str = "") -> NoReturn:
    raise IdentityRejectedError(message, hint=hint, reason=reason, detail=detail)


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


def _check_validity(
    *,
    what: str,
    prefix: str,
    not_before: datetime,
    not_after: datetime,
    now: datetime,
    clock_skew: timedelta,
) -> None:
    skew = f"allowing {int(clock_skew.total_seconds())} s of clock skew"
    if now + clock_skew < not_before:
        _reject(
            f"{what} is not valid before {format_time(not_before)} "
            f"(now is {format_time(now)}, {skew})",
            f"{prefix}not_yet_valid",
            _CLOCK_HINT,
        )
    if now - clock_skew > not_after:
        _reject(
            f"{what} expired at {format_time(not_after)} (now is {format_time(now)}, {skew})",
            f"{prefix}expired",
            _RENEW_HINT if prefix == "certificate_" else "The CA has expired. " + _RENEW_HINT,
        )


_ExtensionT = TypeVar("_ExtensionT", bound=x509.ExtensionType)


def _extension(cert: x509.Certificate, kind: type[_ExtensionT]) -> _ExtensionT | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


@dataclass(frozen=True, kw_only=True, repr=False)
class PoolIdentity:
    """Proof that gate 1 passed: the token's certificate, CA and the pool key belong together.

    Only :func:`check_pool_identity` makes one. Call :meth:`recheck` before each run.
    """

    pool_id: str
    certificate_sha256: bytes
    ca_sha256: bytes
    serial_number: int
    not_before: datetime
    not_after: datetime
    ca_not_before: datetime
    ca_not_after: datetime
    key_id: bytes
    key_algorithm: str
    broker_url: str
    broker_host: str
    broker_port: int
    mqtt_namespace: str
    control_plane_url: str
    clock_skew: timedelta
    checked_at: datetime
    certificate: x509.Certificate = field(repr=False)
    ca_certificate: x509.Certificate = field(repr=False)
    run_state_signing_key: ed25519.Ed25519PublicKey = field(repr=False, compare=False)

    def __repr__(self) -> str:
        return (
            f"PoolIdentity(pool_id={self.pool_id!r}, key={self.key_algorithm} "
            f"{self.key_id.hex()[:16]}, certificate_sha256={self.certificate_sha256.hex()[:16]!r}, "
            f"ca_sha256={self.ca_sha256.hex()[:16]!r}, not_after={format_time(self.not_after)!r})"
        )

    def recheck(self, now: datetime) -> Self:
        """Re-check the validity windows (per run). Returns ``self`` or raises."""
        _require_aware(now)
        _check_validity(
            what="the CA certificate",
            prefix="ca_certificate_",
            not_before=self.ca_not_before,
            not_after=self.ca_not_after,
            now=now,
            clock_skew=self.clock_skew,
        )
        _check_validity(
            what="the pool certificate",
            prefix="certificate_",
            not_before=self.not_before,
            not_after=self.not_after,
            now=now,
            clock_skew=self.clock_skew,
        )
        return self


def _check_ca(ca: x509.Certificate) -> None:
    if ca.subject != ca.issuer:
        _reject(
            "the token's CA certificate is not self-signed (its issuer is another name)",
            "ca_not_self_signed",
            _REISSUE_HINT,
        )
    try:
        ca.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise IdentityRejectedError(
            "the token's CA certificate is not self-signed (its signature does not verify "
            "under its own key)",
            hint=_REISSUE_HINT,
            reason="ca_not_self_signed",
        ) from exc
    constraints = _extension(ca, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        _reject(
            "the token's CA certificate is not a CA (basicConstraints CA=true is missing)",
            "ca_not_a_ca",
            _REISSUE_HINT,
        )
    usage = _extension(ca, x509.KeyUsage)
    if usage is None or not usage.key_cert_sign:
        _reject(
            "the token's CA certificate may not sign certificates (keyUsage lacks keyCertSign)",
            "ca_key_usage_invalid",
            _REISSUE_HINT,
        )


def _check_signed_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    if cert.issuer != ca.subject:
        _reject(
            "the pool certificate was issued by another CA than the one in the token",
            "certificate_issuer_mismatch",
            _REISSUE_HINT,
        )
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        raise IdentityRejectedError(
            "the pool certificate is signed with an unsupported algorithm",
            hint=_RENEW_HINT,
            reason="certificate_signature_algorithm_weak",
        ) from exc
    if algorithm is not None and not isinstance(algorithm, _STRONG_HASHES):
        _reject(
            f"the pool certificate is signed with {algorithm.name.upper()}; SHA-256 or "
            "stronger is required",
            "certificate_signature_algorithm_weak",
            _RENEW_HINT,
        )
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise IdentityRejectedError(
            "the pool certificate's signature does not verify under the token's CA key: it "
            "was altered or issued by another CA",
            hint=_REISSUE_HINT,
            reason="certificate_signature_invalid",
        ) from exc


def _pool_id_from_certificate(cert: x509.Certificate) -> str:
    san = _extension(cert, x509.SubjectAlternativeName)
    uris = [] if san is None else san.get_values_for_type(x509.UniformResourceIdentifier)
    pool_ids = [
        uri.removeprefix(POOL_ID_URI_PREFIX) for uri in uris if uri.startswith(POOL_ID_URI_PREFIX)
    ]
    if not pool_ids:
        _reject(
            f"the pool certificate carries no pool id (no SAN URI {POOL_ID_URI_PREFIX}…)",
            "certificate_pool_id_missing",
            _REISSUE_HINT,
        )
    if len(pool_ids) > 1:
        _reject(
            "the pool certificate carries more than one pool id in its SAN",
            "certificate_pool_id_ambiguous",
            _REISSUE_HINT,
        )
    return pool_ids[0]


def _run_policy_verifier(*, cert: x509.Certificate, ca: x509.Certificate, at: datetime) -> None:
    builder = PolicyBuilder().store(Store([ca])).time(at).max_chain_depth(1)
    verifier = builder.build_client_verifier()
    try:
        verifier.verify(cert, [])
    except VerificationError as exc:
        raise IdentityRejectedError(
            "the pool certificate chain does not meet the RFC 5280 client-certificate profile",
            hint=_REISSUE_HINT,
            reason="certificate_chain_rejected",
            detail=str(exc)[:300],
        ) from exc


GATE = "credentials"


def check_pool_identity(
    *,
    token: Token,
    private_key: PoolPrivateKey,
    pinned_ca_sha256: bytes | None,
    now: datetime,
    clock_skew: timedelta,
    audit: AuditSink | None = None,
) -> PoolIdentity:
    """Check the token's certificates against each other, the pin, the clock and the key.

    The decision is recorded to ``audit`` when one is given (``identity.verified`` or
    ``identity.rejected`` with the reason).
    """
    try:
        identity = _check_pool_identity(
            token=token,
            private_key=private_key,
            pinned_ca_sha256=pinned_ca_sha256,
            now=now,
            clock_skew=clock_skew,
        )
    except UntrustedInputError as exc:
        record_refusal(
            audit,
            gate=GATE,
            event_type="identity.rejected",
            error=exc,
            fields={"pool_id": token.pool_id, "pinned_ca": pinned_ca_sha256 is not None},
        )
        raise
    record_pass(
        audit,
        gate=GATE,
        event_type="identity.verified",
        fields={
            "pool_id": identity.pool_id,
            "certificate_sha256": identity.certificate_sha256.hex(),
            "ca_sha256": identity.ca_sha256.hex(),
            "pinned_ca": pinned_ca_sha256 is not None,
            "not_after": identity.not_after.isoformat(),
            "key_id": identity.key_id.hex(),
            "key_algorithm": identity.key_algorithm,
        },
    )
    return identity


def _check_pool_identity(
    *,
    token: Token,
    private_key: PoolPrivateKey,
    pinned_ca_sha256: bytes | None,
    now: datetime,
    clock_skew: timedelta,
) -> PoolIdentity:
    _require_aware(now)
    if clock_skew < timedelta(0):
        raise ValueError("clock_skew must not be negative")
    ca = token.ca_certificate
    cert = token.pool_certificate
    ca_sha256 = ca.fingerprint(hashes.SHA256())

    if pinned_ca_sha256 is not None:
        if len(pinned_ca_sha256) != SHA256_BYTES:
            raise ValueError("pinned_ca_sha256 must be 32 bytes (a SHA-256 digest)")
        if not hmac.compare_digest(ca_sha256, pinned_ca_sha256):
            _reject(
                "the token's CA certificate is not the pinned CA",
                "ca_pin_mismatch",
                "check the pinned CA fingerprint setting, or use a token from the control "
                "plane whose CA you pinned",
                detail=f"token CA sha256 {ca_sha256.hex()}",
            )
    _check_ca(ca)
    _check_validity(
        what="the token's CA certificate",
        prefix="ca_certificate_",
        not_before=ca.not_valid_before_utc,
        not_after=ca.not_valid_after_utc,
        now=now,
        clock_skew=clock_skew,
    )
    _check_signed_by(cert, ca)
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        _reject(
            "the pool certificate claims to be a CA; a pool certificate must not",
            "certificate_is_ca",
            _REISSUE_HINT,
        )
    _check_validity(
        what="the pool certificate",
        prefix="certificate_",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        now=now,
        clock_skew=clock_skew,
    )
    eku = _extension(cert, x509.ExtendedKeyUsage)
    if eku is None or ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        _reject(
            "the pool certificate may not be used for client authentication "
            "(extendedKeyUsage lacks clientAuth)",
            "certificate_client_auth_missing",
            _REISSUE_HINT,
        )
    usage = _extension(cert, x509.KeyUsage)
    if usage is None or not usage.digital_signature:
        _reject(
            "the pool certificate's keyUsage lacks digitalSignature",
            "certificate_key_usage_invalid",
            _REISSUE_HINT,
        )
    if public_key_der(cert.public_key()) != public_key_der(private_key.public_key):
        _reject(
            "the pool certificate is for another key than SPACELIFT_POOL_PRIVATE_KEY",
            "certificate_key_mismatch",
            "the token was issued for another CSR, or the pool was reset: use the key whose "
            "CSR made this token, or get a token for this key's CSR",
            detail=f"certificate key {describe_public_key(cert.public_key())}, "
            f"pool key {private_key.algorithm} id {private_key.key_id_hex[:16]}",
        )
    certificate_pool_id = _pool_id_from_certificate(cert)
    if certificate_pool_id != token.pool_id:
        _reject(
            "the pool certificate was issued for another pool than the token's pool_id",
            "pool_id_mismatch",
            _REISSUE_HINT,
        )
    common_names = [
        attribute.value for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    if common_names != [certificate_pool_id]:
        _reject(
            "the pool certificate's subject CN is not its pool id",
            "certificate_common_name_mismatch",
            _REISSUE_HINT,
        )
    # Both windows contain now ± skew; verify at a moment inside both, so the skew allowance
    # above is not undone by the verifier's exact-time check.
    latest_start = max(cert.not_valid_before_utc, ca.not_valid_before_utc)
    earliest_end = min(cert.not_valid_after_utc, ca.not_valid_after_utc)
    _run_policy_verifier(cert=cert, ca=ca, at=min(max(now, latest_start), earliest_end))
    return PoolIdentity(
        pool_id=token.pool_id,
        certificate_sha256=cert.fingerprint(hashes.SHA256()),
        ca_sha256=ca_sha256,
        serial_number=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        ca_not_before=ca.not_valid_before_utc,
        ca_not_after=ca.not_valid_after_utc,
        key_id=private_key.key_id,
        key_algorithm=private_key.algorithm,
        broker_url=token.broker_url,
        broker_host=token.broker_host,
        broker_port=token.broker_port,
        mqtt_namespace=token.mqtt_namespace,
        control_plane_url=token.control_plane_url,
        clock_skew=clock_skew,
        checked_at=now,
        certificate=cert,
        ca_certificate=ca,
        run_state_signing_key=token.run_state_signing_key,
    )
