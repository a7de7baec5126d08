"""Reading files and documents from outside within bounds: size, kind of file, nesting, aliases.

Every file the product reads goes through :func:`read_bounded`: it is opened without blocking
(a FIFO or a terminal never hangs the open), must be a regular file (``/dev/zero``, a directory or
a FIFO is refused before a byte is read), and at most ``max_bytes + 1`` bytes are read, so an
oversized file costs ``max_bytes`` of memory and no more. A file that is missing, unreadable or
not a regular file raises :class:`~hardened_launcher.errors.InputFileError` (exit 66, one code on
every command) unless the caller names its own error class (a file named by a setting is a
configuration error).

Parsed documents are bounded too: :func:`check_json_depth` refuses JSON nested deeper than a limit
(and names the line and column) before :mod:`json` recurses into it, and :func:`load_yaml` reads
YAML with no anchors or aliases (no "billion laughs"), string keys only, no duplicate keys and a
nesting limit — the rules the run-spec parser has always had, in one place.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from hardened_launcher.errors import InputFileError, LauncherError, UntrustedInputError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DocumentTooDeepError",
    "check_json_depth",
    "describe_path",
    "load_json",
    "load_toml",
    "load_yaml",
    "read_bounded",
]

# Deep enough for every document the launcher reads; shallow enough that no recursive consumer
# (json, the policy engine, canonical JSON of the audit log) meets Python's recursion limit.
DEFAULT_MAX_DEPTH: Final = 64

_OPEN_FLAGS: Final = (
    os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0) | os.O_NONBLOCK
)
_JSON_TOKENS: Final = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)

ErrorFactory = Callable[..., LauncherError]


class DocumentTooDeepError(ValueError):
    """A document nests deeper than allowed; ``line`` and ``column`` are 1-based."""

    def __init__(self, max_depth: int, line: int, column: int) -> None:
        super().__init__(f"nests deeper than {max_depth} levels at line {line}, column {column}")
        self.max_depth = max_depth
        self.line = line
        self.column = column


def describe_path(path: Path | str) -> str:
    """``path`` as text that is safe to show: undecodable bytes (a non-UTF-8 file name) and
    control characters are escaped, so the name can go into a message and a terminal."""
    shown = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in shown
    )


def _unreadable(
    what: str, path: Path, why: str, error: ErrorFactory | None, reason: str
) -> LauncherError:
    factory: ErrorFactory = error or InputFileError
    return factory(
        f"cannot read the {what} {describe_path(path)}: {why}",
        hint="check the path, that it is a regular file and that this user may read it",
        reason=reason,
    )


def read_bounded(
    path: Path,
    *,
    max_bytes: int,
    what: str,
    unreadable: ErrorFactory | None = None,
    too_large: ErrorFactory | None = None,
    reason: str = "input_unreadable",
) -> bytearray:
    """The whole content of the regular file ``path``, at most ``max_bytes`` long.

    ``what`` names the file in messages ("values file"). A missing, unreadable or non-regular
    file raises ``unreadable`` (default :class:`InputFileError`, exit 66); a larger one raises
    ``too_large`` (default :class:`UntrustedInputError`) after reading ``max_bytes + 1`` bytes.
    The result is a ``bytearray`` sized from the file, so a caller holding a secret can wipe it
    (no other copy is made).
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise _unreadable(what, path, exc.strerror or "cannot open", unreadable, reason) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise _unreadable(what, path, kind, unreadable, reason)
        data = bytearray(min(info.st_size, max_bytes) + 1)
        filled = 0
        while filled < len(data):
            count = os.readv(fd, [memoryview(data)[filled:]])
            if count == 0:
                break
            filled += count
            if filled == len(data) and filled <= max_bytes:  # the file grew while being read
                data.extend(bytes(min(len(data), max_bytes + 1 - len(data))))
    except OSError as exc:
        raise _unreadable(what, path, exc.strerror or "read failed", unreadable, reason) from None
    finally:
        os.close(fd)
    if filled > max_bytes:
        data[:] = bytes(len(data))
        factory: ErrorFactory = too_large or UntrustedInputError
        raise factory(
            f"the {what} {describe_path(path)} is larger than {max_bytes} bytes",
            hint="check that you passed the right file",
            reason="input_too_large",
        )
    del data[filled:]
    return data


def _line_column(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def check_json_depth(text: str, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Raise :class:`DocumentTooDeepError` when the JSON ``text`` nests arrays and objects deeper
    than ``max_depth``. Strings are skipped; the text need not be valid JSON (the parser that
    runs next reports that)."""
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        found = match.group()
        if found in {"[", "{"}:
            depth += 1
            if depth > max_depth:
                raise DocumentTooDeepError(max_depth, *_line_column(text, match.start()))
        elif found in {"]", "}"}:
            depth = max(0, depth - 1)


def load_json(text: str | bytes | bytearray, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:  # noqa: ANN401
    """``json.loads`` after :func:`check_json_depth`; ``ValueError`` for bad or too deep JSON."""
    decoded = text if isinstance(text, str) else bytes(text).decode("utf-8")
    check_json_depth(decoded, max_depth=max_depth)
    try:
        return json.loads(decoded)
    except RecursionError:  # pragma: no cover - the depth check runs first
        raise DocumentTooDeepError(max_depth, 1, 1) from None


def load_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads``; a document nested so deep that the parser runs out of stack raises
    :class:`DocumentTooDeepError` (a ``ValueError``) instead of ``RecursionError``."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise DocumentTooDeepError(sys.getrecursionlimit(), 1, 1) from None


def load_yaml(text: str, *, what: str, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:  # noqa: ANN401
    """Parse ``text`` with :class:`~hardened_launcher.strict_yaml.StrictYamlLoader`;
    ``yaml.YAMLError`` when refused.

    The message of a refusal the loader raises names the rule broken and the place; PyYAML's
    own messages may quote the document, so callers show only their ``problem_mark``.
    """
    # PyYAML loads with the first YAML document, not with every reader of bounded files.
    from hardened_launcher.strict_yaml import load_strict  # noqa: PLC0415

    return load_strict(text, what=what, max_depth=max_depth)
