"""Go ``time.Duration`` text, both ways: ``parse_duration("1h30m")`` and ``format_duration(td)``.

The vendor's launcher reads its timeouts with Go's ``time.ParseDuration``, so operators already
write ``1000s``, ``120m``, ``1h30m``, ``1.5h`` or ``300ms``. This module accepts exactly that
grammar::

    [-+]? ( digits? ( "." digits? )? unit )+      or the bare string "0" (optionally signed)

with units ``ns``, ``us``, ``µs`` (U+00B5), ``μs`` (U+03BC), ``ms``, ``s``, ``m`` and ``h``;
each component needs at least one digit, and there is no whitespace anywhere. Like Go, the total
must fit in a signed 64-bit count of nanoseconds (about 292 years).

Differences from Go:

- Text longer than :data:`MAX_DURATION_TEXT_CHARS` is refused before it is scanned.
- :class:`datetime.timedelta` counts microseconds, so sub-microsecond parts are truncated toward
  zero (``1500ns`` becomes 1µs). :func:`parse_duration_ns` keeps full precision and follows Go's
  arithmetic exactly (fractions go through float64 as in Go), so it returns what Go returns.

Signs are accepted here as Go does; whether a negative duration makes sense is the caller's call
(settings refuse them). :func:`format_duration` writes Go's ``Duration.String`` form (``7m0s``,
``1h10m0s``, ``1.5s``, ``300µs``), and ``parse_duration(format_duration(td)) == td`` for every
``td`` within Go's range.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

__all__ = [
    "MAX_DURATION_NS",
    "MAX_DURATION_TEXT_CHARS",
    "DurationError",
    "format_duration",
    "format_ns",
    "parse_duration",
    "parse_duration_ns",
]

NANOSECOND: Final = 1
MICROSECOND: Final = 1_000
MILLISECOND: Final = 1_000_000
SECOND: Final = 1_000_000_000
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE

UNITS: Final[dict[str, int]] = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # µ MICRO SIGN, what Go prints
    "\u03bcs": MICROSECOND,  # μ GREEK SMALL LETTER MU, also accepted by Go
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}

#: Largest magnitude Go's ``time.Duration`` (an int64 of nanoseconds) can hold.
MAX_DURATION_NS: Final = (1 << 63) - 1
#: Refuse longer text outright: no real duration needs it, and it bounds the work per call.
MAX_DURATION_TEXT_CHARS: Final = 256

_DIGITS: Final = frozenset("0123456789")
_OUT_OF_RANGE: Final = "out of range (Go durations stop at about 292 years)"
EXPECTED_FORM: Final = (
    "a Go duration such as 90s, 7m, 1h30m or 1.5h (units ns, us, ms, s, m, h; no spaces)"
)


class DurationError(ValueError):
    """The text is not a Go duration.

    ``why`` says what is wrong without quoting the text; ``str()`` adds at most 40 characters of
    it. Callers that print the value themselves (or must not) use ``why``.
    """

    def __init__(self, why: str, text: str | None = None) -> None:
        self.why = why
        super().__init__(f"invalid duration {_quote(text)}: {why}" if text is not None else why)


def _quote(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "…")


def parse_duration_ns(text: str) -> int:
    """Parse Go duration text into a signed number of nanoseconds.

    Raises :class:`DurationError` (a :class:`ValueError`) for anything else, and for values
    outside Go's int64 range.
    """
    if not isinstance(text, str):
        raise DurationError(f"a duration must be text, not {type(text).__name__}")
    if len(text) > MAX_DURATION_TEXT_CHARS:
        raise DurationError(f"the text is longer than {MAX_DURATION_TEXT_CHARS} characters")
    rest = text
    negative = False
    if rest[:1] in ("-", "+"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise DurationError(f"expected {EXPECTED_FORM}", text)

    limit = 1 << 63  # Go accumulates an unsigned magnitude and allows 2**63 only when negative
    total = 0
    pos = 0
    end = len(rest)
    while pos < end:
        # digits before the point (Go's leadingInt: overflow is an error)
        whole = 0
        start = pos
        while pos < end and rest[pos] in _DIGITS:
            if whole > limit // 10:
                raise DurationError(_OUT_OF_RANGE, text)
            whole = whole * 10 + ord(rest[pos]) - 48
            if whole > limit:
                raise DurationError(_OUT_OF_RANGE, text)
            pos += 1
        had_whole = pos > start
        # digits after the point (Go's leadingFraction: digits past int64 precision are ignored)
        fraction, scale, had_fraction = 0, 1.0, False
        if pos < end and rest[pos] == ".":
            pos += 1
            frac_start = pos
            overflow = False
            while pos < end and rest[pos] in _DIGITS:
                if not overflow:
                    if fraction > (limit - 1) // 10:
                        overflow = True
                    else:
                        candidate = fraction * 10 + ord(rest[pos]) - 48
                        if candidate > limit:
                            overflow = True
                        else:
                            fraction = candidate
                            scale *= 10
                pos += 1
            had_fraction = pos > frac_start
        if not had_whole and not had_fraction:
            raise DurationError("each part needs a number before its unit", text)
        unit_start = pos
        while pos < end and rest[pos] not in _DIGITS and rest[pos] != ".":
            pos += 1
        unit_text = rest[unit_start:pos]
        if not unit_text:
            raise DurationError(f"a unit is missing; expected {EXPECTED_FORM}", text)
        unit = UNITS.get(unit_text)
        if unit is None:
            raise DurationError(
                f"unknown unit {_quote(unit_text)}; use ns, us, ms, s, m or h", text
            )
        if whole > limit // unit:
            raise DurationError(_OUT_OF_RANGE, text)
        part = whole * unit
        if fraction > 0:
            # Go computes the fraction in float64 and truncates; doing the same keeps results
            # identical to Go's to the nanosecond.
            part += int(float(fraction) * (float(unit) / scale))
            if part > limit:
                raise DurationError(_OUT_OF_RANGE, text)
        total += part
        if total > limit:
            raise DurationError(_OUT_OF_RANGE, text)
    if not negative and total > MAX_DURATION_NS:
        raise DurationError(_OUT_OF_RANGE, text)
    return -total if negative else total


def parse_duration(text: str) -> timedelta:
    """Parse Go duration text into a :class:`timedelta` (sub-microsecond parts truncated).

    Raises :class:`DurationError` (a :class:`ValueError`) for anything that is not a duration.
    """
    ns = parse_duration_ns(text)
    micro = abs(ns) // MICROSECOND
    return timedelta(microseconds=-micro if ns < 0 else micro)


def _trim_fraction(value: int, digits: int) -> str:
    """``value`` as a decimal fraction of ``digits`` places, trailing zeros (and dot) removed."""
    whole, frac = divmod(value, 10**digits)
    frac_text = f"{frac:0{digits}d}".rstrip("0")
    return f"{whole}.{frac_text}" if frac_text else str(whole)


def format_ns(ns: int) -> str:
    """Go's ``Duration.String`` for a number of nanoseconds (any size; Go stops at int64)."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    magnitude = abs(ns)
    if magnitude < SECOND:
        if magnitude < MICROSECOND:
            return f"{sign}{magnitude}ns"
        if magnitude < MILLISECOND:
            return f"{sign}{_trim_fraction(magnitude, 3)}\u00b5s"
        return f"{sign}{_trim_fraction(magnitude, 6)}ms"
    hours, rest = divmod(magnitude, HOUR)
    minutes, rest = divmod(rest, MINUTE)
    text = f"{_trim_fraction(rest, 9)}s"
    if magnitude >= MINUTE:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def format_duration(value: timedelta) -> str:
    """Render ``value`` the way Go's ``Duration.String`` does: ``7m0s``, ``1h10m0s``, ``1.5s``."""
    micro = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    return format_ns(micro * MICROSECOND)
