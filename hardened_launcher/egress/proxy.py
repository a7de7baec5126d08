"""The per-run egress proxy: asyncio, HTTP ``CONNECT`` and absolute-form HTTP.

For every connection a run opens, the proxy

1. reads a bounded request head and parses it (:mod:`.request`);
2. judges host and port (:func:`.matcher.check_target`) — a refused name is never resolved;
3. resolves the name itself, once, with a timeout (:class:`Resolver`), and judges every answer
   (:func:`.matcher.check_addresses`), last against the launcher host's own addresses as they
   are at that moment (:mod:`.host_addresses`);
4. for ``CONNECT``: answers 200, peeks at the TLS ClientHello (without terminating TLS) and
   refuses a missing or different SNI host name before any upstream connection is made;
5. dials the checked address — never the name again, so DNS rebinding cannot swap the target —
   and relays bytes both ways, counting them, until both sides close or the tunnel is idle.

Each decision becomes one :class:`EgressDecision`: written to the audit sink (type
``egress.connection``, with the run id, host, port, address, reason, bytes and duration), added
to :class:`ProxyStats` (the launcher's metrics) and passed to ``on_decision`` (the run's log).
A refusal before the tunnel is up is answered ``403`` with a plain-text body naming the host and
the reason; an SNI refusal inside a tunnel is answered with a TLS ``access_denied`` alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from hardened_launcher.audit.events import AuditEvent, AuditSink, Outcome
from hardened_launcher.egress.classify import IPAddress, IPNetwork, normalise_name
from hardened_launcher.egress.errors import (
    EgressDeniedError,
    EgressDnsError,
    EgressLimitError,
    EgressRequestError,
    EgressSniMismatchError,
    EgressUpstreamError,
)
from hardened_launcher.egress.host_addresses import (
    HostAddresses,
    HostAddressesUnavailableError,
    HostAddressSet,
    system_host_addresses,
)
from hardened_launcher.egress.matcher import check_addresses, check_target
from hardened_launcher.egress.policy import EgressPolicy
from hardened_launcher.egress.request import (
    MAX_CLIENT_HELLO_BYTES,
    ProxyRequest,
    RequestSyntaxError,
    parse_client_hello,
    parse_request_head,
    render_origin_request,
)
from hardened_launcher.errors import LauncherError

__all__ = [
    "Connector",
    "EgressDecision",
    "EgressProxy",
    "ProxyLimits",
    "ProxyStats",
    "Resolver",
    "SystemResolver",
    "TcpConnector",
]

log = logging.getLogger(__name__)

AUDIT_EVENT_TYPE: Final = "egress.connection"
GATE: Final = "egress"
RELAY_CHUNK_BYTES: Final = 256 * 1024
_TLS_ACCESS_DENIED: Final = b"\x15\x03\x03\x00\x02\x02\x31"


class Resolver(Protocol):
    """Turns a normalised name into addresses. The test seam for DNS."""

    async def resolve(self, name: str, port: int) -> Sequence[IPAddress]: ...


class Connector(Protocol):
    """Opens a TCP connection to a checked address. The test seam for upstream connections."""

    async def connect(
        self, address: IPAddress, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...


class SystemResolver:
    """The host's resolver (``getaddrinfo``), TCP answers only, order kept, duplicates dropped."""

    async def resolve(self, name: str, port: int) -> Sequence[IPAddress]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise EgressDnsError(f"cannot resolve {name}: {exc.strerror or 'no answer'}") from exc
        out: list[IPAddress] = []
        for _family, _, _, _, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in out:
                out.append(address)
        return out


