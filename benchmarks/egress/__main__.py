"""``python benchmarks/egress``: run the egress benchmark (see bench.py)."""

from __future__ import annotations

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).with_name("bench.py")), run_name="__main__")
