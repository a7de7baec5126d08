"""The Docker stream fuzz harness, replayed without atheris: its seeds and random inputs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.unit.fuzz_support import harness, seeds

check_one_input = harness("docker_stream")


@pytest.mark.parametrize("path", seeds("docker_stream"), ids=lambda p: p.name)
def test_corpus_seed(path: Path) -> None:
    check_one_input(path.read_bytes())


def test_random_streams() -> None:
    rng = random.Random(20261202)  # noqa: S311 - reproducible test inputs, not secrets
    for _ in range(300):
        frames = b""
        for _ in range(rng.randint(0, 6)):
            payload = rng.randbytes(rng.randint(0, 40))
            stream = rng.choice([1, 2, 1, 2, 0, 3, 7])
            frames += bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload
        if rng.random() < 0.3 and frames:
            at = rng.randrange(len(frames))
            frames = frames[:at] + bytes([rng.randrange(256)]) + frames[at + 1 :]
        check_one_input(bytes([rng.randrange(256)]) + frames)
