"""OPA's ``regex.*`` builtins on RE2 (``google-re2``): Go's regexp syntax and matching rules.

Go's ``regexp`` is RE2: ``\\d \\w \\s \\b`` are ASCII-only, there are no backreferences or
lookarounds, nested repetition (``a++``) and counts above 1000 are errors. ``find``/``split``/
``replace`` follow Go's rules for empty matches (no empty match right after a previous match;
after an empty match the search moves on by one character). Compiled patterns are cached (bounded).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no stubs

from hardened_launcher.ascii_text import is_digits

MAX_PATTERN_CHARS = 10_000

#: Go's ``isValidCaptureName``: ``[A-Za-z0-9_]+``.
_CAPTURE_NAME = re.compile(r"[A-Za-z0-9_]+")


def _options() -> Any:  # noqa: ANN401 - google-re2 ships no types
    options = re2.Options()
    options.log_errors = False  # the engine would write the pattern to stderr
    return options


_OPTIONS = _options()


def _has_any_byte_escape(pattern: str) -> bool:
    """``\\C`` (any byte) is RE2-only; Go refuses it."""
    escaped = False
    for char in pattern:
        if escaped:
            if char == "C":
                return True
            escaped = False
        elif char == "\\":
            escaped = True
    return False


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> Any:  # noqa: ANN401 - google-re2 ships no types
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError("regex: the pattern is too long")
    if _has_any_byte_escape(pattern):
        raise ValueError("regex: error parsing regexp: invalid escape sequence")
    try:
        compiled = re2.compile(pattern, _OPTIONS)
    except re2.error:
        raise ValueError("regex: error parsing regexp") from None
    if not all(_CAPTURE_NAME.fullmatch(name) for name in compiled.groupindex):
        # RE2 takes any letter in a group name; Go only [A-Za-z0-9_]+.
        raise ValueError("regex: error parsing regexp: invalid named capture")
    return compiled


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string")
    return value


def _matches(compiled: Any, text: str, limit: int) -> list[Any]:  # noqa: ANN401 - untyped re2
    """Go's allMatches: at most ``limit`` (negative: all) match objects."""
    found: list[Any] = []
    pos = 0
    prev_end = -1
    end = len(text)
    while (limit < 0 or len(found) < limit) and pos <= end:
        match = compiled.search(text, pos)
        if match is None:
            break
        accept = True
        if match.end() == match.start():
            if match.start() == prev_end:
                accept = False
            pos = match.start() + 1 if match.start() >= pos else pos + 1
        else:
            pos = match.end()
        prev_end = match.end()
        if accept:
            found.append(match)
    return found


try:  # the binding's engine object: ~6x faster than the str wrapper for a yes/no match
    _UNANCHORED: Any = re2._re2.RE2.Anchor.UNANCHORED
except AttributeError:  # pragma: no cover - another google-re2 layout: public API below
    _UNANCHORED = None


def match(pattern: object, value: object) -> bool:
    compiled = _compile(_string(pattern, "regex.match: operand 1"))
    text = _string(value, "regex.match: operand 2")
    engine = getattr(compiled, "_regexp", None)
    if _UNANCHORED is not None and engine is not None:
        data = text.encode("utf-8")
        return bool(engine.Match(_UNANCHORED, data, 0, len(data))[0][0] != -1)
    return compiled.search(text) is not None


def is_valid(pattern: object) -> bool:
    if not isinstance(pattern, str):
        return False
    try:
        _compile(pattern)
    except ValueError:
        return False
    return True


def split(pattern: object, value: object) -> list[str]:
    compiled = _compile(_string(pattern, "regex.split: operand 1"))
    text = _string(value, "regex.split: operand 2")
    if pattern and not text:
        return [""]
    parts: list[str] = []
    begin = 0
    stop = 0
    for found in _matches(compiled, text, -1):
        stop = found.start()
        if found.end() != 0:
            parts.append(text[begin:stop])
        begin = found.end()
    if stop != len(text):
        parts.append(text[begin:])
    return parts


