"""How the process gets memory for large tensors: the C library's ``malloc`` settings.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves every block above its mmap threshold
(at most 32 MB) with a fresh ``mmap`` and returns it to the system on ``free``. Each new page is then
zero-filled by the kernel on first touch, and the per-edge tensors of a convolution at high L are 10^2 to
10^3 MB. So every iteration pays a page fault per 4 kB of every large temporary: writing into a fresh
186 MB tensor costs about three times as much as writing into one that is reused (``python -m escn.bench.allocator``
measures it). That cost belongs to the allocator, not to the layer, but it falls hardest on layers that move
much memory and compute little, such as the equal-function SO(2) layer.

:func:`reuse_freed_memory` makes glibc serve all blocks from its heap and keep freed memory there, so a
training or benchmark loop reuses pages after its first iteration (what jemalloc or tcmalloc, often
recommended for PyTorch on CPU, do by design). It is process-wide and never turned on by importing escn.

:func:`enable_transparent_huge_pages` backs large CPU tensors with transparent huge pages (2 MB instead of
4 kB pages, so about 500 times fewer page faults on first touch): with 4 kB pages a fresh 210 MB tensor took
98 ms to allocate and fill, 18 ms with huge pages. ``escn bench`` and ``python -m escn.bench.*`` call it at
start-up; importing escn changes nothing.

Run as a module, it measures what fresh memory costs: it copies a (E, P) float32 tensor of about the size of
the per-edge TFN weights at L = 4 (3,300 edges x 14,080 weights, 186 MB) three ways: into a tensor allocated
for the copy (``clone``), into a preallocated tensor, and ``empty`` + ``fill_``. The first and last pay the
kernel's zero-fill of every new page when glibc serves the block with a fresh mmap, as it does for every block
above 32 MB. With ``--reuse`` the process first calls :func:`reuse_freed_memory`, after which freed blocks are
reused and ``clone`` costs about as much as the preallocated copy.

    python -m escn.bench.allocator [--mb 186] [--reuse] [--threads 2]

(run it once with and once without ``--reuse``: the setting lasts for the process).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import sys

import torch

__all__ = ["enable_transparent_huge_pages", "huge_pages_in_use", "reuse_freed_memory"]

#: PyTorch's switch for huge-page-aligned, ``madvise(MADV_HUGEPAGE)``-d CPU allocations of 2 MB and more; read
#: once, at the process's first CPU tensor allocation
THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"

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


def enable_transparent_huge_pages() -> bool:
    """Ask PyTorch to back CPU tensors of 2 MB and more with transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``).

    Process-wide and lasting for the life of the process. PyTorch reads the setting once, at the first CPU
    tensor allocation of the process, so call this before any tensor is created (importing torch and escn
    allocates none); afterwards it changes nothing. An explicit ``THP_MEM_ALLOC_ENABLE`` in the environment
    (e.g. ``0`` to opt out) is left as it is. The kernel must allow huge pages
    (``/sys/kernel/mm/transparent_hugepage/enabled``: ``always`` or ``madvise``).

    Returns:
        True if large CPU tensors are now allocated for huge pages (:func:`huge_pages_in_use`); False on other
        systems than Linux, when the environment opts out, or when the process allocated tensors before.
    """
    if not sys.platform.startswith("linux"):
        return False
    os.environ.setdefault(THP_VARIABLE, "1")
    return huge_pages_in_use()


def huge_pages_in_use() -> bool:
    """True if PyTorch allocates large CPU tensors for transparent huge pages in this process: a 4 MB probe
    tensor lies in a memory mapping marked for huge pages (``hg`` in its ``VmFlags``, Linux ``/proc/self/smaps``).
    Allocates the probe, so this fixes PyTorch's setting if nothing had been allocated yet. False where
    ``/proc/self/smaps`` cannot be read."""
    probe = torch.empty(1 << 20, dtype=torch.float32)  # 4 MB, above PyTorch's 2 MB huge-page threshold
    address = probe.data_ptr()
    try:
        with open("/proc/self/smaps") as f:
            inside = False
            for line in f:
                head = line.split(maxsplit=1)[0]
                if "-" in head and not head.endswith(":"):
                    start, end = (int(v, 16) for v in head.split("-"))
                    inside = start <= address < end
                elif inside and head == "VmFlags:":
                    return "hg" in line.split()[1:]
    except OSError:
        return False
    finally:
        del probe
    return False


def main(argv: list[str] | None = None) -> int:
    """``python -m escn.bench.allocator``: time a fresh, a reused and an ``empty`` + ``fill_`` block (see above)."""
    from escn.bench.blocks import median_time

    ap = argparse.ArgumentParser(
        description="What fresh memory costs: writing a large tensor into a new allocation vs into a reused one."
    )
    ap.add_argument("--mb", type=float, default=186.0, help="tensor size in MB (default 186)")
    ap.add_argument("--reuse", action="store_true", help="call reuse_freed_memory() first")
    ap.add_argument("--huge-pages", action="store_true", help="call enable_transparent_huge_pages() first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    huge = enable_transparent_huge_pages() if args.huge_pages else huge_pages_in_use()
    if args.reuse and not reuse_freed_memory():
        print("reuse_freed_memory() is not available here (not glibc): the numbers below are the default allocator's")
    torch.set_num_threads(args.threads)
    n = int(args.mb * 1e6 / 4)
    src = torch.randn(n // 1024, 1024)
    dst = torch.empty_like(src)
    t_new = median_time(lambda: src.clone(), args.repeats, warmup=1)
    t_old = median_time(lambda: dst.copy_(src), args.repeats, warmup=1)
    t_fill = median_time(lambda: torch.empty_like(src).fill_(1.0), args.repeats, warmup=1)
    mb = src.numel() * 4 / 1e6
    print(
        f"{mb:.0f} MB, {args.threads} threads, allocator: {'reuse' if args.reuse else 'default'}, "
        f"huge pages: {'on' if huge else 'off'}"
    )
    print(f"  clone (fresh block)       {1e3 * t_new:7.1f} ms")
    print(f"  copy into a reused block  {1e3 * t_old:7.1f} ms")
    print(f"  empty + fill_             {1e3 * t_fill:7.1f} ms")
    print(f"  fresh / reused            {t_new / t_old:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
