"""A hypothesis state machine over the real long-poll transport: a PollServer, two workers of
two pools behind a TCP relay that the machine cuts, messages both ways, worker re-sessions.

Invariants, checked when the network is healed at the end of every run:

* every critical message sent either way is delivered exactly once, to the worker it was sent
  to and never to another (pool A never sees pool B's messages);
* nothing stays unacknowledged in either outbox;
* what each side delivers is exactly what the other sent (same ids: the same bytes parsed).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hardened_launcher.transport.messages import Cancel, Status
from hardened_launcher.transport.poll_client import PollTransport
from hardened_launcher.transport.poll_server import PollServer
from hardened_launcher.transport.session import Received
from hardened_launcher.transport.topics import WorkerAddress
from tests.integration.pollserver import PollHarness
from tests.integration.test_transport_poll import _Relay

pytestmark = pytest.mark.integration

_counter = itertools.count()


class PollMachine(RuleBasedStateMachine):
    harness: PollHarness
    server: PollServer

    def __init__(self) -> None:
        super().__init__()
        root = Path(tempfile.mkdtemp(prefix="hl-poll-machine-"))
        self.harness = PollHarness.create(root)
        self.server = self.harness.start()
        self.relay = _Relay(self.harness.port)
        self.pools = {name: self.harness.pool(name) for name in ("pool-a", "pool-b")}
        self.workers: dict[str, PollTransport] = {}
        self.to_worker: dict[str, list[str]] = {"pool-a": [], "pool-b": []}
        self.to_server: list[str] = []
        self.got_worker: dict[str, list[Received]] = {"pool-a": [], "pool-b": []}
        self.got_server: list[Received] = []
        for name in self.pools:
            self._connect(name)

    def _connect(self, name: str) -> None:
        worker = self.harness.worker(
            self.pools[name], "w1", url=f"https://localhost:{self.relay.port}"
        )
        worker.start(timeout_seconds=15)
        self.workers[name] = worker

    def _collect(self) -> None:
        while (item := self.server.receive(timeout_seconds=0)) is not None:
            if item.body.TYPE != "gone":
                self.got_server.append(item)
        for name, worker in self.workers.items():
            while (got := worker.receive(timeout_seconds=0)) is not None:
                self.got_worker[name].append(got)

    @rule(pool=st.sampled_from(["pool-a", "pool-b"]), count=st.integers(1, 5))
    def control_plane_sends(self, pool: str, count: int) -> None:
        peer = WorkerAddress(pool_id=pool, worker_id="w1")
        for _ in range(count):
            message = self.server.send(Cancel(run_id=f"r{next(_counter)}"), peer=peer)
            self.to_worker[pool].append(message.id)

    @rule(pool=st.sampled_from(["pool-a", "pool-b"]), count=st.integers(1, 5))
    def worker_sends(self, pool: str, count: int) -> None:
        for _ in range(count):
            message = self.workers[pool].send(
                Status(
                    run_id=f"s{next(_counter)}",
                    state="RUNNING",
                    exit_code=None,
                    reason=None,
                    message=None,
                )
            )
            self.to_server.append(message.id)

    @rule()
    def cut_the_network(self) -> None:
        self.relay.cut()

    @rule(down=st.floats(0.05, 0.6))
    def network_down_for_a_while(self, down: float) -> None:
        self.relay.down = True
        self.relay.cut()
        time.sleep(down)
        self.relay.down = False

    @rule(seconds=st.floats(0.0, 0.3))
    def time_passes(self, seconds: float) -> None:
        time.sleep(seconds)
        self._collect()

    @invariant()
    def nothing_reaches_the_wrong_pool(self) -> None:
        self._collect()
        for pool, got in self.got_worker.items():
            other = "pool-b" if pool == "pool-a" else "pool-a"
            assert not {g.message.id for g in got} & set(self.to_worker[other])
        for item in self.got_server:
            assert item.peer.worker_id == "w1"

    def teardown(self) -> None:
        try:
            self.relay.down = False
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                self._collect()
                done = all(
                    len(self.got_worker[p]) >= len(self.to_worker[p]) for p in self.to_worker
                ) and len(self.got_server) >= len(self.to_server)
                idle = self.server.stats().outbox_messages == 0 and all(
                    w.stats().outbox_messages == 0 for w in self.workers.values()
                )
                if done and idle:
                    break
                time.sleep(0.1)
            time.sleep(0.3)
            self._collect()
            for pool, sent in self.to_worker.items():
                assert sorted(g.message.id for g in self.got_worker[pool]) == sorted(sent), pool
            assert sorted(g.message.id for g in self.got_server) == sorted(self.to_server)
            assert self.server.stats().outbox_messages == 0
            assert all(w.stats().outbox_messages == 0 for w in self.workers.values())
        finally:
            for worker in self.workers.values():
                worker.close()
            self.relay.close()
            self.harness.stop()
            shutil.rmtree(self.harness.directory, ignore_errors=True)


TestPollMachine = PollMachine.TestCase
TestPollMachine.settings = settings(
    max_examples=10,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
