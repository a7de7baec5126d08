"""The reference worker program (``hl-worker.sh``), shipped as package data.

It is a POSIX sh script run by busybox inside the run container; the launcher never runs it
itself. It reaches a container only after gate 2 verified it against a signed SHA256SUMS file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

WORKER_SCRIPT_NAME = "hl-worker.sh"


def worker_script_path() -> Path:
    """Where the shipped worker script is (inside the installed package)."""
    return Path(str(resources.files(__name__) / WORKER_SCRIPT_NAME))
