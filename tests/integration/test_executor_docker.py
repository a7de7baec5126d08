"""Gate 5 against a real dockerd: secrets only over stdin, redacted output, limits, clean-up."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import pytest

from hardened_launcher import __version__
from hardened_launcher.audit import MemoryAuditLog
from hardened_launcher.executor.cleanup import remove_leftover_containers
from hardened_launcher.executor.container_spec import LABEL_LAUNCHER_ID
from hardened_launcher.executor.errors import ImageMissingError
from hardened_launcher.executor.logsink import FileLogSink
from hardened_launcher.executor.runner import RunResult, StopReason, docker_client
from hardened_launcher.executor.runspec import run_spec_from_mapping
from hardened_launcher.pipeline import run_pipeline
from hardened_launcher.redaction import Redactor
from hardened_launcher.settings import Settings
from tests.conftest import integration_required
from tests.integration.executor_support import Release, runner_for, settings_for, signed_release
from tests.integration.images import busybox_image

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def image() -> str:
    return busybox_image()


@pytest.fixture
def release(tmp_path: Path) -> Release:
    return signed_release(tmp_path)


def spec_of(image: str, *phases: tuple[str, list[str]], **extra: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "run_id": f"run-{secrets.token_hex(4)}",
        "run_type": "wo",
        "image": image,
        "phases": [{"name": n, "commands": c} for n, c in phases],
        **extra,
    }


def execute(
    document: dict[str, Any],
    settings: Settings,
    release: Release,
    log: Path,
    *,
    on_started: Any = None,
    audit: MemoryAuditLog | None = None,
    redactor: Redactor | None = None,
) -> RunResult:
    return run_pipeline(
        run_spec_from_mapping(document),
        settings=settings,
        launcher_id=f"test-{secrets.token_hex(4)}",
        worker_version=__version__,
        binaries=release.gate,
        policy=None,
        runner=runner_for(settings),
        redactor=redactor or Redactor(),
        sink=FileLogSink(log),
        audit=audit or MemoryAuditLog(),
        on_started=on_started,
    )


def containers_of(run_id: str) -> list[Any]:
    client = docker.from_env()
    return list(
        client.api.containers(all=True, filters={"label": f"io.hardened-launcher.run-id={run_id}"})
    )


def grep_tree(needles: list[str], *roots: Path) -> list[str]:
    """Files under ``roots`` holding any needle (grep -F, binary files included)."""
    args = ["grep", "-rlaF", "--devices=skip", "--directories=recurse"]
    for needle in needles:
        args += ["-e", needle]
    found = subprocess.run(
        [*args, *(str(r) for r in roots if r.exists())],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return found.stdout.splitlines()


def test_secret_only_travels_over_stdin_and_never_reaches_disk(
    image: str, release: Release, tmp_path: Path
) -> None:
    canary = f"CANARY-{secrets.token_hex(12)}"
    file_canary = f"FILECANARY-{secrets.token_hex(12)}"
    encoded = base64.b64encode(canary.encode()).decode()
    needles = [canary, encoded, file_canary]
    document = spec_of(
        image,
        (
            "main",
            [
                'echo "token=$TOKEN"',
                'printf %s "$TOKEN" | base64',
                "cat creds/secret.txt",
                "sleep 1",
            ],
        ),
        env={"PLAIN": "visible"},
        secret_env={"TOKEN": canary},
        files=[
            {"path": "creds/secret.txt", "content": file_canary, "secret": True, "mode": "0600"}
        ],
    )
    settings = settings_for(tmp_path)
    seen_running: list[str] = []

    def inspect_while_running(container_id: str) -> None:
        shown = subprocess.run(
            ["docker", "inspect", container_id], capture_output=True, text=True, check=True
        ).stdout
        for needle in needles:
            assert needle not in shown
        labels_env = docker.from_env().api.inspect_container(container_id)["Config"]
        assert labels_env["Cmd"] in (None, [])
        assert not any("TOKEN" in item for item in labels_env["Env"] or [])
        seen_running.append(container_id)

    log = tmp_path / "run.log"
    result = execute(document, settings, release, log, on_started=inspect_while_running)
    assert result.succeeded, log.read_text()
    assert seen_running == [result.container_id]
    text = log.read_text()
    assert "token=***" in text
    for needle in needles:
        assert needle not in text
    assert containers_of(result.run_id) == []
    data_root = Path(
        subprocess.run(
            ["docker", "info", "--format", "{{.DockerRootDir}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # The search itself works: a planted copy is found.
    planted = tmp_path / "planted"
    planted.write_text(f"x{encoded}x", encoding="utf-8")
    assert grep_tree(needles, tmp_path) == [str(planted)]
    planted.unlink()
    assert grep_tree(needles, data_root, Path("/tmp"), tmp_path, settings.state_dir) == []


def require_runsc() -> None:
    runtimes = docker.from_env().info().get("Runtimes") or {}
    if "runsc" not in runtimes:
        message = "dockerd has no runsc runtime (scripts/lib/system.sh registers it)"
        if integration_required():
            pytest.fail(message)
        pytest.skip(message)


def test_runsc_runtime_runs_the_same_hardened_run(
    image: str, release: Release, tmp_path: Path
) -> None:
    """SPACELIFT_WORKER_RUNTIME=runsc: the run executes under gVisor, secrets still masked."""
    require_runsc()
    canary = f"CANARY-{secrets.token_hex(12)}"
    document = spec_of(
        image,
        ("main", ["dmesg | head -n 1", 'echo "token=$TOKEN"', "id -u"]),
        secret_env={"TOKEN": canary},
    )
    log = tmp_path / "run.log"
    result = execute(document, settings_for(tmp_path, worker_runtime="runsc"), release, log)
    text = log.read_text()
    assert result.succeeded, text
    assert "gVisor" in text
    assert "token=***" in text
    assert canary not in text
    assert "\n1983\n" in text


def test_runsc_run_cannot_fork_past_its_pids_limit(
    image: str, release: Release, tmp_path: Path
) -> None:
    """Under gVisor the run's pids limit holds inside the sandbox; the sandbox itself survives."""
    require_runsc()
    document = spec_of(
        image,
        ("probe", ["dmesg | head -n 1"]),
        (
            "forkbomb",
            ["n=0; while [ $n -lt 100 ]; do sleep 30 & n=$((n+1)); done; echo spawned-all"],
        ),
    )
    log = tmp_path / "run.log"
    settings = settings_for(tmp_path, worker_runtime="runsc", run_pids_limit=32)
    result = execute(document, settings, release, log)
    text = log.read_text()
    assert "gVisor" in text
    assert "spawned-all" not in text
    assert "can't fork" in text or "Resource temporarily unavailable" in text
    # The worker reported the phase's end: the fork failed inside the sandbox (EAGAIN), the
    # sandbox did not die of its host pids cgroup.
    assert "::hl:: phase forkbomb end status=" in text
    assert "::hl:: run end status=" in text
    assert result.exit_code not in (0, None)
    assert containers_of(result.run_id) == []


