"""The secret files / outputs fuzz harness, replayed without atheris: seeds and mutations."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
SEEDS = sorted((FUZZ_DIR / "corpus" / "secret_files").iterdir())


def _harness() -> Callable[[bytes], None]:
    spec = importlib.util.spec_from_file_location("fuzz_secret_files", FUZZ_DIR / "secret_files.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: Callable[[bytes], None] = module.test_one_input
    return function


one_input = _harness()


def test_seed_corpus_covers_every_format() -> None:
    names = {seed.name for seed in SEEDS}
    assert {"yaml", "json", "dotenv", "tfvars", "ini", "output_frames", "yaml_alias"} <= names


@pytest.mark.parametrize("seed", SEEDS, ids=lambda path: path.name)
def test_fuzz_harness_replays_the_seed_corpus(seed: Path) -> None:
    one_input(seed.read_bytes())


@settings(deadline=None)
@given(
    seed=st.sampled_from(SEEDS),
    cut=st.integers(min_value=0, max_value=200),
    insert=st.binary(max_size=16),
)
def test_fuzz_harness_on_mutated_seeds(seed: Path, cut: int, insert: bytes) -> None:
    data = seed.read_bytes()
    cut = min(cut, len(data))
    one_input(data[:cut] + insert + data[cut:])
