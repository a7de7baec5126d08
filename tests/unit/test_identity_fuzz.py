"""The token and pool-key fuzz harnesses, replayed without atheris: seeds and random bytes."""

from __future__ import annotations

import base64
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.identity.keys import PoolKeyError, load_pool_private_key
from hardened_launcher.identity.token import Token, TokenError
from hardened_launcher.secrets import Secret

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
TOKEN_SEEDS = sorted((FUZZ_DIR / "corpus" / "token").iterdir())
KEY_SEEDS = sorted((FUZZ_DIR / "corpus" / "pool_key").iterdir())


def _harness(file_name: str) -> Callable[[bytes], None]:
    spec = importlib.util.spec_from_file_location(f"fuzz_{file_name[:-3]}", FUZZ_DIR / file_name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: Callable[[bytes], None] = module.test_one_input
    return function


token_input = _harness("token_format.py")
key_input = _harness("pool_key.py")


def test_no_harness_shadows_a_standard_library_module() -> None:
    # A fuzz/token.py would shadow the stdlib `token` for every harness run as a script.
    names = {path.stem for path in FUZZ_DIR.glob("*.py")}
    assert names.isdisjoint(sys.stdlib_module_names)


def test_token_seeds_cover_valid_and_refused() -> None:
    outcomes: dict[str, str] = {}
    for seed in TOKEN_SEEDS:
        try:
            Token.from_encoded(seed.read_bytes())
        except TokenError as error:
            outcomes[seed.name] = error.reason
        else:
            outcomes[seed.name] = "valid"
    assert outcomes["valid"] == "valid"
    assert outcomes["valid_wrapped_crlf"] == "valid"
    assert outcomes["version_2"] == "token_version_unsupported"
    assert outcomes["unknown_field"] == "token_field_unknown"
    assert len(set(outcomes.values())) >= 6


def test_key_seeds_cover_valid_and_refused() -> None:
    outcomes: dict[str, str] = {}
    for seed in KEY_SEEDS:
        try:
            outcomes[seed.name] = load_pool_private_key(Secret(seed.read_bytes())).algorithm
        except PoolKeyError as error:
            outcomes[seed.name] = error.reason
    assert outcomes["ec_p256_sec1_w0"] == "EC-P256"
    assert outcomes["ec_p384_pkcs8_w0"] == "EC-P384"
    assert outcomes["rsa2048_pkcs1_wrapped76"] == "RSA-2048"
    assert outcomes["ec_p256_encrypted"] == "pool_key_encrypted"
    assert outcomes["csr"] == "pool_key_is_csr"
    assert outcomes["raw_pem"] == "pool_key_not_encoded"


@pytest.mark.parametrize("seed", TOKEN_SEEDS, ids=lambda path: path.name)
def test_token_harness_replays_the_seed_corpus(seed: Path) -> None:
    token_input(seed.read_bytes())  # the harness asserts its properties; a failure raises


@pytest.mark.parametrize("seed", KEY_SEEDS, ids=lambda path: path.name)
def test_key_harness_replays_the_seed_corpus(seed: Path) -> None:
    key_input(seed.read_bytes())  # the harness asserts its properties; a failure raises


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_token_harness_on_random_bytes(data: bytes) -> None:
    token_input(data)
    token_input(base64.b64encode(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_key_harness_on_random_bytes(data: bytes) -> None:
    key_input(data)
    key_input(base64.b64encode(b"-----BEGIN PRIVATE KEY-----\n" + data))


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=255))
def test_token_harness_on_mutated_seed(position: int, byte: int) -> None:
    seed = bytearray((FUZZ_DIR / "corpus" / "token" / "valid").read_bytes())
    seed[position % len(seed)] = byte
    token_input(bytes(seed))


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=255))
def test_key_harness_on_mutated_seed(position: int, byte: int) -> None:
    seed = bytearray((FUZZ_DIR / "corpus" / "pool_key" / "ec_p256_sec1_w0").read_bytes())
    seed[position % len(seed)] = byte
    key_input(bytes(seed))
