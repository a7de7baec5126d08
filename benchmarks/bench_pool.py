"""A real pool end to end: runs/min with 1 and 3 launchers, submit -> container start, RSS per run.

Run: ``python benchmarks/bench_pool.py [--burst 30] [--samples 20] [--rss-runs 1000]``
(as root, with dockerd, SeaweedFS and the busybox image as for tests/e2e; ``--only`` picks
``throughput``, ``latency`` or ``rss``). ``--before DIR --only latency`` compares an older
tree (``git archive <rev> | tar -x -C DIR``) with this one: rounds of each tree's launcher,
alternately, in the same run, beside the Docker floor.

Everything is :class:`hardened_launcher.demo.environment.Environment`: ``controlplane serve``
over the long-poll transport, SeaweedFS, dockerd and ``hardened-launcher start`` processes. Runs
are sealed and queued in this process (what ``controlplane run submit`` does, without its
interpreter start-up, which would dominate a burst on a small machine).

1. **throughput**: ``--burst`` trivial runs (``echo``) queued at once, on 1 and then 3
   launchers (one slot each): runs per minute from the first submit until the last is final.
2. **latency**: one idle launcher; one run at a time is queued after a random 0-1 s pause once
   the previous is final; from its commit to the launcher's receipt of ``start`` (dispatch:
   its JSON log) and to Docker's ``start`` event of its container (``docker events``
   nanosecond times; same host clock). p50 and p95 of each, and of each step of the launcher's
   own ``run.timings`` line (received ``start`` → gates → Docker create/attach/start), and the
   floor: ``create`` + ``start`` of a plain busybox container through the same Docker API.
   ``--secret-env`` gives each run a secret variable (its redactor compiles then).
3. **rss**: one launcher, ``--rss-runs`` trivial runs in batches of 10; the daemon's RSS after
   a 20-run warm-up and every 100 runs; the slope of a least-squares line through the samples
   (bytes per run) and the total growth (``--secret-env``: each run has a secret variable).

Times on a shared 2-core machine move between runs; read the figures of one run together.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from hardened_launcher.controlplane.runs import submit_run
from hardened_launcher.controlplane.store import Store
from hardened_launcher.demo.environment import Environment
from hardened_launcher.demo.stories import new_run_id
from hardened_launcher.executor.container_spec import LABEL_RUN_ID

MIB = 1024 * 1024


def queue(
    env: Environment,
    store: Store,
    run_id: str,
    command: str,
    secret_env: dict[str, str] | None = None,
) -> float:
    """Seal and queue one run; returns the wall time just after its commit."""
    assert env.state is not None
    spec = env.spec(run_id, [command], secret_env=secret_env)
    data = yaml.safe_dump(spec, sort_keys=False).encode()
    submit_run(env.state, store, pool=env.pool, spec=data, now=datetime.now(UTC))
    return time.time()


def wait_final(env: Environment, run_ids: list[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    pending = list(run_ids)
    while pending:
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(pending)} runs not final after {timeout:.0f} s: {pending[:3]}")
        pending = [r for r in pending if not env.run(r).terminal]
        if pending:
            time.sleep(0.05)
    not_finished = [
        (r, env.run(r).state.value) for r in run_ids if env.run(r).state.value != "FINISHED"
    ]
    if not_finished:
        raise SystemExit(f"runs not FINISHED: {not_finished[:5]}")


def start_times(run_ids: set[str], since: float) -> dict[str, float]:
    """Docker's ``start`` event time of each run's container (seconds)."""
    proc = subprocess.run(
        [
            "docker",
            "events",
            "--since",
            f"{since:.3f}",
            "--until",
            f"{time.time():.3f}",
            "--filter",
            "type=container",
            "--filter",
            "event=start",
            "--format",
            f'{{{{index .Actor.Attributes "{LABEL_RUN_ID}"}}}} {{{{.TimeNano}}}}',
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    found: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        run_id, _, nanos = line.partition(" ")
        if run_id in run_ids:
            found.setdefault(run_id, int(nanos) / 1e9)
    return found


def environment(
    root: Path, launchers: int, launcher_env: dict[str, str] | None = None
) -> Environment:
    env = Environment(
        root=root,
        launchers=launchers,
        with_policy=False,
        keep=True,
        launcher_env=launcher_env or {},
    )
    env.start()
    time.sleep(3)  # settle after start-up
    return env


def throughput(base: Path, launchers: int, burst: int) -> float:
    env = environment(base / f"throughput{launchers}", launchers)
    try:
        assert env.state is not None
        run_ids = [new_run_id(f"tp{launchers}-{i:03d}") for i in range(burst)]
        with Store(env.state.store_path) as store:
            started = time.monotonic()
            for run_id in run_ids:
                queue(env, store, run_id, f"echo {run_id}")
        wait_final(env, run_ids)
        elapsed = time.monotonic() - started
    finally:
        env.stop()
    rate = burst / elapsed * 60
    print(
        f"throughput: {burst} runs on {launchers} launcher(s) in {elapsed:.1f} s = "
        f"{rate:.1f} runs/min"
    )
    return rate


def launcher_times(log_path: Path, run_ids: set[str]) -> dict[str, float]:
    """When the launcher received each run's ``start`` (its JSON log's ``time``)."""
    found: dict[str, float] = {}
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if "message.received type=start" not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        run_id = str(record.get("event", "")).rpartition("run_id=")[2]
        if run_id in run_ids:
            found.setdefault(run_id, datetime.fromisoformat(record["time"]).timestamp())
    return found


def step_times(log_path: Path, run_ids: set[str]) -> dict[str, dict[str, float]]:
    """Each run's ``run.timings`` line: milliseconds per step of the launcher's start."""
    found: dict[str, dict[str, float]] = {}
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if "run.timings run_id=" not in line:
            continue
        try:
            event = str(json.loads(line).get("event", ""))
        except ValueError:
            continue
        fields = dict(part.partition("=")[::2] for part in event.split()[1:])
        run_id = fields.pop("run_id", "")
        if run_id in run_ids:
            found[run_id] = {name: float(value) for name, value in fields.items()}
    return found


def p50_p95(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[
        min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))
    ]


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    p50, p95 = p50_p95(values)
    return f"p50 {p50:.0f} ms, p95 {p95:.0f} ms (n={len(values)}, max {max(values):.0f})"


def docker_floor(image: str, samples: int) -> list[float]:
    """Milliseconds of ``create`` + ``start`` of a plain container running ``true`` (the same
    low-level Docker API calls as the runner, none of its options): the runtime's floor."""
    import docker  # noqa: PLC0415 - only this measurement needs the SDK

    api = docker.from_env(timeout=60).api
    found: list[float] = []
    for i in range(samples):
        time.sleep(random.uniform(0, 0.5))
        began = time.perf_counter()
        created = api.create_container(
            image=image,
            command=["true"],
            name=f"lat-floor-{os.getpid()}-{i}",
            host_config=api.create_host_config(network_mode="none"),  # as the runs have
        )
        try:
            api.start(created["Id"])
            found.append((time.perf_counter() - began) * 1000)
            api.wait(created["Id"], timeout=30)
        finally:
            api.remove_container(created["Id"], force=True)
    return found


