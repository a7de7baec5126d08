"""An in-memory broker and transports for tests of the daemon and the control plane.

Messages go through the same :class:`~.session.Session` rules and the same JSON codec as on
the real broker, delivered synchronously. The broker can lose messages (:meth:`drop_next`), go
down and come back (:meth:`go_down`/:meth:`come_up`, transports resend their outbox like after a
reconnect), restart publishing the live workers' wills like mosquitto (:meth:`restart`), crash
a worker (its last will is published), and move time forward for retransmissions
(:meth:`advance`)::

    broker = MemoryBroker()
    cp = broker.control_plane()
    worker = broker.worker("pool-a", "w1")
    worker.send(Register(...))
    assert cp.receive(timeout_seconds=0).body == Register(...)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from hardened_launcher.identity.token import DEFAULT_MQTT_NAMESPACE
from hardened_launcher.transport.inbox import WakeableQueue
from hardened_launcher.transport.messages import Body, Bye, Message
from hardened_launcher.transport.session import (
    Outgoing,
    Received,
    Session,
    TransportStats,
)
from hardened_launcher.transport.topics import WorkerAddress


class MemoryBroker:
    """Routes payloads between :class:`MemoryTransport` objects."""

    def __init__(
        self,
        *,
        namespace: str = DEFAULT_MQTT_NAMESPACE,
        session_options: dict[str, float | int] | None = None,
    ) -> None:
        self.namespace = namespace
        self._session_options = dict(session_options or {})
        self._lock = threading.RLock()
        self._transports: list[MemoryTransport] = []
        self._now = 0.0
        self._up = True
        self._drop = 0
        self.published: list[Outgoing] = []

    # -- endpoints ---------------------------------------------------------------------------
    def worker(self, pool_id: str, worker_id: str) -> MemoryTransport:
        local = WorkerAddress(pool_id=pool_id, worker_id=worker_id)
        session = Session(
            side="worker",
            namespace=self.namespace,
            local=local,
            **self._session_options,  # type: ignore[arg-type]
        )
        return self._add(MemoryTransport(self, session))

    def control_plane(self) -> MemoryTransport:
        session = Session(
            side="controlplane",
            namespace=self.namespace,
            **self._session_options,  # type: ignore[arg-type]
        )
        return self._add(MemoryTransport(self, session))

    def _add(self, transport: MemoryTransport) -> MemoryTransport:
        with self._lock:
            self._transports.append(transport)
        return transport

    # -- failures ----------------------------------------------------------------------------
    def now(self) -> float:
        return self._now

    def drop_next(self, count: int = 1) -> None:
        """Lose the next ``count`` published messages (as an overflowing broker queue would)."""
        with self._lock:
            self._drop += count

    @property
    def pending_drops(self) -> int:
        """How many of the next published messages :meth:`drop_next` will still lose."""
        with self._lock:
            return self._drop

    def go_down(self) -> None:
        """Broker outage: every transport is disconnected, publishes are lost."""
        with self._lock:
            self._up = False

    def come_up(self) -> None:
        """The broker is back: every started transport reconnects and resends its outbox."""
        with self._lock:
            self._up = True
            for transport in list(self._transports):
                if transport.started and not transport.closed:
                    transport.session.note_reconnect()
                    for outgoing in transport.session.pending(self._now):
                        self._route(outgoing)

    def advance(self, seconds: float) -> None:
        """Move the clock; due retransmissions are sent."""
        with self._lock:
            self._now += seconds
            for transport in list(self._transports):
                if transport.started and not transport.closed:
                    for outgoing in transport.session.due(self._now):
                        self._route(outgoing)

    def crash(self, transport: MemoryTransport) -> None:
        """The worker vanishes without ``bye``: the broker publishes its last will."""
        with self._lock:
            transport.closed = True
            if transport.session.local is not None:
                self._route(transport.session.last_will(), will=True)

    def publish_will(self, transport: MemoryTransport) -> None:
        """Publish a worker's last will although it is alive (a stale or early will)."""
        with self._lock:
            if transport.session.local is not None:
                self._route(transport.session.last_will(), will=True)

    def restart(self) -> None:
        """Broker restart as mosquitto 2.0.11 does it: on shutdown it publishes the last will
        of every connected worker (ignoring the will delay) to the clients still connected,
        then goes down; when it is back every transport reconnects and resends its outbox."""
        with self._lock:
            for transport in list(self._transports):
                if transport.started and not transport.closed:
                    self.publish_will(transport)
            self.go_down()
            self.come_up()

    # -- routing -----------------------------------------------------------------------------
    def publish(self, outgoing: Outgoing) -> None:
        with self._lock:
            self._route(outgoing)

    def _route(self, outgoing: Outgoing, *, will: bool = False) -> None:
        if not self._up and not will:
            return
        if self._drop and not will:
            self._drop -= 1
            return
        self.published.append(outgoing)
        for transport in list(self._transports):
            if not transport.started or transport.closed:
                continue
            if not _matches(transport.session.subscription, outgoing.topic):
                continue
            incoming = transport.session.incoming(outgoing.topic, outgoing.payload, now=self._now)
            if incoming.delivered is not None:
                transport.inbox.put(incoming.delivered)
            for reply in incoming.replies:
                self._route(reply)


def _matches(pattern: str, topic: str) -> bool:
    wanted = pattern.split("/")
    parts = topic.split("/")
    if len(wanted) != len(parts):
        return False
    return all(w in ("+", p) for w, p in zip(wanted, parts, strict=True))


class MemoryTransport:
    """A :class:`~.base.Transport` on a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker, session: Session) -> None:
        self._broker = broker
        self.session = session
        self.inbox: WakeableQueue[Received] = WakeableQueue()
        self.started = False
        self.closed = False
        self.sent: list[Message] = []
        self.on_send: Callable[[Message], None] | None = None

    @property
    def local(self) -> WorkerAddress | None:
        return self.session.local

    @property
    def connected(self) -> bool:
        return self.started and not self.closed and self._broker._up

    def start(self, *, timeout_seconds: float = 30.0) -> None:
        del timeout_seconds
        self.started = True

    def send(self, body: Body, *, peer: WorkerAddress | None = None) -> Message:
        if self.closed:
            raise RuntimeError("the transport is closed")
        outgoing = self.session.prepare(body, now=self._broker.now(), peer=peer)
        self.sent.append(outgoing.message)
        if self.on_send is not None:
            self.on_send(outgoing.message)
        if self.started:
            self._broker.publish(outgoing)
        return outgoing.message

    def receive(self, *, timeout_seconds: float | None = None) -> Received | None:
        try:
            if timeout_seconds is not None and timeout_seconds <= 0:
                return self.inbox.get_nowait()
            return self.inbox.get(timeout=timeout_seconds)
        except queue.Empty:
            return None

    def wake(self) -> None:
        self.inbox.wake()

    def discard_pending(self, peer: WorkerAddress) -> int:
        return self.session.discard_pending(peer)

    def stats(self) -> TransportStats:
        return self.session.stats()

    def close(self, *, bye_reason: str | None = None, timeout_seconds: float = 5.0) -> None:
        del timeout_seconds
        if self.closed:
            return
        if bye_reason is not None and self.session.local is not None:
            self.send(Bye(reason=bye_reason))
        self.closed = True
