"""Putting a project into the workspace: a source archive against the spec's ``files``.

Run: ``python benchmarks/bench_source_archive.py [--files N] [--big-mib M] [--shell SH]``

Two projects, each delivered both ways to the real worker script (``hl-worker.sh``, run by
``--shell`` on this host, no Docker):

- ``files``: one ``F`` record per file (one base64 line each, read by ``sh``'s ``read``, one
  ``base64`` process per file), the baseline: how a spec's ``files`` arrive;
- ``archive``: the same content as ``source.archive`` (the launcher checks and rebuilds it as a
  plain tar; the worker copies it with ``dd`` into ``tar``).

Projects: ``many`` is N small files (1 KiB each; default 300, a real Terraform project's size);
``big`` is one text file of M MiB (default 4; a spec's files must be text, an archive's need
not). It prints seconds for each (the launcher's parse and
encode, then the worker) and the files/archive ratio.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import subprocess
import tarfile
import tempfile
import time
from typing import Any

from hardened_launcher.executor.entrypoint import worker_script_path
from hardened_launcher.executor.instructions import encode_instructions
from hardened_launcher.executor.runspec import run_spec_from_mapping


def _spec(**extra: Any) -> Any:
    return run_spec_from_mapping(
        {
            "version": 1,
            "run_id": "bench",
            "run_type": "wo",
            "image": "x",
            "phases": [{"name": "main", "commands": ["true"]}],
            **extra,
        }
    )


def _worker_seconds(shell: str, data: bytes) -> float:
    with tempfile.TemporaryDirectory(prefix="hl-bench-src-") as workspace:
        started = time.perf_counter()
        done = subprocess.run(
            [*([shell, "sh"] if shell.endswith("busybox") else [shell]), str(worker_script_path())],
            input=data,
            capture_output=True,
            env={"HL_WORKSPACE": workspace, "PATH": "/usr/bin:/bin"},
            check=False,
        )
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the worker failed: {done.stderr.decode(errors='replace')[-500:]}")
    return seconds


def _measure(shell: str, project: dict[str, bytes]) -> tuple[float, float, float, float]:
    # Baseline: the spec's files (the projects are ASCII text, which both ways can carry).
    started = time.perf_counter()
    files = [{"path": p, "content": c.decode("ascii")} for p, c in project.items()]
    as_files = bytes(encode_instructions(_spec(files=files)))
    files_launcher = time.perf_counter() - started
    files_worker = _worker_seconds(shell, as_files)

    started = time.perf_counter()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for path, content in project.items():
            info = tarfile.TarInfo(path)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    raw = out.getvalue()
    source = {"archive": base64.b64encode(raw).decode(), "sha256": hashlib.sha256(raw).hexdigest()}
    as_archive = bytes(encode_instructions(_spec(source=source)))
    archive_launcher = time.perf_counter() - started
    archive_worker = _worker_seconds(shell, as_archive)
    return files_launcher, files_worker, archive_launcher, archive_worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--big-mib", type=int, default=4)
    parser.add_argument("--shell", default="sh")
    args = parser.parse_args()
    projects = {
        f"many ({args.files} files of 1 KiB)": {
            f"modules/m{i % 20}/f{i}.tf": os.urandom(512).hex().encode() for i in range(args.files)
        },
        # Text (a spec's files must be text): hex of random bytes.
        f"big (1 file of {args.big_mib} MiB)": {
            "blob.txt": os.urandom(args.big_mib << 19).hex().encode()
        },
    }
    # Fewer than 256 files fit in a spec's files; above that only the archive can carry them.
    for name, project in projects.items():
        if len(project) > 256:
            project = dict(list(project.items())[:256])  # noqa: PLW2901 - same for both ways
            name = f"{name}, first 256"  # noqa: PLW2901
        fl, fw, al, aw = _measure(args.shell, project)
        print(
            f"{name}: files {fl:.2f} + {fw:.2f} s, archive {al:.2f} + {aw:.2f} s "
            f"(launcher + worker); files/archive {(fl + fw) / (al + aw):.1f}x"
        )


if __name__ == "__main__":
    main()
