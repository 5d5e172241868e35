"""Timing of the SO(2) matmul stage of SO2Conv alone, against this machine's dense GEMM throughput.

For each L the stage shapes of ``SO2Conv(C x 0e + C x 1o + ... + C x Lp)`` are taken from the layer
(``layer.layout.stages``) and the per-m matmuls are run on random inputs of those shapes
(:func:`escn.bench.blocks.make_so2_stage`): per-edge weights (``torch.bmm`` of E small matrices, as in
``SO2Conv.from_tfn`` and the default layer) and shared weights (one matmul per m). Flops are
``sum over stages of 2 * E * ncol * n_in * n_out`` (ncol = 1 at m = 0, else 2); bytes are the weights, inputs
and outputs moved once (:func:`escn.bench.blocks.so2_stage_bytes`), against a large copy's bandwidth: per-edge
weights are memory-bound, shared ones flop-bound.

    python -m escn.bench.so2_stage [--ls 1 2 4 8] [--channels 16] [--edges 3300] [--mmax N] [--dtype float32]

Profile a single case with ``python -m cProfile`` or ``torch.profiler``.
"""

from __future__ import annotations

import argparse

import torch

from escn.bench.blocks import (
    copy_bandwidth_gbs,
    gemm_gflops,
    make_so2_stage,
    median_time,
    so2_stage_bytes,
    so2_stage_flops,
    so2_stage_shapes,
)
from escn.bench.scaling import default_dtype, node_irreps
from escn.nn import SO2Conv

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def stage_row(
    L: int, channels: int, edges: int, mmax: int | None, shared: bool, dtype: torch.dtype, repeats: int
) -> tuple[int, float, float, float]:
    """(number of stages, milliseconds, GFLOP/s, GB/s) of the SO(2) stage for one configuration."""
    irreps = node_irreps(L, channels)
    with default_dtype(dtype):
        layer = SO2Conv(irreps, irreps, mmax=mmax, shared_weights=shared)
    run = make_so2_stage(layer, edges, dtype, generator=torch.Generator().manual_seed(L))
    seconds = median_time(run, repeats, warmup=1)
    return (
        len(so2_stage_shapes(layer)),
        1e3 * seconds,
        so2_stage_flops(layer, edges) / seconds / 1e9,
        so2_stage_bytes(layer, edges, dtype.itemsize) / seconds / 1e9,
    )


def main(argv: list[str] | None = None) -> None:
    """Print one line per (L, weights mode): stages, time, GFLOP/s and fraction of GEMM."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ls", type=int, nargs="+", default=[1, 2, 4, 6, 8])
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--edges", type=int, default=3300)
    p.add_argument("--mmax", type=int, default=None, help="truncate |m| <= mmax (default: L)")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if min(args.ls) < 0 or args.channels < 1 or args.edges < 1 or args.repeats < 1:
        p.error("--ls must be >= 0 and --channels, --edges, --repeats >= 1")
    torch.set_num_threads(args.threads)
    dtype = _DTYPES[args.dtype]
    gemm = gemm_gflops(dtype)
    copy = copy_bandwidth_gbs()
    print(
        f"dense GEMM (4096x512 @ 512x512, {args.dtype}): {gemm:.1f} GFLOP/s; copy bandwidth {copy:.1f} GB/s; "
        f"E = {args.edges}, C = {args.channels}"
    )
    print(
        f"{'L':>3s}  {'weights':8s}  {'stages':>6s}  {'ms':>9s}  {'GFLOP/s':>8s}  {'% GEMM':>6s}  {'GB/s':>7s}  {'% copy':>6s}"
    )
    for L in args.ls:
        for shared in (False, True):
            n, ms, gf, gb = stage_row(L, args.channels, args.edges, args.mmax, shared, dtype, args.repeats)
            print(
                f"{L:3d}  {'shared' if shared else 'per-edge':8s}  {n:6d}  {ms:9.2f}  {gf:8.2f}  {100 * gf / gemm:6.1f}  "
                f"{gb:7.2f}  {100 * gb / copy:6.0f}"
            )


if __name__ == "__main__":
    from escn.bench.allocator import enable_transparent_huge_pages

    enable_transparent_huge_pages()  # before the first tensor (docs/performance.md)
    main()
