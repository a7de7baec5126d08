"""Load a fuzz harness from ``fuzz/`` (without atheris) and its seed corpus, for replay tests."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"


def seeds(corpus: str) -> list[Path]:
    """The seed files of ``fuzz/corpus/<corpus>``, in name order."""
    return sorted((FUZZ_DIR / "corpus" / corpus).iterdir())


def harness(name: str) -> Callable[[bytes], None]:
    """``test_one_input`` of ``fuzz/<name>.py``."""
    spec = importlib.util.spec_from_file_location(f"fuzz_{name}", FUZZ_DIR / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: Callable[[bytes], None] = module.test_one_input
    return function
