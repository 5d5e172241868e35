"""Timing of the neighbour sum: ``index_add_`` (torch) against ``torch_scatter.scatter`` when installed.

Messages of width ``C * (L+1)^2`` (node irreps 0..L with C channels) on the e3nn-guide graph
(100 nodes N(0,1)^3, radius 1.8), forward and forward+backward (gradient w.r.t. the messages).

    python -m escn.bench.aggregation [--ls 1 2 4 8 16] [--channels 16] [--nodes 100] [--radius 1.8]
"""

from __future__ import annotations

import argparse

import torch

from escn.bench.blocks import has_torch_scatter, make_aggregation, median_time
from escn.bench.scaling import make_graph

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def time_backend(
    messages: torch.Tensor, dst: torch.Tensor, nodes: int, backend: str, repeats: int
) -> tuple[float, float]:
    """(forward ms, forward+backward ms) of one aggregation backend."""
    fwd = make_aggregation(messages.detach(), dst, nodes, backend)
    leaf = messages.detach().requires_grad_()
    fwd_grad = make_aggregation(leaf, dst, nodes, backend)
    cot = torch.randn(nodes, messages.shape[1], dtype=messages.dtype)

    def fwd_bwd() -> None:
        leaf.grad = None
        fwd_grad().backward(cot)

    return 1e3 * median_time(fwd, repeats), 1e3 * median_time(fwd_bwd, repeats)


def main(argv: list[str] | None = None) -> None:
    """Print forward and forward+backward times per backend and L, and their ratio."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ls", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--radius", type=float, default=1.8)
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if min(args.ls) < 0 or args.channels < 1 or args.nodes < 2 or args.radius <= 0 or args.repeats < 1:
        p.error("--ls must be >= 0, --channels/--repeats >= 1, --nodes >= 2, --radius > 0")
    torch.set_num_threads(args.threads)
    dtype = _DTYPES[args.dtype]
    g = make_graph(args.nodes, args.radius, dtype, seed=0)
    backends = ["index_add"] + (["scatter"] if has_torch_scatter() else [])
    print(f"E = {g.num_edges} edges into {args.nodes} nodes, {args.dtype}; median of {args.repeats} (ms)")
    if len(backends) == 1:
        print("torch_scatter is not installed: index_add_ only (pip install torch-scatter)")
    print(
        f"{'L':>3s} {'width':>6s}  "
        + "  ".join(f"{b + ' fwd':>14s}  {b + ' f+b':>14s}" for b in backends)
        + ("  index_add/scatter (f+b)" if len(backends) == 2 else "")
    )
    for L in args.ls:
        width = args.channels * (L + 1) ** 2
        msg = torch.randn(g.num_edges, width, generator=torch.Generator().manual_seed(L), dtype=torch.float64).to(dtype)
        res = [time_backend(msg, g.edge_dst, args.nodes, b, args.repeats) for b in backends]
        cells = "  ".join(f"{f:14.3f}  {fb:14.3f}" for f, fb in res)
        ratio = f"  {res[0][1] / res[1][1]:24.2f}" if len(res) == 2 else ""
        print(f"{L:3d} {width:6d}  {cells}{ratio}")


if __name__ == "__main__":
    from escn.bench.allocator import enable_transparent_huge_pages

    enable_transparent_huge_pages()  # before the first tensor (docs/performance.md)
    main()
