"""sd_notify: the datagrams systemd receives, and READY only after every start-up check."""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hardened_launcher import sd_notify
from hardened_launcher.cli import start
from tests.unit.test_launcher_start import (  # the start command's fixtures
    FAST,
    FakeDocker,
    credentials,
    environment,
)

__all__ = ["credentials", "environment"]  # pytest finds the imported fixtures by name


@pytest.fixture(autouse=True)
def _fresh_address() -> Iterator[None]:
    sd_notify._reset_for_tests()
    yield
    sd_notify._reset_for_tests()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.0)
    try:
        yield path, sock
    finally:
        sock.close()


def _received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode("utf-8"))
        except BlockingIOError:
            return messages


def test_ready_and_stopping_reach_a_path_socket(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    env = {"NOTIFY_SOCKET": path, "OTHER": "x"}
    assert sd_notify.ready("running", environ=env)
    assert sd_notify.stopping("draining", environ=env)
    assert _received(sock) == ["READY=1\nSTATUS=running", "STOPPING=1\nSTATUS=draining"]
    # Read once, then gone: nothing the launcher starts inherits the socket.
    assert env == {"OTHER": "x"}


def test_abstract_socket_addresses_work() -> None:
    name = f"hl-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(1.0)
        assert sd_notify.ready("up", environ={"NOTIFY_SOCKET": f"@{name}"})
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_without_systemd_nothing_is_sent() -> None:
    assert not sd_notify.ready("x", environ={})
    assert not sd_notify.stopping("x", environ={})


@pytest.mark.parametrize(
    "address",
    ["relative/socket", "vsock:2:1234", "@", "/" + "a" * 200, "/nonexistent/dir/notify"],
)
def test_unusable_addresses_fail_quietly(address: str) -> None:
    assert not sd_notify.ready("x", environ={"NOTIFY_SOCKET": address})


@pytest.mark.parametrize(
    "status",
    ["x\nREADY=1", "x\rMAINPID=1", "\x1b[31mred", "y" * 1000, "tab\there\x00nul"],
)
def test_status_cannot_inject_fields_and_is_bounded(
    listener: tuple[str, socket.socket], status: str
) -> None:
    path, sock = listener
    assert sd_notify.stopping(status, environ={"NOTIFY_SOCKET": path})
    (message,) = _received(sock)
    lines = message.split("\n")
    assert lines[0] == "STOPPING=1"
    assert len(lines) == 2
    assert lines[1].startswith("STATUS=")
    assert len(lines[1]) <= len("STATUS=") + sd_notify.MAX_STATUS_CHARS
    assert "\x1b" not in message


def test_a_failed_start_up_never_says_ready(
    environment: dict[str, str],
    listener: tuple[str, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, sock = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("HL_RELEASE_DIR")
    with pytest.raises(Exception, match="HL_RELEASE_DIR"):
        start.run(argparse.Namespace(), connect_retry=FAST, docker_factory=FakeDocker)
    assert not any("READY=1" in m for m in _received(sock))


class _Transport:
    def close(self, **_: Any) -> None:
        return None


def test_ready_is_sent_after_the_checks_and_before_the_loop(
    environment: dict[str, str],
    listener: tuple[str, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, sock = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    seen_when_loop_started: list[list[str]] = []

    class _Daemon:
        def __init__(self, **_: Any) -> None:
            return None

        def run(self) -> int:
            seen_when_loop_started.append(_received(sock))
            return 0

        def terminate(self) -> None:
            return None

        def join_runs(self, _timeout: float) -> None:
            return None

        def adopt_log_sinks(self, _sinks: object) -> None:
            return None

        def request_log_urls(self, *_: object) -> None:
            return None

        def post(self, _event: object) -> None:  # the probe loop's events
            return None

    monkeypatch.setattr(start, "_connect", lambda *_, **__: _Transport())
    monkeypatch.setattr(start, "Daemon", _Daemon)
    assert start.run(argparse.Namespace(), connect_retry=FAST, docker_factory=FakeDocker) == 0
    (before_loop,) = seen_when_loop_started
    assert len(before_loop) == 1
    assert before_loop[0].startswith("READY=1\nSTATUS=running: pool ")
    after = _received(sock)
    assert after[-1].startswith("STOPPING=1\n")
    assert "NOTIFY_SOCKET" not in os.environ
