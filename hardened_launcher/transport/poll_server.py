"""The control plane's side of the HTTP long-poll transport: an HTTPS server (aiohttp on its
own asyncio loop and thread) that is a :class:`~.base.Transport`.

* **Identity from the certificate only.** TLS requires a client certificate issued by the pool
  CA (and not on the CRL, when one is given). Every request is then checked against the
  store's view of the pools (:class:`PoolCertificates`): the certificate's CN must be a known
  pool and its serial that pool's *current* certificate, so a revoked certificate, or the
  old certificate of a reset pool, is refused with 403 even on a connection opened before the
  reset — except that for a bounded grace after the reset (``HL_CP_RESET_GRACE_SECONDS``) the
  old certificate may still deliver what finishes its runs (statuses, bye, acks, log-URL
  requests, refusals, witnesses, non-IDLE heartbeats) in the sessions it had open, never a
  ``register`` or ``accept``, and it cannot open a new session.
  The pool in every message comes from the certificate, never from the request.
* **Sessions.** A worker opens a session (``POST /v1/session``, headers ``HL-Worker-Id`` and
  ``HL-Session``: 32 random hex digits it chose, never in the URL) and hands over its will (its
  ``gone`` message). Polls, posts and the close must name that session: another holder of the
  pool's certificate cannot read, ack or post in it. A new session for the same worker id is
  refused (409) while the current one is live; after ``takeover_after_seconds`` of silence it
  replaces it (a restarted launcher). A session silent for ``will_delay_seconds`` publishes the
  will to the control plane, like an MQTT broker does.
* **Reliability** is the :class:`~.session.Session`'s (ids, seq, outbox, acks, dedupe, gaps);
  payloads are the same bytes as over MQTT, fed through ``Session.incoming`` with the topic
  the certificate and the session imply. Each session's mailbox is numbered; a poll names the
  last frame it received (``HL-Cursor``) and only then is it dropped, so a poll cut in flight
  loses nothing.
* **Limits**: body size, frames per body, header sizes, a token bucket per worker (429 with
  ``Retry-After``), a cap on held polls and a full receive queue (503 with ``Retry-After``),
  a TLS handshake timeout, a body read timeout, TCP keepalive, bounded poll holds.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import collections
import contextlib
import logging
import queue
import random
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from hardened_launcher.errors import LauncherError
from hardened_launcher.identity.token import is_valid_pool_id
from hardened_launcher.transport import poll_wire as wire
from hardened_launcher.transport.inbox import WakeableQueue
from hardened_launcher.transport.messages import Body, Heartbeat, Message
from hardened_launcher.transport.session import (
    Outgoing,
    Received,
    Session,
    TransportStats,
)
from hardened_launcher.transport.topics import WorkerAddress, from_worker_topic

_log = logging.getLogger(__name__)
_jitter = random.SystemRandom()


@dataclass(frozen=True, kw_only=True)
class PollServerOptions:
    """Limits and timings of :class:`PollServer` (defaults suit production)."""

    max_held_polls: int = 20_000
    #: TLS connections at once; more are closed on accept (before the handshake).
    max_connections: int = 25_000
    max_mailbox_frames: int = 20_000
    max_mailbox_bytes: int = 64 * 1024 * 1024
    requests_per_second: float = 100.0
    request_burst: float = 500.0
    will_delay_seconds: float = 5.0
    takeover_after_seconds: float = 10.0
    session_expiry_seconds: float = 300.0
    handshake_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 15.0
    #: A connection without a complete request for this long is closed: idle keep-alive, and
    #: clients that send their headers slowly or not at all.
    keepalive_timeout_seconds: float = 30.0
    receive_queue_size: int = 10_000
    retry_after_seconds: int = 5
    housekeeping_seconds: float = 0.25
    backlog: int = 4096


class _AlertingSSLProtocol(asyncio.sslproto.SSLProtocol):
    """asyncio's server TLS, but a failed handshake sends its alert before closing.

    Measured (CPython 3.11): asyncio closes the socket on a handshake error without writing
    the alert OpenSSL produced, so a client with a revoked or foreign certificate saw "EOF
    occurred in violation of protocol", like an unavailable server, instead of "certificate
    revoked" / "unknown ca" — and could not tell "refused: fix the token" (exit 78) from
    "retry". Writing the pending TLS records first makes the refusal explicit.
    """

    #: Bytes read from TLS at a time (asyncio's default, 256 KiB, is allocated per connection;
    #: measured: ~0.3 MiB of control-plane memory per idle long poll with it).
    max_size = 32 * 1024

    def __init__(self, *args: Any, on_lost: Callable[[], None], **kwargs: Any) -> None:  # noqa: ANN401 - asyncio's own signature
        super().__init__(*args, **kwargs)
        self._on_lost = on_lost

    def connection_lost(self, exc: BaseException | None) -> None:
        self._on_lost()
        super().connection_lost(exc)

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            with contextlib.suppress(Exception):
                self._process_outgoing()  # type: ignore[attr-defined] # not in typeshed
        super()._on_handshake_complete(handshake_exc)


class _Refuse(asyncio.Protocol):
    """Closes a connection at once (over ``max_connections``)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class CertificateRefused(Exception):  # noqa: N818 - a refusal, not a program error
    """The client certificate is not acceptable (its ``reason`` is a slug)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: What a certificate may still do: everything, or (a reset pool's old one, within the grace)
#: only finish what it runs.
CURRENT: Final = "current"
RETIRING: Final = "retiring"

#: Message types a retiring certificate may deliver: they finish or report work and can never
#: lead to a new lease (``heartbeat`` only when not ``IDLE``; never ``register`` or ``accept``).
RETIRING_TYPES: Final = frozenset({"status", "bye", "ack", "log_urls_request", "refuse", "witness"})


class PoolCertificates:
    """Which certificate serial each pool currently holds, refreshed from ``load``.

    ``load`` returns ``{pool_id: serial}``; it runs on the server thread at most every
    ``refresh_seconds`` (a pool reset takes effect within that time, on open connections too;
    opening a session reads the store at once, see :meth:`check`).
    ``load_retired(since)`` returns ``{(pool_id, serial): revoked_at}`` (Unix seconds) of
    certificates revoked since then: for ``grace_seconds`` after its reset, a pool's old
    certificate is :data:`RETIRING` instead of refused, so a cycling worker can still report its
    runs' final statuses and say bye (docs/controlplane.md).
    """

    def __init__(
        self,
        load: Callable[[], Mapping[str, int]],
        *,
        load_retired: Callable[[float], Mapping[tuple[str, int], float]] | None = None,
        grace_seconds: float = 0.0,
        refresh_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._load = load
        self._load_retired = load_retired
        self._grace = grace_seconds
        self._refresh = refresh_seconds
        self._clock = clock
        self._wall = wall
        self._current: Mapping[str, int] = {}
        self._retired: Mapping[tuple[str, int], float] = {}
        self._loaded_at = -1e18

    def check(self, pool_id: str, serial: int, *, fresh: bool = False) -> str:
        """:data:`CURRENT` or :data:`RETIRING`; raises :class:`CertificateRefused` otherwise.

        ``fresh`` reads the store now instead of a view up to ``refresh_seconds`` old: a new
        session is judged on the pools as they are, so a certificate retired a moment ago
        (a pool reset) cannot start one in the refresh window."""
        now = self._clock()
        if fresh or now - self._loaded_at >= self._refresh:
            self._current = dict(self._load())
            if self._load_retired is not None and self._grace > 0:
                self._retired = dict(self._load_retired(self._wall() - self._grace))
            self._loaded_at = now
        expected = self._current.get(pool_id)
        if expected is None:
            raise CertificateRefused("unknown_pool")
        if expected == serial:
            return CURRENT
        revoked_at = self._retired.get((pool_id, serial))
        if revoked_at is not None and self._wall() - revoked_at < self._grace:
            return RETIRING
        raise CertificateRefused("certificate_not_current")


def retiring_may_deliver(payload: bytes) -> bool:
    """Whether a frame from a retiring certificate is one it may still deliver (a frame that
    does not parse goes on to be judged, and dropped, as usual)."""
    try:
        message = Message.parse(payload, sender="worker")
    except LauncherError:
        return True
    body = message.body
    if isinstance(body, Heartbeat):
        return body.state != "IDLE"
    return body.TYPE in RETIRING_TYPES


def server_tls_context(
    *, ca_pem: bytes, cert_file: str, key_file: str, crl_file: str | None
) -> ssl.SSLContext:
    """Server TLS: TLS 1.2+, ECDHE AEAD ciphers, client certificate required from the pool CA
    (and checked against the CRL when given)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca_pem.decode("ascii"))
    if crl_file is not None:
        context.load_verify_locations(cafile=crl_file)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


