"""The per-stream state machine: bytes in, bytes that are safe to emit out.

No I/O happens here. A stream keeps only the *pending* tail of what it was given: the bytes
whose fate still depends on bytes not yet seen. With ``L`` the longest pattern, the greedy
leftmost-longest choice at position ``i`` depends only on ``buf[i:i + L]``, so every position
``i <= len(buf) - L`` can be decided now and at most ``L - 1`` bytes are held back. Because the
decisions are the same ones a one-shot pass over the whole text would make, the output of any
chunking equals the one-shot output (a property the tests check), including values split
across any number of writes, in the middle of a UTF-8 code point, or values whose beginning
repeats inside them (``abac`` written as ``aba`` + ``bac``): nothing is ever "backed up" — the
matcher re-reads the held-back bytes together with the new ones.

Values added to the redactor mid-stream apply to every byte not yet emitted; bytes already
emitted cannot be called back (the final canary scan catches those in stored logs).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate, pairwise
from operator import sub
from typing import TYPE_CHECKING, Any, cast

from hardened_launcher.redaction.engine import (
    WRAP_ALPHABET,
    WRAP_MIN_WIDTH,
    Engine,
    HyperscanEngine,
    Match,
    greedy_select,
)
from hardened_launcher.redaction.prefixes import prefix_index

if TYPE_CHECKING:
    from hardened_launcher.redaction.redactor import Redactor

#: The variable names of each pattern of an engine, by pattern index.
Owners = tuple[tuple[str, ...], ...]


class Tally:
    """Masks per variable name, recorded by pattern index and named when read.

    Right after the scan of a large pattern database the names of the patterns are out of the
    CPU caches: looking them up (and counting them by name twice, the stream's and the
    redactor's) on every write cost ~5-10 us of a 64 KiB write at 1,000 values; counting the
    indexes one by one still cost ~1-2 us. A write keeps its list of pattern indexes (one
    append); the lists are counted and named when the counts are read, when the owners change
    (a value was added), or every :data:`TALLY_BATCH` writes (so a long stream keeps little).
    Not thread-safe: the owner's lock guards it.
    """

    def __init__(self) -> None:
        self.by_name: dict[str, int] = {}
        self._owners: Owners = ()
        self._lists: list[list[int]] = []

    def add(self, owners: Owners, hits: list[int]) -> None:
        """Record one mask of each pattern index in ``hits`` (``hits`` is not changed later)."""
        if owners is not self._owners:
            self.fold()
            self._owners = owners
        lists = self._lists
        lists.append(hits)
        if len(lists) >= TALLY_BATCH:
            self.fold()

    def fold(self) -> dict[str, int]:
        """Name what was added since the last fold; returns the counts by name."""
        if self._lists:
            by_index: dict[int, int] = {}
            for hits in self._lists:
                for index in hits:
                    by_index[index] = by_index.get(index, 0) + 1
            self._lists = []
            owners, by_name = self._owners, self.by_name
            for index, count in by_index.items():
                for name in owners[index]:
                    by_name[name] = by_name.get(name, 0) + count
        return self.by_name


#: A :class:`Tally` counts its kept lists after this many writes.
TALLY_BATCH = 256


MASK = b"***"


def wrapped_span(longest: int) -> int:
    """The most original bytes an occurrence of a ``longest``-byte pattern can cover.

    A wrapped occurrence holds at most ``1 + (longest - 1) // WRAP_MIN_WIDTH`` line breaks of at
    most 2 bytes each: every break but the first follows a whole line of the occurrence.
    """
    if longest <= 0:
        return 0
    return longest + 2 * (1 + (longest - 1) // WRAP_MIN_WIDTH)


#: Bytes of already-emitted text a stream keeps to judge a line break at its pending start.
BEHIND_BYTES = WRAP_MIN_WIDTH + 2

_IS_WRAP = frozenset(WRAP_ALPHABET)


class _Chain:
    """A greedy leftmost-longest match list that can be recomputed from a later position."""

    def __init__(self, items: list[Match], recompute: Callable[[int], list[Match]]) -> None:
        self.items = items
        self.pos = 0
        self.recompute = recompute

    def next_at(self, cursor: int) -> Match | None:
        items = self.items
        while self.pos < len(items) and items[self.pos][0] < cursor:
            if items[self.pos][1] > cursor:
                # This chain's choice straddles the cursor: its later choices may differ.
                self.items = items = self.recompute(cursor)
                self.pos = 0
                break
            self.pos += 1
        return items[self.pos] if self.pos < len(items) else None


def _wrap_breaks(buf: bytes, newlines: list[int]) -> list[tuple[int, int]]:
    """``(start, end)`` of the line breaks that may sit inside a wrapped encoding."""
    # One comprehension (a base64 dump has a break on every line): CR LF starts at the CR;
    # a break must start after the first byte and be followed by a wrap character.
    last = len(buf) - 1
    is_wrap = _IS_WRAP
    return [
        (nl - 1 if buf[nl - 1] == 0x0D else nl, nl + 1)
        for nl in newlines
        if nl < last and buf[nl + 1] in is_wrap and (nl >= 2 or (nl == 1 and buf[0] != 0x0D))
    ]


class _Joined:
    """``buf[lo:hi]`` with some line breaks removed, and the way back to positions in ``buf``."""

    def __init__(self, buf: bytes, lo: int, hi: int, breaks: list[tuple[int, int]]) -> None:
        parts: list[bytes] = []
        self.j_starts: list[int] = []
        self.o_starts: list[int] = []
        cursor = lo
        length = 0
        for b_start, b_end in [*breaks, (hi, hi)]:
            self.j_starts.append(length)
            self.o_starts.append(cursor)
            parts.append(buf[cursor:b_start])
            length += b_start - cursor
            cursor = b_end
        self.text = b"".join(parts)

    def to_buf(self, j: int) -> int:
        seg = bisect_right(self.j_starts, j) - 1
        return self.o_starts[seg] + j - self.j_starts[seg]

    def to_joined(self, pos: int) -> int:
        seg = max(0, bisect_right(self.o_starts, pos) - 1)
        offset = pos - self.o_starts[seg]
        seg_len = (
            self.j_starts[seg + 1] - self.j_starts[seg]
            if seg + 1 < len(self.j_starts)
            else len(self.text) - self.j_starts[seg]
        )
        return self.j_starts[seg] + min(offset, seg_len)

    def matches(self, engine: Engine, from_j: int = 0) -> list[Match]:
        found = engine.find(self.text[from_j:]) if from_j else engine.find(self.text)
        return [(self.to_buf(s + from_j), self.to_buf(e + from_j - 1) + 1, i) for s, e, i in found]


def _wrapped_chain(engine: Engine, buf: bytes, breaks: list[tuple[int, int]]) -> _Chain:
    """Greedy matches in one window around the wrap breaks, with the breaks removed.

    One window from just before the first break to just after the last: one more scan at
    most, instead of one small scan per break (Python overhead dominates small scans).
    """
    lo = max(0, breaks[0][0] - engine.longest - 2)
    hi = min(len(buf), breaks[-1][1] + wrapped_span(engine.longest))
    joined = _Joined(buf, lo, hi, breaks)

    def recompute(cursor: int) -> list[Match]:
        if hi <= cursor:
            return []
        return joined.matches(engine, joined.to_joined(cursor)) if lo < cursor else items

    items = joined.matches(engine)

    return _Chain(items, recompute)


def _head_newlines(buf: bytes, behind: bytes, found: list[int]) -> list[int]:
    """Add the trigger LFs near the start of ``buf`` whose wrap run begins in ``behind``.

    The engine scans ``buf`` alone (no copy with ``behind`` in front); only an LF within the
    first WRAP_MIN_WIDTH + 1 bytes can need the bytes before ``buf`` to qualify.
    """
    if behind[-1] not in _IS_WRAP:
        return found  # the run would have to reach into ``behind``
    head = buf[: WRAP_MIN_WIDTH + 2]
    extra: list[int] = []
    at = head.find(b"\n")
    while at != -1:
        start = at - 1 if at >= 1 and head[at - 1] == 0x0D else at  # CR LF
        if at not in found and _wrap_run_before(buf, start, behind):
            extra.append(at)
        at = head.find(b"\n", at + 1)
    return sorted([*extra, *found]) if extra else found


def _drop_breaks(buf: bytes, lo: int, hi: int, opens: list[int], closes: list[int]) -> bytes:
    """``buf[lo:hi]`` without its breaks: the text from each of ``opens`` to the next close."""
    count = len(opens) - 1
    if count >= _REPLACE_FROM:
        # Many breaks (a dump): when every line break in the window is one of them, one
        # ``replace`` drops them all; the removed length tells whether that is so.
        width = sum(opens[1:]) - sum(closes[:-1])
        sep = b"\n" if width == count else b"\r\n" if width == 2 * count else b""
        if sep:
            text = buf[lo:hi].replace(sep, b"")
            if len(text) == hi - lo - width:
                return text
    return b"".join([buf[o:c] for o, c in zip(opens, closes, strict=True)])


#: From this many breaks in one window :func:`_drop_breaks` tries one ``replace`` first.
_REPLACE_FROM = 8


#: From this many breaks in one write :func:`_joined_windows` uses list operations; below it a
#: plain loop is cheaper (ordinary logs: a few breaks, each its own window).
_LIST_OPS_FROM = 24


def _few_windows(
    buf: bytes, breaks: list[tuple[int, int]], longest: int, span: int
) -> tuple[bytes, list[int], list[int], list[int]]:
    """:func:`_joined_windows` by a loop over the breaks (the same result)."""
    size = len(buf)
    parts: list[bytes] = []
    seg_j: list[int] = []
    seg_o: list[int] = []
    cuts: list[int] = []
    length = 0
    cursor = 0
    hi = -1
    for b_start, b_end in breaks:
        lo = max(0, b_start - longest - 2)
        if lo > hi:  # a new window: close the one before
            if hi >= 0:
                parts.append(buf[cursor:hi])
                length += hi - cursor
                cuts.append(length)
            seg_j.append(length)
            seg_o.append(lo)
            cursor = lo
        parts.append(buf[cursor:b_start])
        length += b_start - cursor
        cursor = b_end
        seg_j.append(length)
        seg_o.append(cursor)
        hi = min(size, b_end + span)
    parts.append(buf[cursor:hi])
    cuts.append(length + hi - cursor)
    return b"".join(parts), seg_j, seg_o, cuts


def _joined_windows(
    buf: bytes, breaks: list[tuple[int, int]], longest: int
) -> tuple[bytes, list[int], list[int], list[int]]:
    """The windows around the ``breaks`` with every break inside them removed, concatenated.

    An occurrence whose first break is ``b`` starts at most ``longest`` bytes before it and ends
    at most :func:`wrapped_span` bytes after it, so the window of ``b`` is that stretch; windows
    that touch are merged, and each removes every break inside it (an occurrence may cross
    several, and every later break it crosses lies inside the first one's window). Returns the
    text, the joined and original start of each segment (the text between two removed breaks),
    and the end of each window in the text (a match across two windows is not an occurrence).
    """
    span = wrapped_span(longest)
    if len(breaks) < _LIST_OPS_FROM:
        return _few_windows(buf, breaks, longest, span)
    return _many_windows(buf, breaks, longest, span)


def _many_windows(
    buf: bytes, breaks: list[tuple[int, int]], longest: int, span: int
) -> tuple[bytes, list[int], list[int], list[int]]:
    """:func:`_joined_windows` by list operations (the same result; a dump's many breaks)."""
    size = len(buf)
    starts = [b_start for b_start, _ in breaks]
    ends = [b_end for _, b_end in breaks]
    # Break k opens a new window when its window does not touch the one of break k - 1.
    gap = longest + 2 + span
    first = [0]
    first += [k for k, d in enumerate(map(sub, starts[1:], ends), 1) if d > gap]
    first.append(len(breaks))
    parts: list[bytes] = []
    seg_j: list[int] = []
    seg_o: list[int] = []
    cuts: list[int] = []
    length = 0
    for a, b in pairwise(first):
        # Segments of this window: from its start to the first break, between breaks, and
        # from the last break to its end (C-level list operations: a base64 dump has a
        # break on every line).
        lo, hi = max(0, starts[a] - longest - 2), min(size, ends[b - 1] + span)
        opens = [lo, *ends[a:b]]
        closes = [*starts[a:b], hi]
        parts.append(_drop_breaks(buf, lo, hi, opens, closes))
        seg_o += opens
        starts_j = list(accumulate(map(sub, closes, opens), initial=length))
        length = starts_j.pop()  # the last sum is the window's end
        seg_j += starts_j
        cuts.append(length)
    return b"".join(parts), seg_j, seg_o, cuts


def _scan_all(
    engine: HyperscanEngine, buf: bytes, behind: bytes
) -> tuple[list[Match], list[tuple[int, int]]]:
    """:func:`_scan` from every match start at once: one greedy walk over raw and joined.

    The main pass finds the patterns and the wrap triggers; the windows around the breaks
    (each holds every occurrence crossing its breaks) are joined and scanned together in one
    more pass (a match across two windows is ignored). Every match start of both passes is
    merged (longest end wins), so the walk is exact.
    """
    native = engine._linescan
    sink = engine.sink()
    if sink is not None:
        breaks = _collect_compiled(engine, sink, buf, behind)
        return sink.select(), breaks
    if native is not None:  # the compiled helper: the breaks directly, behind included
        ends, spans, _ = engine.all_matches(buf, newlines=False)
        breaks = native.wrap_breaks(buf, behind)
    else:
        ends, spans, newlines = engine.all_matches(buf)
        if behind:
            newlines = _head_newlines(buf, behind, newlines)
        breaks = _wrap_breaks(buf, newlines) if newlines else []
    if breaks and native is not None:
        windows = _seeded_windows(engine, native, buf, breaks)
        if windows is not None:
            text, seg_j, seg_o, cuts = windows
            engine.add_joined(text, cuts, seg_j, seg_o, ends, spans)
    elif breaks:
        text, seg_j, seg_o, cuts = _joined_windows(buf, breaks, engine.longest)
        engine.add_joined(text, cuts, seg_j, seg_o, ends, spans)
    return (greedy_select(ends, spans) if ends else []), breaks


def _collect_compiled(
    engine: HyperscanEngine,
    sink: Any,  # noqa: ANN401  # _matches.MatchSink, an untyped C object
    buf: bytes,
    behind: bytes,
) -> list[tuple[int, int]]:
    """:func:`_scan_all` with both compiled helpers, up to the choice: ``sink`` holds every
    candidate of the main and the joined scan (its ``select`` or ``redact`` makes the greedy
    choice over both). Returns the wrap breaks."""
    native = engine._linescan
    engine.collect(sink, buf)
    breaks: list[tuple[int, int]] = native.wrap_breaks(buf, behind)
    if breaks:
        windows = _seeded_windows(engine, native, buf, breaks)
        if windows is not None:
            text, seg_j, seg_o, cuts = windows
            engine.collect_joined(sink, text, cuts, seg_j, seg_o)
    return breaks


def _seeded_windows(
    engine: HyperscanEngine,
    native: Any,  # noqa: ANN401  # the _linescan module
    buf: bytes,
    breaks: list[tuple[int, int]],
) -> tuple[bytes, list[int], list[int], list[int]] | None:
    """The joined windows (by the compiled helper) of only the breaks an occurrence can cross
    first (each window still drops every break inside it): a line that ends in a token before
    a timestamp has none. None when no break needs one."""
    longest = engine.longest
    span = wrapped_span(longest)
    filters = prefix_index(engine).break_filters()
    seeded = native.seed_breaks(buf, breaks, longest, span, filters) if filters else breaks
    if not seeded:
        return None
    windows: tuple[bytes, list[int], list[int], list[int]] = native.joined_windows(
        buf, seeded, longest, span
    )
    return windows


def _scan(engine: Engine, buf: bytes, behind: bytes) -> tuple[list[Match], list[tuple[int, int]]]:
    """Leftmost-longest occurrences (raw and wrapped) in ``buf`` and its wrap breaks."""
    if isinstance(engine, HyperscanEngine):
        return _scan_all(engine, buf, behind)
    # Engines that only give greedy chains: walk both, recomputing a chain that straddles.
    raw, newlines = engine.scan(buf, 0)
    if behind:
        newlines = _head_newlines(buf, behind, newlines)
    breaks = _wrap_breaks(buf, newlines) if newlines else []
    if not breaks:
        return raw, breaks
    raw_chain = _Chain(
        raw, lambda cursor: [(s + cursor, e + cursor, i) for s, e, i in engine.find(buf[cursor:])]
    )
    wrapped = _wrapped_chain(engine, buf, breaks)
    out: list[Match] = []
    cursor = 0
    while True:
        a = raw_chain.next_at(cursor)
        b = wrapped.next_at(cursor)
        if a is None and b is None:
            return out, breaks
        if a is None or (b is not None and (b[0], -b[1]) < (a[0], -a[1])):
            assert b is not None  # noqa: S101 - for the type checker
            a = b
        out.append(a)
        cursor = a[1]


def find_occurrences(engine: Engine, buf: bytes, behind: bytes = b"") -> list[Match]:
    """Leftmost-longest occurrences in ``buf``, raw or wrapped over line breaks.

    ``behind`` is the text just before ``buf`` (already emitted); it only decides whether a
    line break near the start of ``buf`` follows enough wrap characters.
    """
    return _scan(engine, buf, behind)[0] if engine.longest else []


def _tail_start(size: int, longest: int) -> int:
    """Positions before this cannot start an occurrence that more bytes could complete."""
    return max(0, size - wrapped_span(longest) + 1)


def _wrap_run_before(buf: bytes, pos: int, behind: bytes) -> bool:
    """Whether WRAP_MIN_WIDTH wrap characters end just before ``buf[pos]``."""
    data = buf[max(0, pos - WRAP_MIN_WIDTH) : pos]
    if len(data) < WRAP_MIN_WIDTH:
        data = (behind + data)[-WRAP_MIN_WIDTH:]
    # Deleting the wrap characters (in C) leaves nothing exactly when all of them are.
    return len(data) == WRAP_MIN_WIDTH and not data.translate(None, WRAP_ALPHABET)


def _trailing_break(buf: bytes, behind: bytes) -> int | None:
    """Start of a line break at the very end that may join a wrapped line yet to come."""
    if buf.endswith(b"\r\n"):
        start = len(buf) - 2
    elif buf.endswith((b"\n", b"\r")):
        start = len(buf) - 1
    else:
        return None
    return start if _wrap_run_before(buf, start, behind) else None


def hold_start(
    engine: Engine,
    buf: bytes,
    breaks: list[tuple[int, int]],
    behind: bytes = b"",
    *,
    open_break: bool = True,
) -> int:
    """The first position of ``buf`` that more bytes could still turn into (part of) a match.

    Everything before it is decided. ``len(buf)`` when nothing may grow into a match. With
    ``open_break=False`` a line break at the very end is taken as a line end, not as a break
    that a wrapped encoding may continue after (the stream's deadline, see ``poll``).
    """
    size = len(buf)
    lo = _tail_start(size, engine.longest)
    tail_breaks = [b for b in breaks if b[0] >= lo]
    trailing = _trailing_break(buf, behind) if open_break else None
    if trailing is not None and trailing >= lo:
        tail_breaks.append((trailing, size))
    index = prefix_index(engine)
    found = index.earliest_open(buf[lo:])
    hold = size if found is None else lo + found
    if tail_breaks:
        joined = _Joined(buf, lo, size, tail_breaks)
        at = index.earliest_open(joined.text)
        if at is not None:
            hold = min(hold, joined.to_buf(at))
    return hold


def redact_buffer(
    engine: Engine, buf: bytes, *, final: bool, behind: bytes = b"", open_break: bool = True
) -> tuple[bytes, int, list[int]]:
    """Redact the decided prefix of ``buf``.

    Returns ``(output, consumed, pattern_indexes)``: ``output`` replaces ``buf[:consumed]``;
    ``buf[consumed:]`` must be offered again with the next bytes: unless ``final``, only what
    could still become (part of) a match is kept (:func:`hold_start`), always less than
    :func:`wrapped_span` of ``engine.longest`` bytes. ``pattern_indexes`` lists the pattern of
    each mask written. ``behind``: the (already emitted) text just before ``buf``.
    """
    size = len(buf)
    if not engine.longest or not size:
        return buf, size, []
    sink = engine.sink() if isinstance(engine, HyperscanEngine) else None
    if sink is not None:  # the compiled helpers: the choice and the output in C
        breaks = _collect_compiled(cast("HyperscanEngine", engine), sink, buf, behind)
        limit = size if final else hold_start(engine, buf, breaks, behind, open_break=open_break)
        out: tuple[bytes, int, list[int]] = sink.redact(buf, limit, MASK)
        return out
    matches, breaks = _scan(engine, buf, behind)
    limit = size if final else hold_start(engine, buf, breaks, behind, open_break=open_break)
    if not matches or matches[0][0] >= limit:
        return buf[:limit], limit, []
    # Views, not slices: the text between masks is copied once, by the join.
    view = memoryview(buf)
    parts: list[bytes | memoryview] = []
    hits: list[int] = []
    cursor = 0
    for start, end, index in matches:
        if start >= limit:
            break
        parts.append(view[cursor:start])
        parts.append(MASK)
        hits.append(index)
        cursor = end
    emit_to = max(cursor, limit)
    parts.append(view[cursor:emit_to])
    return b"".join(parts), emit_to, hits


#: A stream's tail that waited this long is released as far as it can no longer complete a
#: match once a line break at its end is taken as a line end, and a partial line is released.
HOLD_DEADLINE_SECONDS = 0.2

#: A stream keeping lines whole releases a partial line anyway once it is this long.
MAX_LINE_BYTES = 65536


class RedactingStream:
    """One output channel (``stdout``, ``stderr``…) of one run. Thread-safe; order is the caller's.

    :meth:`write` returns what may be emitted now; :meth:`poll` (call it when no input came for
    a while) returns what waited longer than :data:`HOLD_DEADLINE_SECONDS`; :meth:`flush` ends
    the stream and returns the rest. ``counts`` holds this channel's masks per variable name;
    they are also added to the redactor's totals unless the stream was made with
    ``record=False`` (the canary's scans).

    A stream holds back only bytes that may still become (part of) a match, so ordinary text
    passes at once. With ``whole_lines=True`` it also keeps its redacted output until a line
    ends (or :meth:`poll` finds it older than the deadline), so that two streams written into
    one log do not interleave inside a line.
    """

    def __init__(
        self,
        redactor: Redactor,
        channel: str,
        *,
        record: bool = True,
        whole_lines: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel = channel
        self._tally = Tally()
        self._redactor = redactor
        self._record = record
        self._whole_lines = whole_lines
        self._clock = clock
        self._pending = b""
        self._behind = b""
        self._ready = b""
        self._since: float | None = None
        self._closed = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"RedactingStream(channel={self.channel!r}, pending_bytes={len(self._pending)}, "
            f"closed={self._closed})"
        )

    @property
    def counts(self) -> dict[str, int]:
        """This channel's masks so far per variable name."""
        with self._lock:
            return self._tally.fold()

    @property
    def pending_bytes(self) -> int:
        """How many input bytes are held back undecided right now (see :func:`hold_start`)."""
        return len(self._pending)

    def write(self, data: bytes | bytearray | memoryview) -> bytes:
        """Feed ``data``; return the bytes that are safe to emit now (possibly fewer, or none)."""
        with self._lock:
            if self._closed:
                raise ValueError(f"write to the flushed redacting stream {self.channel!r}")
            # ``pending + data`` copies once; with nothing pending the data is copied here.
            chunk = data if self._pending else bytes(data)
            return self._release(self._step(chunk, final=False))

    def poll(self) -> bytes:
        """What waited longer than the deadline: partial lines, and a tail held only for a line
        break at its end that a wrapped encoding could have continued after."""
        with self._lock:
            if self._closed or self._since is None:
                return b""
            if self._clock() - self._since < HOLD_DEADLINE_SECONDS:
                return b""
            out = self._ready + (
                self._step(b"", final=False, open_break=False) if self._pending else b""
            )
            self._ready = b""
            self._since = self._clock() if self._pending else None
            return out

    def flush(self) -> bytes:
        """End of stream: return everything still held back, redacted. Further writes fail."""
        with self._lock:
            if self._closed:
                return b""
            out = self._ready + self._step(b"", final=True)
            self._ready = b""
            self._since = None
            self._closed = True
            return out

    def _release(self, out: bytes) -> bytes:
        if self._whole_lines:
            ready = self._ready + out if self._ready else out
            cut = ready.rfind(b"\n") + 1 if len(ready) < MAX_LINE_BYTES else len(ready)
            out, self._ready = ready[:cut], ready[cut:]
        if self._pending or self._ready:
            if self._since is None:
                self._since = self._clock()
        else:
            self._since = None
        return out

    def _step(
        self, data: bytes | bytearray | memoryview, *, final: bool, open_break: bool = True
    ) -> bytes:
        engine, owners = self._redactor._snapshot()  # one package, one lock
        buf = self._pending + data if self._pending else bytes(data)
        out, consumed, hits = redact_buffer(
            engine, buf, final=final, behind=self._behind, open_break=open_break
        )
        if consumed:
            recent = buf[max(0, consumed - BEHIND_BYTES) : consumed]
            self._behind = (self._behind + recent)[-BEHIND_BYTES:]
        self._pending = buf[consumed:]
        if hits:
            self._tally.add(owners, hits)
            if self._record:
                self._redactor._count(owners, hits)
        return out
