"""Who owns a run container, and until when: the labels that let a later launcher clean up.

Every run container carries, beside ``managed``, ``launcher-id`` and ``run-id``:

- ``io.hardened-launcher.owner``: ``<boot id>:<pid>:<start time>`` of the process that created
  it (the daemon or an ``exec``). The start time (clock ticks since boot, from
  ``/proc/<pid>/stat``) tells a live owner from a reused pid.
- ``io.hardened-launcher.deadline``: the Unix time after which no owner needs the container (its
  time limit, the stop grace and a margin have passed).

A container is *stale* when its owner ran on this host's current boot and is gone, or when its
deadline has passed. Nothing here touches Docker; :mod:`.cleanup` does.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

from hardened_launcher.ascii_text import is_digits

__all__ = [
    "LABEL_DEADLINE",
    "LABEL_OWNER",
    "is_stale",
    "owner_alive",
    "owner_token",
]

LABEL_OWNER: Final = "io.hardened-launcher.owner"
LABEL_DEADLINE: Final = "io.hardened-launcher.deadline"
_BOOT_ID: Final = Path("/proc/sys/kernel/random/boot_id")
_TOKEN_RE: Final = re.compile(r"([0-9a-f-]{1,64}):([0-9]{1,10}):([0-9]{1,20})")


def _boot_id(proc: Path) -> str:
    try:
        return (proc / "sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return "unknown"


def _start_ticks(proc: Path, pid: int) -> str | None:
    """Field 22 of ``/proc/<pid>/stat`` (after the command name, which may hold spaces)."""
    try:
        stat = (proc / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def owner_token(*, pid: int | None = None, proc: Path = Path("/proc")) -> str:
    """This process (or ``pid``) as a container owner label value."""
    pid = os.getpid() if pid is None else pid
    return f"{_boot_id(proc)}:{pid}:{_start_ticks(proc, pid) or 0}"


def owner_alive(token: str, *, proc: Path = Path("/proc")) -> bool | None:
    """Whether the owner in ``token`` still runs: None when this host cannot tell (another
    host or boot, or a malformed label)."""
    found = _TOKEN_RE.fullmatch(token)
    if found is None:
        return None
    boot, pid, ticks = found.groups()
    if boot != _boot_id(proc):
        return None
    return _start_ticks(proc, int(pid)) == ticks


#: A deadline label longer than this is not ours (epoch seconds have 10 digits until 2286).
_DEADLINE_DIGITS: Final = 20


def is_stale(labels: dict[str, str], *, now: float, proc: Path = Path("/proc")) -> bool:
    """Whether no owner can still need the container with ``labels``."""
    deadline = labels.get(LABEL_DEADLINE, "")
    if is_digits(deadline) and len(deadline) <= _DEADLINE_DIGITS and int(deadline) < now:
        return True
    alive = owner_alive(labels.get(LABEL_OWNER, ""), proc=proc)
    return alive is False
