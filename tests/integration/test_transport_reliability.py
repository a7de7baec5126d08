"""Delivery through broker outages and bursts on a real mosquitto."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hardened_launcher.transport.broker_config import BrokerLimits
from hardened_launcher.transport.client import ClientOptions, MqttTransport
from hardened_launcher.transport.messages import Gone, Heartbeat, Status
from hardened_launcher.transport.session import Received
from tests.integration.broker import FAST_OPTIONS, MosquittoBroker, running_broker
from tests.integration.broker import broker as broker  # noqa: PLC0414 - the fixture

pytestmark = pytest.mark.integration


def _drain(transport: MqttTransport, *, until: int, timeout_seconds: float) -> list[Received]:
    got: list[Received] = []
    deadline = time.monotonic() + timeout_seconds
    while len(got) < until and time.monotonic() < deadline:
        item = transport.receive(timeout_seconds=0.2)
        if item is not None:
            got.append(item)
    return got


def _is_own_will(item: Received, worker_id: str) -> bool:
    """The worker's last will (``gone``, seq 0): mosquitto (2.0.11) publishes the wills of
    connected clients when it shuts down, ignoring the will delay, so a broker restart may
    deliver it although the worker is alive. That is broker behaviour, not a duplicate."""
    body = item.message.body
    return (
        isinstance(body, Gone)
        and body.worker_id == worker_id
        and item.message.seq == 0
        and item.peer.worker_id == worker_id
    )


def test_outbox_delivers_through_a_broker_restart_exactly_once(broker: MosquittoBroker) -> None:
    pool = broker.pool("pool-a")
    cp = broker.control_plane()
    worker = broker.worker(pool, "w1", retransmit_after_seconds=0.5)
    cp.start(timeout_seconds=10)
    worker.start(timeout_seconds=10)
    try:
        sent = [worker.send(Status(run_id=f"run-{i}", state="RUNNING")).id for i in range(20)]
        broker.stop()
        # The run goes on during the outage; its status waits in the outbox.
        sent += [
            worker.send(Status(run_id=f"run-{i}", state="FINISHED", exit_code=0)).id
            for i in range(20)
        ]
        time.sleep(1.0)
        broker.start()
        assert worker.wait_connected(15)
        got: list[Received] = []
        deadline = time.monotonic() + 15
        while not set(sent) <= {item.message.id for item in got}:
            assert time.monotonic() < deadline, f"{len(got)} received, {len(sent)} sent"
            got += _drain(cp, until=1, timeout_seconds=0.2)
        time.sleep(1.5)  # room for late retransmissions: none may be delivered twice
        got += _drain(cp, until=1_000, timeout_seconds=0.5)
        wills = [item for item in got if _is_own_will(item, "w1")]
        print(f"broker restart: {len(wills)} will(s) of the live worker delivered")
        messages = [item for item in got if not _is_own_will(item, "w1")]
        ids = [item.message.id for item in messages]
        assert [m.message.type for m in messages if m.message.id not in sent] == []
        assert sorted(ids) == sorted(sent)  # every status, each exactly once
        assert len(ids) == len(set(ids))
        assert len({w.message.id for w in wills}) <= 1, "only the will of the cut connection"
        deadline = time.monotonic() + 10
        while worker.stats().outbox_messages and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker.stats().outbox_messages == 0
        assert worker.stats().reconnects >= 2
    finally:
        worker.close()
        cp.close()


BURST = 20_000


def test_burst_of_qos1_messages_arrives_with_the_configured_queue(broker: MosquittoBroker) -> None:
    pool = broker.pool("pool-a")
    cp = broker.control_plane(
        options=ClientOptions(
            keepalive_seconds=30, reconnect_min_seconds=0.1, receive_queue_size=BURST + 10
        )
    )
    worker = broker.worker(
        pool,
        "w1",
        options=ClientOptions(
            keepalive_seconds=30, reconnect_min_seconds=0.1, paho_max_queued_messages=BURST + 10
        ),
    )
    cp.start(timeout_seconds=10)
    worker.start(timeout_seconds=10)
    try:
        started = time.monotonic()
        for _ in range(BURST):
            worker.send(Heartbeat(state="IDLE"))
        got = _drain(cp, until=BURST, timeout_seconds=60)
        elapsed = time.monotonic() - started
        stats = cp.stats()
        print(f"burst: {len(got)}/{BURST} QoS 1 messages in {elapsed:.2f} s, gaps={stats.gaps}")
        # Everything arrives in order with max_queued_messages=100000 …
        assert len(got) == BURST, f"{stats}"
        assert [item.message.seq for item in got] == list(range(1, BURST + 1))
        assert stats.gaps == 0
    finally:
        worker.close()
        cp.close()


def test_loss_beyond_a_small_broker_queue_is_detected(tmp_path: Path) -> None:
    """… and with a deliberately tiny queue the loss is seen as sequence gaps, not silence."""
    limits = BrokerLimits(max_queued_messages=50, max_inflight_messages=10)
    with running_broker(tmp_path, limits=limits) as small:
        pool = small.pool("pool-a")
        # A subscriber that stops reading: tiny receive queue, blocks the network thread.
        cp = small.control_plane(
            options=ClientOptions(
                keepalive_seconds=30,
                reconnect_min_seconds=0.1,
                receive_queue_size=5,
                receive_block_seconds=10.0,
            )
        )
        worker = small.worker(pool, "w1", options=FAST_OPTIONS)
        cp.start(timeout_seconds=10)
        worker.start(timeout_seconds=10)
        try:
            count = 2_000
            for _ in range(count):
                worker.send(Heartbeat(state="IDLE"))
            time.sleep(1.0)
            got = _drain(cp, until=count, timeout_seconds=8)
            worker.send(Heartbeat(state="BUSY"))  # a later message reveals a tail loss too
            got += _drain(cp, until=1, timeout_seconds=3)
            stats = cp.stats()
            print(f"small queue: {len(got)}/{count + 1} delivered, {stats}")
            assert len(got) < count + 1
            assert stats.gaps >= 1
            assert stats.messages_missing == count + 1 - len(got)
        finally:
            worker.close()
            cp.close()
