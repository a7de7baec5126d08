"""A SIGKILLed ``exec`` leaves no run behind: the run ends at its own deadline, and the next
``exec`` removes the container (one label scheme: owner process and deadline)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from hardened_launcher.executor.ownership import LABEL_DEADLINE, LABEL_OWNER, owner_alive
from tests.integration.images import busybox_image
from tests.integration.test_exec_cli import _exec, _setup

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def image() -> str:
    return busybox_image()


def _exec_containers(state_dir: Path) -> list[dict[str, Any]]:
    launcher_id = (state_dir / "launcher-id").read_text(encoding="ascii").strip()
    return list(
        docker.from_env().api.containers(
            all=True,
            filters={"label": f"io.hardened-launcher.launcher-id={launcher_id}-exec"},
        )
    )


def _start_long_exec(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        spec.read_text(encoding="utf-8").replace('echo "token=$TOKEN"', "sleep 300"),
        encoding="utf-8",
    )
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hardened_launcher",
            "exec",
            str(spec),
            "--releases",
            str(tmp_path / "releases"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (tmp_path / "state" / "launcher-id").exists():
            running = [c for c in _exec_containers(tmp_path / "state") if c["State"] == "running"]
            if running:
                return child, str(running[0]["Id"])
        time.sleep(0.2)
    child.kill()
    pytest.fail("the exec run never started its container")


def test_the_next_exec_removes_a_sigkilled_execs_container(tmp_path: Path, image: str) -> None:
    env = _setup(tmp_path, None, "leftover-token-value", image)
    child, container_id = _start_long_exec(tmp_path, env)
    labels = docker.from_env().api.inspect_container(container_id)["Config"]["Labels"]
    assert owner_alive(labels[LABEL_OWNER]) is True
    assert int(labels[LABEL_DEADLINE]) > time.time()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert owner_alive(labels[LABEL_OWNER]) is False
    assert docker.from_env().api.inspect_container(container_id)["State"]["Running"]

    # The next exec (same launcher) runs its own spec and removes the leftover first.
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        spec.read_text(encoding="utf-8").replace("sleep 300", 'echo "token=$TOKEN"'),
        encoding="utf-8",
    )
    done = _exec(tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert "removed the leftover container of run 'exec-" in done.stderr
    assert _exec_containers(tmp_path / "state") == []
    audit = "".join(p.read_text() for p in (tmp_path / "state").rglob("*.jsonl"))
    assert "owner_gone" in audit or "run.crashed" in audit


def test_a_live_execs_container_is_not_touched_by_the_next_exec(tmp_path: Path, image: str) -> None:
    env = _setup(tmp_path, None, "live-token-value", image)
    child, container_id = _start_long_exec(tmp_path, env)
    try:
        (tmp_path / "run.log").unlink(missing_ok=True)
        spec = tmp_path / "spec.yaml"
        spec.write_text(
            spec.read_text(encoding="utf-8").replace("sleep 300", "echo second"),
            encoding="utf-8",
        )
        # One audit log has one writer: the second exec on the same directories is refused
        # before it looks at any container.
        refused = _exec(tmp_path, env)
        assert refused.returncode == 75, refused.stderr
        assert "reason: audit_log_in_use" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert docker.from_env().api.inspect_container(container_id)["State"]["Running"]
        # With an audit log of its own it runs beside the first (same launcher ID) and leaves
        # the live exec's container alone.
        done = _exec(tmp_path, {**env, "HL_AUDIT_DIR": str(tmp_path / "audit-second")})
        assert done.returncode == 0, done.stderr
        assert "removed the leftover" not in done.stderr
        assert docker.from_env().api.inspect_container(container_id)["State"]["Running"]
    finally:
        child.terminate()
        child.wait(timeout=60)
    assert _exec_containers(tmp_path / "state") == []


def test_a_sigkilled_execs_run_ends_at_its_own_deadline(tmp_path: Path, image: str) -> None:
    """Nobody runs the next exec: the worker's watchdog ends the run at its time limit."""
    env = _setup(tmp_path, None, "deadline-token-value", image)
    env.update(SPACELIFT_LAUNCHER_RUN_TIMEOUT="2s", HL_RUN_STOP_GRACE="1s")
    child, container_id = _start_long_exec(tmp_path, env)
    started = time.monotonic()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    api = docker.from_env().api
    try:
        while api.inspect_container(container_id)["State"]["Running"]:
            assert time.monotonic() - started < 45, "the run outlived its time limit"
            time.sleep(0.5)
        state = api.inspect_container(container_id)["State"]
        # The worker stopped its own run (TERM → 143), 2 s + 1 s grace + 10 s margin.
        assert state["ExitCode"] == 143
        assert time.monotonic() - started < 30
    finally:
        api.remove_container(container_id, force=True)
