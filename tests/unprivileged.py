"""Run a permission test as an unprivileged user, also when the suite runs as root (CI, here).

Root ignores file modes, so a test of "mode 000 is refused" proves nothing as root and used to be
skipped there. :func:`unprivileged` instead runs the test body in a forked child that drops to
``nobody`` (no supplementary groups, no capabilities left: a non-zero uid after ``setuid`` loses
them all), with ``tmp_path`` replaced by a fresh directory that user owns. The child's failure
(its traceback) fails the test in the parent; a child that did not run reports so. As a
non-root user the test simply runs in-process.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Final, ParamSpec

import pytest

P = ParamSpec("P")

UNPRIVILEGED_USER: Final = "nobody"
_RAN: Final = b"ran-as-uid="


def _drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.geteuid() == 0 or os.getegid() == 0:  # pragma: no cover - setuid failed silently
        raise RuntimeError("could not drop root")


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def unprivileged(test: Callable[P, None]) -> Callable[P, None]:
    """Decorate a test that must run without root (see the module docstring)."""

    @functools.wraps(test)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        if os.geteuid() != 0:
            test(*args, **kwargs)
            return
        user = pwd.getpwnam(UNPRIVILEGED_USER)
        base = Path(tempfile.mkdtemp(prefix="hl-unprivileged-"))
        os.chown(base, user.pw_uid, user.pw_gid)
        if "tmp_path" in kwargs:
            kwargs["tmp_path"] = base
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                os.close(read_end)
                _drop_privileges(user.pw_uid, user.pw_gid)
                test(*args, **kwargs)
                message, code = _RAN + str(os.geteuid()).encode(), 0
            except BaseException:  # noqa: BLE001 - every failure goes back to the parent
                message = traceback.format_exc().encode("utf-8", "replace")
            try:
                os.write(write_end, message)
            finally:
                os._exit(code)
        os.close(write_end)
        try:
            report = _read_all(read_end)
        finally:
            os.close(read_end)
            _, status = os.waitpid(pid, 0)
            shutil.rmtree(base, ignore_errors=True)
        if os.waitstatus_to_exitcode(status) != 0 or not report.startswith(_RAN):
            pytest.fail(
                f"as {UNPRIVILEGED_USER} (uid {user.pw_uid}):\n"
                + report.decode("utf-8", "replace"),
                pytrace=False,
            )
        if report != _RAN + str(user.pw_uid).encode():  # pragma: no cover - defensive
            pytest.fail(f"the test ran as {report!r}, not as {UNPRIVILEGED_USER}")

    return wrapper
