"""``controlplane init`` leaves a whole control plane or an empty directory: a second init at
the same time is refused (not interleaved), and a failed init removes what it wrote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hardened_launcher.cli import main
from hardened_launcher.controlplane import ca
from hardened_launcher.controlplane.ca import open_state_dir
from hardened_launcher.directory_lock import DirectoryLock
from hardened_launcher.errors import EXIT_CONFIGURATION, EXIT_INFRASTRUCTURE, EXIT_RETRYABLE


def _init(state: Path) -> int:
    return main(["controlplane", "init", "--dir", str(state), "--broker-port", "18883"])


def test_an_init_while_another_holds_the_directory_is_refused_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "cp"
    state.mkdir(mode=0o700)
    held = DirectoryLock.acquire(state, what="x", reason="x", hint="x")
    try:
        assert _init(state) == EXIT_RETRYABLE
    finally:
        held.release()
    err = capsys.readouterr().err
    assert "the control plane state in" in err
    assert "is in use by another process" in err
    assert "Traceback" not in err
    assert list(state.iterdir()) == []
    assert _init(state) == 0  # once the other one is gone
    open_state_dir(state)


@pytest.mark.parametrize("step", ["write_broker_config", "issue_control_plane_certificate"])
def test_a_failed_init_leaves_an_empty_directory_and_a_retry_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], step: str
) -> None:
    state = tmp_path / "cp"

    def broken(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(ca, step, broken)
        assert _init(state) == EXIT_INFRASTRUCTURE
    err = capsys.readouterr().err
    assert "No space left on device" in err
    assert "Traceback" not in err
    assert state.is_dir()
    assert list(state.iterdir()) == []
    assert _init(state) == 0
    open_state_dir(state)


def test_an_init_into_a_directory_another_init_filled_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "cp"
    assert _init(state) == 0
    capsys.readouterr()
    assert _init(state) == EXIT_CONFIGURATION
    assert "exists and is not an empty directory" in capsys.readouterr().err
    open_state_dir(state)


def test_concurrent_inits_make_exactly_one_control_plane(tmp_path: Path) -> None:
    state = tmp_path / "cp"
    command = [
        sys.executable, "-m", "hardened_launcher", "controlplane", "init",
        "--dir", str(state), "--broker-port", "18883",
    ]  # fmt: skip
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [(child.wait(timeout=120), child.stderr.read()) for child in children if child.stderr]
    codes = sorted(code for code, _ in results)
    assert codes.count(0) == 1, results
    for code, err in results:
        assert "Traceback" not in err
        if code:
            assert code in (EXIT_CONFIGURATION, EXIT_RETRYABLE), err
            assert "not an empty directory" in err or "in use by another process" in err, err
    open_state_dir(state)
