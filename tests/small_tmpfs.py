"""A small tmpfs for disk-full tests, and writing a file until it is full (ENOSPC).

Shared by the audit-full integration test and the e2e local-fault drills (audit and state
directories filled and freed).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import integration_required, require_tool


@contextlib.contextmanager
def mounted_tmpfs(target: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (mount's syntax: ``4M``, ``1048576``) on ``target`` (created);
    skips locally and fails in CI when not root. Unmounted lazily: a log that failed in the
    test may still hold a descriptor open."""
    if os.geteuid() != 0:
        message = "mounting a tmpfs needs root"
        if integration_required():
            pytest.fail(message)
        pytest.skip(message)
    target.mkdir()
    subprocess.run(
        [
            require_tool("mount"),
            "-t",
            "tmpfs",
            "-o",
            f"size={size},mode=0700",
            "tmpfs",
            str(target),
        ],
        check=True,
        timeout=30,
    )
    try:
        yield target
    finally:
        subprocess.run([require_tool("umount"), "-l", str(target)], check=True, timeout=30)


def write_until_full(fd: int) -> None:
    """Write zeros to ``fd`` until the filesystem has no byte left (unbuffered writes)."""
    for size in (65536, 4096, 1):
        try:
            while True:
                os.write(fd, b"\0" * size)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


def fill(directory: Path) -> Path:
    """Fill ``directory``'s filesystem to the last byte with one new file; returns its path."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_until_full(fd)
    finally:
        os.close(fd)
    return filler