@dataclass(kw_only=True)
class _Bucket:
    tokens: float
    at: float

    def take(self, *, now: float, rate: float, burst: float) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        self.tokens = min(burst, self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate


@dataclass(kw_only=True)
class _WorkerSession:
    address: WorkerAddress
    session_id: str
    will: bytes | None
    last_seen: float
    bucket: _Bucket
    mailbox: collections.deque[tuple[int, bytes]] = field(default_factory=collections.deque)
    mailbox_bytes: int = 0
    next_frame: int = 1
    in_flight: int = 0
    poll_generation: int = 0
    will_fired: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class _HttpRefusal(Exception):  # noqa: N818 - control flow to one response
    def __init__(self, status: int, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class PollServer:
    """The control plane's :class:`~.base.Transport` over HTTPS long polling."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        namespace: str,
        ssl_context: ssl.SSLContext,
        certificates: PoolCertificates,
        options: PollServerOptions | None = None,
        session_options: dict[str, Any] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._certificates = certificates
        self._options = options or PollServerOptions()
        self._session = Session(side="controlplane", namespace=namespace, **(session_options or {}))
        self._lock = threading.RLock()
        self._inbox: WakeableQueue[Received] = WakeableQueue(
            maxsize=self._options.receive_queue_size
        )
        self._workers: dict[WorkerAddress, _WorkerSession] = {}
        self._held_polls = 0
        self._connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._start_error: BaseException | None = None
        self.bound_port = 0
        self.refusals: collections.Counter[str] = collections.Counter()

    # -- Transport -------------------------------------------------------------------------
    @property
    def local(self) -> WorkerAddress | None:
        return None

    @property
    def connected(self) -> bool:
        return self._started.is_set() and self._start_error is None

    @property
    def session(self) -> Session:
        return self._session

    def start(self, *, timeout_seconds: float = 30.0) -> None:
        if self._thread is not None:
            raise RuntimeError("the transport was already started")
        with self._lock:
            restored = self._session.restore(now=time.monotonic())
        if restored:
            _log.info("poll.outbox_restored", extra={"messages": restored})
        self._thread = threading.Thread(target=self._run, name="poll-server", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_seconds):
            raise RuntimeError("the long-poll server did not start in time")
        if self._start_error is not None:
            error = self._start_error
            raise LauncherError(
                f"the long-poll server cannot listen on {self._host}:{self._port}",
                hint="check that the address is free and the TLS files are readable",
                reason="poll_listen_failed",
            ) from error

    def send(self, body: Body, *, peer: WorkerAddress | None = None) -> Message:
        with self._lock:
            outgoing = self._session.prepare(body, now=time.monotonic(), peer=peer)
        self._post_to_loop(outgoing)
        return outgoing.message

    def receive(self, *, timeout_seconds: float | None = None) -> Received | None:
        try:
            if timeout_seconds is not None and timeout_seconds <= 0:
                return self._inbox.get_nowait()
            return self._inbox.get(timeout=timeout_seconds)
        except queue.Empty:
            return None

    def wake(self) -> None:
        """End a ``receive`` wait now (it returns ``None``): serve's doorbell."""
        self._inbox.wake()

    def discard_pending(self, peer: WorkerAddress) -> int:
        with self._lock:
            return self._session.discard_pending(peer)

    def stats(self) -> TransportStats:
        with self._lock:
            return self._session.stats()

    def close(self, *, bye_reason: str | None = None, timeout_seconds: float = 5.0) -> None:
        del bye_reason
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout_seconds)

    # -- figures for the benchmark and tests ------------------------------------------------
    def held_polls(self) -> int:
        return self._held_polls

    def sessions(self) -> int:
        return len(self._workers)

    def connections(self) -> int:
        return self._connections

    # -- the server thread ------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(
            client_max_size=wire.MAX_BODY_BYTES, middlewares=[self._refusals_middleware]
        )
        app.router.add_post(wire.SESSION_PATH, self._open_session)
        app.router.add_delete(wire.SESSION_PATH, self._close_session)
        app.router.add_get(wire.POLL_PATH, self._poll)
        app.router.add_post(wire.MESSAGES_PATH, self._messages)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            keepalive_timeout=self._options.keepalive_timeout_seconds,
            tcp_keepalive=True,
            max_line_size=2048,
            max_field_size=2048,
            max_headers=32,
        )
        await runner.setup()
        try:
            loop = asyncio.get_running_loop()
            app_protocols = runner.server
            assert app_protocols is not None  # noqa: S101 - set by setup()

            def lost() -> None:
                self._connections -= 1

            def tls_protocol() -> asyncio.BaseProtocol:
                if self._connections >= self._options.max_connections:
                    self.refusals["too_many_connections"] += 1
                    return _Refuse()
                self._connections += 1
                return _AlertingSSLProtocol(
                    loop,
                    app_protocols(),
                    self._ssl,
                    None,  # no waiter
                    server_side=True,
                    ssl_handshake_timeout=int(self._options.handshake_timeout_seconds),
                    on_lost=lost,
                )

            server = await loop.create_server(
                tls_protocol,
                self._host,
                self._port,
                backlog=self._options.backlog,
                reuse_address=True,
            )
        except (OSError, ssl.SSLError) as exc:
            self._start_error = exc
            self._started.set()
            await runner.cleanup()
            return
        self.bound_port = server.sockets[0].getsockname()[1]
        self._started.set()
        _log.info("poll.listening", extra={"address": f"{self._host}:{self.bound_port}"})
        housekeeping = asyncio.create_task(self._housekeeping())
        try:
            await self._stopping.wait()
        finally:
            housekeeping.cancel()
            server.close()
            for worker in self._workers.values():
                worker.wake.set()
            await runner.cleanup()

    def _post_to_loop(self, outgoing: Outgoing) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # a critical message stays in the outbox and goes out on the next session
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._deliver, outgoing)

    def _deliver(self, outgoing: Outgoing) -> None:
        worker = self._workers.get(outgoing.peer)
        if worker is None:
            return  # not connected: critical messages wait in the outbox (resent on open)
        if (
            len(worker.mailbox) >= self._options.max_mailbox_frames
            or worker.mailbox_bytes + len(outgoing.payload) > self._options.max_mailbox_bytes
        ):
            _log.warning("poll.mailbox_full", extra={"peer": str(outgoing.peer)})
            return  # retransmission brings a critical message back
        worker.mailbox.append((worker.next_frame, outgoing.payload))
        worker.mailbox_bytes += len(outgoing.payload)
        worker.next_frame += 1
        worker.wake.set()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self._options.housekeeping_seconds)
            try:
                self._housekeeping_once(time.monotonic())
            except Exception as exc:  # noqa: BLE001 - one bad round must not stop retransmission
                _log.error("poll.housekeeping_failed", extra={"error": type(exc).__name__})

    def _housekeeping_once(self, now: float) -> None:
        with self._lock:
            due = self._session.due(now)
        for outgoing in due:
            self._deliver(outgoing)
        for address, worker in list(self._workers.items()):
            if worker.in_flight:
                continue
            idle = now - worker.last_seen
            if not worker.will_fired and idle >= self._options.will_delay_seconds:
                worker.will_fired = True
                if worker.will is not None:
                    _log.info("poll.will_published", extra={"peer": str(address)})
                    self._take(address, worker.will, now=now)
            if idle >= self._options.session_expiry_seconds:
                del self._workers[address]

    def _take(self, address: WorkerAddress, payload: bytes, *, now: float) -> bool:
        """Judge one payload from ``address``; False when the receive queue is full."""
        topic = from_worker_topic(self._session.namespace, address)
        with self._lock:
            incoming = self._session.incoming(topic, payload, now=now)
        if incoming.delivered is not None:
            try:
                self._inbox.put_nowait(incoming.delivered)
            except queue.Full:
                with self._lock:
                    self._session.forget_delivery(incoming.delivered.message.id)
                return False  # not acknowledged: the worker retransmits
        for reply in incoming.replies:
            self._deliver(reply)
        return True

    # -- request handling -------------------------------------------------------------------
    def _identify(self, request: web.Request) -> tuple[WorkerAddress, str]:
        address, session_id, _ = self._identify_standing(request)
        return address, session_id

    def _identify_standing(
        self, request: web.Request, *, fresh: bool = False
    ) -> tuple[WorkerAddress, str, str]:
        """The worker, its session id, and its certificate's standing (current/retiring;
        ``fresh``: judged on the store as it is now, see :meth:`PoolCertificates.check`)."""
        transport = request.transport
        cert = transport.get_extra_info("peercert") if transport is not None else None
        if not cert:
            raise _HttpRefusal(403, "no_client_certificate")
        common_names = [
            value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"
        ]
        if len(common_names) != 1 or not is_valid_pool_id(common_names[0]):
            raise _HttpRefusal(403, "not_a_pool_certificate")
        pool_id = common_names[0]
        try:
            serial = int(str(cert.get("serialNumber", "")), 16)
            standing = self._certificates.check(pool_id, serial, fresh=fresh)
        except ValueError:
            raise _HttpRefusal(403, "not_a_pool_certificate") from None
        except CertificateRefused as exc:
            raise _HttpRefusal(403, exc.reason) from None
        try:
            worker_id = wire.check_worker_id(request.headers.get(wire.WORKER_HEADER))
            session_id = wire.check_session_id(request.headers.get(wire.SESSION_HEADER))
        except wire.FrameError:
            raise _HttpRefusal(400, "headers_invalid") from None
        return WorkerAddress(pool_id=pool_id, worker_id=worker_id), session_id, standing

    def _rate(self, worker: _WorkerSession, now: float) -> None:
        wait = worker.bucket.take(
            now=now, rate=self._options.requests_per_second, burst=self._options.request_burst
        )
        if wait > 0:
            raise _HttpRefusal(429, "rate_limited", retry_after=max(1.0, wait))

    def _worker(self, address: WorkerAddress, session_id: str) -> _WorkerSession:
        worker = self._workers.get(address)
        if worker is None or worker.session_id != session_id:
            raise _HttpRefusal(410, "session_unknown")
        return worker

    @staticmethod
    def _response(status: int, *, retry_after: float | None = None) -> web.Response:
        headers = {"Cache-Control": "no-store"}
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, round(retry_after)))
        return web.Response(status=status, headers=headers)

    def _refused(self, request: web.Request, refusal: _HttpRefusal) -> web.Response:
        self.refusals[refusal.reason] += 1
        _log.info(
            "poll.refused",
            extra={"path": request.path[:64], "status": refusal.status, "reason": refusal.reason},
        )
        return self._response(refusal.status, retry_after=refusal.retry_after)

    @web.middleware
    async def _refusals_middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """One place turns a refusal into its status (and ``Retry-After``), counted and logged
        without headers, certificates or payloads."""
        try:
            return await handler(request)
        except _HttpRefusal as refusal:
            return self._refused(request, refusal)

    async def _read_body(self, request: web.Request, *, limit: int) -> bytes:
        if request.content_type != wire.CONTENT_TYPE:
            raise _HttpRefusal(415, "content_type")
        if request.content_length is None:
            raise _HttpRefusal(411, "length_required")
        if request.content_length > limit:
            raise _HttpRefusal(413, "body_too_large")
        if request.content_length == 0:
            return b""
        try:
            return await asyncio.wait_for(
                request.content.readexactly(request.content_length),
                self._options.body_timeout_seconds,
            )
        except (TimeoutError, asyncio.IncompleteReadError):
            raise _HttpRefusal(408, "body_timeout") from None

    async def _open_session(self, request: web.Request) -> web.Response:
        address, session_id, standing = self._identify_standing(request, fresh=True)
        will_body = await self._read_body(request, limit=wire.MAX_WILL_BYTES + 16)
        try:
            frames = wire.decode_frames(will_body, max_frames=1) if will_body else []
        except wire.FrameError:
            raise _HttpRefusal(400, "will_invalid") from None
        now = time.monotonic()
        current = self._workers.get(address)
        resuming = current is not None and current.session_id == session_id
        if standing == RETIRING and not resuming:
            # The grace is for the sessions open at the reset; nothing new starts with it.
            raise _HttpRefusal(403, "certificate_not_current")
        if current is not None and current.session_id == session_id:
            self._rate(current, now)
            current.last_seen = now
            current.will_fired = False
            return self._response(204)
        if current is not None and (
            current.in_flight or now - current.last_seen < self._options.takeover_after_seconds
        ):
            wait = self._options.takeover_after_seconds - (now - current.last_seen)
            raise _HttpRefusal(409, "session_in_use", retry_after=max(1.0, wait))
        worker = _WorkerSession(
            address=address,
            session_id=session_id,
            will=frames[0] if frames else None,
            last_seen=now,
            bucket=_Bucket(tokens=self._options.request_burst, at=now),
        )
        if current is not None:
            current.poll_generation += 1
            current.wake.set()
        self._workers[address] = worker
        with self._lock:
            resend = self._session.pending_for(address, now)
        for outgoing in resend:
            self._deliver(outgoing)
        _log.info("poll.session_opened", extra={"peer": str(address), "resent": len(resend)})
        return self._response(204)

    async def _close_session(self, request: web.Request) -> web.Response:
        address, session_id = self._identify(request)
        worker = self._worker(address, session_id)
        del self._workers[address]
        worker.poll_generation += 1
        worker.wake.set()
        _log.info("poll.session_closed", extra={"peer": str(address)})
        return self._response(204)

    async def _poll(self, request: web.Request) -> web.StreamResponse:
        address, session_id = self._identify(request)
        worker = self._worker(address, session_id)
        now = time.monotonic()
        self._rate(worker, now)
        try:
            cursor = wire.parse_cursor(request.headers.get(wire.CURSOR_HEADER))
            wait = wire.parse_wait(request.headers.get(wire.WAIT_HEADER))
        except wire.FrameError:
            raise _HttpRefusal(400, "headers_invalid") from None
        if self._held_polls >= self._options.max_held_polls:
            raise _HttpRefusal(
                503,
                "too_many_polls",
                retry_after=self._options.retry_after_seconds * (1 + _jitter.random()),
            )
        while worker.mailbox and worker.mailbox[0][0] <= cursor:
            _, payload = worker.mailbox.popleft()
            worker.mailbox_bytes -= len(payload)
        worker.poll_generation += 1
        generation = worker.poll_generation
        worker.in_flight += 1
        worker.last_seen = now
        worker.will_fired = False
        self._held_polls += 1
        try:
            deadline = now + wait
            while not worker.mailbox and worker.poll_generation == generation:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                worker.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(worker.wake.wait(), remaining)
        finally:
            self._held_polls -= 1
            worker.in_flight -= 1
            worker.last_seen = time.monotonic()
        if worker.poll_generation != generation or not worker.mailbox:
            return self._response(204)
        payloads: list[bytes] = []
        size = 0
        last = cursor
        for number, payload in worker.mailbox:
            if payloads and (
                len(payloads) >= wire.MAX_FRAMES or size + len(payload) > wire.MAX_BODY_BYTES
            ):
                break
            payloads.append(payload)
            size += len(payload)
            last = number
        return web.Response(
            status=200,
            body=wire.encode_frames(payloads),
            headers={
                "Content-Type": wire.CONTENT_TYPE,
                wire.CURSOR_HEADER: str(last),
                "Cache-Control": "no-store",
            },
        )

    async def _messages(self, request: web.Request) -> web.Response:
        address, session_id, standing = self._identify_standing(request)
        worker = self._worker(address, session_id)
        now = time.monotonic()
        self._rate(worker, now)
        body = await self._read_body(request, limit=wire.MAX_BODY_BYTES)
        try:
            frames = wire.decode_frames(body)
        except wire.FrameError:
            raise _HttpRefusal(400, "frames_invalid") from None
        worker.last_seen = now
        if standing == RETIRING:
            allowed = [p for p in frames if retiring_may_deliver(p)]
            if len(allowed) != len(frames):
                # Not acknowledged: nothing that could take a lease gets through.
                self.refusals["certificate_retiring"] += len(frames) - len(allowed)
                _log.info(
                    "poll.retiring_frames_dropped",
                    extra={"peer": str(address), "dropped": len(frames) - len(allowed)},
                )
            frames = allowed
        for index, payload in enumerate(frames):
            if not self._take(address, payload, now=now):
                _log.warning(
                    "poll.receive_queue_full",
                    extra={"peer": str(address), "dropped": len(frames) - index},
                )
                raise _HttpRefusal(
                    503, "receive_queue_full", retry_after=self._options.retry_after_seconds
                )
        return self._response(204)
