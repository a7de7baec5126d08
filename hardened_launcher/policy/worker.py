"""Where evaluations run: in this thread (:class:`InlineBackend`) or in a child process
(:class:`SubprocessBackend`, what the launcher uses).

Why a process and not a watchdog thread: regorus holds the GIL for the whole evaluation, so while
a runaway policy evaluates no other Python thread runs — a thread-based timeout cannot fire (a
test demonstrates this). Nor can the engine bound itself: the binding's ``Engine`` has no
execution-time or instruction limit, and its ``Rvm`` (a policy compiled to bytecode) stops after a
fixed 25 000 instructions but not inside a builtin (``count(numbers.range(0, 3e7))`` is one
instruction and runs for seconds), and it cannot run ``with``, ``walk`` loops, legacy (v0) syntax
or the launcher's extensions (``sanitized``, ``io.jwt.*``). So the child process owns its engine
(engines are bound to the thread that made them anyway); the parent waits for the reply with
``poll`` and, past the deadline, kills the child and starts a fresh one for the next run. The same
applies when the child dies (abort, stack overflow, OOM kill) or reports an engine panic: the run
is denied and the worker replaced.

The child gets a minimal environment (no ``SPACELIFT_*`` credentials, no ``RUST_BACKTRACE``), its
stderr is discarded (panic text could echo input), and the ``sanitized`` key reaches it only over
its stdin pipe.

Wire format (one persistent child, one evaluation at a time, raw pipe file descriptors with no
Python buffering): every frame is a 4-byte big-endian length and a body of at most
:data:`MAX_FRAME_BYTES`. The parent's first frame is the JSON start frame (policy files, data,
key); every later one is the already-encoded input document, byte for byte (no re-encoding). The
child answers each frame with a tag byte: ``READY`` (start frame compiled), ``RESULT`` (binary:
sample flag, duration in ns, message count, then each deny message length-prefixed UTF-8) or
``ERROR`` (a JSON object naming the error class). A reply that does not parse is treated as a
crash. One evaluation costs the parent a ``write``, a ``poll`` and (usually) one ``read``.

:class:`InlineBackend` runs in the caller's thread with no hard timeout: an evaluation that
overruns is still denied (``policy_timeout``) but only once it finishes. ``policy test`` and the
benchmark use it; the gate uses it only when asked to (``isolated=False``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import resource
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from hardened_launcher.errors import LauncherError
from hardened_launcher.policy.engine import (
    CompiledPolicy,
    RawEvaluation,
    RegoEngine,
    compile_policy,
    evaluate_spacelift,
    probe_policy,
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
DEFAULT_PROBE_TIMEOUT_S = 1.0
# Address space the worker may map beyond what it has mapped after start-up (about 120 MiB).
MEMORY_BUDGET_BYTES = 1024 * 1024 * 1024
_INITIAL_BUFFER = 64 * 1024
_LENGTH = struct.Struct(">I")
# RESULT body head: tag, sample (0/1), duration_ns, number of deny messages.
_RESULT = struct.Struct(">BBQI")
TAG_READY = 0
TAG_RESULT = 1
TAG_ERROR = 2
_POLL_FAILED = select.POLLERR | select.POLLHUP | select.POLLNVAL


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
    bundle: PolicyBundle,
    syntaxes: Mapping[str, Syntax],
    sanitizer: Sanitizer,
    *,
    probe: bool = True,
) -> tuple[RegoEngine, CompiledPolicy]:
    # Each file is re-read with the syntax it was detected as, so both sides agree.
    return compile_policy(bundle, sanitizer=sanitizer, fixed=syntaxes, probe=probe)


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


# -- wire format (both sides) -------------------------------------------------------------------


def encode_result(raw: RawEvaluation) -> bytes:
    """The RESULT body for one evaluation."""
    parts = [_RESULT.pack(TAG_RESULT, 1 if raw.sample else 0, raw.duration_ns, len(raw.deny))]
    for message in raw.deny:
        encoded = message.encode("utf-8")
        parts.append(_LENGTH.pack(len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def decode_result(body: bytes) -> RawEvaluation:
    """Parse a RESULT body; ``ValueError`` when it is malformed in any way."""
    try:
        tag, sample, duration_ns, count = _RESULT.unpack_from(body)
    except struct.error:
        raise ValueError("short result frame") from None
    if tag != TAG_RESULT or sample not in (0, 1):
        raise ValueError("bad result frame head")
    offset = _RESULT.size
    deny: list[str] = []
    for _ in range(count):
        if offset + _LENGTH.size > len(body):
            raise ValueError("truncated deny message length")
        (length,) = _LENGTH.unpack_from(body, offset)
        offset += _LENGTH.size
        if offset + length > len(body):
            raise ValueError("truncated deny message")
        deny.append(body[offset : offset + length].decode("utf-8"))
        offset += length
    if offset != len(body):
        raise ValueError("trailing bytes in result frame")
    return RawEvaluation(deny=tuple(deny), sample=sample == 1, duration_ns=duration_ns)


def _error_body(exc: LauncherError) -> bytes:
    error = {
        "class": type(exc).__name__,
        "message": exc.message,
        "hint": exc.hint,
        "reason": exc.reason,
        "detail": exc.detail,
    }
    return bytes([TAG_ERROR]) + json.dumps(error).encode("utf-8")


class _FrameBuffer:
    """Length-prefixed frames read from one file descriptor into one reused buffer.

    Reads go straight into the buffer (``readv``), so a frame costs no allocation beyond its
    body; the buffer grows only for frames larger than it (up to :data:`MAX_FRAME_BYTES`).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray(_INITIAL_BUFFER)
        self._view = memoryview(self._buffer)
        self._start = 0  # first unconsumed byte
        self._end = 0  # end of the bytes read so far

    def pop(self) -> bytes | None:
        """The next complete frame's body, if buffered; ``ValueError`` for an oversized one."""
        available = self._end - self._start
        if available < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(self._buffer, self._start)
        if length > MAX_FRAME_BYTES:
            raise ValueError("oversized frame")
        end = self._start + _LENGTH.size + length
        if end > self._end:
            return None
        body = bytes(self._view[self._start + _LENGTH.size : end])
        self._start = end
        if self._start == self._end:
            self._start = self._end = 0
        return body

    def fill(self) -> int:
        """One ``read`` into the buffer: the byte count, 0 at end of stream (``BlockingIOError``
        from a non-blocking descriptor with nothing to read)."""
        if self._end == len(self._buffer):
            self._make_room()
        count = os.readv(self.fd, [self._view[self._end :]])
        self._end += count
        return count

    def _make_room(self) -> None:
        pending = bytes(self._view[self._start : self._end])
        size = len(self._buffer)
        if len(pending) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(pending)
            size = max(size, _LENGTH.size + length)
        if len(pending) == size:  # pragma: no cover - pop() consumes a complete frame first
            size *= 2
        if size != len(self._buffer):
            self._view.release()
            self._buffer = bytearray(size)
            self._view = memoryview(self._buffer)
        self._view[: len(pending)] = pending
        self._start, self._end = 0, len(pending)

    def read(self) -> bytes | None:
        """The next frame from a blocking descriptor; ``None`` at end of stream or on an
        oversized frame."""
        try:
            while True:
                body = self.pop()
                if body is not None:
                    return body
                if not self.fill():
                    return None
        except ValueError:
            return None


