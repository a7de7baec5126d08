"""The launcher's side of the HTTP long-poll transport (docs/transport.md, "HTTP long poll").

* Mutual TLS with the pool certificate; the key is loaded from a ``memfd`` exactly as for MQTT
  (:func:`~.client.build_tls_context`), TLS 1.2 by default so a refused certificate is told
  apart from an unavailable server (exit 78 vs retry).
* ``HTTPS_PROXY``/``NO_PROXY`` (and lower-case) are honoured: the connection goes through the
  proxy with ``CONNECT host:port`` and TLS is end to end, the server name and certificate
  checked against the pool CA as without a proxy. Proxy credentials in its URL are sent as
  ``Proxy-Authorization`` and never logged.
* Two threads, each with its own keep-alive connection: the poller holds ``GET /v1/poll``
  (naming the last frame it got, so a cut poll loses nothing), the sender posts batches to
  ``POST /v1/messages`` and retransmits overdue critical messages.
* Reliability is the :class:`~.session.Session`'s, shared with MQTT: payloads are the same
  bytes. After a reconnect every unacknowledged critical message is resent; heartbeats and byes
  that cannot be posted are dropped (the next heartbeat replaces them).
* Reconnects use full jitter between ``reconnect_min_seconds`` and a cap doubling up to
  ``reconnect_max_seconds``; a ``Retry-After`` on 409/429/503 is a floor for the delay.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import http.client
import logging
import queue
import random
import secrets
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Self

from hardened_launcher.errors import ConfigurationError
from hardened_launcher.identity.keys import PoolPrivateKey
from hardened_launcher.identity.token import Token
from hardened_launcher.transport import poll_wire as wire
from hardened_launcher.transport.messages import Body, Bye, Message
from hardened_launcher.transport.session import Outgoing, Received, Session, TransportStats
from hardened_launcher.transport.tls import (
    BrokerRefusedError,
    BrokerUnavailableError,
    TlsCredentials,
    build_tls_context,
    is_refusal,
)
from hardened_launcher.transport.topics import WorkerAddress, to_worker_topic
from hardened_launcher.urls import split_url

_log = logging.getLogger(__name__)
_jitter = random.SystemRandom()

#: HTTP statuses that mean "this certificate or request will never be accepted".
_REFUSED_STATUSES: Final = frozenset({401, 403})


@dataclass(frozen=True, kw_only=True)
class PollClientOptions:
    """Timing knobs of :class:`PollTransport` (defaults suit production)."""

    poll_wait_seconds: float = wire.DEFAULT_POLL_WAIT_SECONDS
    #: Socket timeout beyond the poll wait (a half-open connection is given up after it).
    read_slack_seconds: float = 15.0
    connect_timeout_seconds: float = 10.0
    reconnect_min_seconds: float = 0.5
    reconnect_max_seconds: float = 30.0
    allow_tls13: bool = False
    max_batch_frames: int = 64
    receive_queue_size: int = 10_000
    receive_block_seconds: float = 5.0
    retransmit_check_seconds: float = 0.25


@dataclass(frozen=True, kw_only=True)
class Proxy:
    """An ``http://`` proxy reached with ``CONNECT``; ``authorization`` is never logged."""

    host: str
    port: int
    authorization: str | None = None

    def __repr__(self) -> str:
        auth = ", authorization='********'" if self.authorization else ""
        return f"Proxy(host={self.host!r}, port={self.port}{auth})"

    @classmethod
    def for_url(cls, url: str, *, environ: Mapping[str, str]) -> Self | None:
        """The proxy ``HTTPS_PROXY``/``https_proxy`` names for ``url``, unless ``NO_PROXY``
        exempts its host. Only ``http://`` proxies (CONNECT) are supported."""
        target = split_url(url)
        host = (target.hostname if target is not None else None) or ""
        proxy_url = environ.get("HTTPS_PROXY") or environ.get("https_proxy") or ""
        if not proxy_url.strip():
            return None
        no_proxy = environ.get("NO_PROXY") or environ.get("no_proxy") or ""
        if no_proxy and _bypassed(host, no_proxy):
            return None
        parts = split_url(proxy_url.strip())
        if parts is None or parts.scheme.lower() != "http" or not parts.hostname:
            raise ConfigurationError(
                "HTTPS_PROXY is not an http:// proxy URL",
                hint="set HTTPS_PROXY=http://proxy:port (CONNECT; TLS stays end to end)",
                reason="proxy_invalid",
            )
        try:
            port = parts.port or 80
        except ValueError:
            raise ConfigurationError(
                "HTTPS_PROXY has an invalid port",
                hint="set HTTPS_PROXY=http://proxy:port",
                reason="proxy_invalid",
            ) from None
        authorization = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            authorization = f"Basic {token}"
        return cls(host=parts.hostname, port=port, authorization=authorization)