class TcpConnector:
    """Plain TCP to the address given, nothing else (no name, no proxy, no happy eyeballs)."""

    async def connect(
        self, address: IPAddress, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_connection(str(address), port, limit=RELAY_CHUNK_BYTES)
        except OSError as exc:
            raise EgressUpstreamError(
                f"cannot connect to {address}:{port}: {exc.strerror or type(exc).__name__}"
            ) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyLimits:
    """Bounds of one run's proxy. Units are in the names."""

    max_header_bytes: int = 16 * 1024
    max_tunnels: int = 64
    idle_timeout_seconds: float = 300.0
    header_timeout_seconds: float = 30.0
    dns_timeout_seconds: float = 5.0
    connect_timeout_seconds: float = 10.0
    client_hello_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not 256 <= self.max_header_bytes <= 1024 * 1024:
            raise ValueError("max_header_bytes must be from 256 to 1 MiB")
        if not 1 <= self.max_tunnels <= 65536:
            raise ValueError("max_tunnels must be from 1 to 65536")
        for name in (
            "idle_timeout_seconds",
            "header_timeout_seconds",
            "dns_timeout_seconds",
            "connect_timeout_seconds",
            "client_hello_timeout_seconds",
        ):
            if not 0 < getattr(self, name) <= 86400:
                raise ValueError(f"{name} must be more than 0 and at most a day")


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressDecision:
    """One connection's decision and accounting (one audit event)."""

    run_id: str
    method: str
    host: str
    port: int | None
    outcome: Outcome
    reason: str | None
    message: str
    address: str | None = None
    sni: str | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    duration_ms: int = 0
    host_address: bool = False

    def to_audit_event(self) -> AuditEvent:
        return AuditEvent(
            type=AUDIT_EVENT_TYPE,
            outcome=self.outcome,
            gate=GATE,
            run_id=self.run_id,
            reason=self.reason,
            fields={
                "method": self.method,
                "host": self.host[:255],
                "port": self.port,
                "address": self.address,
                "sni": self.sni,
                "bytes_up": self.bytes_up,
                "bytes_down": self.bytes_down,
                "duration_ms": self.duration_ms,
                "message": self.message[:500],
                # True when the address dialled is the launcher's own host (a rule acknowledged
                # it with allow_host_address); the audit trail shows every such connection.
                "host_address": self.host_address,
            },
        )

    def log_line(self) -> str:
        """The line for the run's log (no secrets: host names and counts only)."""
        target = f"{self.host}:{self.port}" if self.port is not None else self.host
        if self.outcome is Outcome.ALLOW:
            host_note = " (the launcher's host, acknowledged)" if self.host_address else ""
            return (
                f"egress: allowed {self.method} {target} via {self.address}{host_note} "
                f"({self.bytes_up} bytes up, {self.bytes_down} down, {self.duration_ms} ms)"
            )
        return f"egress: refused {self.method} {target}: {self.reason}: {self.message}"


@dataclass(slots=True)
class ProxyStats:
    """Counters of one proxy (the launcher exports them as metrics)."""

    allowed: int = 0
    denied: int = 0
    errors: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    active_tunnels: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, decision: EgressDecision) -> None:
        if decision.outcome is Outcome.ALLOW:
            self.allowed += 1
        elif decision.outcome is Outcome.DENY:
            self.denied += 1
        else:
            self.errors += 1
        if decision.reason:
            self.reasons[decision.reason] += 1
        self.bytes_up += decision.bytes_up
        self.bytes_down += decision.bytes_down


def _refusal_response(status: int, text: str, host: str, reason: str, message: str) -> bytes:
    body = (
        f"hardened-launcher egress proxy refused the connection to {host}\n"
        f"reason: {reason}\n{message}\n"
    ).encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status} {text}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Egress-Reason: {reason}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    return head + body


class _Tunnel:
    """Mutable accounting of one connection."""

    def __init__(self) -> None:
        self.method = "-"
        self.host = "-"
        self.port: int | None = None
        self.address: str | None = None
        self.sni: str | None = None
        self.bytes_up = 0
        self.bytes_down = 0
        self.last_activity = time.monotonic()
        self.answered = False
        self.host_address = False


