"""How the process gets memory for large tensors: the C library's ``malloc`` settings.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves every block above its mmap threshold
(at most 32 MB) with a fresh ``mmap`` and returns it to the system on ``free``. Each new page is then
zero-filled by the kernel on first touch, and the per-edge tensors of a convolution at high L are 10^2 to
10^3 MB. So every iteration pays a page fault per 4 kB of every large temporary: writing into a fresh
186 MB tensor costs about three times as much as writing into one that is reused (``benchmarks/allocator.py``
measures it). That cost belongs to the allocator, not to the layer, but it falls hardest on layers that move
much memory and compute little, such as the equal-function SO(2) layer.

:func:`reuse_freed_memory` makes glibc serve all blocks from its heap and keep freed memory there, so a
training or benchmark loop reuses pages after its first iteration (what jemalloc or tcmalloc, often
recommended for PyTorch on CPU, do by design). It is process-wide and never turned on by importing escn.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["reuse_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_NEVER = 2**31 - 1  # an int: mallopt takes a C int; 2 GB of free heap top before anything is returned


def reuse_freed_memory() -> bool:
    """Ask glibc's ``malloc`` to keep freed memory for reuse (``mallopt``: no mmap, no trimming).

    Process-wide and lasting for the life of the process; an explicit ``malloc_trim(0)`` still returns free
    memory (the benchmark calls it between configurations). Memory freed at the end of an iteration stays
    mapped to the process instead of going back to the system, and the heap can fragment, so the resident
    peak can rise: ``escn bench`` read TFN's peak at L = 4 as 848 MB with it against 640 MB without.

    Returns:
        True if both settings were accepted; False where the C library has no ``mallopt`` (not glibc) or
        refused, in which case nothing changed.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER))
