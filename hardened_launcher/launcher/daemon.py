"""The launcher daemon's I/O loop around :class:`~.machine.LauncherMachine`.

One thread owns the transport and the machine: it turns messages, ticks, signals and reports
from run threads into events, and carries out the actions the machine returns (send, launch a
run thread, set a cancel event, forward log URLs, log, exit). Run threads never touch the
transport or the machine: they post events to the loop's queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from hardened_launcher.audit import AuditEvent, Outcome
from hardened_launcher.executor.logsink import LogSink
from hardened_launcher.launcher.gates import RunContext, RunFunction, log_shipper
from hardened_launcher.launcher.health import Readiness
from hardened_launcher.launcher.machine import (
    Action,
    AuditHealth,
    CancelRun,
    Connected,
    Event,
    Exit,
    ForwardLogUrls,
    LauncherMachine,
    LaunchRun,
    LogUrlsWanted,
    Note,
    Received,
    RunEnded,
    RunPhase,
    RunStarted,
    Send,
    ShippingLogs,
    StartRun,
    Terminate,
    Tick,
)
from hardened_launcher.launcher.metrics import LauncherMetrics
from hardened_launcher.transport.base import Transport
from hardened_launcher.transport.messages import Assign, Status, Witness

__all__ = ["AuditHealthSource", "Daemon"]

log = logging.getLogger("hardened_launcher.launcher")


class AuditHealthSource(Protocol):
    """:class:`~hardened_launcher.audit.ChainedAuditLog` as the loop uses it."""

    @property
    def healthy(self) -> bool: ...

    @property
    def failure(self) -> str | None: ...

    def checkpoint_if_due(self) -> None: ...

    def try_recover(self) -> bool: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(kw_only=True)
class _RunHandle:
    cancel: threading.Event
    thread: threading.Thread | None = None
    sink: LogSink | None = None
    early_urls: list[Any] = field(default_factory=list)


class Daemon:
    """Drives ``machine`` with ``transport``; ``run_function`` runs each started assignment."""

    def __init__(
        self,
        *,
        machine: LauncherMachine,
        transport: Transport,
        run_function: RunFunction,
        audit: AuditHealthSource | None = None,
        clock: Callable[[], datetime] = _utc_now,
        poll_seconds: float = 0.2,
        checkpoint_seconds: float = 1.0,
        metrics: LauncherMetrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        on_run_ended: Callable[[Status], None] | None = None,
    ) -> None:
        self.machine = machine
        self.transport = transport
        self.run_function = run_function
        self.audit = audit
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.checkpoint_seconds = checkpoint_seconds
        self.metrics = metrics
        self.monotonic = monotonic
        #: Called in the loop with each final status (``start``: owe a leftover clean-up).
        self.on_run_ended = on_run_ended
        #: Sinks of earlier runs still shipping spooled chunks (see :meth:`adopt_log_sinks`).
        self.resumed: dict[str, Any] = {}
        self.events: queue.Queue[Event] = queue.Queue()
        self.runs: dict[str, _RunHandle] = {}
        self._runs_lock = threading.Lock()
        self._reconnects = 0
        self._last_checkpoint = 0.0
        self.exit: Exit | None = None
        self._stop = threading.Event()

    # -- entry points for other threads ----------------------------------------------------
    def terminate(self) -> None:
        """SIGTERM/SIGINT (safe from a signal handler: only queues an event)."""
        self.events.put(Terminate(now=self.clock()))

    def request_log_urls(self, run_id: str, from_chunk: int) -> None:
        """``request_more`` for :func:`~.logship.resume_spooled` (any thread: queues an event)."""
        self.events.put(LogUrlsWanted(run_id=run_id, from_chunk=from_chunk))

    def adopt_log_sinks(self, sinks: Mapping[str, Any]) -> None:
        """Route ``log_urls`` to the resumed sinks of earlier runs (call before :meth:`run`,
        from the thread that will run the loop)."""
        with self._runs_lock:
            self.resumed.update(sinks)
        if sinks:
            self._apply(self.machine.handle(ShippingLogs(run_ids=tuple(sorted(sinks)))))

    def post(self, event: Event) -> None:
        """Queue ``event`` for the loop (any thread: the probes post :class:`LocalHealth`)."""
        self.events.put(event)

    def running_run_ids(self) -> frozenset[str]:
        """Runs with a live worker thread (any thread): their containers are not leftovers."""
        with self._runs_lock:
            return frozenset(self.runs)

    def readiness(self) -> Readiness:
        """``/readyz``: what the launcher can do now (any thread): registered, connected, not
        draining, and free of local faults (audit, disk, state, Docker, clock)."""
        machine = self.machine
        if self.exit is not None or machine.exited is not None:
            return Readiness(ready=False, reason="exiting")
        if not machine.registered:
            return Readiness(ready=False, reason="not_registered")
        if not machine.accepting:
            return Readiness(ready=False, reason="draining")
        faults = machine.faults
        if faults:
            return Readiness(ready=False, reason=faults[0])
        if not self.transport.connected:
            return Readiness(ready=False, reason="control_plane_disconnected")
        return Readiness(ready=True)

    def stop_loop(self) -> None:
        """Tests: leave the loop without exiting through the machine."""
        self._stop.set()

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> int:
        """Register, then loop until the machine exits; return the exit code."""
        self._reconnects = self.transport.stats().reconnects
        self._apply(self.machine.handle(Connected(now=self.clock(), mono=self.monotonic())))
        while self.exit is None and not self._stop.is_set():
            self.step(self.poll_seconds)
        return 0 if self.exit is None else self.exit.code

    def step(self, wait_seconds: float) -> None:
        """One iteration: queued events, one message (waiting up to ``wait_seconds``), a tick."""
        self._drain_events()
        received = self.transport.receive(timeout_seconds=wait_seconds)
        if received is not None:
            sent_at = getattr(getattr(received, "message", None), "sent_at", None)
            self._on_message(received.body, sent_at)
        self._drain_events()
        reconnects = self.transport.stats().reconnects
        if reconnects != self._reconnects:
            if self.metrics is not None:
                for _ in range(max(0, reconnects - self._reconnects)):
                    self.metrics.broker_reconnected()
            self._reconnects = reconnects
            log.info("launcher.reconnected reconnects=%d", reconnects)
            self._apply(self.machine.handle(Connected(now=self.clock(), mono=self.monotonic())))
        self._audit_tick()
        self._apply(self.machine.handle(Tick(now=self.clock(), mono=self.monotonic())))

    def _drain_events(self) -> None:
        while self.exit is None:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            if isinstance(event, RunEnded) and self.on_run_ended is not None:
                try:
                    self.on_run_ended(event.status)
                except Exception:
                    log.warning("run.ended_hook_failed", exc_info=True)
            self._apply(self.machine.handle(event))

    def _on_message(self, body: Any, sent_at: datetime | None = None) -> None:  # noqa: ANN401
        now, mono = self.clock(), self.monotonic()
        if not isinstance(sent_at, datetime):
            sent_at = None
        if getattr(body, "TYPE", None) == "start":
            event: Event = StartRun(
                run_id=body.run_id, lease_id=body.lease_id, now=now, mono=mono, sent_at=sent_at
            )
        else:
            event = Received(body=body, now=now, mono=mono, sent_at=sent_at)
        log.info("message.received type=%s run_id=%s", body.TYPE, getattr(body, "run_id", None))
        self._apply(self.machine.handle(event))

    def _audit_tick(self) -> None:
        if self.audit is None:
            return
        mono = time.monotonic()
        if mono - self._last_checkpoint >= self.checkpoint_seconds:
            self._last_checkpoint = mono
            try:
                if self.audit.healthy:
                    self.audit.checkpoint_if_due()
                else:
                    self.audit.try_recover()
            except Exception:
                log.warning("audit.checkpoint_failed", exc_info=True)
        self._send_witnesses()
        healthy = self.audit.healthy
        if healthy != self.machine.audit_healthy:
            self._apply(
                self.machine.handle(AuditHealth(healthy=healthy, failure=self.audit.failure))
            )

    def _send_witnesses(self) -> None:
        """Each checkpoint that became durable goes to the control plane as its outside
        witness (docs/audit.md); the transport retransmits until the control plane acks."""
        take = getattr(self.audit, "take_witnesses", None)
        if not callable(take) or not self.transport.connected:
            # While disconnected they wait in the log (the newest 64), not in the transport's
            # outbox, which run statuses need.
            return
        config = self.machine.config
        try:
            records = take(pool_id=config.pool_id, worker_id=config.worker_id)
        except Exception:
            log.warning("audit.witness_failed", exc_info=True)
            return
        for record in records:
            self._send(
                Witness(
                    key_id=record.key_id,
                    pool_id=record.pool_id,
                    worker_id=record.worker_id,
                    seq=record.seq,
                    hash=record.hash,
                    trigger=record.trigger,
                    time=record.time,
                    signature=record.signature,
                )
            )

    # -- actions ---------------------------------------------------------------------------
    def _apply(self, actions: tuple[Action, ...]) -> None:
        for action in actions:
            match action:
                case Send(body=body):
                    self._send(body)
                case LaunchRun(assign=assign):
                    self._launch(assign)
                case CancelRun(run_id=run_id, reason=reason):
                    with self._runs_lock:
                        handle = self.runs.get(run_id)
                    if handle is not None:
                        log.info("run.cancel run_id=%s reason=%s", run_id, reason)
                        handle.cancel.set()
                case ForwardLogUrls(run_id=run_id, urls=urls):
                    self._forward(run_id, urls)
                case Note(event=event, fields=fields):
                    extra = " ".join(f"{k}={v}" for k, v in fields.items())
                    log.info("%s %s", event, extra)
                    if event == "run.refused":
                        self._audit_refusal(fields)
                case Exit():
                    log.info("launcher.exit code=%d reason=%s", action.code, action.reason)
                    self.exit = action

    def _audit_refusal(self, fields: Mapping[str, object]) -> None:
        """An assignment refused before any gate ran (busy, draining, already done, audit
        unavailable) is audited like a gate's refusal, with gate ``assignment``; when the audit
        log itself is what failed, the operator log line above is all there can be."""
        record = getattr(self.audit, "record", None)
        if record is None or not getattr(self.audit, "healthy", False):
            return
        try:
            record(
                AuditEvent(
                    type="run.refused",
                    outcome=Outcome.DENY,
                    gate="assignment",
                    run_id=str(fields.get("run_id", "")) or None,
                    reason=str(fields.get("reason", "run_refused")),
                )
            )
        except Exception:  # the log turned unhealthy meanwhile: the health tick reports it
            log.warning("audit.refusal_not_recorded", exc_info=True)

    def _send(self, body: Any) -> None:  # noqa: ANN401 - any worker body
        try:
            self.transport.send(body)
        except Exception:
            log.warning("message.send_failed type=%s", body.TYPE, exc_info=True)

    def _forward(self, run_id: str, urls: Any) -> None:  # noqa: ANN401
        with self._runs_lock:
            handle = self.runs.get(run_id)
            if handle is None:
                sink = self.resumed.get(run_id)
                if sink is None:
                    return
            else:
                sink = handle.sink
                if sink is None:
                    handle.early_urls.extend(urls)
                    return
        shipper = log_shipper(sink)
        if shipper is not None:
            shipper.add_urls(tuple(urls))

    def _launch(self, assign: Assign) -> None:
        run_id = assign.run_id
        handle = _RunHandle(cancel=threading.Event())

        def on_sink(sink: LogSink) -> None:
            with self._runs_lock:
                handle.sink = sink
                early, handle.early_urls = handle.early_urls, []
            shipper = log_shipper(sink)
            if early and shipper is not None:
                shipper.add_urls(tuple(early))

        context = RunContext(
            cancel=handle.cancel,
            on_started=lambda _container_id: self.events.put(RunStarted(run_id=run_id)),
            request_more=lambda from_chunk: self.events.put(
                LogUrlsWanted(run_id=run_id, from_chunk=from_chunk)
            ),
            on_sink=on_sink,
            on_phase=lambda phase, at: self.events.put(RunPhase(run_id=run_id, phase=phase, at=at)),
        )

        def work() -> None:
            try:
                status = self.run_function(assign, context)
            except BaseException as exc:
                log.exception("run.internal_error run_id=%s", run_id)
                status = Status(
                    run_id=run_id,
                    state="FAILED",
                    reason="internal_error",
                    message=f"internal error ({type(exc).__name__})",
                )
            finally:
                with self._runs_lock:
                    self.runs.pop(run_id, None)
            self.events.put(RunEnded(run_id=run_id, status=status))

        thread = threading.Thread(target=work, name=f"run-{run_id}", daemon=True)
        handle.thread = thread
        with self._runs_lock:
            self.runs[run_id] = handle
        thread.start()

    def join_runs(self, timeout_seconds: float) -> bool:
        """Wait for run threads (after the loop ended); True when none is left."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            with self._runs_lock:
                threads = [h.thread for h in self.runs.values() if h.thread is not None]
            if not threads:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            threads[0].join(remaining)
