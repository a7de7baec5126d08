"""The Docker runner: the effects of gate 5 (create, attach, feed stdin, stream, stop, remove).

One :meth:`DockerRunner.run` call runs one container from a :class:`~.container_spec.ContainerSpec`:

1. create the container (low-level API; nothing secret in its arguments);
2. attach to stdin/stdout/stderr *before* starting it, so no output is missed;
3. start it, write the instructions to stdin, half-close stdin, wipe the instructions;
4. demultiplex Docker's attach stream into stdout/stderr, pass each through its redacting
   stream into the log sink;
5. stop it (SIGTERM, grace period, SIGKILL) when no output came for the logs timeout, the run
   timeout passed, or the caller cancelled;
6. remove it in a ``finally`` block, whatever happened.

The result is a :class:`RunResult`: exit status and which limit, if any, stopped the run.
"""

from __future__ import annotations

import enum
import logging
import math
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Final

from hardened_launcher.ascii_text import is_digits
from hardened_launcher.docker_api import (
    DockerClient,
    DockerError,
    DockerStatusError,
    FrameDemux,
    FrameError,
    Hijacked,
    ImageNotFoundError,
    NotFoundError,
)
from hardened_launcher.errors import LauncherError
from hardened_launcher.executor.container_spec import ContainerSpec
from hardened_launcher.executor.create_body import create_body
from hardened_launcher.executor.errors import (
    ContainerRuntimeError,
    DockerUnavailableError,
    ImageMissingError,
)
from hardened_launcher.executor.logsink import Channel, LogSink
from hardened_launcher.executor.mounts import ResolvedMounts
from hardened_launcher.executor.outputs import MAX_PLAN_BYTES, PLAN_PREFIX, OutputCollector
from hardened_launcher.executor.ownership import LABEL_DEADLINE, LABEL_OWNER, owner_token
from hardened_launcher.executor.passwd import PasswdFiles
from hardened_launcher.executor.redaction_port import RedactingStreamLike, RedactorLike
from hardened_launcher.secrets import Secret, wipe_bytearray
from hardened_launcher.steptimes import StepTimes

__all__ = ["DockerRunner", "RunResult", "StopReason", "docker_client", "translate_docker_error"]

log = logging.getLogger(__name__)

_READ_BYTES: Final = 64 * 1024
_POLL_SECONDS: Final = 0.25
#: How often held output is checked against the redacting streams' deadline (0.2 s).
_RELEASE_SECONDS: Final = 0.05
_REMOVE_ATTEMPTS: Final = 3
#: Docker's attach stream ids; any other (stdin 0, the daemon's own error text 3) is stderr.
_CHANNELS: Final[dict[int, Channel]] = {1: "stdout", 2: "stderr"}
#: The worker's own last words (hl-worker.sh), looked for at the end of the redacted output.
_RUN_END: Final = b"::hl:: run end status="
_WORKER_ERROR: Final = b"::hl:: error "
_TAIL_BYTES: Final = 1024
#: Added to a container's deadline label: time to wait for its exit status and remove it.
DEADLINE_MARGIN_SECONDS: Final = 60


