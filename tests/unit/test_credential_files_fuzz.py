"""The credential-file fuzz harness, replayed without atheris: the seed corpus and random bytes."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
SEEDS = sorted((FUZZ_DIR / "corpus" / "credential_file").iterdir())


def _harness() -> Callable[[bytes], None]:
    spec = importlib.util.spec_from_file_location(
        "fuzz_credential_file", FUZZ_DIR / "credential_file.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: Callable[[bytes], None] = module.test_one_input
    return function


one_input = _harness()


def test_seed_corpus_covers_the_forms() -> None:
    names = {seed.name for seed in SEEDS}
    assert {"token_base64", "pem_key", "empty", "binary", "not_base64"} <= names


@pytest.mark.parametrize("seed", SEEDS, ids=lambda path: path.name)
def test_fuzz_harness_replays_the_seed_corpus(seed: Path) -> None:
    one_input(seed.read_bytes())


@settings(max_examples=60, deadline=None)
@given(
    seed=st.sampled_from(SEEDS),
    cut=st.integers(min_value=0, max_value=80),
    insert=st.binary(max_size=8),
)
def test_fuzz_harness_on_mutated_seeds(seed: Path, cut: int, insert: bytes) -> None:
    data = seed.read_bytes()
    cut = min(cut, len(data))
    one_input(data[:cut] + insert + data[cut:])


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=512))
def test_fuzz_harness_on_random_bytes(data: bytes) -> None:
    one_input(data)
