"""The run's value set, shared by every channel: add values, open streams, redact one-shot.

One :class:`Redactor` per run. It owns the values to mask (as byte patterns, see
:mod:`hardened_launcher.redaction.variants`), the compiled engine, and the counts of masks per
variable name. Streams read an immutable snapshot ``(engine, owners)``; :meth:`Redactor.add`
compiles a new one and swaps it in under a lock, so adding values mid-stream is safe from any
thread.

Values never leave this object: not in ``repr``, not in warnings, not in counts, not in error
messages. ``bytes`` copies of the patterns are kept for recompiling (Python cannot wipe them);
:meth:`Redactor.close` drops them at the end of the run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from hardened_launcher.redaction.engine import (
    Engine,
    EngineUnavailableError,
    NullEngine,
    build_engine,
    cached_engine,
)
from hardened_launcher.redaction.prefixes import prefix_index
from hardened_launcher.redaction.stream import MASK, RedactingStream, redact_buffer
from hardened_launcher.redaction.variants import refusal, variants
from hardened_launcher.secrets import Secret

Value = Secret | bytes | bytearray | str

#: From this many patterns (about 180 values) the default engine starts as Aho-Corasick, which
#: builds ~6x faster, and Hyperscan is compiled in a background thread and swapped in when ready:
#: both give the same leftmost-longest answer, so a stream may change engines between writes.
BACKGROUND_COMPILE_PATTERNS = 2000
#: The same from this many bytes of patterns, whatever their number: Hyperscan's compile time
#: follows the bytes, and a 4096-bit pool key's variants alone are ~0.5 MB (~0.3 s to compile
#: here, ~0.08 s as Aho-Corasick), which every run's redactor holds beside the run's secrets.
BACKGROUND_COMPILE_BYTES = 256 * 1024


def _as_bytes(value: Value) -> bytes:
    if isinstance(value, Secret):
        with value.view() as view:
            return bytes(view)
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


class Redactor:
    """Masks every variant of every added value, on any number of channels. Thread-safe."""

    def __init__(self, *, engine: str | None = None) -> None:
        """``engine``: ``"hyperscan"``, ``"aho-corasick"``, ``"reference"`` or the fastest."""
        self.warnings: list[str] = []
        self._engine_preference = engine
        self._lock = threading.Lock()
        self._owners: dict[bytes, list[str]] = {}
        self._names: set[str] = set()
        self._counts: dict[str, int] = {}
        self._state: tuple[Engine, tuple[tuple[str, ...], ...]] = (NullEngine(), ())
        self._generation = 0
        self._compiler: threading.Thread | None = None

    def __repr__(self) -> str:
        engine, _ = self._state
        return (
            f"Redactor(names={len(self._names)}, patterns={len(engine.patterns)}, "
            f"engine={engine.name!r})"
        )

    # -- values ------------------------------------------------------------------------------
    def add(self, name: str, value: Value) -> None:
        """Mask ``value`` (all its variants) from now on, counting masks under ``name``."""
        self.add_many([(name, value)])

    def add_many(self, items: Iterable[tuple[str, Value]]) -> None:
        """Like :meth:`add` for many values, compiling the engine once."""
        with self._lock:
            changed = False
            for name, value in items:
                data = _as_bytes(value)
                why = refusal(data)
                if why is not None:
                    if data.strip():
                        self.warnings.append(f"{name}: value not masked ({why})")
                    else:
                        self.warnings.append(f"{name}: value is empty; nothing to mask")
                    continue
                self._names.add(name)
                for pattern in variants(data):
                    owners = self._owners.setdefault(pattern, [])
                    if name not in owners:
                        owners.append(name)
                        changed = True
            if changed:
                self._rebuild()

    def covers(self, items: Iterable[tuple[str, Value]]) -> bool:
        """True when :meth:`add_many` of ``items`` would change nothing (all masked already)."""
        with self._lock:
            for name, value in items:
                data = _as_bytes(value)
                if refusal(data) is not None:
                    continue
                for pattern in variants(data):
                    if name not in self._owners.get(pattern, ()):
                        return False
        return True

    def _rebuild(self) -> None:
        patterns = sorted(self._owners)
        owners = tuple(tuple(self._owners[p]) for p in patterns)
        self._generation += 1
        big = (
            len(patterns) >= BACKGROUND_COMPILE_PATTERNS
            or sum(map(len, patterns)) >= BACKGROUND_COMPILE_BYTES
        )
        if self._engine_preference is None and big:
            ready = cached_engine(patterns, "hyperscan")  # compiled in the background before
            if ready is not None:
                self._state = (ready, owners)
                return
            try:
                quick = build_engine(patterns, "aho-corasick")
            except EngineUnavailableError:
                pass
            else:
                self._state = (quick, owners)
                self._compile_in_background(patterns, owners, self._generation)
                return
        engine = build_engine(patterns, self._engine_preference)
        if engine.name == "hyperscan":
            prefix_index(engine)  # its gram database, built now rather than on a first write
        self._state = (engine, owners)

    def _compile_in_background(
        self, patterns: list[bytes], owners: tuple[tuple[str, ...], ...], generation: int
    ) -> None:
        def compile_fast() -> None:
            try:
                engine = build_engine(patterns, "hyperscan")
                prefix_index(engine)  # built here too, not on a stream's first write
            except EngineUnavailableError:
                return  # Aho-Corasick stays
            with self._lock:
                if self._generation == generation:
                    self._state = (engine, owners)

        self._compiler = threading.Thread(
            target=compile_fast, name="redaction-compile", daemon=True
        )
        self._compiler.start()

    def wait_compiled(self, timeout: float | None = None) -> None:
        """Wait for a background compile (see BACKGROUND_COMPILE_PATTERNS) to be swapped in."""
        compiler = self._compiler
        if compiler is not None:
            compiler.join(timeout)

    def close(self) -> None:
        """Forget the values and the compiled engine (counts and warnings stay)."""
        with self._lock:
            self._owners.clear()
            self._generation += 1
            self._state = (NullEngine(), ())

    @property
    def engine_name(self) -> str:
        return self._state[0].name

    @property
    def longest_pattern_bytes(self) -> int:
        """The longest variant; streams hold back at most one byte less than this."""
        return self._state[0].longest

    @property
    def pattern_count(self) -> int:
        return len(self._state[0].patterns)

    # -- redaction ---------------------------------------------------------------------------
    def stream(self, channel: str, *, whole_lines: bool = False) -> RedactingStream:
        """A new stream for ``channel``; each stream keeps its own held-back bytes.

        ``whole_lines``: release output a line at a time (partial lines after a short deadline,
        see :meth:`RedactingStream.poll`), for channels that share one log.
        """
        return RedactingStream(self, channel, whole_lines=whole_lines)

    def scanner(self, channel: str = "canary") -> RedactingStream:
        """A stream whose masks are counted on the stream only, not in :meth:`counts`."""
        return RedactingStream(self, channel, record=False)

    def redact_bytes(self, data: bytes) -> bytes:
        """Redact a whole buffer at once."""
        engine, owners = self._state
        out, _, hits = redact_buffer(engine, bytes(data), final=True)
        if hits:
            self._count([name for index in hits for name in owners[index]])
        return out

    def redact_text(self, text: str) -> str:
        """Redact text (log records, exception text, audit fields) via its UTF-8 bytes."""
        data = text.encode("utf-8", errors="surrogatepass")
        out = self.redact_bytes(data)
        if out == data:
            return text
        try:
            return out.decode("utf-8", errors="surrogatepass")
        except UnicodeDecodeError:
            # A binary value matched inside a code point: the mask stays, cut bytes become U+FFFD.
            return out.decode("utf-8", errors="replace")

    def counts(self) -> dict[str, int]:
        """Masks written so far per variable name (a copy)."""
        with self._lock:
            return dict(self._counts)

    # -- for streams -------------------------------------------------------------------------
    def _snapshot(self) -> tuple[Engine, tuple[tuple[str, ...], ...]]:
        return self._state

    def _count(self, names: list[str]) -> None:
        with self._lock:
            for name in names:
                self._counts[name] = self._counts.get(name, 0) + 1


__all__ = ["MASK", "Redactor"]
