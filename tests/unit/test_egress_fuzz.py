"""The egress request fuzz harness, replayed without atheris: the seed corpus and random bytes."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
SEEDS = sorted((FUZZ_DIR / "corpus" / "egress_request").iterdir())


def _harness() -> Callable[[bytes], None]:
    spec = importlib.util.spec_from_file_location("fuzz_egress", FUZZ_DIR / "egress_request.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    harness: Callable[[bytes], None] = module.test_one_input
    return harness


HARNESS = _harness()


@pytest.mark.parametrize("seed", SEEDS, ids=[p.name for p in SEEDS])
def test_seed_corpus(seed: Path) -> None:
    HARNESS(seed.read_bytes())


@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    HARNESS(data)


@given(
    st.sampled_from([b"GET http://", b"CONNECT ", b"POST http://"]),
    st.text(alphabet="abc.-:[]0x719f@%", max_size=40).map(str.encode),
    st.sampled_from([b"/ HTTP/1.1\r\n\r\n", b" HTTP/1.1\r\n\r\n", b"/x HTTP/1.0\r\nA: b\r\n\r\n"]),
)
def test_structured_requests(prefix: bytes, host: bytes, suffix: bytes) -> None:
    HARNESS(prefix + host + suffix)
