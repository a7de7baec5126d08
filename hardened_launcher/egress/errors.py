"""Errors of the egress gate (gate 6), each with its own stable reason slug.

A refused connection is untrusted input refused (:class:`EgressDeniedError` and its subclasses);
a bad policy file is the operator's configuration (:class:`EgressPolicyError`); a resolver or
upstream that fails is infrastructure (:class:`EgressUpstreamError`).
"""

from __future__ import annotations

from hardened_launcher.errors import ConfigurationError, InfrastructureError, UntrustedInputError

__all__ = [
    "EgressDeniedError",
    "EgressDnsError",
    "EgressHostAddressError",
    "EgressHostNotAllowedError",
    "EgressIpLiteralError",
    "EgressLimitError",
    "EgressPolicyError",
    "EgressPrivateAddressError",
    "EgressRequestError",
    "EgressSniMismatchError",
    "EgressUpstreamError",
]


class EgressPolicyError(ConfigurationError):
    """The egress policy file (``HL_EGRESS_POLICY``) is missing, unreadable or invalid."""

    default_reason = "egress_policy_invalid"


class EgressDeniedError(UntrustedInputError):
    """A run's outbound connection was refused. ``message`` names the host and port."""

    default_reason = "egress_denied"


class EgressHostNotAllowedError(EgressDeniedError):
    """The host (or port) matches no allow rule, or matches a deny rule."""

    default_reason = "egress_host_not_allowed"


class EgressPrivateAddressError(EgressDeniedError):
    """The name resolved to (or the literal is) a loopback, private, metadata… address."""

    default_reason = "egress_private_address"


class EgressHostAddressError(EgressDeniedError):
    """The destination is the launcher's own host (an address of one of its interfaces, a
    local route, or an IPv6 form embedding one) and no rule acknowledges that exact address."""

    default_reason = "egress_host_address"


class EgressIpLiteralError(EgressDeniedError):
    """The request named an IP address (in any spelling) that no CIDR rule allows."""

    default_reason = "egress_ip_literal"


class EgressSniMismatchError(EgressDeniedError):
    """The TLS ClientHello inside a CONNECT tunnel names another host, or none."""

    default_reason = "egress_sni_mismatch"


class EgressRequestError(EgressDeniedError):
    """The request to the proxy is malformed, too large or uses an unsupported form."""

    default_reason = "egress_bad_request"


class EgressLimitError(EgressDeniedError):
    """A limit of the run's proxy (concurrent tunnels) is reached."""

    default_reason = "egress_limit_reached"


class EgressDnsError(InfrastructureError):
    """The proxy could not resolve the requested name (no answer, timeout)."""

    default_reason = "egress_dns_failed"


class EgressUpstreamError(InfrastructureError):
    """The checked address did not accept the connection in time."""

    default_reason = "egress_upstream_failed"
