"""The launcher host's own addresses: destinations the egress proxy never dials on its own.

The proxy runs on the launcher's host, so an allowed destination that is one of the host's own
addresses reaches the host's services directly, past the INPUT rules that hide them from the
run's network. This module answers one question: *is this address the host itself?*

What counts as the host (:class:`HostAddressSet`):

- every address of every interface, IPv4 and IPv6, up or down (``ip -j address show``);
- every destination the kernel delivers locally or broadcasts: the ``local``, ``broadcast``
  and ``anycast`` routes of every routing table (``ip -j -4|-6 route show table all``), which
  include whole local prefixes such as ``127.0.0.0/8`` or an AnyIP ``local 10.9.0.0/24`` route;
- the whole subnet of every run network (routes via an ``hle-*`` bridge) and of Docker's own
  bridges (``docker0``, ``br-<id>``): containers of this host, which the proxy could otherwise
  dial on a run's behalf (another run, or a service the host runs in a container);
- always: ``0.0.0.0/8`` and ``::`` (a connection to them goes to the host), ``127.0.0.0/8``,
  ``::1`` and the limited broadcast ``255.255.255.255``;
- an IPv6 address that embeds one of the above IPv4 addresses in a form a stack or a gateway
  translates (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, IPv4-translated
  ``::ffff:0:a.b.c.d``, NAT64 ``64:ff9b::/96`` and every RFC 6052 layout in
  ``64:ff9b:1::/48``, 6to4 ``2002::/16``, Teredo server and client, ISATAP interface IDs).

Freshness (:class:`SystemHostAddresses`): a netlink socket subscribed to address, route and link
changes is drained before every answer; any message (or a lost one, ``ENOBUFS``) re-reads the
tables before the answer is given. An address added before a decision is therefore always part
of that decision. Without netlink (it cannot be opened), the tables are re-read when the last
reading is older than ``fallback_max_age_seconds`` (1 s). Even with netlink they are re-read
at least every ``max_age_seconds`` (60 s). A reading that fails fails closed: the caller gets
:class:`HostAddressesUnavailableError` and refuses the connection.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Protocol

from hardened_launcher.egress.classify import IPAddress, IPNetwork
from hardened_launcher.errors import InfrastructureError

__all__ = [
    "ALWAYS_LOCAL",
    "HostAddressSet",
    "HostAddresses",
    "HostAddressesUnavailableError",
    "StaticHostAddresses",
    "SystemHostAddresses",
    "embedded_ipv4",
    "system_host_addresses",
]

#: Destinations that reach the host whatever its interfaces are.
ALWAYS_LOCAL: Final[tuple[IPNetwork, ...]] = (
    ipaddress.ip_network("0.0.0.0/8"),
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("255.255.255.255/32"),
    ipaddress.ip_network("::/128"),
    ipaddress.ip_network("::1/128"),
)
#: Route types whose destination the kernel delivers to the host itself (or floods on a link).
LOCAL_ROUTE_TYPES: Final = frozenset({"local", "broadcast", "anycast"})
#: Bridges of run networks (:mod:`.isolation`): their whole subnets are the host's side of
#: other runs, so a run's proxy never dials into them (no run reaches another run).
RUN_BRIDGE_PREFIX: Final = "hle-"
#: Bridges whose subnets hold only containers of this host: run networks, Docker's default
#: bridge and its user-defined ``br-<id>`` bridges (custom bridge names are not recognised).
_CONTAINER_BRIDGE_RE: Final = re.compile(r"hle-[0-9a-f]{10}|docker0|br-[0-9a-f]{12}")
MAX_IP_OUTPUT_BYTES: Final = 16 * 1024 * 1024
IP_TIMEOUT_SECONDS: Final = 10.0

_NAT64_WKP: Final = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL: Final = ipaddress.ip_network("64:ff9b:1::/48")
_COMPAT: Final = ipaddress.ip_network("::/96")
_SIIT: Final = ipaddress.ip_network("::ffff:0:0:0/96")  # IPv4-translated (RFC 2765)
_ISATAP_IID: Final = 0x00005EFE

# netlink (linux/rtnetlink.h): multicast groups of address, route and link changes.
_RTMGRP_LINK: Final = 0x1
_RTMGRP_IPV4_IFADDR: Final = 0x10
_RTMGRP_IPV4_ROUTE: Final = 0x40
_RTMGRP_IPV6_IFADDR: Final = 0x100
_RTMGRP_IPV6_ROUTE: Final = 0x400
_NETLINK_GROUPS: Final = _RTMGRP_LINK | _RTMGRP_IPV4_IFADDR | _RTMGRP_IPV4_ROUTE
_NETLINK_GROUPS_V6: Final = _RTMGRP_IPV6_IFADDR | _RTMGRP_IPV6_ROUTE
_NETLINK_ROUTE: Final = 0


class HostAddressesUnavailableError(InfrastructureError):
    """The host's addresses could not be read; every connection is refused until they can."""

    default_reason = "egress_host_addresses_unavailable"


def embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address stands for in a translating form (mapped, compatible,
    NAT64, 6to4, Teredo server and client); empty for IPv4 and for plain IPv6."""
    if address.version == 4:
        return ()
    assert isinstance(address, ipaddress.IPv6Address)  # noqa: S101 - version checked above
    found: list[ipaddress.IPv4Address] = []
    number = int(address)
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _COMPAT:
        found.append(ipaddress.IPv4Address(number & 0xFFFFFFFF))
    if address in _NAT64_WKP:
        found.append(ipaddress.IPv4Address(number & 0xFFFFFFFF))
    if address in _NAT64_LOCAL:
        # RFC 6052 layouts of a prefix inside 64:ff9b:1::/48 (bits 64..71 are the u octet):
        # /48: bits 48..63 + 72..87; /56: 56..63 + 72..95; /64: 72..103; /96: 96..127.
        layouts = (
            (((number >> 64) & 0xFFFF) << 16) | ((number >> 40) & 0xFFFF),
            (((number >> 64) & 0xFF) << 24) | ((number >> 32) & 0xFFFFFF),
            (number >> 24) & 0xFFFFFFFF,
            number & 0xFFFFFFFF,
        )
        found.extend(ipaddress.IPv4Address(v) for v in layouts)
    if address in _SIIT:
        found.append(ipaddress.IPv4Address(number & 0xFFFFFFFF))
    if (number >> 32) & 0xFDFFFFFF == _ISATAP_IID:
        # ISATAP: any prefix, interface identifier 0000:5efe or 0200:5efe + IPv4.
        found.append(ipaddress.IPv4Address(number & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return tuple(found)


@dataclass(frozen=True, slots=True)
class HostAddressSet:
    """One reading of the host's addresses (networks: local routes can be whole prefixes)."""

    networks: tuple[IPNetwork, ...]

    @classmethod
    def of(cls, items: Iterable[IPNetwork | IPAddress | str]) -> HostAddressSet:
        networks: set[IPNetwork] = set(ALWAYS_LOCAL)
        for item in items:
            if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
                networks.add(item)
            else:
                networks.add(ipaddress.ip_network(item, strict=False))
        return cls(tuple(sorted(networks, key=lambda n: (n.version, n))))

    def _direct(self, address: IPAddress) -> bool:
        return any(n.version == address.version and address in n for n in self.networks)

    def holds(self, address: IPAddress) -> bool:
        """Whether ``address`` (or an IPv4 address it embeds) is the host."""
        return self._direct(address) or any(self._direct(v4) for v4 in embedded_ipv4(address))

    def __iter__(self) -> Iterator[IPNetwork]:
        return iter(self.networks)


class HostAddresses(Protocol):
    """Gives the current :class:`HostAddressSet` (the test seam)."""

    def snapshot(self) -> HostAddressSet:
        """The current set; may block briefly to re-read it."""
        ...

    def fresh(self) -> HostAddressSet | None:
        """The current set if it can be given without blocking, else ``None`` (then call
        :meth:`snapshot`, off the event loop)."""
        ...


class StaticHostAddresses:
    """A fixed set (tests; hosts whose addresses never change). ``ALWAYS_LOCAL`` is added."""

    def __init__(self, items: Iterable[IPNetwork | IPAddress | str] = ()) -> None:
        self._set = HostAddressSet.of(items)

    def snapshot(self) -> HostAddressSet:
        return self._set

    def fresh(self) -> HostAddressSet:
        return self._set


