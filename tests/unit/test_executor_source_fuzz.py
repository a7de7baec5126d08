"""The source archive fuzz harness, replayed without atheris: seeds and mutations."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.fuzz_support import harness, seeds

SEEDS = seeds("source_archive")
one_input = harness("source_archive")


def test_seed_corpus_covers_plain_compressed_and_hostile_archives() -> None:
    names = {seed.name for seed in SEEDS}
    assert {"plain", "links", "gzip", "xz", "hostile_escape", "hostile_hardlink"} <= names


@pytest.mark.parametrize("seed", SEEDS, ids=lambda path: path.name)
def test_fuzz_harness_replays_the_seed_corpus(seed: Path) -> None:
    one_input(seed.read_bytes())


@settings(deadline=None, max_examples=150)
@given(
    seed=st.sampled_from(SEEDS),
    cut=st.integers(min_value=0, max_value=4096),
    insert=st.binary(max_size=16),
)
def test_fuzz_harness_on_mutated_seeds(seed: Path, cut: int, insert: bytes) -> None:
    data = seed.read_bytes()
    cut = min(cut, len(data))
    one_input(data[:cut] + insert + data[cut + len(insert) :])
