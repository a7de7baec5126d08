"""Multi-pattern matchers: a compiled, immutable set of byte patterns that finds matches.

Every engine answers one question for a buffer: the **leftmost-longest, non-overlapping**
matches, as ``(start, end, pattern_index)`` sorted by start. Leftmost-longest is the greedy
rule "walk left to right; where any pattern starts, take the longest one that starts there and
skip past it", so the answer is unique and the same for every engine, which the property tests
check against :class:`ReferenceEngine`.

Backends, fastest first (measured by ``python benchmarks/redaction``):

* :class:`HyperscanEngine`: Intel Hyperscan (``hyperscan`` wheels, Linux x86_64). It reports every
  pattern end, overlapping; starts follow from the pattern lengths (so ``HS_FLAG_SOM_LEFTMOST``
  is not needed for literals) and the greedy choice is made here. Patterns are compiled as
  hex-escaped expressions, not with ``literal=True``: the 0.9.1 binding passes literals as C
  strings and silently truncates a pattern at its first NUL byte.
* :class:`AhoCorasickEngine`: ``ahocorasick-rs`` (portable wheels) with leftmost-longest
  semantics built in.
* :class:`ReferenceEngine`: pure Python, the executable definition; slow, for tests.

Compiled engines are immutable and may be shared between threads; Hyperscan scratch space is
kept per thread.
"""

from __future__ import annotations

import hashlib
import re
import threading
import weakref
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any, Protocol

from hardened_launcher.native_memory import release_freed_memory

Match = tuple[int, int, int]

#: Every pattern is at least this long (``variants.MIN_VALUE_BYTES``); a stream finds where its
#: held-back tail may begin by the patterns' first GRAM bytes.
GRAM = 6

#: Characters of wrapped encodings: both base64 alphabets (hex digits are a subset).
WRAP_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-"

#: A line break can sit inside a wrapped encoding only after at least this many characters of
#: :data:`WRAP_ALPHABET` (the narrowest wrap width handled), so ordinary line ends are not joined.
WRAP_MIN_WIDTH = 16

_WRAP_CLASS = b"[A-Za-z0-9+/_\\-]"
#: A candidate wrap break: WRAP_MIN_WIDTH wrap characters, then LF or CRLF (reported at the LF).
WRAP_TRIGGER = _WRAP_CLASS + b"{%d}\\r?\\n" % WRAP_MIN_WIDTH
_WRAP_TRIGGER_RE = re.compile(WRAP_TRIGGER)
#: The same trigger as two expressions for Hyperscan: next to thousands of literals, the
#: optional ``\r?`` made the whole database scan ~30 % slower, the pair costs ~5-10 %
#: (``benchmarks/redaction --scan-only``).
WRAP_TRIGGERS_HS = (
    _WRAP_CLASS + b"{%d}\\n" % WRAP_MIN_WIDTH,
    _WRAP_CLASS + b"{%d}\\r\\n" % WRAP_MIN_WIDTH,
)


def _native_linescan() -> Any:  # noqa: ANN401  # the C module, untyped
    """The compiled helper ``_linescan`` (setup.py builds it where a C compiler is), or None.

    It is used only if it says it implements exactly this module's trigger definition.
    """
    try:
        from hardened_launcher.redaction import _linescan  # noqa: PLC0415  # optional
    except ImportError:
        return None
    if (
        getattr(_linescan, "WRAP_ALPHABET", None) != WRAP_ALPHABET
        or getattr(_linescan, "WRAP_MIN_WIDTH", None) != WRAP_MIN_WIDTH
    ):
        return None
    return _linescan


#: The compiled trigger finder, or None (no compiler at install time, another platform): then
#: the triggers are two more expressions in each Hyperscan database (``WRAP_TRIGGERS_HS``) and a
#: regular expression elsewhere. Both give the same answer (property tests); an engine takes
#: this switch when it is compiled, so tests set it to None to compile fallback engines.
LINESCAN: Any = _native_linescan()


def _native_matches() -> Any:  # noqa: ANN401  # the C module, untyped
    """The compiled match collector ``_matches`` (setup.py builds it where a C compiler is),
    or None."""
    try:
        from hardened_launcher.redaction import _matches  # noqa: PLC0415  # optional
    except ImportError:
        return None
    return _matches


