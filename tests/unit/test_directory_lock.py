"""One writer per directory: the audit log, the launcher's state and ``controlplane serve``.

Regression: two launchers on one audit directory forked the hash chain (the second sealed the
first one's live segment and started its own; the first kept appending), and the log then
failed verification with ``audit_sequence_broken``, exactly as a tampered log does.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hardened_launcher.audit.chain import AUDIT_LOG_IN_USE, ChainedAuditLog
from hardened_launcher.audit.reader import list_segments
from hardened_launcher.audit.verify import verify_log
from hardened_launcher.cli import main
from hardened_launcher.directory_lock import DirectoryInUseError, DirectoryLock
from hardened_launcher.errors import EXIT_RETRYABLE, InfrastructureError
from tests.unit.audit_support import KEY, event

ROOT = Path(__file__).resolve().parents[2]


def _lock(path: Path) -> DirectoryLock:
    return DirectoryLock.acquire(path, what="the test state", reason="test_in_use", hint="stop it")


def test_a_second_holder_is_refused_with_one_clear_error(tmp_path: Path) -> None:
    first = _lock(tmp_path)
    with pytest.raises(DirectoryInUseError) as info:
        _lock(tmp_path)
    err = info.value
    assert err.exit_code == EXIT_RETRYABLE
    assert err.reason == "test_in_use"
    assert str(tmp_path) in err.message
    assert "in use by another process" in err.message
    assert err.one_line().endswith("Stop it")
    first.release()
    first.release()  # twice is harmless
    again = _lock(tmp_path)
    assert again.held
    again.release()
    assert not again.held


def test_every_path_to_one_directory_meets_the_same_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "state"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    (real / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    held = _lock(real)
    spellings = [
        tmp_path / "link",
        Path("state"),
        Path("./state/"),
        real / "sub" / "..",
        Path(str(real) + "/."),
        Path(str(real).replace("/", "//")),
    ]
    for other in spellings:
        with pytest.raises(DirectoryInUseError):
            _lock(other)
    held.release()


def _file(path: Path) -> Path:
    path.write_text("x")
    return path


def _loop(tmp_path: Path) -> Path:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    return tmp_path / "a"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: p / "missing", id="missing"),
        pytest.param(lambda p: _file(p / "file"), id="regular-file"),
        pytest.param(lambda p: _file(p / "file") / "below", id="below-a-file"),
        pytest.param(lambda p: p / ("x" * 5000), id="name-too-long"),
        pytest.param(_loop, id="symlink-loop"),
    ],
)
def test_a_path_that_cannot_be_locked_is_refused_not_crashed(tmp_path: Path, make: object) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(DirectoryInUseError) as info:
        _lock(path)
    assert info.value.message.startswith("cannot lock the test state in ")
    assert info.value.exit_code == EXIT_RETRYABLE


_HOLDER = textwrap.dedent(
    """
    import subprocess, sys, time
    from pathlib import Path
    from hardened_launcher.directory_lock import DirectoryLock
    lock = DirectoryLock.acquire(Path(sys.argv[1]), what="x", reason="x", hint="x")
    child = subprocess.Popen(["sleep", "30"])  # an executed child: must not inherit the lock
    print(child.pid, flush=True)
    time.sleep(30)
    """
)


def test_a_killed_holder_leaves_no_stale_lock_and_its_children_never_held_it(
    tmp_path: Path,
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, cwd=ROOT
    )
    try:
        assert holder.stdout is not None
        sleeper = int(holder.stdout.readline())
        with pytest.raises(DirectoryInUseError):
            _lock(tmp_path)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        # The holder's executed child still runs; the lock went with the holder.
        os.kill(sleeper, 0)
        lock = _lock(tmp_path)
        lock.release()
        os.kill(sleeper, signal.SIGKILL)
    finally:
        holder.kill()
        holder.wait(10)


_AUDIT_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hardened_launcher.audit.chain import ChainedAuditLog
    from tests.unit.audit_support import KEY, event
    log = ChainedAuditLog(Path(sys.argv[1]), signing_key=KEY)
    print("open", flush=True)
    for i in range(200):
        log.record(event(i))
        time.sleep(0.002)
    sys.stdin.readline()
    log.close()
    """
)


def test_a_second_audit_writer_is_refused_and_the_log_still_verifies(tmp_path: Path) -> None:
    audit = tmp_path / "audit"
    writer = subprocess.Popen(
        [sys.executable, "-c", _AUDIT_WRITER, str(audit)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdin is not None
        assert writer.stdout.readline() == b"open\n"
        for _ in range(3):  # while the first one keeps writing
            before = _snapshot(audit)
            with pytest.raises(DirectoryInUseError) as info:
                ChainedAuditLog(audit, signing_key=KEY)
            assert info.value.reason == AUDIT_LOG_IN_USE
            assert "HL_AUDIT_DIR" in info.value.hint
            after = _snapshot(audit)
            # The refused writer sealed nothing and started no segment.
            assert set(after) == set(before)
            for name, data in before.items():
                assert after[name].startswith(data)
            time.sleep(0.05)
        writer.stdin.write(b"\n")
        writer.stdin.flush()
        assert writer.wait(30) == 0
    finally:
        writer.kill()
        writer.wait(10)
    report = verify_log(audit, KEY.public_key())
    assert report.sealed
    assert report.unclean_stops == 0
    with ChainedAuditLog(audit, signing_key=KEY) as log:  # free again once the first closed
        log.record(event(1))
    assert verify_log(audit, KEY.public_key()).sealed


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for _, name in list_segments(directory)}


def test_a_log_that_fails_to_open_releases_its_lock(tmp_path: Path) -> None:
    (tmp_path / "audit-00000000000000000000.jsonl").write_bytes(b'{"v":1}\n')  # damaged
    with pytest.raises(Exception) as info:
        ChainedAuditLog(tmp_path, signing_key=KEY)
    assert not isinstance(info.value, DirectoryInUseError)
    lock = _lock(tmp_path)  # nothing kept it
    lock.release()


def test_controlplane_serve_refuses_a_state_directory_another_serve_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "cp"
    assert main(["controlplane", "init", "--dir", str(state), "--broker-port", "18883"]) == 0
    capsys.readouterr()
    held = _lock(state)
    try:
        code = main(["controlplane", "serve", "--dir", str(state)])
    finally:
        held.release()
    err = capsys.readouterr().err
    assert code == EXIT_RETRYABLE
    assert "the control plane state in" in err
    assert "in use by another process" in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert "Traceback" not in err


def test_a_log_whose_first_record_cannot_be_written_releases_its_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(_fd: int, _data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ChainedAuditLog, "_write_all", staticmethod(full))
    with pytest.raises(InfrastructureError) as info:
        ChainedAuditLog(tmp_path, signing_key=KEY)
    assert info.value.reason == "audit_unavailable"
    monkeypatch.undo()
    with ChainedAuditLog(tmp_path, signing_key=KEY) as log:  # free at once, not at GC
        log.record(event(1))
