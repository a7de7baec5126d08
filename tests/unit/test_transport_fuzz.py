"""The transport-message fuzz harness, replayed without atheris: seeds and random bytes."""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from hardened_launcher.transport.messages import BODY_TYPES

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
CORPUS = FUZZ_DIR / "corpus" / "transport_messages"


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "fuzz_transport_messages", FUZZ_DIR / "transport_messages.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HARNESS = _harness()
check_one_input: Callable[[bytes], None] = HARNESS.test_one_input


@pytest.mark.parametrize("path", sorted(CORPUS.iterdir()), ids=lambda p: p.name)
def test_corpus_seed(path: Path) -> None:
    check_one_input(path.read_bytes())


def test_corpus_holds_every_message_type() -> None:
    assert set(BODY_TYPES) <= {p.name for p in CORPUS.iterdir()}


def test_mutated_seeds_keep_the_properties() -> None:
    rng = random.Random(6)  # noqa: S311 - reproducible mutations, not secrets
    seeds = [p.read_bytes() for p in sorted(CORPUS.iterdir())]
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        check_one_input(bytes(data))


def test_harness_catches_an_echo() -> None:
    assert HARNESS._echoes_input(b"zzzzzzzzzzzzzzzzzzzz", "... zzzzzzzzzzzzzzzzzzzz ...")