#: The compiled match collector, or None: then the Hyperscan engine's matches go through the
#: Python callbacks of :meth:`HyperscanEngine.all_matches` and :func:`greedy_select`. Both give
#: the same answer (property tests); an engine takes this switch when it is compiled (and only
#: together with :data:`LINESCAN`: the table knows no trigger expressions).
MATCHES: Any = _native_matches()


def wrap_newlines_re(data: bytes | memoryview, skip: int) -> list[int]:
    """Positions ``>= skip`` of LF bytes that follow WRAP_MIN_WIDTH wrap characters (and CR):
    the definition, by the regular expression."""
    start = max(0, skip - WRAP_MIN_WIDTH - 1)
    return [m.end() - 1 for m in _WRAP_TRIGGER_RE.finditer(data, start) if m.end() - 1 >= skip]


def wrap_newlines(data: bytes | memoryview, skip: int) -> list[int]:
    """:func:`wrap_newlines_re`, by the compiled helper when there is one."""
    native = LINESCAN
    if native is not None:
        return native.wrap_newlines(data, skip)  # type: ignore[no-any-return]
    return wrap_newlines_re(data, skip)


class Engine(Protocol):
    """A compiled pattern set. ``patterns[i]`` is the pattern whose index matches report."""

    name: str
    patterns: tuple[bytes, ...]
    longest: int

    def find(self, data: bytes) -> list[Match]:
        """Leftmost-longest non-overlapping matches in ``data``, sorted by start."""
        ...

    def scan(self, data: bytes, skip: int) -> tuple[list[Match], list[int]]:
        """:meth:`find` over ``data[skip:]`` (positions in ``data``) and :func:`wrap_newlines`."""
        ...


class _ScanByParts:
    """``scan`` for engines without a combined pass: ``find`` plus a regular expression."""

    def find(self, data: bytes) -> list[Match]:
        raise NotImplementedError

    def scan(self, data: bytes, skip: int) -> tuple[list[Match], list[int]]:
        matches = self.find(data[skip:]) if skip else self.find(data)
        if skip:
            matches = [(s + skip, e + skip, i) for s, e, i in matches]
        return matches, wrap_newlines(data, skip)


class EngineUnavailableError(RuntimeError):
    """The requested backend is not installed on this platform."""


def greedy_select(
    ends_by_start: dict[int, int], index_by_span: dict[tuple[int, int], int]
) -> list[Match]:
    """Turn all (possibly overlapping) matches into the leftmost-longest non-overlapping ones."""
    out: list[Match] = []
    cursor = 0
    for start in sorted(ends_by_start):
        if start < cursor:
            continue
        end = ends_by_start[start]
        out.append((start, end, index_by_span[(start, end)]))
        cursor = end
    return out


class NullEngine(_ScanByParts):
    """No patterns: nothing ever matches."""

    name = "none"

    def __init__(self) -> None:
        self.patterns: tuple[bytes, ...] = ()
        self.longest = 0

    def find(self, data: bytes) -> list[Match]:  # noqa: ARG002  # the Engine protocol
        return []


class ReferenceEngine(_ScanByParts):
    """Pure-Python leftmost-longest matcher: the definition the fast engines are tested against."""

    name = "reference"

    def __init__(self, patterns: Sequence[bytes]) -> None:
        _check_patterns(patterns)
        self.patterns = tuple(patterns)
        self.longest = max((len(p) for p in self.patterns), default=0)
        self._by_first: dict[int, list[tuple[bytes, int]]] = {}
        for index, pattern in enumerate(self.patterns):
            self._by_first.setdefault(pattern[0], []).append((pattern, index))
        for bucket in self._by_first.values():
            bucket.sort(key=lambda item: -len(item[0]))

    def find(self, data: bytes) -> list[Match]:
        out: list[Match] = []
        i = 0
        n = len(data)
        while i < n:
            for pattern, index in self._by_first.get(data[i], ()):
                if data.startswith(pattern, i):
                    out.append((i, i + len(pattern), index))
                    i += len(pattern)
                    break
            else:
                i += 1
        return out


