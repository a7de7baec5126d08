"""What does the run ticket (policy before decryption) add to a run?

Run: ``python benchmarks/bench_ticket.py [--iterations N]``

Per run the launcher now verifies the ticket (size, Ed25519 signature, strict JSON, bindings),
hashes the sealed bytes, and after decryption rebuilds the manifest from the spec and compares
it. The baseline, timed alternately in the same process, is opening the same envelope
(``open_run_state``, RSA-4096) — the per-run cryptography the launcher already paid. It prints
p50/p99 of each and the ratio ticket / envelope.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

import yaml
from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.envelope import MemoryReplayCache, open_run_state, seal_run_state
from hardened_launcher.envelope.ticket import (
    check_spec_matches,
    manifest_from_spec,
    sign_ticket,
    verify_ticket,
)
from hardened_launcher.executor.runspec import parse_run_spec
from hardened_launcher.identity import PoolPrivateKey as PoolKey
from hardened_launcher.policy.sanitize import Sanitizer

NOW = datetime.now(UTC)


def spec_bytes(run_id: str) -> bytes:
    return yaml.safe_dump(
        {
            "version": 1,
            "run_id": run_id,
            "run_type": "wo",
            "image": "registry.example/runner:1",
            "phases": [{"name": "main", "commands": ["terraform init", "terraform apply"]}],
            "env": {f"TF_VAR_{i}": "value" * 4 for i in range(20)},
            "secret_env": {f"SECRET_{i}": f"s3cr3t-value-{i}" for i in range(10)},
            "binaries": [{"name": "terraform", "version": "1.9.0"}],
            "metadata": {"stack_slug": "prod", "commit_sha": "a" * 40},
        }
    ).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    key = PoolKey.generate()  # RSA-4096, the seed's key
    signer = ed25519.Ed25519PrivateKey.generate()
    sanitizer = Sanitizer(b"k" * 32)
    ticket_ns: list[float] = []
    envelope_ns: list[float] = []
    cache = MemoryReplayCache()
    for i in range(args.iterations):
        run_id = f"run-{i}"
        plaintext = spec_bytes(run_id)
        envelope = seal_run_state(
            plaintext,
            pool_public_key=key.public_key,
            signing_key=signer,
            run_id=run_id,
            pool_id="pool-a",
            issued_at=NOW - timedelta(seconds=1),
            expires_at=NOW + timedelta(hours=1),
        )
        spec = parse_run_spec(plaintext)
        ticket = sign_ticket(
            manifest_from_spec(spec, sanitizer),
            pool_id="pool-a",
            worker_id="w-1",
            lease_id="l-1",
            envelope=envelope,
            signing_key=signer,
        )
        start = time.perf_counter_ns()
        verified = verify_ticket(
            ticket.encoded,
            ticket.signature,
            signer_public_key=signer.public_key(),
            run_id=run_id,
            pool_id="pool-a",
            worker_id="w-1",
            lease_id="l-1",
        )
        check_spec_matches(spec, verified.manifest, sanitizer)
        ticket_ns.append(time.perf_counter_ns() - start)
        start = time.perf_counter_ns()
        with open_run_state(
            envelope,
            pool_private_key=key.private_key,
            signer_public_key=signer.public_key(),
            expected_pool_id="pool-a",
            replay_cache=cache,
            now=NOW,
            clock_skew=timedelta(minutes=5),
            max_envelope_bytes=1 << 24,
        ):
            pass
        envelope_ns.append(time.perf_counter_ns() - start)
        spec.wipe()
    t50, t99 = percentile(ticket_ns, 0.5) / 1e6, percentile(ticket_ns, 0.99) / 1e6
    e50, e99 = percentile(envelope_ns, 0.5) / 1e6, percentile(envelope_ns, 0.99) / 1e6
    print(f"key: {key.algorithm}; iterations: {args.iterations}")
    print(f"ticket (verify + spec check): p50 {t50:.3f} ms  p99 {t99:.3f} ms")
    print(f"envelope open (baseline):     p50 {e50:.3f} ms  p99 {e99:.3f} ms")
    mean = statistics.mean(ticket_ns) / 1e6
    print(f"ratio ticket/envelope p50: {t50 / e50:.2f}  ticket mean {mean:.3f} ms")


if __name__ == "__main__":
    main()
