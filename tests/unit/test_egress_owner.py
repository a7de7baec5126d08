"""Owner tokens: who made an egress network or rule, and whether that process still lives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardened_launcher.egress.owner import OwnerState, current_owner, owner_state

linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


@linux_only
def test_this_process_is_alive_and_its_token_fits_a_firewall_comment() -> None:
    token = current_owner()
    assert owner_state(token) is OwnerState.ALIVE
    assert len(f"hl-egress:{token}") <= 256
    boot, _pidns, pid, _start = token.split("/")
    assert pid == str(os.getpid())
    assert boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()


@linux_only
def test_another_boot_means_dead() -> None:
    _boot, pidns, pid, start = current_owner().split("/")
    assert owner_state(f"{uuid.uuid4()}/{pidns}/{pid}/{start}") is OwnerState.DEAD


@linux_only
def test_a_recycled_pid_or_a_gone_process_is_dead() -> None:
    boot, pidns, pid, start = current_owner().split("/")
    assert owner_state(f"{boot}/{pidns}/{pid}/{int(start) + 1}") is OwnerState.DEAD
    assert owner_state(f"{boot}/{pidns}/4194304/{start}") is OwnerState.DEAD


@linux_only
def test_a_killed_unreaped_process_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        boot, pidns, _pid, _start = current_owner().split("/")
        stat = Path(f"/proc/{child.pid}/stat").read_text()
        start = stat[stat.rindex(")") + 2 :].split()[19]
        token = f"{boot}/{pidns}/{child.pid}/{start}"
        assert owner_state(token) is OwnerState.ALIVE
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while owner_state(token) is OwnerState.ALIVE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert owner_state(token) is OwnerState.DEAD  # a zombie holds nothing
    finally:
        child.kill()
        child.wait()


@linux_only
def test_another_pid_namespace_is_not_judged() -> None:
    boot, pidns, pid, start = current_owner().split("/")
    other = str(int(pidns) + 1)
    assert owner_state(f"{boot}/{other}/{pid}/{start}") is OwnerState.UNKNOWN


@given(st.text(max_size=200))
def test_anything_that_is_not_a_token_is_unknown_never_dead(text: str) -> None:
    state = owner_state(text)
    if state is not OwnerState.UNKNOWN:
        assert text.count("/") == 3  # only a well-formed token is ever judged
