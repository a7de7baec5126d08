"""Which suffixes of a text could still grow into a pattern: what a stream must hold back.

A stream may emit every byte that cannot be the start of an occurrence completed (or made
longer) by bytes not seen yet. Position ``i`` of the tail ``t`` must wait exactly when
``t[i:]`` is a *proper prefix* of some pattern. :class:`PrefixIndex` answers that for the
earliest such ``i`` cheaply: candidates are the positions where a pattern's first
:data:`GRAM` bytes occur (found by the compiled helper's Bloom filter of those grams and a set
lookup of each of its answers; without the helper by a Hyperscan database of the grams, else
a set lookup per position), plus the last ``GRAM - 1`` positions; each candidate is confirmed
with a binary search in the sorted patterns. For ordinary text no candidate exists and
nothing is held back. A stream asks only about its short tail (the last bytes that an
occurrence could still cover), so this scan costs far less than finding the grams in the main
pass over every byte.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from hardened_launcher.native_memory import release_freed_memory
from hardened_launcher.redaction import engine as engine_module
from hardened_launcher.redaction.engine import GRAM, Engine

#: Below this many candidate positions a set lookup per position is cheaper than a scan call.
_PYTHON_GRAMS_BELOW = 48


class PrefixIndex:
    """The sorted patterns and a finder for their first :data:`GRAM` bytes."""

    def __init__(self, patterns: Sequence[bytes], *, hyperscan: bool = True) -> None:
        self._sorted = sorted(patterns)
        self._first = frozenset(p[0] for p in self._sorted)
        # Every prefix shorter than GRAM (a proper prefix: no pattern is that short): the last
        # GRAM - 1 positions of a tail are checked by one set lookup each, not a binary search.
        self._short = frozenset(p[:k] for p in self._sorted for k in range(1, min(GRAM, len(p))))
        # The last bytes of those prefixes: a text ending in another byte (a line end, as a
        # rule) has no short open suffix, and the lookups are skipped.
        self._short_last = frozenset(p[-1] for p in self._short)
        grams = sorted({p[:GRAM] for p in self._sorted if len(p) >= GRAM})
        self._grams = frozenset(grams)
        self._hs: Any = None
        self._db: Any = None
        self._gram_table: bytes | None = None  # see break_filters
        self._gram_built = False
        self._local = threading.local()
        # The compiled helper's Bloom filter of the grams (32 KiB at 1,000 values):
        # then no gram database is compiled (see gram_starts).
        native = engine_module.LINESCAN
        self._native: Any = None
        self._prefix_table: bytes | None = None
        if grams and native is not None and native.PREFIX_GRAM == GRAM:
            self._native, self._prefix_table = native, native.prefix_table(grams)
        elif grams and hyperscan:
            self._compile(grams)

    def _compile(self, grams: list[bytes]) -> None:
        try:
            import hyperscan  # noqa: PLC0415  # optional dependency, imported on use

            from hardened_launcher.redaction.engine import (  # noqa: PLC0415 - private helper
                _hs_expression,
            )
        except ImportError:  # pragma: no cover - depends on the platform
            return
        db: Any = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        try:
            # No ``ids`` (each id is its index): the binding leaks the id objects it is given
            # (see HyperscanEngine).
            db.compile(
                expressions=[_hs_expression(g) for g in grams],
                elements=len(grams),
                flags=0,
            )
        except hyperscan.error:  # pragma: no cover - then the set lookup is used
            return
        self._hs, self._db = hyperscan, db
        release_freed_memory()  # the compile's temporary memory (see native_memory)

    def break_filters(self) -> list[bytes] | None:
        """The Bloom filter of the patterns' 7-byte grams for ``_linescan.seed_breaks`` (built
        on first use), or None: no compiled helper, or a pattern too short to rule out a break
        this way (then every break gets its window)."""
        if not self._gram_built:
            native = engine_module.LINESCAN
            self._gram_table = native.gram_table(self._sorted) if native is not None else None
            self._gram_built = True
        return None if self._gram_table is None else [self._gram_table]

    def is_open(self, text: bytes) -> bool:
        """Whether ``text`` is a proper prefix of some pattern."""
        patterns = self._sorted
        i = bisect_left(patterns, text)
        while i < len(patterns) and patterns[i].startswith(text):
            if len(patterns[i]) > len(text):
                return True
            i += 1
        return False

    def gram_starts(self, text: bytes) -> list[int]:
        """Where a pattern's first GRAM bytes occur in ``text``, sorted."""
        last = len(text) - GRAM
        if last < 0:
            return []
        table = self._prefix_table
        if table is not None:  # candidates from the Bloom filter, each confirmed here
            grams = self._grams
            return [
                i for i in self._native.prefix_starts(text, table) if text[i : i + GRAM] in grams
            ]
        if self._db is None or last < _PYTHON_GRAMS_BELOW:
            grams = self._grams
            return [i for i in range(last + 1) if text[i : i + GRAM] in grams]
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = self._hs.Scratch(self._db)
        starts: list[int] = []

        def on_match(_index: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
            starts.append(to - GRAM)

        self._db.scan(text, match_event_handler=on_match, scratch=scratch)
        return sorted(set(starts)) if len(starts) > 1 else starts

    def earliest_open(self, text: bytes) -> int | None:
        """The smallest ``i`` with ``text[i:]`` a proper prefix of a pattern, or ``None``."""
        if not self._sorted or not text:
            return None
        first = self._first
        for at in self.gram_starts(text):
            if text[at] in first and self.is_open(text[at:]):
                return at
        if text[-1] not in self._short_last:
            return None
        short = self._short
        for at in range(max(0, len(text) - GRAM + 1), len(text)):
            if text[at:] in short:
                return at
        return None


_CACHE: weakref.WeakKeyDictionary[Engine, PrefixIndex] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def prefix_index(engine: Engine) -> PrefixIndex:
    """The (cached) :class:`PrefixIndex` of ``engine``'s patterns, built on first use."""
    # Kept on the engine once built (every write of every stream asks; the weak table costs a
    # lock and a weak reference per call); the weak table serves engines without a __dict__.
    index: PrefixIndex | None = getattr(engine, "_prefix_index", None)
    if index is not None:
        return index
    with _CACHE_LOCK:
        index = _CACHE.get(engine)
        if index is None:
            # Its own gram database only next to a Hyperscan engine: the Aho-Corasick engine
            # is the quick start of a large value set (or the fallback without Hyperscan).
            index = _CACHE[engine] = PrefixIndex(
                engine.patterns, hyperscan=engine.name == "hyperscan"
            )
        with contextlib.suppress(AttributeError):
            engine._prefix_index = index  # type: ignore[attr-defined]  # a cache slot
        return index


def use_prefix_index(engine: Engine, index: PrefixIndex) -> None:
    """Make ``index`` the one :func:`prefix_index` gives for ``engine`` (a composed engine
    whose parts keep their own indexes; see ``redaction/layered.py``)."""
    with _CACHE_LOCK:
        _CACHE[engine] = index
