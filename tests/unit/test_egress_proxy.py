"""The egress proxy with a fake resolver and a fake connector: no network at all.

Client and proxy talk over a socketpair; the fake connector hands the proxy the other end of a
socketpair served by a fake upstream, and records every address it was asked to dial, so a
refusal can be shown to have opened no connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Sequence
from typing import Any

import pytest

from hardened_launcher.audit import MemoryAuditLog, Outcome
from hardened_launcher.egress.classify import IPAddress
from hardened_launcher.egress.errors import EgressDnsError
from hardened_launcher.egress.policy import parse_policy
from hardened_launcher.egress.proxy import EgressDecision, EgressProxy, ProxyLimits

ip = ipaddress.ip_address
TEST_NET = "198.18.7.0/24"  # benchmarking range, allowed explicitly by the policy under test

POLICY = parse_policy(
    {
        "allow": [
            {"host": "allowed.test", "ports": [443, 80]},
            {"host": "rebind.test", "ports": [80]},
            {"host": "private.test", "ports": [80]},
            {"cidr": TEST_NET, "ports": [80, 443]},
        ]
    }
)


class FakeResolver:
    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.queries: list[str] = []

    async def resolve(self, name: str, port: int) -> Sequence[IPAddress]:  # noqa: ARG002 - Resolver protocol
        self.queries.append(name)
        if name not in self.answers or not self.answers[name]:
            raise EgressDnsError(f"cannot resolve {name}")
        return [ip(a) for a in self.answers[name].pop(0)]


class FakeConnector:
    """Each connect gets an upstream that echoes a fixed response after reading the request."""

    def __init__(self) -> None:
        self.dialled: list[tuple[str, int]] = []
        self.received: list[bytes] = []
        self._upstreams: list[asyncio.Task[None]] = []

    async def settle(self) -> None:
        """Wait until every upstream has seen its connection end (a test reads `received`)."""
        await asyncio.wait_for(asyncio.gather(*self._upstreams), EXCHANGE_TIMEOUT_SECONDS)

    async def connect(
        self, address: IPAddress, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.dialled.append((str(address), port))
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        up_reader, up_writer = await asyncio.open_connection(sock=theirs)

        async def upstream() -> None:
            data = await up_reader.read(65536)
            self.received.append(data)
            if data:
                up_writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                with contextlib.suppress(ConnectionError):
                    await up_writer.drain()
            up_writer.close()

        self._upstreams.append(asyncio.get_running_loop().create_task(upstream()))
        return reader, writer


def client_hello(server_name: str | None) -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    ctx.check_hostname = server_name is not None
    if server_name is None:
        ctx.verify_mode = ssl.CERT_NONE
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


#: Generous: the proxy may read the host's addresses (`ip`, three processes) on a loaded machine.
EXCHANGE_TIMEOUT_SECONDS = 30


async def exchange(proxy: EgressProxy, request: bytes, then: bytes = b"") -> bytes:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    p_reader, p_writer = await asyncio.open_connection(sock=theirs)
    served = asyncio.create_task(proxy._on_client(p_reader, p_writer))
    writer.write(request)
    await writer.drain()
    if then:
        # The tunnel is answered before the ClientHello is sent.
        line = await reader.readuntil(b"\r\n\r\n")
        writer.write(then)
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), EXCHANGE_TIMEOUT_SECONDS)
        response = line + rest
    else:
        response = await asyncio.wait_for(reader.read(), EXCHANGE_TIMEOUT_SECONDS)
    writer.close()
    await asyncio.wait_for(served, EXCHANGE_TIMEOUT_SECONDS)
    return response


def make(
    answers: dict[str, list[list[str]]] | None = None, **kw: Any
) -> tuple[EgressProxy, MemoryAuditLog, FakeResolver, FakeConnector, list[EgressDecision]]:
    audit = MemoryAuditLog()
    lines: list[EgressDecision] = []
    resolver = FakeResolver(answers or {})
    connector = FakeConnector()
    proxy = EgressProxy(
        POLICY,
        run_id="run-1",
        audit=audit,
        resolver=resolver,
        connector=connector,
        on_decision=lines.append,
        **kw,
    )
    return proxy, audit, resolver, connector, lines


def test_allowed_absolute_form_request_is_forwarded_to_the_checked_address() -> None:
    proxy, audit, _resolver, connector, lines = make({"allowed.test": [["198.18.7.10"]]})
    response = asyncio.run(
        exchange(
            proxy,
            b"GET http://allowed.test/x HTTP/1.1\r\nHost: evil\r\n"
            b"Proxy-Authorization: Basic c2VjcmV0\r\n\r\n",
        )
    )
    assert response.endswith(b"hello")
    assert connector.dialled == [("198.18.7.10", 80)]
    assert connector.received[0].startswith(b"GET /x HTTP/1.1\r\nHost: allowed.test\r\n")
    assert b"Proxy-Authorization" not in connector.received[0]
    (event,) = audit.events
    assert event.type == "egress.connection"
    assert event.outcome is Outcome.ALLOW
    assert event.run_id == "run-1"
    assert event.fields["host"] == "allowed.test"
    assert event.fields["address"] == "198.18.7.10"
    assert event.fields["bytes_down"] == len(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert proxy.stats.allowed == 1
    assert "allowed GET allowed.test:80 via 198.18.7.10" in lines[0].log_line()


@pytest.mark.parametrize(
    ("request_line", "reason"),
    [
        (b"GET http://denied.test/ HTTP/1.1", "egress_host_not_allowed"),
        (b"CONNECT denied.test:443 HTTP/1.1", "egress_host_not_allowed"),
        (b"GET http://127.0.0.1/ HTTP/1.1", "egress_ip_literal"),
        (b"GET http://2130706433/ HTTP/1.1", "egress_ip_literal"),
        (b"GET http://0177.0.0.1/ HTTP/1.1", "egress_ip_literal"),
        (b"GET http://0x7f.1/ HTTP/1.1", "egress_ip_literal"),
        (b"GET http://[::1]/ HTTP/1.1", "egress_ip_literal"),
        (b"GET http://[::ffff:127.0.0.1]/ HTTP/1.1", "egress_ip_literal"),
        (b"CONNECT [::ffff:169.254.169.254]:443 HTTP/1.1", "egress_ip_literal"),
        (b"CONNECT 169.254.169.254:80 HTTP/1.1", "egress_ip_literal"),
        (b"GET https://allowed.test/ HTTP/1.1", "egress_bad_request"),
        (b"GET http://user@allowed.test/ HTTP/1.1", "egress_bad_request"),
    ],
)
def test_refusals_are_403_naming_host_and_reason_and_dial_nothing(
    request_line: bytes, reason: str
) -> None:
    proxy, audit, resolver, connector, lines = make()
    response = asyncio.run(exchange(proxy, request_line + b"\r\n\r\n"))
    assert response.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert f"reason: {reason}".encode() in response
    assert f"X-Egress-Reason: {reason}".encode() in response
    assert connector.dialled == []
    assert resolver.queries == []  # a refused name is not even resolved
    (event,) = audit.events
    assert event.outcome is Outcome.DENY
    assert event.reason == reason
    assert reason in lines[0].log_line()


def test_denied_host_body_names_the_host() -> None:
    proxy, *_ = make()
    response = asyncio.run(exchange(proxy, b"CONNECT denied.test:443 HTTP/1.1\r\n\r\n"))
    assert b"refused the connection to denied.test:443" in response


@pytest.mark.parametrize("answer", ["169.254.169.254", "10.0.0.5", "127.0.0.1", "::ffff:10.0.0.5"])
def test_name_resolving_to_private_or_metadata_is_refused_without_dialling(answer: str) -> None:
    proxy, audit, _resolver, connector, _ = make({"private.test": [[answer]]})
    response = asyncio.run(exchange(proxy, b"GET http://private.test/ HTTP/1.1\r\n\r\n"))
    assert b"403" in response.split(b"\r\n")[0]
    assert b"egress_private_address" in response
    assert connector.dialled == []
    assert audit.events[0].reason == "egress_private_address"


def test_rebinding_cannot_reach_the_private_address() -> None:
    # First answer: a public-looking test address (allowed by the CIDR rule); second: private.
    proxy, _audit, resolver, connector, _ = make({"rebind.test": [["198.18.7.20"], ["10.0.0.7"]]})
    first = asyncio.run(exchange(proxy, b"GET http://rebind.test/ HTTP/1.1\r\n\r\n"))
    second = asyncio.run(exchange(proxy, b"GET http://rebind.test/ HTTP/1.1\r\n\r\n"))
    assert first.endswith(b"hello")
    assert b"egress_private_address" in second
    assert connector.dialled == [
        ("198.18.7.20", 80)
    ]  # resolved once per request, dialled as checked
    assert resolver.queries == ["rebind.test", "rebind.test"]


def test_connect_with_matching_sni_is_tunnelled() -> None:
    proxy, audit, _, connector, _ = make({"allowed.test": [["198.18.7.30"]]})
    hello = client_hello("allowed.test")
    response = asyncio.run(exchange(proxy, b"CONNECT allowed.test:443 HTTP/1.1\r\n\r\n", hello))
    assert response.startswith(b"HTTP/1.1 200 Connection Established\r\n\r\n")
    assert connector.dialled == [("198.18.7.30", 443)]
    assert connector.received == [hello]
    assert audit.events[0].fields["sni"] == "allowed.test"


@pytest.mark.parametrize(
    ("hello", "reason"),
    [
        (client_hello("other.test"), "egress_sni_mismatch"),
        (client_hello(None), "egress_sni_mismatch"),
        (b"SSH-2.0-OpenSSH_9.0\r\n", "egress_tls_required"),
    ],
)
def test_connect_with_wrong_or_missing_sni_is_refused_before_dialling(
    hello: bytes, reason: str
) -> None:
    proxy, audit, _, connector, lines = make({"allowed.test": [["198.18.7.30"]]})
    response = asyncio.run(exchange(proxy, b"CONNECT allowed.test:443 HTTP/1.1\r\n\r\n", hello))
    assert response.endswith(b"\x15\x03\x03\x00\x02\x02\x31")  # TLS access_denied alert
    assert connector.dialled == []
    assert audit.events[0].reason == reason
    assert reason in lines[0].log_line()


def test_dns_failure_is_502_with_reason() -> None:
    proxy, audit, _, _connector, _ = make()
    response = asyncio.run(exchange(proxy, b"GET http://allowed.test/ HTTP/1.1\r\n\r\n"))
    assert response.startswith(b"HTTP/1.1 502 Bad Gateway")
    assert b"egress_dns_failed" in response
    assert audit.events[0].outcome is Outcome.ERROR


def test_dns_timeout_is_bounded() -> None:
    class Slow:
        async def resolve(self, name: str, port: int) -> list[IPAddress]:  # noqa: ARG002 - Resolver protocol
            await asyncio.sleep(10)
            return []

    proxy = EgressProxy(
        POLICY,
        run_id="r",
        resolver=Slow(),
        connector=FakeConnector(),
        limits=ProxyLimits(dns_timeout_seconds=0.05),
    )
    response = asyncio.run(exchange(proxy, b"GET http://allowed.test/ HTTP/1.1\r\n\r\n"))
    assert b"egress_dns_failed" in response


def test_oversized_head_is_refused() -> None:
    proxy, _audit, *_ = make(limits=ProxyLimits(max_header_bytes=1024))
    request = b"GET http://allowed.test/ HTTP/1.1\r\nX: " + b"a" * 4096 + b"\r\n\r\n"
    response = asyncio.run(exchange(proxy, request))
    assert b"egress_header_too_large" in response


def test_tunnel_limit_is_enforced() -> None:
    proxy, audit, *_ = make(limits=ProxyLimits(max_tunnels=1))
    proxy.stats.active_tunnels = 1  # one tunnel already open
    response = asyncio.run(exchange(proxy, b"GET http://allowed.test/ HTTP/1.1\r\n\r\n"))
    assert response.startswith(b"HTTP/1.1 503")
    assert audit.events[0].reason == "egress_limit_reached"


def test_idle_tunnel_is_closed() -> None:
    class Silent(FakeConnector):
        async def connect(
            self, address: IPAddress, port: int
        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            self.dialled.append((str(address), port))
            ours, theirs = socket.socketpair()
            self.keep = theirs  # upstream never answers
            return await asyncio.open_connection(sock=ours)

    async def scenario() -> bytes:
        proxy = EgressProxy(
            POLICY,
            run_id="r",
            resolver=FakeResolver({"allowed.test": [["198.18.7.1"]]}),
            connector=Silent(),
            limits=ProxyLimits(idle_timeout_seconds=0.2),
        )
        return await asyncio.wait_for(
            exchange(proxy, b"GET http://allowed.test/ HTTP/1.1\r\n\r\n"), 5
        )

    assert asyncio.run(scenario()) == b""


def test_proxy_listener_reports_its_address_and_refuses_itself() -> None:
    async def scenario() -> set[IPAddress]:
        proxy = EgressProxy(
            POLICY, run_id="r", resolver=FakeResolver({}), connector=FakeConnector()
        )
        _host, port = await proxy.start("127.0.0.1", 0)
        assert port > 0
        await proxy.close()
        return proxy.self_addresses

    assert ip("127.0.0.1") in asyncio.run(scenario())


def test_operator_log_never_names_the_host(caplog: pytest.LogCaptureFixture) -> None:
    # A run can put a secret in a host name; only the run's (redacted) log and audit see it.
    proxy, _audit, _, _, lines = make({"rebind.test": [["198.18.7.20"]]})
    with caplog.at_level(logging.DEBUG, logger="hardened_launcher.egress"):
        asyncio.run(exchange(proxy, b"GET http://secret-in-name.test/ HTTP/1.1\r\n\r\n"))
    assert lines, "the decision reached the run's log"
    assert "egress.decision" in caplog.text
    for record in caplog.records:
        assert "secret-in-name" not in record.getMessage()
        assert "secret-in-name" not in str(vars(record))
