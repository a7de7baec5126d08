"""The stdin wire format, run through the real worker script with the host's sh (no Docker)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hardened_launcher.executor.entrypoint import worker_script_path
from hardened_launcher.executor.instructions import HEADER, encode_instructions
from hardened_launcher.executor.runspec import run_spec_from_mapping
from hardened_launcher.secrets import Secret

CANARY = "CANARY-instructions-31bd"
SHELLS = [s for s in ("busybox", "dash", "bash") if shutil.which(s)]


def spec(**extra: Any) -> Any:
    return run_spec_from_mapping(
        {
            "version": 1,
            "run_id": "r",
            "run_type": "wo",
            "image": "busybox",
            "phases": [
                {"name": "one", "commands": ['printf "[%s]" "$WEIRD"', 'cat "d/f.txt"']},
                {"name": "two", "commands": ["echo $TOKEN", "exit 4", "echo never"]},
            ],
            "env": {"WEIRD": "a b\n$(touch pwned)`x`;'\"\n\n"},
            "secret_env": {"TOKEN": CANARY},
            "files": [{"path": "d/f.txt", "content": "line\n", "mode": "0640"}],
            **extra,
        }
    )


def run_worker(
    shell: str, data: bytes | bytearray, workspace: Path
) -> subprocess.CompletedProcess[bytes]:
    argv = [shell, "sh"] if shell == "busybox" else [shell]
    return subprocess.run(
        [*argv, str(worker_script_path())],
        input=bytes(data),
        capture_output=True,
        env={"HL_WORKSPACE": str(workspace), "PATH": "/usr/bin:/bin"},
        timeout=30,
        check=False,
    )


def test_encoding_has_no_raw_secret_and_ends_with_go() -> None:
    data = encode_instructions(spec(), extra_env={"AWS_REGION": Secret("eu")})
    assert data.startswith(HEADER)
    assert data.endswith(b"GO\n")
    assert CANARY.encode() not in data
    assert b"E AWS_REGION " in data


def test_bad_whitelisted_name_is_refused() -> None:
    with pytest.raises(ValueError, match="shell name"):
        encode_instructions(spec(), extra_env={"BAD NAME": Secret("x")})


@pytest.mark.parametrize("shell", SHELLS)
def test_worker_runs_phases_with_exact_values_and_exit_status(shell: str, tmp_path: Path) -> None:
    done = run_worker(shell, encode_instructions(spec()), tmp_path)
    out = done.stdout.decode()
    assert done.returncode == 4, done.stderr
    assert "[a b\n$(touch pwned)`x`;'\"\n\n]" in out
    assert "line\n" in out
    assert CANARY in out  # the worker prints it; the launcher's redactor masks it
    assert "::hl:: phase one start" in out
    assert "::hl:: phase one end status=0" in out
    assert "::hl:: phase two end status=4" in out
    assert "::hl:: run end status=4" in out
    assert "never" not in out
    assert not (tmp_path / "pwned").exists()
    assert oct((tmp_path / "d" / "f.txt").stat().st_mode & 0o777) == "0o640"


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "no instructions"),
        (b"HLRUN 2\nGO\n", "unknown instruction header"),
        (b"HLRUN 1\nP main\n", "instructions ended early"),
        (b"HLRUN 1\nX y\nGO\n", "unknown instruction"),
        (b"HLRUN 1\nE 1A eA==\nGO\n", "bad variable name"),
        (b"HLRUN 1\nF Li4vZXNjYXBl 644 eA==\nGO\n", "bad file path"),  # ../escape
        (b"HLRUN 1\nF L2V0Yy94 644 eA==\nGO\n", "bad file path"),  # /etc/x
        (b"HLRUN 1\nF eA== 64x eA==\nGO\n", "bad file mode"),
    ],
)
def test_worker_refuses_bad_instructions(shell: str, data: bytes, why: str, tmp_path: Path) -> None:
    done = run_worker(shell, data, tmp_path)
    assert done.returncode == 125
    assert why in done.stderr.decode()
