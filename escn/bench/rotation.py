"""Timing of the edge-frame rotation: building the frames and Wigner-D rows, and applying them to features.

``escn.o3.edge_frame.edge_frame(edge_vec, lmax, mmax)`` then ``frame.wigner_rows(l)`` for l = 0..L
("frame"), and ``(E, C, 2l+1) @ D^l^T`` for every l ("apply"), separately and together, on the
e3nn-guide graph (100 nodes N(0,1)^3, radius 1.8) or a given number of random edges.

    python -m escn.bench.rotation [--ls 1 2 4 8 12 16] [--channels 16] [--mmax N] [--edges E] [--dtype float32]
"""

from __future__ import annotations

import argparse

import torch

from escn.bench.blocks import make_rotation, median_time
from escn.bench.scaling import make_graph

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def edge_vectors(edges: int | None, dtype: torch.dtype) -> torch.Tensor:
    """The guide graph's edge vectors, or ``edges`` random Gaussian vectors."""
    if edges is None:
        return make_graph(100, 1.8, dtype, seed=0).edge_vec
    return torch.randn(edges, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)


def main(argv: list[str] | None = None) -> None:
    """Print frame / apply / total milliseconds for each L."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ls", type=int, nargs="+", default=[1, 2, 4, 6, 8, 12, 16])
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--mmax", type=int, default=None, help="keep rows |m| <= mmax (default: L)")
    p.add_argument("--edges", type=int, default=None, help="random edges instead of the guide graph")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if min(args.ls) < 0 or args.channels < 1 or args.repeats < 1 or (args.edges is not None and args.edges < 1):
        p.error("--ls must be >= 0 and --channels, --repeats, --edges >= 1")
    torch.set_num_threads(args.threads)
    vec = edge_vectors(args.edges, _DTYPES[args.dtype])
    print(f"E = {vec.shape[0]} edges, C = {args.channels}, {args.dtype}; median of {args.repeats} (ms)")
    print(f"{'L':>3s} {'mmax':>4s}  {'frame':>9s}  {'apply':>9s}  {'total':>9s}")
    for L in args.ls:
        mmax = L if args.mmax is None else min(args.mmax, L)
        times = [
            1e3 * median_time(make_rotation(vec, L, mmax, args.channels, part), args.repeats)
            for part in ("frame", "apply", "all")
        ]
        print(f"{L:3d} {mmax:4d}  {times[0]:9.2f}  {times[1]:9.2f}  {times[2]:9.2f}")


if __name__ == "__main__":
    from escn.bench.allocator import enable_transparent_huge_pages

    enable_transparent_huge_pages()  # before the first tensor (docs/performance.md)
    main()
