"""The egress decision, in two pure steps around name resolution.

1. :func:`check_target` judges the requested host and port before anything is resolved: deny
   rules, then allow rules; IP literals only through CIDR rules, and only in canonical spelling.
   A refused name is never resolved, so a denied request causes no DNS query either.
2. :func:`check_addresses` judges every address the name resolved to: the proxy's own
   addresses, deny CIDRs, and the built-in denied ranges (unless an allow CIDR rule inside that
   range names the address, or the host rule is ``private`` and the range is private-use), and
   last the launcher host's own addresses (:mod:`.host_addresses`), which no range or name
   lifts: only an allow rule naming that exact address with ``allow_host_address: true`` does.
   It returns the address to dial, so the connection goes to exactly what was checked.

Every level of a narrowed policy must allow; a deny on any level wins.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

from hardened_launcher.egress.classify import (
    HostSyntaxError,
    IPAddress,
    builtin_denial,
    parse_host,
)
from hardened_launcher.egress.errors import (
    EgressDeniedError,
    EgressDnsError,
    EgressHostAddressError,
    EgressHostNotAllowedError,
    EgressIpLiteralError,
    EgressPrivateAddressError,
    EgressRequestError,
)
from hardened_launcher.egress.host_addresses import HostAddressSet
from hardened_launcher.egress.policy import EgressPolicy, HostRule

__all__ = [
    "PRIVATE_USE_CATEGORIES",
    "Target",
    "check_addresses",
    "check_target",
    "host_address_acknowledged",
]

#: Built-in categories a ``private: true`` host rule may resolve into.
PRIVATE_USE_CATEGORIES: Final = frozenset({"private", "cgnat"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """A requested host that passed :func:`check_target`: a normalised ``name`` to resolve, or
    an ``address`` (a canonical IP literal that a CIDR rule allows)."""

    host: str
    port: int
    name: str | None = None
    address: IPAddress | None = None


def _hostport(host: str, port: int) -> str:
    return f"{host}:{port}"


def _lifted(policy: EgressPolicy, address: IPAddress, port: int) -> bool:
    """Whether an allow CIDR rule of ``policy`` names ``address``'s built-in range explicitly:
    it holds the address and lies inside that range (a broad ``0.0.0.0/0`` does not)."""
    denial = builtin_denial(address)
    if denial is None:
        return True
    denied_net, _ = denial
    for rule in policy.allow_cidrs:
        net = rule.network
        if (
            net.version == address.version
            and address in net
            and rule.covers_port(port)
            and net.subnet_of(denied_net)  # type: ignore[arg-type]
        ):
            return True
    return False


def check_target(policy: EgressPolicy, host_text: str, port: int) -> Target:
    """Judge ``host_text:port`` before resolution; raise an :class:`EgressDeniedError` or return
    the :class:`Target` to resolve or dial."""
    if not 1 <= port <= 65535:
        raise EgressRequestError(f"refused {host_text!r}: port {port} is out of range")
    try:
        parsed = parse_host(host_text)
    except HostSyntaxError as exc:
        raise EgressRequestError(
            f"refused {host_text[:100]!r}:{port}: the host is not a valid name or address ({exc})"
        ) from None
    if parsed.address is not None:
        shown = _hostport(host_text, port)
        if not parsed.canonical:
            raise EgressIpLiteralError(
                f"refused {shown}: an IP address in a non-canonical spelling "
                f"(it means {parsed.address}); such spellings are never allowed",
                hint="use a host name on the egress allowlist",
            )
        address = parsed.address
        for level in policy.levels:
            if any(address in r.network and r.covers_port(port) for r in level.deny_cidrs):
                raise EgressHostNotAllowedError(
                    f"refused {shown}: the address is in a denied network",
                    reason="egress_address_denied",
                )
            if not any(
                r.network.version == address.version
                and address in r.network
                and r.covers_port(port)
                for r in level.allow_cidrs
            ):
                raise EgressIpLiteralError(
                    f"refused {shown}: IP addresses are reachable only through a cidr allow rule",
                    hint="use a host name on the egress allowlist",
                )
            if not _lifted(level, address, port):
                denial = builtin_denial(address)
                category = denial[1] if denial else "reserved"
                raise EgressPrivateAddressError(
                    f"refused {shown}: {address} is a {category} address",
                    detail=f"category={category}",
                )
        return Target(host=str(address), port=port, address=address)
    name = parsed.name
    assert name is not None  # noqa: S101 - parse_host returns a name or an address
    shown = _hostport(name, port)
    for level in policy.levels:
        if any(r.matches(name, port) for r in level.deny_hosts):
            raise EgressHostNotAllowedError(f"refused {shown}: the host matches a deny rule")
        if not any(r.matches(name, port) for r in level.allow_hosts):
            raise EgressHostNotAllowedError(
                f"refused {shown}: the host and port are not on the egress allowlist",
                hint="add the host to the pool's egress policy (HL_EGRESS_POLICY)",
            )
    return Target(host=name, port=port, name=name)


def _host_rule(policy: EgressPolicy, name: str, port: int) -> HostRule | None:
    return next((r for r in policy.allow_hosts if r.matches(name, port)), None)


def host_address_acknowledged(policy: EgressPolicy, address: IPAddress, port: int) -> bool:
    """Whether every level has an allow rule that names exactly ``address`` (and ``port``) with
    ``allow_host_address: true``."""
    return all(
        any(
            r.host_address and r.network.network_address == address and r.covers_port(port)
            for r in level.allow_cidrs
        )
        for level in policy.levels
    )


def _check_not_host(
    policy: EgressPolicy,
    address: IPAddress,
    port: int,
    host_addresses: HostAddressSet | None,
    shown: str,
    how: str,
) -> None:
    if host_addresses is None or not host_addresses.holds(address):
        return
    if host_address_acknowledged(policy, address, port):
        return
    raise EgressHostAddressError(
        f"refused {shown}: {how} {address}, an address of the launcher's own host",
        hint="a rule must name that exact address with allow_host_address: true",
    )


def check_addresses(
    policy: EgressPolicy,
    target: Target,
    addresses: Sequence[IPAddress],
    *,
    self_addresses: Collection[IPAddress] = (),
    host_addresses: HostAddressSet | None = None,
) -> IPAddress:
    """Judge every resolved address of ``target``; return the one to dial (the first).

    All answers must pass, not just the one dialled: a name that resolves to a private address
    among public ones is refused as a whole. ``host_addresses`` (the launcher host's own
    addresses) are refused last, whatever range or name allowed them.
    """
    if target.address is not None:
        shown = _hostport(target.host, target.port)
        if target.address in self_addresses:
            raise EgressPrivateAddressError(f"refused {shown}: that is the proxy itself")
        _check_not_host(policy, target.address, target.port, host_addresses, shown, "that is")
        return target.address
    name = target.name
    assert name is not None  # noqa: S101 - a Target has a name or an address
    shown = _hostport(name, target.port)
    if not addresses:
        raise EgressDnsError(f"refused {shown}: the name has no addresses")
    for address in addresses:
        if address in self_addresses:
            raise EgressPrivateAddressError(
                f"refused {shown}: the name resolves to the proxy's own address {address}"
            )
        for level in policy.levels:
            if any(address in r.network and r.covers_port(target.port) for r in level.deny_cidrs):
                raise EgressHostNotAllowedError(
                    f"refused {shown}: the name resolves to {address}, in a denied network",
                    reason="egress_address_denied",
                )
            denial = builtin_denial(address)
            if denial is None or _lifted(level, address, target.port):
                continue
            rule = _host_rule(level, name, target.port)
            if rule is not None and rule.private and denial[1] in PRIVATE_USE_CATEGORIES:
                continue
            raise EgressPrivateAddressError(
                f"refused {shown}: the name resolves to {address}, a {denial[1]} address",
                detail=f"category={denial[1]}",
            )
        _check_not_host(policy, address, target.port, host_addresses, shown, "the name resolves to")
    return addresses[0]


def deny_reason(error: EgressDeniedError) -> str:
    """The reason slug of a refusal (for callers that only hold the base type)."""
    return error.reason
