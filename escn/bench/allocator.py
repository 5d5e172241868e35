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


def main(argv: list[str] | None = None) -> int:
    """``python -m escn.bench.allocator``: time a fresh, a reused and an ``empty`` + ``fill_`` block (see above)."""
    import torch  # here: importing this module must not import torch (escn bench calls it first)

    from escn.bench.blocks import median_time

    ap = argparse.ArgumentParser(description="What fresh memory costs: writing a large tensor into a new "
                                             "allocation vs into a reused one.")
    ap.add_argument("--mb", type=float, default=186.0, help="tensor size in MB (default 186)")
    ap.add_argument("--reuse", action="store_true", help="call reuse_freed_memory() first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
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
    print(f"{mb:.0f} MB, {args.threads} threads, allocator: {'reuse' if args.reuse else 'default'}")
    print(f"  clone (fresh block)       {1e3 * t_new:7.1f} ms")
    print(f"  copy into a reused block  {1e3 * t_old:7.1f} ms")
    print(f"  empty + fill_             {1e3 * t_fill:7.1f} ms")
    print(f"  fresh / reused            {t_new / t_old:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
