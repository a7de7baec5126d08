"""How fast is gate 3? p50/p99 and evaluations per second for each library policy.

Run: ``python benchmarks/bench_policy.py [--iterations N] [--policy NAME]``

For each ``policies/*.rego`` (without its tests) and a realistic ~2 KB input document, the script
times, interleaved in chunks in one process:

- ``bare``: a raw regorus engine: ``set_input_json`` + ``eval_rule("data.spacelift.deny")`` on
  the pre-encoded input (the floor: what the engine itself costs);
- ``inline``: our wrapper in this thread (:func:`evaluate_spacelift`: input, deny, sample, checks);
- ``gate``: :meth:`PolicyGate.evaluate` from the document with the default backend (the engine in
  its worker process, what the launcher runs: adds canonical JSON encoding, the input digest, the
  pipe round trip and the hard timeout).

It prints p50 and p99 of each, evaluations per second (one caller: 1 / mean latency) and the
gate's ratios against ``bare``. Percentiles on a shared or
busy machine move between runs; compare columns of one run, not runs.

``--before DIR`` adds a ``before`` column: the gate of another checkout (``DIR``, e.g. the main
branch), timed in a helper process that imports the launcher from ``DIR`` and runs its chunks
interleaved with this process's, so both see the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import regorus  # type: ignore[import-untyped]  # the binding ships no stubs

from hardened_launcher.policy import LauncherFacts, PolicyGate, Sanitizer, build_input, encode_input
from hardened_launcher.policy.engine import evaluate_spacelift
from hardened_launcher.policy.gate import check_policy_path
from hardened_launcher.policy.worker import InlineBackend

LIBRARY = Path(__file__).resolve().parents[1] / "policies"
CONFIG = {
    "launcher_policy": {
        "allowed_registries": ["ghcr.io", "registry.example.com"],
        "no_task_stacks": ["prod-db"],
        "change_window_stacks": ["prod-net"],
        "change_window": {"days": ["Monday", "Tuesday"], "start_hour": 9, "end_hour": 17},
        "protected_branches": ["main", "release/*"],
        "credential_name_exceptions": ["TOKEN_TTL"],
        "allowed_binary_digests": {"spacelift-worker": ["a" * 64]},
    }
}


def realistic_metadata() -> dict[str, object]:
    env = {f"TF_VAR_setting_{i}": f"value-{i}" for i in range(15)}
    env |= {"AWS_REGION": "eu-west-1", "TF_LOG": "info", "TOKEN_TTL": "3600"}
    return {
        "docker_image": "ghcr.io/acme/spacelift-runner:2024.05.1",
        "worker_version": "v1.23.0",
        "run": {
            "id": "01HRUNULID0000000000000000",
            "state": "PREPARING",
            "type": "TRACKED",
            "triggered_by": "alice@example.com",
            "created_at": 1715000000000000000,
            "updated_at": 1715000005000000000,
            "commit": {
                "author": "alice",
                "branch": "main",
                "hash": "0123456789abcdef0123456789abcdef01234567",
                "created_at": 1714999000000000000,
                "message": "Bump the network module to 4.2 and tighten the security groups",
            },
            "changes": [f"stacks/network/{name}.tf" for name in ("main", "sg", "vpc", "outputs")],
            "user_provided_metadata": ["ticket=OPS-1234"],
            "based_on_local_workspace": False,
        },
        "static_run_environment": {
            "account_name": "acme",
            "run_type": "TRACKED",
            "run_ulid": "01HRUNULID0000000000000000",
            "stack_slug": "prod-net",
            "stack_labels": ["team:network", "env:prod", "tier:1"],
            "command": "terraform apply",
            "before_init": ["echo init", "tflint --init"],
            "before_apply": ["infracost breakdown --path ."],
            "commit_branch": "main",
            "commit_sha": "0123456789abcdef0123456789abcdef01234567",
            "project_root": "stacks/network",
            "repository_path": "github.com/acme/infrastructure",
            "environment_variables": env,
            "terraform_version": "1.7.5",
            "vendor_specific_config": {"workspace": "prod", "use_smart_sanitization": True},
        },
    }


def timed(fn: Callable[[], object], iterations: int) -> list[int]:
    samples = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return samples


def run_inline(backend: InlineBackend, has_sample: bool, text: str) -> object:
    return evaluate_spacelift(backend.engine, text, has_sample=has_sample)


# The ``--before`` helper: runs with ``PYTHONPATH=DIR`` and so imports DIR's launcher; it reads
# one JSON command a line (set up a gate, time a chunk, stop) and answers each with one JSON line.
BEFORE_HELPER = """
import json, sys, time
from pathlib import Path
from hardened_launcher.policy import PolicyGate, Sanitizer
from hardened_launcher.policy.gate import check_policy_path
gate = None
doc = None
for line in sys.stdin:
    command = json.loads(line)
    if command["op"] == "setup":
        if gate is not None:
            gate.close()
        sanitizer = Sanitizer.random()
        compiled = check_policy_path(Path(command["root"]), sanitizer=sanitizer)
        gate = PolicyGate.start(compiled, sanitizer=sanitizer, timeout_s=5)
        doc = command["doc"]
        samples = []
    else:
        samples = []
        for _ in range(command["n"]):
            start = time.perf_counter_ns()
            gate.evaluate(doc)
            samples.append(time.perf_counter_ns() - start)
    print(json.dumps(samples), flush=True)
