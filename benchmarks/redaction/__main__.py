"""Throughput and memory of streaming redaction, next to naive per-pattern replacement.

Run: ``python benchmarks/redaction [--megabytes 64] [--repeat 3] [--engines hyperscan,...]``

For 10, 100 and 1,000 values (each with all its variants, see
``hardened_launcher.redaction.variants``) the script builds a log-like corpus that contains
every value a few times in a few encodings (raw, base64 at an offset, hex in both cases, and
base64/hex wrapped at 76/64/60 columns with LF or CRLF), then streams it through
``Redactor.stream`` in 4 KiB and 64 KiB writes with each available engine. It prints MB/s
(best of ``--repeat``; the machine is shared, so the best run is the least disturbed one)
and, in the same run, naive ``bytes.replace`` of every pattern over a sample (naive is too
slow for the whole corpus at 1,000 values; its rate does not depend on the sample size).
Peak memory is measured in a separate pass under ``tracemalloc`` (Python allocations:
buffers, hold-back, match lists); native engine memory shows in the process's peak RSS.
"""

from __future__ import annotations

import argparse
import base64
import random
import resource
import time
import tracemalloc

from hardened_launcher.redaction import Redactor
from hardened_launcher.redaction.engine import available_engines
from hardened_launcher.redaction.stream import MASK

MB = 1_000_000
WORDS = (
    b"Initializing provider plugins... aws_instance.web: Refreshing state [id=i-0abc] "
    b"module.vpc.aws_subnet.private[2]: Creation complete after 3s Plan: 12 to add, 0 to "
    b"change, 0 to destroy. Apply complete! Resources: 4 added. INFO DEBUG WARN [reset] "
    b"GET https://api.example.com/v1/items?page=2 200 OK 13ms request_id=7f3a9c"
).split()


def make_values(count: int, rng: random.Random) -> list[bytes]:
    alphabet = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789-_/+=.:@!"
    return [bytes(rng.choice(alphabet) for _ in range(rng.randint(16, 48))) for _ in range(count)]


def wrapped(text: bytes, width: int, eol: bytes) -> bytes:
    return eol.join(text[i : i + width] for i in range(0, len(text), width))


def make_corpus(size: int, values: list[bytes], rng: random.Random) -> bytes:
    lines: list[bytes] = []
    total = 0
    n = 0
    while total < size:
        n += 1
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 16))]
        if n % 50 == 0:  # a secret every 50 lines, in a random encoding
            v = rng.choice(values)
            words.append(
                rng.choice(
                    [
                        v,
                        base64.b64encode(b"user:" + v),
                        v.hex().encode(),
                        v.hex().upper().encode(),
                        # wrapped forms: base64 of a longer document at 76/64 columns, LF/CRLF
                        b"\n" + wrapped(base64.b64encode(b"{'k': '" + v + b"'}" * 3), 76, b"\n"),
                        b"\r\n" + wrapped(base64.b64encode(b"x" + v + v + v), 64, b"\r\n"),
                        b"\n" + wrapped((v + v).hex().encode(), 60, b"\n"),
                    ]
                )
            )
        line = b"2024-05-01T12:00:%02d.%06dZ " % (n % 60, n % 999_999) + b" ".join(words) + b"\n"
        lines.append(line)
        total += len(line)
    return b"".join(lines)[:size]


HELD: dict[int, list[int]] = {}


def stream_pass(red: Redactor, corpus: bytes, chunk: int) -> tuple[float, int]:
    stream = red.stream("stdout")
    view = memoryview(corpus)
    out = 0
    held: list[int] = []
    start = time.perf_counter()
    for offset in range(0, len(corpus), chunk):
        out += len(stream.write(view[offset : offset + chunk]))
        held.append(stream.pending_bytes)
    out += len(stream.flush())
    elapsed = time.perf_counter() - start
    HELD[chunk] = held
    return elapsed, out


def naive_pass(patterns: list[bytes], sample: bytes) -> float:
    start = time.perf_counter()
    data = sample
    for p in sorted(patterns, key=len, reverse=True):
        data = data.replace(p, MASK)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--counts", default="10,100,1000")
    parser.add_argument(
        "--engines", default=",".join(e for e in available_engines() if e != "reference")
    )
    args = parser.parse_args()
    rng = random.Random(20240501)
    engines = [e for e in args.engines.split(",") if e]
    size = args.megabytes * MB
    print(f"corpus {args.megabytes} MB, best of {args.repeat}; MB/s = 10^6 bytes per second")
    print(
        f"{'values':>6} {'patterns':>8} {'engine':>12} {'compile s':>9} {'4 KiB MB/s':>11} "
        f"{'64 KiB MB/s':>11} {'naive MB/s':>10} {'x naive':>8} {'peak KiB':>9} "
        f"{'held max':>8} {'held mean':>9}"
    )
    for count in [int(c) for c in args.counts.split(",")]:
        values = make_values(count, rng)
        corpus = make_corpus(size, values, rng)
        naive_rate = None
        for engine in engines:
            red = Redactor(engine=engine)
            t0 = time.perf_counter()
            red.add_many([(f"V{i}", v) for i, v in enumerate(values)])
            red.wait_compiled()  # steady state: the fast engine (see Redactor start-up)
            compile_s = time.perf_counter() - t0
            patterns = list(red._state[0].patterns)  # benchmark looks inside
            if naive_rate is None:
                sample = corpus[: max(MB // 4, min(size, 16 * MB * 10 // count))]
                naive_rate = len(sample) / min(naive_pass(patterns, sample) for _ in range(2)) / MB
            rates = {}
            for chunk in (4096, 65536):
                best = min(stream_pass(red, corpus, chunk)[0] for _ in range(args.repeat))
                rates[chunk] = size / best / MB
            small = corpus[: 8 * MB]
            tracemalloc.start()
            stream_pass(red, small, 65536)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(
                f"{count:>6} {len(patterns):>8} {engine:>12} {compile_s:>9.2f} "
                f"{rates[4096]:>11.0f} {rates[65536]:>11.0f} {naive_rate:>10.1f} "
                f"{rates[65536] / naive_rate:>8.0f} {peak // 1024:>9} "
                f"{max(HELD[65536]):>8} {sum(HELD[65536]) / len(HELD[65536]):>9.1f}"
            )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS of the whole benchmark process: {rss // 1024} MiB (corpus included)")
    print("peak KiB: tracemalloc peak while streaming 8 MB in 64 KiB writes (Python heap)")
    print(
        "held max/mean: bytes a stream held back after each 64 KiB write (only what may still "
        "become a match; a fixed hold-back would be the longest variant - 1)"
    )


if __name__ == "__main__":
    main()
