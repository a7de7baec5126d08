"""The reliability rules (session state machine) through the in-memory broker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hardened_launcher.transport.memory import MemoryBroker
from hardened_launcher.transport.messages import (
    Accept,
    Ack,
    Assign,
    Cancel,
    Heartbeat,
    Message,
    Register,
    Status,
)
from hardened_launcher.transport.session import OutboxFullError, Session
from hardened_launcher.transport.topics import WorkerAddress

W1 = WorkerAddress(pool_id="pool-a", worker_id="w1")


def test_critical_messages_are_acked_and_leave_the_outbox() -> None:
    broker = MemoryBroker()
    cp = broker.control_plane()
    worker = broker.worker("pool-a", "w1")
    cp.start()
    worker.start()
    sent = worker.send(Accept(run_id="r1", lease_id="l1"))
    got = cp.receive(timeout_seconds=0)
    assert got is not None
    assert got.message == sent
    assert got.peer == W1
    assert worker.stats().outbox_messages == 0
    assert worker.receive(timeout_seconds=0) is None  # the ack is not delivered
    heartbeat = worker.send(Heartbeat(state="IDLE"))
    assert not worker.session.is_pending(heartbeat.id)


def test_lost_critical_message_is_retransmitted_and_the_gap_recovered() -> None:
    broker = MemoryBroker(session_options={"retransmit_after_seconds": 5.0})
    cp = broker.control_plane()
    worker = broker.worker("pool-a", "w1")
    cp.start()
    worker.start()
    broker.drop_next(1)
    lost = worker.send(Status(run_id="r1", state="RUNNING"))
    after = worker.send(Status(run_id="r1", state="FINISHED", exit_code=0))
    assert cp.receive(timeout_seconds=0).message == after  # type: ignore[union-attr]
    assert cp.stats().gaps == 0  # the first message of a stream sets its baseline
    broker.advance(4.9)
    assert cp.receive(timeout_seconds=0) is None
    broker.advance(0.2)
    again = cp.receive(timeout_seconds=0)
    assert again is not None
    assert again.message == lost
    assert worker.stats().outbox_messages == 0
    assert worker.stats().retransmitted == 1


def test_gap_is_detected_and_late_arrival_counted_as_recovered() -> None:
    broker = MemoryBroker(session_options={"retransmit_after_seconds": 1.0})
    cp = broker.control_plane()
    worker = broker.worker("pool-a", "w1")
    cp.start()
    worker.start()
    worker.send(Heartbeat(state="IDLE"))
    broker.drop_next(2)
    worker.send(Heartbeat(state="IDLE"))
    worker.send(Status(run_id="r1", state="RUNNING"))
    worker.send(Heartbeat(state="BUSY"))
    stats = cp.stats()
    assert (stats.gaps, stats.messages_missing) == (1, 2)
    broker.advance(1.0)
    assert cp.stats().recovered == 1
    assert [r.message.seq for r in iter(lambda: cp.receive(timeout_seconds=0), None)] == [1, 4, 3]


def test_duplicates_are_not_delivered_but_acked_again() -> None:
    broker = MemoryBroker(session_options={"retransmit_after_seconds": 1.0})
    cp = broker.control_plane()
    worker = broker.worker("pool-a", "w1")
    cp.start()
    worker.start()
    worker.send(Heartbeat(state="IDLE"))
    # The ack is lost: the worker retransmits, the control plane must not deliver twice.
    original_route = broker._route

    def lose_acks(outgoing, *, will=False):  # type: ignore[no-untyped-def]
        if outgoing.message.type == "ack":
            return
        original_route(outgoing, will=will)

    broker._route = lose_acks  # type: ignore[method-assign]
    sent = worker.send(Status(run_id="r1", state="RUNNING"))
    broker.advance(1.0)
    broker._route = original_route  # type: ignore[method-assign]
    broker.advance(2.0)
    delivered = [r.message.id for r in iter(lambda: cp.receive(timeout_seconds=0), None)]
    assert delivered.count(sent.id) == 1
    assert cp.stats().duplicates >= 1
    assert worker.stats().outbox_messages == 0


def test_outage_keeps_critical_messages_and_delivers_them_once() -> None:
    broker = MemoryBroker()
    cp = broker.control_plane()
    worker = broker.worker("pool-a", "w1")
    cp.start()
    worker.start()
    broker.go_down()
    statuses = [
        worker.send(Status(run_id=f"r{i}", state="FINISHED", exit_code=0)) for i in range(5)
    ]
    worker.send(Heartbeat(state="IDLE"))  # lost, and that is fine
    assert cp.receive(timeout_seconds=0) is None
    broker.come_up()
    got = [r.message for r in iter(lambda: cp.receive(timeout_seconds=0), None)]
    assert got == statuses
    assert worker.stats().outbox_messages == 0


def test_crash_publishes_the_last_will_and_clean_close_says_bye() -> None:
    broker = MemoryBroker()
    cp = broker.control_plane()
    crashed = broker.worker("pool-a", "w1")
    clean = broker.worker("pool-a", "w2")
    for t in (cp, crashed, clean):
        t.start()
    broker.crash(crashed)
    clean.close(bye_reason="drained")
    got = [
        (r.peer.worker_id, r.message.type)
        for r in iter(lambda: cp.receive(timeout_seconds=0), None)
    ]
    assert got == [("w1", "gone"), ("w2", "bye")]


def test_acks_only_count_from_the_peer_the_message_went_to() -> None:
    cp = Session(side="controlplane", namespace="spacelift")
    other = Session(
        side="worker", namespace="spacelift", local=WorkerAddress(pool_id="pool-b", worker_id="w9")
    )
    out = cp.prepare(Cancel(run_id="r1"), now=0.0, peer=W1)
    forged = other.prepare(Heartbeat(state="IDLE"), now=0.0)
    # pool-b acknowledges pool-a's message: ignored.
    ack = other.prepare(Ack(of=out.message.id), now=0.0)
    cp.incoming(ack.topic, ack.payload, now=0.0)
    assert cp.is_pending(out.message.id)
    assert forged.topic == "spacelift/writeonly/pool-b/w9"


def test_register_must_match_its_topic() -> None:
    cp = Session(side="controlplane", namespace="spacelift")
    liar = Session(side="worker", namespace="spacelift", local=W1)
    out = liar.prepare(Register(worker_id="w2", pool_id="pool-a", version="1"), now=0.0)
    assert cp.incoming(out.topic, out.payload, now=0.0).delivered is None
    assert cp.stats().invalid == 1


def test_wrong_direction_and_foreign_worker_topics_are_invalid() -> None:
    worker = Session(side="worker", namespace="spacelift", local=W1)
    cp = Session(side="controlplane", namespace="spacelift")
    to_w2 = cp.prepare(
        Cancel(run_id="r"), now=0.0, peer=WorkerAddress(pool_id="pool-a", worker_id="w2")
    )
    assert worker.incoming(to_w2.topic, to_w2.payload, now=0.0).delivered is None
    assert (
        worker.incoming("spacelift/writeonly/pool-a/w1", to_w2.payload, now=0.0).delivered is None
    )
    assert worker.incoming("other/readonly/pool-a/w1", to_w2.payload, now=0.0).delivered is None
    assert worker.stats().invalid == 3


def test_sides_send_only_their_types() -> None:
    worker = Session(side="worker", namespace="spacelift", local=W1)
    with pytest.raises(ValueError, match="does not send"):
        worker.prepare(Cancel(run_id="r"), now=0.0)
    cp = Session(side="controlplane", namespace="spacelift")
    with pytest.raises(ValueError, match="which worker"):
        cp.prepare(Cancel(run_id="r"), now=0.0)


def test_outbox_is_bounded_and_never_drops_silently() -> None:
    cp = Session(side="controlplane", namespace="spacelift", max_outbox_messages=3)
    for i in range(3):
        cp.prepare(Cancel(run_id=f"r{i}"), now=0.0, peer=W1)
    with pytest.raises(OutboxFullError) as caught:
        cp.prepare(Cancel(run_id="r3"), now=0.0, peer=W1)
    assert caught.value.retryable
    assert cp.discard_pending(W1) == 3
    cp.prepare(Cancel(run_id="r3"), now=0.0, peer=W1)


def test_outbox_entries_expire_and_retransmission_backs_off() -> None:
    cp = Session(
        side="controlplane",
        namespace="spacelift",
        retransmit_after_seconds=1.0,
        max_retransmit_interval_seconds=4.0,
        max_outbox_age_seconds=100.0,
    )
    cp.prepare(
        Assign.with_envelope(
            run_id="r",
            lease_id="l",
            lease_expires_at=datetime.now(UTC),
            envelope=b"x",
        ),
        now=0.0,
        peer=W1,
    )
    times = [t for t in range(20) if cp.due(float(t))]
    assert times == [1, 3, 7, 11, 15, 19]
    assert cp.due(101.0) == []
    assert cp.stats().expired == 1
    assert cp.stats().outbox_messages == 0


def test_messages_through_the_fake_are_real_wire_messages() -> None:
    broker = MemoryBroker()
    worker = broker.worker("pool-a", "w1")
    worker.start()
    sent = worker.send(Heartbeat(state="BUSY", running=("r1",)))
    assert Message.parse(broker.published[-1].payload, sender="worker") == sent
