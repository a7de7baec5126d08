"""The envelope fuzz harness, replayed without atheris: seeds and mutations of them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus" / "envelope"


def load_harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_envelope", ROOT / "fuzz" / "envelope.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HARNESS = load_harness()
SEEDS = sorted(CORPUS.glob("*.bin"))
VALID = (CORPUS / "opened-p256-small.bin").read_bytes()


def test_the_corpus_has_valid_and_refused_seeds() -> None:
    names = [seed.name for seed in SEEDS]
    assert sum(name.startswith("opened-") for name in names) >= 2
    assert sum(name.startswith("envelope_") for name in names) >= 5


@pytest.mark.parametrize("seed", SEEDS, ids=lambda path: path.stem)
def test_each_seed_produces_the_outcome_in_its_name(seed: Path) -> None:
    expected = seed.stem.split("-", 1)[0]
    assert HARNESS.check(seed.read_bytes()) == expected


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_are_refused(data: bytes) -> None:
    assert HARNESS.check(data).startswith("envelope_")


@settings(max_examples=300, deadline=None)
@given(
    position=st.integers(0, len(VALID) - 1),
    operation=st.sampled_from(["replace", "insert", "delete"]),
    value=st.integers(0, 255),
)
def test_mutations_of_a_valid_envelope_are_refused(
    position: int, operation: str, value: int
) -> None:
    data = bytearray(VALID)
    if operation == "replace":
        if data[position] == value:
            value ^= 0xFF
        data[position] = value
    elif operation == "insert":
        data.insert(position, value)
    else:
        del data[position]
    assert HARNESS.check(bytes(data)).startswith("envelope_")


def test_test_one_input_needs_no_atheris() -> None:
    assert HARNESS.test_one_input(VALID) is None
    assert "atheris" not in vars(HARNESS)
