"""Where does one gate evaluation spend its time? Percentiles per step, parent and worker.

Run: ``python -m benchmarks.policy_gate_split [--iterations N] [--policy NAME]``

It drives a policy worker process with the gate's own wire format and parent-side code
(:mod:`hardened_launcher.policy.worker`: the same frames, ``write``, then ``poll`` and ``read``)
but with an instrumented worker loop that records ``time.perf_counter_ns``
(``CLOCK_MONOTONIC``, one clock for both processes) after each step, so the two processes'
steps line up:

parent ``encode`` (canonical JSON) → ``digest`` (SHA-256) → ``write`` (the input frame) →
worker ``worker_wake`` (from the parent's write returning to the worker's read returning) →
``decode`` → ``set_input`` → ``eval_deny`` → ``sample`` → ``prints`` → ``result_encode`` →
``reply_write`` → parent ``reply_wait`` (from the worker's write returning to the parent
holding the reply: its wake-up and ``read``) → ``result_decode``.

When the worker wakes on the parent's CPU it runs before the parent's ``write`` returns, and
the parent again before the worker's ``write`` returns: then ``write`` and ``reply_write``
include the other side's work and ``reply_wait`` is negative; ``total`` is always the wall
time of one evaluation.

It also reads, before and after each evaluation, how long the parent and the worker were
runnable but waiting for a CPU (``/proc/PID/schedstat``): ``run_queue_wait``, the part of the
tail that other processes' CPU use explains (when the two share a CPU, also their waiting for
each other).

It prints p50, p90, p99 and p99.9 of each step and, over the slowest 1% of evaluations, the mean
of each step: the tail's culprit. Times in µs.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import sys
import tempfile
import time
from array import array
from collections.abc import Mapping
from pathlib import Path

from benchmarks.bench_policy import CONFIG, LIBRARY, realistic_metadata
from hardened_launcher.policy import LauncherFacts, Sanitizer, build_input, encode_input
from hardened_launcher.policy.engine import (
    DENY_RULE,
    SAMPLE_RULE,
    RawEvaluation,
    _deny_messages,
)
from hardened_launcher.policy.gate import check_policy_path
from hardened_launcher.policy.input import JSONValue
from hardened_launcher.policy.worker import (
    TAG_READY,
    SubprocessBackend,
    _bundle_from_init,
    _compile_fixed,
    _FrameBuffer,
    _send_all,
    decode_result,
    encode_result,
    limit_memory,
)

WARM_UP = 200
STAMPS = 8  # per evaluation, worker side


def child() -> int:
    """The worker loop of :func:`~hardened_launcher.policy.worker.child_main`, with clocks.
    At end of stream it writes every timestamp to the file named by ``argv[2]``."""
    limit_memory()
    out_path = sys.argv[2]
    replies = os.dup(1)
    os.dup2(2, 1)
    requests = _FrameBuffer(0)
    init = json.loads(requests.read() or b"{}")
    bundle, syntaxes, key = _bundle_from_init(init)
    engine, compiled = _compile_fixed(bundle, syntaxes, Sanitizer(key), probe=False)
    has_sample = compiled.has_sample
    gc.collect()
    gc.freeze()
    _send_all(replies, bytes([TAG_READY]))
    stamps = array("q")
    clock = time.perf_counter_ns
    while True:
        body = requests.read()
        t_read = clock()
        if body is None:
            break
        if not body:
            _send_all(replies, bytes([TAG_READY]))
            continue
        text = body.decode("utf-8")
        t_decode = clock()
        engine.set_input_json(text)
        t_set = clock()
        deny = _deny_messages(engine.eval_rule(DENY_RULE))
        t_deny = clock()
        sample = has_sample and engine.eval_rule(SAMPLE_RULE) is True
        t_sample = clock()
        engine.take_prints()
        t_prints = clock()
        raw = RawEvaluation(deny=deny, sample=sample, duration_ns=t_sample - t_decode)
        reply = encode_result(raw)
        t_enc = clock()
        _send_all(replies, reply)
        t_sent = clock()
        stamps.extend((t_read, t_decode, t_set, t_deny, t_sample, t_prints, t_enc, t_sent))
    Path(out_path).write_bytes(stamps.tobytes())
    return 0


def run_queue_wait(fd: int) -> int:
    """Nanoseconds the process has spent runnable but waiting for a CPU (``schedstat``)."""
    return int(os.pread(fd, 100, 0).split()[1])


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def run_policy(
    policy: Path,
    iterations: int,
    sanitizer: Sanitizer,
    doc: Mapping[str, JSONValue],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / policy.name).write_text(policy.read_text())
        (root / "config.json").write_text(json.dumps(CONFIG))
        compiled = check_policy_path(root, sanitizer=sanitizer)
        stamps_path = root / "stamps"
        argv = (sys.executable, "-m", "benchmarks.policy_gate_split", "--child", str(stamps_path))
        backend = SubprocessBackend(compiled, sanitizer=sanitizer, argv=argv)
        backend.start()
        worker = backend._child  # the benchmark drives the frames itself
        assert worker is not None
        clock = time.perf_counter_ns
        parent: list[tuple[int, ...]] = []
        own_stat = os.open("/proc/self/schedstat", os.O_RDONLY)
        child_stat = os.open(f"/proc/{worker.proc.pid}/schedstat", os.O_RDONLY)
        for i in range(iterations + WARM_UP):
            wait0 = run_queue_wait(own_stat) + run_queue_wait(child_stat)
            t0 = clock()
            text = encode_input(doc)
            t_enc = clock()
            hashlib.sha256(text.encode("utf-8")).hexdigest()
            t_sha = clock()
            deadline = time.monotonic() + 5
            worker.send(text.encode("utf-8"), deadline)
            t_write = clock()
            reply = worker.receive(deadline)
            t_reply = clock()
            assert reply is not None
            decode_result(reply)
            t_dec = clock()
            wait1 = run_queue_wait(own_stat) + run_queue_wait(child_stat)
            if i >= WARM_UP:
                parent.append((t0, t_enc, t_sha, t_write, t_reply, t_dec, wait1 - wait0))
        assert worker.proc.stdin is not None
        worker.proc.stdin.close()  # end of stream: the child writes its stamps and exits
        worker.proc.wait(timeout=10)
        backend.close()
        os.close(own_stat)
        os.close(child_stat)
        raw = array("q")
        raw.frombytes(stamps_path.read_bytes())
    rows = [tuple(raw[i : i + STAMPS]) for i in range(0, len(raw), STAMPS)][-iterations:]
    steps: dict[str, list[int]] = {}
    for (t0, p_enc, p_sha, p_write, p_reply, p_dec, waited), c in zip(parent, rows, strict=True):
        c_read, c_dec, c_set, c_deny, c_sample, c_prints, c_enc, c_sent = c
        split = {
            "encode": p_enc - t0,
            "digest": p_sha - p_enc,
            "write": p_write - p_sha,
            "worker_wake": c_read - p_write,
            "decode": c_dec - c_read,
            "set_input": c_set - c_dec,
            "eval_deny": c_deny - c_set,
            "sample": c_sample - c_deny,
            "prints": c_prints - c_sample,
            "result_encode": c_enc - c_prints,
            "reply_write": c_sent - c_enc,
            "reply_wait": p_reply - c_sent,
            "result_decode": p_dec - p_reply,
            "run_queue_wait": waited,
            "total": p_dec - t0,
        }
        for name, value in split.items():
            steps.setdefault(name, []).append(value)
    totals = steps["total"]
    cut = sorted(totals)[int(0.99 * len(totals))]
    tail = [i for i, total in enumerate(totals) if total >= cut]
    print(
        f"\n{policy.stem}: {iterations} evaluations, load average {os.getloadavg()[0]:.2f}; "
        f"slowest 1% = {len(tail)} evaluations"
    )
    print(f"  {'step':14} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>8} {'tail mean':>10}")
    for name, values in steps.items():
        tail_mean = sum(values[i] for i in tail) / len(tail) / 1000
        print(
            f"  {name:14} {pct(values, 0.5):7.1f} {pct(values, 0.9):7.1f} {pct(values, 0.99):7.1f}"
            f" {pct(values, 0.999):8.1f} {tail_mean:10.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--policy", action="append", help="only this policy (file stem)")
    args = parser.parse_args()
    sanitizer = Sanitizer.random()
    doc = build_input(
        realistic_metadata(),
        launcher=LauncherFacts(pool_id="01HPOOL", worker_id="w-1", version="0.1.0"),
        sanitizer=sanitizer,
        secret_variables=(),
    )
    doc["launcher"]["binaries"] = {"spacelift-worker": "a" * 64}  # type: ignore[index, call-overload]
    print(f"{os.cpu_count()} CPUs; times in µs")
    policies = sorted(p for p in LIBRARY.glob("*.rego") if not p.name.endswith("_test.rego"))
    if args.policy:
        policies = [p for p in policies if p.stem in args.policy]
    for policy in policies:
        run_policy(policy, args.iterations, sanitizer, doc)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        raise SystemExit(child())
    main()
