"""Helpers shared by the control-plane unit tests (no tests here).

``FakeTransport`` implements the ``serve.Transport`` protocol in memory; ``SimWorker`` speaks
the worker side of the protocol with ``transport.messages`` and remembers what it was told.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hardened_launcher.controlplane.serve import Coordinator
from hardened_launcher.controlplane.store import Store
from hardened_launcher.transport import messages as wire

NAMESPACE = "spacelift"
POOL = "pool-a"
KEY_ID = "k" * 64
T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeTransport:
    """Publishes into a list; ``inbound`` is what ``receive`` hands out next."""

    published: list[tuple[str, bytes]] = field(default_factory=list)
    inbound: list[tuple[str, bytes]] = field(default_factory=list)
    fail_publish: bool = False

    def publish(self, topic: str, payload: bytes) -> None:
        if self.fail_publish:
            from hardened_launcher.errors import RetryableError  # noqa: PLC0415

            raise RetryableError("broker unavailable", reason="broker_unavailable")
        self.published.append((topic, payload))

    def receive(self, timeout_seconds: float) -> Sequence[tuple[str, bytes]]:
        del timeout_seconds
        batch, self.inbound = self.inbound, []
        return batch

    def take(self) -> list[tuple[str, wire.Message]]:
        out = [(t, wire.Message.parse(p, sender="controlplane")) for t, p in self.published]
        self.published.clear()
        return out


def add_pool(store: Store, pool_id: str = POOL, key_id: str = KEY_ID, now: float = T0) -> None:
    store.add_pool(
        pool_id=pool_id,
        name=pool_id,
        certificate_pem=b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        certificate_serial="01",
        certificate_fingerprint="00" * 32,
        key_id=key_id,
        now=now,
    )


def add_run(
    store: Store,
    run_id: str,
    *,
    pool_id: str = POOL,
    key_id: str = KEY_ID,
    now: float = T0,
    expires_at: float = T0 + 86_400,
) -> None:
    store.add_run(
        run_id=run_id,
        pool_id=pool_id,
        spec_sha256="0" * 64,
        key_id=key_id,
        envelope=b"sealed:" + run_id.encode(),
        envelope_expires_at=expires_at,
        now=now,
    )


def open_store(directory: Path) -> Store:
    return Store(directory / "store.sqlite3", create=True)


class SimWorker:
    """The worker side of the protocol, as far as dispatch cares."""

    def __init__(self, worker_id: str, clock: FakeClock, *, pool_id: str = POOL) -> None:
        self.id = worker_id
        self.pool_id = pool_id
        self.clock = clock
        self.stream = wire.MessageStream(clock=lambda: datetime.fromtimestamp(clock(), UTC))
        #: run id -> every lease ever offered for it (newest last)
        self.offers: dict[str, list[str]] = {}
        #: lease id -> when it expires (Unix seconds), as the assign said
        self.lease_expiry: dict[str, float] = {}
        #: accept message id -> (run id, lease id, Unix seconds the accept was sent)
        self.pending_accepts: dict[str, tuple[str, str, float]] = {}
        #: every go signal: (run id, lease id, accept sent at)
        self.go_log: list[tuple[str, str, float]] = []
        #: runs this worker is executing (it got the go ack)
        self.running: set[str] = set()
        self.cancelled: list[str] = []
        self.commands: list[str] = []
        self.log_urls: dict[str, list[wire.LogUrl]] = {}

    @property
    def topic(self) -> str:
        return f"{NAMESPACE}/writeonly/{self.pool_id}/{self.id}"

    def send(self, coordinator: Coordinator, body: wire.Body) -> wire.Message:
        message = self.stream.next(body)
        coordinator.handle(self.topic, message.to_json())
        return message

    def register(self, coordinator: Coordinator, *, max_concurrent_runs: int = 1) -> None:
        self.send(
            coordinator,
            wire.Register(
                worker_id=self.id,
                pool_id=self.pool_id,
                version="0.1.0",
                metadata={"zone": "a"},
                max_concurrent_runs=max_concurrent_runs,
            ),
        )

    def heartbeat(self, coordinator: Coordinator, state: wire.WorkerState = "IDLE") -> None:
        self.send(coordinator, wire.Heartbeat(state=state, running=tuple(sorted(self.running))))

    def accept(self, coordinator: Coordinator, run_id: str, lease_id: str) -> None:
        sent_at = self.clock()
        message = self.send(coordinator, wire.Accept(run_id=run_id, lease_id=lease_id))
        self.pending_accepts[message.id] = (run_id, lease_id, sent_at)

    def die(self, coordinator: Coordinator) -> None:
        will = self.stream.last_will(wire.Gone(worker_id=self.id))
        coordinator.handle(self.topic, will.to_json())
        self.reset()

    def reset(self) -> None:
        self.offers.clear()
        self.pending_accepts.clear()
        self.running.clear()
        self.stream = wire.MessageStream(clock=lambda: datetime.fromtimestamp(self.clock(), UTC))

    def deliver(self, message: wire.Message) -> None:
        body = message.body
        if isinstance(body, wire.Assign):
            self.offers.setdefault(body.run_id, []).append(body.lease_id)
            self.lease_expiry[body.lease_id] = body.lease_expires_at.timestamp()
            self.log_urls[body.run_id] = list(body.log_urls)
        elif isinstance(body, wire.Ack):
            pending = self.pending_accepts.pop(body.of, None)
            if pending is not None:
                # A re-sent accept of a lease already running is answered again: one go.
                if not any(g[:2] == pending[:2] for g in self.go_log):
                    self.go_log.append(pending)
                self.running.add(pending[0])
        elif isinstance(body, wire.Cancel):
            self.cancelled.append(body.run_id)
            self.running.discard(body.run_id)
            for message_id, (run_id, _, _) in list(self.pending_accepts.items()):
                if run_id == body.run_id:
                    del self.pending_accepts[message_id]
        elif isinstance(body, wire.LogUrls):
            self.log_urls.setdefault(body.run_id, []).extend(body.urls)
        else:
            self.commands.append(body.TYPE)


def route(transport: FakeTransport, workers: dict[str, SimWorker]) -> list[wire.Message]:
    """Deliver everything published to the simulated workers; returns the messages."""
    delivered = []
    for topic, message in transport.take():
        worker_id = topic.rsplit("/", 1)[1]
        if worker_id in workers:
            workers[worker_id].deliver(message)
        delivered.append(message)
    return delivered
