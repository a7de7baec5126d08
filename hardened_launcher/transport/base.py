"""The transport seam: a small Protocol with a real implementation (:mod:`.client`) and an
in-memory fake (:mod:`.memory`), so the daemon and the control plane test without a broker."""

from __future__ import annotations

from typing import Protocol

from hardened_launcher.transport.messages import Body, Message
from hardened_launcher.transport.session import Received, TransportStats
from hardened_launcher.transport.topics import WorkerAddress


class Transport(Protocol):
    """One endpoint: a worker (``local`` is its address) or the control plane (``local`` None).

    * ``send``: a worker passes no ``peer``; the control plane names the worker. Critical
      bodies are retransmitted until acknowledged; raises ``OutboxFullError`` when too many wait.
    * ``receive``: the next delivered message (never a duplicate, never an ack), or ``None``.
    * ``close``: a worker may say ``bye`` first; a clean close does not fire the last will.
    """

    @property
    def local(self) -> WorkerAddress | None: ...

    @property
    def connected(self) -> bool: ...

    def start(self, *, timeout_seconds: float = 30.0) -> None: ...

    def send(self, body: Body, *, peer: WorkerAddress | None = None) -> Message: ...

    def receive(self, *, timeout_seconds: float | None = None) -> Received | None: ...

    def discard_pending(self, peer: WorkerAddress) -> int: ...

    def stats(self) -> TransportStats: ...

    def close(self, *, bye_reason: str | None = None, timeout_seconds: float = 5.0) -> None: ...
