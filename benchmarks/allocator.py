"""What fresh memory costs: writing a large tensor into a new allocation vs into a reused one.

Copies a (E, P) float32 tensor of about the size of the per-edge TFN weights at L = 4 (3,300 edges x 14,080
weights, 186 MB) three ways: into a tensor allocated for the copy (``clone``), into a preallocated tensor, and
``empty`` + ``fill_``. The first and last pay the kernel's zero-fill of every new page when glibc serves the
block with a fresh mmap, as it does for every block above 32 MB. With ``--reuse`` the process first calls
:func:`escn.bench.allocator.reuse_freed_memory`, after which freed blocks are reused and ``clone`` costs about
as much as the preallocated copy.

    python -m benchmarks.allocator [--mb 186] [--reuse] [--huge-pages] [--threads 2]

(from the repository root; run it once with and once without ``--reuse``: the setting lasts for the process).
Unlike the other benchmarks it runs with 4 kB pages unless ``--huge-pages`` is given
(:func:`escn.bench.allocator.enable_transparent_huge_pages`), since page faults are what it measures.
"""

from __future__ import annotations

import argparse
import sys

import torch

from escn.bench.allocator import huge_pages_in_use, reuse_freed_memory
from escn.bench.blocks import median_time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=186.0, help="tensor size in MB (default 186)")
    ap.add_argument("--reuse", action="store_true", help="call reuse_freed_memory() first")
    ap.add_argument("--huge-pages", action="store_true", help="transparent huge pages for large tensors "
                    "(enable_transparent_huge_pages(), applied at start-up)")
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
    print(f"{mb:.0f} MB, {args.threads} threads, allocator: {'reuse' if args.reuse else 'default'}, "
          f"huge pages: {'on' if huge_pages_in_use() else 'off'}")
    print(f"  clone (fresh block)       {1e3 * t_new:7.1f} ms")
    print(f"  copy into a reused block  {1e3 * t_old:7.1f} ms")
    print(f"  empty + fill_             {1e3 * t_fill:7.1f} ms")
    print(f"  fresh / reused            {t_new / t_old:7.2f}x")
    return 0


if __name__ == "__main__":
    if "--huge-pages" in sys.argv[1:]:
        from escn.bench.allocator import enable_transparent_huge_pages

        enable_transparent_huge_pages()  # before the first tensor (docs/performance.md)
    raise SystemExit(main())
