"""Which process owns an egress session, and whether it is still alive.

Every run network and firewall rule the launcher makes carries an *owner token*:
``<boot id>/<pid namespace inode>/<pid>/<process start time>``. A later launcher (``start`` or
``exec``) removes what a dead owner left behind, and never touches what a live one holds:

- another boot of the machine: the owner is dead (networks and rules survived a reboot);
- the same boot and PID namespace: dead unless ``/proc/<pid>`` exists with the same start
  time (a recycled PID has another start time) and is not a zombie;
- another PID namespace (a launcher in another container sharing dockerd): not judged, left
  alone, since its PIDs mean nothing here.
"""

from __future__ import annotations

import enum
import os
import re
from functools import cache
from pathlib import Path
from typing import Final

__all__ = ["OwnerState", "current_owner", "owner_state"]

_TOKEN_RE: Final = re.compile(r"([0-9a-f-]{36})/([0-9]{1,20})/([0-9]{1,10})/([0-9]{1,20})")
_PROC: Final = Path("/proc")


class OwnerState(enum.Enum):
    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"  # another PID namespace, or not a token of ours


def _boot_id() -> str:
    return (_PROC / "sys/kernel/random/boot_id").read_text(encoding="ascii").strip()


def _pid_namespace(pid: int | str = "self") -> str:
    link = str((_PROC / str(pid) / "ns/pid").readlink())
    match = re.fullmatch(r"pid:\[([0-9]+)\]", link)
    if match is None:
        raise OSError(f"unexpected pid namespace link {link!r}")
    return match.group(1)


def _state_and_start(pid: int | str) -> tuple[str, str]:
    stat = (_PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], fields[19]  # fields 3 and 22: state, start time in ticks since boot


def _start_time(pid: int | str) -> str:
    return _state_and_start(pid)[1]


@cache
def _current(pid: int) -> str:
    return f"{_boot_id()}/{_pid_namespace()}/{pid}/{_start_time(pid)}"


def current_owner() -> str:
    """This process's owner token (at most 90 characters; fits an iptables comment)."""
    return _current(os.getpid())


def owner_state(token: str) -> OwnerState:
    """Whether the process a token names is alive (see the module doc)."""
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        return OwnerState.UNKNOWN
    boot, pidns, pid, start = match.groups()
    try:
        if boot != _boot_id():
            return OwnerState.DEAD
        if pidns != _pid_namespace():
            return OwnerState.UNKNOWN
    except OSError:
        return OwnerState.UNKNOWN
    try:
        state, started = _state_and_start(pid)
    except (OSError, ValueError, IndexError):
        return OwnerState.DEAD
    # A zombie (killed, not yet reaped) or dead task holds nothing any more.
    return OwnerState.ALIVE if started == start and state not in ("Z", "X") else OwnerState.DEAD
