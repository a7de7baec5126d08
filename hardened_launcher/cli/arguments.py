"""Argument types shared by the command groups: numbers checked against their bounds by argparse,
so an out-of-range value is a usage error (exit 64) naming the option, never an overflow later."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["int_in_range"]


def int_in_range(low: int, high: int, *, unit: str = "") -> Callable[[str], int]:
    """An argparse ``type`` for an integer from ``low`` to ``high`` inclusive."""
    suffix = f" {unit}" if unit else ""

    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}{suffix}")
        return value

    parse.__name__ = "int"  # argparse names the type in some messages
    return parse
