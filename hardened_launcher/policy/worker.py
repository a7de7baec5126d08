"""Where evaluations run: in this thread (:class:`InlineBackend`) or in a child process
(:class:`SubprocessBackend`, what the launcher uses).

Why a process and not a watchdog thread: regorus holds the GIL for the whole evaluation, so while
a runaway policy evaluates no other Python thread runs — a thread-based timeout cannot fire (a
test demonstrates this). The child process owns its engine (engines are bound to the thread that
made them anyway); the parent waits on the pipe with ``select`` and, past the deadline, kills the
child and starts a fresh one for the next run. The same applies when the child dies (abort, stack
overflow, OOM kill) or reports an engine panic: the run is denied and the worker replaced.

The child gets a minimal environment (no ``SPACELIFT_*`` credentials, no ``RUST_BACKTRACE``), its
stderr is discarded (panic text could echo input), and the ``sanitized`` key reaches it only over
its stdin pipe. Frames are a 4-byte big-endian length and a UTF-8 JSON object, at most
:data:`MAX_FRAME_BYTES`.

:class:`InlineBackend` runs in the caller's thread with no hard timeout: an evaluation that
overruns is still denied (``policy_timeout``) but only once it finishes. ``policy test`` and the
benchmark use it; the gate uses it only when asked to (``isolated=False``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Protocol

from hardened_launcher.errors import LauncherError
from hardened_launcher.policy.engine import (
    CompiledPolicy,
    RawEvaluation,
    RegoEngine,
    compile_policy,
    evaluate_spacelift,
)
from hardened_launcher.policy.errors import (
    WIRE_ERRORS,
    PolicyCompileError,
    PolicyEngineCrashError,
    PolicyEvaluationError,
    PolicyTimeoutError,
)
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.policy.source import PolicyBundle, PolicyFile, Syntax

MAX_FRAME_BYTES = 8 * 1024 * 1024
START_TIMEOUT_S = 30.0
_HEADER = struct.Struct(">I")


class PolicyBackend(Protocol):
    """The seam between the gate and an engine; tests substitute fakes."""

    def evaluate(self, input_json: str, *, timeout_s: float) -> RawEvaluation: ...

    def close(self) -> None: ...


def _timeout_error(timeout_s: float) -> PolicyTimeoutError:
    return PolicyTimeoutError(
        f"the policy evaluation took longer than {timeout_s:g} s",
        hint="the run is denied; simplify the policy or raise the policy timeout",
        reason="policy_timeout",
    )


class InlineBackend:
    """Evaluates in the calling thread (which must be the thread that built it)."""

    def __init__(self, compiled: CompiledPolicy, *, sanitizer: Sanitizer) -> None:
        self._compiled = compiled
        self._engine, _ = _compile_fixed(compiled.bundle, compiled.syntaxes, sanitizer)

    @property
    def engine(self) -> RegoEngine:
        return self._engine

    def evaluate(self, input_json: str, *, timeout_s: float) -> RawEvaluation:
        raw = evaluate_spacelift(self._engine, input_json, has_sample=self._compiled.has_sample)
        if raw.duration_ns > timeout_s * 1e9:
            raise _timeout_error(timeout_s)
        return raw

    def close(self) -> None:
        pass


def _compile_fixed(
    bundle: PolicyBundle, syntaxes: Mapping[str, Syntax], sanitizer: Sanitizer
) -> tuple[RegoEngine, CompiledPolicy]:
    # Each file is re-read with the syntax it was detected as, so both sides agree.
    return compile_policy(bundle, sanitizer=sanitizer, fixed=syntaxes)


def _bundle_from_init(init: Mapping[str, object]) -> tuple[PolicyBundle, dict[str, Syntax], bytes]:
    files, data = init.get("files"), init.get("data")
    if not isinstance(files, list) or not isinstance(data, dict):
        raise PolicyCompileError("the engine worker got a malformed start frame")
    entries = [f for f in files if isinstance(f, dict)]
    bundle = PolicyBundle(
        root=Path(str(init.get("root"))),
        files=tuple(PolicyFile(path=str(f["path"]), text=str(f["text"])) for f in entries),
        data=data,
        sha256=str(init.get("sha256")),
    )
    syntaxes = {str(f["path"]): Syntax(str(f["syntax"])) for f in entries}
    return bundle, syntaxes, bytes.fromhex(str(init.get("key")))


# -- child process ------------------------------------------------------------------------------


def _read_exact(stream: IO[bytes], count: int) -> bytes | None:
    data = stream.read(count)
    if len(data) != count:
        return None
    return data


def _child_read(stream: IO[bytes]) -> dict[str, object] | None:
    header = _read_exact(stream, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        return None
    body = _read_exact(stream, length)
    if body is None:
        return None
    frame: dict[str, object] = json.loads(body)
    return frame


def _child_write(stream: IO[bytes], frame: Mapping[str, object]) -> None:
    body = json.dumps(frame).encode("utf-8")
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def _error_frame(exc: LauncherError) -> dict[str, object]:
    return {
        "ok": False,
        "error": {
            "class": type(exc).__name__,
            "message": exc.message,
            "hint": exc.hint,
            "reason": exc.reason,
            "detail": exc.detail,
        },
    }


def child_main() -> int:
    """Entry point of the worker process: compile once, then evaluate frame by frame."""
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed goes to (discarded) stderr, never into the protocol
    init = _child_read(requests)
    if init is None:
        return 1
    try:
        bundle, syntaxes, key = _bundle_from_init(init)
        engine, compiled = _compile_fixed(bundle, syntaxes, Sanitizer(key))
    except LauncherError as exc:
        _child_write(replies, _error_frame(exc))
        return 1
    _child_write(replies, {"ok": True})
    while True:
        frame = _child_read(requests)
        if frame is None:
            return 0
        try:
            raw = evaluate_spacelift(engine, str(frame["input"]), has_sample=compiled.has_sample)
        except LauncherError as exc:
            _child_write(replies, _error_frame(exc))
            continue
        _child_write(
            replies,
            {"ok": True, "deny": list(raw.deny), "sample": raw.sample, "ns": raw.duration_ns},
        )


# -- parent side ----------------------------------------------------------------------------------


def _child_environment() -> dict[str, str]:
    package_root = Path(__file__).resolve().parents[2]
    return {
        "PATH": os.defpath,
        "PYTHONPATH": str(package_root),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LC_ALL": "C.UTF-8",
    }


class SubprocessBackend:
    """Evaluations in a child process with a hard wall-clock timeout; one at a time."""

    def __init__(self, compiled: CompiledPolicy, *, sanitizer: Sanitizer) -> None:
        self._compiled = compiled
        self._sanitizer = sanitizer
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    # The child is started lazily, and again after it was killed.
    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hardened_launcher.policy.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_child_environment(),
            close_fds=True,
        )
        bundle = self._compiled.bundle
        init = {
            "root": str(bundle.root),
            "sha256": bundle.sha256,
            "data": dict(bundle.data),
            "files": [
                {
                    "path": f.path,
                    "text": f.text,
                    "syntax": self._compiled.syntaxes.get(f.path, Syntax.AUTO).value,
                }
                for f in bundle.files
            ],
            "key": self._sanitizer.key_for_worker().hex(),
        }
        self._proc = proc
        reply = self._exchange(proc, init, timeout_s=START_TIMEOUT_S)
        if not reply.get("ok"):
            self._kill()
            raise _rebuild(reply)
        return proc

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # a dead child leaves a broken pipe
                    stream.close()

    def _exchange(
        self, proc: subprocess.Popen[bytes], frame: Mapping[str, object], *, timeout_s: float
    ) -> dict[str, object]:
        if proc.stdin is None or proc.stdout is None:
            raise _crashed()
        body = json.dumps(frame).encode("utf-8")
        deadline = time.monotonic() + timeout_s
        try:
            proc.stdin.write(_HEADER.pack(len(body)) + body)
            proc.stdin.flush()
        except OSError:
            self._kill()
            raise _crashed() from None
        fd = proc.stdout.fileno()
        buffer = bytearray()
        needed = _HEADER.size
        have_header = False
        while True:
            while len(buffer) < needed:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                    self._kill()
                    self.restarts += 1
                    raise _timeout_error(timeout_s)
                chunk = os.read(fd, max(needed - len(buffer), 65536))
                if not chunk:
                    self._kill()
                    self.restarts += 1
                    raise _crashed()
                buffer.extend(chunk)
            if have_header:
                reply: dict[str, object] = json.loads(bytes(buffer[_HEADER.size : needed]))
                return reply
            (length,) = _HEADER.unpack(bytes(buffer[: _HEADER.size]))
            if length > MAX_FRAME_BYTES:
                self._kill()
                raise _crashed()
            needed = _HEADER.size + length
            have_header = True

    def evaluate(self, input_json: str, *, timeout_s: float) -> RawEvaluation:
        with self._lock:
            proc = self._proc if self._proc is not None else self._start()
            reply = self._exchange(proc, {"input": input_json}, timeout_s=timeout_s)
            if not reply.get("ok"):
                error = _rebuild(reply)
                if isinstance(error, PolicyEngineCrashError):
                    self._kill()  # a panicked engine is not trusted with another run
                    self.restarts += 1
                raise error
            deny = reply.get("deny")
            ns = reply.get("ns")
            if not isinstance(deny, list) or not isinstance(ns, int):
                self._kill()
                raise _crashed()
            return RawEvaluation(
                deny=tuple(str(m) for m in deny), sample=reply.get("sample") is True, duration_ns=ns
            )

    def start(self) -> None:
        """Start the worker now (at launcher start-up) rather than at the first run."""
        with self._lock:
            if self._proc is None:
                self._start()

    def close(self) -> None:
        with self._lock:
            self._kill()


def _crashed() -> PolicyEngineCrashError:
    return PolicyEngineCrashError(
        "the policy engine process stopped during evaluation",
        hint="the run is denied and the engine restarted; report the policy and input",
        reason="policy_engine_crashed",
    )


def _rebuild(reply: Mapping[str, object]) -> LauncherError:
    error = reply.get("error")
    if not isinstance(error, dict):
        return _crashed()
    cls = WIRE_ERRORS.get(str(error.get("class")), PolicyEvaluationError)
    return cls(
        str(error.get("message", "")),
        hint=str(error.get("hint", "")),
        reason=str(error.get("reason") or cls.default_reason),
        detail=str(error.get("detail", "")),
    )


if __name__ == "__main__":
    raise SystemExit(child_main())
