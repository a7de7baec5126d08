"""The workspace executes what a run builds and stays hardened, under runc and under gVisor.

Real Docker, real gVisor (``runsc``): a script written to ``/workspace``, ``/tmp`` or ``$HOME``
runs; ``HOME`` is its own tmpfs apart from the project; a setuid bit (the run's own or the
image's) gives nothing; a device node either cannot be made (runc: no ``CAP_MKNOD``) or, under
gVisor (which ignores ``nodev`` and does not check ``CAP_MKNOD``), resolves to no host device.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from hardened_launcher.audit import MemoryAuditLog
from hardened_launcher.executor.container_spec import HOME_DIR
from hardened_launcher.executor.errors import LimitRefusedError
from hardened_launcher.executor.runner import StopReason
from tests.integration.executor_support import Release, settings_for, signed_release
from tests.integration.images import busybox_image, setuid_image
from tests.integration.test_executor_docker import (
    containers_of,
    execute,
    require_runsc,
    spec_of,
)

pytestmark = pytest.mark.integration

#: Host devices a run must never reach: memory, kernel log, disks, loop control, KVM, a console,
#: FUSE, TUN and the raw input layer. (major, minor, kind)
HOST_DEVICES = (
    ("mem", "c", 1, 1),
    ("kmem", "c", 1, 2),
    ("port", "c", 1, 4),
    ("kmsg", "c", 1, 11),
    ("tty1", "c", 4, 1),
    ("loopctl", "c", 10, 237),
    ("kvm", "c", 10, 232),
    ("input", "c", 13, 64),
    ("sda", "b", 8, 0),
    ("loop0", "b", 7, 0),
    ("nvme", "b", 259, 0),
)


@pytest.fixture(scope="module")
def image() -> str:
    return setuid_image()


@pytest.fixture
def release(tmp_path: Path) -> Release:
    return signed_release(tmp_path)


def probe_commands() -> list[str]:
    commands = [
        "printf '#!/bin/sh\\necho workspace-script-ran\\n' > tool.sh && chmod 755 tool.sh",
        "./tool.sh",
        "printf '#!/bin/sh\\necho tmp-script-ran\\n' > /tmp/t.sh && chmod 755 /tmp/t.sh",
        "/tmp/t.sh",
        'mkdir -p "$HOME/bin" && cp tool.sh "$HOME/bin/home-tool" && "$HOME/bin/home-tool"',
        'echo "home=$HOME pwd=$(pwd)"',
        'touch "$HOME/.dotfile" && ls -a /workspace | tr "\\n" " " && echo',
        # The run's own setuid file: owned by the run's user, so nothing to gain; the image's
        # setuid-root binary: no-new-privileges ignores the bit.
        "cp /bin/busybox ./id && chmod 4755 ./id && echo own-euid=$(./id -u)",
        "echo image-euid=$(/opt/suid/id -u) image-egid=$(/opt/suid/id -g)",
    ]
    for name, kind, major, minor in HOST_DEVICES:
        commands.append(
            f"if mknod dev-{name} {kind} {major} {minor} 2>/dev/null; then "
            f"if head -c 1 dev-{name} >/dev/null 2>&1; then echo DEVICE-OPENED-{name}; "
            f"else echo device-unusable-{name}; fi; else echo mknod-refused-{name}; fi"
        )
    commands.append(
        "grep -E ' (/workspace|/tmp|/home/spacelift) ' /proc/mounts | sort || echo no-mounts"
    )
    return commands


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_workspace_executes_and_stays_hardened(
    runtime: str, image: str, release: Release, tmp_path: Path
) -> None:
    if runtime == "runsc":
        require_runsc()
    log = tmp_path / "run.log"
    result = execute(
        spec_of(image, ("probe", probe_commands())),
        settings_for(tmp_path, worker_runtime=runtime),
        release,
        log,
    )
    text = log.read_text()
    assert result.succeeded, text
    for marker in ("workspace-script-ran", "tmp-script-ran"):
        assert marker in text
    assert text.count("workspace-script-ran") == 2  # also the copy run from $HOME/bin
    assert f"home={HOME_DIR} pwd=/workspace" in text
    listing = next(line for line in text.splitlines() if line.startswith(". .."))
    assert ".dotfile" not in listing  # HOME is apart from the project
    assert "own-euid=1983" in text
    assert "image-euid=1983 image-egid=1983" in text
    assert "DEVICE-OPENED" not in text
    for name, *_ in HOST_DEVICES:
        if runtime == "runc":
            # No CAP_MKNOD (and nodev): the node is never made.
            assert f"mknod-refused-{name}" in text
        else:
            # gVisor: the node may be made, but it resolves only to the Sentry's own devices.
            assert f"mknod-refused-{name}" in text or f"device-unusable-{name}" in text
    if runtime == "runc":
        mounts = [line for line in text.splitlines() if line.startswith("tmpfs /")]
        assert sorted(m.split()[1] for m in mounts) == ["/home/spacelift", "/tmp", "/workspace"]
        for line in mounts:
            options = line.split()[3].split(",")
            assert {"rw", "nosuid", "nodev"} <= set(options), line
            assert "noexec" not in options, line
    assert containers_of(result.run_id) == []


FORK_BOMBS = {
    "binary-tree": "f(){ f | f & }; f",
    "chain": "g(){ g & g; }; g",
    "sleepers": "while :; do sleep 60 & done",
}


@pytest.mark.parametrize(
    ("bomb", "pids"),
    [("binary-tree", 16), ("binary-tree", 1024), ("chain", 64), ("sleepers", 1024)],
)
def test_a_process_storm_under_gvisor_ends_the_run_not_the_sandbox(
    bomb: str, pids: int, release: Release, tmp_path: Path
) -> None:
    """The run's task limit holds inside the Sentry; the sandbox's host cgroup is never hit, so
    the worker reports the run's end (no Go runtime crash: exit 2 and no run end)."""
    require_runsc()
    image = busybox_image()
    log = tmp_path / "run.log"
    settings = settings_for(
        tmp_path,
        worker_runtime="runsc",
        run_pids_limit=pids,
        run_memory_bytes=2 * 1024**3,  # room for the Sentry's own memory under the storm
        launcher_run_timeout=timedelta(seconds=90),
        launcher_logs_timeout=timedelta(seconds=60),
    )
    document = spec_of(
        image,
        ("storm", [FORK_BOMBS[bomb], "sleep 15", "echo after-storm"]),
        ("after", ["echo never-if-the-storm-failed-the-run"]),
    )
    result = execute(document, settings, release, log)
    text = log.read_text()
    about = f"{result.reason} exit={result.exit_code} {text[-300:]!r}"
    # The worker itself reported the end: the run's status, or its own error when even it could
    # not fork (exit 125). A sandbox crash is neither (exit 2, no last line: runtime_failed).
    assert result.worker_ended, about
    assert result.stopped_by is StopReason.EXITED, about
    assert result.reason in ("run_failed", "run_succeeded"), about
    if "::hl:: run end status=" in text:
        status = int(text.rsplit("::hl:: run end status=", 1)[1].split()[0])
        assert result.exit_code == status
    else:
        assert "::hl:: error " in text, about
        assert result.exit_code == 125
    assert containers_of(result.run_id) == []


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
@pytest.mark.parametrize(
    "hog",
    [
        "head -c 200m /dev/zero > /workspace/fill",  # tmpfs pages count against the limit
        "head -c 200m /dev/zero | tail -c 150m > /dev/null",  # a process's own memory
    ],
)
def test_an_oom_kill_is_reported_as_its_own_reason(
    runtime: str, hog: str, release: Release, tmp_path: Path
) -> None:
    if runtime == "runsc":
        require_runsc()
    settings = settings_for(
        tmp_path,
        worker_runtime=runtime,
        run_memory_bytes=256 * 1024**2,
        run_workspace_bytes=512 * 1024**2,
        run_tmp_bytes=512 * 1024**2,
    )
    document = spec_of(
        busybox_image(),
        ("hog", ["echo before", hog, "echo after"]),
        limits={"memory_bytes": 64 * 1024**2},
    )
    log = tmp_path / "run.log"
    audit = MemoryAuditLog()
    result = execute(document, settings, release, log, audit=audit)
    assert not result.succeeded
    assert "echo after" not in log.read_text()
    (finished,) = [e for e in audit.events if e.type == "run.finished"]
    assert containers_of(result.run_id) == []
    if runtime == "runsc" and "/workspace" in hog and not result.oom_killed:
        # Known gap (docs/executor.md): under gVisor, tmpfs pages live in the Sentry; when the
        # cgroup's OOM killer takes the whole sandbox Docker does not always set OOMKilled
        # (seen under load), so the run ends as the runtime's failure, never as a success.
        assert (result.reason, result.exit_code) == ("runtime_failed", 137)
        assert finished.reason == "runtime_failed"
        return
    assert result.oom_killed, log.read_text()[-1000:]
    assert result.reason == "run_oom"
    assert finished.reason == "run_oom"


