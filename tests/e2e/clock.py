"""A process tree's wall clock, stepped at run time: the LD_PRELOAD shim ``clockshim.c``.

:func:`build_clock_shim` compiles the shim with the system C compiler into ``directory``;
:class:`SteppedClock` holds the offset file and the environment a child needs
(``LD_PRELOAD``, ``CLOCKSHIM_OFFSET_FILE``). ``step(seconds)`` sets the offset from real time,
seen by the child within 50 ms. Only the wall clock moves; monotonic clocks do not.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import integration_required

SOURCE = Path(__file__).with_name("clockshim.c")


def build_clock_shim(directory: Path) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        message = "a C compiler (cc) is needed to build the clock shim (Debian package gcc)"
        if integration_required():
            pytest.fail(message)
        pytest.skip(message)
    library = directory / "clockshim.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(SOURCE), "-ldl"],
        check=True,
        timeout=120,
        capture_output=True,
    )
    return library


@dataclass
class SteppedClock:
    library: Path
    offset_file: Path

    @classmethod
    def create(cls, directory: Path) -> SteppedClock:
        clock = cls(library=build_clock_shim(directory), offset_file=directory / "offset")
        clock.step(0)
        return clock

    def environ(self) -> dict[str, str]:
        return {"LD_PRELOAD": str(self.library), "CLOCKSHIM_OFFSET_FILE": str(self.offset_file)}

    def step(self, seconds: int) -> None:
        """Set the child's wall clock to real time plus ``seconds`` (atomic rename)."""
        scratch = self.offset_file.with_suffix(".new")
        scratch.write_text(f"{int(seconds)}\n")
        scratch.replace(self.offset_file)
