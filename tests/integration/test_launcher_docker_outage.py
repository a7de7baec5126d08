"""Docker outage drill on a private dockerd this test starts, stops and restarts (issue 18).

Never the shared daemon: the test runs its own ``dockerd`` on a socket and data root under
/tmp (vfs storage, no bridge, no iptables), imports the busybox test image into it, and points
the launcher's probes and clean-up at it. While it is down the launcher advertises DRAINED,
``/readyz`` says ``docker_unavailable`` and an ``assign`` that still arrives is refused with a
reason the control plane re-queues (not FAILED); when it returns the launcher is ready again
and the container the outage interrupted is removed (retried until Docker lets it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import pytest

from hardened_launcher.controlplane import dispatch
from hardened_launcher.controlplane.dispatch import Run, RunState
from hardened_launcher.executor.cleanup import remove_leftover_containers
from hardened_launcher.executor.container_spec import (
    LABEL_LAUNCHER_ID,
    LABEL_MANAGED,
    LABEL_RUN_ID,
)
from hardened_launcher.launcher.daemon import Daemon
from hardened_launcher.launcher.machine import Connected, LauncherMachine, MachineConfig
from hardened_launcher.launcher.probes import LocalProbes, ProbeLoop
from hardened_launcher.transport.memory import MemoryBroker
from hardened_launcher.transport.messages import Assign, Refuse
from hardened_launcher.transport.topics import WorkerAddress
from tests.integration.private_dockerd import (
    PrivateDockerd,
    client_for,
    engine_for,
    import_busybox,
    running_dockerd,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def dockerd() -> Iterator[PrivateDockerd]:
    yield from running_dockerd()


LAUNCHER = "hl-outage-test"


def _run_container(client: docker.DockerClient, image: str, run_id: str) -> str:
    container = client.containers.run(
        image,
        ["sleep", "1000"],
        detach=True,
        network_mode="none",
        labels={LABEL_MANAGED: "true", LABEL_LAUNCHER_ID: LAUNCHER, LABEL_RUN_ID: run_id},
    )
    return str(container.id)


def _assigned_run() -> Run:
    return Run(
        id="run-outage-1",
        pool_id="pool-a",
        state=RunState.ASSIGNED,
        key_id="k",
        envelope_expires_at=time.time() + 3600,
        created_at=0.0,
        updated_at=0.0,
        worker_id="w1",
        lease_id="lease-1",
        lease_expires_at=time.time() + 30,
        attempts=1,
    )


def test_docker_down_drains_requeues_and_recovers(dockerd: PrivateDockerd, tmp_path: Path) -> None:
    client = engine_for(dockerd.url, 5)
    broker = MemoryBroker()
    cp = broker.control_plane()
    cp.start()
    transport = broker.worker("pool-a", "w1")
    transport.start()
    machine = LauncherMachine(MachineConfig(worker_id="w1", pool_id="pool-a", version="1"))
    daemon = Daemon(machine=machine, transport=transport, run_function=None)  # type: ignore[arg-type]
    probes = ProbeLoop(
        LocalProbes(state_dir=tmp_path, docker_ping=client.ping).faults, post=daemon.post
    )
    try:
        daemon._apply(machine.handle(_connected()))  # register without the loop
        probes.probe_once()
        daemon.step(0.0)
        assert daemon.readiness().ready

        dockerd.stop()
        down = time.monotonic()
        probes.probe_once()
        detected = time.monotonic() - down
        daemon.step(0.0)
        assert (daemon.readiness().ready, daemon.readiness().reason) == (
            False,
            "docker_unavailable",
        )
        assert machine.heartbeat().state == "DRAINED"

        # A lease that raced the heartbeat: refused with a reason dispatch re-queues.
        run = _assigned_run()
        assign = Assign(
            run_id=run.id,
            lease_id="lease-1",
            lease_expires_at=datetime.now(UTC) + timedelta(seconds=30),
            envelope_b64="c2VhbGVk",
        )
        cp.send(assign, peer=WorkerAddress(pool_id="pool-a", worker_id="w1"))
        refusal = None
        deadline = time.monotonic() + 10
        while refusal is None and time.monotonic() < deadline:
            daemon.step(0.05)
            got = cp.receive(timeout_seconds=0.05)
            if got is not None and isinstance(got.body, Refuse):
                refusal = got.body
        assert refusal is not None
        assert refusal.reason == "docker_unavailable"
        outcome = dispatch.refuse(
            run,
            worker_id="w1",
            lease_id=refusal.lease_id,
            reason=refusal.reason,
            message=refusal.message,
            now=time.time(),
        )
        assert isinstance(outcome, dispatch.Transition)
        assert outcome.after.state is RunState.QUEUED  # back to the queue, not FAILED

        dockerd.start()
        up = time.monotonic()
        probes.probe_once()
        daemon.step(0.0)
        ready_after = time.monotonic() - up
        assert daemon.readiness().ready
        assert machine.heartbeat().state == "IDLE"
        print(f"docker outage detected in {detected:.3f}s; ready {ready_after:.3f}s after ping")
    finally:
        transport.close()
        cp.close()


def test_the_interrupted_container_is_removed_when_docker_returns(
    dockerd: PrivateDockerd, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    image = import_busybox(dockerd, monkeypatch)
    client = client_for(dockerd.url, 10)
    interrupted = _run_container(client, image, "run-interrupted")
    still_running = _run_container(client, image, "run-still-mine")
    client.close()
    posted: list[object] = []
    calls: list[str] = []

    def cleanup() -> None:
        calls.append("try")
        remove_leftover_containers(
            engine_for(dockerd.url, 10),
            launcher_id=LAUNCHER,
            stop_grace_seconds=1,
            keep_run_ids=frozenset({"run-still-mine"}),
        )

    def ping() -> object:
        fresh = client_for(dockerd.url, 5)
        try:
            return fresh.ping()
        finally:
            fresh.close()

    loop = ProbeLoop(
        LocalProbes(state_dir=tmp_path, docker_ping=ping).faults,
        post=posted.append,
        cleanup=cleanup,
    )
    loop.probe_once()
    assert calls == []  # nothing owed yet
    dockerd.stop()  # the outage interrupts the run
    loop.probe_once()
    assert loop.cleanup_owed
    assert calls == []  # never tried while Docker is down
    dockerd.start()
    returned = time.monotonic()
    loop.probe_once()
    removed_after = time.monotonic() - returned
    assert calls == ["try"]
    assert not _owed(loop)
    check = client_for(dockerd.url, 10)
    try:
        ids = {c.id for c in check.containers.list(all=True)}
        assert interrupted not in ids
        assert still_running in ids  # a run this launcher still runs is never touched
        check.containers.get(still_running).remove(force=True)
    finally:
        check.close()
    print(f"interrupted container removed {removed_after:.3f}s after Docker returned")


def _owed(loop: ProbeLoop) -> bool:
    return loop.cleanup_owed  # a call, so mypy does not keep an earlier narrowing


def _connected() -> Connected:
    return Connected(now=datetime.now(UTC), mono=time.monotonic())