def test_a_spec_time_limit_below_the_launchers_stops_the_run(
    release: Release, tmp_path: Path
) -> None:
    document = spec_of(
        busybox_image(), ("main", ["echo start", "sleep 60"]), limits={"time_seconds": 2}
    )
    log = tmp_path / "run.log"
    result = execute(document, settings_for(tmp_path), release, log)
    assert result.stopped_by is StopReason.RUN_TIMEOUT
    assert 2 <= result.duration_seconds < 15
    assert containers_of(result.run_id) == []


@pytest.mark.parametrize(
    "limits",
    [
        {"memory_bytes": 128 * 1024**2 + 1},
        {"pids": 65},
        {"cpus": 64},
        {"time_seconds": 31},
    ],
)
def test_a_spec_asking_more_than_allowed_is_refused_before_any_container(
    limits: dict[str, int], release: Release, tmp_path: Path
) -> None:
    audit = MemoryAuditLog()
    document = spec_of(busybox_image(), ("main", ["echo never"]), limits=limits)
    with pytest.raises(LimitRefusedError) as info:
        execute(document, settings_for(tmp_path), release, tmp_path / "l", audit=audit)
    field = next(iter(limits))
    assert f"limits.{field} = " in str(info.value)
    # Refused by the launcher's own rules at the policy gate, before anything is decrypted.
    refused = [(e.type, e.gate, e.reason) for e in audit.events if e.type == "run.refused"]
    assert refused == [("run.refused", "policy", "limits_refused")]
    types = [e.type for e in audit.events]
    assert "envelope.skipped" not in types
    assert "run.started" not in types
    assert containers_of(document["run_id"]) == []
