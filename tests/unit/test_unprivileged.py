"""The helper that runs permission tests without root really drops root (and reports failures)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unprivileged import unprivileged


@unprivileged
def test_the_body_runs_without_root_in_a_directory_it_owns(tmp_path: Path) -> None:
    assert os.geteuid() != 0
    assert os.getegid() != 0
    assert os.getgroups() == [] or 0 not in os.getgroups()
    assert tmp_path.stat().st_uid == os.geteuid()
    secret = tmp_path / "mode-000"
    secret.write_text("x")
    secret.chmod(0)
    with pytest.raises(PermissionError):
        secret.read_text()


def test_a_failing_body_fails_the_test(tmp_path: Path) -> None:
    def body(tmp_path: Path) -> None:
        assert tmp_path.exists()
        raise AssertionError("CANARY-body-failed")

    with pytest.raises(pytest.fail.Exception, match="CANARY-body-failed"):
        unprivileged(body)(tmp_path=tmp_path)
