"""Three launchers, one pool, 30 queued runs: each exactly once; throughput and memory."""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.demo.stories import new_run_id
from tests.e2e.conftest import EnvFactory

pytestmark = pytest.mark.integration

RUNS = 30
LAUNCHERS = 3


def test_three_launchers_thirty_runs(make_env: EnvFactory) -> None:
    env = make_env(launchers=LAUNCHERS, with_policy=False)
    time.sleep(3)  # settle after start-up
    idle = [launcher.rss_bytes() or 0 for launcher in env.workers]
    peaks = list(idle)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for i, launcher in enumerate(env.workers):
                peaks[i] = max(peaks[i], launcher.rss_bytes() or 0)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    run_ids = [new_run_id(f"bulk{i:02d}") for i in range(RUNS)]
    specs = [env.spec(run_id, [f"echo run {run_id}"]) for run_id in run_ids]
    with env.watch_container_creates() as creates_seen:
        started = time.monotonic()
        sampler.start()
        try:
            for spec in specs:
                env.submit(spec)
            runs = [env.wait_for_run(run_id, timeout_seconds=300) for run_id in run_ids]
        finally:
            stop.set()
            sampler.join()
        creates_seen.settle()
    elapsed = time.monotonic() - started
    after = [launcher.rss_bytes() or 0 for launcher in env.workers]

    not_finished = [
        (r.id, r.state.value, r.reason) for r in runs if r.state is not RunState.FINISHED
    ]
    assert not not_finished, not_finished
    creates = {run_id: creates_seen.counts.get(run_id, 0) for run_id in run_ids}
    assert all(n == 1 for n in creates.values()), f"containers per run: {creates}"
    for run_id in run_ids:
        _, log = env.logs(run_id)
        assert log.count(f"run {run_id}".encode()) >= 1, f"{run_id}: log missing its line"
    workers = {r.worker_id for r in runs}
    mib = 1024 * 1024
    growth = statistics.median([p - i for p, i in zip(peaks, idle, strict=True)])
    print(
        f"\nE2E THROUGHPUT: {RUNS} trivial runs on {LAUNCHERS} launchers in {elapsed:.1f} s = "
        f"{RUNS / elapsed * 60:.1f} runs/min; workers used: {len(workers)}"
    )
    print(
        "E2E LAUNCHER RSS: idle "
        + ", ".join(f"{b / mib:.1f}" for b in idle)
        + " MiB; peak during runs "
        + ", ".join(f"{b / mib:.1f}" for b in peaks)
        + " MiB; after "
        + ", ".join(f"{b / mib:.1f}" for b in after)
        + f" MiB; median per-run growth {growth / mib:.1f} MiB"
    )