def _bypassed(host: str, no_proxy: str) -> bool:
    host = host.lower().strip("[]")
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.split(":", 1)[0] if entry.count(":") == 1 else entry
        entry = entry.lstrip(".").strip("[]")
        if host == entry or host.endswith("." + entry):
            return True
    return False


class _HttpStatusError(Exception):
    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class _Connection:
    """One keep-alive HTTPS connection (optionally tunnelled through a proxy)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        context: ssl.SSLContext,
        proxy: Proxy | None,
        headers: Mapping[str, str],
    ) -> None:
        self._host = host
        self._port = port
        self._context = context
        self._proxy = proxy
        self._headers = dict(headers)
        self._conn: http.client.HTTPSConnection | None = None

    def _open(self, timeout: float) -> http.client.HTTPSConnection:
        if self._proxy is None:
            conn = http.client.HTTPSConnection(
                self._host, self._port, context=self._context, timeout=timeout
            )
        else:
            conn = http.client.HTTPSConnection(
                self._proxy.host, self._proxy.port, context=self._context, timeout=timeout
            )
            tunnel_headers = {}
            if self._proxy.authorization is not None:
                tunnel_headers["Proxy-Authorization"] = self._proxy.authorization
            conn.set_tunnel(self._host, self._port, headers=tunnel_headers)
        conn.connect()
        return conn

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float,
        connect_timeout: float,
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        if self._conn is None:
            self._conn = self._open(connect_timeout)
        conn = self._conn
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        all_headers = {**self._headers, **(headers or {})}
        if body is not None:
            all_headers["Content-Type"] = wire.CONTENT_TYPE
        try:
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            data = response.read(wire.MAX_BODY_BYTES + 1)
        except BaseException:
            self.close()
            raise
        if len(data) > wire.MAX_BODY_BYTES:
            self.close()
            raise wire.FrameError("a poll response is larger than the limit")
        if response.will_close:
            self.close()
        return response.status, data, response

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None


class PollTransport:
    """A worker's :class:`~.base.Transport` over HTTPS long polling. Build it with
    :meth:`for_worker`, then :meth:`start`."""

    def __init__(
        self,
        *,
        url: str,
        credentials: TlsCredentials,
        session: Session,
        options: PollClientOptions | None = None,
        proxy: Proxy | None = None,
    ) -> None:
        if session.local is None:
            raise ValueError("the poll client is a worker transport")
        parts = split_url(url)
        if (
            parts is None
            or parts.scheme.lower() != "https"
            or not parts.hostname
            or "@" in parts.netloc
        ):
            raise ConfigurationError(
                "the control plane URL is not https:// without credentials",
                hint="set SPACELIFT_WORKER_COMMS_URL=https://<control plane>",
                reason="comms_url_not_https",
            )
        self._host = parts.hostname
        self._port = parts.port or 443
        self._prefix = parts.path.rstrip("/")
        self._session = session
        self._local: WorkerAddress = session.local
        self._options = options or PollClientOptions()
        self._proxy = proxy
        self._context = build_tls_context(credentials, allow_tls13=self._options.allow_tls13)
        self.session_id = secrets.token_hex(16)
        self._headers = {
            wire.WORKER_HEADER: self._local.worker_id,
            wire.SESSION_HEADER: self.session_id,
            "User-Agent": "hardened-launcher",
        }
        self._lock = threading.RLock()
        self._inbox: queue.Queue[Received] = queue.Queue(maxsize=self._options.receive_queue_size)
        self._outgoing: collections.deque[Outgoing] = collections.deque()
        self._wake_sender = threading.Condition(self._lock)
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_error = ""
        self._refused = False
        self._cursor = 0
        self._will = self._session.last_will().payload

    @classmethod
    def for_worker(
        cls,
        *,
        token: Token,
        key: PoolPrivateKey,
        worker_id: str,
        url: str,
        options: PollClientOptions | None = None,
        session_options: dict[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Self:
        """The launcher's transport: the pool certificate and key, the token's CA."""
        import os  # noqa: PLC0415 - the process environment only when none is passed

        local = WorkerAddress(pool_id=token.pool_id, worker_id=worker_id)
        session = Session(
            side="worker", namespace=token.mqtt_namespace, local=local, **(session_options or {})
        )
        proxy = Proxy.for_url(url, environ=os.environ if environ is None else environ)
        credentials = TlsCredentials.for_pool(token, key)
        try:
            return cls(
                url=url, credentials=credentials, session=session, options=options, proxy=proxy
            )
        finally:
            credentials.private_key_pem.wipe()

    # -- Transport ---------------------------------------------------------------------------
    @property
    def session(self) -> Session:
        return self._session

    @property
    def local(self) -> WorkerAddress | None:
        return self._local

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def last_error(self) -> str:
        return self._last_error

    def start(self, *, timeout_seconds: float = 30.0) -> None:
        """Open the session and start polling; raises :class:`BrokerRefusedError` when the
        control plane refuses the certificate, :class:`BrokerUnavailableError` on timeout."""
        if self._threads:
            raise RuntimeError("the transport was already started")
        self._threads = [
            threading.Thread(target=self._poll_loop, name="poll-receive", daemon=True),
            threading.Thread(target=self._send_loop, name="poll-send", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + timeout_seconds
        while not self._connected.wait(0.05):
            if self._refused or time.monotonic() >= deadline:
                refused = self._refused
                self.close()
                if refused:
                    raise BrokerRefusedError(
                        "the control plane refused the connection or its certificate",
                        hint="check the token (pool reset?) and the control plane's CA",
                        reason="broker_refused",
                        detail=self._last_error,
                    )
                raise BrokerUnavailableError(
                    f"no session with the control plane {self._host}:{self._port} within "
                    f"{timeout_seconds:g} s",
                    hint="check that the control plane runs and is reachable (and the proxy)",
                    detail=self._last_error,
                )

    def wait_connected(self, timeout_seconds: float) -> bool:
        return self._connected.wait(timeout_seconds)

    def send(self, body: Body, *, peer: WorkerAddress | None = None) -> Message:
        with self._lock:
            outgoing = self._session.prepare(body, now=time.monotonic(), peer=peer)
            if self.connected:
                self._outgoing.append(outgoing)
                self._wake_sender.notify()
            elif not outgoing.message.critical:
                _log.info(
                    "transport.dropped_while_disconnected", extra={"type": outgoing.message.type}
                )
        return outgoing.message

    def receive(self, *, timeout_seconds: float | None = None) -> Received | None:
        try:
            if timeout_seconds is not None and timeout_seconds <= 0:
                return self._inbox.get_nowait()
            return self._inbox.get(timeout=timeout_seconds)
        except queue.Empty:
            return None

    def discard_pending(self, peer: WorkerAddress) -> int:
        with self._lock:
            return self._session.discard_pending(peer)

    def stats(self) -> TransportStats:
        with self._lock:
            return self._session.stats()

    def close(self, *, bye_reason: str | None = None, timeout_seconds: float = 5.0) -> None:
        """Say ``bye`` (when asked), post what is queued, close the session (so the control
        plane publishes no will) and stop."""
        if self._stopping.is_set():
            return
        was_connected = self.connected
        if bye_reason is not None and was_connected:
            with contextlib.suppress(Exception):
                self.send(Bye(reason=bye_reason))
        self._stopping.set()
        with self._lock:
            self._wake_sender.notify_all()
        for thread in self._threads:
            if thread.name == "poll-send":
                thread.join(timeout_seconds)
        if was_connected:
            conn = self._new_connection()
            try:
                conn.request(
                    "DELETE",
                    self._prefix + wire.SESSION_PATH,
                    timeout=timeout_seconds,
                    connect_timeout=timeout_seconds,
                )
            except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
                _log.info("transport.close_failed", extra={"error": type(exc).__name__})
            finally:
                conn.close()
        self._connected.clear()
        for thread in self._threads:
            if thread.name == "poll-receive":
                thread.join(0.1)

    # -- network threads -------------------------------------------------------------------
    def _new_connection(self) -> _Connection:
        return _Connection(
            host=self._host,
            port=self._port,
            context=self._context,
            proxy=self._proxy,
            headers=self._headers,
        )

    def _request(
        self,
        conn: _Connection,
        method: str,
        path: str,
        *,
        timeout: float,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        status, data, response = conn.request(
            method,
            self._prefix + path,
            body=body,
            headers=headers,
            timeout=timeout,
            connect_timeout=self._options.connect_timeout_seconds,
        )
        if status >= 300:
            retry = wire.parse_retry_after(response.getheader("Retry-After"), default=0.0)
            raise _HttpStatusError(status, retry or None)
        return status, data, response

    def _open_session(self, conn: _Connection) -> None:
        self._request(
            conn,
            "POST",
            wire.SESSION_PATH,
            body=wire.encode_frames([self._will]),
            timeout=self._options.connect_timeout_seconds + 5,
        )
        with self._lock:
            self._session.note_reconnect()
            resend = self._session.pending(time.monotonic())
            self._outgoing.extend(resend)
            self._connected.set()
            self._wake_sender.notify()
        _log.info("transport.connected", extra={"url_host": self._host, "resent": len(resend)})

    def _note_failure(self, exc: BaseException) -> float | None:
        """Record why a request failed; returns a Retry-After floor when the server gave one."""
        if isinstance(exc, _HttpStatusError):
            self._last_error = f"HTTP {exc.status}"
            if exc.status in _REFUSED_STATUSES:
                self._refused = True
            return exc.retry_after
        self._last_error = f"{type(exc).__name__}: {exc}"[:500]
        if is_refusal(self._last_error) or isinstance(exc, ssl.SSLCertVerificationError):
            self._refused = True
        return None

    def _backoff(self, failures: int, floor: float | None) -> None:
        options = self._options
        cap = min(
            options.reconnect_max_seconds,
            options.reconnect_min_seconds * (2 ** min(failures - 1, 16)),
        )
        delay = _jitter.uniform(
            options.reconnect_min_seconds, max(cap, options.reconnect_min_seconds)
        )
        if floor is not None:
            delay = max(delay, floor * (1 + 0.2 * _jitter.random()))
        self._stopping.wait(delay)

    def _disconnected(self) -> None:
        if self._connected.is_set():
            self._connected.clear()
            _log.warning("transport.disconnected", extra={"error": self._last_error})

    def _poll_loop(self) -> None:
        conn = self._new_connection()
        failures = 0
        while not self._stopping.is_set():
            try:
                if not self._connected.is_set():
                    self._open_session(conn)
                _, data, response = self._request(
                    conn,
                    "GET",
                    wire.POLL_PATH,
                    headers={
                        wire.CURSOR_HEADER: str(self._cursor),
                        wire.WAIT_HEADER: f"{self._options.poll_wait_seconds:g}",
                    },
                    timeout=self._options.poll_wait_seconds + self._options.read_slack_seconds,
                )
                failures = 0
                if response.status == 200:
                    frames = wire.decode_frames(data)
                    self._cursor = wire.parse_cursor(response.getheader(wire.CURSOR_HEADER))
                    self._handle(frames)
            except (
                OSError,
                http.client.HTTPException,
                ssl.SSLError,
                _HttpStatusError,
                wire.FrameError,
            ) as exc:
                if self._stopping.is_set():
                    break
                floor = self._note_failure(exc)
                if isinstance(exc, _HttpStatusError) and exc.status == 410:
                    # The control plane forgot the session (it restarted): open it again now.
                    self._cursor = 0
                    self._connected.clear()
                    continue
                self._disconnected()
                failures += 1
                self._backoff(failures, floor)
        conn.close()

    def _handle(self, frames: list[bytes]) -> None:
        topic = to_worker_topic(self._session.namespace, self._local)
        for payload in frames:
            with self._lock:
                incoming = self._session.incoming(topic, payload, now=time.monotonic())
            delivered = incoming.delivered
            if delivered is not None:
                try:
                    self._inbox.put(delivered, timeout=self._options.receive_block_seconds)
                except queue.Full:
                    with self._lock:
                        self._session.forget_delivery(delivered.message.id)
                    continue  # not acknowledged: the control plane retransmits
            if incoming.replies:
                with self._lock:
                    self._outgoing.extend(incoming.replies)
                    self._wake_sender.notify()

    def _send_loop(self) -> None:
        conn = self._new_connection()
        failures = 0
        next_check = 0.0
        while True:
            with self._lock:
                while not self._outgoing and not self._stopping.is_set():
                    remaining = next_check - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wake_sender.wait(remaining)
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + self._options.retransmit_check_seconds
                    if self._connected.is_set():
                        self._outgoing.extend(self._session.due(now))
                batch: list[Outgoing] = []
                if self._connected.is_set():
                    while self._outgoing and len(batch) < self._options.max_batch_frames:
                        batch.append(self._outgoing.popleft())
                stopping = self._stopping.is_set()
            if batch:
                try:
                    self._request(
                        conn,
                        "POST",
                        wire.MESSAGES_PATH,
                        body=wire.encode_frames(o.payload for o in batch),
                        timeout=self._options.connect_timeout_seconds + 10,
                    )
                    failures = 0
                except (OSError, http.client.HTTPException, ssl.SSLError, _HttpStatusError) as exc:
                    floor = self._note_failure(exc)
                    lost = [o.message.type for o in batch if not o.message.critical]
                    if lost:
                        _log.info("transport.dropped_unsent", extra={"types": ",".join(lost)})
                    if stopping:
                        break
                    failures += 1
                    # Critical messages stay in the outbox: retransmitted when due or resent
                    # after the reconnect.
                    self._backoff(failures, floor)
                continue
            if stopping:
                break
        conn.close()
