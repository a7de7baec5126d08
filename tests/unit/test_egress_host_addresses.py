"""The launcher host's own addresses are never an egress destination (issue 11, egress part).

Pure tests of the matcher and the policy syntax, and proxy tests with a fake resolver, a fake
connector and a fixed set of host addresses (:class:`StaticHostAddresses`): nothing is dialled.
The host here is 10.20.0.5 (inside an allowed 10.20.0.0/16), 192.0.2.2, 2001:db8:5::7 and
fd12:3456::9 (each inside an allowed range), plus the built-in ``ALWAYS_LOCAL`` ranges.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardened_launcher.audit import Outcome
from hardened_launcher.egress.errors import (
    EgressDeniedError,
    EgressHostAddressError,
    EgressPolicyError,
)
from hardened_launcher.egress.host_addresses import (
    HostAddressesUnavailableError,
    HostAddressSet,
    StaticHostAddresses,
    SystemHostAddresses,
    embedded_ipv4,
    read_host_addresses,
)
from hardened_launcher.egress.matcher import check_addresses, check_target
from hardened_launcher.egress.policy import EgressPolicy, parse_policy, parse_policy_text
from hardened_launcher.egress.proxy import EgressProxy
from tests.unit.test_egress_proxy import FakeConnector, FakeResolver, exchange

ip = ipaddress.ip_address
UNSPECIFIED = str(ipaddress.IPv4Address(0))  # spelled out, so no linter takes it for a bind

HOST_V4 = "10.20.0.5"
HOST = StaticHostAddresses(
    [HOST_V4, "192.0.2.2", "2001:db8:5::7", "fd12:3456::9", "10.20.255.255", "10.99.0.0/24"]
)
WIDE = parse_policy(
    {
        "allow": [
            {"cidr": "10.0.0.0/8", "ports": [443, 8443]},
            {"cidr": "192.0.2.0/24", "ports": [443]},
            {"cidr": "2001:db8::/32", "ports": [443]},
            {"cidr": "fd00::/8", "ports": [443]},
            {"cidr": "::ffff:0:0/96", "ports": [443]},
            {"cidr": "::/96", "ports": [443]},
            {"cidr": "::ffff:0:0:0/96", "ports": [443]},
            {"cidr": "64:ff9b::/96", "ports": [443]},
            {"cidr": "64:ff9b:1::/48", "ports": [443]},
            {"cidr": "2002::/16", "ports": [443]},
            {"cidr": "2001::/32", "ports": [443]},
            {"cidr": "127.0.0.0/8", "ports": [443]},
            {"cidr": "0.0.0.0/8", "ports": [443]},
            {"cidr": "::1/128", "ports": [443]},
            {"host": "vcs.corp.test", "ports": [443, 8443], "private": True},
            {"host": "*.corp.test", "ports": [443], "private": True},
        ]
    }
)


def v4_spellings(v4: str) -> list[str]:
    """Every IPv6 form that stands for ``v4`` through a translating stack or gateway."""
    n = int(ipaddress.IPv4Address(v4))
    hi, lo = n >> 16, n & 0xFFFF
    return [
        f"::ffff:{v4}",
        f"::{v4}",
        f"64:ff9b::{v4}",
        f"64:ff9b:1:{hi:x}:{(lo >> 8):x}:{(lo & 0xFF) << 8:x}::",  # RFC 6052 /48 layout
        f"64:ff9b:1::{v4}",
        f"64:ff9b:1:{n >> 24:x}:{(n >> 16) & 0xFF:x}:{n & 0xFFFF:x}::",  # /56 layout
        f"64:ff9b:1:0:{n >> 24:x}:{(n >> 8) & 0xFFFF:x}:{(n & 0xFF) << 8:x}:0",  # /64 layout
        f"::ffff:0:{v4}",  # IPv4-translated
        f"2001:db8:1:2:0:5efe:{v4}",  # ISATAP
        f"2001:db8:1:2:200:5efe:{v4}",
        f"2002:{hi:x}:{lo:x}::1",
        # Teredo: server is the 32 bits after 2001:0000, client is the last 32 bits inverted.
        f"2001:0:{hi:x}:{lo:x}::ffff:ffff",
        f"2001:0:4136:e378:8000:63bf:{(~hi) & 0xFFFF:x}:{(~lo) & 0xFFFF:x}",
    ]


def _literal(policy: EgressPolicy, host: str, port: int = 443) -> object:
    target = check_target(policy, host, port)
    return check_addresses(policy, target, [], self_addresses=(), host_addresses=HOST.snapshot())


def _named(policy: EgressPolicy, answers: list[str], port: int = 443) -> object:
    target = check_target(policy, "vcs.corp.test", port)
    return check_addresses(policy, target, [ip(a) for a in answers], host_addresses=HOST.snapshot())


# ---------------------------------------------------------------------------------------------
# The set and the embedded forms
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("v4", [HOST_V4, "192.0.2.2", "127.0.0.1", UNSPECIFIED, "10.99.0.200"])
def test_every_ipv6_spelling_of_a_host_address_is_the_host(v4: str) -> None:
    held = HOST.snapshot()
    for text in v4_spellings(v4):
        address = ip(text)
        assert ipaddress.IPv4Address(v4) in embedded_ipv4(address), text
        assert held.holds(address), text


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_embedded_forms_round_trip_any_ipv4(number: int) -> None:
    v4 = str(ipaddress.IPv4Address(number))
    held = HostAddressSet.of([v4])
    for text in v4_spellings(v4):
        assert held.holds(ip(text)), text


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_a_plain_ipv6_address_embeds_nothing_unless_in_a_translating_range(number: int) -> None:
    address = ipaddress.IPv6Address(number)
    translating = [
        ipaddress.ip_network(n)
        for n in ("::ffff:0:0/96", "::/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16")
    ] + [ipaddress.ip_network("2001::/32")]
    if not any(address in n for n in translating):
        assert embedded_ipv4(address) == ()


def test_always_local_covers_unspecified_and_loopback_whatever_the_interfaces() -> None:
    held = StaticHostAddresses().snapshot()
    for text in (UNSPECIFIED, "0.1.2.3", "127.0.0.1", "127.255.255.254", "::", "::1"):
        assert held.holds(ip(text)), text
    assert not held.holds(ip("8.8.8.8"))
    assert not held.holds(ip("2606:4700::1111"))


# ---------------------------------------------------------------------------------------------
# The matcher: no range, name or spelling reaches the host
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "host",
    [
        HOST_V4,
        "10.20.255.255",  # the broadcast address of a host subnet
        "10.99.0.17",  # inside a local route (AnyIP) prefix
        "192.0.2.2",
        "[2001:db8:5::7]",
        "[fd12:3456::9]",
        "127.0.0.1",
        UNSPECIFIED,
        "[::1]",
        *(f"[{ipaddress.IPv6Address(t).compressed}]" for t in v4_spellings(HOST_V4)),
        *(f"[{ipaddress.IPv6Address(t).compressed}]" for t in v4_spellings("192.0.2.2")),
    ],
)
def test_a_host_address_inside_an_allowed_cidr_is_refused(host: str) -> None:
    address = ip(host.strip("[]"))
    # The wide ranges, and even a rule naming exactly this address (which lifts any built-in
    # denial), without the acknowledgement: only the host check is left to refuse it.
    exact = {"cidr": f"{address}/{address.max_prefixlen}", "ports": [443]}
    for policy in (WIDE, parse_policy({"allow": [exact]})):
        with pytest.raises(EgressHostAddressError) as caught:
            _literal(policy, host)
        assert caught.value.reason == "egress_host_address"
        assert "launcher's own host" in caught.value.message


@pytest.mark.parametrize("host", ["10.20.0.6", "192.0.2.3", "[2001:db8:5::8]", "[::ffff:a14:6]"])
def test_a_neighbour_of_the_host_in_the_same_range_is_still_allowed(host: str) -> None:
    assert _literal(WIDE, host) is not None


@pytest.mark.parametrize(
    "answers",
    [
        [HOST_V4],
        ["10.20.0.6", HOST_V4],  # one bad answer among good ones refuses the whole name
        ["10.99.0.1"],
        ["fd12:3456::9"],
        [f"::ffff:{HOST_V4}"],
        [f"64:ff9b::{HOST_V4}"],
    ],
)
def test_a_name_resolving_to_the_host_is_refused(answers: list[str]) -> None:
    policy = parse_policy(
        {
            "allow": [
                {"host": "vcs.corp.test", "ports": [443], "private": True},
                # Lift the built-in IPv6 translating ranges too: the host check still holds.
                *({"cidr": c} for c in ("::ffff:0:0/96", "64:ff9b::/96")),
            ]
        }
    )
    with pytest.raises(EgressHostAddressError):
        _named(policy, answers)


def test_a_name_resolving_to_a_private_neighbour_is_allowed() -> None:
    policy = parse_policy({"allow": [{"host": "vcs.corp.test", "private": True}]})
    assert _named(policy, ["10.20.0.6"]) == ip("10.20.0.6")


# ---------------------------------------------------------------------------------------------
# The acknowledgement: one exact address, every level, the port
# ---------------------------------------------------------------------------------------------
ACK = parse_policy(
    {
        "allow": [
            {"cidr": "10.0.0.0/8", "ports": [443, 8443]},
            {"cidr": f"{HOST_V4}/32", "ports": [8443], "allow_host_address": True},
            {"host": "vcs.corp.test", "ports": [8443], "private": True},
        ]
    }
)


def test_an_acknowledged_exact_address_is_reachable_on_its_ports_only() -> None:
    assert _literal(ACK, HOST_V4, 8443) == ip(HOST_V4)
    assert _named(ACK, [HOST_V4], 8443) == ip(HOST_V4)
    with pytest.raises(EgressHostAddressError):
        _literal(ACK, HOST_V4, 443)  # the wide rule covers 443; the acknowledgement does not
    with pytest.raises(EgressHostAddressError):
        _literal(ACK, "10.20.255.255", 8443)  # another host address
    wider = parse_policy(
        {
            "allow": [
                {"cidr": "::ffff:0:0/96", "ports": [8443]},
                {"cidr": f"{HOST_V4}/32", "ports": [8443], "allow_host_address": True},
            ]
        }
    )
    with pytest.raises(EgressHostAddressError):
        _literal(wider, "[::ffff:a14:5]", 8443)  # another spelling is another address


def test_a_run_policy_must_acknowledge_too() -> None:
    run = parse_policy({"allow": [{"cidr": "10.20.0.0/16", "ports": [8443]}]})
    with pytest.raises(EgressHostAddressError):
        _literal(ACK.narrowed(run), HOST_V4, 8443)
    run_ack = parse_policy(
        {"allow": [{"cidr": f"{HOST_V4}/32", "ports": [443, 8443], "allow_host_address": True}]}
    )
    assert _literal(ACK.narrowed(run_ack), HOST_V4, 8443) == ip(HOST_V4)
    # A run cannot acknowledge what the pool does not.
    with pytest.raises(EgressHostAddressError):
        _literal(WIDE.narrowed(run_ack), HOST_V4, 443)
    assert ACK.narrowed(run_ack).acknowledged_host_addresses == (
        ipaddress.ip_network(f"{HOST_V4}/32"),
    )


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        ({"cidr": "10.20.0.0/16", "allow_host_address": True}, "names one address"),
        ({"cidr": "10.20.0.4/31", "allow_host_address": True}, "names one address"),
        ({"cidr": "::/0", "allow_host_address": True}, "names one address"),
        ({"host": "vcs.corp.test", "allow_host_address": True}, "cidr only"),
        ({"cidr": "10.20.0.5/32", "allow_host_address": "yes"}, "true or false"),
        ({"cidr": "10.20.0.5/32", "allow_host_address": 1}, "true or false"),
        ({"cidr": "10.20.0.5/32", "allow_host_address": None}, "true or false"),
    ],
)
def test_acknowledgement_syntax_is_strict(rule: dict[str, object], why: str) -> None:
    with pytest.raises(EgressPolicyError) as caught:
        parse_policy({"allow": [rule]}, source="p.yaml")
    assert why in caught.value.message
    assert "allow[0]" in caught.value.message


def test_acknowledgement_is_refused_on_a_deny_rule() -> None:
    with pytest.raises(EgressPolicyError, match="allow rules with a cidr only"):
        parse_policy({"deny": [{"cidr": "10.20.0.5/32", "allow_host_address": True}]})


def test_acknowledgement_in_yaml_and_toml() -> None:
    yaml_policy = parse_policy_text(
        "allow:\n  - cidr: 10.20.0.5/32\n    allow_host_address: true\n", toml=False
    )
    toml_policy = parse_policy_text(
        '[[allow]]\ncidr = "10.20.0.5/32"\nallow_host_address = true\n', toml=True
    )
    assert yaml_policy.allow_cidrs == toml_policy.allow_cidrs
    assert yaml_policy.allow_cidrs[0].host_address


# ---------------------------------------------------------------------------------------------
# The proxy: refusal before any dial, audit and run log, fail closed
# ---------------------------------------------------------------------------------------------
def _proxy(
    policy: EgressPolicy, answers: dict[str, list[list[str]]], host_addresses: object = HOST
) -> tuple[EgressProxy, FakeResolver, FakeConnector, list[object]]:
    resolver, connector = FakeResolver(answers), FakeConnector()
    decisions: list[object] = []
    proxy = EgressProxy(
        policy,
        run_id="run-h",
        resolver=resolver,
        connector=connector,
        on_decision=decisions.append,
        host_addresses=host_addresses,  # type: ignore[arg-type]
    )
    return proxy, resolver, connector, decisions


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET http://10.20.0.5:8443/ HTTP/1.1",
        b"CONNECT 10.20.0.5:443 HTTP/1.1",
        b"GET http://[::ffff:a14:5]/ HTTP/1.1",
        b"GET http://vcs.corp.test:8443/ HTTP/1.1",
        b"CONNECT api.corp.test:443 HTTP/1.1",
    ],
)
def test_proxy_refuses_the_host_before_dialling(request_line: bytes) -> None:
    policy = parse_policy(
        {
            "allow": [
                {"cidr": "10.0.0.0/8", "ports": [80, 443, 8443]},
                {"cidr": "::ffff:0:0/96", "ports": [80]},
                {"host": "vcs.corp.test", "ports": [8443], "private": True},
                {"host": "*.corp.test", "ports": [443], "private": True},
            ]
        }
    )
    answers = {"vcs.corp.test": [[HOST_V4]], "api.corp.test": [["10.20.0.6", "10.99.0.3"]]}
    proxy, _resolver, connector, decisions = _proxy(policy, answers)
    response = asyncio.run(exchange(proxy, request_line + b"\r\n\r\n"))
    assert response.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"X-Egress-Reason: egress_host_address" in response
    assert connector.dialled == []
    (decision,) = decisions
    assert decision.outcome is Outcome.DENY  # type: ignore[attr-defined]


def test_proxy_records_an_acknowledged_host_connection() -> None:
    proxy, _r, connector, decisions = _proxy(ACK, {"vcs.corp.test": [[HOST_V4]]})
    response = asyncio.run(exchange(proxy, b"GET http://vcs.corp.test:8443/ HTTP/1.1\r\n\r\n"))
    assert response.endswith(b"hello")
    assert connector.dialled == [(HOST_V4, 8443)]
    (decision,) = decisions
    event = decision.to_audit_event()  # type: ignore[attr-defined]
    assert event.fields["host_address"] is True
    assert "the launcher's host, acknowledged" in decision.log_line()  # type: ignore[attr-defined]


def test_an_ordinary_connection_is_not_marked_as_host() -> None:
    proxy, _r, _c, decisions = _proxy(ACK, {"vcs.corp.test": [["10.20.0.6"]]})
    asyncio.run(exchange(proxy, b"GET http://vcs.corp.test:8443/ HTTP/1.1\r\n\r\n"))
    assert decisions[0].to_audit_event().fields["host_address"] is False  # type: ignore[attr-defined]


class _Changing:
    """Host addresses that change between two readings (an address taken mid-connection)."""

    def __init__(self) -> None:
        self.readings = 0

    def snapshot(self) -> HostAddressSet:
        self.readings += 1
        return HostAddressSet.of([] if self.readings == 1 else ["198.18.7.10"])

    def fresh(self) -> None:
        return None


def test_an_address_the_host_takes_while_connecting_gets_no_byte() -> None:
    policy = parse_policy({"allow": [{"cidr": "198.18.7.0/24", "ports": [80]}]})
    changing = _Changing()
    proxy, _r, connector, decisions = _proxy(policy, {}, changing)

    async def exchange_and_settle() -> bytes:
        response = await exchange(proxy, b"GET http://198.18.7.10/ HTTP/1.1\r\n\r\n")
        await connector.settle()  # the upstream's read of the close can lag the client's
        return response

    response = asyncio.run(exchange_and_settle())
    assert connector.dialled == [("198.18.7.10", 80)]
    assert connector.received == [b""]  # the upstream saw the connection close, no request
    assert b"egress_host_address" in response
    assert decisions[0].reason == "egress_host_address"  # type: ignore[attr-defined]
    assert changing.readings == 2


class _Broken:
    def snapshot(self) -> HostAddressSet:
        raise HostAddressesUnavailableError("cannot read the host's addresses")

    def fresh(self) -> None:
        return None


def test_unreadable_host_addresses_fail_closed() -> None:
    policy = parse_policy({"allow": [{"cidr": "198.18.7.0/24", "ports": [80]}]})
    proxy, _r, connector, decisions = _proxy(policy, {}, _Broken())
    response = asyncio.run(exchange(proxy, b"GET http://198.18.7.10/ HTTP/1.1\r\n\r\n"))
    assert response.startswith(b"HTTP/1.1 502 Bad Gateway")
    assert b"egress_host_addresses_unavailable" in response
    assert connector.dialled == []
    assert decisions[0].outcome is Outcome.ERROR  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Reading the host (the real `ip`, and a fake one for hostile output)
# ---------------------------------------------------------------------------------------------
def test_the_real_host_reading_holds_loopback_and_every_interface_address() -> None:
    import shutil  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    ip_cmd = shutil.which("ip")
    if ip_cmd is None:
        pytest.skip("iproute2 is not installed")
    held = read_host_addresses(ip_cmd)
    links = json.loads(
        subprocess.run([ip_cmd, "-j", "address"], capture_output=True, check=True).stdout
    )
    for link in links:
        for info in link.get("addr_info", []):
            assert held.holds(ip(info["local"].split("%")[0])), info
    assert held.holds(ip("127.0.0.1"))


def _fake_ip(tmp_path: Path, output: str, rc: int = 0) -> str:
    script = tmp_path / "ip"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {rc}\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.mark.parametrize(
    ("output", "rc"),
    [
        ("not json", 0),
        ('[{"addr_info": [{"local": "not an address"}]}]', 0),
        ("[]", 1),
    ],
)
def test_hostile_ip_output_fails_closed(tmp_path: Path, output: str, rc: int) -> None:
    with pytest.raises(HostAddressesUnavailableError):
        read_host_addresses(_fake_ip(tmp_path, output, rc))


def test_local_routes_of_every_table_are_read(tmp_path: Path) -> None:
    routes = json.dumps(
        [
            {"type": "local", "dst": "10.99.0.0/24", "table": "local"},
            {"type": "broadcast", "dst": "10.20.255.255", "table": "local"},
            {"type": "anycast", "dst": "fd12:3456::", "table": "local"},
            {"dst": "default", "gateway": "192.0.2.1"},
            {"type": "unicast", "dst": "198.51.100.0/24"},
            {"dst": "172.30.0.0/16", "dev": "hle-0123456789", "protocol": "kernel"},
            {"dst": "172.17.0.0/16", "dev": "docker0", "protocol": "kernel"},
            {"dst": "172.31.0.0/16", "dev": "br-0123456789ab", "protocol": "kernel"},
            {"dst": "203.0.113.0/24", "dev": "br-lan", "protocol": "kernel"},  # not Docker's
        ]
    )
    held = read_host_addresses(_fake_ip(tmp_path, routes))
    # The whole subnet of a run network or a Docker bridge (containers of this host) counts.
    for text in (
        "10.99.0.77",
        "10.20.255.255",
        "fd12:3456::",
        "172.30.0.2",
        "172.30.9.9",
        "172.17.0.5",
        "172.31.1.1",
    ):
        assert held.holds(ip(text)), text
    assert not held.holds(ip("198.51.100.7"))  # an ordinary route is not the host
    assert not held.holds(ip("203.0.113.9"))  # nor a LAN bridge that is not Docker's
    assert not held.holds(ip("192.0.2.1"))


def test_missing_ip_command_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.devnull)
    watcher = SystemHostAddresses(use_netlink=False)
    with pytest.raises(HostAddressesUnavailableError, match="iproute2"):
        watcher.snapshot()


def test_without_netlink_the_reading_is_at_most_the_fallback_age_old(tmp_path: Path) -> None:
    watcher = SystemHostAddresses(use_netlink=False, fallback_max_age_seconds=0.0)
    watcher._ip = _fake_ip(tmp_path, "[]")
    watcher.snapshot()
    watcher.snapshot()
    assert not watcher.watching
    assert watcher.reads == 2


# ---------------------------------------------------------------------------------------------
# Property: whatever the allow rules, a host address is dialled only when acknowledged
# ---------------------------------------------------------------------------------------------
_v4 = st.integers(min_value=0, max_value=2**32 - 1).map(ipaddress.IPv4Address)
_v6 = st.integers(min_value=0, max_value=2**128 - 1).map(ipaddress.IPv6Address)
_address = st.one_of(_v4, _v6)


def _covering(address: ipaddress.IPv4Address | ipaddress.IPv6Address, prefix: int) -> str:
    bits = 32 if address.version == 4 else 128
    return str(ipaddress.ip_network(f"{address}/{min(prefix, bits)}", strict=False))


@given(
    host=_address,
    prefixes=st.lists(st.integers(min_value=0, max_value=128), min_size=1, max_size=4),
    form=st.sampled_from(["plain", "mapped", "nat64", "6to4"]),
    ack=st.booleans(),
)
def test_no_allow_rule_reaches_a_host_address_without_the_acknowledgement(
    host: ipaddress.IPv4Address | ipaddress.IPv6Address,
    prefixes: list[int],
    form: str,
    ack: bool,
) -> None:
    held = HostAddressSet.of([host])
    target_address: ipaddress.IPv4Address | ipaddress.IPv6Address = host
    if host.version == 4 and form != "plain":
        target_address = ipaddress.IPv6Address(
            {"mapped": f"::ffff:{host}", "nat64": f"64:ff9b::{host}"}.get(
                form, f"2002:{int(host) >> 16:x}:{int(host) & 0xFFFF:x}::1"
            )
        )
    rules: list[dict[str, object]] = [
        {"cidr": _covering(target_address, p), "ports": [443]} for p in prefixes
    ]
    rules.append({"host": "vcs.corp.test", "private": True})
    if ack:
        rules.append(
            {"cidr": _covering(target_address, 128), "ports": [443], "allow_host_address": True}
        )
    policy = parse_policy({"allow": rules})
    for host_text, answers in (
        (
            str(target_address)
            if target_address.version == 4
            else f"[{target_address.compressed}]",
            [],
        ),
        ("vcs.corp.test", [target_address]),
    ):
        try:
            target = check_target(policy, host_text, 443)
            dialled = check_addresses(policy, target, answers, host_addresses=held)
        except EgressDeniedError:
            continue
        assert ack, (host_text, rules)  # reached the host: only with the acknowledgement
        assert dialled == target_address


class _FailingSocket:
    def recv(self, _size: int) -> bytes:
        raise OSError(9, "Bad file descriptor")

    def close(self) -> None:
        return None


class _OverflowingSocket:
    def __init__(self) -> None:
        self.calls = 0

    def recv(self, _size: int) -> bytes:
        self.calls += 1
        if self.calls == 1:
            raise OSError(105, "No buffer space available")  # ENOBUFS: reports were lost
        raise BlockingIOError

    def close(self) -> None:
        return None


def test_a_broken_netlink_socket_falls_back_to_polling(tmp_path: Path) -> None:
    watcher = SystemHostAddresses(fallback_max_age_seconds=0.0)
    watcher._ip = _fake_ip(tmp_path, "[]")
    watcher.snapshot()
    watcher._sock = _FailingSocket()  # type: ignore[assignment]
    watcher.snapshot()  # re-reads: the socket failing is treated as a change
    assert not watcher.watching
    reads = watcher.reads
    watcher.snapshot()
    assert watcher.reads == reads + 1  # polling now, at the fallback age (0 s here)


def test_lost_netlink_reports_force_a_re_read(tmp_path: Path) -> None:
    watcher = SystemHostAddresses()
    watcher._ip = _fake_ip(tmp_path, "[]")
    watcher.snapshot()
    reads = watcher.reads
    watcher._sock = _OverflowingSocket()  # type: ignore[assignment]
    assert watcher.fresh() is None  # lost reports: the caller must take a new reading
    watcher.snapshot()
    assert watcher.reads == reads + 1


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(
    value=_json,
    cidr=st.sampled_from(["10.20.0.5/32", "10.20.0.0/16", "::1/128", "fd00::/8"]),
    kind=st.sampled_from(["allow", "deny"]),
)
def test_any_acknowledgement_value_is_refused_or_well_formed(
    value: object, cidr: str, kind: str
) -> None:
    document = {kind: [{"cidr": cidr, "allow_host_address": value}]}
    well_formed = value is False or (
        value is True and kind == "allow" and cidr.endswith(("/32", "/128"))
    )
    if not well_formed:
        with pytest.raises(EgressPolicyError) as caught:
            parse_policy(document)
        assert caught.value.reason == "egress_policy_invalid"
        return
    policy = parse_policy(document)
    # Accepted only as a boolean; true only on an allow rule naming one address.
    assert isinstance(value, bool)
    rules = policy.allow_cidrs if kind == "allow" else policy.deny_cidrs
    (rule,) = rules
    assert rule.host_address is value
    if value:
        assert kind == "allow"
        assert rule.network.num_addresses == 1