def latency_samples(base: Path, samples: int, *, secret: bool = False) -> dict[str, list[float]]:
    """One idle launcher, ``samples`` runs: milliseconds per measure (see the module's 2.)."""
    env = environment(base / "latency", 1)
    since = time.time() - 1
    submitted: dict[str, float] = {}
    try:
        assert env.state is not None
        with Store(env.state.store_path) as store:
            for i in range(samples + 2):  # the first two warm the launcher up
                time.sleep(random.uniform(0, 1))
                run_id = new_run_id(f"lat{i:03d}")
                secret_env = {"BENCH_SECRET": f"s3cret-{run_id}"} if secret else None
                submitted[run_id] = queue(env, store, run_id, "true", secret_env)
                wait_final(env, [run_id])
        time.sleep(1)
        starts = start_times(set(submitted), since)
        received = launcher_times(env.workers[0].log_path, set(submitted))
        steps = step_times(env.workers[0].log_path, set(submitted))
        floor = docker_floor(env.image, samples)
    finally:
        env.stop()
    measured = list(submitted)[2:]
    found: dict[str, list[float]] = {
        "submit -> launcher holds `start`": [
            (received[r] - submitted[r]) * 1000 for r in measured if r in received
        ],
        "submit -> Docker starts the container": [
            (starts[r] - submitted[r]) * 1000 for r in measured if r in starts
        ],
        "launcher: holds `start` -> Docker start event": [
            (starts[r] - received[r]) * 1000 for r in measured if r in starts and r in received
        ],
        "floor: busybox create + start (Docker API)": floor,
    }
    for run_id in measured:
        for name, value in steps.get(run_id, {}).items():
            found.setdefault(f"  step {name}", []).append(value)
    return found


def latency(base: Path, samples: int, *, secret: bool = False) -> None:
    for name, values in latency_samples(base, samples, secret=secret).items():
        print(f"{name}: {percentiles(values)}")