if gate is not None:
    gate.close()
"""


class Before:
    """The gate of another checkout, timed chunk by chunk in a helper process."""

    def __init__(self, checkout: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(checkout), PYTHONDONTWRITEBYTECODE="1")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", BEFORE_HELPER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )

    def _call(self, command: dict[str, object]) -> list[int]:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()
        samples: list[int] = json.loads(self._proc.stdout.readline())
        return samples

    def setup(self, root: Path, doc: object) -> None:
        self._call({"op": "setup", "root": str(root), "doc": doc})

    def timed(self, iterations: int) -> list[int]:
        return self._call({"op": "run", "n": iterations})

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=30)


def pct(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=10_000)
    parser.add_argument("--policy", action="append", help="only this policy (file stem)")
    parser.add_argument("--before", type=Path, help="also time the gate of this checkout")
    args = parser.parse_args()
    before = Before(args.before) if args.before else None
    sanitizer = Sanitizer.random()
    doc = build_input(
        realistic_metadata(),
        launcher=LauncherFacts(pool_id="01HPOOL", worker_id="w-1", version="0.1.0"),
        sanitizer=sanitizer,
        secret_variables=(),
    )
    doc["launcher"]["binaries"] = {"spacelift-worker": "a" * 64}  # type: ignore[index, call-overload]
    text = encode_input(doc)
    print(
        f"input: {len(text)} bytes; {args.iterations} evaluations per case; times in µs; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'policy':20} {'bare p50/p99':>13} {'inline p50/p99':>14} {'gate p50/p99':>13}"
        f" {'bare eval/s':>11} {'gate eval/s':>11} {'gate/bare p50':>13} {'p99':>5}"
        + (f" {'before p50/p99':>14}" if before else "")
    )
    policies = sorted(p for p in LIBRARY.glob("*.rego") if not p.name.endswith("_test.rego"))
    if args.policy:
        policies = [p for p in policies if p.stem in args.policy]
    for policy in policies:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / policy.name).write_text(policy.read_text())
            (root / "config.json").write_text(json.dumps(CONFIG))
            compiled = check_policy_path(root, sanitizer=sanitizer)
            bare = regorus.Engine()
            bare.add_policy(policy.name, policy.read_text())
            bare.add_data_json(json.dumps(CONFIG))

            def run_bare(engine: object = bare) -> object:
                engine.set_input_json(text)  # type: ignore[attr-defined]
                return engine.eval_rule("data.spacelift.deny")  # type: ignore[attr-defined]

            inline = InlineBackend(compiled, sanitizer=sanitizer)
            has_sample = compiled.has_sample
            with PolicyGate.start(compiled, sanitizer=sanitizer, timeout_s=5) as gate:
                for fn in (run_bare, lambda: gate.evaluate(doc)):
                    timed(fn, 200)  # warm up
                if before:
                    before.setup(root, doc)
                    before.timed(200)
                bare_s, inline_s, gate_s, before_s = [], [], [], []
                for _ in range(10):
                    chunk = args.iterations // 10
                    bare_s += timed(run_bare, chunk)
                    inline_s += timed(partial(run_inline, inline, has_sample, text), chunk)
                    gate_s += timed(lambda: gate.evaluate(doc), chunk)
                    if before:
                        before_s += before.timed(chunk)
        b50, i50, g50 = (statistics.median(s) / 1000 for s in (bare_s, inline_s, gate_s))
        b99, i99, g99 = (pct(s, 0.99) for s in (bare_s, inline_s, gate_s))
        print(
            f"{policy.stem:20} {b50:6.1f}/{b99:6.1f} {i50:6.1f}/{i99:7.1f} {g50:6.1f}/{g99:6.1f}"
            f" {1e9 / statistics.mean(bare_s):11.0f} {1e9 / statistics.mean(gate_s):11.0f}"
            f" {g50 / b50:13.2f} {g99 / b99:5.2f}"
            + (
                f" {statistics.median(before_s) / 1000:6.1f}/{pct(before_s, 0.99):7.1f}"
                if before_s
                else ""
            )
        )
    if before:
        before.close()


if __name__ == "__main__":
    main()
