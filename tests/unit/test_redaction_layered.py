"""Layered redaction: a shared (per-process) pattern set and a run's own, matched as their union.

The property that defines it: a run's redactor made with ``shared=`` gives, for every text and
every chunking, the same output and the same counts as one redactor over the union of both
value sets. The engine-level property: :func:`layered` finds exactly what one engine over the
union of the two pattern sets finds.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardened_launcher.redaction import MASK, RedactingStream, Redactor
from hardened_launcher.redaction.canary import LeakDetectedError, verify_log_clean
from hardened_launcher.redaction.engine import (
    AhoCorasickEngine,
    Engine,
    HyperscanEngine,
    NullEngine,
    ReferenceEngine,
    available_engines,
)
from hardened_launcher.redaction.layered import (
    LayeredEngine,
    LayeredHyperscanEngine,
    LiteralLayer,
    layered,
)
from hardened_launcher.redaction.prefixes import PrefixIndex, prefix_index
from hardened_launcher.redaction.redactor import BACKGROUND_COMPILE_BYTES, UNION_FROM_PATTERNS
from hardened_launcher.redaction.variants import variants

ALL = available_engines()
HYPERSCAN = "hyperscan" in ALL
needs_hyperscan = pytest.mark.skipif(not HYPERSCAN, reason="needs hyperscan")

value_st = (
    st.binary(min_size=6, max_size=40)
    .map(lambda b: b.replace(b"*", b"."))
    .filter(lambda v: len(variants(v)) > 0)
)
filler_st = st.binary(max_size=40).map(lambda b: b.replace(b"*", b"."))
cuts_st = st.lists(st.integers(0, 100_000), max_size=10)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def run_stream(stream: RedactingStream, chunks: list[bytes]) -> bytes:
    return b"".join([*(stream.write(c) for c in chunks), stream.flush()])


def wrap(text: bytes, width: int, eol: bytes) -> bytes:
    return eol.join(text[i : i + width] for i in range(0, len(text), width))


def spans(engine: Engine, text: bytes) -> list[tuple[int, int, bytes]]:
    return [(s, e, engine.patterns[i]) for s, e, i in engine.find(text)]


# -- the engine: the union's leftmost-longest ----------------------------------------------------
def _layer(kind: str, patterns: list[bytes]) -> Engine:
    if not patterns:
        return NullEngine()
    if kind == "hyperscan":
        return HyperscanEngine(patterns)
    if kind == "literal":
        return LiteralLayer(patterns)
    if kind == "aho-corasick":
        return AhoCorasickEngine(patterns)
    return ReferenceEngine(patterns)


PAIRS = [("reference", "reference")]
if HYPERSCAN:
    PAIRS += [("hyperscan", "literal"), ("reference", "literal"), ("hyperscan", "reference")]
if "aho-corasick" in ALL:
    PAIRS += [("aho-corasick", "aho-corasick")]
    if HYPERSCAN:
        PAIRS += [("aho-corasick", "literal")]


@pytest.mark.parametrize(("base_kind", "top_kind"), PAIRS)
@settings(max_examples=150, deadline=None)
@given(
    patterns=st.sets(
        st.binary(min_size=1, max_size=6).map(lambda b: bytes(x % 3 + 97 for x in b)),
        min_size=1,
        max_size=14,
    ),
    split=st.lists(st.booleans(), min_size=14, max_size=14),
    text=st.binary(max_size=200).map(lambda b: bytes(x % 4 + 97 for x in b)),
    skip=st.integers(0, 20),
)
def test_a_layered_engine_finds_what_one_engine_over_the_union_finds(
    base_kind: str,
    top_kind: str,
    patterns: set[bytes],
    split: list[bool],
    text: bytes,
    skip: int,
) -> None:
    ordered = sorted(patterns)
    base = [p for p, up in zip(ordered, split, strict=False) if not up]
    top = [p for p, up in zip(ordered, split, strict=False) if up]
    engine = layered(_layer(base_kind, base), _layer(top_kind, top))
    union = ReferenceEngine(ordered)
    assert spans(engine, text) == spans(union, text)
    skip = min(skip, len(text))
    found, newlines = engine.scan(text, skip)
    expected, expected_newlines = union.scan(text, skip)
    assert [(s, e, engine.patterns[i]) for s, e, i in found] == [
        (s, e, union.patterns[i]) for s, e, i in expected
    ]
    assert newlines == expected_newlines


@needs_hyperscan
def test_two_hyperscan_layers_take_the_streams_fast_path() -> None:
    base = HyperscanEngine([b"launcher-token-value", b"launcher"])
    top = LiteralLayer([b"run-secret-value"])
    engine = layered(base, top)
    assert isinstance(engine, LayeredHyperscanEngine)
    assert isinstance(engine, HyperscanEngine)  # what the stream checks for all_matches
    assert engine.patterns == (*base.patterns, *top.patterns)
    assert engine.find(b"x launcher-token-value run-secret-value") == [(2, 22, 0), (23, 39, 2)]
    # The wrap triggers come from the base layer once (the top layer has none).
    _, _, newlines = engine.all_matches(b"A" * 16 + b"\n" + b"B" * 16 + b"\r\n")
    assert newlines == [16, 34]


def test_layers_must_not_share_a_pattern() -> None:
    with pytest.raises(ValueError, match="share"):
        LayeredEngine(ReferenceEngine([b"abcdef"]), ReferenceEngine([b"abcdef", b"zzzzzz"]))
    assert layered(ReferenceEngine([b"abcdef"]), NullEngine()).patterns == (b"abcdef",)


@settings(max_examples=100, deadline=None)
@given(
    patterns=st.sets(
        st.binary(min_size=1, max_size=8).map(lambda b: bytes(x % 3 + 97 for x in b)),
        min_size=2,
        max_size=12,
    ),
    split=st.lists(st.booleans(), min_size=12, max_size=12),
    text=st.binary(max_size=40).map(lambda b: bytes(x % 4 + 97 for x in b)),
)
def test_the_layered_prefix_index_answers_as_the_unions(
    patterns: set[bytes], split: list[bool], text: bytes
) -> None:
    ordered = sorted(patterns)
    base = [p for p, up in zip(ordered, split, strict=False) if not up] or ordered[:1]
    top = [p for p in ordered if p not in base] or [b"zzzzzz"]
    engine = layered(ReferenceEngine(base), ReferenceEngine(top))
    index, union = prefix_index(engine), PrefixIndex([*base, *top], hyperscan=False)
    assert index.earliest_open(text) == union.earliest_open(text)
    assert index.gram_starts(text) == union.gram_starts(text)
    for pattern in engine.patterns:
        assert index.is_open(pattern) == union.is_open(pattern)
    for end in range(len(text) + 1):
        assert index.is_open(text[:end]) == union.is_open(text[:end])


# -- the redactor: a shared redactor and a run's own ---------------------------------------------
REDACTOR_ENGINES = [None, "reference"] if HYPERSCAN else ["reference"]


def _forms(value: bytes, form: int, width: int, eol: bytes) -> bytes:
    encoded = [
        value,
        base64.b64encode(b"k" + value),
        value.hex().encode(),
        base64.b64encode(value),
    ][form % 4]
    return wrap(encoded, width, eol) if form >= 4 else encoded


@pytest.mark.parametrize("engine", REDACTOR_ENGINES)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shared_values=st.lists(value_st, min_size=1, max_size=3),
    own_values=st.lists(value_st, max_size=3),
    same=st.booleans(),
    picks=st.lists(
        st.tuples(
            st.integers(0, 5),
            st.integers(0, 7),
            st.sampled_from([16, 20, 64, 76]),
            st.sampled_from([b"\n", b"\r\n"]),
            filler_st,
        ),
        max_size=6,
    ),
    cuts=cuts_st,
)
def test_a_run_redactor_over_a_shared_one_equals_one_redactor_over_the_union(
    engine: str | None,
    shared_values: list[bytes],
    own_values: list[bytes],
    same: bool,
    picks: list[tuple[int, int, int, bytes, bytes]],
    cuts: list[int],
) -> None:
    shared_items = [(f"L{n}", v) for n, v in enumerate(shared_values)]
    # The run adds the launcher's values again (as the pipeline does), maybe one under a name
    # of its own, and its own values (which may equal a launcher value).
    own_items = [*shared_items, *((f"R{n}", v) for n, v in enumerate(own_values))]
    if same:
        own_items.append(("R-again", shared_values[0]))
    every = shared_values + own_values
    text = b"".join(
        filler + _forms(every[which % len(every)], form, width, eol) + eol
        for which, form, width, eol, filler in picks
    )
    shared = Redactor(engine=engine)
    shared.add_many(shared_items)
    run = Redactor(engine=engine, shared=shared)
    run.add_many(own_items)
    union = Redactor(engine=engine)
    union.add_many(own_items)

    expected = union.redact_bytes(text)
    assert run.redact_bytes(text) == expected
    assert run.counts() == union.counts()
    assert run_stream(run.stream("stdout", whole_lines=True), chunked(text, cuts)) == expected
    assert run.pattern_count == union.pattern_count
    assert run.covers(own_items)
    assert shared.counts() == {}  # a run's masks are counted on the run's redactor


@needs_hyperscan
def test_a_run_compiles_only_its_own_patterns() -> None:
    launcher = [("SPACELIFT_TOKEN", base64.b64encode(secrets.token_bytes(600)))]
    shared = Redactor()
    shared.add_many(launcher)
    shared_engine = shared._snapshot()[0]
    run = Redactor(shared=shared)
    run.add_many(launcher)  # covered: nothing of its own
    assert run._state[0].patterns == ()
    assert run._snapshot()[0] is shared_engine
    run.add("SECRET", "a-run-secret-value")
    own = run._state[0]
    assert isinstance(own, LiteralLayer)
    assert set(own.patterns) == variants(b"a-run-secret-value")
    assert isinstance(run._snapshot()[0], LayeredHyperscanEngine)
    assert run.engine_name == "hyperscan"
    text = b"t=" + launcher[0][1] + b" s=a-run-secret-value\n"
    assert run.redact_bytes(text) == b"t=*** s=***\n"
    assert run.counts() == {"SPACELIFT_TOKEN": 1, "SECRET": 1}


def test_a_launcher_value_under_another_name_counts_for_both() -> None:
    shared = Redactor(engine="reference")
    shared.add("SPACELIFT_TOKEN", "launcher-token-value")
    run = Redactor(engine="reference", shared=shared)
    run.add("TF_VAR_token", "launcher-token-value")
    assert run._state[0].patterns == ()  # the shared layer matches it already
    assert run.redact_bytes(b"launcher-token-value") == MASK
    assert run.counts() == {"SPACELIFT_TOKEN": 1, "TF_VAR_token": 1}
    assert run.covers([("TF_VAR_token", "launcher-token-value")])
    assert not run.covers([("OTHER", "launcher-token-value")])


def test_close_forgets_the_shared_values_too() -> None:
    shared = Redactor(engine="reference")
    shared.add("SPACELIFT_TOKEN", "launcher-token-value")
    run = Redactor(engine="reference", shared=shared)
    run.add("SECRET", "a-run-secret-value")
    run.close()
    assert run.redact_bytes(b"launcher-token-value a-run-secret-value") == (
        b"launcher-token-value a-run-secret-value"
    )
    assert shared.redact_bytes(b"launcher-token-value") == MASK  # the shared one is untouched


def test_a_shared_redactor_cannot_be_layered_twice() -> None:
    shared = Redactor(engine="reference")
    run = Redactor(engine="reference", shared=shared)
    with pytest.raises(ValueError, match="shared"):
        Redactor(shared=run)


def test_the_canary_scan_covers_both_layers(tmp_path: Path) -> None:
    shared = Redactor(engine="reference" if not HYPERSCAN else None)
    shared.add("SPACELIFT_TOKEN", "launcher-token-value-0123")
    run = Redactor(engine="reference" if not HYPERSCAN else None, shared=shared)
    run.add("SECRET", "a-run-secret-value")
    for leaked, name in (
        (b"launcher-token-value-0123", "SPACELIFT_TOKEN"),
        (b"a-run-secret-value", "SECRET"),
    ):
        log = tmp_path / f"{name}.log"
        log.write_bytes(b"line one\n" + base64.encodebytes(leaked * 3) + b"\n")
        with pytest.raises(LeakDetectedError) as caught:
            verify_log_clean(log, run, quarantine_dir=tmp_path / "quarantine")
        assert set(caught.value.counts) == {name}
    clean = tmp_path / "clean.log"
    clean.write_bytes(b"nothing to see\n")
    proof = verify_log_clean(clean, run, quarantine_dir=tmp_path / "quarantine")
    assert proof.patterns_checked == run.pattern_count
    assert run.pattern_count == len(
        variants(b"launcher-token-value-0123") | variants(b"a-run-secret-value")
    )


@pytest.mark.skipif(not {"hyperscan", "aho-corasick"} <= set(ALL), reason="needs both engines")
def test_a_shared_layer_still_on_aho_corasick_then_hyperscan_mid_stream() -> None:
    # A pool key's variants start the shared redactor on Aho-Corasick (compiled to Hyperscan
    # in the background); a run started meanwhile is layered over whichever is current.
    key = [(f"KEY{i}", base64.b64encode(secrets.token_bytes(4000))) for i in range(3)]
    assert sum(len(p) for _, v in key for p in variants(v)) >= BACKGROUND_COMPILE_BYTES
    shared = Redactor()
    shared.add_many(key)
    run = Redactor(shared=shared)
    run.add_many([*key, ("SECRET", "a-run-secret-value")])
    text = b"k=" + key[1][1] + b"\ns=a-run-secret-value\n" + base64.encodebytes(key[2][1])
    stream = run.stream("stdout")
    out = stream.write(text[:3000])
    run.wait_compiled(timeout=60)
    assert shared.engine_name == "hyperscan"
    assert isinstance(run._snapshot()[0], LayeredHyperscanEngine)
    out += stream.write(text[3000:]) + stream.flush()
    assert out == b"k=***\ns=***\n***\n"


@needs_hyperscan
def test_a_large_own_set_switches_to_one_database_over_the_union() -> None:
    # Two scans per write cost throughput with many values of its own: such a redactor starts
    # layered and swaps in one Hyperscan database over both sets when it is compiled.
    launcher = [("SPACELIFT_TOKEN", base64.b64encode(secrets.token_bytes(600)))]
    shared = Redactor()
    shared.add_many(launcher)
    values = [(f"V{i}", f"value-{i:03d}-{secrets.token_hex(8)}") for i in range(100)]
    run = Redactor(shared=shared)
    run.add_many([*launcher, *values])
    assert len(run._state[0].patterns) >= UNION_FROM_PATTERNS
    text = (
        b"".join(
            b"line %d %s %s\n" % (i, v.encode(), v.encode().hex().encode())
            for i, (_, v) in enumerate(values)
        )
        + b"t="
        + launcher[0][1]
        + b"\n"
        + base64.encodebytes(b"k" + launcher[0][1])
    )
    union = Redactor(engine="hyperscan")
    union.add_many([*launcher, *values])
    expected = union.redact_bytes(text)
    stream = run.stream("stdout")
    out = stream.write(text[: len(text) // 2])
    run.wait_compiled(timeout=60)
    engine = run._snapshot()[0]
    assert type(engine) is HyperscanEngine  # one database, no longer the two layers
    assert engine.patterns == shared._snapshot()[0].patterns + run._state[0].patterns
    out += stream.write(text[len(text) // 2 :]) + stream.flush()
    assert out == expected
    assert run.counts() == {**{name: 2 for name, _ in values}, "SPACELIFT_TOKEN": 2}