def compare_latency(before: Path, samples: int, rounds: int, *, secret: bool) -> None:
    """Rounds of the older tree and this one, alternately; p50/p95 of each measure side by side.

    Each round runs this script in a child whose ``PYTHONPATH`` puts one tree first (its
    launcher processes inherit it), so both trees are measured by the same code."""
    trees = {"before": before.resolve(), "after": Path(__file__).resolve().parents[1]}
    merged: dict[str, dict[str, list[float]]] = {label: {} for label in trees}
    for round_ in range(rounds):
        for label, tree in trees.items():
            argv = [sys.executable, __file__, "--only", "latency", "--samples", str(samples)]
            argv += ["--json"] + (["--secret-env"] if secret else [])
            env = dict(os.environ, PYTHONPATH=str(tree))
            proc = subprocess.run(
                argv, cwd=tree, env=env, capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                raise SystemExit(f"{label} round {round_ + 1} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            for name, values in result.items():
                merged[label].setdefault(name, []).extend(values)
            print(f"round {round_ + 1}/{rounds}: {label} done", file=sys.stderr, flush=True)
    names = list(merged["after"]) + [n for n in merged["before"] if n not in merged["after"]]
    print(f"{'measure (ms)':48} {'before p50/p95':>16} {'after p50/p95':>16}")
    for name in names:
        cells = []
        for label in trees:
            values = merged[label].get(name, [])
            if values:
                p50, p95 = p50_p95(values)
                cells.append(f"{p50:7.0f} /{p95:6.0f}")
            else:
                cells.append(f"{'-':>14}")
        print(f"{name:48} {cells[0]:>16} {cells[1]:>16}")


def rss(base: Path, runs: int, launcher_env: dict[str, str], *, secret: bool = False) -> None:
    env = environment(base / "rss", 1, launcher_env)
    launcher = env.workers[0]
    points: list[tuple[int, int]] = []
    try:
        assert env.state is not None
        with Store(env.state.store_path) as store:
            done = 0

            def batch(count: int) -> None:
                nonlocal done
                ids = [new_run_id(f"rss{done + i:04d}") for i in range(count)]
                for run_id in ids:
                    secret_env = {"BENCH_SECRET": f"s3cret-{run_id}"} if secret else None
                    queue(env, store, run_id, "true", secret_env)
                wait_final(env, ids)
                done += count

            batch(20)  # warm-up
            done = 0
            points.append((0, launcher.rss_bytes() or 0))
            print(f"rss: after warm-up {points[0][1] / MIB:.1f} MiB", flush=True)
            while done < runs:
                batch(min(10, runs - done))
                if done % 100 == 0 or done == runs:
                    points.append((done, launcher.rss_bytes() or 0))
                    print(f"rss: after {done} runs {points[-1][1] / MIB:.1f} MiB", flush=True)
    finally:
        env.stop()
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x in xs)
    print(
        f"rss: {points[-1][0]} runs, {points[0][1] / MIB:.1f} -> {points[-1][1] / MIB:.1f} MiB "
        f"(total {(points[-1][1] - points[0][1]) / 1024:.0f} KiB); "
        f"slope {slope / 1024:.2f} KiB/run"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=30)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--rss-runs", type=int, default=1000)
    parser.add_argument("--only", choices=["throughput", "latency", "rss"])
    parser.add_argument(
        "--secret-env", action="store_true", help="latency, rss: each run has a secret variable"
    )
    parser.add_argument(
        "--before", type=Path, help="latency: compare with this older tree (see above)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="latency --before: rounds per tree")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--launcher-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the rss launcher (e.g. MALLOC_ARENA_MAX=2)",
    )
    args = parser.parse_args()
    launcher_env = dict(item.split("=", 1) for item in args.launcher_env)
    if args.before is not None:
        compare_latency(args.before, args.samples, args.rounds, secret=args.secret_env)
        return
    if args.json:  # one tree's latency samples, for compare_latency
        with tempfile.TemporaryDirectory(prefix="hl-bench-pool-") as tmp:
            found = latency_samples(Path(tmp), args.samples, secret=args.secret_env)
        print(json.dumps(found))
        return
    with tempfile.TemporaryDirectory(prefix="hl-bench-pool-") as tmp:
        base = Path(tmp)
        if args.only in (None, "throughput"):
            one = throughput(base, 1, args.burst)
            three = throughput(base, 3, args.burst)
            print(f"throughput ratio 3 launchers / 1: {three / one:.2f}")
        if args.only in (None, "latency"):
            latency(base, args.samples, secret=args.secret_env)
        if args.only in (None, "rss"):
            rss(base, args.rss_runs, launcher_env, secret=args.secret_env)


if __name__ == "__main__":
    main()
