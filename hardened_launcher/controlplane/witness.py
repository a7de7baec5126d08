"""Audit witnesses at the control plane: check a launcher's ``witness`` message, keep it in the
store, and copy it to object storage beside the run logs (docs/audit.md, "Outside witness").

The store is written by the serve loop only. :class:`WitnessExporter` copies records to object
storage on its own thread (an S3 outage must not stall dispatch): the loop hands it records
through a bounded queue and marks those it reports done as exported. Records not yet exported
when ``serve`` stops are handed over again at the next start.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Final, Protocol

from hardened_launcher.audit.witness import WitnessRecord, check_witness_fields
from hardened_launcher.transport import messages as wire

log = logging.getLogger(__name__)

#: Records waiting for object storage at most (more wait in the store for the next start).
MAX_EXPORT_QUEUE: Final = 10_000
MAX_BACKOFF_SECONDS: Final = 30.0


class WitnessStorage(Protocol):
    def put_witness(self, key_id: str, seq: int, record: bytes) -> None: ...


def witness_record(body: wire.Witness) -> WitnessRecord:
    """The witness record a message carries (its canonical JSON is what is kept)."""
    return check_witness_fields(
        WitnessRecord(
            key_id=body.key_id,
            pool_id=body.pool_id,
            worker_id=body.worker_id,
            seq=body.seq,
            hash=body.hash,
            trigger=body.trigger,
            time=body.time,
            signature=body.signature,
        ),
        where="witness message",
    )


class WitnessExporter:
    """Copies witness records to object storage on a daemon thread, retrying with backoff."""

    def __init__(
        self,
        storage: WitnessStorage,
        *,
        initial_backoff: float = 1.0,
        sleep: Callable[[float], bool] | None = None,
    ) -> None:
        self._storage = storage
        self._todo: queue.Queue[tuple[str, int, bytes]] = queue.Queue(maxsize=MAX_EXPORT_QUEUE)
        self._done: queue.Queue[tuple[str, int]] = queue.Queue()
        self._stop = threading.Event()
        self._initial_backoff = initial_backoff
        self._sleep = sleep or self._stop.wait
        self._queued: set[tuple[str, int]] = set()
        self._thread = threading.Thread(target=self._run, name="witness-export", daemon=True)
        self._thread.start()

    def submit(self, key_id: str, seq: int, record: bytes) -> bool:
        """Queue one record (serve loop); False when the queue is full (it stays in the store)."""
        if (key_id, seq) in self._queued:
            return True
        try:
            self._todo.put_nowait((key_id, seq, record))
        except queue.Full:
            return False
        self._queued.add((key_id, seq))
        return True

    def take_done(self) -> list[tuple[str, int]]:
        """Records stored in object storage since the last call (serve loop)."""
        done: list[tuple[str, int]] = []
        while True:
            try:
                item = self._done.get_nowait()
            except queue.Empty:
                return done
            self._queued.discard(item)
            done.append(item)

    def close(self, timeout_seconds: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout_seconds)

    def _run(self) -> None:
        backoff = self._initial_backoff
        while not self._stop.is_set():
            try:
                key_id, seq, record = self._todo.get(timeout=0.5)
            except queue.Empty:
                continue
            while not self._stop.is_set():
                try:
                    self._storage.put_witness(key_id, seq, record)
                except Exception as exc:  # noqa: BLE001 - retried; the store keeps the record
                    log.warning(
                        "witness.export_failed",
                        extra={"error": type(exc).__name__, "retry_in": backoff},
                    )
                    if self._sleep(backoff):
                        return
                    backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)
                    continue
                backoff = self._initial_backoff
                self._done.put((key_id, seq))
                break
