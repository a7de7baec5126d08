from __future__ import annotations

import copy
import logging
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardened_launcher.secrets import MASK, Secret, SecretWipedError, wipe_bytearray

CANARY = "CANARY-secret-9d41c7"


def test_every_rendering_is_masked() -> None:
    s = Secret(CANARY)
    rendered = [
        repr(s),
        str(s),
        f"{s}",
        f"{s!r}",
        f"{s}",
        format(s, ">40"),
        repr([s]),
        repr({"k": s}),
    ]
    for text in rendered:
        assert CANARY not in text
    assert repr(s) == f"Secret('{MASK}')"


def test_logging_a_secret_does_not_leak(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").warning("value=%s obj=%r", Secret(CANARY), Secret(CANARY))
    assert CANARY not in caplog.text
    assert MASK in caplog.text


def test_reveal_is_explicit_and_exact() -> None:
    s = Secret(CANARY)
    assert s.reveal() == CANARY.encode()
    assert s.reveal_text() == CANARY
    with s.view() as mv:
        assert bytes(mv) == CANARY.encode()
        assert mv.readonly


def test_wipe_zeroes_the_buffer_and_blocks_use() -> None:
    buf = bytearray(CANARY.encode())
    s = Secret.from_bytearray(buf)
    s.wipe()
    assert buf == bytearray(len(CANARY))
    assert s.wiped
    assert not s
    with pytest.raises(SecretWipedError):
        s.reveal()
    s.wipe()  # idempotent


def test_context_manager_wipes() -> None:
    buf = bytearray(b"abc")
    with Secret.from_bytearray(buf) as s:
        assert s.reveal() == b"abc"
    assert buf == bytearray(3)


def test_cannot_be_pickled_or_copied() -> None:
    s = Secret(CANARY)
    with pytest.raises(TypeError):
        pickle.dumps(s)
    with pytest.raises(TypeError):
        copy.copy(s)
    with pytest.raises(TypeError):
        copy.deepcopy(s)


def test_not_hashable_and_equality_is_by_value() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    with pytest.raises(TypeError):
        hash(Secret("a"))


@given(st.binary(max_size=256))
def test_round_trip_any_bytes(data: bytes) -> None:
    s = Secret(data)
    assert s.reveal() == data
    assert len(s) == len(data)
    assert repr(s) == f"Secret('{MASK}')"


def test_wipe_bytearray() -> None:
    b = bytearray(b"xyz")
    wipe_bytearray(b)
    assert b == bytearray(3)