def _limit(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise TypeError("operand 3 must be an integer")
    return int(value)


def find_n(pattern: object, value: object, number: object) -> list[str]:
    compiled = _compile(_string(pattern, "regex.find_n: operand 1"))
    text = _string(value, "regex.find_n: operand 2")
    return [m.group(0) for m in _matches(compiled, text, _limit(number))]


def find_all_string_submatch_n(pattern: object, value: object, number: object) -> list[list[str]]:
    compiled = _compile(_string(pattern, "regex.find_all_string_submatch_n: operand 1"))
    text = _string(value, "regex.find_all_string_submatch_n: operand 2")
    return [
        [m.group(0)] + [g if g is not None else "" for g in m.groups()]
        for m in _matches(compiled, text, _limit(number))
    ]


def _name_char(char: str) -> bool:
    """Go's ``unicode.IsLetter`` or ``unicode.IsDigit`` (category L or Nd), or ``_``."""
    return char == "_" or char.isalpha() or char.isdecimal()


def _group_number(name: str) -> int:
    """Go's number parse of a ``$name``: ASCII digits without a leading zero, else -1."""
    if not is_digits(name) or (name[0] == "0" and len(name) > 1) or len(name) > 9:
        return -1  # 9+ digits: Go stops at 1e8; no pattern has that many groups
    return int(name)


def _expand(template: str, found: Any, names: dict[str, int]) -> str:  # noqa: ANN401 - untyped re2
    """Go's Regexp.Expand: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``.

    A name is letters, digits (any script) and ``_``; it is a group number only when it is
    ASCII digits without a leading zero (``$01`` and ``${\\u0661}`` name groups, which do not exist:
    they expand to nothing); a malformed reference leaves the ``$`` as text."""
    out: list[str] = []
    i = 0
    size = len(template)
    while i < size:
        if template[i] != "$" or i + 1 >= size:
            out.append(template[i])
            i += 1
            continue
        if template[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        brace = template[i + 1] == "{"
        j = i + 2 if brace else i + 1
        k = j
        while k < size and _name_char(template[k]):
            k += 1
        if k == j or (brace and (k >= size or template[k] != "}")):
            out.append("$")  # malformed: the $ is text
            i += 1
            continue
        name = template[j:k]
        i = k + 1 if brace else k
        group = _group_number(name)
        if group < 0:
            group = names.get(name, -1)
        if 0 <= group <= found.re.groups:
            out.append(found.group(group) or "")
    return "".join(out)


def replace(value: object, pattern: object, replacement: object) -> str:
    text = _string(value, "regex.replace: operand 1")
    compiled = _compile(_string(pattern, "regex.replace: operand 2"))
    template = _string(replacement, "regex.replace: operand 3")
    names: dict[str, int] = dict(compiled.groupindex)
    out: list[str] = []
    last_end = 0
    search = 0
    while search <= len(text):
        found = compiled.search(text, search)
        if found is None:
            break
        out.append(text[last_end : found.start()])
        if found.end() > last_end or found.start() == 0:
            out.append(_expand(template, found, names))
        last_end = found.end()
        if search + 1 > found.end():
            search += 1
        else:
            search = found.end()
    out.append(text[last_end:])
    return "".join(out)


def template_match(pattern: object, value: object, open_: object, close: object) -> bool:
    """OPA's regex.template_match: regular expressions between delimiters, literals elsewhere."""
    template = _string(pattern, "regex.template_match: operand 1")
    text = _string(value, "regex.template_match: operand 2")
    start = _string(open_, "regex.template_match: operand 3")
    stop = _string(close, "regex.template_match: operand 4")
    if len(start) != 1 or len(stop) != 1:
        raise ValueError("regex.template_match: delimiters must be single characters")
    parts: list[str] = ["^"]
    literal: list[str] = []
    depth = 0
    inner: list[str] = []
    for char in template:
        if depth == 0 and char == start:
            parts.append(re2.escape("".join(literal)))
            literal = []
            depth = 1
            continue
        if depth > 0:
            if char == start:
                depth += 1
            elif char == stop:
                depth -= 1
                if depth == 0:
                    parts.append("(" + "".join(inner) + ")")
                    inner = []
                    continue
            inner.append(char)
            continue
        literal.append(char)
    if depth != 0:
        raise ValueError("regex.template_match: unbalanced delimiters")
    parts.append(re2.escape("".join(literal)))
    parts.append("$")
    return _compile("".join(parts)).search(text) is not None
