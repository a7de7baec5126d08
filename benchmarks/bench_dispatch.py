"""Submit → assign latency and one-slot throughput: event-driven dispatch vs the 1 s tick.

Run: ``python benchmarks/bench_dispatch.py [--samples 20] [--burst 30]``

The real control-plane loop (:func:`serve` with the SQLite store) on the in-memory transport
(:class:`MemoryBroker`), once with ``ServeConfig(event_driven=True)`` (the default) and once with
``event_driven=False`` (the old loop: assign only on the tick), in the same run:

1. **latency**: one worker with one slot, idle. Another thread with its own store connection
   (what ``run submit`` is) submits a run; the worker records when the ``assign`` reaches it,
   accepts, and reports FINISHED as soon as it gets ``start``; the next run is submitted once
   the store shows the run final (the pool is idle again), after a random 0-1 s (arrivals
   at any phase of the loop's 50 ms wake and 1 s tick). p50 and p95 of submit → assign.
2. **throughput**: ``--burst`` runs submitted at once to the same one-slot worker (each run
   ends as soon as it starts): runs per minute until the last is FINISHED.

The ratio tick / event of each figure is printed. Times on a shared machine move between runs;
compare the columns of one run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from hardened_launcher.controlplane.dispatch import TERMINAL_RUN_STATES
from hardened_launcher.controlplane.serve import Coordinator, ServeConfig, serve
from hardened_launcher.controlplane.store import Store
from hardened_launcher.transport import messages as wire
from hardened_launcher.transport.memory import MemoryBroker, MemoryTransport

POOL = "pool-a"
KEY_ID = "k" * 64


class Worker(threading.Thread):
    """One launcher slot: accept every assign, finish every run as soon as it starts."""

    def __init__(self, transport: MemoryTransport) -> None:
        super().__init__(daemon=True)
        self.transport = transport
        self.assigned_at: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            received = self.transport.receive(timeout_seconds=0.05)
            if received is None:
                continue
            body = received.message.body
            if isinstance(body, wire.Assign):
                self.assigned_at.setdefault(body.run_id, time.perf_counter())
                self.transport.send(wire.Accept(run_id=body.run_id, lease_id=body.lease_id))
            elif isinstance(body, wire.Start):
                self.transport.send(wire.Status(run_id=body.run_id, state="FINISHED", exit_code=0))


def _submit(store: Store, run_id: str) -> None:
    now = time.time()
    store.add_run(
        run_id=run_id,
        pool_id=POOL,
        spec_sha256="0" * 64,
        key_id=KEY_ID,
        envelope=b"sealed:" + run_id.encode(),
        envelope_expires_at=now + 3600,
        now=now,
    )


def _wait_final(store: Store, run_ids: list[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(store.get_run(r).state in TERMINAL_RUN_STATES for r in run_ids):
            return
        time.sleep(0.002)
    raise RuntimeError(f"runs not final after {timeout} s")


def measure(*, event_driven: bool, samples: int, burst: int) -> tuple[list[float], float]:
    """(submit → assign latencies in seconds, runs per minute of the burst)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.sqlite3"
        store = Store(path, create=True)
        store.add_pool(
            pool_id=POOL,
            name=POOL,
            certificate_pem=b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
            certificate_serial="01",
            certificate_fingerprint="00" * 32,
            key_id=KEY_ID,
            now=time.time(),
        )
        broker = MemoryBroker()
        cp = broker.control_plane()
        cp.start()
        transport = broker.worker(POOL, "w-1")
        transport.start()
        worker = Worker(transport)
        worker.start()
        transport.send(
            wire.Register(
                worker_id="w-1", pool_id=POOL, version="0.1.0", metadata={}, max_concurrent_runs=1
            )
        )
        coordinator = Coordinator(store, cp, config=ServeConfig(event_driven=event_driven))
        stop = threading.Event()
        latencies: list[float] = []
        rate: list[float] = []
        jitter = random.Random(samples)

        def drive() -> None:
            try:
                with Store(path) as cli:
                    time.sleep(0.3)  # the worker has registered
                    for i in range(samples):
                        run_id = f"lat-{i}"
                        time.sleep(jitter.uniform(0, 1.0))  # any phase of both loops
                        submitted = time.perf_counter()
                        _submit(cli, run_id)
                        _wait_final(cli, [run_id])
                        latencies.append(worker.assigned_at[run_id] - submitted)
                    ids = [f"burst-{i}" for i in range(burst)]
                    started = time.perf_counter()
                    for run_id in ids:
                        _submit(cli, run_id)
                    _wait_final(cli, ids)
                    rate.append(burst / (time.perf_counter() - started) * 60)
            finally:
                stop.set()

        driver = threading.Thread(target=drive)
        driver.start()
        serve(coordinator, stop=stop)
        driver.join()
        worker.stop.set()
        worker.join()
        store.close()
        if not rate:
            raise RuntimeError("the benchmark driver failed")
        return latencies, rate[0]


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--burst", type=int, default=20)
    args = parser.parse_args()
    results = {
        mode: measure(event_driven=mode == "event", samples=args.samples, burst=args.burst)
        for mode in ("event", "tick")
    }
    print(f"{'mode':<6} {'p50 ms':>8} {'p95 ms':>8} {'runs/min (1 slot)':>18}")
    for mode, (latencies, per_minute) in results.items():
        p50, p95 = _pct(latencies, 50) * 1000, _pct(latencies, 95) * 1000
        print(f"{mode:<6} {p50:>8.1f} {p95:>8.1f} {per_minute:>18.0f}")
    event, tick = results["event"], results["tick"]
    print(
        "tick/event: "
        f"p50 x{_pct(tick[0], 50) / _pct(event[0], 50):.1f}, "
        f"p95 x{_pct(tick[0], 95) / _pct(event[0], 95):.1f}, "
        f"throughput event/tick x{event[1] / tick[1]:.1f}"
    )


if __name__ == "__main__":
    main()