class StopReason(enum.StrEnum):
    """Why a run ended. ``EXITED`` means it ended on its own."""

    EXITED = "exited"
    LOGS_TIMEOUT = "run_logs_timeout"
    RUN_TIMEOUT = "run_timeout"
    CANCELLED = "run_cancelled"


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What happened to one run. ``exit_code`` is the container's (None if it never reported)."""

    run_id: str
    container_id: str
    exit_code: int | None
    stopped_by: StopReason
    duration_seconds: float
    output_bytes: int
    redactions: dict[str, int] = field(default_factory=dict)
    #: Docker's ``State.OOMKilled``: the kernel (or gVisor's Sentry) killed a process of the
    #: run for memory.
    oom_killed: bool = False
    #: The worker reported its end (``::hl:: run end`` or ``::hl:: error``). False: the
    #: container or its runtime died under the worker (e.g. a gVisor sandbox crash).
    worker_ended: bool = True
    #: Files the run left in ``$HL_OUTPUTS`` (name → content), already redacted; size-capped.
    outputs: Mapping[str, bytes] = field(default_factory=dict)
    #: Some outputs were dropped (over :data:`~.outputs.MAX_OUTPUT_FILES` files or
    #: :data:`~.outputs.MAX_OUTPUTS_BYTES` bytes).
    outputs_truncated: bool = False
    #: A planning run's plan artifact (``$HL_PLAN_FILE``), as written: never redacted, sealed
    #: to the pool key by the caller; None when the run left none.
    plan: Secret | None = None
    #: ``plan`` sealed to the pool key (docs/envelope.md), set by the pipeline after the run.
    sealed_plan: bytes | None = None

    #: The commit the worker checked out and verified (a git source), else None.
    source_commit: str | None = None
    #: Why the worker refused the source (``source_commit_mismatch``, ``source_fetch_failed``,
    #: ``source_git_missing``), else None. Nothing of the run ran.
    source_refused: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.stopped_by is StopReason.EXITED and self.exit_code == 0 and not self.oom_killed

    @property
    def reason(self) -> str:
        """A stable slug: ``run_succeeded``, ``run_failed``, ``run_oom``, ``runtime_failed``
        or the limit that fired."""
        if self.stopped_by is not StopReason.EXITED:
            return self.stopped_by.value
        if self.source_refused is not None:
            return self.source_refused
        if self.oom_killed:
            return "run_oom"
        if self.exit_code == 0:
            return "run_succeeded"
        return "run_failed" if self.worker_ended else "runtime_failed"


def _redacted_outputs(collector: OutputCollector, redactor: RedactorLike) -> dict[str, bytes]:
    """Each collected output through its own redacting stream (the run's values)."""
    redacted: dict[str, bytes] = {}
    for name, content in collector.files.items():
        stream = redactor.stream("outputs")
        redacted[name] = stream.write(bytes(content)) + stream.flush()
    return redacted


def translate_docker_error(
    exc: Exception, *, doing: str, image: str | None = None
) -> LauncherError:
    """Map a :mod:`hardened_launcher.docker_api` error to the executor's (the boundary)."""
    if isinstance(exc, ImageNotFoundError):
        return ImageMissingError(
            f"the image {image or '(unknown)'} is not on the Docker host",
            hint="load or pull the image on this host first (no registry may be reachable), or "
            "check SPACELIFT_DOCKER_CONFIG_DIR holds credentials for its registry",
            detail=str(exc)[:500],
        )
    if isinstance(exc, DockerStatusError):
        return ContainerRuntimeError(
            f"Docker refused to {doing}",
            hint="check SPACELIFT_WORKER_RUNTIME, SPACELIFT_WORKER_NETWORK and the HL_RUN_* "
            "limits against this Docker host (`docker info`)",
            detail=str(exc)[:500],
        )
    return DockerUnavailableError(
        f"the Docker daemon did not answer while trying to {doing}",
        hint="check that dockerd is running and that the launcher may use its socket",
        detail=f"{type(exc).__name__}: {str(exc)[:300]}",
    )


DOCKER_ERRORS: Final = (DockerError,)


def docker_client(timeout_seconds: int = 60) -> DockerClient:
    """A client for the daemon of ``DOCKER_HOST`` (``unix://`` only) or the default socket;
    :class:`~hardened_launcher.docker_api.DockerHostError` for any other endpoint."""
    return DockerClient.from_env(timeout_seconds=timeout_seconds)


class _SourceWatch:
    """Reads the worker's source markers: only before the first phase starts (stdout, redacted),
    so nothing a run prints can claim a commit or a refusal."""

    _LINE: Final = re.compile(rb"::hl:: source (commit|refused) ([0-9a-z_]{1,64})\n")
    _PHASE: Final = b"::hl:: phase "

    def __init__(self) -> None:
        self._head = bytearray()
        self._done = False
        self.commit: str | None = None
        self.refused: str | None = None

    def feed(self, data: bytes) -> None:
        if self._done:
            return
        self._head += data
        while b"\n" in self._head:
            line, _, rest = bytes(self._head).partition(b"\n")
            self._head = bytearray(rest)
            if line.startswith(self._PHASE) or len(line) > _TAIL_BYTES:
                self._done = True
                return
            match = self._LINE.fullmatch(line + b"\n")
            if match is not None:
                kind, value = match.group(1), match.group(2).decode()
                if kind == b"commit":
                    self.commit = value
                else:
                    self.refused = value
                    self._done = True
                    return
        if len(self._head) > _TAIL_BYTES:
            self._done = True


