"""Replays the policy input fuzz corpus (fuzz/corpus/policy_input) through the harness."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((ROOT / "fuzz" / "corpus" / "policy_input").iterdir())


def _harness() -> object:
    spec = importlib.util.spec_from_file_location(
        "fuzz_policy_input", ROOT / "fuzz" / "policy_input.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


HARNESS = _harness()


@pytest.mark.parametrize("seed", CORPUS, ids=[p.name for p in CORPUS])
def test_seed(seed: Path) -> None:
    HARNESS.test_one_input(seed.read_bytes())  # type: ignore[attr-defined]


def test_corpus_is_not_empty() -> None:
    assert len(CORPUS) >= 5
