"""The run's value set, shared by every channel: add values, open streams, redact one-shot.

One :class:`Redactor` per run. It owns the values to mask (as byte patterns, see
:mod:`hardened_launcher.redaction.variants`), the compiled engine, and the counts of masks per
variable name. Streams read an immutable snapshot ``(engine, owners)``; :meth:`Redactor.add`
compiles a new one and swaps it in under a lock, so adding values mid-stream is safe from any
thread.

A run's redactor made with ``shared=`` (the launcher's own redactor, compiled once per
process) masks the union of the shared redactor's values and its own, but compiles only its
own: a value the shared redactor masks already (under the same name) costs nothing, and the
snapshot is a layered engine (:mod:`hardened_launcher.redaction.layered`) over both sets.

Values never leave this object: not in ``repr``, not in warnings, not in counts, not in error
messages. ``bytes`` copies of the patterns are kept for recompiling (Python cannot wipe them);
:meth:`Redactor.close` drops them at the end of the run.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable, Iterable

from hardened_launcher.redaction.engine import (
    AhoCorasickEngine,
    Engine,
    EngineUnavailableError,
    HyperscanEngine,
    NullEngine,
    build_engine,
    cached_engine,
)
from hardened_launcher.redaction.layered import LiteralLayer, layered
from hardened_launcher.redaction.prefixes import prefix_index
from hardened_launcher.redaction.stream import (
    MASK,
    Owners,
    RedactingStream,
    Tally,
    redact_buffer,
)
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


#: From this many patterns of its own (about 75 values), a redactor layered over a shared one
#: also compiles one Hyperscan database over the union in the background and uses it once
#: ready: two scans per write cost up to half the throughput with large sets of its own
#: (``benchmarks/redaction --layered``), while a large set's own compile is slow anyway.
UNION_FROM_PATTERNS = 1000

State = tuple[Engine, Owners]

#: Keys the digests by which a run's redactor recognizes a value its shared redactor already
#: masks (no variants computed again); random per process, digests never leave the process.
_DIGEST_KEY = secrets.token_bytes(32)


def _value_digest(name: str, data: bytes) -> bytes:
    named = name.encode("utf-8", "surrogatepass") + b"\0" + data
    return hashlib.blake2b(named, key=_DIGEST_KEY, digest_size=16).digest()


def _as_bytes(value: Value) -> bytes:
    if isinstance(value, Secret):
        with value.view() as view:
            return bytes(view)
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


class Redactor:
    """Masks every variant of every added value, on any number of channels. Thread-safe."""

    def __init__(self, *, engine: str | None = None, shared: Redactor | None = None) -> None:
        """``engine``: ``"hyperscan"``, ``"aho-corasick"``, ``"reference"`` or the fastest.

        ``shared``: a redactor (the launcher's own, compiled once per process) whose values
        this one masks too, without compiling them again; values added here that ``shared``
        masks already under the same name cost nothing. Only one level: ``shared`` itself must
        have none.
        """
        if shared is not None and shared._shared is not None:
            raise ValueError("a shared redactor cannot itself have a shared redactor")
        self.warnings: list[str] = []
        self._engine_preference = engine
        self._shared: Redactor | None = shared
        self._lock = threading.Lock()
        self._owners: dict[bytes, list[str]] = {}
        self._names: set[str] = set()
        self._tally = Tally()
        self._state: State = (NullEngine(), ())
        self._generation = 0
        self._compiler: threading.Thread | None = None
        #: Keyed digests of the (name, value) pairs whose every variant is masked here.
        self._digests: set[bytes] = set()
        #: Patterns of the shared redactor that this one masks under more names.
        self._extra: dict[bytes, list[str]] = {}
        self._extra_version = 0
        #: The last composition: (shared engine, own engine, extra version, the union's state).
        self._composed: tuple[Engine, Engine, int, Engine | None, State] | None = None
        #: One Hyperscan engine over the shared patterns then this redactor's own (in the
        #: layered engine's order), for large sets of its own (UNION_FROM_PATTERNS).
        self._union: Engine | None = None

    def __repr__(self) -> str:
        engine, _ = self._snapshot()
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
        shared = self._shared
        with self._lock:
            changed = False
            for name, value in items:
                data = _as_bytes(value)
                digest = _value_digest(name, data)
                if digest in self._digests or (shared is not None and shared._has_digest(digest)):
                    self._names.add(name)  # masked already (here, or by the shared redactor)
                    continue
                why = refusal(data)
                if why is not None:
                    if data.strip():
                        self.warnings.append(f"{name}: value not masked ({why})")
                    else:
                        self.warnings.append(f"{name}: value is empty; nothing to mask")
                    continue
                self._names.add(name)
                patterns = variants(data)
                taken = shared._owners_of(patterns) if shared is not None else {}
                for pattern in patterns:
                    shared_owners = taken.get(pattern)
                    if shared_owners is not None:
                        # The shared layer matches it; only the name is new.
                        extra = self._extra.setdefault(pattern, [])
                        if name not in shared_owners and name not in extra:
                            extra.append(name)
                            self._extra_version += 1
                        continue
                    owners = self._owners.setdefault(pattern, [])
                    if name not in owners:
                        owners.append(name)
                        changed = True
                self._digests.add(digest)
            if changed:
                self._rebuild()

    def covers(self, items: Iterable[tuple[str, Value]]) -> bool:
        """True when :meth:`add_many` of ``items`` would change nothing (all masked already)."""
        shared = self._shared
        with self._lock:
            for name, value in items:
                data = _as_bytes(value)
                digest = _value_digest(name, data)
                if digest in self._digests or (shared is not None and shared._has_digest(digest)):
                    continue
                if refusal(data) is not None:
                    continue
                patterns = variants(data)
                taken = shared._owners_of(patterns) if shared is not None else {}
                for pattern in patterns:
                    if name in self._owners.get(pattern, ()) or name in taken.get(pattern, ()):
                        continue
                    if name not in self._extra.get(pattern, ()):
                        return False
        return True

    def _has_digest(self, digest: bytes) -> bool:
        with self._lock:
            return digest in self._digests

    def _owners_of(self, patterns: Iterable[bytes]) -> dict[bytes, tuple[str, ...]]:
        """The names each of ``patterns`` is masked under here (those masked here only)."""
        with self._lock:
            owners = self._owners
            return {p: tuple(owners[p]) for p in patterns if p in owners}

    def _rebuild(self) -> None:
        patterns = sorted(self._owners)
        owners = tuple(tuple(self._owners[p]) for p in patterns)
        self._generation += 1
        if self._shared is not None and self._shared._snapshot()[0].patterns:
            self._union = None
            self._state = self._own_layer(patterns, owners)
            return
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
                self._compile_in_background(
                    lambda: build_engine(patterns, "hyperscan"), owners, self._generation
                )
                return
        engine = build_engine(patterns, self._engine_preference)
        if engine.name == "hyperscan":
            prefix_index(engine)  # its gram database, built now rather than on a first write
        self._state = (engine, owners)

    def _own_layer(self, patterns: list[bytes], owners: Owners) -> State:
        """This redactor's own patterns as the top layer over the shared redactor's.

        Not cached (a run's secrets die with the run) and not through ``build_engine``'s cache
        (which holds the shared redactor's engine). A Hyperscan layer is the patterns alone: the
        shared layer's database finds the wrap breaks.
        """
        preference = self._engine_preference
        if preference not in (None, "hyperscan"):
            return build_engine(patterns, preference), owners
        big = (
            len(patterns) >= BACKGROUND_COMPILE_PATTERNS
            or sum(map(len, patterns)) >= BACKGROUND_COMPILE_BYTES
        )
        union = preference is None and len(patterns) >= UNION_FROM_PATTERNS
        if preference is None and big:
            try:
                quick = AhoCorasickEngine(patterns)
            except EngineUnavailableError:
                pass
            else:
                if union:
                    self._compile_union_in_background(patterns, self._generation)
                else:
                    self._compile_in_background(
                        lambda: LiteralLayer(patterns), owners, self._generation
                    )
                return quick, owners
        try:
            layer: Engine = LiteralLayer(patterns)
        except EngineUnavailableError:
            if preference == "hyperscan":
                raise
            layer = build_engine(patterns, None)
        prefix_index(layer)  # its gram database, built now rather than on a first write
        if union:
            self._compile_union_in_background(patterns, self._generation)
        return layer, owners

    def _compile_union_in_background(self, patterns: list[bytes], generation: int) -> None:
        """One database over the shared patterns and ``patterns`` (see UNION_FROM_PATTERNS);
        :meth:`_snapshot` uses it instead of the two layers once it is ready."""
        assert self._shared is not None  # noqa: S101 - only called for a layered redactor
        base = self._shared._snapshot()[0].patterns

        def compile_union() -> None:
            try:
                engine = HyperscanEngine((*base, *patterns))
                prefix_index(engine)  # built here, not on a stream's first write
            except EngineUnavailableError:
                return  # the layers stay
            with self._lock:
                if self._generation == generation:
                    self._union = engine

        self._compiler = threading.Thread(
            target=compile_union, name="redaction-compile", daemon=True
        )
        self._compiler.start()

    def _compile_in_background(
        self, build: Callable[[], Engine], owners: Owners, generation: int
    ) -> None:
        def compile_fast() -> None:
            try:
                engine = build()
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
        """Wait for a background compile (see BACKGROUND_COMPILE_PATTERNS) to be swapped in,
        this redactor's and the shared redactor's."""
        for redactor in (self, self._shared):
            compiler = redactor._compiler if redactor is not None else None
            if compiler is not None:
                compiler.join(timeout)

    def close(self) -> None:
        """Forget the values and the compiled engine (counts and warnings stay); a redactor
        made with ``shared=`` masks the shared redactor's values no more either."""
        with self._lock:
            self._owners.clear()
            self._extra.clear()
            self._digests.clear()
            self._generation += 1
            self._state = (NullEngine(), ())
            self._shared = None
            self._composed = None
            self._union = None

    @property
    def engine_name(self) -> str:
        return self._snapshot()[0].name

    @property
    def longest_pattern_bytes(self) -> int:
        """The longest variant; streams hold back at most one byte less than this."""
        return self._snapshot()[0].longest

    @property
    def pattern_count(self) -> int:
        return len(self._snapshot()[0].patterns)

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
        engine, owners = self._snapshot()
        out, _, hits = redact_buffer(engine, bytes(data), final=True)
        if hits:
            self._count(owners, hits)
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
            return dict(self._tally.fold())

    # -- for streams -------------------------------------------------------------------------
    def _snapshot(self) -> State:
        """The engine and the names of each of its patterns: with a shared redactor, one
        engine over the union of both sets (recomposed when either side's engine changed)."""
        state = self._state
        shared = self._shared
        if shared is None:
            return state
        base = shared._snapshot()
        composed = self._composed
        if (
            composed is not None
            and composed[0] is base[0]
            and composed[1] is state[0]
            and composed[2] == self._extra_version
            and composed[3] is self._union
        ):
            return composed[4]
        with self._lock:
            if self._shared is None:  # closed meanwhile
                return self._state
            state = self._state
            union = _compose(base, state, self._extra, self._union)
            self._composed = (base[0], state[0], self._extra_version, self._union, union)
        return union

    def _count(self, owners: Owners, hits: list[int]) -> None:
        """Record one mask per name of each pattern in ``hits`` (indexes into ``owners``)."""
        with self._lock:
            self._tally.add(owners, hits)


def _compose(
    base: State, own: State, extra: dict[bytes, list[str]], union: Engine | None = None
) -> State:
    """One state over the union of the shared redactor's ``base`` and a redactor's ``own``;
    ``extra`` names patterns of ``base`` that ``own``'s redactor also masks, under more names.
    ``union``: one engine over exactly both pattern sets in that order, used if it is one."""
    base_engine, base_owners = base
    engine, owners = own
    if not base_engine.patterns and not isinstance(engine, LiteralLayer):
        return own  # nothing shared (a complete engine of its own; wrap triggers included)
    if extra and base_engine.patterns:
        position = {p: i for i, p in enumerate(base_engine.patterns)}
        merged = list(base_owners)
        for pattern, names in extra.items():
            at = position.get(pattern)
            if at is not None:
                merged[at] = tuple(dict.fromkeys((*merged[at], *names)))
        base_owners = tuple(merged)
    if (
        union is not None
        and len(union.patterns) == len(base_engine.patterns) + len(engine.patterns)
        and union.patterns == base_engine.patterns + engine.patterns
    ):
        return union, base_owners + owners
    return layered(base_engine, engine), base_owners + owners


__all__ = ["MASK", "Redactor"]
