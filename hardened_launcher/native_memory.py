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

#: ``mallopt`` parameter numbers in glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

#: Blocks this large or larger get mappings of their own (glibc starts at 128 KiB and adjusts).
LARGE_BLOCK_BYTES = 1024 * 1024


@functools.cache
def _glibc() -> Any:  # noqa: ANN401  # a ctypes library handle
    import ctypes  # noqa: PLC0415  # only where native memory is managed
    import ctypes.util  # noqa: PLC0415

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
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


def fix_malloc_thresholds(threshold: int = LARGE_BLOCK_BYTES) -> None:
    """Serve blocks of ``threshold`` bytes or more from mappings of their own and shrink a heap
    whose free top exceeds it, for the life of the process.

    By default glibc raises both thresholds whenever a large mapped block is freed (up to
    32 MiB and 64 MiB). After that, large temporary blocks come from the arena, and a thread
    arena's free top stays resident: ``malloc_trim`` returns free pages inside an arena but
    trims only the main arena's top. Setting the thresholds turns the adjustment off.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, threshold)
        libc.mallopt(_M_TRIM_THRESHOLD, threshold)
