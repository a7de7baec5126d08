"""serve's doorbell (issue 18 item 7): a run submitted by another process is assigned when the
submitter rings, not on serve's periodic look at the store; hostile rings and paths are
ignored or refused.

No timing goals here (those are benchmarks/bench_pool.py's): the serve test only checks that
the assignment comes far sooner than the fallback period it configures.
"""

from __future__ import annotations

import itertools
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardened_launcher.controlplane import doorbell as bell
from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.controlplane.doorbell import Doorbell, doorbell_path, ring
from hardened_launcher.controlplane.serve import Coordinator, ServeConfig, serve
from hardened_launcher.controlplane.store import Store
from hardened_launcher.transport.inbox import Wakeable, WakeableQueue
from hardened_launcher.transport.memory import MemoryTransport
from tests.unit.test_controlplane_serve import POLICY, Rig
from tests.unit.test_controlplane_support import add_pool, open_store

REPO = Path(__file__).resolve().parents[2]
#: Far longer than anything here should take: only a missed ring waits this out.
PATIENCE = 10.0


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    return directory


@pytest.fixture
def rung(state_dir: Path) -> Iterator[tuple[Doorbell, threading.Event]]:
    event = threading.Event()
    door = Doorbell.open(state_dir, event.set)
    assert door is not None
    yield door, event
    door.close()


# -- the wakeable receive queue ---------------------------------------------------------------


def test_a_wake_ends_a_blocked_get_and_takes_no_slot() -> None:
    inbox: WakeableQueue[int] = WakeableQueue(maxsize=1)
    ended: list[str] = []

    def wait() -> None:
        try:
            inbox.get(timeout=60)
            ended.append("item")
        except queue.Empty:
            ended.append("woken")

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    inbox.wake()
    waiter.join(PATIENCE)
    assert ended == ["woken"]
    inbox.wake()
    inbox.put_nowait(1)  # the pending wake holds no slot of the bounded queue
    assert inbox.get(timeout=0) == 1  # a message comes before a pending wake...
    with pytest.raises(queue.Empty):
        inbox.get(timeout=60)  # ...which then ends the next wait at once


def test_wakes_before_a_get_are_one() -> None:
    inbox: WakeableQueue[int] = WakeableQueue()
    for _ in range(5):
        inbox.wake()
    with pytest.raises(queue.Empty):
        inbox.get(timeout=60)
    began = time.monotonic()
    with pytest.raises(queue.Empty):
        inbox.get(timeout=0.05)  # no wake left: a plain timeout
    assert time.monotonic() - began >= 0.04


def test_the_control_plane_transports_can_be_woken() -> None:
    from hardened_launcher.transport.client import MqttTransport  # noqa: PLC0415
    from hardened_launcher.transport.poll_server import PollServer  # noqa: PLC0415

    assert hasattr(PollServer, "wake")
    assert hasattr(MqttTransport, "wake")
    assert issubclass(MemoryTransport, Wakeable)


# -- ring and listen ------------------------------------------------------------------------


def test_a_ring_wakes_the_listener_and_the_socket_is_private(
    state_dir: Path, rung: tuple[Doorbell, threading.Event]
) -> None:
    door, event = rung
    path = doorbell_path(state_dir)
    assert path.lstat().st_mode & 0o777 == 0o600
    assert ring(state_dir)
    assert event.wait(PATIENCE)
    assert door.rings == 1
    door.close()
    assert not path.exists()
    assert not ring(state_dir)  # nobody listens: ignored


def test_no_socket_and_a_dead_socket_are_ignored_by_the_ringer(state_dir: Path) -> None:
    assert not ring(state_dir)
    assert not ring(state_dir / "missing")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(doorbell_path(state_dir)))
    dead.close()  # the file stays, nobody listens (serve was killed)
    assert not ring(state_dir)


def test_a_stale_socket_of_a_killed_serve_is_replaced(state_dir: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(doorbell_path(state_dir)))
    stale.close()
    event = threading.Event()
    door = Doorbell.open(state_dir, event.set)
    assert door is not None
    try:
        assert ring(state_dir)
        assert event.wait(PATIENCE)
    finally:
        door.close()


def test_close_leaves_a_socket_another_serve_bound_since(state_dir: Path) -> None:
    first = Doorbell.open(state_dir, lambda: None)
    assert first is not None
    second = Doorbell.open(state_dir, lambda: None)  # replaces the first one's socket
    assert second is not None
    first.close()
    assert doorbell_path(state_dir).exists()
    second.close()
    assert not doorbell_path(state_dir).exists()


