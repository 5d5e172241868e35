"""The from_tfn layer on the compiled kernels against PyTorch ops, in one run.

For each L, ``SO2Conv.from_tfn(TFNConv(C x 0e + ... + C x Lp, lmax_filter=2L))`` is built once and timed with
the kernels of :mod:`escn.native` (``layer.set_executor("native")``, its rotations included)
and with PyTorch ops only (``"torch"``: weights regrouped per output with split + cat, one batched matmul per
output; rotations factorised into PyTorch ops): the frame map alone (``layer.frame_map``, fwd and fwd+bwd)
and the whole layer (fwd+bwd w.r.t. features, edge vectors and weights). The floor is the time to read the
weights twice and write their gradient once at this machine's copy bandwidth, measured in the same run.

    python -m escn.bench.tfn_frame_map [--ls 2 4 6] [--channels 16] [--edges 3740] [--repeats 5] [--allocator reuse]

Fresh memory is expensive on this machine and its cost varies from call to call: the weight gradient is a
new block of up to hundreds of MB in every backward. ``--allocator reuse`` (as in ``escn bench``) keeps freed
memory for reuse and shows the kernels' own cost.

Profile one side with ``torch.profiler``; the kernel shows as ``_F`` / ``_FBackward``.
"""

from __future__ import annotations

import argparse

import torch

import escn  # noqa: F401  (transparent huge pages before torch allocates)
from escn import native
from escn.bench.allocator import reuse_freed_memory
from escn.bench.blocks import copy_bandwidth_gbs, median_time
from escn.bench.scaling import node_irreps
from escn.nn import SO2Conv, TFNConv


def _cases(layer: SO2Conv, edges: int, nodes: int, gen: torch.Generator):
    rot = torch.randn(edges, layer.rot_in.rot_dim, generator=gen).requires_grad_()
    w = torch.randn(edges, layer.weight_numel, generator=gen).requires_grad_()
    x = torch.randn(nodes, layer.irreps_in.dim, generator=gen).requires_grad_()
    src = torch.randint(0, nodes, (edges,), generator=gen)
    dst = (src + torch.randint(1, nodes, (edges,), generator=gen)) % nodes
    vec = torch.randn(edges, 3, generator=gen).requires_grad_()
    cot_map = torch.randn(edges, layer.rot_out.rot_dim, generator=gen)
    cot = torch.randn(nodes, layer.irreps_out.dim, generator=gen)

    def map_fwd():
        with torch.no_grad():
            layer.frame_map(rot, w)

    def map_fwd_bwd():
        rot.grad = w.grad = None
        layer.frame_map(rot, w).backward(cot_map)

    def layer_fwd_bwd():
        x.grad = w.grad = vec.grad = None
        layer(x, src, dst, vec, w).backward(cot)

    return {"map fwd": map_fwd, "map fwd+bwd": map_fwd_bwd, "layer fwd+bwd": layer_fwd_bwd}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ls", type=int, nargs="+", default=[2, 4, 6])
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--edges", type=int, default=3740)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--allocator", choices=["system", "reuse"], default="system")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    allocator = "reuse" if args.allocator == "reuse" and reuse_freed_memory() else "system"
    if allocator != args.allocator:
        print("--allocator reuse is unavailable here (needs glibc); using the system allocator")
    if not native.available():
        raise SystemExit(f"the compiled kernels are unavailable: {native.unavailable_reason()}")
    gbs = copy_bandwidth_gbs()
    print(
        f"{args.edges} edges, C = {args.channels}, float32, {args.threads} threads; copy bandwidth {gbs:.1f} GB/s; "
        f"median of {args.repeats} after 3 warm-up calls; allocator {allocator}"
    )
    print(f"{'L':>3} {'timing':<14} {'kernel ms':>10} {'torch ms':>10} {'torch/kernel':>13} {'floor ms':>9}")
    for L in args.ls:
        irreps = node_irreps(L, args.channels)
        layer = SO2Conv.from_tfn(TFNConv(irreps, irreps, lmax_filter=2 * L))
        floor = 3 * args.edges * layer.weight_numel * 4 / gbs / 1e6
        cases = _cases(layer, args.edges, args.nodes, torch.Generator().manual_seed(L))
        for name, fn in cases.items():
            ms = {}
            for use in (True, False):
                layer.set_executor("native" if use else "torch")
                ms[use] = 1e3 * median_time(fn, args.repeats, warmup=3)
            print(
                f"{L:>3} {name:<14} {ms[True]:>10.1f} {ms[False]:>10.1f} {ms[False] / ms[True]:>12.2f}x "
                f"{floor if name != 'map fwd' else floor / 3:>9.1f}"
            )


if __name__ == "__main__":
    from escn.bench.allocator import enable_transparent_huge_pages

    enable_transparent_huge_pages()  # before the first tensor (docs/performance.md)
    main()
