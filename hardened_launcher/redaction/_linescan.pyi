"""Types of the compiled wrap-break helper (``_linescan.c``)."""

from typing_extensions import Buffer

WRAP_ALPHABET: bytes
WRAP_MIN_WIDTH: int

def wrap_newlines(data: Buffer, skip: int, /) -> list[int]: ...
def wrap_breaks(data: Buffer, behind: Buffer, /) -> list[tuple[int, int]]: ...
def joined_windows(
    data: Buffer, breaks: list[tuple[int, int]], longest: int, span: int, /
) -> tuple[bytes, list[int], list[int], list[int]]: ...
def gram_table(patterns: list[bytes], /) -> bytes | None: ...
def seed_breaks(
    data: Buffer,
    breaks: list[tuple[int, int]],
    longest: int,
    span: int,
    tables: list[bytes],
    /,
) -> list[tuple[int, int]]: ...

PREFIX_GRAM: int

def prefix_table(grams: list[bytes], /) -> bytes: ...
def prefix_starts(text: Buffer, table: Buffer, /) -> list[int]: ...
