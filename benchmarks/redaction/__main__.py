"""Throughput and memory of streaming redaction, next to naive per-pattern replacement.

Run: ``python -m benchmarks.redaction [--megabytes 64] [--repeat 3] [--engines hyperscan,...]``

For 10, 100 and 1,000 values (each with all its variants, see
``hardened_launcher.redaction.variants``) the script builds a log-like corpus that contains
every value a few times in a few encodings (raw, base64 at an offset, hex in both cases, and
base64/hex wrapped at 76/64/60 columns with LF or CRLF; ``--corpus single`` leaves the wrapped
forms out, as the corpus of the earlier figures did), then streams it through
``Redactor.stream`` in 4 KiB and 64 KiB writes with each available engine. It prints MB/s
(best of ``--repeat``; the machine is shared, so the best run is the least disturbed one)
and, in the same run, naive ``bytes.replace`` of every pattern over a sample (naive is too
slow for the whole corpus at 1,000 values; its rate does not depend on the sample size).
Peak memory is measured in a separate pass under ``tracemalloc`` (Python allocations:
buffers, hold-back, match lists); native engine memory shows in the process's peak RSS.

``--clock cpu`` (the default) times the process's CPU time rather than wall time: on a
machine shared with other jobs, time spent waiting for a core is not the redactor's cost.

``--compare DIR`` also runs the same benchmark against an older tree (e.g. the one before
wrapped forms: ``git archive de5ba64^ hardened_launcher | tar -x -C DIR``), alternating the
two trees round by round in fresh processes, and prints both with their ratio.

``--layered`` measures a run's redactor as the daemon builds it: layered over a shared
redactor holding launcher-like values (a PEM key of a 4096-bit RSA key's size, base64 and as
PEM, and a ~5 KB token), against one redactor over the union of both sets, alternately in the
same process: the time to add the run's values (the launcher's again, as the pipeline does,
and ``--counts`` values of its own) and the streaming rate.

``--fallback`` compiles the engines without the compiled wrap-break helper
(``redaction/_linescan.c``): the triggers in the Hyperscan database, the windows in Python, as
on an install without a C compiler. ``--compare-fallback`` alternates this tree with and
without the helper, as ``--compare`` does with an older tree.

``--scan-only`` times the Hyperscan database alone (patterns only; with the wrap trigger as
one ``\\r?\\n`` expression; as two expressions; with every pattern's first 6 bytes), which is
what chose the database's shape (see ``redaction/engine.py``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

MB = 1_000_000
WORDS = (
    b"Initializing provider plugins... aws_instance.web: Refreshing state [id=i-0abc] "
    b"module.vpc.aws_subnet.private[2]: Creation complete after 3s Plan: 12 to add, 0 to "
    b"change, 0 to destroy. Apply complete! Resources: 4 added. INFO DEBUG WARN [reset] "
    b"GET https://api.example.com/v1/items?page=2 200 OK 13ms request_id=7f3a9c"
).split()
MASK = b"***"


def make_values(count: int, rng: random.Random) -> list[bytes]:
    alphabet = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789-_/+=.:@!"
    return [bytes(rng.choice(alphabet) for _ in range(rng.randint(16, 48))) for _ in range(count)]


def wrapped(text: bytes, width: int, eol: bytes) -> bytes:
    return eol.join(text[i : i + width] for i in range(0, len(text), width))


def encodings(v: bytes, *, wrapped_forms: bool) -> list[bytes]:
    forms = [v, base64.b64encode(b"user:" + v), v.hex().encode(), v.hex().upper().encode()]
    if wrapped_forms:
        forms += [
            # base64 of a longer document at 76/64 columns, LF/CRLF; hex at 60
            b"\n" + wrapped(base64.b64encode(b"{'k': '" + v + b"'}" * 3), 76, b"\n"),
            b"\r\n" + wrapped(base64.b64encode(b"x" + v + v + v), 64, b"\r\n"),
            b"\n" + wrapped((v + v).hex().encode(), 60, b"\n"),
        ]
    return forms


def make_corpus(
    size: int, values: list[bytes], rng: random.Random, *, wrapped_forms: bool
) -> bytes:
    lines: list[bytes] = []
    total = 0
    n = 0
    while total < size:
        n += 1
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 16))]
        if n % 50 == 0:  # a secret every 50 lines, in a random encoding
            words.append(rng.choice(encodings(rng.choice(values), wrapped_forms=wrapped_forms)))
        line = b"2024-05-01T12:00:%02d.%06dZ " % (n % 60, n % 999_999) + b" ".join(words) + b"\n"
        lines.append(line)
        total += len(line)
    return b"".join(lines)[:size]


HELD: dict[int, list[int]] = {}


def split(corpus: bytes, chunk: int) -> list[bytes]:
    """``corpus`` as separate bytes objects of ``chunk`` bytes: what a pipe reader
    (``os.read``) hands the redactor. Made before the clock starts: slicing a memoryview in
    the timed loop added a 64 KiB copy per write (~5 us) that no real caller makes."""
    return [corpus[offset : offset + chunk] for offset in range(0, len(corpus), chunk)]


def stream_pass(red: Any, pieces: list[bytes], clock: Callable[[], float]) -> tuple[float, int]:
    stream = red.stream("stdout")
    out = 0
    held: list[int] = []
    start = clock()
    for piece in pieces:
        out += len(stream.write(piece))
        held.append(getattr(stream, "pending_bytes", 0))
    out += len(stream.flush())
    elapsed = clock() - start
    HELD[len(pieces[0]) if pieces else 0] = held
    return elapsed, out


def naive_pass(patterns: list[bytes], sample: bytes, clock: Callable[[], float]) -> float:
    start = clock()
    data = sample
    for p in sorted(patterns, key=len, reverse=True):
        data = data.replace(p, MASK)
    return clock() - start


def bare_scan_rate(engine: Any, corpus: bytes, clock: Callable[[], float], repeat: int) -> float:
    """MB/s of the engine's Hyperscan database alone over ``corpus`` in 64 KiB buffers, with a
    callback that does nothing: the ceiling of the streaming rate on this machine right now
    (0 for engines without a database)."""
    db = getattr(engine, "_db", None)
    if db is None:
        return 0.0
    scratch = engine._scratch()

    def on_match(*_: object) -> None:
        return None

    best = float("inf")
    for _ in range(repeat):
        start = clock()
        for offset in range(0, len(corpus), 65536):
            db.scan(corpus[offset : offset + 65536], match_event_handler=on_match, scratch=scratch)
        best = min(best, clock() - start)
    return len(corpus) / best / MB


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One round of the benchmark in this process, with this process's ``hardened_launcher``."""
    from hardened_launcher.redaction import Redactor  # noqa: PLC0415  # after --tree

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    rng = random.Random(20240501)
    size = args.megabytes * MB
    rows: list[dict[str, Any]] = []
    for count in [int(c) for c in args.counts.split(",")]:
        values = make_values(count, rng)
        corpus = make_corpus(size, values, rng, wrapped_forms=args.corpus == "wrapped")
        naive_rate = None
        for engine in [e for e in args.engines.split(",") if e]:
            red = Redactor(engine=engine)
            t0 = time.perf_counter()
            red.add_many([(f"V{i}", v) for i, v in enumerate(values)])
            if hasattr(red, "wait_compiled"):
                red.wait_compiled()  # steady state: the fast engine (see Redactor start-up)
            compile_s = time.perf_counter() - t0
            patterns = list(red._state[0].patterns)  # benchmark looks inside
            if naive_rate is None:
                sample = corpus[: max(MB // 4, min(size, 16 * MB * 10 // count))]
                naive_rate = (
                    len(sample) / min(naive_pass(patterns, sample, clock) for _ in range(2)) / MB
                )
            stream_pass(red, split(corpus[:MB], 65536), clock)  # warm-up: lazily built state
            rates = {}
            for chunk in (4096, 65536):
                pieces = split(corpus, chunk)
                best = min(stream_pass(red, pieces, clock)[0] for _ in range(args.repeat))
                del pieces
                rates[chunk] = size / best / MB
            scan_rate = bare_scan_rate(red._state[0], corpus, clock, args.repeat)
            small = split(corpus[: 8 * MB], 65536)
            tracemalloc.start()
            stream_pass(red, small, clock)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            held = HELD[65536]
            rows.append(
                {
                    "values": count,
                    "patterns": len(patterns),
                    "engine": engine,
                    "compile_s": compile_s,
                    "4k": rates[4096],
                    "64k": rates[65536],
                    "naive": naive_rate,
                    "scan": scan_rate,
                    "peak_kib": peak // 1024,
                    "held_max": max(held),
                    "held_mean": sum(held) / len(held),
                }
            )
    return rows


def print_rows(label: str, rows: list[dict[str, Any]]) -> None:
    print(
        f"{'tree':>8} {'values':>6} {'patterns':>8} {'engine':>12} {'compile s':>9} "
        f"{'4 KiB MB/s':>11} {'64 KiB MB/s':>11} {'naive MB/s':>10} {'x naive':>8} "
        f"{'peak KiB':>9} {'held max':>8} {'held mean':>9} {'scan MB/s':>9} {'of scan':>7}"
    )
    for r in rows:
        print(
            f"{label:>8} {r['values']:>6} {r['patterns']:>8} {r['engine']:>12} "
            f"{r['compile_s']:>9.2f} {r['4k']:>11.0f} {r['64k']:>11.0f} {r['naive']:>10.1f} "
            f"{r['64k'] / r['naive']:>8.0f} {r['peak_kib']:>9} {r['held_max']:>8} "
            f"{r['held_mean']:>9.1f} {r.get('scan', 0.0):>9.0f} "
            f"{r['64k'] / r['scan'] if r.get('scan') else 0.0:>7.2f}"
        )


def scan_only(args: argparse.Namespace) -> None:
    """Hyperscan database shapes alone (no stream, no Python per match beyond a counter)."""
    import hyperscan  # noqa: PLC0415  # only this mode needs it directly

    from hardened_launcher.redaction import Redactor  # noqa: PLC0415
    from hardened_launcher.redaction.engine import (  # noqa: PLC0415
        GRAM,
        WRAP_TRIGGER,
        WRAP_TRIGGERS_HS,
        _hs_expression,
    )

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    rng = random.Random(20240501)
    size = args.megabytes * MB
    count = int(args.counts.split(",")[-1])
    values = make_values(count, rng)
    corpus = make_corpus(size, values, rng, wrapped_forms=args.corpus == "wrapped")
    red = Redactor(engine="hyperscan")
    red.add_many([(f"V{i}", v) for i, v in enumerate(values)])
    patterns = [_hs_expression(p) for p in red._state[0].patterns]
    grams = sorted({p[:GRAM] for p in red._state[0].patterns})
    shapes = {
        "patterns": patterns,
        "+ trigger \\r?\\n": [*patterns, WRAP_TRIGGER],
        "+ 2 triggers (used)": [*patterns, *WRAP_TRIGGERS_HS],
        "+ 6-byte grams": [*patterns, *(_hs_expression(g) for g in grams)],
    }
    best = dict.fromkeys(shapes, 0.0)
    dbs = {}
    for name, exprs in shapes.items():
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        db.compile(expressions=exprs, ids=list(range(len(exprs))), elements=len(exprs), flags=0)
        dbs[name] = (db, hyperscan.Scratch(db))
    hits = [0]

    def on_match(*_: object) -> None:
        hits[0] += 1

    for _ in range(args.repeat):  # rounds alternate the shapes: the same load for each
        for name, (db, scratch) in dbs.items():
            start = clock()
            for offset in range(0, size, 65536):
                chunk = corpus[offset : offset + 65536]
                db.scan(chunk, match_event_handler=on_match, scratch=scratch)
            best[name] = max(best[name], size / (clock() - start) / MB)
    print(
        f"Hyperscan scan only, {count} values, 64 KiB buffers, {args.megabytes} MB, "
        f"best of {args.repeat}, {args.clock} time"
    )
    for name, rate in best.items():
        print(
            f"{name:<22} {len(shapes[name]):>7} expressions {rate:>7.0f} MB/s "
            f"({rate / best['patterns']:.2f} of patterns only)"
        )


def layered(args: argparse.Namespace) -> None:
    """A run's redactor layered over the launcher's (``shared=``) vs one over the union."""
    from hardened_launcher.redaction import Redactor  # noqa: PLC0415  # after --tree

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    rng = random.Random(20240501)
    size = args.megabytes * MB
    body = base64.encodebytes(rng.randbytes(2400))  # a 4096-bit PKCS#8 key's DER size
    pem = b"-----BEGIN PRIVATE KEY-----\n" + body + b"-----END PRIVATE KEY-----\n"
    launcher = [
        ("SPACELIFT_TOKEN", base64.b64encode(rng.randbytes(3700))),
        ("SPACELIFT_POOL_PRIVATE_KEY", base64.b64encode(pem)),
        ("SPACELIFT_POOL_PRIVATE_KEY", pem),
    ]
    shared = Redactor()
    shared.add_many(launcher)
    shared.wait_compiled()
    print(
        f"{args.megabytes} MB, best of {args.repeat}, {args.clock} time; launcher-like set: "
        f"{shared.pattern_count} patterns; add = the run's add_many (compile included)"
    )
    print(
        f"{'values':>6} {'kind':>8} {'patterns':>8} {'add ms':>8} {'4 KiB MB/s':>11} "
        f"{'64 KiB MB/s':>11}"
    )
    for count in [int(c) for c in args.counts.split(",")]:
        values = make_values(count, rng)
        corpus = make_corpus(size, values, rng, wrapped_forms=args.corpus == "wrapped")
        items = [*launcher, *((f"V{i}", v) for i, v in enumerate(values))]
        results: dict[str, dict[str, float]] = {}
        for _ in range(args.repeat):
            for kind in ("layered", "union"):
                red = Redactor(shared=shared) if kind == "layered" else Redactor()
                start = time.perf_counter()
                red.add_many(items)
                red.wait_compiled()
                added = (time.perf_counter() - start) * 1000
                stream_pass(red, split(corpus[:MB], 65536), clock)  # warm-up
                row = results.setdefault(kind, {"add": added, "patterns": red.pattern_count})
                row["add"] = min(row["add"], added)
                for chunk in (4096, 65536):
                    rate = size / stream_pass(red, split(corpus, chunk), clock)[0] / MB
                    row[str(chunk)] = max(row.get(str(chunk), 0.0), rate)
        for kind, row in results.items():
            print(
                f"{count:>6} {kind:>8} {row['patterns']:>8.0f} {row['add']:>8.1f} "
                f"{row['4096']:>11.0f} {row['65536']:>11.0f}"
            )
        now, one = results["layered"], results["union"]
        print(
            f"{count:>6} {'ratio':>8} {'':>8} {now['add'] / one['add']:>8.3f} "
            f"{now['4096'] / one['4096']:>11.2f} {now['65536'] / one['65536']:>11.2f}"
        )


def compare(args: argparse.Namespace) -> None:
    """Alternate this tree and ``--compare`` round by round, one process per round."""
    base = [sys.executable, "-m", "benchmarks.redaction", "--json", "--repeat", "1"]
    base += ["--megabytes", str(args.megabytes), "--counts", args.counts]
    base += ["--engines", args.engines, "--corpus", args.corpus, "--clock", args.clock]
    if args.compare_fallback:
        trees = {"now": [], "before": ["--fallback"]}
        print("before = this tree without the compiled helper (--fallback)")
    else:
        trees = {"now": [], "before": ["--tree", args.compare]}
    best: dict[str, dict[tuple[int, str], dict[str, Any]]] = {t: {} for t in trees}
    for _ in range(args.repeat):
        for label, extra in trees.items():
            command = base + extra
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            for row in json.loads(out):
                key = (row["values"], row["engine"])
                old = best[label].get(key)
                if old is None:
                    best[label][key] = row
                else:
                    for field in ("4k", "64k", "naive", "scan"):
                        old[field] = max(old.get(field, 0.0), row.get(field, 0.0))
    for label in trees:
        print_rows(label, list(best[label].values()))
    print(f"{'values':>6} {'engine':>12} {'64 KiB now/before':>18} {'4 KiB now/before':>17}")
    for key, now in best["now"].items():
        before = best["before"].get(key)
        if before:
            print(
                f"{key[0]:>6} {key[1]:>12} {now['64k'] / before['64k']:>18.2f} "
                f"{now['4k'] / before['4k']:>17.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--counts", default="10,100,1000")
    parser.add_argument("--engines", default="")
    parser.add_argument("--corpus", choices=("wrapped", "single"), default="wrapped")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--tree", default="", help="import hardened_launcher from this tree")
    parser.add_argument("--compare", default="", help="an older tree to run alternately")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument(
        "--fallback", action="store_true", help="compile without the C wrap-break helper"
    )
    parser.add_argument(
        "--compare-fallback", action="store_true", help="this tree with and without the helper"
    )
    parser.add_argument("--scan-only", action="store_true", help="time database shapes")
    parser.add_argument(
        "--layered", action="store_true", help="a run's redactor over a shared one vs one"
    )
    args = parser.parse_args()
    if args.tree:
        # Bypass the editable install's finder so that the older tree is what gets imported.
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
        sys.path.insert(0, str(Path(args.tree).resolve()))
    if args.fallback:
        from hardened_launcher.redaction import engine  # noqa: PLC0415

        engine.LINESCAN = None  # engines compiled from now on take the pure-Python path
    if not args.engines:
        from hardened_launcher.redaction.engine import available_engines  # noqa: PLC0415

        args.engines = ",".join(e for e in available_engines() if e != "reference")
    if args.scan_only:
        scan_only(args)
        return
    if args.layered:
        layered(args)
        return
    if args.compare or args.compare_fallback:
        compare(args)
        return
    load = f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    if not args.json:
        print(
            f"corpus {args.megabytes} MB ({args.corpus}), best of {args.repeat}, {args.clock} "
            f"time; MB/s = 10^6 bytes per second; {load}"
        )
    rows = measure(args)
    if args.json:
        print(json.dumps(rows))
        return
    print_rows("now", rows)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS of the whole benchmark process: {rss // 1024} MiB (corpus included)")
    print("peak KiB: tracemalloc peak while streaming 8 MB in 64 KiB writes (Python heap)")
    print(
        "held max/mean: bytes a stream held back after each 64 KiB write (only what may still "
        "become a match; a fixed hold-back would be the longest variant - 1)"
    )
    print(
        "scan MB/s: the engine's Hyperscan database alone over the same corpus in 64 KiB "
        "buffers, no work per match (this machine's ceiling right now); of scan = 64 KiB "
        "MB/s / scan MB/s"
    )


if __name__ == "__main__":
    main()
