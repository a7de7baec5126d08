"""Start-up cost of the CLI, next to a bare interpreter measured in the same run.

Run: ``python -m benchmarks.startup [--repeat 7] [--before DIR]``

* ``--help``: wall time of ``hardened-launcher --help`` (a fresh interpreter each time) next
  to ``python -c pass``; goal ≤ 0.25 s.
* ``redact`` ready time at 10, 100 and 1,000 values: from process start until the first line
  written to its stdin comes back redacted (values from a ``--values-file``); goal ≤ 0.5 s at
  1,000 values.

Figures are medians of ``--repeat`` runs (the machine is shared; the median resists outliers).
With ``--before DIR`` (a checkout of an older tree, e.g. ``git archive main | tar -x -C DIR``),
the same commands also run against that tree's code in the same run, for a before/after table
(``inf``: the first line was still held back after 10 s).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs the CLI from ``tree`` (or the installed package when empty), bypassing the editable
# install's finder so that an older checkout really is what gets imported.
BOOT = (
    "import sys\n"
    "tree = sys.argv.pop(1)\n"
    "if tree:\n"
    "    sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]\n"
    "    sys.path.insert(0, tree)\n"
    "from hardened_launcher.cli import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)
LINE = b"build step 1 done\n"
PADDING = b"." * 8191 + b"\n"
HELD_LIMIT = 10.0
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789-_/+=.:@!"


def cli(tree: str, *args: str) -> list[str]:
    return [sys.executable, "-c", BOOT, tree, *args]


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def ready_time(command: list[str]) -> float:
    """Seconds from spawn until the first input line comes back on stdout.

    ``inf`` when the line is still held back after HELD_LIMIT seconds.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    # The line, then 8 KiB more: a redactor that holds a fixed tail (the old design) releases
    # the line once enough bytes follow it, so both designs can be timed.
    proc.stdin.write(LINE + PADDING)
    proc.stdin.flush()
    readable, _, _ = select.select([proc.stdout], [], [], HELD_LIMIT)
    elapsed = time.perf_counter() - start if readable else math.inf
    proc.stdin.close()
    line = proc.stdout.readline()
    proc.wait(timeout=60)
    if line != LINE:
        raise SystemExit(f"redact answered {line!r}")
    return elapsed


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--before", default="", help="an older source tree to compare with")
    args = parser.parse_args()
    trees = [("now", "")] + ([("before", args.before)] if args.before else [])
    rng = random.Random(15)
    env_note = f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    print(f"median of {args.repeat}; {env_note}")
    bare = median([wall([sys.executable, "-c", "pass"]) for _ in range(args.repeat)])
    print(f"{'python -c pass':<34} {bare:7.3f} s")
    for label, tree in trees:
        helps = [wall(cli(tree, "--help")) for _ in range(args.repeat)]
        h = median(helps)
        print(f"{'--help (' + label + ')':<34} {h:7.3f} s  {h - bare:+.3f} s over bare")
    with tempfile.TemporaryDirectory() as tmp:
        for count in (10, 100, 1000):
            values = [
                "".join(rng.choice(ALPHABET) for _ in range(rng.randint(16, 48)))
                for _ in range(count)
            ]
            path = Path(tmp) / f"values-{count}.txt"
            path.write_text("\n".join(values) + "\n", encoding="ascii")
            for label, tree in trees:
                command = cli(tree, "redact", "--values-file", str(path))
                samples = [ready_time(command)]
                if samples[0] != math.inf:  # a held line would cost HELD_LIMIT each time
                    samples += [ready_time(command) for _ in range(args.repeat - 1)]
                r = median(samples)
                name = f"redact ready, {count} values ({label})"
                print(f"{name:<34} {r:7.3f} s  {r - bare:+.3f} s over bare")


if __name__ == "__main__":
    main()
