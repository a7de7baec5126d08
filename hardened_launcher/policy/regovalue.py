"""Rego values as the launcher's builtins see them: OPA's ordering and OPA's text of a value.

regorus hands extensions plain Python values (``None``, ``bool``, ``int``, ``float``, ``str``,
``list``, ``dict``, ``set``); these helpers give them OPA's total order (null < boolean < number <
string < array < object < set) and OPA's ``term.String()`` text, which ``sprintf`` and friends
print for non-string arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

_RANKS = {type(None): 0, bool: 1, int: 2, float: 2, str: 3, list: 4, dict: 5, set: 6, frozenset: 6}


def _rank(value: object) -> int:
    rank = _RANKS.get(type(value))
    if rank is None:
        raise TypeError(f"not a Rego value: {type(value).__name__}")
    return rank


def compare(a: object, b: object) -> int:
    """OPA's order of two values: negative, zero or positive."""
    ra, rb = _rank(a), _rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if isinstance(a, list) and isinstance(b, list):
        return _compare_sequences(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        ka, kb = sort_values(a), sort_values(b)
        for x, y in zip(ka, kb, strict=False):
            c = compare(x, y) or compare(a[x], b[y])
            if c:
                return c
        return (len(ka) > len(kb)) - (len(ka) < len(kb))
    if isinstance(a, set | frozenset) and isinstance(b, set | frozenset):
        return _compare_sequences(sort_values(a), sort_values(b))
    if a is None:
        return 0
    if isinstance(a, list | dict | set | frozenset) or isinstance(b, list | dict | set | frozenset):
        raise TypeError("not comparable")
    return int((a > b) - (a < b))  # type: ignore[operator]  # same rank: comparable scalars


def _compare_sequences(a: list[object], b: list[object]) -> int:
    for x, y in zip(a, b, strict=False):
        c = compare(x, y)
        if c:
            return c
    return (len(a) > len(b)) - (len(a) < len(b))


def sort_values(values: Iterable[object]) -> list[object]:
    return sorted(values, key=functools.cmp_to_key(compare))


def _number_text(value: int | float) -> str:
    if isinstance(value, int) or (value.is_integer() and abs(value) < 1e21):
        return str(int(value))
    return repr(value)


_ESCAPES = {
    "\a": r"\a",
    "\b": r"\b",
    "\f": r"\f",
    "\n": r"\n",
    "\r": r"\r",
    "\t": r"\t",
    "\v": r"\v",
}


def go_quote_body(text: str, quote: str, *, ascii_only: bool = False) -> str:
    out: list[str] = []
    for char in text:
        if char in (quote, "\\"):
            out.append("\\" + char)
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable() and (char.isascii() or not ascii_only):
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


def rego_text(value: object) -> str:
    """OPA's text of a value (``term.String()``): ``set()``, ``{"a": 1}``, ``[1, "x"]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number_text(value)
    if isinstance(value, str):
        return '"' + go_quote_body(value, '"') + '"'  # Go's strconv.Quote
    if isinstance(value, list):
        return "[" + ", ".join(rego_text(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sort_values(value)
        return "{" + ", ".join(f"{rego_text(k)}: {rego_text(value[k])}" for k in keys) + "}"
    if isinstance(value, set | frozenset):
        if not value:
            return "set()"
        return "{" + ", ".join(rego_text(v) for v in sort_values(value)) + "}"
    raise TypeError(f"not a Rego value: {type(value).__name__}")


def _collides(value: object) -> bool:
    """A set element or object key that may have swallowed another (``False == 0`` in Python).

    The engine hands a set over in Rego order, booleans before numbers, and a Python set keeps
    the first of two equal elements: a ``0`` or ``1`` that survived had no boolean twin, while a
    boolean may have swallowed one.
    """
    return isinstance(value, bool)


def check_lossless(value: object, what: str) -> None:
    """Raise when a set or object handed over from the engine may have lost elements.

    The engine converts a Rego set to a Python set and an object to a dict; ``{false, 0}``
    then holds one element where OPA holds two. Such a value is refused (an evaluation error
    denies the run) rather than computed on with missing elements.
    """
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, set | frozenset):
            if any(_collides(item) for item in current):
                raise ValueError(f"{what}: a set holding a boolean cannot be passed (0/1 lost)")
            stack.extend(current)
        elif isinstance(current, dict):
            if any(_collides(key) for key in current):
                raise ValueError(f"{what}: an object keyed by a boolean cannot be passed")
            stack.extend(current.values())
        elif isinstance(current, list | tuple):
            stack.extend(current)
