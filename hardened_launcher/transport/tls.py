"""TLS to the broker or the poll endpoint, shared by both transports: the client context with
the pool key loaded from memory, the connection errors, and telling a refused certificate from
an unavailable peer. No paho here: a launcher on the poll protocol never imports the MQTT client.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from dataclasses import dataclass
from typing import Final, Self

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hardened_launcher.errors import ConfigurationError, RetryableError
from hardened_launcher.identity.keys import PoolPrivateKey
from hardened_launcher.identity.token import Token
from hardened_launcher.secrets import Secret, wipe_bytearray

_REFUSAL_MARKERS: Final = (
    "certificate revoked",
    "certificate_revoked",
    "unknown ca",
    "unknown_ca",
    "certificate required",
    "certificate_required",
    "bad certificate",
    "bad_certificate",
    "certificate unknown",
    "certificate_unknown",
    "handshake failure",
    "certificate verify failed",
    "not authorized",
    "bad user name or password",
)


class BrokerUnavailableError(RetryableError):
    """The broker cannot be reached or did not answer in time."""

    default_reason = "broker_unavailable"


class BrokerRefusedError(ConfigurationError):
    """The broker (or its certificate) was refused during TLS or MQTT connect."""

    default_reason = "broker_refused"


@dataclass(frozen=True, kw_only=True)
class TlsCredentials:
    """What the client presents and trusts. ``private_key_pem`` is wiped by its owner."""

    ca_certificate: x509.Certificate
    certificate: x509.Certificate
    private_key_pem: Secret

    @classmethod
    def for_pool(cls, token: Token, key: PoolPrivateKey) -> Self:
        """The launcher's credentials: the token's CA and pool certificate, the pool key."""
        return cls(
            ca_certificate=token.ca_certificate,
            certificate=token.pool_certificate,
            private_key_pem=key.to_pem(),
        )

    def __repr__(self) -> str:
        return (
            f"TlsCredentials(subject={self.certificate.subject.rfc4514_string()!r}, "
            "private_key='********')"
        )


def build_tls_context(credentials: TlsCredentials, *, allow_tls13: bool = False) -> ssl.SSLContext:
    """A client TLS context (server name checked) with the key loaded from memory.

    TLS 1.2 only unless ``allow_tls13``: in TLS 1.3 the server judges the client certificate
    after the client's handshake has finished, so a revoked or foreign certificate shows up as
    a reset connection racing the CONNECT packet (measured: "EOF occurred in violation of
    protocol" instead of "certificate revoked"). In TLS 1.2 the refusal arrives in the
    handshake, with its alert, so the launcher can tell "refused: fix the token" (exit 78)
    from "broker unavailable: retry". ECDHE with AES-GCM or ChaCha20 only.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not allow_tls13:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(
        cadata=credentials.ca_certificate.public_bytes(serialization.Encoding.PEM).decode()
    )
    cert_pem = credentials.certificate.public_bytes(serialization.Encoding.PEM)
    fd = os.memfd_create("hl-mqtt-client", os.MFD_CLOEXEC)
    buf = bytearray()
    try:
        with credentials.private_key_pem.view() as view:
            buf = bytearray(view)
        buf.extend(b"\n")
        buf.extend(cert_pem)
        written = 0
        while written < len(buf):
            written += os.write(fd, memoryview(buf)[written:])
        try:
            context.load_cert_chain(certfile=f"/proc/self/fd/{fd}")
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(
                "the client certificate and private key cannot be loaded for TLS",
                hint="check that the pool key matches the token's pool certificate",
                reason="tls_credentials_invalid",
            ) from exc
    finally:
        wipe_bytearray(buf)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)
    return context


def is_refusal(error: str) -> bool:
    """True when a TLS or connect error text says the certificate was refused (fix the
    token), not that the other side is unavailable (retry). Shared with the poll client."""
    lowered = error.lower()
    return any(marker in lowered for marker in _REFUSAL_MARKERS)