class AhoCorasickEngine(_ScanByParts):
    """``ahocorasick-rs`` with leftmost-longest match kind (portable wheels)."""

    name = "aho-corasick"

    def __init__(self, patterns: Sequence[bytes]) -> None:
        _check_patterns(patterns)
        try:
            import ahocorasick_rs  # noqa: PLC0415  # optional dependency, imported on use
        except ImportError as exc:  # pragma: no cover - depends on the platform
            raise EngineUnavailableError("ahocorasick-rs is not installed") from exc
        self.patterns = tuple(patterns)
        self.longest = max((len(p) for p in self.patterns), default=0)
        self._ac = ahocorasick_rs.BytesAhoCorasick(
            self.patterns, matchkind=ahocorasick_rs.MatchKind.LeftmostLongest
        )

    def find(self, data: bytes) -> list[Match]:
        return [(s, e, i) for i, s, e in self._ac.find_matches_as_indexes(data)]


# Letters and digits stand for themselves; every other byte is written as \xHH, so no byte is
# a regex metacharacter and NUL bytes survive the binding. One table lookup per byte, done in C
# (``map``): a pool key's variants are about half a megabyte of patterns.
_HS_BYTE: tuple[bytes, ...] = tuple(
    bytes((b,)) if (48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122) else b"\\x%02x" % b
    for b in range(256)
)


def _hs_expression(pattern: bytes) -> bytes:
    return b"".join(map(_HS_BYTE.__getitem__, pattern))


def compile_block_database(hyperscan: Any, expressions: list[bytes]) -> Any:  # noqa: ANN401
    """A block-mode Hyperscan database of ``expressions`` (each id is its index).

    No ``ids`` are passed: the binding (hyperscan 0.9.1) keeps a reference to every id object
    but the last it is given, so a list of ints leaked about 16 KiB per compiled run (issue 18).
    A failure never carries the binding's message, which can quote an expression (a secret).
    """
    db: Any = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:
        db.compile(expressions=expressions, elements=len(expressions), flags=0)
    except hyperscan.error as exc:
        raise EngineUnavailableError(
            f"hyperscan could not compile the pattern set ({type(exc).__name__})"
        ) from None
    return db


