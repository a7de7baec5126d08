"""Helpers shared by the control-plane unit tests (no tests here).

The control plane talks through ``MemoryBroker().control_plane()`` (the transport package's
fake: same session rules and codec as on the real broker); ``SimWorker`` is a worker on the same
broker that speaks the worker side of the protocol and remembers what it was told.
"""

from __future__ import annotations

from pathlib import Path

from hardened_launcher.controlplane.store import Store
from hardened_launcher.transport import messages as wire
from hardened_launcher.transport.memory import MemoryBroker, MemoryTransport

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
    """The worker side of the protocol, as far as dispatch cares, on a :class:`MemoryBroker`.

    It follows the worker's rule: a run starts only on ``start`` naming a run and lease this
    process accepted (a ``start`` for anything else is ignored).
    """

    def __init__(
        self, worker_id: str, clock: FakeClock, broker: MemoryBroker, *, pool_id: str = POOL
    ) -> None:
        self.id = worker_id
        self.pool_id = pool_id
        self.clock = clock
        self.broker = broker
        self.transport = self._connect()
        #: run id -> every lease ever offered for it (newest last)
        self.offers: dict[str, list[str]] = {}
        #: lease id -> when it expires (Unix seconds), as the assign said
        self.lease_expiry: dict[str, float] = {}
        #: (run id, lease id) accepted by this process -> Unix seconds the accept was sent
        self.pending_accepts: dict[tuple[str, str], float] = {}
        #: every go signal: (run id, lease id, accept sent at)
        self.go_log: list[tuple[str, str, float]] = []
        #: runs this worker is executing (it got `start`)
        self.running: set[str] = set()
        self.cancelled: list[str] = []
        self.commands: list[str] = []
        self.log_urls: dict[str, list[wire.LogUrl]] = {}
        self.ignored_starts = 0

    def _connect(self) -> MemoryTransport:
        transport = self.broker.worker(self.pool_id, self.id)
        transport.start()
        return transport

    def send(self, body: wire.Body) -> wire.Message:
        return self.transport.send(body)

    def register(self, *, max_concurrent_runs: int = 1) -> None:
        self.send(
            wire.Register(
                worker_id=self.id,
                pool_id=self.pool_id,
                version="0.1.0",
                metadata={"zone": "a"},
                max_concurrent_runs=max_concurrent_runs,
            )
        )

    def heartbeat(self, state: wire.WorkerState = "IDLE") -> None:
        self.send(wire.Heartbeat(state=state, running=tuple(sorted(self.running))))

    def accept(self, run_id: str, lease_id: str) -> None:
        self.pending_accepts[(run_id, lease_id)] = self.clock()
        self.send(wire.Accept(run_id=run_id, lease_id=lease_id))

    def status(self, run_id: str, state: wire.RunState, exit_code: int | None = 0) -> None:
        self.send(wire.Status(run_id=run_id, state=state, exit_code=exit_code))
        if state != "RUNNING":
            self.running.discard(run_id)

    def die(self) -> None:
        """SIGKILL: the broker publishes the last will."""
        self.broker.crash(self.transport)
        self.reset(reconnect=False)

    def reset(self, *, reconnect: bool = True) -> None:
        """A new process with the same worker id (the old one vanished without a will)."""
        self.transport.closed = True
        self.offers.clear()
        self.pending_accepts.clear()
        self.running.clear()
        if reconnect:
            self.transport = self._connect()

    def revive(self) -> None:
        """Start a new process after :meth:`die`."""
        if self.transport.closed:
            self.transport = self._connect()

    def deliver_all(self) -> list[wire.Message]:
        delivered: list[wire.Message] = []
        if self.transport.closed:
            return delivered
        while (received := self.transport.receive(timeout_seconds=0)) is not None:
            self.deliver(received.message)
            delivered.append(received.message)
        return delivered

    def deliver(self, message: wire.Message) -> None:
        body = message.body
        if isinstance(body, wire.Assign):
            self.offers.setdefault(body.run_id, []).append(body.lease_id)
            self.lease_expiry[body.lease_id] = body.lease_expires_at.timestamp()
            self.log_urls[body.run_id] = list(body.log_urls)
        elif isinstance(body, wire.Start):
            sent_at = self.pending_accepts.pop((body.run_id, body.lease_id), None)
            if sent_at is None:
                self.ignored_starts += 1
                return
            self.go_log.append((body.run_id, body.lease_id, sent_at))
            self.running.add(body.run_id)
        elif isinstance(body, wire.Cancel):
            self.cancelled.append(body.run_id)
            self.running.discard(body.run_id)
            for key in [k for k in self.pending_accepts if k[0] == body.run_id]:
                del self.pending_accepts[key]
        elif isinstance(body, wire.LogUrls):
            self.log_urls.setdefault(body.run_id, []).extend(body.urls)
        else:
            self.commands.append(body.TYPE)


def deliver(workers: dict[str, SimWorker] | list[SimWorker]) -> None:
    """Let every simulated worker read what reached it."""
    for worker in workers.values() if isinstance(workers, dict) else workers:
        worker.deliver_all()


def sent_starts(cp: MemoryTransport) -> list[wire.Start]:
    """Every `start` the control plane ever sent (first transmissions, not retransmissions)."""
    return [m.body for m in cp.sent if isinstance(m.body, wire.Start)]
