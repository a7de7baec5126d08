"""hardened_launcher.private_files: 0600 files created exclusively, replaced or published."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from hardened_launcher.private_files import create_exclusive, publish_exclusive, replace_atomically

Writer = Callable[..., None]
ALL_WRITERS = [create_exclusive, replace_atomically, publish_exclusive]
EXCLUSIVE_WRITERS = [create_exclusive, publish_exclusive]
DATA = bytes(range(256)) * 300 + b"\x00end"  # larger than one pipe/page, with NULs


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize("write", ALL_WRITERS)
def test_mode_is_0600_whatever_the_umask(tmp_path: Path, write: Writer) -> None:
    old = os.umask(0o277)  # would make a plain os.open(…, 0o600) read-only
    try:
        write(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "f") == 0o600


@pytest.mark.parametrize("write", ALL_WRITERS)
def test_explicit_mode(tmp_path: Path, write: Writer) -> None:
    write(tmp_path / "f", b"x", mode=0o400)
    assert _mode(tmp_path / "f") == 0o400


@pytest.mark.parametrize("write", ALL_WRITERS)
@pytest.mark.parametrize("data", [DATA, bytearray(DATA), memoryview(DATA), b""])
def test_data_is_exact_and_no_temporary_is_left(
    tmp_path: Path, write: Writer, data: bytes | bytearray | memoryview
) -> None:
    write(tmp_path / "f", data)
    assert (tmp_path / "f").read_bytes() == bytes(data)
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


@pytest.mark.parametrize("write", EXCLUSIVE_WRITERS)
def test_exclusive_refuses_an_existing_file(tmp_path: Path, write: Writer) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"first")
    with pytest.raises(FileExistsError):
        write(path, b"second")
    assert path.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


@pytest.mark.parametrize("write", EXCLUSIVE_WRITERS)
@pytest.mark.parametrize("dangling", [True, False])
def test_exclusive_refuses_a_symlink(tmp_path: Path, write: Writer, dangling: bool) -> None:
    target = tmp_path / "target"
    if not dangling:
        target.write_bytes(b"victim")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(FileExistsError):
        write(link, b"attacker")
    assert link.is_symlink()
    if dangling:
        assert not target.exists()
    else:
        assert target.read_bytes() == b"victim"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["link"] + ["target"] * (not dangling)
    )


def test_replace_overwrites_and_keeps_0600(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"old")
    path.chmod(0o644)
    replace_atomically(path, b"new")
    assert path.read_bytes() == b"new"
    assert _mode(path) == 0o600


def test_replace_replaces_a_symlink_instead_of_following_it(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"victim")
    link = tmp_path / "link"
    link.symlink_to(target)
    replace_atomically(link, b"new")
    assert not link.is_symlink()
    assert link.read_bytes() == b"new"
    assert target.read_bytes() == b"victim"


def test_replace_failure_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        replace_atomically(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_replace_failure_of_the_rename_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "d"
    path.mkdir()
    (path / "inside").write_bytes(b"")  # os.replace onto a non-empty directory fails
    with pytest.raises(OSError):
        replace_atomically(path, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


@pytest.mark.parametrize("write", EXCLUSIVE_WRITERS)
def test_exclusive_write_failure_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: Writer
) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write(tmp_path / "f", b"data")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def dribble(fd: int, data: bytes) -> int:
        return real_write(fd, bytes(data[:7]))

    monkeypatch.setattr(os, "write", dribble)
    for write, name in zip(ALL_WRITERS, "abc", strict=True):
        write(tmp_path / name, DATA[:1000])
    monkeypatch.undo()
    for name in "abc":
        assert (tmp_path / name).read_bytes() == DATA[:1000]


@pytest.mark.parametrize("write", ALL_WRITERS)
def test_missing_directory_is_an_oserror(tmp_path: Path, write: Writer) -> None:
    with pytest.raises(FileNotFoundError):
        write(tmp_path / "missing" / "f", b"x")
