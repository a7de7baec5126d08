"""The bounded-documents fuzz harness, replayed without atheris: seed corpus, mutations, text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.fuzz_support import harness, seeds

SEEDS = seeds("documents")
one_input = harness("documents")


def test_seed_corpus_covers_every_rule() -> None:
    names = {seed.name for seed in SEEDS}
    assert {"alias", "merge_key", "deep_json", "deep_yaml_flow", "deep_yaml_block"} <= names
    assert {"duplicate", "odd_keys", "brackets_in_string", "python_tag"} <= names


@pytest.mark.parametrize("seed", SEEDS, ids=lambda path: path.name)
def test_fuzz_harness_replays_the_seed_corpus(seed: Path) -> None:
    one_input(seed.read_bytes())


@settings(max_examples=300, deadline=None)
@given(
    seed=st.sampled_from(SEEDS),
    cut=st.integers(min_value=0, max_value=120),
    insert=st.sampled_from([b"[", b"]", b"{", b"&a ", b"*a", b"\n  ", b": ", b'"', b"- ", b"\\"]),
)
def test_fuzz_harness_on_mutated_seeds(seed: Path, cut: int, insert: bytes) -> None:
    data = seed.read_bytes()
    one_input(data[:cut] + insert + data[cut:])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='[]{}":,-&*!\n ab1\\', max_size=200))
def test_fuzz_harness_on_structural_text(text: str) -> None:
    one_input(text.encode())
