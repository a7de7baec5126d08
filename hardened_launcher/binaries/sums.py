"""SHA256SUMS files: a strict, bounded, pure parser (no I/O) and a renderer.

Accepted line forms (one entry per line, forms may be mixed in one file):

``<64 hex>  <name>``
    GNU coreutils text mode (``sha256sum``): the digest, two spaces, the name.
``<64 hex> *<name>``
    GNU coreutils binary mode (``sha256sum -b``): the digest, a space, ``*``, the name.
``SHA256 (<name>) = <64 hex>``
    BSD tag form (``sha256sum --tag``, ``shasum -a 256 --tag``, BSD ``sha256``).

Rules (everything else is ``sums_malformed``, naming the line number but never its content):

- The file is UTF-8, at most :data:`MAX_SUMS_BYTES` bytes and :data:`MAX_SUMS_ENTRIES` entries
  (``sums_too_large``). Blank lines are ignored; one ``\\r`` before each ``\\n`` is tolerated.
- Hex digits may be upper or lower case; digests are stored lower case.
- Names are 1..:data:`MAX_NAME_BYTES` bytes with no control characters, no backslash and no
  leading or trailing whitespace.
  GNU's escaped form (a line starting with ``\\``) is refused rather than unescaped.
- A name may be a relative path (``dist/tool``): it must not be absolute and must not have
  empty, ``.`` or ``..`` components. One leading ``./`` is dropped (``./tool`` is ``tool``).
  Lookups match the whole name exactly, so an entry inside a directory never matches a bare
  file name: a release's sums file must list the bare names of the files it covers.
- The same name may appear more than once in the file; asking for such a name is refused with
  ``sums_entry_duplicate`` (even when the digests agree), while other names stay usable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from hardened_launcher.errors import UntrustedInputError

MAX_SUMS_BYTES = 1024 * 1024
MAX_SUMS_ENTRIES = 10_000
MAX_NAME_BYTES = 4096
SHA256_HEX_CHARS = 64

_HEX = frozenset("0123456789abcdefABCDEF")
# C0 controls, DEL and C1 controls; also the Unicode line/paragraph separators, which some
# terminals and editors treat as line breaks.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BSD_PREFIX = "SHA256 ("
_BSD_INFIX = ") = "


class SumsStyle(StrEnum):
    """How an entry was (or will be) written."""

    TEXT = "text"  # "<hex>  <name>"
    BINARY = "binary"  # "<hex> *<name>"
    TAG = "tag"  # "SHA256 (<name>) = <hex>"


def _malformed(source: str, line: int, what: str) -> UntrustedInputError:
    return UntrustedInputError(
        f"{source} line {line} is malformed: {what}",
        hint="the sums file must be the output of sha256sum (or sha256sum --tag) for the release",
        reason="sums_malformed",
    )


def _is_sha256_hex(text: str) -> bool:
    return len(text) == SHA256_HEX_CHARS and all(c in _HEX for c in text)


def check_name(name: str) -> str | None:
    """Return why ``name`` is not an acceptable entry name, or ``None`` when it is."""
    if not name:
        return "the file name is empty"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"the file name is longer than {MAX_NAME_BYTES} bytes"
    if _CONTROL.search(name):
        return "the file name contains a control character"
    if name != name.strip():
        return "the file name starts or ends with whitespace"
    if "\\" in name:
        return "the file name contains a backslash"
    if name.startswith("/"):
        return "the file name is an absolute path"
    if any(part in {"", ".", ".."} for part in name.split("/")):
        return "the file name has an empty, '.' or '..' path component"
    return None


@dataclass(frozen=True, kw_only=True)
class SumsEntry:
    """One ``digest, name`` pair; validated when built."""

    name: str
    sha256: str
    style: SumsStyle = SumsStyle.TEXT
    line: int = 0

    def __post_init__(self) -> None:
        if not _is_sha256_hex(self.sha256) or self.sha256 != self.sha256.lower():
            raise ValueError("SumsEntry.sha256 must be 64 lower-case hex digits")
        problem = check_name(self.name)
        if problem is not None:
            raise ValueError(f"SumsEntry.name is not acceptable: {problem}")


@dataclass(frozen=True, kw_only=True)
class SumsFile:
    """A parsed sums file. ``source`` names it in messages (a label, not its content)."""

    entries: tuple[SumsEntry, ...]
    source: str = "SHA256SUMS"

    def lookup(self, name: str) -> SumsEntry:
        """The single entry for ``name``, or raise ``sums_entry_missing``/``_duplicate``."""
        found = [entry for entry in self.entries if entry.name == name]
        if not found:
            raise UntrustedInputError(
                f"{self.source} has no entry for {name!r}",
                hint=(
                    "check that the file is part of this release and that the sums file lists "
                    "its bare file name (entries inside directories never match)"
                ),
                reason="sums_entry_missing",
            )
        if len(found) > 1:
            lines = ", ".join(str(entry.line) for entry in found)
            raise UntrustedInputError(
                f"{self.source} lists {name!r} {len(found)} times (lines {lines})",
                hint="a release must list each file exactly once; ask the publisher to fix it",
                reason="sums_entry_duplicate",
            )
        return found[0]


def _parse_line(text: str, source: str, number: int) -> SumsEntry:
    if text.startswith("\\"):
        raise _malformed(source, number, "escaped file names (a leading backslash) are refused")
    if text.startswith(_BSD_PREFIX):
        digest = text[-SHA256_HEX_CHARS:]
        head = text[:-SHA256_HEX_CHARS]
        if not _is_sha256_hex(digest) or not head.endswith(_BSD_INFIX):
            raise _malformed(source, number, "expected 'SHA256 (name) = <64 hex digits>'")
        name = head[len(_BSD_PREFIX) : -len(_BSD_INFIX)]
        style = SumsStyle.TAG
    else:
        digest = text[:SHA256_HEX_CHARS]
        separator = text[SHA256_HEX_CHARS : SHA256_HEX_CHARS + 2]
        if not _is_sha256_hex(digest) or separator not in {"  ", " *"}:
            raise _malformed(
                source,
                number,
                "expected 64 hex digits, then two spaces (or ' *') and the file name",
            )
        name = text[SHA256_HEX_CHARS + 2 :]
        style = SumsStyle.BINARY if separator == " *" else SumsStyle.TEXT
    name = name.removeprefix("./")
    problem = check_name(name)
    if problem is not None:
        raise _malformed(source, number, problem)
    return SumsEntry(name=name, sha256=digest.lower(), style=style, line=number)


def check_sums_size(data: bytes, *, source: str = "SHA256SUMS") -> None:
    """Refuse a sums file over :data:`MAX_SUMS_BYTES` (checked before its signature too)."""
    if len(data) > MAX_SUMS_BYTES:
        raise UntrustedInputError(
            f"{source} is larger than {MAX_SUMS_BYTES} bytes",
            hint="a release's sums file is small; this is not one",
            reason="sums_too_large",
        )


def parse_sums(data: bytes, *, source: str = "SHA256SUMS") -> SumsFile:
    """Parse a sums file. Raises :class:`UntrustedInputError` (and nothing else) on bad data."""
    check_sums_size(data, source=source)
    entries: list[SumsEntry] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.removesuffix(b"\r")
        if not line:
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed(source, number, "the line is not valid UTF-8") from None
        entries.append(_parse_line(text, source, number))
        if len(entries) > MAX_SUMS_ENTRIES:
            raise UntrustedInputError(
                f"{source} has more than {MAX_SUMS_ENTRIES} entries",
                hint="a release's sums file is small; this is not one",
                reason="sums_too_large",
            )
    return SumsFile(entries=tuple(entries), source=source)


def render_sums(entries: Iterable[SumsEntry], *, crlf: bool = False) -> bytes:
    """Write entries in their own style, one per line (the inverse of :func:`parse_sums`)."""
    newline = "\r\n" if crlf else "\n"
    lines: list[str] = []
    for entry in entries:
        if entry.style is SumsStyle.TAG:
            lines.append(f"{_BSD_PREFIX}{entry.name}{_BSD_INFIX}{entry.sha256}")
        elif entry.style is SumsStyle.BINARY:
            lines.append(f"{entry.sha256} *{entry.name}")
        else:
            lines.append(f"{entry.sha256}  {entry.name}")
    return "".join(line + newline for line in lines).encode("utf-8")
