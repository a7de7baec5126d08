"""Local health probes: can this launcher run anything now?

:class:`LocalProbes` checks, each time it is called, what a run needs from this host: the
state directory takes a small write and fsync (``disk_full`` on ENOSPC/EDQUOT,
``state_unwritable`` on any other error), so does the audit directory (``audit_unavailable``:
an idle log would only find out at its next record) and Docker answers a ping
(``docker_unavailable``). The audit log's own failures come from the log
(:class:`~.machine.AuditHealth`) and the clock's from control-plane messages
(:class:`~.machine.Received` ``sent_at``).

:class:`ProbeLoop` runs the probes in a daemon thread every ``interval`` seconds and posts
:class:`~.machine.LocalHealth` to the daemon's queue when the set of faults changes, so a hung
Docker socket never blocks the loop that talks to the control plane. It also owns the
clean-up of interrupted run containers: whenever clean-up is owed (Docker was down, or a run
ended without finishing), it calls ``cleanup`` once Docker answers again, and again every
interval until that succeeds.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from hardened_launcher.launcher.machine import LocalHealth

__all__ = ["LocalProbes", "ProbeLoop"]

log = logging.getLogger("hardened_launcher.launcher")

#: Errors of a full disk or quota (everything else is ``state_unwritable``).
_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})

_PROBE_PREFIX: Final = ".probe-"


def _write_fault(directory: Path) -> str | None:
    """Write, fsync and remove a small file in ``directory``: None, or what went wrong."""
    path = directory / f"{_PROBE_PREFIX}{secrets.token_hex(6)}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"probe\n" * 16)
            os.fsync(fd)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)
    except OSError as exc:
        return "disk_full" if exc.errno in _FULL else "state_unwritable"
    return None


class LocalProbes:
    """The probes: ``faults()`` returns the local fault slugs found now (empty: healthy)."""

    def __init__(
        self,
        *,
        state_dir: Path,
        docker_ping: Callable[[], object] | None = None,
        audit_dir: Path | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.docker_ping = docker_ping
        self.audit_dir = audit_dir

    def state_fault(self) -> str | None:
        return _write_fault(self.state_dir)

    def audit_fault(self) -> str | None:
        if self.audit_dir is None:
            return None
        return "audit_unavailable" if _write_fault(self.audit_dir) else None

    def docker_fault(self) -> str | None:
        if self.docker_ping is None:
            return None
        try:
            self.docker_ping()
        except Exception:  # noqa: BLE001 - the SDK raises many types; all mean "unreachable"
            return "docker_unavailable"
        return None

    def faults(self) -> frozenset[str]:
        found = {self.state_fault(), self.audit_fault(), self.docker_fault()}
        return frozenset(f for f in found if f is not None)


class ProbeLoop:
    """Run ``probes`` every ``interval`` seconds in a thread; post changes to ``post``."""

    def __init__(
        self,
        probes: Callable[[], frozenset[str]],
        *,
        post: Callable[[LocalHealth], None],
        interval: float = 2.0,
        cleanup: Callable[[], Any] | None = None,
    ) -> None:
        self.probes = probes
        self.post = post
        self.interval = interval
        self.cleanup = cleanup
        self.last: frozenset[str] = frozenset()
        self._owed = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        #: How many clean-up attempts failed (tests and logs).
        self.cleanup_failures = 0
        self.cleanups = 0

    def owe_cleanup(self) -> None:
        """A run container may be left behind: remove leftovers when Docker allows (any thread)."""
        self._owed.set()
        self._wake.set()

    def wake(self) -> None:
        """Probe now rather than at the next interval (any thread: a run just hit a fault)."""
        self._wake.set()

    @property
    def cleanup_owed(self) -> bool:
        return self._owed.is_set()

    def probe_once(self) -> frozenset[str]:
        try:
            faults = self.probes()
        except Exception:
            log.warning("launcher.probe_failed", exc_info=True)
            faults = frozenset({"state_unwritable"})
        if "docker_unavailable" in faults:
            self._owed.set()  # a run interrupted by the outage may have left its container
        if faults != self.last:
            self.last = faults
            log.info("launcher.local_faults faults=%s", ",".join(sorted(faults)) or "none")
            self.post(LocalHealth(faults=faults))
        if self.cleanup is not None and self._owed.is_set() and "docker_unavailable" not in faults:
            self._owed.clear()
            try:
                self.cleanup()
                self.cleanups += 1
            except Exception:
                self.cleanup_failures += 1
                self._owed.set()
                log.warning("launcher.cleanup_failed", exc_info=True)
        return faults

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.probe_once()
            self._wake.wait(self.interval)
            self._wake.clear()

    def start(self) -> ProbeLoop:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="local-probes", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10.0)
