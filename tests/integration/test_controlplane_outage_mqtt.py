"""A real mosquitto outage longer than every grace does not crash a healthy run (issue 18).

The coordinator runs in this process on ``MqttTransport.for_control_plane`` against a real
mosquitto, with short limits (heartbeat timeout 4 s, lost-run grace 3 s); a worker on
``MqttTransport.for_worker`` runs a run and heartbeats it every 0.5 s. mosquitto is stopped (it
publishes the live worker's will as it shuts down) for 6 s, longer than both limits, while the
control plane keeps looping, then started again. The transport's own ``connected`` and
``reconnects`` signals must make the control plane wait: the run stays RUNNING, the worker is
never sent ``cancel``, and the run ends with the worker's FINISHED.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardened_launcher.controlplane.dispatch import DispatchPolicy, RunState
from hardened_launcher.controlplane.serve import Coordinator, ServeConfig
from hardened_launcher.controlplane.store import Store
from hardened_launcher.transport import messages as wire
from hardened_launcher.transport.client import MqttTransport
from tests.integration.broker import MosquittoBroker
from tests.unit.test_controlplane_support import KEY_ID, add_pool, add_run

pytestmark = pytest.mark.integration

POLICY = DispatchPolicy(lease_seconds=10, heartbeat_timeout_seconds=4, lost_run_grace_seconds=3)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    mosquitto = MosquittoBroker.create(tmp_path)
    mosquitto.start()
    try:
        yield mosquitto
    finally:
        mosquitto.stop()


class Drill:
    def __init__(self, coordinator: Coordinator, worker: MqttTransport) -> None:
        self.coordinator = coordinator
        self.worker = worker
        self.received: list[wire.Body] = []
        self.running: set[str] = set()
        self._next_heartbeat = 0.0

    def loop(self, seconds: float) -> None:
        """The control plane loops (receive, tick, flush); the worker heartbeats and reads."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.coordinator.step(timeout_seconds=0.05)
            if time.monotonic() >= self._next_heartbeat:
                self._next_heartbeat = time.monotonic() + 0.5
                if self.worker.connected:
                    self.worker.send(
                        wire.Heartbeat(state="BUSY", running=tuple(sorted(self.running)))
                    )
            while (received := self.worker.receive(timeout_seconds=0)) is not None:
                self.received.append(received.body)

    def wait_for(self, kind: type[wire.Body], timeout: float = 15.0) -> wire.Body:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in self.received:
                if isinstance(body, kind):
                    return body
            self.loop(0.1)
        pytest.fail(f"no {kind.TYPE} within {timeout} s")


def test_a_broker_outage_longer_than_every_grace_keeps_the_run(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    pool = broker.pool("pool-a")
    with Store(tmp_path / "store.sqlite3", create=True) as store:
        add_pool(store, key_id=KEY_ID)
        cp = broker.control_plane()
        cp.start(timeout_seconds=10)
        worker = broker.worker(pool, "w-1")
        worker.start(timeout_seconds=10)
        try:
            coordinator = Coordinator(store, cp, config=ServeConfig(policy=POLICY))
            drill = Drill(coordinator, worker)
            worker.send(
                wire.Register(
                    worker_id="w-1",
                    pool_id="pool-a",
                    version="0.1.0",
                    metadata={},
                    max_concurrent_runs=1,
                )
            )
            add_run(store, "run-1", now=time.time(), expires_at=time.time() + 3600)
            assign = drill.wait_for(wire.Assign)
            assert isinstance(assign, wire.Assign)
            worker.send(wire.Accept(run_id="run-1", lease_id=assign.lease_id))
            drill.wait_for(wire.Start)
            drill.running.add("run-1")
            drill.loop(1.0)
            assert store.get_run("run-1").state is RunState.RUNNING

            broker.stop()  # publishes the live worker's will as it shuts down
            drill.loop(6.0)  # longer than the heartbeat timeout and the grace
            broker.start()
            drill.loop(8.0)  # both reconnect; the worker heartbeats the run again

            run = store.get_run("run-1")
            assert (run.state, run.reason) == (RunState.RUNNING, ""), broker.log()
            assert store.get_worker("w-1").worker.alive
            assert not any(isinstance(body, wire.Cancel) for body in drill.received)
            assert cp.stats().reconnects >= 2  # the first connection and the one after

            worker.send(wire.Status(run_id="run-1", state="FINISHED", exit_code=0))
            drill.running.clear()
            deadline = time.monotonic() + 15
            while store.get_run("run-1").state is RunState.RUNNING:
                assert time.monotonic() < deadline, "the final status never arrived"
                drill.loop(0.2)
            assert store.get_run("run-1").state is RunState.FINISHED
        finally:
            worker.close()
            cp.close()