def _send_all(fd: int, body: bytes) -> None:
    """Write one frame to a blocking descriptor."""
    header = _LENGTH.pack(len(body))
    written = os.writev(fd, [header, body])
    if written < len(header) + len(body):
        rest = memoryview(header + body)[written:]
        while rest:
            rest = rest[os.write(fd, rest) :]


# -- child process ------------------------------------------------------------------------------


def _vm_size_bytes() -> int | None:
    try:
        with open("/proc/self/status", "rb") as status:  # noqa: PTH123 - a procfs read
            for line in status:
                if line.startswith(b"VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def limit_memory(budget_bytes: int = MEMORY_BUDGET_BYTES) -> None:
    """Cap this process's address space at what it maps now plus ``budget_bytes``.

    The engine's allocations past the cap fail: regorus aborts (the parent sees a crash) or
    Python raises ``MemoryError``. Either way the evaluation is denied and the host keeps its
    memory. Without procfs (not Linux) nothing is capped.
    """
    current = _vm_size_bytes()
    if current is None:  # pragma: no cover - Linux always has /proc/self/status
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = current + budget_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def child_main() -> int:
    """Entry point of the worker process: compile once, probe once, then evaluate frame by
    frame. An empty frame asks for the probe (an input document is never empty)."""
    limit_memory()
    replies = os.dup(1)
    os.dup2(2, 1)  # anything else printed goes to (discarded) stderr, never into the protocol
    requests = _FrameBuffer(0)
    init_body = requests.read()
    if init_body is None:
        return 1
    try:
        init = json.loads(init_body)
        if not isinstance(init, dict):
            raise PolicyCompileError("the engine worker got a malformed start frame")
        bundle, syntaxes, key = _bundle_from_init(init)
        engine, compiled = _compile_fixed(bundle, syntaxes, Sanitizer(key), probe=False)
    except LauncherError as exc:
        _send_all(replies, _error_body(exc))
        return 1
    has_sample = compiled.has_sample
    # Everything built so far lives for the whole process: keep the collector off it.
    gc.collect()
    gc.freeze()
    _send_all(replies, bytes([TAG_READY]))
    while True:
        body = requests.read()
        if body is None:
            return 0
        if not body:
            try:
                probe_policy(engine, has_sample=has_sample)
                reply = bytes([TAG_READY])
            except LauncherError as exc:
                reply = _error_body(exc)
            _send_all(replies, reply)
            continue
        try:
            raw = evaluate_spacelift(engine, body.decode("utf-8"), has_sample=has_sample)
            reply = encode_result(raw)
        except LauncherError as exc:
            reply = _error_body(exc)
        except UnicodeError:
            reply = _error_body(PolicyEvaluationError("the input is not UTF-8"))
        _send_all(replies, reply)


# -- parent side ----------------------------------------------------------------------------------


def _child_environment() -> dict[str, str]:
    package_root = Path(__file__).resolve().parents[2]
    return {
        "PATH": os.defpath,
        "PYTHONPATH": str(package_root),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LC_ALL": "C.UTF-8",
        # The engine's allocator (mimalloc) reserves 1 GiB of address space per arena by
        # default; small arenas keep the address-space cap close to the memory really used.
        "MIMALLOC_ARENA_RESERVE": "64MiB",
    }


def _remaining_ms(deadline: float) -> int:
    return max(0, math.ceil((deadline - time.monotonic()) * 1000))


class _Child:
    """One worker process and the parent's ends of its pipes (raw, no Python buffering)."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_child_environment(),
            close_fds=True,
            bufsize=0,
        )
        if self.proc.stdin is None or self.proc.stdout is None:  # pragma: no cover - PIPE given
            raise RuntimeError("the engine worker has no pipes")
        self.write_fd = self.proc.stdin.fileno()
        self.read_fd = self.proc.stdout.fileno()
        # Non-blocking both ways: a large frame to a stuck child or a reply that never comes
        # must still end at the deadline.
        os.set_blocking(self.write_fd, False)
        os.set_blocking(self.read_fd, False)
        self.readable = select.poll()
        self.readable.register(self.read_fd, select.POLLIN)
        self.writable = select.poll()
        self.writable.register(self.write_fd, select.POLLOUT)
        self.replies = _FrameBuffer(self.read_fd)

    def send(self, body: bytes, deadline: float) -> bool:
        """Write one frame; ``False`` past the deadline, ``OSError`` if the child is gone."""
        header = _LENGTH.pack(len(body))
        try:
            written = os.writev(self.write_fd, [header, body])
        except BlockingIOError:
            written = 0
        if written == len(header) + len(body):
            return True
        rest = memoryview(header + body)[written:]  # only frames larger than the pipe buffer
        while True:
            if not self.writable.poll(_remaining_ms(deadline)):
                return False
            try:
                rest = rest[os.write(self.write_fd, rest) :]
            except BlockingIOError:
                continue
            if not rest:
                return True

    def receive(self, deadline: float) -> bytes | None:
        """The next reply body; ``None`` past the deadline. ``EOFError`` if the child is gone,
        ``ValueError`` for an oversized frame."""
        while True:
            body = self.replies.pop()
            if body is not None:
                return body
            events = self.readable.poll(_remaining_ms(deadline))
            if not events:
                return None
            try:
                if not self.replies.fill():
                    raise EOFError
            except BlockingIOError:
                if events[0][1] & _POLL_FAILED:
                    raise EOFError from None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # a dead child leaves a broken pipe
                    stream.close()


class SubprocessBackend:
    """Evaluations in a child process with a hard wall-clock timeout; one at a time.

    Thread-safe: callers are serialised by a lock (the child evaluates one input at a time).
    ``argv`` replaces the worker command line (tests use it to run a misbehaving worker).
    """

    def __init__(
        self,
        compiled: CompiledPolicy,
        *,
        sanitizer: Sanitizer,
        argv: Sequence[str] | None = None,
        probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
    ) -> None:
        if not probe_timeout_s > 0:
            raise ValueError("the probe timeout must be positive")
        self._probe_timeout_s = probe_timeout_s
        self._compiled = compiled
        self._sanitizer = sanitizer
        self._argv = tuple(argv or (sys.executable, "-m", "hardened_launcher.policy.worker"))
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self.restarts = 0

    @property
    def _proc(self) -> subprocess.Popen[bytes] | None:
        """The worker process, if one is running (tests kill it)."""
        return self._child.proc if self._child is not None else None

    # The child is started lazily, and again after it was killed.
    def _start(self) -> _Child:
        try:
            child = _Child(self._argv)
        except OSError:
            raise _crashed() from None  # cannot even start a worker (fd or process limits)
        self._child = child
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
        body = self._exchange(child, json.dumps(init).encode("utf-8"), timeout_s=START_TIMEOUT_S)
        if body[:1] == bytes([TAG_READY]) and len(body) == 1:
            body = self._probe(child)
            if body[:1] == bytes([TAG_READY]) and len(body) == 1:
                return child
        self._kill()
        raise _error_from(body)

    def _probe(self, child: _Child) -> bytes:
        """The compile-time probe, under the evaluation's timeout and the memory limit."""
        try:
            return self._exchange(child, b"", timeout_s=self._probe_timeout_s)
        except PolicyTimeoutError:
            raise PolicyCompileError(
                f"the policy takes longer than {self._probe_timeout_s:g} s to evaluate an empty "
                "input",
                hint="a policy must decide within the policy timeout whatever the input; "
                "simplify it",
                reason="policy_timeout",
            ) from None
        except PolicyEngineCrashError:
            raise PolicyCompileError(
                "the policy engine stopped while evaluating the policy on an empty input (it "
                f"may need more than the {MEMORY_BUDGET_BYTES >> 20} MiB memory limit)",
                hint="simplify the policy; `hardened-launcher policy check PATH` repeats this",
                reason="policy_engine_crashed",
            ) from None

    def _kill(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.kill()

    def _replace(self, error: LauncherError) -> LauncherError:
        """Kill the worker (the next evaluation starts a fresh one) and return ``error``."""
        self._kill()
        self.restarts += 1
        return error

    def _exchange(self, child: _Child, body: bytes, *, timeout_s: float) -> bytes:
        """Send one frame and return the reply body; kills the child on timeout or death."""
        deadline = time.monotonic() + timeout_s
        try:
            if not child.send(body, deadline):
                raise self._replace(_timeout_error(timeout_s))
            reply = child.receive(deadline)
        except (OSError, EOFError, ValueError):
            raise self._replace(_crashed()) from None
        if reply is None:
            raise self._replace(_timeout_error(timeout_s))
        if not reply:
            raise self._replace(_crashed())
        return reply

    def evaluate(self, input_json: str, *, timeout_s: float) -> RawEvaluation:
        body = input_json.encode("utf-8")
        if len(body) > MAX_FRAME_BYTES:
            raise PolicyEvaluationError(
                f"the policy input is larger than {MAX_FRAME_BYTES} bytes",
                hint="the run is denied; the input document is limited to 1 MiB",
                reason="policy_evaluation_error",
            )
        with self._lock:
            child = self._child if self._child is not None else self._start()
            reply = self._exchange(child, body, timeout_s=timeout_s)
            if reply[0] == TAG_RESULT:
                try:
                    return decode_result(reply)
                except ValueError:  # UnicodeDecodeError included
                    raise self._replace(_crashed()) from None
            error = _error_from(reply)
            if isinstance(error, PolicyEngineCrashError):
                raise self._replace(error)  # a panicked engine is not trusted with another run
            raise error

    def start(self) -> None:
        """Start the worker now (at launcher start-up) rather than at the first run."""
        with self._lock:
            if self._child is None:
                self._start()

    def close(self) -> None:
        with self._lock:
            self._kill()


def _crashed() -> PolicyEngineCrashError:
    return PolicyEngineCrashError(
        "the policy engine process stopped during evaluation (it crashed, or the evaluation "
        f"needed more than the worker's {MEMORY_BUDGET_BYTES >> 20} MiB memory limit)",
        hint="the run is denied and the engine restarted; report the policy and input",
        reason="policy_engine_crashed",
    )


def _error_from(body: bytes) -> LauncherError:
    """Rebuild the error an ERROR reply names; anything else is a crash."""
    if body[:1] != bytes([TAG_ERROR]):
        return _crashed()
    try:
        error = json.loads(body[1:])
    except ValueError:
        return _crashed()
    if not isinstance(error, dict):
        return _crashed()
    cls = WIRE_ERRORS.get(str(error.get("class")), PolicyEvaluationError)
    return cls(
        str(error.get("message", "")),
        hint=str(error.get("hint", "")),
        reason=str(error.get("reason") or cls.default_reason),
        detail=str(error.get("detail", "")),
    )


def start_isolated(
    compiled: CompiledPolicy, *, sanitizer: Sanitizer, timeout_s: float = DEFAULT_PROBE_TIMEOUT_S
) -> SubprocessBackend:
    """A worker process that compiled and probed ``compiled`` under ``timeout_s`` and the
    memory limit, ready to evaluate (the caller closes it). Raises what the probe raised."""
    backend = SubprocessBackend(compiled, sanitizer=sanitizer, probe_timeout_s=timeout_s)
    try:
        backend.start()
    except BaseException:
        backend.close()
        raise
    return backend


def probe_isolated(
    compiled: CompiledPolicy, *, sanitizer: Sanitizer, timeout_s: float = DEFAULT_PROBE_TIMEOUT_S
) -> None:
    """Compile and probe ``compiled`` in a worker process under ``timeout_s`` and the memory
    limit, then stop it: the start-up check of a policy costs this process nothing unbounded."""
    start_isolated(compiled, sanitizer=sanitizer, timeout_s=timeout_s).close()


if __name__ == "__main__":
    raise SystemExit(child_main())
