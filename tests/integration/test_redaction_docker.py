"""A real run (real dockerd, the busybox image) prints a long secret through wrapped encoders.

busybox ``base64`` wraps at 76 columns; a secret longer than ~57 bytes comes out over several
lines. The stored log must show ``***`` where the encoding was, no line of it may decode to the
secret, and the end-of-run canary scan (which would fail the run and quarantine the log) is clean.
"""

from __future__ import annotations

import base64
import re
import secrets
from pathlib import Path

import pytest

from hardened_launcher.audit import MemoryAuditLog
from hardened_launcher.redaction import Redactor
from tests.integration.executor_support import Release, settings_for, signed_release
from tests.integration.images import busybox_image
from tests.integration.test_executor_docker import execute, spec_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def image() -> str:
    return busybox_image()


@pytest.fixture
def release(tmp_path: Path) -> Release:
    return signed_release(tmp_path)


def _decodes_to(log: bytes, needle: bytes) -> bool:
    flat = log.replace(b"\r", b"").replace(b"\n", b"")
    for run in re.findall(rb"[A-Za-z0-9+/]{8,}", flat):
        for off in range(4):
            part = run[off:]
            if needle in base64.b64decode(part[: len(part) // 4 * 4]):
                return True
    for run in re.findall(rb"[0-9a-fA-F]{8,}", flat):
        for off in range(2):
            part = run[off:]
            if needle in bytes.fromhex(part[: len(part) // 2 * 2].decode()):
                return True
    return False


def test_a_long_secret_through_busybox_base64_and_hex_is_masked(
    image: str, release: Release, tmp_path: Path
) -> None:
    token = f"LONGCANARY-{secrets.token_urlsafe(96)}"  # ~140 bytes: 3 lines of base64
    document = spec_of(
        image,
        (
            "main",
            [
                'printf %s "$TOKEN" | base64',
                "echo ---",
                'printf "x%s" "$TOKEN" | base64',
                "echo ---",
                'printf "xy%s" "$TOKEN" | base64 | sed "s/$/\\r/"',
                "echo ---",
                "printf %s \"$TOKEN\" | od -An -tx1 -v | tr -d ' \\n'",
                "echo",
                "echo done",
            ],
        ),
        secret_env={"TOKEN": token},
    )
    log = tmp_path / "run.log"
    audit = MemoryAuditLog()
    result = execute(document, settings_for(tmp_path), release, log, audit=audit)
    data = log.read_bytes()
    assert result.succeeded, data
    assert [e.type for e in audit.events if e.type.startswith("run.log")] == ["run.log_clean"]
    assert data.count(b"***") >= 4
    assert b"done" in data
    assert token.encode() not in data
    assert not _decodes_to(data, token.encode()[8:60])
    # Each multi-line block (3 lines of 76 columns) became one mask on one line.
    sections = data.split(b"---\n")
    assert len(sections) == 4
    assert [s.count(b"***") for s in sections] == [1, 1, 1, 1]


def test_a_runs_redactor_layered_over_the_launchers_masks_both_sets(
    image: str, release: Release, tmp_path: Path
) -> None:
    """As the daemon runs it: the launcher's own value is known only to the shared redactor
    (compiled once per process); the run compiles its own secret alone. Both are masked in the
    stored log, wrapped forms included, and the canary scan (over the union) is clean."""
    launcher_value = f"LAUNCHERCANARY-{secrets.token_urlsafe(64)}"
    run_secret = f"RUNCANARY-{secrets.token_urlsafe(24)}"
    shared = Redactor()
    shared.add("SPACELIFT_TOKEN", launcher_value)
    redactor = Redactor(shared=shared)
    document = spec_of(
        image,
        (
            "main",
            [
                'echo "launcher: $SHOWN"',
                'printf %s "$SHOWN" | base64',
                'echo "run: $TOKEN"',
                "echo done",
            ],
        ),
        # A plain variable: only the launcher's (shared) redactor knows this value.
        env={"SHOWN": launcher_value},
        secret_env={"TOKEN": run_secret},
    )
    log = tmp_path / "run.log"
    audit = MemoryAuditLog()
    result = execute(document, settings_for(tmp_path), release, log, audit=audit, redactor=redactor)
    data = log.read_bytes()
    assert result.succeeded, data
    assert [e.type for e in audit.events if e.type.startswith("run.log")] == ["run.log_clean"]
    assert launcher_value.encode() not in data
    assert run_secret.encode() not in data
    assert not _decodes_to(data, launcher_value.encode()[8:60])
    assert b"launcher: ***" in data
    assert b"run: ***" in data
    assert b"done" in data
    assert redactor.counts() == {"SPACELIFT_TOKEN": 2, "env:TOKEN": 1}
    assert shared.counts() == {}


def test_stdout_and_stderr_lines_stay_whole_in_the_combined_log(
    image: str, release: Release, tmp_path: Path
) -> None:
    document = spec_of(
        image,
        (
            "main",
            [
                "printf 'progress: 10%%'; echo 'warning: slow' >&2; sleep 0.05; echo ' 20% done'",
                "printf 'prompt> '; sleep 1; echo answered",
            ],
        ),
    )
    log = tmp_path / "run.log"
    result = execute(document, settings_for(tmp_path), release, log)
    data = log.read_bytes()
    assert result.succeeded, data
    assert b"progress: 10% 20% done\n" in data
    assert b"warning: slow\n" in data
    # A partial line that waited past the deadline (a prompt) is released, then its end.
    assert b"prompt> answered\n" in data
