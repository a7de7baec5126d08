"""One accepted run, in its worker thread: the gates in order, then the pipeline.

credentials (``PoolIdentity.recheck``) → envelope (``open_run_state``) → run spec (parse, run id
must match the envelope's) → :func:`~hardened_launcher.pipeline.run_pipeline` (binaries, policy,
egress, execute). Every refusal becomes a final ``status FAILED`` with the error's machine reason
and its one-line message (messages never carry secrets by construction; they are redacted again
and cut to the protocol's limit). Never raises.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hardened_launcher.audit import AuditSink
from hardened_launcher.envelope import open_run_state
from hardened_launcher.envelope.replay import ReplayCache
from hardened_launcher.errors import LauncherError
from hardened_launcher.executor.logsink import FileLogSink, LogSink
from hardened_launcher.executor.runner import RunResult, StopReason
from hardened_launcher.executor.runspec import RunSpec, parse_run_spec
from hardened_launcher.identity import PoolIdentity, PoolPrivateKey
from hardened_launcher.pipeline import BinaryGate, EgressStep, PolicyStep, Runner, run_pipeline
from hardened_launcher.redaction import Redactor
from hardened_launcher.settings import Settings
from hardened_launcher.transport.messages import MAX_TEXT_CHARS, Assign, LogUrl, Status

__all__ = [
    "GatedRun",
    "RunContext",
    "RunFunction",
    "SinkFactory",
    "file_sink_factory",
    "status_for_error",
    "status_for_result",
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


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """What the loop gives a run's worker thread."""

    cancel: threading.Event
    on_started: Callable[[str], None]
    request_more: Callable[[int], None]
    #: Called with the run's sink as soon as it exists (so ``log_urls`` can be forwarded).
    on_sink: Callable[[LogSink], None]


class RunFunction(Protocol):
    """Runs one started assignment to its final ``status`` (never raises)."""

    def __call__(self, assign: Assign, context: RunContext) -> Status: ...


def _message(exc: LauncherError, redactor: Redactor | None) -> str:
    text = exc.message
    if redactor is not None:
        text = redactor.redact_text(text)
    return text[:MAX_TEXT_CHARS]


def status_for_error(run_id: str, exc: LauncherError, redactor: Redactor | None = None) -> Status:
    reason = exc.reason
    if not reason or not reason[0].isalpha() or not reason.islower():
        reason = "run_refused"
    return Status(
        run_id=run_id, state="FAILED", reason=reason[:64], message=_message(exc, redactor)
    )


def status_for_result(result: RunResult) -> Status:
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
    runner: Runner
    audit: AuditSink
    sink_factory: SinkFactory
    environ: Mapping[str, str]
    egress: EgressStep | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __call__(self, assign: Assign, context: RunContext) -> Status:
        run_id = assign.run_id
        redactor = Redactor()
        try:
            return self._run(assign, context, redactor)
        except LauncherError as exc:
            log.info("run.refused run_id=%s reason=%s", run_id, exc.reason)
            return status_for_error(run_id, exc, redactor)
        except Exception as exc:  # a bug must not take the daemon down; the run fails closed
            log.exception("run.internal_error run_id=%s", run_id)
            return Status(
                run_id=run_id,
                state="FAILED",
                reason="internal_error",
                message=f"internal error ({type(exc).__name__})",
            )

    def _run(self, assign: Assign, context: RunContext, redactor: Redactor) -> Status:
        run_id = assign.run_id
        settings = self.settings
        # Gate 1: the credentials are still valid.
        self.identity.recheck(self.clock())
        # Gate 4 (opened before the pipeline: the spec is inside the envelope).
        opened = open_run_state(
            assign.envelope,
            pool_private_key=self.pool_private_key.private_key,
            signer_public_key=self.signer_public_key,
            expected_pool_id=self.identity.pool_id,
            replay_cache=self.replay_cache,
            now=self.clock(),
            clock_skew=settings.clock_skew,
            max_envelope_bytes=settings.max_envelope_bytes,
            audit=self.audit,
        )
        with opened:
            if opened.run_id != run_id:
                return Status(
                    run_id=run_id,
                    state="FAILED",
                    reason="envelope_run_mismatch",
                    message="the sealed run state is for another run",
                )
            spec: RunSpec = parse_run_spec(
                opened.plaintext.reveal(), max_bytes=settings.max_envelope_bytes
            )
        if spec.run_id != run_id:
            spec.wipe()
            return Status(
                run_id=run_id,
                state="FAILED",
                reason="runspec_run_mismatch",
                message="the run spec names another run",
            )
        try:
            sink = self.sink_factory(run_id, assign.log_urls, context.request_more)
        except BaseException:
            spec.wipe()
            raise
        context.on_sink(sink)
        result = run_pipeline(
            spec,
            settings=settings,
            launcher_id=self.launcher_id,
            worker_version=self.worker_version,
            binaries=self.binaries,
            policy=self.policy,
            runner=self.runner,
            redactor=redactor,
            sink=sink,
            audit=self.audit,
            environ=self.environ,
            cancel=context.cancel,
            on_started=context.on_started,
            egress=self.egress,
        )
        return status_for_result(result)
