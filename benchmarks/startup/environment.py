"""Start-up cost of the test environment and of the CLI commands it runs, before and after.

Run: ``python -m benchmarks.startup.environment --before DIR [--repeat 3]`` where ``DIR`` is a
checkout of an older tree (``git archive main | tar -x -C DIR``). Needs what the e2e tests
need (dockerd, SeaweedFS, busybox).

For each tree, in the same run, with ``PYTHONDONTWRITEBYTECODE=1`` (as in CI's shell):

* ``controlplane init``, ``keygen``, ``controlplane pool create``: wall time of one command;
* ``Environment.start()`` with one launcher: total, and launcher spawn until the control plane
  has it registered; ``Environment.stop()``.

The older tree runs twice: without a bytecode cache (every child compiles the package from
source, as before tests/conftest.py wrote the cache) and with one; the current tree runs with
one. Figures are medians of ``--repeat`` runs; the machine is shared, so compare the columns of
one run, not absolute times.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

# Runs in a fresh interpreter with the tree first on sys.path (children inherit PYTHONPATH).
PROBE = r"""
import json, shutil, subprocess, sys, tempfile, time
from pathlib import Path
from hardened_launcher.demo import environment as E

out = {}
tmp = Path(tempfile.mkdtemp(prefix="hl-bench-"))
def timed(name, argv):
    t = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=E._base_environ())
    out[name] = time.perf_counter() - t
port = str(E.free_port())
timed("cli: controlplane init", E.cli_argv("controlplane", "init", "--dir", str(tmp / "cp"),
      "--broker-host", "127.0.0.1", "--broker-port", port, "--protocol", "poll",
      "--poll-port", str(E.free_port())))
(tmp / "k").mkdir(mode=0o700)
timed("cli: keygen", E.cli_argv("keygen", "--key-out", str(tmp / "k" / "a.key"),
      "--csr-out", str(tmp / "k" / "a.csr")))
timed("cli: controlplane pool create", E.cli_argv("controlplane", "pool", "create", "--name",
      "p", "--csr", str(tmp / "k" / "a.csr"), "--dir", str(tmp / "cp")))

spawned = []
original = E.Environment.start_launcher
def start_launcher(self, launcher):
    spawned.append(time.perf_counter())
    return original(self, launcher)
E.Environment.start_launcher = start_launcher
env = E.Environment(root=tmp / "env")
t = time.perf_counter()
env.start()
registered = time.perf_counter()
out["env: start (1 launcher)"] = registered - t
out["env: launcher spawn -> registered"] = registered - spawned[0]
t = time.perf_counter()
env.stop()
out["env: stop"] = time.perf_counter() - t
shutil.rmtree(tmp, ignore_errors=True)
print(json.dumps(out))
"""


def probe(tree: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(tree))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if proc.returncode != 0:
        raise SystemExit(f"probe in {tree} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def drop_bytecode(tree: Path) -> None:
    for cache in (tree / "hardened_launcher").rglob("__pycache__"):
        shutil.rmtree(cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout of the old tree")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    before: Path = args.before.resolve()
    after = Path(__file__).resolve().parents[2]
    columns = ["before, no .pyc", "before, .pyc", "after, .pyc"]
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in columns}
    drop_bytecode(before)
    for _ in range(args.repeat):
        runs[columns[0]].append(probe(before))
    compileall.compile_dir(before / "hardened_launcher", quiet=1)
    compileall.compile_dir(after / "hardened_launcher", quiet=1)
    for _ in range(args.repeat):
        runs[columns[1]].append(probe(before))
        runs[columns[2]].append(probe(after))
    names = list(runs[columns[0]][0])
    print(f"{'median seconds':<36}" + "".join(f"{c:>18}" for c in columns))
    for name in names:
        cells = [statistics.median(r[name] for r in runs[c]) for c in columns]
        print(f"{name:<36}" + "".join(f"{v:>18.2f}" for v in cells))


if __name__ == "__main__":
    main()
