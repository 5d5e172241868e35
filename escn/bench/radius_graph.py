"""Timing of escn.data.graph.radius_graph (cell list) against a brute-force N^2 search.

Random uniform clouds at a liquid/solid-like density (default 0.085 atoms / A^3) with a
5 A cutoff (~45 neighbours per atom), open and periodic (cubic box), for 100, 1,000 and
10,000 atoms.  The brute-force reference (all pairs times all needed image shifts,
chunked to bound memory) is timed in the same run where N^2 * shifts is small enough,
and its edge count is checked against ours.

    python -m escn.bench.radius_graph [--sizes 100 1000 10000] [--density 0.085] [--cutoff 5]

``--copper`` instead times the two neighbour searches of ``radius_graph`` (``backend="torch"``, this package's
cell list, and ``backend="vesin"``, the optional vesin package) end to end on periodic FCC copper supercells
(a = 3.615 A, atoms displaced by up to 0.1 A) of 864 to 10,976 atoms, after checking that both return the same
edges:

    python -m escn.bench.radius_graph --copper [--repeats 6 8 10 12 14] [--cutoff 5] [--reps 7] [--threads N]
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time
from typing import Callable, List, Optional

import torch

from escn.bench.blocks import median_time
from escn.data.graph import _candidate_pairs, _search_radius, _vesin_pairs, radius_graph, vesin_available

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


def copper(repeats: int, dtype: torch.dtype, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """FCC copper, ``repeats``^3 cubic unit cells (4 atoms each), every atom displaced by up to 0.1 A."""
    a = 3.615
    basis = torch.tensor([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]], dtype=dtype)
    grid = torch.stack(torch.meshgrid(*[torch.arange(repeats, dtype=dtype)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    pos = a * (grid + basis).reshape(-1, 3)
    pos = pos + 0.2 * (torch.rand(pos.shape, generator=gen, dtype=dtype) - 0.5)
    return pos, a * repeats * torch.eye(3, dtype=dtype)


def _paired_times(fns: List[Callable[[], object]], reps: int) -> List[List[float]]:
    """Seconds of each ``fns[k]()`` over ``reps`` rounds, the functions alternating within each round (one untimed
    warm-up round first), so that a change of machine load hits both sides alike."""
    for fn in fns:
        fn()
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(reps):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def compare_backends(repeats: List[int], cutoff: float, dtype: torch.dtype, seed: int, reps: int) -> None:
    """Time ``radius_graph`` with ``backend="torch"`` and ``"vesin"`` on periodic copper, end to end and the neighbour
    search alone (the shared exact test, sort and edge vectors left out); print one row per size."""
    if not vesin_available():
        raise SystemExit("--copper compares with vesin, which is not installed (pip install 'escn[vesin]')")
    import vesin

    gen = torch.Generator().manual_seed(seed)
    print(
        f"radius_graph on periodic FCC Cu: cutoff {cutoff} A, {dtype}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, vesin {vesin.__version__}; medians of {reps} alternating reps, ratio = median "
        "of the per-rep ratios"
    )
    header = (
        f"{'atoms':>7} {'edges/atom':>10} {'torch [ms]':>11} {'vesin [ms]':>11} {'torch/vesin':>12} "
        f"{'search: torch [ms]':>19} {'vesin [ms]':>11} {'torch/vesin':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in repeats:
        pos, cell = copper(r, dtype, gen)
        a = radius_graph(pos, cutoff, cell=cell, backend="torch")
        b = radius_graph(pos, cutoff, cell=cell, backend="vesin")
        if not (
            torch.equal(a.edge_src, b.edge_src)
            and torch.equal(a.edge_dst, b.edge_dst)
            and torch.equal(a.shift, b.shift)
        ):
            raise RuntimeError(f"{pos.shape[0]} atoms: the torch and vesin searches give different edges")
        pos64, cell64 = pos.double(), cell.double().unsqueeze(0)
        pbc = torch.ones(1, 3, dtype=torch.bool)
        batch = torch.zeros(pos.shape[0], dtype=torch.long)
        radius = _search_radius(pos64, cutoff, cell64, dtype)
        full = _paired_times(
            [
                lambda: radius_graph(pos, cutoff, cell=cell, backend="torch"),
                lambda: radius_graph(pos, cutoff, cell=cell, backend="vesin"),
            ],
            reps,
        )
        search = _paired_times(
            [
                lambda: _candidate_pairs(pos64, radius, cell64, pbc, batch),
                lambda: _vesin_pairs(pos64, radius, cell64, pbc, batch, False),
            ],
            reps,
        )
        cols = []
        for t in (full, search):
            ratio = statistics.median(x / y for x, y in zip(*t))
            cols.append(f"{1e3 * statistics.median(t[0]):>11.1f} {1e3 * statistics.median(t[1]):>11.1f} {ratio:>12.2f}")
        print(f"{pos.shape[0]:>7} {a.edge_src.numel() / pos.shape[0]:>10.1f} {cols[0]} {cols[1]:>44}")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--density", type=float, default=0.085, help="atoms per cubic Angstrom")
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--copper", action="store_true", help="torch against vesin search on periodic FCC copper")
    parser.add_argument(
        "--repeats",
        type=int,
        nargs="+",
        default=[6, 8, 10, 12, 14],
        help="--copper: cubic unit cells per edge of each supercell",
    )
    parser.add_argument("--reps", type=int, default=7, help="--copper: timed rounds per size")
    parser.add_argument("--threads", type=int, default=None, help="torch (and vesin) threads; default torch's")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.copper:
        compare_backends(args.repeats, args.cutoff, dtype, args.seed, args.reps)
        return
    gen = torch.Generator().manual_seed(args.seed)

    print(
        f"radius_graph: density {args.density} /A^3, cutoff {args.cutoff} A, {args.dtype}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    header = f"{'atoms':>7} {'boundary':>9} {'edges/atom':>10} {'ours [ms]':>10} {'N^2 ref [ms]':>13} {'ref/ours':>9}"
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        box = (n / args.density) ** (1.0 / 3.0)
        pos = box * torch.rand(n, 3, generator=gen, dtype=dtype)
        for periodic in (False, True):
            cell = box * torch.eye(3, dtype=dtype) if periodic else None
            repeats = 3 if n >= 10000 else 7
            graph = radius_graph(pos, args.cutoff, cell=cell, backend="torch")
            t_ours = median_time(lambda: radius_graph(pos, args.cutoff, cell=cell, backend="torch"), repeats)
            n_shifts = 1 if cell is None else (2 * math.ceil(args.cutoff / box) + 1) ** 3
            if float(n) * n * n_shifts <= _BRUTE_FORCE_LIMIT:
                count = brute_force_count(pos, args.cutoff, cell)
                if count != graph.edge_src.numel():
                    raise RuntimeError(
                        f"edge count mismatch: brute force {count}, radius_graph {graph.edge_src.numel()}"
                    )
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
