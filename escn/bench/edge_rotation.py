"""The rotation paths of EdgeRotation, in a full SO2Conv: PyTorch ops with dense per-edge Wigner rows up to
``dense_lmax`` or the factorisation, against the compiled kernel (the default).

For each L, the shared-weight SO2Conv (C x l for l = 0..L, the e3nn-guide graph) runs forward + backward on
PyTorch ops with ``EdgeRotation.dense_lmax`` set to -1 (every order factorised), 1, 2 and 3, and on the compiled
rotation kernel, interleaved in one process; the table gives the median milliseconds, the ratio factorised /
dense_lmax=3 and the ratio dense_lmax=3 / kernel.

    python -m escn.bench.edge_rotation [--ls 1 2 3 4 6] [--channels 16] [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from escn.bench.scaling import make_graph, node_irreps
from escn.nn import SO2Conv

SETTINGS = (-1, 1, 2, 3, "kernel")


def time_layer(L: int, mmax: int, channels: int, repeats: int) -> dict[int | str, float]:
    """Median fwd+bwd milliseconds of SO2Conv at each ``dense_lmax`` in :data:`SETTINGS` (PyTorch ops) and on
    the compiled kernel (``"kernel"``; PyTorch ops again if the kernels are unavailable)."""
    g = make_graph(100, 1.8, torch.float32, seed=0)
    gen = torch.Generator().manual_seed(L)
    layer = SO2Conv(node_irreps(L, channels), node_irreps(L, channels), mmax=mmax, shared_weights=True)
    x = torch.randn(g.num_nodes, layer.irreps_in.dim, generator=gen).requires_grad_()
    vec = g.edge_vec.clone().requires_grad_()
    w = torch.randn(g.num_edges, layer.weight_numel, generator=gen).requires_grad_()

    def run(k: int | str) -> float:
        layer.set_executor("native" if k == "kernel" else "torch")
        if k != "kernel":
            layer.rot_in.dense_lmax = layer.rot_out.dense_lmax = k
        t = time.perf_counter()
        layer(x, g.edge_src, g.edge_dst, vec, w).square().sum().backward()
        return time.perf_counter() - t

    for k in SETTINGS:
        run(k)
    times: dict[int | str, list[float]] = {k: [] for k in SETTINGS}
    for _ in range(repeats):
        for k in SETTINGS:
            times[k].append(run(k))
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ls", type=int, nargs="+", default=[1, 2, 3, 4, 6])
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if min(args.ls) < 1 or args.channels < 1 or args.repeats < 1:
        p.error("--ls must be >= 1, --channels and --repeats >= 1")
    torch.set_num_threads(args.threads)
    print(
        f"SO2Conv fwd+bwd, shared weights, C = {args.channels}, guide graph, {args.threads} threads, median of {args.repeats}"
    )
    names = {-1: "factorised", "kernel": "kernel"}
    print(
        f"{'L':>3} {'mmax':>5} "
        + " ".join(f"{names.get(k, f'dense<={k}'):>11}" for k in SETTINGS)
        + f" {'fact/d3':>8} {'d3/kernel':>10}"
    )
    for L in args.ls:
        for mmax in sorted({L, min(2, L)}):
            t = time_layer(L, mmax, args.channels, args.repeats)
            print(
                f"{L:>3} {mmax:>5} "
                + " ".join(f"{t[k]:>9.1f}ms" for k in SETTINGS)
                + f" {t[-1] / t[3]:>8.2f} {t[3] / t['kernel']:>10.2f}"
            )


if __name__ == "__main__":
    from escn.bench.allocator import enable_transparent_huge_pages

    enable_transparent_huge_pages()  # before the first tensor (docs/performance.md)
    main()