class HyperscanEngine:
    """Intel Hyperscan in block mode; all matches are reported and the greedy choice is ours."""

    name = "hyperscan"

    def __init__(self, patterns: Sequence[bytes]) -> None:
        _check_patterns(patterns)
        try:
            import hyperscan  # noqa: PLC0415  # optional dependency, imported on use
        except ImportError as exc:  # pragma: no cover - depends on the platform
            raise EngineUnavailableError("hyperscan is not installed on this platform") from exc
        self.patterns = tuple(patterns)
        self.longest = max((len(p) for p in self.patterns), default=0)
        self._hs: Any = hyperscan
        roots, self._longer = _prefix_roots(self.patterns)
        self._roots = roots
        self._lengths = [len(self.patterns[i]) for i in roots]
        # Only the patterns that no other pattern is a prefix of (a base64 core and its padded
        # tails share their start): a third fewer expressions, ~40 % less compile time, fewer
        # callbacks; a longer pattern is confirmed where its prefix matched. After them, in
        # the same pass: the wrap-break triggers. Nothing else: the patterns' first bytes (for
        # the hold-back) are looked for in a stream's short tail only
        # (``prefixes.PrefixIndex``); as 6-byte literals in this database they cost a third of
        # its speed.
        expressions = [_hs_expression(self.patterns[i]) for i in roots]
        # The compiled helper finds the triggers in a few microseconds per 64 KiB; in the
        # database they cost ~20 (a third of the scan) and compile time.
        self._linescan: Any = LINESCAN
        if self._linescan is None:
            expressions += list(WRAP_TRIGGERS_HS)
        db = compile_block_database(hyperscan, expressions)
        self._db = db
        # The same facts as flat C arrays, and a C callback that only records each match: the
        # Python callback's lookups in cold lists and dictionaries cost ~0.7 us per match.
        self._table: Any = None
        if MATCHES is not None and self._linescan is not None:
            self._table = MATCHES.MatchTable(
                self._lengths, list(roots), [list(self._longer.get(i, ())) for i in roots]
            )
        self._local = threading.local()
        # The compile's temporary memory is free now; give it back (each run compiles its own
        # database in its own thread, whose malloc arena would otherwise keep it).
        release_freed_memory()

    def _scratch(self) -> Any:  # noqa: ANN401  # hyperscan.Scratch, an untyped binding
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._hs.Scratch(self._db)
            self._local.scratch = scratch
        return scratch

    def find(self, data: bytes) -> list[Match]:
        return self.scan(data, 0)[0]

    def sink(self) -> Any:  # noqa: ANN401  # _matches.MatchSink, an untyped C object
        """A new compiled match collector for :meth:`collect`, or None (no compiled helper:
        then :meth:`all_matches` and :meth:`add_joined`)."""
        return MATCHES.MatchSink() if self._table is not None else None

    def collect(self, sink: Any, data: bytes | memoryview) -> None:  # noqa: ANN401
        """Add every match in ``data`` to ``sink`` as a candidate (:meth:`all_matches`)."""
        self._db.scan(data, match_event_handler=sink, scratch=self._scratch())
        sink.take(self._table, data)

    def collect_joined(
        self,
        sink: Any,  # noqa: ANN401
        text: bytes,
        cuts: Sequence[int],
        seg_j: Sequence[int],
        seg_o: Sequence[int],
    ) -> None:
        """Add to ``sink`` every match of the joined ``text`` that crosses a removed break, in
        buffer positions (:meth:`add_joined`)."""
        self._db.scan(text, match_event_handler=sink, scratch=self._scratch())
        sink.take_joined(self._table, text, cuts, seg_j, seg_o)

    def scan(self, data: bytes, skip: int) -> tuple[list[Match], list[int]]:
        view = memoryview(data)[skip:] if skip else data
        sink = self.sink()
        if sink is not None:
            self.collect(sink, view)
            matches = sink.select()
            newlines = self._linescan.wrap_newlines(view, 0)
            if skip:
                matches = [(s + skip, e + skip, i) for s, e, i in matches]
                newlines = [n + skip for n in newlines]
            return matches, newlines
        ends_by_start, index_by_span, newlines = self.all_matches(view)
        matches = greedy_select(ends_by_start, index_by_span) if ends_by_start else []
        if skip:
            matches = [(s + skip, e + skip, i) for s, e, i in matches]
            newlines = [n + skip for n in newlines]
        return matches, newlines

    def all_matches(
        self, data: bytes | memoryview, cuts: Sequence[int] = (), *, newlines: bool = True
    ) -> tuple[dict[int, int], dict[tuple[int, int], int], list[int]]:
        """Every match start in ``data`` with its longest end and that pattern's index, and the
        positions of the LFs that end a wrap trigger. A match that spans one of the sorted
        ``cuts`` (boundaries between unrelated texts scanned together) is ignored. With
        ``newlines=False`` the trigger list may be left empty (the caller does not need it)."""
        lengths = self._lengths
        roots = self._roots
        longer = self._longer
        trigger = len(lengths)
        ends_by_start: dict[int, int] = {}
        index_by_span: dict[tuple[int, int], int] = {}
        found: list[int] = []

        def on_match(expr: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
            if expr >= trigger:
                found.append(to - 1)
                return
            start = to - lengths[expr]
            if cuts and bisect_right(cuts, start) != bisect_right(cuts, to - 1):
                return
            index = roots[expr]
            extensions = longer.get(index)
            if extensions:  # longest first: the first one present (and inside a cut) wins
                cut = cuts[bisect_right(cuts, start)] if cuts and start < cuts[-1] else None
                for pattern, other in extensions:
                    end = start + len(pattern)
                    if (cut is None or end <= cut) and data[start:end] == pattern:
                        to, index = end, other
                        break
            if ends_by_start.get(start, -1) >= to:
                return
            ends_by_start[start] = to
            index_by_span[(start, to)] = index

        def on_match_uncut(expr: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
            # ``on_match`` without cuts (the main pass): fewer steps per match.
            if expr >= trigger:
                found.append(to - 1)
                return
            start = to - lengths[expr]
            index = roots[expr]
            extensions = longer.get(index)
            if extensions:
                for pattern, other in extensions:
                    end = start + len(pattern)
                    if data[start:end] == pattern:
                        to, index = end, other
                        break
            if ends_by_start.get(start, -1) < to:
                ends_by_start[start] = to
                index_by_span[(start, to)] = index

        self._db.scan(
            data,
            match_event_handler=on_match if cuts else on_match_uncut,
            scratch=self._scratch(),
        )
        if self._linescan is not None:
            if newlines:
                found = self._linescan.wrap_newlines(data, 0)
        elif len(found) > 1:
            found.sort()  # already sorted as a rule (then this is one linear pass)
        return ends_by_start, index_by_span, found

    def add_joined(
        self,
        text: bytes,
        cuts: Sequence[int],
        seg_j: Sequence[int],
        seg_o: Sequence[int],
        ends: dict[int, int],
        spans: dict[tuple[int, int], int],
    ) -> None:
        """Merge into ``ends``/``spans`` (positions in the buffer) every match of the joined
        ``text`` that crosses a removed break, mapped back by the segment starts ``seg_j``
        (in ``text``) and ``seg_o`` (in the buffer); longest end wins, the buffer's own match
        on a tie. A match across one of ``cuts`` (a window's end) is ignored.

        The same as :meth:`all_matches` of ``text`` followed by that merge (what
        :class:`LayeredHyperscanEngine` does), with the test in the match callback: no
        intermediate dictionaries for the matches that cross nothing (most of them).
        """
        lengths = self._lengths
        roots = self._roots
        longer = self._longer
        trigger = len(lengths)
        last_cut = cuts[-1] if len(cuts) > 1 else -1

        def on_match(expr: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
            if expr >= trigger:
                return
            start = to - lengths[expr]
            window = bisect_right(cuts, start) if last_cut >= 0 else 0
            if last_cut >= 0 and window != bisect_right(cuts, to - 1):
                return
            index = roots[expr]
            extensions = longer.get(index)
            if extensions:  # longest first: the first one present (and inside its window) wins
                cut = cuts[window] if last_cut >= 0 and start < last_cut else None
                for pattern, other in extensions:
                    end = start + len(pattern)
                    if (cut is None or end <= cut) and text[start:end] == pattern:
                        to, index = end, other
                        break
            first = bisect_right(seg_j, start) - 1
            last = bisect_right(seg_j, to - 1) - 1
            if first == last:
                return  # no break inside: the main pass found it already
            o_start = seg_o[first] + start - seg_j[first]
            o_end = seg_o[last] + to - seg_j[last]
            if ends.get(o_start, -1) < o_end:
                ends[o_start] = o_end
                spans[(o_start, o_end)] = index

        self._db.scan(text, match_event_handler=on_match, scratch=self._scratch())


def merge_joined(
    engine: HyperscanEngine,
    text: bytes,
    cuts: Sequence[int],
    seg_j: Sequence[int],
    seg_o: Sequence[int],
    ends: dict[int, int],
    spans: dict[tuple[int, int], int],
) -> None:
    """:meth:`HyperscanEngine.add_joined` by :meth:`~HyperscanEngine.all_matches` and a loop
    (any engine with ``all_matches``: a layered one)."""
    j_ends, j_spans, _ = engine.all_matches(text, cuts if len(cuts) > 1 else (), newlines=False)
    for j_start, j_end in j_ends.items():
        first = bisect_right(seg_j, j_start) - 1
        last = bisect_right(seg_j, j_end - 1) - 1
        if first == last:
            continue  # no break inside: the main pass found it already
        start = seg_o[first] + j_start - seg_j[first]
        end = seg_o[last] + j_end - seg_j[last]
        if ends.get(start, -1) < end:
            ends[start] = end
            spans[(start, end)] = j_spans[(j_start, j_end)]


def _prefix_roots(
    patterns: Sequence[bytes],
) -> tuple[list[int], dict[int, tuple[tuple[bytes, int], ...]]]:
    """The indexes of the patterns no other pattern is a proper prefix of (the roots), and for
    each root the longer patterns that begin with it, longest first."""
    order = sorted(range(len(patterns)), key=patterns.__getitem__)
    roots: list[int] = []
    longer: dict[int, list[tuple[bytes, int]]] = {}
    root = b""
    for i in order:
        pattern = patterns[i]
        if roots and pattern.startswith(root):
            if pattern != root:
                longer.setdefault(roots[-1], []).append((pattern, i))
            continue
        roots.append(i)
        root = pattern
    return roots, {
        i: tuple(sorted(items, key=lambda item: -len(item[0]))) for i, items in longer.items()
    }


ENGINES = ("hyperscan", "aho-corasick", "reference")


#: The last engine compiled (by the digest of its pattern set and the preference): a process
#: often compiles the same set twice (the CLI's process-wide redactor, then the daemon's
#: logging redactor, from the same environment), and compiled engines are immutable. Held
#: weakly: a run's engine (with its secrets' patterns and a Hyperscan database of megabytes)
#: is freed with the run's redactor, not kept until the next compile.
_LAST_BUILT: tuple[bytes, weakref.ref[Engine]] | None = None
_LAST_BUILT_LOCK = threading.Lock()


def _pattern_set_digest(patterns: Sequence[bytes], preference: str | None) -> bytes:
    # An engine compiled with the compiled trigger finder has no triggers in its database.
    native = b"native" if LINESCAN is not None else b"fallback"
    digest = hashlib.sha256((preference or "").encode() + b"\0" + native + b"\0")
    for pattern in patterns:
        digest.update(len(pattern).to_bytes(8, "big"))
        digest.update(pattern)
    return digest.digest()


def build_engine(patterns: Sequence[bytes], preference: str | None = None) -> Engine:
    """Compile ``patterns`` with ``preference`` (one of :data:`ENGINES`) or the fastest one."""
    global _LAST_BUILT  # noqa: PLW0603 - a one-entry cache of immutable engines
    if not patterns:
        return NullEngine()
    if preference is not None and preference not in ENGINES:
        raise ValueError(f"unknown redaction engine {preference!r}; expected one of {ENGINES}")
    key = _pattern_set_digest(patterns, preference)
    with _LAST_BUILT_LOCK:
        last = _LAST_BUILT
    if last is not None and last[0] == key:
        cached = last[1]()
        if cached is not None:
            return cached
    engine = _compile_engine(patterns, preference)
    with _LAST_BUILT_LOCK:
        _LAST_BUILT = (key, weakref.ref(engine))
    return engine


def cached_engine(patterns: Sequence[bytes], preference: str | None = None) -> Engine | None:
    """The engine :func:`build_engine` last compiled, if it is for exactly ``patterns`` and
    ``preference``; None otherwise (nothing is compiled)."""
    if not patterns:
        return None
    with _LAST_BUILT_LOCK:
        last = _LAST_BUILT
    if last is not None and last[0] == _pattern_set_digest(patterns, preference):
        return last[1]()  # None once the engine's last redactor is gone (a weak entry)
    return None


def _compile_engine(patterns: Sequence[bytes], preference: str | None) -> Engine:
    order = (preference,) if preference else ENGINES
    last: EngineUnavailableError | None = None
    for name in order:
        try:
            if name == "hyperscan":
                return HyperscanEngine(patterns)
            if name == "aho-corasick":
                return AhoCorasickEngine(patterns)
            return ReferenceEngine(patterns)
        except EngineUnavailableError as exc:
            last = exc
    raise last or EngineUnavailableError("no redaction engine available")


def available_engines() -> list[str]:
    """Names of the backends that can be built here."""
    out = []
    for name in ENGINES:
        try:
            build_engine([b"probe-pattern"], name)
        except EngineUnavailableError:
            continue
        out.append(name)
    return out


def _check_patterns(patterns: Sequence[bytes]) -> None:
    if any(not p for p in patterns):
        raise ValueError("empty patterns cannot be matched")
    if len(set(patterns)) != len(patterns):
        raise ValueError("patterns must be unique")