@pytest.mark.parametrize("kind", ["file", "directory", "symlink_to_socket", "dangling_symlink"])
def test_something_else_at_the_path_is_neither_used_nor_removed(
    state_dir: Path, tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = doorbell_path(state_dir)
    elsewhere = None
    if kind == "file":
        path.write_bytes(b"not a socket")
    elif kind == "directory":
        path.mkdir()
    else:
        target = tmp_path / "elsewhere.sock"
        if kind == "symlink_to_socket":  # a live socket somewhere else must not be rung
            elsewhere = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            elsewhere.bind(str(target))
            elsewhere.setblocking(False)
        path.symlink_to(target)
    try:
        assert Doorbell.open(state_dir, lambda: None) is None
        assert "doorbell.unavailable reason=path_not_our_socket" in caplog.text
        assert not ring(state_dir)
        assert path.is_symlink() or path.exists()  # left alone
        if kind == "file":
            assert path.read_bytes() == b"not a socket"
        if elsewhere is not None:
            with pytest.raises(BlockingIOError):
                elsewhere.recv(16)  # nothing went through the link
    finally:
        if elsewhere is not None:
            elsewhere.close()


def test_another_user_s_socket_is_neither_rung_nor_replaced(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    door = Doorbell.open(state_dir, lambda: None)
    assert door is not None
    try:
        monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 4242)
        assert not ring(state_dir)
        assert Doorbell.open(state_dir, lambda: None) is None
        assert doorbell_path(state_dir).exists()
    finally:
        monkeypatch.undo()
        door.close()


def test_an_unbindable_path_leaves_serve_without_a_doorbell(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)  # longer than a Unix socket path may be
    deep.mkdir(mode=0o700)
    assert Doorbell.open(deep, lambda: None) is None
    assert not ring(deep)


def test_an_oversized_datagram_is_one_ring_and_read_no_further(
    state_dir: Path, rung: tuple[Doorbell, threading.Event]
) -> None:
    _door, event = rung
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as hostile:
        hostile.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
        hostile.sendto(b"\xff" * 60_000, str(doorbell_path(state_dir)))
    assert event.wait(PATIENCE)
    event.clear()
    assert ring(state_dir)  # still listening
    assert event.wait(PATIENCE)


def test_a_flood_is_bounded_drained_and_never_blocks_a_ringer(state_dir: Path) -> None:
    wakes: list[float] = []
    door = Doorbell.open(state_dir, lambda: wakes.append(time.monotonic()))
    assert door is not None
    try:
        began = time.monotonic()
        sent = 0
        while time.monotonic() - began < 0.5:
            sent += ring(state_dir)  # never blocks: a full queue is a False
        assert sent > 0
        deadline = time.monotonic() + PATIENCE
        while door.rings == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # what was queued is drained
        elapsed = time.monotonic() - began
        assert 1 <= len(wakes) <= elapsed / bell.MIN_WAKE_INTERVAL_SECONDS + 2
        gaps = [b - a for a, b in itertools.pairwise(wakes)]
        assert all(gap >= bell.MIN_WAKE_INTERVAL_SECONDS * 0.9 for gap in gaps)
        before = door.rings
        assert ring(state_dir)  # after the flood it still answers
        deadline = time.monotonic() + PATIENCE
        while door.rings == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert door.rings > before
    finally:
        door.close()


def test_a_failing_wake_does_not_stop_the_doorbell(state_dir: Path) -> None:
    calls: list[int] = []

    def wake() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")

    door = Doorbell.open(state_dir, wake)
    assert door is not None
    try:
        for expected in (1, 2):
            assert ring(state_dir)
            deadline = time.monotonic() + PATIENCE
            while len(calls) < expected and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(calls) == expected
    finally:
        door.close()


# -- serve ------------------------------------------------------------------------------------

_SUBMITTER = """
import sys
from pathlib import Path
from hardened_launcher.controlplane.doorbell import ring
from hardened_launcher.controlplane.store import Store
from tests.unit.test_controlplane_support import add_run
state = Path(sys.argv[1])
with Store(state / "store.sqlite3") as store:
    add_run(store, "run-1")
ring(state)
"""


def test_a_submit_from_another_process_wakes_serve_before_its_fallback_look(
    tmp_path: Path, state_dir: Path
) -> None:
    store: Store
    with open_store(state_dir) as store:
        add_pool(store)
        rig = Rig(store)
        fallback = 60.0
        rig.coordinator = Coordinator(
            store,
            rig.cp,
            # One tick at the start; the periodic look would come after a minute.
            config=ServeConfig(policy=POLICY, tick_seconds=3600, wake_seconds=fallback),
            clock=rig.clock,
        )
        worker = rig.worker("w-1")
        worker.register()
        rig.coordinator.receive_all(timeout_seconds=0)
        stop = threading.Event()
        outcome: list[tuple[RunState, str | None, float]] = []

        def submit_and_watch() -> None:
            try:
                deadline = time.monotonic() + PATIENCE
                while not doorbell_path(state_dir).exists():  # serve is up and waiting
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                time.sleep(0.1)
                began = time.monotonic()
                subprocess.run(
                    [sys.executable, "-c", _SUBMITTER, str(state_dir)],
                    cwd=REPO,
                    check=True,
                    timeout=60,
                )
                with Store(state_dir / "store.sqlite3") as watcher:
                    deadline = time.monotonic() + PATIENCE
                    while time.monotonic() < deadline:
                        run = watcher.get_run("run-1")
                        if run.state is not RunState.QUEUED:
                            outcome.append((run.state, run.worker_id, time.monotonic() - began))
                            return
                        time.sleep(0.01)
            finally:
                stop.set()
                rig.cp.wake()

        watcher = threading.Thread(target=submit_and_watch)
        watcher.start()
        serve(rig.coordinator, stop=stop, doorbell_dir=state_dir)
        watcher.join(timeout=PATIENCE)
    assert len(outcome) == 1
    state, worker_id, elapsed = outcome[0]
    assert (state, worker_id) == (RunState.ASSIGNED, "w-1")
    assert elapsed < fallback / 4
    assert not doorbell_path(state_dir).exists()  # serve removed its socket
