"""Timing of escn.data.graph.radius_graph (cell list) against a brute-force N^2 search.

Random uniform clouds at a liquid/solid-like density (default 0.085 atoms / A^3) with a
5 A cutoff (~45 neighbours per atom), open and periodic (cubic box), for 100, 1,000 and
10,000 atoms.  The brute-force reference (all pairs times all needed image shifts,
chunked to bound memory) is timed in the same run where N^2 * shifts is small enough,
and its edge count is checked against ours.

    python -m benchmarks.radius_graph [--sizes 100 1000 10000] [--density 0.085] [--cutoff 5]

(from the repository root, or ``python benchmarks/radius_graph.py`` with escn installed).
"""

from __future__ import annotations

import argparse
import itertools
import math
from typing import List, Optional

import torch

from escn.bench.blocks import median_time
from escn.data.graph import radius_graph

# brute force only when pairs x shifts stays below this (time and memory)
_BRUTE_FORCE_LIMIT = 1.2e8


def brute_force_count(pos: torch.Tensor, cutoff: float, cell: Optional[torch.Tensor]) -> int:
    """Number of directed edges |pos[j] - pos[i] + S @ cell| < cutoff, excluding i == j, S == 0.

    Loops over image shifts and blocks of destination atoms; each block is an N^2-style
    dense distance computation.  Atoms are assumed inside the (fully periodic) cell.
    """
    n = pos.shape[0]
    if cell is None:
        shifts = torch.zeros(1, 3, dtype=pos.dtype)
    else:
        heights = 1.0 / torch.linalg.inv(cell).norm(dim=0)
        reps = [range(-math.ceil(cutoff / float(h)), math.ceil(cutoff / float(h)) + 1) for h in heights]
        shifts = torch.tensor(list(itertools.product(*reps)), dtype=pos.dtype)
    offsets = shifts @ cell if cell is not None else shifts
    block = max(1, int(4e6 // max(n, 1)))
    total = 0
    for k in range(offsets.shape[0]):
        zero = bool((shifts[k] == 0).all())
        for lo in range(0, n, block):
            d = pos[lo : lo + block, None, :] - pos[None, :, :] + offsets[k]  # (b, N, 3)
            close = (d * d).sum(-1) < cutoff * cutoff
            if zero:  # drop the self pairs
                idx = torch.arange(lo, min(lo + block, n))
                close[idx - lo, idx] = False
            total += int(close.sum())
    return total


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--density", type=float, default=0.085, help="atoms per cubic Angstrom")
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(args.seed)

    print(f"radius_graph: density {args.density} /A^3, cutoff {args.cutoff} A, {args.dtype}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    header = f"{'atoms':>7} {'boundary':>9} {'edges/atom':>10} {'ours [ms]':>10} {'N^2 ref [ms]':>13} {'ref/ours':>9}"
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        box = (n / args.density) ** (1.0 / 3.0)
        pos = box * torch.rand(n, 3, generator=gen, dtype=dtype)
        for periodic in (False, True):
            cell = box * torch.eye(3, dtype=dtype) if periodic else None
            repeats = 3 if n >= 10000 else 7
            graph = radius_graph(pos, args.cutoff, cell=cell)
            t_ours = median_time(lambda: radius_graph(pos, args.cutoff, cell=cell), repeats)
            n_shifts = 1 if cell is None else (2 * math.ceil(args.cutoff / box) + 1) ** 3
            if float(n) * n * n_shifts <= _BRUTE_FORCE_LIMIT:
                count = brute_force_count(pos, args.cutoff, cell)
                if count != graph.edge_src.numel():
                    raise RuntimeError(f"edge count mismatch: brute force {count}, radius_graph {graph.edge_src.numel()}")
                t_ref = median_time(lambda: brute_force_count(pos, args.cutoff, cell), 1 if n >= 3000 else 3)
                ref_cols = f"{1e3 * t_ref:>13.1f} {t_ref / t_ours:>9.1f}"
            else:
                ref_cols = f"{'-':>13} {'-':>9}"
            boundary = "periodic" if periodic else "open"
            print(f"{n:>7} {boundary:>9} {graph.edge_src.numel() / n:>10.1f} {1e3 * t_ours:>10.1f} {ref_cols}")


if __name__ == "__main__":
    from escn.bench.allocator import enable_transparent_huge_pages

    enable_transparent_huge_pages()  # before the first tensor (docs/performance.md)
    main()
