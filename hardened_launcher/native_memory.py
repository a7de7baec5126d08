"""Native (C heap) memory of the process: give freed memory back, limit malloc arenas.

Hyperscan compiles a pattern database in temporary C memory many times the database's size
(the launcher's own PEM key alone makes literals of several KB in each encoding). glibc keeps
freed memory in the arena of the thread that freed it, and every run thread gets an arena of
its own, so each run's compile left megabytes resident long after the run. Both helpers are
no-ops where the C library is not glibc.
"""

from __future__ import annotations

import functools
from typing import Any

#: ``mallopt`` parameter number of M_ARENA_MAX in glibc's malloc.h.
_M_ARENA_MAX = -8


@functools.cache
def _glibc() -> Any:  # noqa: ANN401  # a ctypes library handle
    import ctypes  # noqa: PLC0415  # only where native memory is managed
    import ctypes.util  # noqa: PLC0415

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def release_freed_memory() -> None:
    """Return the C heap's free pages (of every arena) to the kernel (``malloc_trim``)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def limit_malloc_arenas(count: int) -> None:
    """Let at most ``count`` malloc arenas serve all threads (call before starting threads)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, count)
