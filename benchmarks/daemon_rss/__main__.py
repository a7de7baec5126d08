"""Resident memory of a real launcher daemon: idle, and per concurrent run (1, 4 and 8).

Run: ``python -m benchmarks.daemon_rss [--settle 3] [--run-seconds 15] [--before DIR]
[--secrets none,one]``

``--before DIR`` (an older tree, e.g. ``git archive <commit> hardened_launcher | tar -x -C
DIR``) runs launchers from that tree too, count by count in the same run.

Starts the demo environment (``hardened_launcher.demo.environment``: the control plane's
long-poll endpoint, SeaweedFS, dockerd, one ``hardened-launcher start`` allowed 8 concurrent
runs), and reads the launcher's resident set (VmRSS of its process group) from /proc:

* **baseline**: a bare ``python -c`` sleeping, measured in the same run;
* **idle**: after the launcher registered and settled;
* **per run**: for 1, 4 and 8 runs at once (each ``sleep``s; a fresh environment for each
  count), the peak while they run, minus idle, divided by the number of runs; ``--secrets``
  ``none`` (runs without a secret variable), ``one`` (each run has one, so its redactor
  compiles patterns of its own, as real runs' do) or both.

Goals (issue 15): idle ≤ 60 MiB; ≤ 5 MiB per concurrent run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.demo.environment import Environment
from hardened_launcher.demo.stories import new_run_id

MIB = 1024 * 1024


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def bare_python_rss() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(1.0)
        return rss_of(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def concurrent_peak(
    env: Environment, count: int, seconds: float, *, secret: bool = False
) -> tuple[int, int]:
    """Peak launcher RSS while ``count`` runs are running at once; and how many ran together."""
    launcher = env.workers[0]
    run_ids = [new_run_id(f"rss{count}x{i}") for i in range(count)]
    peak = 0
    most = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, launcher.rss_bytes() or 0)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for run_id in run_ids:
            secret_env = {"BENCH_SECRET": f"s3cret-{run_id}-value"} if secret else None
            env.submit(env.spec(run_id, [f"sleep {seconds:g}", "echo done"], secret_env=secret_env))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = [env.run(run_id).state for run_id in run_ids]
            most = max(most, sum(state is RunState.RUNNING for state in states))
            if all(state in {RunState.FINISHED, RunState.FAILED} for state in states):
                break
            time.sleep(0.2)
    finally:
        stop.set()
        sampler.join()
    return peak, most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--run-seconds", type=float, default=15.0)
    parser.add_argument("--counts", default="1,4,8")
    parser.add_argument(
        "--secrets",
        default="none,one",
        help="runs without a secret variable (none), with one (one), or both (none,one)",
    )
    parser.add_argument(
        "--before", default="", help="also run launchers from this older tree (PYTHONPATH)"
    )
    args = parser.parse_args()
    bare = bare_python_rss()
    print(f"bare python (sleeping): {bare / MIB:.1f} MiB")
    trees = [("now", "")] + ([("before", args.before)] if args.before else [])
    names = [k.strip() for k in args.secrets.split(",") if k.strip()]
    if not names or not set(names) <= {"none", "one"}:
        parser.error("--secrets takes none, one or none,one")
    kinds = [name == "one" for name in names]
    rounds = [(t, int(c), k) for k in kinds for c in args.counts.split(",") for t in trees]
    for (label, tree), count, secret in rounds:
        # A fresh environment per count: freed memory stays resident, so a launcher that ran
        # runs before would make the next count look cheaper than it is.
        launcher_env = {"HL_MAX_CONCURRENT_RUNS": "8"}
        if tree:
            # PYTHONSAFEPATH: ``python -m`` must not put the working directory (this
            # checkout) before the older tree on sys.path.
            launcher_env["PYTHONPATH"] = str(Path(tree).resolve())
            launcher_env["PYTHONSAFEPATH"] = "1"
        env = Environment(with_policy=False, launcher_env=launcher_env, run_timeout="2m")
        with env:
            time.sleep(args.settle)
            idle = env.workers[0].rss_bytes() or 0
            peak, together = concurrent_peak(env, count, args.run_seconds, secret=secret)
            time.sleep(1.0)
            after = env.workers[0].rss_bytes() or 0
        per_run = (peak - idle) / count
        print(
            f"{label:>6}: {count} run(s) at once (together: {together}, "
            f"{'one secret' if secret else 'no secret'} each): idle {idle / MIB:.1f} MiB "
            f"({(idle - bare) / MIB:+.1f} over bare), peak {peak / MIB:.1f} MiB, "
            f"{per_run / MIB:.2f} MiB per run, after {after / MIB:.1f} MiB"
        )


if __name__ == "__main__":
    main()
