"""How much do the envelope's checks cost on top of the bare decryption?

Run: ``python benchmarks/bench_envelope.py [--iterations N]``

For each case the script times, alternately in one process, ``open_run_state`` and a baseline
that does only the cryptography a naive opener would do (RSA-OAEP unwrap or ECDH + HKDF, then
AES-GCM decrypt, no parsing, no signature, no replay cache, no hashing). It prints p50 and p99
of both and their ratio: the ratio is the price of the checks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hardened_launcher.envelope import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    MemoryReplayCache,
    PoolPrivateKey,
    ReplayCache,
    SqliteReplayCache,
    open_run_state,
    parse_envelope,
    seal_run_state,
)
from hardened_launcher.envelope.keys import hkdf_info
from hardened_launcher.envelope.seal import RSA_OAEP

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
POOL = "01HPOOLBENCH"
SIGNER = ed25519.Ed25519PrivateKey.generate()


def seal(key: PoolPrivateKey, payload: bytes, run_id: str) -> bytes:
    return seal_run_state(
        payload,
        pool_public_key=key.public_key(),
        signing_key=SIGNER,
        run_id=run_id,
        pool_id=POOL,
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=10),
    )


def baseline_for(key: PoolPrivateKey, envelope: bytes) -> Callable[[], bytes]:
    """The bare decryption of ``envelope``: fields are pre-sliced, nothing is checked."""
    parsed = parse_envelope(envelope)
    material, nonce = parsed.key_material, parsed.nonce
    ciphertext, header = bytes(parsed.ciphertext), bytes(parsed.header)
    if isinstance(key, rsa.RSAPrivateKey):
        rsa_key = key

        def rsa_baseline() -> bytes:
            data_key = rsa_key.decrypt(material, RSA_OAEP)
            return AESGCM(data_key).decrypt(nonce, ciphertext, header)

        return rsa_baseline
    ec_key = key
    info = hkdf_info(algorithm=parsed.algorithm, key_id=parsed.key_id, ephemeral_point=material)

    def ec_baseline() -> bytes:
        point = ec.EllipticCurvePublicKey.from_encoded_point(ec_key.curve, material)
        shared = ec_key.exchange(ec.ECDH(), point)
        data_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
        return AESGCM(data_key).decrypt(nonce, ciphertext, header)

    return ec_baseline


def opener(key: PoolPrivateKey, envelope: bytes, cache: ReplayCache) -> None:
    opened = open_run_state(
        envelope,
        pool_private_key=key,
        signer_public_key=SIGNER.public_key(),
        expected_pool_id=POOL,
        replay_cache=cache,
        now=NOW,
        clock_skew=timedelta(minutes=2),
        max_envelope_bytes=DEFAULT_MAX_ENVELOPE_BYTES,
    )
    opened.plaintext.wipe()


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run_case(
    name: str, key: PoolPrivateKey, payload_bytes: int, iterations: int, sqlite_dir: Path | None
) -> None:
    payload = os.urandom(payload_bytes)
    # Distinct run ids so that a persistent cache sees no replays; the memory cache is fresh.
    envelopes = [seal(key, payload, f"01HRUN{i:06d}") for i in range(iterations)]
    baseline = baseline_for(key, envelopes[0])
    cache: ReplayCache | None = None
    if sqlite_dir is not None:
        cache = SqliteReplayCache(sqlite_dir / f"{name.replace(' ', '_')}.db")
    base_ms: list[float] = []
    open_ms: list[float] = []
    for _ in range(3):  # warm-up
        baseline()
        opener(key, envelopes[0], MemoryReplayCache())
    for envelope in envelopes:
        start = time.perf_counter()
        baseline()
        base_ms.append((time.perf_counter() - start) * 1000)
        target = cache if cache is not None else MemoryReplayCache()
        start = time.perf_counter()
        opener(key, envelope, target)
        open_ms.append((time.perf_counter() - start) * 1000)
    if isinstance(cache, SqliteReplayCache):
        cache.close()
    b50, b99 = percentile(base_ms, 0.50), percentile(base_ms, 0.99)
    o50, o99 = percentile(open_ms, 0.50), percentile(open_ms, 0.99)
    print(
        f"{name:<28} {b50:9.3f} {b99:9.3f} {o50:9.3f} {o99:9.3f} "
        f"{o50 / b50:8.2f}x {o99 / b99:8.2f}x  (mean open {statistics.fmean(open_ms):.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    n = args.iterations
    rsa4096 = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    p256 = ec.generate_private_key(ec.SECP256R1())
    print(f"iterations per case: {n}; times in ms")
    print(
        f"{'case':<28} {'base p50':>9} {'base p99':>9} {'open p50':>9} {'open p99':>9} "
        f"{'p50 ratio':>9} {'p99 ratio':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_dir = Path(tmp) / "replay"
        sqlite_dir.mkdir(mode=0o700)
        run_case("RSA-4096 2 KB", rsa4096, 2 * 1024, n, None)
        run_case("RSA-4096 1 MB", rsa4096, 1024 * 1024, n, None)
        run_case("P-256 2 KB", p256, 2 * 1024, n, None)
        run_case("P-256 1 MB", p256, 1024 * 1024, n, None)
        run_case("RSA-4096 2 KB sqlite cache", rsa4096, 2 * 1024, n, sqlite_dir)
        run_case("P-256 2 KB sqlite cache", p256, 2 * 1024, n, sqlite_dir)


if __name__ == "__main__":
    main()