def test_exit_status_phase_markers_env_and_files(
    image: str, release: Release, tmp_path: Path
) -> None:
    document = spec_of(
        image,
        ("before_init", ['printf "%s|" "$GREETING"', "cat notes/a.txt"]),
        ("main", ["echo to-stderr >&2", "exit 7", "echo never"]),
        ("after", ["echo never-after"]),
        env={"GREETING": "hello world\n"},
        files=[{"path": "notes/a.txt", "content": "file-content\n"}],
    )
    log = tmp_path / "run.log"
    result = execute(document, settings_for(tmp_path), release, log)
    text = log.read_text()
    assert result.exit_code == 7
    assert result.stopped_by is StopReason.EXITED
    assert result.reason == "run_failed"
    assert "::hl:: phase before_init start" in text
    assert "hello world\n|file-content" in text
    assert "to-stderr" in text
    assert "::hl:: phase main end status=7" in text
    assert "never" not in text


def test_logs_timeout_stops_a_silent_run(image: str, release: Release, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, launcher_logs_timeout=timedelta(seconds=1.5))
    audit = MemoryAuditLog()
    started = time.monotonic()
    result = execute(
        spec_of(image, ("main", ["echo start", "sleep 60"])),
        settings,
        release,
        tmp_path / "run.log",
        audit=audit,
    )
    assert result.stopped_by is StopReason.LOGS_TIMEOUT
    assert result.reason == "run_logs_timeout"
    assert time.monotonic() - started < 15
    assert containers_of(result.run_id) == []
    finished = [e for e in audit.events if e.type == "run.finished"]
    assert finished[0].reason == "run_logs_timeout"


def test_run_timeout_stops_a_chatty_run(image: str, release: Release, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, launcher_run_timeout=timedelta(seconds=2))
    result = execute(
        spec_of(image, ("main", ["while true; do echo tick; sleep 0.2; done"])),
        settings,
        release,
        tmp_path / "run.log",
    )
    assert result.stopped_by is StopReason.RUN_TIMEOUT
    assert result.reason == "run_timeout"
    assert 2 <= result.duration_seconds < 15
    assert "tick" in (tmp_path / "run.log").read_text()
    assert containers_of(result.run_id) == []


