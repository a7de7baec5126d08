"""One accepted run, in its worker thread: :func:`~hardened_launcher.pipeline.run_assignment`.

The pipeline composes every gate (binaries → identity → policy → envelope → execute); this
module only supplies the run's log sink and turns the outcome into the final ``status``: a gate's
refusal before anything executed is ``REFUSED``, a failure while executing ``FAILED``, each with
the error's machine reason and its one-line message (messages never carry secrets by
construction; they are redacted again and cut to the protocol's limit). Never raises.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol, TextIO, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hardened_launcher.audit import AuditEvent, AuditSink, Outcome
from hardened_launcher.envelope.replay import ReplayCache
from hardened_launcher.errors import LauncherError
from hardened_launcher.executor.logsink import FileLogSink, LogSink, TeeLogSink
from hardened_launcher.executor.runner import RunResult, StopReason
from hardened_launcher.identity import PoolIdentity, PoolPrivateKey
from hardened_launcher.launcher.logship import (
    DEFAULT_CLOSE_TIMEOUT_SECONDS,
    ChunkedLogSink,
    LogShipReport,
    StdoutJsonLinesSink,
    Uploader,
    UploadError,
)
from hardened_launcher.launcher.metrics import LauncherMetrics
from hardened_launcher.launcher.phases import PhaseWatcher
from hardened_launcher.launcher.planstore import get_plan, put_plan
from hardened_launcher.launcher.runlogs import PruneReport, prune_run_logs
from hardened_launcher.launcher.spoolcap import choose_evictions, remove_run_spool, spool_usage
from hardened_launcher.pipeline import (
    Assignment,
    BinaryGate,
    EgressStep,
    EnvelopeKeys,
    PolicyCheck,
    PolicyStep,
    Runner,
    RunRefused,
    RunServices,
    run_assignment,
)
from hardened_launcher.policy import PolicyDecision, Sanitizer
from hardened_launcher.policy.errors import PolicyDeniedError
from hardened_launcher.redaction import Redactor
from hardened_launcher.settings import Settings
from hardened_launcher.steptimes import StepTimes
from hardened_launcher.transport.messages import (
    MAX_STATUS_OUTPUTS,
    MAX_STATUS_OUTPUTS_B64_CHARS,
    MAX_TEXT_CHARS,
    Assign,
    LogUrl,
    Status,
)

__all__ = [
    "GatedRun",
    "RunContext",
    "RunFunction",
    "ShippingSinkFactory",
    "SinkFactory",
    "file_sink_factory",
    "log_shipper",
    "status_for_error",
    "status_for_result",
    "timed_policy",
]

log = logging.getLogger(__name__)

#: ``sink_factory(run_id, initial_urls, request_more) -> LogSink``; ``request_more(from_chunk)``
#: asks the control plane for more presigned URLs (they arrive through ``add_urls``).
SinkFactory = Callable[[str, Sequence[LogUrl], Callable[[int], None]], LogSink]


def file_sink_factory(directory: Path) -> SinkFactory:
    """The default sink: one new 0600 file per run under ``directory``."""

    def make(
        run_id: str, initial_urls: Sequence[LogUrl], request_more: Callable[[int], None]
    ) -> LogSink:
        del initial_urls, request_more
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        return FileLogSink(directory / f"{run_id}-{stamp}.log")

    return make


class UrlReceiver(Protocol):
    """A sink that takes more presigned URLs (:class:`ChunkedLogSink`)."""

    def add_urls(self, urls: Iterable[LogUrl]) -> None: ...


def log_shipper(sink: object) -> UrlReceiver | None:
    """The sink inside ``sink`` (itself, or one of a :class:`TeeLogSink`'s, at any depth) that
    takes ``log_urls``; None when there is none."""
    if callable(getattr(sink, "add_urls", None)):
        return sink  # type: ignore[return-value]
    if isinstance(sink, TeeLogSink):
        for inner in sink.sinks:
            found = log_shipper(inner)
            if found is not None:
                return found
    return None


def _chunked(sink: object) -> ChunkedLogSink | None:
    if isinstance(sink, ChunkedLogSink):
        return sink
    if isinstance(sink, TeeLogSink):
        for inner in sink.sinks:
            found = _chunked(inner)
            if found is not None:
                return found
    return None


@dataclass(kw_only=True)
class ShippingSinkFactory:
    """The daemon's :data:`SinkFactory`: per run a tee of

    * :class:`ChunkedLogSink` (object storage through presigned URLs, spooled under
      ``<state_dir>/log-spool``),
    * a :class:`FileLogSink` copy under ``<state_dir>/runs`` — the same bytes, so the pipeline's
      canary scan (which reads stored files) checks exactly what was shipped,
    * :class:`StdoutJsonLinesSink` when ``SPACELIFT_RUN_LOGS_ON_STANDARD_OUTPUT_ENABLED``.

    :meth:`shutdown` stops the uploaders still running at launcher exit (the spool keeps them).
    Before each new run, :meth:`prune` removes the local copies ``HL_RUN_LOG_RETENTION`` no
    longer keeps (never one whose run is active or still has chunks in the spool).
    """

    settings: Settings
    metrics: LauncherMetrics | None = None
    stdout: TextIO | None = None
    uploader: Uploader | None = None
    shippers: list[ChunkedLogSink] = field(default_factory=list)
    #: Where ``HL_LOG_SPOOL_MAX_BYTES`` evictions are recorded (``run.logs_dropped``).
    audit: AuditSink | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def spool_dir(self) -> Path:
        return self.settings.state_dir / "log-spool"

    def __call__(
        self, run_id: str, initial_urls: Sequence[LogUrl], request_more: Callable[[int], None]
    ) -> LogSink:
        with self._lock:
            self.shippers = [s for s in self.shippers if not s.finished]
            self.prune(active={run_id})
            self.cap_spool(active={run_id})
            shipper = ChunkedLogSink(
                run_id=run_id,
                spool_dir=self.spool_dir,
                initial_urls=initial_urls,
                request_more=request_more,
                chunk_bytes=self.settings.log_chunk_bytes,
                metrics=self.metrics,
                uploader=self.uploader,
            )
            self.shippers.append(shipper)
        # close() returns its report (the LogSink protocol's close returns nothing).
        sinks: list[LogSink] = [cast("LogSink", shipper)]
        try:
            sinks.append(file_sink_factory(self.settings.state_dir / "runs")(run_id, (), _no_urls))
            if self.settings.run_logs_on_standard_output_enabled and self.stdout is not None:
                sinks.append(StdoutJsonLinesSink(run_id, self.stdout))
        except BaseException:
            TeeLogSink(*sinks).close()
            raise
        return TeeLogSink(*sinks)

    def cap_spool(self, *, active: Iterable[str] = ()) -> list[str]:
        """Apply ``HL_LOG_SPOOL_MAX_BYTES`` (``launcher/spoolcap.py``): drop the spools of the
        oldest finished runs until the spool fits; never a run still being written. Each drop
        is audited and counted. Returns the run ids dropped; never raises."""
        live = {s.run_id: s for s in self.shippers if not s.finished}
        busy = {run for run, s in live.items() if not s.report().closed} | set(active)
        dropped: list[str] = []
        try:
            usage = spool_usage(self.spool_dir)
            cap = self.settings.log_spool_max_bytes
            for run_id in choose_evictions(usage, cap=cap, active=busy):
                size = next(run.size for run in usage if run.run_id == run_id)
                chunks = 0
                sink = live.get(run_id)
                if sink is not None:
                    chunks, _ = sink.drop_spool()
                    remove_run_spool(self.spool_dir, run_id)
                else:
                    remove_run_spool(self.spool_dir, run_id)
                    if self.metrics is not None:
                        self.metrics.log_bytes_lost(size)
                if self.metrics is not None:
                    self.metrics.spool_evicted()
                dropped.append(run_id)
                self._record_drop(run_id, size=size, chunks=chunks, cap=cap)
        except Exception:
            log.exception("log_spool.cap_failed")
        return dropped

    def _record_drop(self, run_id: str, *, size: int, chunks: int, cap: int) -> None:
        log.warning("run.logs_dropped run_id=%s lost_bytes=%d reason=log_spool_full", run_id, size)
        if self.audit is None:
            return
        self.audit.record(
            AuditEvent(
                type="run.logs_dropped",
                outcome=Outcome.ERROR,
                gate="execute",
                run_id=run_id,
                reason="log_lines_lost",
                fields={"lost_bytes": size, "chunks": chunks, "spool_max_bytes": cap},
            )
        )

    def prune(self, *, active: Iterable[str] = ()) -> PruneReport:
        """Apply ``HL_RUN_LOG_RETENTION`` to ``<state_dir>/runs`` (docs/launcher.md)."""
        busy = {s.run_id for s in self.shippers if not s.finished} | set(active)
        return prune_run_logs(
            self.settings.state_dir / "runs",
            spool_dir=self.spool_dir,
            retention=self.settings.run_log_retention,
            active=busy,
            now=time.time,
        )

    def shutdown(self, timeout_seconds: float = 5.0) -> None:
        for shipper in self.shippers:
            if not shipper.finished:
                shipper.shutdown(timeout_seconds)
        self.shippers = []


def _no_urls(_from_chunk: int) -> None:
    return None


@dataclass(frozen=True, kw_only=True)
class _TimedPolicyCheck:
    """Observes each policy evaluation's duration (allow: the decision's, deny: the error's)."""

    inner: PolicyCheck
    metrics: LauncherMetrics

    def check(self, document: Mapping[str, object], *, run_id: str | None = None) -> PolicyDecision:
        try:
            decision = self.inner.check(document, run_id=run_id)  # type: ignore[arg-type]
        except PolicyDeniedError as exc:
            if exc.duration_ns > 0:
                self.metrics.policy_evaluated(exc.duration_ns / 1e9)
            raise
        if isinstance(decision, PolicyDecision) and decision.duration_ns > 0:
            self.metrics.policy_evaluated(decision.duration_ns / 1e9)
        return decision

    def close(self) -> None:
        self.inner.close()


def timed_policy(policy: PolicyStep | None, metrics: LauncherMetrics | None) -> PolicyStep | None:
    """``policy`` whose evaluations feed ``hl_policy_evaluation_seconds``."""
    if policy is None or metrics is None:
        return policy
    return PolicyStep(
        gate=_TimedPolicyCheck(inner=policy.gate, metrics=metrics),
        sanitizer=policy.sanitizer,
        launcher=policy.launcher,
    )


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """What the loop gives a run's worker thread."""

    cancel: threading.Event
    on_started: Callable[[str], None]
    request_more: Callable[[int], None]
    #: Called with the run's sink as soon as it exists (so ``log_urls`` can be forwarded).
    on_sink: Callable[[LogSink], None]
    #: Called as each phase of the run starts (its name, when): the ``phase`` report.
    on_phase: Callable[[str, datetime], None] = lambda _name, _at: None
    #: The run's start, step by step (made when the daemon launched it; ``run.timings``).
    timer: StepTimes = field(default_factory=StepTimes)


class RunFunction(Protocol):
    """Runs one started assignment to its final ``status`` (never raises)."""

    def __call__(self, assign: Assign, context: RunContext) -> Status: ...


def _message(exc: LauncherError, redactor: Redactor | None) -> str:
    text = exc.message
    if redactor is not None:
        text = redactor.redact_text(text)
    return text[:MAX_TEXT_CHARS]


def status_for_error(
    run_id: str,
    exc: LauncherError,
    redactor: Redactor | None = None,
    *,
    state: Literal["FAILED", "REFUSED"] = "FAILED",
) -> Status:
    """The final status of a run that ended with ``exc``: REFUSED when a gate refused it before
    anything executed, FAILED when it failed while executing (docs/controlplane.md)."""
    reason = exc.reason
    if not reason or not reason[0].isalpha() or not reason.islower():
        reason = "run_refused"
    return Status(run_id=run_id, state=state, reason=reason[:64], message=_message(exc, redactor))


def status_outputs(result: RunResult) -> tuple[dict[str, str], bool]:
    """The run's (redacted, capped) outputs as the final status carries them: base64, in name
    order, as many as fit :data:`MAX_STATUS_OUTPUTS` and :data:`MAX_STATUS_OUTPUTS_B64_CHARS`;
    the flag says some were left out (here, or by the collector's own caps)."""
    encoded: dict[str, str] = {}
    total = 0
    truncated = result.outputs_truncated
    for name in sorted(result.outputs):
        text = base64.b64encode(result.outputs[name]).decode("ascii")
        if len(encoded) >= MAX_STATUS_OUTPUTS or total + len(text) > MAX_STATUS_OUTPUTS_B64_CHARS:
            truncated = True
            continue
        encoded[name] = text
        total += len(text)
    return encoded, truncated


def status_for_result(result: RunResult) -> Status:
    outputs, truncated = status_outputs(result)
    if result.succeeded:
        state = "FINISHED"
    elif result.stopped_by is StopReason.CANCELLED:
        state = "STOPPED"
    else:
        state = "FAILED"
    return Status(
        run_id=result.run_id,
        state=state,  # type: ignore[arg-type]
        exit_code=result.exit_code,
        reason=result.reason,
        message=None,
        outputs=outputs,
        outputs_truncated=truncated,
    )


@dataclass(frozen=True, kw_only=True)
class GatedRun:
    """The real :class:`RunFunction`: every gate, then the pipeline."""

    settings: Settings
    identity: PoolIdentity
    pool_private_key: PoolPrivateKey
    signer_public_key: Ed25519PublicKey
    replay_cache: ReplayCache
    launcher_id: str
    worker_version: str
    binaries: BinaryGate
    policy: PolicyStep | None
    #: The pool's sanitizer (the token's key): the policy's and the ticket's ``sanitized:`` form.
    sanitizer: Sanitizer
    runner: Runner
    audit: AuditSink
    sink_factory: SinkFactory
    environ: Mapping[str, str]
    egress: EgressStep | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    metrics: LauncherMetrics | None = None
    #: How long the end of a run waits for its log chunks to reach object storage.
    log_close_timeout_seconds: float = DEFAULT_CLOSE_TIMEOUT_SECONDS
    #: Sealed plan artifacts to and from object storage (presigned URLs from the assignment).
    plan_get: Callable[[str], bytes] = get_plan
    plan_put: Callable[[str, bytes], None] = put_plan
    #: The launcher's own values (token, key, SPACELIFT_MASK_ENVS), compiled once per process:
    #: each run's redactor masks them too but compiles only the run's own secrets.
    shared_redaction: Redactor | None = None

    def __call__(self, assign: Assign, context: RunContext) -> Status:
        run_id = assign.run_id
        redactor = Redactor(shared=self.shared_redaction)
        sinks: list[LogSink] = []
        results: list[RunResult] = []
        try:
            status = self._run(assign, context, redactor, sinks, results)
        except RunRefused as refused:
            log.info(
                "run.refused run_id=%s gate=%s reason=%s",
                run_id,
                refused.gate,
                refused.error.reason,
            )
            status = status_for_error(run_id, refused.error, redactor, state="REFUSED")
            self._count_refusal(status)
        except LauncherError as exc:
            log.info("run.refused run_id=%s reason=%s", run_id, exc.reason)
            status = status_for_error(run_id, exc, redactor)
            self._count_refusal(status)
        except Exception as exc:  # a bug must not take the daemon down; the run fails closed
            log.exception("run.internal_error run_id=%s", run_id)
            status = Status(
                run_id=run_id,
                state="FAILED",
                reason="internal_error",
                message=f"internal error ({type(exc).__name__})",
            )
            if self.metrics is not None:
                self.metrics.run_finished("failed")
            self._audit_internal_error(run_id, exc)
        else:
            if results:
                if self.metrics is not None:
                    self.metrics.run_finished(status.state.lower(), results[0].duration_seconds)
            else:
                self._count_refusal(status)
        finally:
            report = self._after_run(run_id, redactor, sinks)
        if report is not None and report.lost_bytes:
            lost = f"the run's log is incomplete: {report.lost_bytes} bytes were lost"
            head = (status.message or "")[: MAX_TEXT_CHARS - len(lost) - 2]
            status = dataclasses.replace(status, message=f"{head}; {lost}" if head else lost)
        return status

    def _audit_internal_error(self, run_id: str, exc: Exception) -> None:
        """A bug ends the run FAILED; the audit log says so too (the type only, never text)."""
        try:
            self.audit.record(
                AuditEvent(
                    type="run.failed",
                    outcome=Outcome.ERROR,
                    gate="pipeline",
                    run_id=run_id,
                    reason="internal_error",
                    fields={"error": type(exc).__name__},
                )
            )
        except Exception:  # noqa: BLE001 - an unwritable audit log is reported by its health check
            log.warning("audit.internal_error_not_recorded run_id=%s", run_id)

    def _count_refusal(self, status: Status) -> None:
        if self.metrics is not None:
            self.metrics.run_refused(status.reason or "run_refused")

    def _after_run(
        self, run_id: str, redactor: Redactor, sinks: list[LogSink]
    ) -> LogShipReport | None:
        """Never raises: redaction counts to the metrics, the log shipping report to the audit
        log (counts only, never content or URLs); returns that report."""
        report: LogShipReport | None = None
        try:
            if self.metrics is not None:
                for variable, count in sorted(redactor.counts().items()):
                    self.metrics.redacted(variable, count)
            shipper = _chunked(sinks[0]) if sinks else None
            if shipper is None:
                return None
            report = shipper.report()
            if not report.closed:  # the runner normally closed it; close it here otherwise
                report = shipper.close(self.log_close_timeout_seconds)
            self._record_shipping(report)
        except Exception:
            log.exception("run.log_report_failed run_id=%s", run_id)
        return report

    def _record_shipping(self, report: LogShipReport) -> None:
        log.info(
            "run.logs_shipped run_id=%s chunks=%d uploaded=%d spooled=%d",
            report.run_id,
            report.chunks,
            report.uploaded,
            report.spooled,
        )
        self.audit.record(
            AuditEvent(
                type="run.logs_shipped",
                outcome=Outcome.INFO if report.complete else Outcome.ERROR,
                gate="execute",
                run_id=report.run_id,
                reason=None
                if report.complete
                else ("log_lines_lost" if report.lost_bytes else "log_chunks_spooled"),
                fields={
                    "lost_bytes": report.lost_bytes,
                    "chunks": report.chunks,
                    "uploaded": report.uploaded,
                    "spooled": report.spooled,
                    "spooled_bytes": report.spooled_bytes,
                    "failed_attempts": report.failed_attempts,
                },
            )
        )

    def _run(
        self,
        assign: Assign,
        context: RunContext,
        redactor: Redactor,
        sinks: list[LogSink],
        results: list[RunResult],
    ) -> Status:
        run_id = assign.run_id
        context.timer.mark("launch")  # the daemon's receipt of ``start`` to this thread

        def open_sink() -> LogSink:
            sink: LogSink = TeeLogSink(
                self.sink_factory(run_id, assign.log_urls, context.request_more),
                PhaseWatcher(context.on_phase, clock=self.clock),
            )
            sinks.append(sink)
            context.on_sink(sink)
            return sink

        result = run_assignment(
            Assignment(
                run_id=run_id,
                lease_id=assign.lease_id,
                envelope=assign.envelope,
                ticket=assign.ticket,
                ticket_signature=assign.ticket_signature,
                fetch_plan=None
                if not assign.plan_url
                else functools.partial(self.plan_get, assign.plan_url),
            ),
            services=RunServices(
                settings=self.settings,
                launcher_id=self.launcher_id,
                worker_version=self.worker_version,
                binaries=self.binaries,
                policy=timed_policy(self.policy, self.metrics),
                sanitizer=self.sanitizer,
                runner=self.runner,
                audit=self.audit,
                environ=self.environ,
                egress=self.egress,
            ),
            identity=self.identity,
            keys=EnvelopeKeys(
                pool_private_key=self.pool_private_key,
                signer_public_key=self.signer_public_key,
                replay_cache=self.replay_cache,
            ),
            clock=self.clock,
            redactor=redactor,
            open_sink=open_sink,
            cancel=context.cancel,
            on_started=context.on_started,
            timer=context.timer,
        )
        results.append(result)
        status = status_for_result(result)
        if result.sealed_plan is not None:
            status = self._store_plan(assign, result.sealed_plan, status)
        return status

    def _store_plan(self, assign: Assign, sealed: bytes, status: Status) -> Status:
        """A planning run's sealed plan to object storage; the status names its digest (or
        the run FAILS: a plan that cannot be stored cannot be confirmed)."""
        if not assign.plan_url:
            return dataclasses.replace(
                status,
                state="FAILED",
                reason="plan_storage_unavailable",
                message="the control plane gave no URL to store the plan (no object storage)",
            )
        try:
            self.plan_put(assign.plan_url, sealed)
        except UploadError as exc:
            log.warning("run.plan_upload_failed run_id=%s error=%s", assign.run_id, exc)
            return dataclasses.replace(
                status,
                state="FAILED",
                reason="plan_upload_failed",
                message="the sealed plan could not be stored in object storage",
            )
        return dataclasses.replace(status, plan_sha256=hashlib.sha256(sealed).hexdigest())
