"""Local faults of a real launcher, on real components (issue 18's drills).

Docker: the broken launcher talks to a private dockerd this test stops and restarts (never
the shared one). Expected: DRAINED and ``/readyz`` ``docker_unavailable`` while it is down, a
new run goes to a healthy peer, the interrupted run ends in a final state (never stuck), and
when Docker returns the launcher is ready again and the interrupted container is removed.

Audit:
The broken launcher's ``HL_AUDIT_DIR`` is a 4 MiB tmpfs the test mounts, fills while a run is in
its container, and frees. Expected: the launcher advertises DRAINED and ``/readyz`` says
``audit_unavailable``; the in-flight run is reported as it ended (FINISHED, exit 0); a run
submitted meanwhile goes to a healthy peer and finishes (not REFUSED); when space returns the
broken launcher is ready again without a restart and its audit log verifies.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardened_launcher.audit.keys import load_existing_signing_key
from hardened_launcher.audit.verify import verify_log
from hardened_launcher.controlplane.dispatch import RunState, WorkerState
from hardened_launcher.demo.processes import wait_until
from hardened_launcher.demo.stories import new_run_id
from hardened_launcher.executor.container_spec import LABEL_RUN_ID
from tests.e2e.conftest import EnvFactory
from tests.integration.private_dockerd import (
    PrivateDockerd,
    client_for,
    import_busybox,
    running_dockerd,
)
from tests.small_tmpfs import fill, mounted_tmpfs

pytestmark = pytest.mark.integration


@pytest.fixture
def audit_fs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "auditfs", "4M") as target:
        yield target


@pytest.fixture
def dockerd() -> Iterator[PrivateDockerd]:
    yield from running_dockerd()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _readyz(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return str(r.read().decode().strip())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode().strip())
    except OSError:
        return "unreachable"


def test_audit_disk_full_drains_requeues_to_a_peer_and_heals(
    make_env: EnvFactory, audit_fs: Path
) -> None:
    env = make_env(launchers=0)
    audit_dir = audit_fs / "audit"
    audit_dir.mkdir(mode=0o700)
    port = _free_port()
    broken = env.add_launcher(
        env={"HL_AUDIT_DIR": str(audit_dir), "HL_METRICS_ADDRESS": f"127.0.0.1:{port}"}
    )
    env.wait_for_workers(1)
    assert wait_until(lambda: _readyz(port) == "ready", timeout_seconds=30, interval=0.5)

    in_flight = new_run_id("fullaudit")
    env.submit(
        env.spec(
            in_flight, ['i=1; while [ $i -le 24 ]; do echo "line $i"; i=$((i+1)); sleep 0.5; done']
        )
    )
    env.wait_for_run(in_flight, {RunState.RUNNING}, timeout_seconds=60)
    # RUNNING is the control plane's "accepted": wait for the container itself, so the disk
    # fills after every gate passed (a gate that cannot audit refuses, by design).
    assert wait_until(lambda: bool(env.containers_of(in_flight)), timeout_seconds=60, interval=0.2)

    filler = fill(audit_fs)
    assert env.run(in_flight).state is RunState.RUNNING  # still in its container
    filled = time.monotonic()
    assert wait_until(
        lambda: _readyz(port) == "not ready: audit_unavailable", timeout_seconds=15, interval=0.2
    ), _readyz(port)
    unready_after = time.monotonic() - filled

    def broken_drained() -> bool:
        ids = {broken.launcher_id()}
        return any(
            r.worker.id in ids and r.worker.state is WorkerState.DRAINED
            for r in env.worker_records()
        )

    assert wait_until(broken_drained, timeout_seconds=30, interval=0.5)

    # A healthy peer joins; a run submitted now goes to it and finishes.
    env.add_launcher()
    env.wait_for_workers(2)
    queued = new_run_id("peer")
    env.submit(env.spec(queued, ["echo on the healthy peer"]))
    peer_run = env.wait_for_run(queued, timeout_seconds=120)
    assert peer_run.state is RunState.FINISHED, (peer_run.state, peer_run.reason, peer_run.message)
    assert peer_run.worker_id != broken.launcher_id()

    # The in-flight run is reported as it ended, although its run.finished record was lost.
    run = env.wait_for_run(in_flight, timeout_seconds=120)
    assert run.state is RunState.FINISHED, (run.state, run.reason, run.message)
    assert run.exit_code == 0

    filler.unlink()
    freed = time.monotonic()
    assert wait_until(lambda: _readyz(port) == "ready", timeout_seconds=30, interval=0.2), _readyz(
        port
    )
    ready_after = time.monotonic() - freed
    assert wait_until(lambda: not broken_drained(), timeout_seconds=30, interval=0.5)

    key = load_existing_signing_key(broken.state_dir)
    assert key is not None
    verify_log(audit_dir, key.public_key(), allow_open_tail=True)
    print(
        f"unready {unready_after:.2f}s after the disk filled; ready {ready_after:.2f}s after freed"
    )


def test_docker_outage_drains_sends_work_to_a_peer_and_cleans_up(
    make_env: EnvFactory, dockerd: PrivateDockerd, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_env(launchers=0)
    image = import_busybox(dockerd, monkeypatch)
    assert image == env.image, (image, env.image)
    port = _free_port()
    broken = env.add_launcher(
        env={"DOCKER_HOST": dockerd.url, "HL_METRICS_ADDRESS": f"127.0.0.1:{port}"}
    )
    env.wait_for_workers(1)
    assert wait_until(lambda: _readyz(port) == "ready", timeout_seconds=30, interval=0.5)

    interrupted = new_run_id("dockerdown")
    env.submit(env.spec(interrupted, ["sleep 300"]))
    env.wait_for_run(interrupted, {RunState.RUNNING}, timeout_seconds=60)

    def containers() -> list[str]:
        client = client_for(dockerd.url, 10)
        try:
            return [
                str(c.id)
                for c in client.containers.list(
                    all=True, filters={"label": f"{LABEL_RUN_ID}={interrupted}"}
                )
            ]
        finally:
            client.close()

    assert wait_until(lambda: bool(containers()), timeout_seconds=60, interval=0.2)

    dockerd.stop()
    stopped = time.monotonic()
    assert wait_until(
        lambda: _readyz(port) == "not ready: docker_unavailable", timeout_seconds=30, interval=0.2
    ), _readyz(port)
    unready_after = time.monotonic() - stopped
    ended = env.wait_for_run(interrupted, timeout_seconds=120)
    assert ended.terminal, ended  # never stuck RUNNING

    env.add_launcher()  # a healthy peer on the shared Docker
    env.wait_for_workers(2)
    queued = new_run_id("peer")
    env.submit(env.spec(queued, ["echo on the healthy peer"]))
    peer_run = env.wait_for_run(queued, timeout_seconds=120)
    assert peer_run.state is RunState.FINISHED, (peer_run.state, peer_run.reason, peer_run.message)
    assert peer_run.worker_id != broken.launcher_id()

    dockerd.start()
    returned = time.monotonic()
    assert wait_until(lambda: _readyz(port) == "ready", timeout_seconds=30, interval=0.2), _readyz(
        port
    )
    ready_after = time.monotonic() - returned

    assert wait_until(lambda: not containers(), timeout_seconds=30, interval=0.5), containers()
    removed_after = time.monotonic() - returned
    print(
        f"docker: unready {unready_after:.2f}s after stop; interrupted run {ended.state} "
        f"({ended.reason}); ready {ready_after:.2f}s and container removed {removed_after:.2f}s "
        "after restart"
    )