class EgressProxy:
    """One run's proxy: its own listener (its identity), policy, counters and audit trail."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        run_id: str,
        audit: AuditSink | None = None,
        resolver: Resolver | None = None,
        connector: Connector | None = None,
        limits: ProxyLimits | None = None,
        on_decision: Callable[[EgressDecision], None] | None = None,
        self_addresses: Collection[IPAddress] = (),
        allowed_clients: Collection[IPNetwork] | None = None,
        require_sni: bool = True,
        host_addresses: HostAddresses | None = None,
    ) -> None:
        self.policy = policy
        self.run_id = run_id
        self.audit = audit
        self.resolver: Resolver = resolver or SystemResolver()
        self.connector: Connector = connector or TcpConnector()
        self.limits = limits or ProxyLimits()
        self.on_decision = on_decision
        self.self_addresses: set[IPAddress] = set(self_addresses)
        self.allowed_clients = None if allowed_clients is None else tuple(allowed_clients)
        self.require_sni = require_sni
        self.host_addresses: HostAddresses = host_addresses or system_host_addresses()
        self.stats = ProxyStats()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on ``host:port`` (0: any free port); returns the bound address."""
        if self._server is not None:
            raise RuntimeError("the proxy is already started")
        self._server = await asyncio.start_server(
            self._on_client, host, port, limit=RELAY_CHUNK_BYTES, backlog=256
        )
        sockname = self._server.sockets[0].getsockname()
        bound_host, bound_port = str(sockname[0]), int(sockname[1])
        with contextlib.suppress(ValueError):
            self.self_addresses.add(ipaddress.ip_address(bound_host))
        return bound_host, bound_port

    async def close(self) -> None:
        """Stop listening and end every open tunnel (their decisions are still recorded)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- per connection -------------------------------------------------------------------------
    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _record(
        self,
        tunnel: _Tunnel,
        started: float,
        outcome: Outcome,
        error: LauncherError | None,
    ) -> EgressDecision:
        decision = EgressDecision(
            run_id=self.run_id,
            method=tunnel.method,
            host=tunnel.host,
            port=tunnel.port,
            outcome=outcome,
            reason=None if error is None else error.reason,
            message="" if error is None else error.message,
            address=tunnel.address,
            sni=tunnel.sni,
            bytes_up=tunnel.bytes_up,
            bytes_down=tunnel.bytes_down,
            duration_ms=round((time.monotonic() - started) * 1000),
            host_address=tunnel.host_address,
        )
        self.stats.add(decision)
        # No host here: a run can put a secret in a host name, and this operator log line has
        # no access to the run's redactor. The host goes to the run's log and the audit log,
        # both through the run's redactor.
        log.info(
            "egress.decision",
            extra={
                "run_id": self.run_id,
                "outcome": outcome.value,
                "reason": decision.reason,
                "port": decision.port,
            },
        )
        if self.audit is not None:
            self.audit.record(decision.to_audit_event())
        if self.on_decision is not None:
            self.on_decision(decision)
        return decision

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.monotonic()
        tunnel = _Tunnel()
        if self.stats.active_tunnels >= self.limits.max_tunnels:
            error: LauncherError = EgressLimitError(
                f"refused: the run already has {self.limits.max_tunnels} open connections"
            )
            # Take the request (bounded, briefly) so closing does not reset the answer away.
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(self.limits.max_header_bytes), 0.5)
            writer.write(
                _refusal_response(503, "Service Unavailable", "-", error.reason, error.message)
            )
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            self._record(tunnel, started, Outcome.DENY, error)
            return
        self.stats.active_tunnels += 1
        try:
            await self._proxy(reader, writer, tunnel)
        except EgressDeniedError as exc:
            await self._refuse(writer, tunnel, 403, "Forbidden", exc)
            self._record(tunnel, started, Outcome.DENY, exc)
        except (EgressDnsError, EgressUpstreamError, HostAddressesUnavailableError) as exc:
            await self._refuse(writer, tunnel, 502, "Bad Gateway", exc)
            self._record(tunnel, started, Outcome.ERROR, exc)
        except TimeoutError:
            exc2 = EgressUpstreamError(
                f"timed out talking to {tunnel.host}", reason="egress_timeout"
            )
            await self._refuse(writer, tunnel, 504, "Gateway Timeout", exc2)
            self._record(tunnel, started, Outcome.ERROR, exc2)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if tunnel.address is None:
                exc3 = EgressRequestError(
                    "the client closed the connection before a request",
                    reason="egress_client_closed",
                )
                self._record(tunnel, started, Outcome.DENY, exc3)
            else:
                self._record(tunnel, started, Outcome.ALLOW, None)
            log.debug("egress.connection_reset", extra={"error": type(exc).__name__})
        except asyncio.CancelledError:
            if tunnel.address is not None:
                self._record(tunnel, started, Outcome.ALLOW, None)
            raise
        else:
            self._record(tunnel, started, Outcome.ALLOW, None)
        finally:
            self.stats.active_tunnels -= 1

    async def _refuse(
        self,
        writer: asyncio.StreamWriter,
        tunnel: _Tunnel,
        status: int,
        text: str,
        error: LauncherError,
    ) -> None:
        if writer.is_closing():
            return
        if tunnel.answered:
            if isinstance(error, EgressSniMismatchError):
                writer.write(_TLS_ACCESS_DENIED)
        else:
            target = tunnel.host if tunnel.port is None else f"{tunnel.host}:{tunnel.port}"
            writer.write(_refusal_response(status, text, target, error.reason, error.message))
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _read_head(self, reader: asyncio.StreamReader) -> ProxyRequest:
        try:
            head = await asyncio.wait_for(
                reader.readuntil(b"\r\n\r\n"), self.limits.header_timeout_seconds
            )
        except asyncio.LimitOverrunError:
            raise EgressRequestError(
                f"refused: the request head is larger than {self.limits.max_header_bytes} bytes",
                reason="egress_header_too_large",
            ) from None
        except TimeoutError:
            raise EgressRequestError(
                "refused: no complete request head in time", reason="egress_header_timeout"
            ) from None
        if len(head) > self.limits.max_header_bytes:
            raise EgressRequestError(
                f"refused: the request head is larger than {self.limits.max_header_bytes} bytes",
                reason="egress_header_too_large",
            )
        try:
            return parse_request_head(head)
        except RequestSyntaxError as exc:
            raise EgressRequestError(f"refused a malformed request: {exc}") from None

    async def _proxy(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tunnel: _Tunnel
    ) -> None:
        peer = writer.get_extra_info("peername")
        if self.allowed_clients is not None:
            client = ipaddress.ip_address(str(peer[0]).split("%", 1)[0]) if peer else None
            if client is None or not any(
                client.version == n.version and client in n for n in self.allowed_clients
            ):
                raise EgressDeniedError(
                    "refused: this proxy serves only its own run's containers",
                    reason="egress_client_not_allowed",
                )
        request = await self._read_head(reader)
        tunnel.method, tunnel.host, tunnel.port = request.method, request.host, request.port
        target = check_target(self.policy, request.host, request.port)
        tunnel.host = target.host
        if target.name is not None:
            try:
                addresses = await asyncio.wait_for(
                    self.resolver.resolve(target.name, target.port),
                    self.limits.dns_timeout_seconds,
                )
            except TimeoutError:
                raise EgressDnsError(f"resolving {target.name} timed out") from None
        else:
            addresses = ()
        host_set = await self._host_set()
        address = check_addresses(
            self.policy,
            target,
            addresses,
            self_addresses=self.self_addresses,
            host_addresses=host_set,
        )
        tunnel.host_address = host_set.holds(address)
        first: bytes
        if request.kind == "connect":
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            tunnel.answered = True
            await writer.drain()
            first = await self._peek_client_hello(reader, target.name, tunnel)
        else:
            first = render_origin_request(request)
        upstream_reader, upstream_writer = await asyncio.wait_for(
            self.connector.connect(address, target.port), self.limits.connect_timeout_seconds
        )
        try:
            # Judged again once connected: an address the host took while we were connecting
            # gets no byte of the run's (the connection is closed unanswered).
            check_addresses(
                self.policy,
                target,
                addresses,
                self_addresses=self.self_addresses,
                host_addresses=await self._host_set(),
            )
            tunnel.address = str(address)
            tunnel.answered = True
            upstream_writer.write(first)
            tunnel.bytes_up += len(first)
            await self._relay(reader, writer, upstream_reader, upstream_writer, tunnel)
        finally:
            upstream_writer.close()
            with contextlib.suppress(Exception):
                await upstream_writer.wait_closed()

    async def _host_set(self) -> HostAddressSet:
        """The host's addresses now (after DNS); a re-read after a change runs `ip` for a few
        milliseconds, so it runs in a thread, off the loop."""
        current = self.host_addresses.fresh()
        if current is not None:
            return current
        return await asyncio.to_thread(self.host_addresses.snapshot)

    async def _peek_client_hello(
        self, reader: asyncio.StreamReader, name: str | None, tunnel: _Tunnel
    ) -> bytes:
        data = bytearray()
        deadline = time.monotonic() + self.limits.client_hello_timeout_seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EgressSniMismatchError(
                    f"refused {tunnel.host}:{tunnel.port}: no TLS ClientHello in time",
                    reason="egress_tls_required",
                )
            chunk = await asyncio.wait_for(reader.read(MAX_CLIENT_HELLO_BYTES), remaining)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(data), None)
            data += chunk
            hello = parse_client_hello(bytes(data))
            if hello.complete:
                break
        if not hello.is_tls:
            raise EgressSniMismatchError(
                f"refused {tunnel.host}:{tunnel.port}: a CONNECT tunnel must carry TLS",
                reason="egress_tls_required",
            )
        tunnel.sni = hello.server_name
        if hello.server_name is None:
            if name is not None and self.require_sni:
                raise EgressSniMismatchError(
                    f"refused {tunnel.host}:{tunnel.port}: the TLS ClientHello names no host "
                    "(SNI), so the proxy cannot check it is the host allowed"
                )
            return bytes(data)
        try:
            sni = normalise_name(hello.server_name)
        except ValueError:
            sni = None
        if name is None or sni != name:
            raise EgressSniMismatchError(
                f"refused {tunnel.host}:{tunnel.port}: the TLS ClientHello names "
                f"{hello.server_name[:100]!r}, not the host of the CONNECT request"
            )
        return bytes(data)

    async def _relay(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
        tunnel: _Tunnel,
    ) -> None:
        async def pump(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, upward: bool
        ) -> None:
            while True:
                data = await src.read(RELAY_CHUNK_BYTES)
                if not data:
                    break
                tunnel.last_activity = time.monotonic()
                if upward:
                    tunnel.bytes_up += len(data)
                else:
                    tunnel.bytes_down += len(data)
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                with contextlib.suppress(OSError):
                    dst.write_eof()

        up = asyncio.create_task(pump(client_reader, upstream_writer, upward=True))
        down = asyncio.create_task(pump(upstream_reader, client_writer, upward=False))
        pending: set[asyncio.Task[None]] = {up, down}
        idle = self.limits.idle_timeout_seconds
        try:
            while pending:
                wait = max(0.01, tunnel.last_activity + idle - time.monotonic())
                done, pending = await asyncio.wait(pending, timeout=min(wait, idle))
                for task in done:
                    exc = task.exception()
                    if exc is not None:
                        raise exc
                if pending and time.monotonic() - tunnel.last_activity >= idle:
                    log.info("egress.idle_timeout", extra={"run_id": self.run_id})
                    break
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
