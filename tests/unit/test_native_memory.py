"""The C heap's freed memory goes back to the kernel (each run's Hyperscan compile left it)."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys
from pathlib import Path

import pytest

from hardened_launcher.native_memory import limit_malloc_arenas, release_freed_memory

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="glibc malloc, /proc")


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_freed_heap_memory_in_the_middle_of_the_heap_is_returned() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    block = 32 * 1024  # below the mmap threshold: served from the heap
    blocks = [libc.malloc(block) for _ in range(1025)]  # 32 MiB
    for address in blocks:
        ctypes.memset(address, 1, block)
    pin = blocks.pop()  # the last one, at the heap's top: free() alone cannot shrink the heap
    for address in blocks:
        libc.free(address)
    before = rss_bytes()
    release_freed_memory()
    after = rss_bytes()
    libc.free(pin)
    assert before - after > 16 * 1024 * 1024


def test_limiting_arenas_is_accepted() -> None:
    limit_malloc_arenas(8)  # this process keeps glibc's default bound (8 per core) or less
    release_freed_memory()
    assert rss_bytes() > 0


_THREAD_BLOCK = """
import ctypes, ctypes.util, sys, threading
from pathlib import Path
from hardened_launcher.native_memory import fix_malloc_thresholds

def rss():
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "fixed":
    fix_malloc_thresholds()
big = libc.malloc(24 << 20)  # mapped; freeing it raises glibc's thresholds unless fixed
libc.free(big)
result = []

def work():
    keep = libc.malloc(64)  # the thread's arena stays in use, as a run thread's does
    block = libc.malloc(12 << 20)
    ctypes.memset(block, 1, 12 << 20)
    before = rss()
    libc.free(block)
    result.append(before - rss())
    libc.free(keep)

thread = threading.Thread(target=work)
thread.start()
thread.join()
print(result[0])
"""


def test_fixed_thresholds_return_a_threads_large_block_when_it_is_freed() -> None:
    """A large block freed by a thread leaves the process at once (glibc's adjusted thresholds
    would keep it in the thread's arena, where ``malloc_trim`` does not reach its top)."""
    freed = subprocess.run(
        [sys.executable, "-c", _THREAD_BLOCK, "fixed"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert int(freed.stdout) > 10 * 1024 * 1024
