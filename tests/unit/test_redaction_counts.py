"""Mask counts, per stream and per redactor: exact however many writes, streams, threads and
value changes there are (a write records pattern indexes; names are looked up when read)."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.redaction import Redactor
from hardened_launcher.redaction import stream as stream_module
from hardened_launcher.redaction.stream import Tally

VALUES = {"ALPHA": b"alpha-value-1f3c", "BETA": b"beta-value-77d0", "GAMMA": b"gamma-value-5e2a"}


@settings(max_examples=40, deadline=None)
@given(
    writes=st.lists(st.lists(st.sampled_from(sorted(VALUES)), max_size=4), min_size=1, max_size=40),
    read_every=st.integers(min_value=1, max_value=50),
)
def test_counts_are_exact_whenever_they_are_read(writes: list[list[str]], read_every: int) -> None:
    red = Redactor()
    red.add_many(list(VALUES.items()))
    stream = red.stream("stdout")
    expected: dict[str, int] = {}
    for number, names in enumerate(writes, 1):
        stream.write(b" ".join(b"x " + VALUES[name] + b" y" for name in names) + b"\n")
        for name in names:
            expected[name] = expected.get(name, 0) + 1
        if number % read_every == 0:  # a read mid-stream sees every mask written so far
            assert stream.counts == expected
            assert red.counts() == expected
    stream.flush()
    assert stream.counts == expected
    assert red.counts() == expected


def test_counts_across_streams_and_threads() -> None:
    red = Redactor()
    red.add_many(list(VALUES.items()))
    writes = 500

    def feed(channel: str) -> None:
        stream = red.stream(channel)
        for number in range(writes):
            stream.write(b"token " + VALUES["ALPHA"] + b" and " + VALUES["BETA"] + b"\n")
            if number % 97 == 0:
                red.counts()  # reads while the other threads write
        stream.flush()
        assert stream.counts == {"ALPHA": writes, "BETA": writes}

    threads = [threading.Thread(target=feed, args=(f"c{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert red.counts() == {"ALPHA": 4 * writes, "BETA": 4 * writes}


def test_a_value_added_mid_stream_is_counted_under_its_own_name() -> None:
    red = Redactor()
    red.add("ALPHA", VALUES["ALPHA"])
    stream = red.stream("stdout")
    for _ in range(5):
        stream.write(VALUES["ALPHA"] + b"\n")
    red.add("GAMMA", VALUES["GAMMA"])  # a new snapshot: other pattern indexes
    red.add("ALPHA_AGAIN", VALUES["ALPHA"])  # one pattern, two names from now on
    for _ in range(3):
        stream.write(VALUES["GAMMA"] + b" " + VALUES["ALPHA"] + b"\n")
    stream.flush()
    assert stream.counts == {"ALPHA": 8, "GAMMA": 3, "ALPHA_AGAIN": 3}
    assert red.counts() == stream.counts


def test_a_scanner_counts_on_itself_only() -> None:
    red = Redactor()
    red.add_many(list(VALUES.items()))
    scanner = red.scanner()
    for _ in range(10):
        scanner.write(VALUES["BETA"] + b"\n")
    scanner.flush()
    assert scanner.counts == {"BETA": 10}
    assert red.counts() == {}
    assert red.redact_bytes(VALUES["GAMMA"]) == b"***"
    assert red.counts() == {"GAMMA": 1}


#: Three snapshots of a redactor's owners (the names of patterns 0-3): values added between
#: writes change them.
SNAPSHOTS = [
    (("A",), ("B",), ("C", "D"), ()),
    (("A",), ("B", "E"), ("C",), ("F",)),
    ((), ("B",), ("G",), ("A", "B")),
]


@given(
    batches=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2),
            st.lists(st.integers(min_value=0, max_value=3), max_size=6),
        ),
        max_size=30,
    )
)
def test_tally_equals_naming_every_hit_at_once(batches: list[tuple[int, list[int]]]) -> None:
    """Against the definition, with owners that change between writes (three snapshots)."""
    tally = Tally()
    expected: dict[str, int] = {}
    for which, hits in batches:
        owners = SNAPSHOTS[which]
        tally.add(owners, hits)
        for index in hits:
            for name in owners[index]:
                expected[name] = expected.get(name, 0) + 1
    assert tally.fold() == expected


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2),
            st.lists(st.integers(min_value=0, max_value=3), max_size=6),
            st.booleans(),
        ),
        max_size=60,
    ),
    batch=st.integers(min_value=1, max_value=5),
)
def test_tally_counts_the_same_across_batches_and_reads(
    batches: list[tuple[int, list[int], bool]], batch: int
) -> None:
    """Kept lists counted every ``batch`` writes, read at any point, owners changing."""
    tally = Tally()
    expected: dict[str, int] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stream_module, "TALLY_BATCH", batch)
        for which, hits, read in batches:
            owners = SNAPSHOTS[which]
            tally.add(owners, hits)
            for index in hits:
                for name in owners[index]:
                    expected[name] = expected.get(name, 0) + 1
            if read:
                assert tally.fold() == expected
            assert len(tally._lists) < batch
    assert tally.fold() == expected


def test_a_long_stream_keeps_few_hit_lists() -> None:
    red = Redactor(engine="reference")
    red.add_many([("ALPHA", VALUES["ALPHA"])])
    stream = red.stream("out")
    for _ in range(stream_module.TALLY_BATCH * 3 + 7):
        stream.write(VALUES["ALPHA"] + b" and more\n")
    assert len(stream._tally._lists) < stream_module.TALLY_BATCH
    assert len(red._tally._lists) < stream_module.TALLY_BATCH
    assert stream.counts == {"ALPHA": stream_module.TALLY_BATCH * 3 + 7}
