"""A transport's receive queue that another thread can wake without putting a message in it.

``controlplane serve`` waits for messages in ``Transport.receive``; when another process
commits a run to the store, serve's doorbell (:mod:`hardened_launcher.controlplane.doorbell`)
calls the transport's ``wake`` so that wait ends at once and serve looks at the store. A wake
takes no slot of the bounded queue (a message never finds it full because of wakes) and
several wakes before the next ``get`` are one.
"""

from __future__ import annotations

import queue
import time
from typing import Protocol, TypeVar, runtime_checkable

_T = TypeVar("_T")


class WakeableQueue(queue.Queue[_T]):
    """:class:`queue.Queue` whose blocked (or next) ``get`` ends early after :meth:`wake`.

    A ``get`` that finds the queue empty and a pending wake consumes the wake and raises
    :class:`queue.Empty`, as after a timeout. A ``get`` that finds a message returns it and
    leaves the wake pending (the caller sees it once the queue is drained).
    """

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._woken = False

    def wake(self) -> None:
        with self.mutex:
            self._woken = True
            self.not_empty.notify_all()

    def get(self, block: bool = True, timeout: float | None = None) -> _T:
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        with self.not_empty:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._qsize():
                if self._woken:
                    self._woken = False
                    raise queue.Empty
                if not block:
                    raise queue.Empty
                if deadline is None:
                    self.not_empty.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise queue.Empty
                self.not_empty.wait(remaining)
            item = self._get()
            self.not_full.notify()
            return item


@runtime_checkable
class Wakeable(Protocol):
    """A transport whose ``receive`` wait :meth:`wake` can end early (it returns ``None``)."""

    def wake(self) -> None: ...