def _run_ip(ip: str, args: list[str]) -> object:
    try:
        done = subprocess.run(
            [ip, "-j", *args],
            capture_output=True,
            check=False,
            timeout=IP_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostAddressesUnavailableError(
            "cannot read the host's addresses", detail=f"ip {' '.join(args)}: {exc}"[:500]
        ) from None
    if done.returncode != 0 or len(done.stdout) > MAX_IP_OUTPUT_BYTES:
        raise HostAddressesUnavailableError(
            "cannot read the host's addresses",
            detail=f"ip {' '.join(args)}: {done.stderr.decode('utf-8', 'replace')[:400]}",
        )
    try:
        return json.loads(done.stdout or b"[]")
    except ValueError as exc:
        raise HostAddressesUnavailableError(
            "cannot read the host's addresses", detail=f"ip {' '.join(args)}: {exc}"[:500]
        ) from None


def _network(text: str) -> IPNetwork | None:
    """``ip``'s spelling of an address or prefix (``default``: none; a zone is dropped)."""
    if text == "default":
        return None
    return ipaddress.ip_network(text.split("%", 1)[0], strict=False)


def read_host_addresses(ip: str) -> HostAddressSet:
    """Read interface addresses and local/broadcast/anycast routes of every table."""
    items: list[IPNetwork] = []
    try:
        links = _run_ip(ip, ["address", "show"])
        for link in links if isinstance(links, list) else []:
            for info in link.get("addr_info", []) if isinstance(link, dict) else []:
                for key in ("local", "address", "broadcast"):
                    value = info.get(key) if isinstance(info, dict) else None
                    if isinstance(value, str):
                        net = _network(value)
                        if net is not None and net.num_addresses == 1:
                            items.append(net)
        for family in ("-4", "-6"):
            routes = _run_ip(ip, [family, "route", "show", "table", "all"])
            for route in routes if isinstance(routes, list) else []:
                if not isinstance(route, dict):
                    continue
                container_side = _CONTAINER_BRIDGE_RE.fullmatch(str(route.get("dev", "")))
                if route.get("type") not in LOCAL_ROUTE_TYPES and not container_side:
                    continue
                dst = route.get("dst")
                if isinstance(dst, str):
                    net = _network(dst)
                    if net is not None:
                        items.append(net)
    except (ValueError, AttributeError, TypeError) as exc:
        raise HostAddressesUnavailableError(
            "cannot read the host's addresses", detail=f"unexpected ip output: {exc}"[:500]
        ) from None
    return HostAddressSet.of(items)


class SystemHostAddresses:
    """The host's addresses, re-read whenever netlink reports a change (see the module doc)."""

    def __init__(
        self,
        *,
        max_age_seconds: float = 60.0,
        fallback_max_age_seconds: float = 1.0,
        use_netlink: bool = True,
    ) -> None:
        self._lock = threading.Lock()
        self._ip = shutil.which("ip")
        self._set: HostAddressSet | None = None
        self._dirty = False
        self._read_at = 0.0
        self._sock: socket.socket | None = self._open_netlink() if use_netlink else None
        self._fallback_max_age = fallback_max_age_seconds
        self._max_age = max_age_seconds if self._sock is not None else fallback_max_age_seconds
        self.reads = 0

    @property
    def watching(self) -> bool:
        """Whether changes are seen through netlink (else the periodic fallback is used)."""
        return self._sock is not None

    @staticmethod
    def _open_netlink() -> socket.socket | None:
        family = getattr(socket, "AF_NETLINK", None)
        if family is None:
            return None
        try:
            sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_NONBLOCK, _NETLINK_ROUTE)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((0, _NETLINK_GROUPS | _NETLINK_GROUPS_V6))
        except OSError:
            return None
        return sock

    def _changed(self) -> bool:
        """Drain pending netlink messages; True if there was any (or some were lost)."""
        if self._sock is None:
            return False
        changed = False
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return changed
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # messages were lost: re-read to be sure
                    changed = True
                    continue
                self._sock.close()
                self._sock = None
                self._max_age = self._fallback_max_age  # no more change reports: poll
                return True
            if not data:
                return changed
            changed = True

    def fresh(self) -> HostAddressSet | None:
        if not self._lock.acquire(blocking=False):
            return None  # a re-read is under way
        try:
            if self._changed():
                self._dirty = True
            if self._dirty or self._set is None or self._stale():
                return None
            return self._set
        finally:
            self._lock.release()

    def _stale(self) -> bool:
        return time.monotonic() - self._read_at >= self._max_age

    def snapshot(self) -> HostAddressSet:
        with self._lock:
            changed = self._changed() or self._dirty
            if self._set is None or changed or self._stale():
                if self._ip is None:
                    raise HostAddressesUnavailableError(
                        "cannot read the host's addresses: the ip command (iproute2) is missing",
                        hint="install iproute2 on the launcher's host",
                    )
                # Read after draining: a change during the read leaves a message for next time.
                self._set = read_host_addresses(self._ip)
                self._dirty = False
                self._read_at = time.monotonic()
                self.reads += 1
            return self._set

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


_shared: SystemHostAddresses | None = None
_shared_lock = threading.Lock()


def system_host_addresses() -> SystemHostAddresses:
    """One watcher per process, shared by every run's proxy."""
    global _shared  # noqa: PLW0603 - one netlink socket per process
    with _shared_lock:
        if _shared is None:
            _shared = SystemHostAddresses()
        return _shared
