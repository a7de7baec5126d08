"""Types of the compiled match collector (``_matches.c``)."""

from typing_extensions import Buffer

class MatchTable:
    def __init__(
        self,
        lengths: list[int],
        indexes: list[int],
        longer: list[list[tuple[bytes, int]]],
    ) -> None: ...

class MatchSink:
    def __init__(self) -> None: ...
    def __call__(self, expr: int, start: int, to: int, flags: int, context: object, /) -> None: ...
    def take(self, table: MatchTable, data: Buffer, /) -> None: ...
    def take_joined(
        self,
        table: MatchTable,
        text: Buffer,
        cuts: list[int],
        seg_j: list[int],
        seg_o: list[int],
        /,
    ) -> None: ...
    def select(self) -> list[tuple[int, int, int]]: ...
    def redact(self, data: Buffer, limit: int, mask: Buffer, /) -> tuple[bytes, int, list[int]]: ...
