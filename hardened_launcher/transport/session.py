"""The reliability state machine of one transport endpoint (pure: no I/O, no threads).

Both the MQTT client (:mod:`.client`) and the in-memory fake (:mod:`.memory`) wrap a
:class:`Session`, so the rules below are the same for both:

* **Sending**: every message gets a fresh id and the next ``seq`` of the stream towards its
  peer. Critical messages (``Body.CRITICAL``) go into the outbox until the peer acknowledges
  them; :meth:`Session.due` returns those whose retransmission time has come (first after
  ``retransmit_after_seconds``, then doubling up to ``max_retransmit_interval_seconds``) and
  :meth:`Session.pending` returns them all (after a reconnect). The outbox is bounded in
  messages and bytes; when full, :meth:`Session.prepare` raises :class:`OutboxFullError` — a
  message is never dropped silently. Entries older than ``max_outbox_age_seconds`` are dropped
  and counted as ``expired``.
* **Receiving**: a payload is parsed strictly against the topic it came on (the sender's side
  and, for ``register``/``gone``, the ids in the body must match the topic). A message id seen
  before is a duplicate: it is not delivered again, but a critical one is acknowledged again
  (the first ack may be what was lost). ``seq`` is tracked per (peer, stream): a jump forward is
  a gap (logged as ``transport.sequence_gap`` and counted); a missing message that arrives later
  (a retransmission) is counted as recovered.
* **Acks** remove the acknowledged message from the outbox only when they come from the peer
  the message was sent to.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final, Protocol

from hardened_launcher.errors import RetryableError
from hardened_launcher.transport.messages import (
    Ack,
    Body,
    Gone,
    Message,
    MessageError,
    MessageStream,
    Register,
    Side,
)
from hardened_launcher.transport.topics import (
    READONLY,
    WRITEONLY,
    ParsedTopic,
    WorkerAddress,
    check_namespace,
    from_worker_topic,
    to_worker_topic,
)

_log = logging.getLogger(__name__)

DEFAULT_RETRANSMIT_AFTER_SECONDS: Final = 5.0
DEFAULT_MAX_RETRANSMIT_INTERVAL_SECONDS: Final = 60.0
DEFAULT_MAX_OUTBOX_MESSAGES: Final = 10_000
DEFAULT_MAX_OUTBOX_BYTES: Final = 64 * 1024 * 1024
DEFAULT_MAX_OUTBOX_AGE_SECONDS: Final = 24 * 3600.0
DEFAULT_DEDUPE_IDS: Final = 65_536
DEFAULT_MAX_STREAMS: Final = 65_536
MAX_REMEMBERED_MISSING_PER_STREAM: Final = 4096


class OutboxFullError(RetryableError):
    """The outbox of unacknowledged critical messages is full; the peer is not acknowledging."""

    default_reason = "transport_outbox_full"


@dataclass(frozen=True, kw_only=True)
class Outgoing:
    """A message ready for the wire."""

    peer: WorkerAddress
    topic: str
    payload: bytes
    message: Message


@dataclass(frozen=True, kw_only=True)
class Received:
    """A message delivered to the application, with the worker it concerns."""

    peer: WorkerAddress
    message: Message

    @property
    def body(self) -> Body:
        return self.message.body


@dataclass(frozen=True, kw_only=True)
class Incoming:
    """What to do with one received payload: deliver it (or not), and what to send back."""

    delivered: Received | None
    replies: tuple[Outgoing, ...] = ()


@dataclass(frozen=True, kw_only=True)
class TransportStats:
    """Counters for metrics (a snapshot)."""

    sent: int = 0
    retransmitted: int = 0
    received: int = 0
    delivered: int = 0
    duplicates: int = 0
    invalid: int = 0
    acks_received: int = 0
    gaps: int = 0
    messages_missing: int = 0
    recovered: int = 0
    out_of_order: int = 0
    expired: int = 0
    outbox_messages: int = 0
    outbox_bytes: int = 0
    reconnects: int = 0
    dropped_receive_queue_full: int = 0


class OutboxJournal(Protocol):
    """Durable copy of the outbox (the control plane's, so a restart loses and repeats nothing).

    The session calls it under the transport's lock: ``keep`` when a critical message enters
    the outbox, ``forget`` when entries leave it (acked, discarded, expired); ``load`` returns
    what was kept, oldest first, to :meth:`Session.restore` at start.
    """

    def keep(self, outgoing: Outgoing) -> None: ...

    def forget(self, message_ids: list[str]) -> None: ...

    def load(self) -> list[tuple[WorkerAddress, bytes]]: ...


@dataclass(kw_only=True)
class _Pending:
    outgoing: Outgoing
    first_sent: float
    next_due: float
    interval: float
    attempts: int = 1


@dataclass(kw_only=True)
class _StreamState:
    last_seq: int
    missing: OrderedDict[int, None] = field(default_factory=OrderedDict)


class Session:
    """One endpoint's protocol state: the worker's (``side="worker"``) or the control plane's."""

    def __init__(
        self,
        *,
        side: Side,
        namespace: str,
        local: WorkerAddress | None = None,
        retransmit_after_seconds: float = DEFAULT_RETRANSMIT_AFTER_SECONDS,
        max_retransmit_interval_seconds: float = DEFAULT_MAX_RETRANSMIT_INTERVAL_SECONDS,
        max_outbox_messages: int = DEFAULT_MAX_OUTBOX_MESSAGES,
        max_outbox_bytes: int = DEFAULT_MAX_OUTBOX_BYTES,
        max_outbox_age_seconds: float = DEFAULT_MAX_OUTBOX_AGE_SECONDS,
        dedupe_ids: int = DEFAULT_DEDUPE_IDS,
        max_streams: int = DEFAULT_MAX_STREAMS,
        wall_clock: Callable[[], datetime] | None = None,
        journal: OutboxJournal | None = None,
    ) -> None:
        if (side == "worker") != (local is not None):
            raise ValueError("a worker session needs its own address; a control plane none")
        if retransmit_after_seconds <= 0 or max_retransmit_interval_seconds <= 0:
            raise ValueError("retransmission intervals must be positive")
        self.side: Side = side
        self.namespace = check_namespace(namespace)
        self.local = local
        self._retransmit_after = retransmit_after_seconds
        self._max_interval = max(max_retransmit_interval_seconds, retransmit_after_seconds)
        self._max_outbox_messages = max_outbox_messages
        self._max_outbox_bytes = max_outbox_bytes
        self._max_age = max_outbox_age_seconds
        self._dedupe_capacity = dedupe_ids
        self._max_streams = max_streams
        self._wall_clock = wall_clock or (lambda: datetime.now(UTC))
        self._streams: dict[WorkerAddress, MessageStream] = {}
        self._outbox: OrderedDict[str, _Pending] = OrderedDict()
        self._outbox_bytes = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._receive_streams: OrderedDict[tuple[WorkerAddress, str], _StreamState] = OrderedDict()
        self._stats = TransportStats()
        self._peer_side: Side = "controlplane" if side == "worker" else "worker"
        self._journal = journal

    def restore(self, *, now: float) -> int:
        """Put the journal's messages back into the outbox (same ids, seq and bytes), due at
        once; the peer drops any it already got as duplicates. Returns how many."""
        if self._journal is None:
            return 0
        restored = 0
        for peer, payload in self._journal.load():
            try:
                message = Message.parse(payload, sender=self.side)
            except MessageError:
                _log.warning("transport.journal_entry_invalid", extra={"peer": str(peer)})
                continue
            outgoing = Outgoing(
                peer=peer, topic=self._topic_for(peer), payload=payload, message=message
            )
            self._outbox[message.id] = _Pending(
                outgoing=outgoing, first_sent=now, next_due=now, interval=self._retransmit_after
            )
            self._outbox_bytes += len(payload)
            restored += 1
        return restored

    # -- helpers -----------------------------------------------------------------------------
    def _count(self, **increments: int) -> None:
        values = {k: getattr(self._stats, k) + v for k, v in increments.items()}
        self._stats = replace(self._stats, **values)

    def stats(self) -> TransportStats:
        return replace(
            self._stats, outbox_messages=len(self._outbox), outbox_bytes=self._outbox_bytes
        )

    def note_reconnect(self) -> None:
        self._count(reconnects=1)

    def _resolve_peer(self, peer: WorkerAddress | None) -> WorkerAddress:
        if self.local is not None:
            if peer is not None and peer != self.local:
                raise ValueError("a worker sends only on its own topic")
            return self.local
        if peer is None:
            raise ValueError("the control plane must say which worker a message is for")
        return peer

    def _topic_for(self, peer: WorkerAddress) -> str:
        if self.side == "worker":
            return from_worker_topic(self.namespace, peer)
        return to_worker_topic(self.namespace, peer)

    def _stream(self, peer: WorkerAddress) -> MessageStream:
        stream = self._streams.get(peer)
        if stream is None:
            stream = MessageStream(clock=self._wall_clock)
            self._streams[peer] = stream
        return stream

    @property
    def subscription(self) -> str:
        """The topic filter this side subscribes to."""
        if self.local is not None:
            return to_worker_topic(self.namespace, self.local)
        return f"{self.namespace}/{WRITEONLY}/+/+"

    # -- sending -----------------------------------------------------------------------------
    def prepare(self, body: Body, *, now: float, peer: WorkerAddress | None = None) -> Outgoing:
        """Number ``body`` and (if critical) keep it until acknowledged."""
        if self.side not in type(body).SENDERS:
            raise ValueError(f"the {self.side} side does not send {body.TYPE} messages")
        target = self._resolve_peer(peer)
        self._expire(now)
        if body.CRITICAL and len(self._outbox) >= self._max_outbox_messages:
            raise OutboxFullError(
                f"{len(self._outbox)} critical messages are waiting for acknowledgement",
                hint="the peer or the broker is not answering; the message was not queued",
            )
        message = self._stream(target).next(body)
        payload = message.to_json()
        if body.CRITICAL and self._outbox_bytes + len(payload) > self._max_outbox_bytes:
            raise OutboxFullError(
                f"unacknowledged critical messages hold {self._outbox_bytes} bytes",
                hint="the peer or the broker is not answering; the message was not queued",
            )
        outgoing = Outgoing(
            peer=target, topic=self._topic_for(target), payload=payload, message=message
        )
        if body.CRITICAL:
            self._outbox[message.id] = _Pending(
                outgoing=outgoing,
                first_sent=now,
                next_due=now + self._retransmit_after,
                interval=self._retransmit_after,
            )
            self._outbox_bytes += len(payload)
            if self._journal is not None:
                self._journal.keep(outgoing)
        self._count(sent=1)
        return outgoing

    def last_will(self) -> Outgoing:
        """The worker's ``gone`` message, to register as the MQTT last will."""
        if self.local is None:
            raise ValueError("only a worker has a last will")
        message = self._stream(self.local).last_will(Gone(worker_id=self.local.worker_id))
        return Outgoing(
            peer=self.local,
            topic=self._topic_for(self.local),
            payload=message.to_json(),
            message=message,
        )

    def _expire(self, now: float) -> None:
        while self._outbox:
            message_id, entry = next(iter(self._outbox.items()))
            if now - entry.first_sent < self._max_age:
                return
            self._drop(message_id)
            self._count(expired=1)
            _log.warning(
                "transport.outbox_expired",
                extra={
                    "message_id": message_id,
                    "type": entry.outgoing.message.type,
                    "peer": str(entry.outgoing.peer),
                    "attempts": entry.attempts,
                },
            )

    def _drop(self, message_id: str) -> _Pending | None:
        entry = self._outbox.pop(message_id, None)
        if entry is not None:
            self._outbox_bytes -= len(entry.outgoing.payload)
            if self._journal is not None:
                self._journal.forget([message_id])
        return entry

    def due(self, now: float) -> list[Outgoing]:
        """Critical messages whose acknowledgement is overdue, to send again."""
        self._expire(now)
        result = []
        for entry in self._outbox.values():
            if entry.next_due <= now:
                entry.attempts += 1
                entry.interval = min(entry.interval * 2, self._max_interval)
                entry.next_due = now + entry.interval
                result.append(entry.outgoing)
        self._count(retransmitted=len(result))
        return result

    def pending(self, now: float) -> list[Outgoing]:
        """Every unacknowledged critical message (to resend after a reconnect), oldest first."""
        self._expire(now)
        for entry in self._outbox.values():
            entry.attempts += 1
            entry.next_due = now + entry.interval
        self._count(retransmitted=len(self._outbox))
        return [entry.outgoing for entry in self._outbox.values()]

    def pending_for(self, peer: WorkerAddress, now: float) -> list[Outgoing]:
        """Every unacknowledged critical message to ``peer`` (to resend when it reconnects)."""
        self._expire(now)
        result = []
        for entry in self._outbox.values():
            if entry.outgoing.peer == peer:
                entry.attempts += 1
                entry.next_due = now + entry.interval
                result.append(entry.outgoing)
        self._count(retransmitted=len(result))
        return result

    def discard_pending(self, peer: WorkerAddress) -> int:
        """Forget unacknowledged messages to ``peer`` (the worker is gone). Returns how many."""
        ids = [i for i, e in self._outbox.items() if e.outgoing.peer == peer]
        for message_id in ids:
            self._drop(message_id)
        return len(ids)

    def is_pending(self, message_id: str) -> bool:
        return message_id in self._outbox

    # -- receiving ---------------------------------------------------------------------------
    def incoming(self, topic: str, payload: bytes, *, now: float) -> Incoming:
        """Judge one payload from the broker. Invalid payloads are counted and dropped."""
        self._count(received=1)
        try:
            parsed = self._parse_topic(topic)
            message = Message.parse(payload, sender=self._peer_side)
            _check_body_matches_topic(message.body, parsed.address)
        except MessageError as exc:
            self._count(invalid=1)
            _log.warning(
                "transport.message_invalid",
                extra={"topic": topic[:256], "bytes": len(payload), "error": exc.message},
            )
            return Incoming(delivered=None)
        peer = parsed.address
        if isinstance(message.body, Ack):
            self._count(acks_received=1)
            entry = self._outbox.get(message.body.of)
            if entry is not None and entry.outgoing.peer == peer:
                self._drop(message.body.of)
        replies: tuple[Outgoing, ...] = ()
        if message.critical:
            replies = (self.prepare(Ack(of=message.id), now=now, peer=peer),)
        if message.id in self._seen:
            self._seen.move_to_end(message.id)
            self._count(duplicates=1)
            return Incoming(delivered=None, replies=replies)
        self._remember(message.id)
        self._track(peer, message)
        if isinstance(message.body, Ack):
            return Incoming(delivered=None, replies=replies)
        self._count(delivered=1)
        return Incoming(delivered=Received(peer=peer, message=message), replies=replies)

    def _parse_topic(self, topic: str) -> ParsedTopic:
        parsed = ParsedTopic.parse(self.namespace, topic)
        expected = READONLY if self.side == "worker" else WRITEONLY
        if parsed.direction != expected:
            raise MessageError("a message arrived on the wrong direction's topic")
        if self.local is not None and parsed.address != self.local:
            raise MessageError("a message arrived on another worker's topic")
        return parsed

    def forget_delivery(self, message_id: str) -> None:
        """The application could not take the message: let a retransmission deliver it."""
        self._seen.pop(message_id, None)
        self._count(delivered=-1, dropped_receive_queue_full=1)

    def _remember(self, message_id: str) -> None:
        self._seen[message_id] = None
        while len(self._seen) > self._dedupe_capacity:
            self._seen.popitem(last=False)

    def _track(self, peer: WorkerAddress, message: Message) -> None:
        if message.seq == 0:
            return
        key = (peer, message.stream)
        state = self._receive_streams.get(key)
        if state is None:
            # The first message seen of a stream sets its baseline (a restarted receiver joins
            # streams in the middle; that is not loss).
            self._receive_streams[key] = _StreamState(last_seq=message.seq)
            while len(self._receive_streams) > self._max_streams:
                self._receive_streams.popitem(last=False)
            return
        self._receive_streams.move_to_end(key)
        if message.seq == state.last_seq + 1:
            state.last_seq = message.seq
            return
        if message.seq > state.last_seq:
            missing = message.seq - state.last_seq - 1
            for seq in range(state.last_seq + 1, message.seq):
                state.missing[seq] = None
                if len(state.missing) > MAX_REMEMBERED_MISSING_PER_STREAM:
                    state.missing.popitem(last=False)
            self._count(gaps=1, messages_missing=missing)
            _log.warning(
                "transport.sequence_gap",
                extra={
                    "peer": str(peer),
                    "stream": message.stream,
                    "after_seq": state.last_seq,
                    "seq": message.seq,
                    "missing": missing,
                },
            )
            state.last_seq = message.seq
            return
        if message.seq in state.missing:
            del state.missing[message.seq]
            self._count(recovered=1)
        else:
            self._count(out_of_order=1)


def _check_body_matches_topic(body: Body, address: WorkerAddress) -> None:
    if isinstance(body, Register) and (
        body.pool_id != address.pool_id or body.worker_id != address.worker_id
    ):
        raise MessageError("a register message names another pool or worker than its topic")
    if isinstance(body, Gone) and body.worker_id != address.worker_id:
        raise MessageError("a gone message names another worker than its topic")
