"""What does carrying a plan from a planning run to its applying run cost the launchers?

Run: ``python benchmarks/bench_plan.py [--iterations N] [--sizes 65536,1048576,8388608]``

Per confirmed run the planning launcher seals the plan (``seal_plan``: the run-state envelope
to the pool's own key, signed with the key derived from it) and the applying launcher checks
and opens it (``open_plan``: digest, envelope, bindings). The baseline, timed alternately in the
same process, is what each side already pays for a run state of the same size: the control
plane's ``seal_run_state`` and the launcher's ``open_run_state`` (RSA-4096). It prints p50 of
each and the ratios plan / envelope per size.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.envelope import MemoryReplayCache, open_run_state, seal_run_state
from hardened_launcher.envelope.plan import open_plan, seal_plan
from hardened_launcher.identity import PoolPrivateKey as PoolKey
from hardened_launcher.secrets import Secret

NOW = datetime.now(UTC)


def p50(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--sizes", default="65536,1048576,8388608")
    args = parser.parse_args()
    key = PoolKey.generate()  # RSA-4096
    signer = ed25519.Ed25519PrivateKey.generate()
    print(f"key: {key.algorithm}; iterations: {args.iterations}")
    for size in (int(s) for s in args.sizes.split(",")):
        plan = os.urandom(size)
        timings: dict[str, list[float]] = {"seal": [], "open": [], "env_seal": [], "env_open": []}
        for i in range(args.iterations):
            start = time.perf_counter()
            sealed = seal_plan(
                Secret(plan),
                pool_private_key=key.private_key,
                run_id=f"run-{i}",
                pool_id="pool-a",
                commit_sha="a" * 40,
                now=NOW,
            )
            timings["seal"].append(time.perf_counter() - start)
            start = time.perf_counter()
            open_plan(
                sealed.data,
                expected_sha256=sealed.sha256,
                planning_run_id=f"run-{i}",
                commit_sha="a" * 40,
                pool_private_key=key.private_key,
                pool_id="pool-a",
                replay_cache=MemoryReplayCache(),
                now=NOW,
                clock_skew=timedelta(minutes=5),
            ).wipe()
            timings["open"].append(time.perf_counter() - start)
            start = time.perf_counter()
            envelope = seal_run_state(
                plan,
                pool_public_key=key.public_key,
                signing_key=signer,
                run_id=f"env-{i}",
                pool_id="pool-a",
                issued_at=NOW - timedelta(seconds=1),
                expires_at=NOW + timedelta(hours=1),
            )
            timings["env_seal"].append(time.perf_counter() - start)
            start = time.perf_counter()
            with open_run_state(
                envelope,
                pool_private_key=key.private_key,
                signer_public_key=signer.public_key(),
                expected_pool_id="pool-a",
                replay_cache=MemoryReplayCache(),
                now=NOW,
                clock_skew=timedelta(minutes=5),
                max_envelope_bytes=1 << 24,
            ):
                pass
            timings["env_open"].append(time.perf_counter() - start)
        ms = {k: p50(v) * 1000 for k, v in timings.items()}
        print(
            f"{size:>9} B: seal_plan {ms['seal']:.1f} ms (envelope {ms['env_seal']:.1f} ms, "
            f"ratio {ms['seal'] / ms['env_seal']:.2f}); open_plan {ms['open']:.1f} ms "
            f"(envelope {ms['env_open']:.1f} ms, ratio {ms['open'] / ms['env_open']:.2f})"
        )


if __name__ == "__main__":
    main()
