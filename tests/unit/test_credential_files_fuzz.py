"""The credential-file fuzz harness, replayed without atheris: the seed corpus and random bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.fuzz_support import harness, seeds

SEEDS = seeds("credential_file")
one_input = harness("credential_file")


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