class DockerRunner:
    """Runs containers on one Docker daemon. Thread-safe: one call per run."""

    def __init__(
        self,
        client: DockerClient,
        *,
        logs_timeout: timedelta,
        run_timeout: timedelta,
        stop_grace: timedelta,
        clock: Callable[[], float] = time.monotonic,
        mounts: ResolvedMounts | None = None,
        wall_clock: Callable[[], float] = time.time,
        files_dir: Path | None = None,
    ) -> None:
        self.api = client
        #: Operator mounts resolved at start-up; re-resolved before every create.
        self.mounts = mounts
        self.logs_timeout = logs_timeout.total_seconds()
        self.run_timeout = run_timeout.total_seconds()
        self.stop_grace = stop_grace
        self.clock = clock
        self.wall_clock = wall_clock
        # passwd/group entries for the run's user when the image has none (see .passwd).
        self.passwd = PasswdFiles(self.api, directory=files_dir)

    # -- the run ---------------------------------------------------------------------------------
    def run(
        self,
        container: ContainerSpec,
        instructions: bytearray,
        *,
        redactor: RedactorLike,
        sink: LogSink,
        cancel: threading.Event | None = None,
        on_started: Callable[[str], None] | None = None,
        timer: StepTimes | None = None,
    ) -> RunResult:
        """Run ``container``; wipe ``instructions`` and close ``sink`` whatever happens.
        ``timer`` (if any) gets a mark as each step up to the container's start ends."""
        started = self.clock()
        timer = timer or StepTimes()
        container_id = ""
        time_limit = self.run_timeout
        if container.time_limit_seconds is not None:
            time_limit = min(time_limit, container.time_limit_seconds)
        try:
            container_id = self._create(container, time_limit, timer)
            return self._attached_run(
                container,
                container_id,
                instructions,
                redactor,
                sink,
                cancel,
                on_started,
                started,
                time_limit,
                timer,
            )
        finally:
            wipe_bytearray(instructions)
            try:
                if container_id:
                    self.remove(container_id)
            finally:
                sink.close()

    def _create(self, container: ContainerSpec, time_limit: float, timer: StepTimes) -> str:
        # Who made the container and until when it is needed: a later launcher or exec removes
        # it when this process is gone or the deadline passed (see .ownership, .cleanup).
        deadline = self.wall_clock() + time_limit + self.stop_grace.total_seconds()
        create_args = dict(container.create_args)
        create_args["labels"] = {
            **container.labels,
            LABEL_OWNER: owner_token(),
            LABEL_DEADLINE: str(math.ceil(deadline + DEADLINE_MARGIN_SECONDS)),
        }
        host_config_args = dict(container.host_config_args)
        if self.mounts is not None:
            # Immediately before creation: mount the real paths, refuse if a link changed.
            host_config_args["mounts"] = self.mounts.pin(host_config_args.get("mounts", ()))
            timer.mark("mounts")
        uid, _, gid = str(create_args.get("user", "")).partition(":")
        if is_digits(uid) and is_digits(gid):
            extra = self.passwd.mounts(container.image, uid=int(uid), gid=int(gid))
            host_config_args["mounts"] = [*host_config_args.get("mounts", []), *extra]
            timer.mark("passwd")
        try:
            container_id = self.api.create_container(create_body(create_args, host_config_args))
            timer.mark("create")
        except DOCKER_ERRORS as exc:
            raise translate_docker_error(
                exc, doing="create the run container", image=container.image
            ) from None
        log.info(
            "executor.container_created run_id=%s container=%s", container.run_id, container_id[:12]
        )
        return container_id

    def _attached_run(
        self,
        container: ContainerSpec,
        container_id: str,
        instructions: bytearray,
        redactor: RedactorLike,
        sink: LogSink,
        cancel: threading.Event | None,
        on_started: Callable[[str], None] | None,
        started: float,
        time_limit: float,
        timer: StepTimes,
    ) -> RunResult:
        try:
            attached = self.api.attach(container_id)
        except DOCKER_ERRORS as exc:
            raise translate_docker_error(exc, doing="attach to the run container") from None
        sock = attached.sock
        try:
            timer.mark("attach")
            try:
                self.api.start(container_id)
            except DOCKER_ERRORS as exc:
                raise translate_docker_error(exc, doing="start the run container") from None
            timer.mark("start")
            if on_started is not None:
                on_started(container_id)
            self._send(sock, instructions, started, time_limit)
            streams: dict[Channel, RedactingStreamLike] = {
                "stdout": redactor.stream("stdout", whole_lines=True),
                "stderr": redactor.stream("stderr", whole_lines=True),
            }
            collector = OutputCollector()
            plans = OutputCollector(prefix=PLAN_PREFIX, max_files=1, max_bytes=MAX_PLAN_BYTES)
            try:
                watch = _SourceWatch()
                stopped_by, output_bytes, worker_ended = self._pump(
                    attached,
                    container_id,
                    streams,
                    sink,
                    cancel,
                    started,
                    time_limit,
                    collector,
                    watch,
                    plans,
                )
                outputs = _redacted_outputs(collector, redactor)
                found = plans.files.get("plan")
                plan = None if found is None else Secret(bytes(found))
            finally:
                collector.wipe()
                plans.wipe()
        finally:
            sock.close()
        exit_code = self._exit_code(container_id)
        oom_killed = self._oom_killed(container_id)
        duration = self.clock() - started
        result = RunResult(
            run_id=container.run_id,
            container_id=container_id,
            exit_code=exit_code,
            stopped_by=stopped_by,
            duration_seconds=duration,
            output_bytes=output_bytes,
            redactions=dict(redactor.counts()),
            oom_killed=oom_killed,
            worker_ended=worker_ended,
            outputs=outputs,
            outputs_truncated=collector.truncated,
            source_commit=watch.commit,
            source_refused=watch.refused,
            plan=plan,
        )
        log.info(
            "executor.run_ended run_id=%s reason=%s exit_code=%s seconds=%.3f",
            result.run_id,
            result.reason,
            exit_code,
            duration,
        )
        if result.reason == "runtime_failed":
            # The worker prints a marker before every exit of its own, so an exit without one
            # means the container (or its runtime's sandbox) died before or under it.
            log.warning(
                "executor.run_exited_silently run_id=%s exit_code=%s output_bytes=%s: the "
                "worker never reported its end; the container runtime may have failed (see "
                "docs/executor.md, gVisor)",
                result.run_id,
                exit_code,
                output_bytes,
            )
        return result

    def _send(
        self, sock: socket.socket, instructions: bytearray, started: float, time_limit: float
    ) -> None:
        sock.settimeout(max(1.0, time_limit - (self.clock() - started)))
        try:
            sock.sendall(instructions)
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            # The worker may exit before reading everything (bad instructions); its output and
            # exit status tell the story, so this is not an error of its own.
            log.warning("executor.stdin_write_failed errno=%s", exc.errno)
        finally:
            wipe_bytearray(instructions)
        sock.settimeout(None)

    def _pump(
        self,
        attached: Hijacked,
        container_id: str,
        streams: dict[Channel, RedactingStreamLike],
        sink: LogSink,
        cancel: threading.Event | None,
        started: float,
        time_limit: float,
        collector: OutputCollector,
        watch: _SourceWatch | None = None,
        plans: OutputCollector | None = None,
    ) -> tuple[StopReason, int, bool]:
        """Stream the output; return why it ended, its size, and whether the worker said so."""
        sock = attached.sock
        demux = FrameDemux()
        pending = attached.pending  # stream bytes that came with the attach answer
        tails: dict[Channel, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}

        def emit(channel: Channel, safe: bytes) -> None:
            sink.write(channel, safe)
            if watch is not None and channel == "stdout":
                watch.feed(safe)
            tail = tails[channel]
            tail += safe
            del tail[:-_TAIL_BYTES]

        last_output = self.clock()
        output_bytes = 0

        def on_payload(stream: int, payload: bytes) -> None:
            nonlocal output_bytes, last_output
            channel = _CHANNELS.get(stream, "stderr")
            output_bytes += len(payload)
            last_output = self.clock()
            if channel == "stdout":
                if plans is not None:
                    payload = plans.feed(payload)  # the plan leaves the log
                payload = collector.feed(payload)  # outputs leave the log
            safe = streams[channel].write(payload)
            if safe:
                emit(channel, safe)

        def feed(data: bytes) -> bool:
            """Pass ``data`` on; True if the stream must end (not Docker's framing)."""
            refused: FrameError | None = None
            try:
                pieces = demux.feed(data)
            except FrameError as exc:
                refused, pieces = exc, exc.pieces  # the output before the bad header is kept
            for stream, payload in pieces:
                on_payload(stream, payload)
            if refused is not None:
                log.warning(
                    "executor.attach_stream_refused container=%s error=%s",
                    container_id[:12],
                    refused.message,
                )
            return refused is not None

        stopped_by = StopReason.EXITED
        eof = False
        drain_deadline: float | None = None
        while not eof:
            if pending:
                data, pending = pending, b""
                eof = feed(data)
                continue
            now = self.clock()
            if stopped_by is StopReason.EXITED:
                limit: StopReason | None = None
                if cancel is not None and cancel.is_set():
                    limit = StopReason.CANCELLED
                elif now - started >= time_limit:
                    limit = StopReason.RUN_TIMEOUT
                elif now - last_output >= self.logs_timeout:
                    limit = StopReason.LOGS_TIMEOUT
                if limit is not None:
                    stopped_by = limit
                    self._stop(container_id, limit)
                    drain_deadline = self.clock() + 5.0
                    continue
                wait = min(
                    _POLL_SECONDS,
                    time_limit - (now - started),
                    self.logs_timeout - (now - last_output),
                )
            else:
                assert drain_deadline is not None  # noqa: S101 - set with stopped_by
                if now >= drain_deadline:
                    break
                wait = min(_POLL_SECONDS, drain_deadline - now)
            # Wake often enough to release partial lines that waited past the stream deadline.
            readable, _, _ = select.select([sock], [], [], max(0.0, min(wait, _RELEASE_SECONDS)))
            for channel, stream in streams.items():
                late = stream.poll()
                if late:
                    emit(channel, late)
            if not readable:
                continue
            try:
                data = sock.recv(_READ_BYTES)
            except OSError:
                data = b""
            if not data:
                if demux.mid_frame:
                    log.warning("executor.attach_stream_truncated container=%s", container_id[:12])
                eof = True
                break
            eof = feed(data)
        held = collector.feed(plans.close()) if plans is not None else b""
        held += collector.close()
        if held:
            safe = streams["stdout"].write(held)
            if safe:
                emit("stdout", safe)
        for channel, stream in streams.items():
            rest = stream.flush()
            if rest:
                emit(channel, rest)
        # Redacted output only: the markers are plumbing, never secret.
        ended = _RUN_END in tails["stdout"] or _WORKER_ERROR in tails["stderr"]
        return stopped_by, output_bytes, ended

    def _stop(self, container_id: str, why: StopReason) -> None:
        grace = max(0, round(self.stop_grace.total_seconds()))
        log.warning("executor.run_stopping container=%s reason=%s", container_id[:12], why.value)
        try:
            # SIGTERM (the image's stop signal), then SIGKILL after the grace period.
            self.api.stop(container_id, timeout=grace)
        except DOCKER_ERRORS as exc:
            log.warning(
                "executor.stop_failed container=%s error=%s", container_id[:12], type(exc).__name__
            )
            try:
                self.api.kill(container_id)
            except DOCKER_ERRORS:
                log.warning("executor.kill_failed container=%s", container_id[:12])

    def _oom_killed(self, container_id: str) -> bool:
        try:
            state = self.api.inspect_container(container_id).get("State")
        except DOCKER_ERRORS:
            return False
        return isinstance(state, dict) and state.get("OOMKilled") is True

    def _exit_code(self, container_id: str) -> int | None:
        try:
            return self.api.wait(
                container_id, timeout=max(5, round(self.stop_grace.total_seconds()) + 5)
            )
        except DOCKER_ERRORS:
            return None

    # -- clean-up ----------------------------------------------------------------------------------
    def remove(self, container_id: str) -> None:
        """Remove a container (running or not); a container already gone is fine."""
        for attempt in range(1, _REMOVE_ATTEMPTS + 1):
            try:
                self.api.remove_container(container_id, force=True)
            except NotFoundError:
                return
            except DOCKER_ERRORS as exc:
                if attempt == _REMOVE_ATTEMPTS:
                    raise translate_docker_error(exc, doing="remove the run container") from None
                time.sleep(0.2 * attempt)
                continue
            log.info("executor.container_removed container=%s", container_id[:12])
            return
