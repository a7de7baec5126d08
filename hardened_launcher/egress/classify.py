"""Address classification and host parsing for the egress gate. Pure: no I/O, no DNS.

Two questions are answered here:

- :func:`parse_host`: is the host a request names a DNS name or an IP address, in any spelling?
  Names are IDNA-normalised (lower case, punycode, no trailing dot). IPv4 addresses in the
  spellings ``inet_aton`` accepts (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``) are
  recognised as addresses and flagged as non-canonical, so they can be refused instead of being
  mistaken for names or parsed differently by another component.
- :func:`builtin_denial`: is an address outside global unicast? It names the built-in range
  (loopback, private, CGNAT, link-local, cloud metadata, multicast, IPv6 forms that embed IPv4…)
  that a connection to it would be refused for, unless an explicit CIDR rule names that range.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "BUILTIN_DENIED",
    "HostSyntaxError",
    "IPAddress",
    "IPNetwork",
    "ParsedHost",
    "builtin_denial",
    "normalise_name",
    "parse_host",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_NAME_CHARS: Final = 253
_LABEL_RE: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_PART_RE: Final = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")
_CANONICAL_V4_RE: Final = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")


def _net(text: str) -> IPNetwork:
    return ipaddress.ip_network(text)


#: Built-in denied ranges, most specific first: (network, category). Categories are stable
#: names that appear in refusal messages and audit records.
BUILTIN_DENIED: Final[tuple[tuple[IPNetwork, str], ...]] = (
    (_net("169.254.169.254/32"), "metadata"),
    (_net("fd00:ec2::254/128"), "metadata"),
    (_net("0.0.0.0/8"), "unspecified"),
    (_net("10.0.0.0/8"), "private"),
    (_net("100.64.0.0/10"), "cgnat"),
    (_net("127.0.0.0/8"), "loopback"),
    (_net("169.254.0.0/16"), "link_local"),
    (_net("172.16.0.0/12"), "private"),
    (_net("192.0.0.0/24"), "reserved"),
    (_net("192.0.2.0/24"), "documentation"),
    (_net("192.88.99.0/24"), "6to4_relay"),
    (_net("192.168.0.0/16"), "private"),
    (_net("198.18.0.0/15"), "benchmarking"),
    (_net("198.51.100.0/24"), "documentation"),
    (_net("203.0.113.0/24"), "documentation"),
    (_net("224.0.0.0/4"), "multicast"),
    (_net("255.255.255.255/32"), "broadcast"),
    (_net("240.0.0.0/4"), "reserved"),
    (_net("::/128"), "unspecified"),
    (_net("::1/128"), "loopback"),
    (_net("::ffff:0:0/96"), "ipv4_mapped"),
    (_net("::ffff:0:0:0/96"), "ipv4_translated"),
    (_net("::/96"), "ipv4_compatible"),
    (_net("64:ff9b::/96"), "nat64"),
    (_net("64:ff9b:1::/48"), "nat64"),
    (_net("100::/64"), "discard"),
    (_net("2001::/32"), "teredo"),
    (_net("2001:db8::/32"), "documentation"),
    (_net("2002::/16"), "6to4"),
    (_net("fc00::/7"), "private"),
    (_net("fe80::/10"), "link_local"),
    (_net("fec0::/10"), "site_local"),
    (_net("ff00::/8"), "multicast"),
)


def builtin_denial(address: IPAddress) -> tuple[IPNetwork, str] | None:
    """The built-in range that denies ``address`` and its category, or ``None`` when the address
    is global unicast. Anything the standard library does not call global is denied too
    (category ``reserved``), so a new IANA special-purpose block fails closed."""
    for network, category in BUILTIN_DENIED:
        if address.version == network.version and address in network:
            return network, category
    if not address.is_global or address.is_multicast:
        prefix = 32 if address.version == 4 else 128
        return ipaddress.ip_network(f"{address}/{prefix}"), "reserved"
    return None


class HostSyntaxError(ValueError):
    """The text is neither a valid DNS name nor an IP address."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedHost:
    """A host from a request: a normalised ``name``, or an ``address``.

    ``canonical`` is false for IPv4 spellings other than dotted-quad decimal and for IPv6
    literals that are not in the compressed form; such hosts are never allowed.
    """

    text: str
    name: str | None = None
    address: IPAddress | None = None
    canonical: bool = True

    @property
    def is_address(self) -> bool:
        return self.address is not None


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """What ``inet_aton`` would make of ``text`` (1 to 4 parts, decimal/octal/hex), or None."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMERIC_PART_RE.fullmatch(p) for p in parts):
        return None
    values: list[int] = []
    for part in parts:
        if part[:2] in ("0x", "0X"):
            values.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part.startswith("0"):
            if any(c in "89" for c in part):
                return None
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for value in head:
        number = (number << 8) | value
    number = (number << (8 * (4 - len(head)))) | last
    return ipaddress.IPv4Address(number)


def normalise_name(text: str) -> str:
    """A DNS name in its one comparable form: lower case, IDNA (punycode), no trailing dot.

    Raises :class:`HostSyntaxError` for anything that is not a valid name (empty labels, bad
    characters, over 253 characters, an all-numeric last label).
    """
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > MAX_NAME_CHARS * 4:
        raise HostSyntaxError("empty or too long")
    try:
        labels = [
            label.encode("idna").decode("ascii") if not label.isascii() else label
            for label in name.lower().split(".")
        ]
    except UnicodeError as exc:
        raise HostSyntaxError("not a valid internationalised name") from exc
    ascii_name = ".".join(labels).lower()
    if len(ascii_name) > MAX_NAME_CHARS:
        raise HostSyntaxError("longer than 253 characters")
    for label in ascii_name.split("."):
        if not _LABEL_RE.fullmatch(label):
            raise HostSyntaxError("has an empty or invalid label")
    if _NUMERIC_PART_RE.fullmatch(ascii_name.rsplit(".", 1)[-1]):
        # WHATWG URL parsers treat a numeric last label as IPv4; never treat it as a name.
        raise HostSyntaxError("ends in a numeric label")
    return ascii_name


def parse_host(text: str) -> ParsedHost:
    """Classify the host part of a request (brackets around IPv6 literals are accepted)."""
    if not text or len(text) > MAX_NAME_CHARS * 4:
        raise HostSyntaxError("empty or too long")
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        if "%" in inner:
            raise HostSyntaxError("IPv6 zone identifiers are not accepted")
        try:
            v6 = ipaddress.IPv6Address(inner)
        except ValueError as exc:
            raise HostSyntaxError("not an IPv6 address") from exc
        return ParsedHost(text=text, address=v6, canonical=inner.lower() == v6.compressed)
    if ":" in text:
        try:
            v6 = ipaddress.IPv6Address(text)
        except ValueError as exc:
            raise HostSyntaxError("not an IPv6 address") from exc
        return ParsedHost(text=text, address=v6, canonical=False)
    v4 = _inet_aton(text.removesuffix("."))
    if v4 is not None:
        return ParsedHost(text=text, address=v4, canonical=bool(_CANONICAL_V4_RE.fullmatch(text)))
    return ParsedHost(text=text, name=normalise_name(text))
