"""Operator actions on pools: create (issue the certificate, make the token), reset, cycle.

The pool id is the pool's name (a DNS label): it is the certificate's CN, the broker user name
and the ``<pool>`` topic level. The token is returned as a :class:`Secret` for the CLI to print
on stdout; it is never logged or stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from hardened_launcher.controlplane.ca import StateDir
from hardened_launcher.controlplane.errors import ConflictError
from hardened_launcher.controlplane.store import PoolRecord, RevokedCertificate, Store
from hardened_launcher.envelope.ticket import pool_sanitize_key
from hardened_launcher.identity.issuing import issue_pool_token
from hardened_launcher.identity.keys import public_key_id
from hardened_launcher.identity.token import Token, TokenError, check_token_urls, is_valid_pool_id
from hardened_launcher.secrets import Secret

DEFAULT_POOL_CERTIFICATE_DAYS: Final = 365
MAX_POOL_CERTIFICATE_DAYS: Final = 3650


@dataclass(frozen=True, kw_only=True)
class IssuedPool:
    pool: PoolRecord
    token: Secret
    revoked: RevokedCertificate | None = None
    revocation_list: Path | None = None
    cycled_workers: tuple[str, ...] = ()


def check_pool_name(name: str) -> str:
    if not is_valid_pool_id(name):
        raise ConflictError(
            "the pool name must be 1-63 lower-case letters, digits and inner hyphens",
            hint="It becomes the pool id, the certificate CN and an MQTT topic level",
            reason="pool_name_invalid",
        )
    return name


def _issue(
    state: StateDir,
    *,
    pool_id: str,
    csr: x509.CertificateSigningRequest,
    broker_url: str | None,
    control_plane_url: str | None,
    days: int,
    now: datetime,
) -> Token:
    if not 1 <= days <= MAX_POOL_CERTIFICATE_DAYS:
        # 0 would issue a certificate that is expired on arrival; a huge number overflows.
        raise ConflictError(
            f"the certificate validity must be 1 to {MAX_POOL_CERTIFICATE_DAYS} days",
            hint="Pass --days within that range",
            reason="certificate_validity_invalid",
        )
    broker_url = broker_url or state.settings.broker_url
    control_plane_url = control_plane_url or state.settings.control_plane_url
    try:
        check_token_urls(broker_url=broker_url, control_plane_url=control_plane_url)
    except TokenError as exc:
        raise ConflictError(
            exc.message.replace("in the token ", ""),
            hint="Pass --control-plane-url https://HOST[:PORT] (http:// only to localhost) and "
            "--broker-url mqtts://HOST:PORT: the launcher refuses a token with any other URL",
            reason="url_invalid",
        ) from None
    ca = state.certificate_authority()
    not_after = min(now + timedelta(days=days), ca.certificate.not_valid_after_utc)
    if not_after <= now:
        raise ConflictError(
            "the control plane's CA certificate has expired, so no pool certificate can be issued",
            hint="Initialise a new control-plane state directory (a new CA)",
            reason="ca_expired",
        )
    signing_key = state.signing_key()
    return issue_pool_token(
        ca,
        csr,
        pool_id=pool_id,
        broker_url=broker_url,
        control_plane_url=control_plane_url,
        run_state_signing_key=signing_key.public_key(),
        not_before=max(now - timedelta(minutes=5), ca.certificate.not_valid_before_utc),
        not_after=not_after,
        mqtt_namespace=state.settings.namespace,
        policy_sanitize_key=pool_sanitize_key(signing_key, pool_id),
    )


def _certificate_fields(certificate: x509.Certificate) -> dict[str, str]:
    return {
        "certificate_pem": certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        "certificate_serial": f"{certificate.serial_number:x}",
        "certificate_fingerprint": certificate.fingerprint(hashes.SHA256()).hex(),
        "key_id": public_key_id(certificate.public_key()).hex(),
    }


def create_pool(
    state: StateDir,
    store: Store,
    *,
    name: str,
    csr: x509.CertificateSigningRequest,
    now: datetime,
    broker_url: str | None = None,
    control_plane_url: str | None = None,
    days: int = DEFAULT_POOL_CERTIFICATE_DAYS,
) -> IssuedPool:
    """Issue the pool certificate from ``csr`` and record the pool; returns its token."""
    pool_id = check_pool_name(name)
    if any(p.id == pool_id for p in store.list_pools()):
        raise ConflictError(
            f"a pool named {name!r} already exists",
            hint="Use `pool reset` to re-issue its certificate, or choose another name",
            reason="pool_exists",
        )
    token = _issue(
        state,
        pool_id=pool_id,
        csr=csr,
        broker_url=broker_url,
        control_plane_url=control_plane_url,
        days=days,
        now=now,
    )
    fields = _certificate_fields(token.pool_certificate)
    pool = store.add_pool(
        pool_id=pool_id,
        name=name,
        certificate_pem=fields["certificate_pem"].encode("ascii"),
        certificate_serial=fields["certificate_serial"],
        certificate_fingerprint=fields["certificate_fingerprint"],
        key_id=fields["key_id"],
        now=now.timestamp(),
    )
    return IssuedPool(pool=pool, token=token.to_encoded())


def reset_pool(
    state: StateDir,
    store: Store,
    *,
    name: str,
    csr: x509.CertificateSigningRequest,
    now: datetime,
    broker_url: str | None = None,
    control_plane_url: str | None = None,
    days: int = DEFAULT_POOL_CERTIFICATE_DAYS,
) -> IssuedPool:
    """Re-issue the pool certificate, revoke the old one (CRL), and cycle the pool's workers.

    Queued runs sealed to the old key fail with ``pool_key_rotated`` when dispatched if the CSR
    carries a new key. The broker reads the rewritten CRL on SIGHUP; connections already open
    stay open, which is why the workers are told to ``cycle``.
    """
    pool = store.get_pool(name)
    token = _issue(
        state,
        pool_id=pool.id,
        csr=csr,
        broker_url=broker_url,
        control_plane_url=control_plane_url,
        days=days,
        now=now,
    )
    fields = _certificate_fields(token.pool_certificate)
    revoked = store.replace_pool_certificate(
        pool.id,
        certificate_pem=fields["certificate_pem"].encode("ascii"),
        certificate_serial=fields["certificate_serial"],
        certificate_fingerprint=fields["certificate_fingerprint"],
        key_id=fields["key_id"],
        now=now.timestamp(),
    )
    crl = state.update_revocation_list(store, now=now)
    cycled = store.cycle_pool(pool.id, now=now.timestamp())
    return IssuedPool(
        pool=store.get_pool(pool.id),
        token=token.to_encoded(),
        revoked=revoked,
        revocation_list=crl,
        cycled_workers=tuple(cycled),
    )
