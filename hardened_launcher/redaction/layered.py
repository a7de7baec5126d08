"""Two pattern sets matched as one: a large one compiled once per process, a small one per run.

Every run masks the launcher's own values (the pool token and private key in every encoding:
~700 patterns, ~0.5 MB) beside its own secrets. Compiled together, each run with a secret of
its own paid the large compile again (~0.2-0.4 s here) and held a second Hyperscan database
with the compile's temporary memory (~18-26 MiB at the peak of a one-run daemon). Layered,
the process compiles the launcher's values once (:class:`Redactor` ``shared=``) and a run
compiles only its own patterns (about a millisecond for a few secrets).

A :class:`LayeredEngine` answers exactly what one engine over the union of both pattern sets
answers: the leftmost-longest non-overlapping matches. With two Hyperscan layers every match
start of both scans is merged (longest end wins) before the one greedy walk, as
:class:`HyperscanEngine` does for one database; otherwise the two greedy lists are merged and a
list whose choice straddles the other's is recomputed from there. Property tests compare both
with one :class:`ReferenceEngine` over the union, across chunkings.

The run's layer is a :class:`LiteralLayer`: its literals only. The wrap-break triggers (see
``engine.WRAP_TRIGGER``) are found once, by the shared layer's scan (or the compiled helper
``engine.LINESCAN``), or by :func:`engine.wrap_newlines` when that layer is not a Hyperscan
database.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any

from hardened_launcher.native_memory import release_freed_memory
from hardened_launcher.redaction.engine import (
    MATCHES,
    Engine,
    EngineUnavailableError,
    HyperscanEngine,
    Match,
    _hs_expression,
    compile_block_database,
    greedy_select,
    merge_joined,
    wrap_newlines,
)
from hardened_launcher.redaction.prefixes import PrefixIndex, prefix_index, use_prefix_index

__all__ = ["LayeredEngine", "LayeredHyperscanEngine", "LiteralLayer", "layered"]


def _check_layer(patterns: Sequence[bytes]) -> None:
    if not patterns:
        raise ValueError("a layer needs at least one pattern")
    if any(not p for p in patterns):
        raise ValueError("empty patterns cannot be matched")
    if len(set(patterns)) != len(patterns):
        raise ValueError("patterns must be unique")


class LiteralLayer:
    """A Hyperscan block-mode database of the patterns alone (no wrap-break triggers).

    It is an :class:`~hardened_launcher.redaction.engine.Engine` on its own too (``scan``
    finds the wrap breaks with the regular expression), but is meant as the top layer of a
    :class:`LayeredHyperscanEngine`.
    """

    name = "hyperscan"

    def __init__(self, patterns: Sequence[bytes]) -> None:
        _check_layer(patterns)
        try:
            import hyperscan  # noqa: PLC0415  # optional dependency, imported on use
        except ImportError as exc:  # pragma: no cover - depends on the platform
            raise EngineUnavailableError("hyperscan is not installed on this platform") from exc
        self.patterns = tuple(patterns)
        self.longest = max(len(p) for p in self.patterns)
        self._lengths = [len(p) for p in self.patterns]
        self._hs: Any = hyperscan
        db = compile_block_database(hyperscan, [_hs_expression(p) for p in self.patterns])
        self._db = db
        self._local = threading.local()
        release_freed_memory()  # the compile's temporary memory (see native_memory)

    def _scratch(self) -> Any:  # noqa: ANN401  # hyperscan.Scratch, an untyped binding
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = self._hs.Scratch(self._db)
        return scratch

    def scan_into(self, sink: Any, data: bytes | memoryview) -> None:  # noqa: ANN401
        """Scan ``data`` with ``sink`` (a compiled match collector) as the match callback."""
        self._db.scan(data, match_event_handler=sink, scratch=self._scratch())

    def all_matches(
        self, data: bytes | memoryview, cuts: Sequence[int] = ()
    ) -> tuple[dict[int, int], dict[tuple[int, int], int]]:
        """Every match start with its longest end and that pattern's index; a match that spans
        one of the sorted ``cuts`` is ignored (as ``HyperscanEngine.all_matches``)."""
        lengths = self._lengths
        ends_by_start: dict[int, int] = {}
        index_by_span: dict[tuple[int, int], int] = {}

        def on_match(index: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
            start = to - lengths[index]
            if ends_by_start.get(start, -1) >= to:
                return
            if cuts and bisect_right(cuts, start) != bisect_right(cuts, to - 1):
                return
            ends_by_start[start] = to
            index_by_span[(start, to)] = index

        self._db.scan(data, match_event_handler=on_match, scratch=self._scratch())
        return ends_by_start, index_by_span

    def find(self, data: bytes) -> list[Match]:
        ends, spans = self.all_matches(data)
        return greedy_select(ends, spans) if ends else []

    def scan(self, data: bytes, skip: int) -> tuple[list[Match], list[int]]:
        view = memoryview(data)[skip:] if skip else data
        ends, spans = self.all_matches(view)
        matches = greedy_select(ends, spans) if ends else []
        if skip:
            matches = [(s + skip, e + skip, i) for s, e, i in matches]
        return matches, wrap_newlines(data, skip)


class LayeredEngine:
    """``base`` and ``top`` matched as one engine over their union (any two engines).

    Pattern ``i`` is ``base.patterns[i]``, then ``top``'s follow. The two sets must not share
    a pattern (the redactor leaves a shared one in the base).
    """

    def __init__(self, base: Engine, top: Engine) -> None:
        if set(base.patterns) & set(top.patterns):
            raise ValueError("the layers of an engine must not share a pattern")
        self.base = base
        self.top = top
        self.name = f"{base.name}+{top.name}"
        self.patterns = base.patterns + top.patterns
        self.longest = max(base.longest, top.longest)
        self._offset = len(base.patterns)
        use_prefix_index(self, LayeredPrefixIndex(prefix_index(base), prefix_index(top)))

    def find(self, data: bytes) -> list[Match]:
        offset = self._offset

        def top_from(cursor: int) -> list[Match]:
            found = self.top.find(data[cursor:] if cursor else data)
            return [(s + cursor, e + cursor, i + offset) for s, e, i in found]

        def base_from(cursor: int) -> list[Match]:
            found = self.base.find(data[cursor:] if cursor else data)
            return [(s + cursor, e + cursor, i) for s, e, i in found] if cursor else found

        return merge_greedy(base_from, top_from)

    def scan(self, data: bytes, skip: int) -> tuple[list[Match], list[int]]:
        matches = self.find(data[skip:]) if skip else self.find(data)
        if skip:
            matches = [(s + skip, e + skip, i) for s, e, i in matches]
        return matches, wrap_newlines(data, skip)


class LayeredHyperscanEngine(HyperscanEngine):
    """Two Hyperscan layers: all match starts of both scans merged, then one greedy walk.

    A :class:`HyperscanEngine` to the stream (``isinstance``), which then takes its fast path
    through :meth:`all_matches`; every other method it inherits goes through that too. Nothing
    is compiled here: the base layer's database gives the patterns and the wrap triggers, the
    top layer's (a :class:`LiteralLayer`) its patterns.
    """

    def __init__(self, base: HyperscanEngine, top: LiteralLayer) -> None:
        # The parent's constructor compiles a database; this engine has none of its own.
        if set(base.patterns) & set(top.patterns):
            raise ValueError("the layers of an engine must not share a pattern")
        self.base = base
        self.top = top
        self.name = "hyperscan"
        self.patterns = base.patterns + top.patterns
        self.longest = max(base.longest, top.longest)
        self._offset = len(base.patterns)
        self._linescan = base._linescan  # the triggers are the base layer's
        # The top layer's facts for the compiled collector, its indexes after the base's.
        self._table: Any = None
        self._top_table: Any = None
        if base._table is not None and MATCHES is not None:
            count = len(top.patterns)
            self._top_table = MATCHES.MatchTable(
                top._lengths, list(range(self._offset, self._offset + count)), [[]] * count
            )
            self._table = base._table
        use_prefix_index(self, LayeredPrefixIndex(prefix_index(base), prefix_index(top)))

    def collect(self, sink: Any, data: bytes | memoryview) -> None:  # noqa: ANN401
        self.base.collect(sink, data)  # first: the base's match wins a tie, as below
        self.top.scan_into(sink, data)
        sink.take(self._top_table, data)

    def collect_joined(
        self,
        sink: Any,  # noqa: ANN401
        text: bytes,
        cuts: Sequence[int],
        seg_j: Sequence[int],
        seg_o: Sequence[int],
    ) -> None:
        self.base.collect_joined(sink, text, cuts, seg_j, seg_o)
        self.top.scan_into(sink, text)
        sink.take_joined(self._top_table, text, cuts, seg_j, seg_o)

    def all_matches(
        self, data: bytes | memoryview, cuts: Sequence[int] = (), *, newlines: bool = True
    ) -> tuple[dict[int, int], dict[tuple[int, int], int], list[int]]:
        ends, spans, found = self.base.all_matches(data, cuts, newlines=newlines)
        top_ends, top_spans = self.top.all_matches(data, cuts)
        offset = self._offset
        for start, end in top_ends.items():
            if ends.get(start, -1) < end:
                ends[start] = end
                spans[(start, end)] = top_spans[(start, end)] + offset
        return ends, spans, found

    def add_joined(
        self,
        text: bytes,
        cuts: Sequence[int],
        seg_j: Sequence[int],
        seg_o: Sequence[int],
        ends: dict[int, int],
        spans: dict[tuple[int, int], int],
    ) -> None:
        # Both layers' matches, through this engine's merged ``all_matches``.
        merge_joined(self, text, cuts, seg_j, seg_o, ends, spans)


def layered(base: Engine, top: Engine) -> Engine:
    """One engine over the union of ``base`` and ``top`` (either may have no patterns)."""
    if not top.patterns:
        return base
    if isinstance(base, HyperscanEngine) and isinstance(top, LiteralLayer):
        return LayeredHyperscanEngine(base, top)
    return LayeredEngine(base, top)


def merge_greedy(
    first_from: Callable[[int], list[Match]], second_from: Callable[[int], list[Match]]
) -> list[Match]:
    """Leftmost-longest over the union of two pattern sets, from each set's greedy matches.

    ``x_from(cursor)`` is that set's greedy list over ``data[cursor:]`` (positions in
    ``data``). At each step the earlier start wins (the longer match on a tie). A list whose
    next choice straddles the cursor made its later choices after a match the union did not
    take, so it is recomputed from the cursor; a choice that ends before the cursor does not
    change which match the list makes next from the cursor on.
    """
    lists = [first_from(0), second_from(0)]
    sources = (first_from, second_from)
    positions = [0, 0]
    out: list[Match] = []
    cursor = 0
    while True:
        heads: list[Match | None] = []
        for k in (0, 1):
            items = lists[k]
            pos = positions[k]
            while pos < len(items) and items[pos][0] < cursor:
                if items[pos][1] > cursor:
                    items = lists[k] = sources[k](cursor)
                    pos = 0
                    break
                pos += 1
            positions[k] = pos
            heads.append(items[pos] if pos < len(items) else None)
        a, b = heads
        if a is None and b is None:
            return out
        if a is None or (b is not None and (b[0], -b[1]) < (a[0], -a[1])):
            chosen, k = b, 1
        else:
            chosen, k = a, 0
        assert chosen is not None  # noqa: S101 - for the type checker
        out.append(chosen)
        positions[k] += 1
        cursor = chosen[1]


class LayeredPrefixIndex(PrefixIndex):
    """The union's answers from the two layers' own (cached) indexes: nothing is rebuilt."""

    def __init__(self, base: PrefixIndex, top: PrefixIndex) -> None:
        # The parent's constructor indexes a pattern list; this one asks its two layers.
        self.base = base
        self.top = top

    def break_filters(self) -> list[bytes] | None:
        base, top = self.base.break_filters(), self.top.break_filters()
        return None if base is None or top is None else base + top

    def is_open(self, text: bytes) -> bool:
        return self.base.is_open(text) or self.top.is_open(text)

    def gram_starts(self, text: bytes) -> list[int]:
        first = self.base.gram_starts(text)
        second = self.top.gram_starts(text)
        if not first or not second:
            return first or second
        return sorted(set(first).union(second))

    def earliest_open(self, text: bytes) -> int | None:
        found = [
            at
            for at in (self.base.earliest_open(text), self.top.earliest_open(text))
            if at is not None
        ]
        return min(found) if found else None