def test_a_run_cannot_write_its_root_gain_capabilities_or_fork_past_its_pids_limit(
    image: str, release: Release, tmp_path: Path
) -> None:
    document = spec_of(
        image,
        (
            "probe",
            [
                "touch /rootfs-write && echo ROOT-WRITABLE || echo root-read-only",
                "grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status",
                "id -u",
                "echo ok > /workspace/w && echo workspace-writable",
            ],
        ),
        (
            "forkbomb",
            [
                "n=0; while [ $n -lt 100 ]; do sleep 30 & n=$((n+1)); done; echo spawned-all",
            ],
        ),
    )
    log = tmp_path / "run.log"
    result = execute(document, settings_for(tmp_path, run_pids_limit=32), release, log)
    text = log.read_text()
    assert "root-read-only" in text
    assert "ROOT-WRITABLE" not in text
    for cap in ("CapEff", "CapPrm", "CapBnd"):
        assert f"{cap}:\t0000000000000000" in text
    assert "NoNewPrivs:\t1" in text
    assert "\n1983\n" in text
    assert "workspace-writable" in text
    assert "spawned-all" not in text
    assert "can't fork" in text or "Resource temporarily unavailable" in text
    assert result.exit_code != 0
    assert containers_of(result.run_id) == []


def test_missing_image_is_reported_and_nothing_is_left(release: Release, tmp_path: Path) -> None:
    missing = f"hl-no-such-image:{secrets.token_hex(4)}"
    with pytest.raises(ImageMissingError) as info:
        execute(
            spec_of(missing, ("main", ["true"])), settings_for(tmp_path), release, tmp_path / "l"
        )
    assert info.value.reason == "image_missing"


def test_refused_mount_fails_start_up_with_a_clear_message(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("version: 1\n", encoding="utf-8")
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "HL_STATE_DIR": str(tmp_path / "state"),
        "HL_CACHE_DIR": str(tmp_path / "cache"),
        "SPACELIFT_WORKER_EXTRA_MOUNTS": "/var/run/docker.sock:/var/run/docker.sock",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hardened_launcher",
            "-v",
            "exec",
            str(spec),
            "--releases",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert done.returncode == 78, done.stderr
    assert "SPACELIFT_WORKER_EXTRA_MOUNTS mount /var/run/docker.sock" in done.stderr
    assert "refused" in done.stderr
    assert "reason: mount_refused" in done.stderr
    assert "Traceback" not in done.stderr


CRASHING_LAUNCHER = textwrap.dedent(
    """
    import hashlib, sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from hardened_launcher.binaries import VerifiedBinary
    from hardened_launcher.executor.container_spec import build_container_spec
    from hardened_launcher.executor.entrypoint import worker_script_path
    from hardened_launcher.executor.instructions import encode_instructions
    from hardened_launcher.executor.logsink import FileLogSink
    from hardened_launcher.executor.runspec import run_spec_from_mapping
    from hardened_launcher.redaction import Redactor
    from tests.integration.executor_support import runner_for, settings_for

    tmp, image, launcher_id = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    data = worker_script_path().read_bytes()
    # Verification is covered elsewhere; this process only needs to die mid-run.
    worker = VerifiedBinary(
        name="hl-worker", path=worker_script_path(), sha256=hashlib.sha256(data).hexdigest(),
        size=len(data), signer_fingerprint="test", signing_key_fingerprint="test",
        signature_created=datetime.now(UTC), sums_sha256="0" * 64,
    )
    spec = run_spec_from_mapping({"version": 1, "run_id": "crashing-run", "run_type": "wo",
        "image": image, "phases": [{"name": "main", "commands": ["sleep 120"]}]})
    settings = settings_for(tmp)
    container = build_container_spec(spec, settings, launcher_id=launcher_id, worker=worker)
    def started(cid):
        print(cid, flush=True)
    runner_for(settings).run(container, encode_instructions(spec), redactor=Redactor(),
        sink=FileLogSink(tmp / "crash.log"), on_started=started)
    """
)


def test_a_sigkilled_launchers_container_is_removed_by_the_next_start(
    image: str, tmp_path: Path
) -> None:
    launcher_id = f"crash-{secrets.token_hex(4)}"
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_LAUNCHER, str(tmp_path), image, launcher_id],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        container_id = child.stdout.readline().strip()
        assert container_id, "the crashing launcher did not start its run"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    client = docker.from_env()
    left = client.api.containers(all=True, filters={"label": f"{LABEL_LAUNCHER_ID}={launcher_id}"})
    assert [c["Id"] for c in left] == [container_id]

    audit = MemoryAuditLog()
    crashed = remove_leftover_containers(
        docker_client(), launcher_id=launcher_id, audit=audit, stop_grace_seconds=1
    )
    assert [(c.run_id, c.container_id) for c in crashed] == [("crashing-run", container_id)]
    assert (
        client.api.containers(all=True, filters={"label": f"{LABEL_LAUNCHER_ID}={launcher_id}"})
        == []
    )
    (event,) = audit.events
    assert (event.type, event.run_id, event.reason) == (
        "run.crashed",
        "crashing-run",
        "launcher_restarted",
    )


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    yield
    client = docker.from_env()
    for item in client.api.containers(
        all=True, filters={"label": "io.hardened-launcher.managed=true"}
    ):
        labels = item.get("Labels") or {}
        if str(labels.get(LABEL_LAUNCHER_ID, "")).startswith(("test-", "crash-")):
            client.api.remove_container(item["Id"], force=True)
