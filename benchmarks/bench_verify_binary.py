"""How much does gate 2 cost on top of hashing the file?

Run: ``python benchmarks/bench_verify_binary.py [--size-mib 50] [--iterations 7]``

Keys are generated in-process with pysequoia (no gpg needed). The script writes one binary of
``--size-mib`` MiB (random bytes) with a signed SHA256SUMS next to it, then times, alternately
in one process:

- **baseline**: plain ``hashlib.sha256`` of the same file (``hashlib.file_digest``);
- **verify**: ``verify_binary`` end to end (read keyring, parse and check the signature, verify
  it, parse the sums, stream-hash the file, build the proof);
- **admit**: ``VerifiedBinaryCache.admit`` into an empty cache (copy + hash + fsync + replace);
- **get**: ``VerifiedBinaryCache.get`` of that entry (full re-hash on every call).

It prints the p50 of each and its ratio to the baseline's p50. The page cache is warm after the
first run, so the numbers measure CPU work, not the disk.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pysequoia import SignatureMode, Tsk, sign

from hardened_launcher.binaries.cache import VerifiedBinaryCache
from hardened_launcher.binaries.verify import VerifiedBinary, verify_binary

MIB = 1024 * 1024


def write_release(directory: Path, size_mib: int) -> tuple[Path, Path, Path, Path, str]:
    tsk = Tsk.generate("Bench <bench@example.org>")
    cert = tsk.extract_certificate()
    binary = directory / "tool"
    with binary.open("wb") as handle:
        for _ in range(size_mib):
            handle.write(os.urandom(MIB))
    with binary.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    sums = directory / "SHA256SUMS"
    sums.write_bytes(f"{digest}  tool\n".encode())
    signature = directory / "SHA256SUMS.asc"
    signature.write_bytes(sign(tsk.signer(), sums.read_bytes(), mode=SignatureMode.DETACHED))
    keyring = directory / "keys.asc"
    keyring.write_bytes(str(cert).encode())
    return binary, sums, signature, keyring, cert.fingerprint


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-verify-binary-") as tmp:
        work = Path(tmp)
        binary, sums, signature, keyring, fingerprint = write_release(work, args.size_mib)

        def baseline() -> str:
            with binary.open("rb") as handle:
                return hashlib.file_digest(handle, "sha256").hexdigest()

        def verify() -> VerifiedBinary:
            return verify_binary(
                binary, sums=sums, signature=signature, keyring=keyring, pins=[fingerprint]
            )

        proof = verify()
        assert proof.sha256 == baseline()
        cache_root = work / "cache"

        def admit() -> VerifiedBinary:
            shutil.rmtree(cache_root, ignore_errors=True)
            return VerifiedBinaryCache(cache_root).admit(binary, proof)

        admitted = admit()

        def get() -> Path | None:
            return VerifiedBinaryCache(cache_root).get(proof.sha256)

        assert get() == admitted.path

        cases: dict[str, Callable[[], object]] = {
            "baseline sha256": baseline,
            "verify_binary": verify,
            "cache admit": admit,
            "cache get": get,
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.iterations):
            for name, function in cases.items():
                if name == "cache get":
                    admit()  # get needs an entry; admit's time is not counted here
                samples[name].append(timed(function))

    base = statistics.median(samples["baseline sha256"])
    print(f"file: {args.size_mib} MiB, {args.iterations} iterations, p50 per operation")
    for name, values in samples.items():
        p50 = statistics.median(values)
        print(
            f"  {name:<16} p50 {p50 * 1000:8.1f} ms   "
            f"{args.size_mib / p50:7.0f} MiB/s   ratio {p50 / base:5.2f}x"
        )


if __name__ == "__main__":
    main()
