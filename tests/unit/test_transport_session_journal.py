"""Session + OutboxJournal: what a durable outbox sees, and a restart that restores it."""

from __future__ import annotations

from pathlib import Path

from hardened_launcher.controlplane.store import SqliteOutboxJournal, Store
from hardened_launcher.transport.messages import Ack, Cancel, Drain, Heartbeat, Message
from hardened_launcher.transport.session import Session
from hardened_launcher.transport.topics import WorkerAddress, from_worker_topic

PEER = WorkerAddress(pool_id="pool-a", worker_id="w1")
OTHER = WorkerAddress(pool_id="pool-b", worker_id="w1")


def _ack_from(session: Session, peer: WorkerAddress, message: Message) -> None:
    worker = Session(side="worker", namespace="spacelift", local=peer)
    ack = worker.prepare(Ack(of=message.id), now=0.0)
    session.incoming(from_worker_topic("spacelift", peer), ack.payload, now=0.0)


def test_journal_keeps_critical_messages_until_acked_and_restores_them(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    Store(path, create=True).close()
    journal = SqliteOutboxJournal(path)
    session = Session(side="controlplane", namespace="spacelift", journal=journal)
    kept = [session.prepare(Cancel(run_id=f"r{i}"), now=0.0, peer=PEER) for i in range(3)]
    other = session.prepare(Drain(), now=0.0, peer=OTHER)
    assert len(journal.load()) == 4
    _ack_from(session, PEER, kept[0].message)
    _ack_from(session, OTHER, kept[1].message)  # another pool's ack clears nothing
    assert [payload for _, payload in journal.load()] == [
        kept[1].payload,
        kept[2].payload,
        other.payload,
    ]
    assert session.discard_pending(OTHER) == 1
    journal.close()

    # A new process: the same messages (ids, seq, bytes) are back in the outbox, due at once.
    journal = SqliteOutboxJournal(path)
    restored = Session(side="controlplane", namespace="spacelift", journal=journal)
    assert restored.restore(now=100.0) == 2
    again = restored.pending_for(PEER, 100.0)
    assert [o.message.id for o in again] == [kept[1].message.id, kept[2].message.id]
    assert [o.payload for o in again] == [kept[1].payload, kept[2].payload]
    _ack_from(restored, PEER, kept[1].message)
    _ack_from(restored, PEER, kept[2].message)
    assert journal.load() == []
    journal.close()


def test_non_critical_messages_never_reach_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    Store(path, create=True).close()
    journal = SqliteOutboxJournal(path)
    worker = Session(side="worker", namespace="spacelift", local=PEER, journal=journal)
    worker.prepare(Heartbeat(state="IDLE", running=()), now=0.0)
    assert journal.load() == []
    journal.close()
