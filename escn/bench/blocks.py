"""Timers for the building blocks of an eSCN convolution, shared by ``escn bench`` and the modules of ``escn.bench``.

* :func:`gemm_gflops` — this machine's dense matmul throughput (the yardstick for the SO(2) stage);
* :func:`copy_bandwidth_gbs` — this machine's memory bandwidth (the yardstick for per-edge weights, which are
  read once per matmul and so bound by memory, not flops);
* :func:`so2_stage_shapes`, :func:`so2_stage_flops`, :func:`make_so2_stage` — the per-m SO(2) matmuls of an
  :class:`escn.nn.SO2Conv`, reproduced on random inputs of the layer's shapes so they can be timed alone;
* :func:`make_rotation` — edge-frame construction plus rotation of node features into the frame;
* :func:`make_aggregation` — the neighbour sum, ``index_add_`` or ``torch_scatter.scatter``.

Every ``make_*`` returns a zero-argument callable that runs the block once (forward only, no autograd),
so it can be timed with :func:`median_time` or profiled on its own.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from typing import Callable

import torch

Tensor = torch.Tensor

__all__ = [
    "copy_bandwidth_gbs",
    "gemm_gflops",
    "has_torch_scatter",
    "make_aggregation",
    "make_rotation",
    "make_so2_stage",
    "median_time",
    "so2_stage_bytes",
    "so2_stage_flops",
    "so2_stage_shapes",
]


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time in seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_gflops(
    dtype: torch.dtype = torch.float32, m: int = 4096, k: int = 512, n: int = 512, repeats: int = 5
) -> float:
    """Throughput in GFLOP/s of one dense ``(m x k) @ (k x n)`` matmul (``2 m k n`` flops), median of ``repeats``."""
    a = torch.randn(m, k, dtype=dtype)
    b = torch.randn(k, n, dtype=dtype)
    out = torch.empty(m, n, dtype=dtype)
    seconds = median_time(lambda: torch.mm(a, b, out=out), repeats, warmup=2)
    return 2.0 * m * k * n / seconds / 1e9


def copy_bandwidth_gbs(numel: int = 1 << 25, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """Memory bandwidth in GB/s of ``dst.copy_(src)`` on ``numel``-element tensors (bytes read plus bytes
    written, per second; median of ``repeats``). The default 2^25 float32 elements (128 MB per tensor) is far
    larger than any cache, so this is DRAM bandwidth with the current thread count."""
    if numel < 1:
        raise ValueError(f"numel must be >= 1, got {numel}")
    src = torch.randn(numel, dtype=dtype)
    dst = torch.empty_like(src)
    seconds = median_time(lambda: dst.copy_(src), repeats, warmup=2)
    return 2.0 * numel * src.element_size() / seconds / 1e9


def so2_stage_shapes(layer: torch.nn.Module) -> list[tuple[int, int, int, int]]:
    """``(m, ncol, n_in, n_out)`` of every non-empty SO(2) stage of an SO2Conv (``ncol = 1`` at m = 0, else 2)."""
    stages = []
    for st in layer.layout.stages:
        if st.n_in == 0 or st.n_out == 0:
            continue
        stages.append((st.m, 1 if st.m == 0 else 2, st.n_in, st.n_out))
    return stages


def so2_stage_flops(layer: torch.nn.Module, num_edges: int) -> int:
    """Multiply-add flops of the SO(2) stage: ``sum over stages of 2 * E * ncol * n_in * n_out``."""
    return sum(2 * num_edges * ncol * n_in * n_out for _, ncol, n_in, n_out in so2_stage_shapes(layer))


def so2_stage_bytes(layer: torch.nn.Module, num_edges: int, itemsize: int) -> int:
    """Bytes the SO(2) stage must move at least once: per stage the weights (``E * n_in * n_out`` per edge,
    ``n_in * n_out`` shared), the inputs ``E * ncol * n_in`` and the outputs ``E * ncol * n_out``."""
    shared = bool(getattr(layer, "shared_weights", False))
    total = 0
    for _, ncol, n_in, n_out in so2_stage_shapes(layer):
        total += (1 if shared else num_edges) * n_in * n_out + num_edges * ncol * (n_in + n_out)
    return total * itemsize


def tfn_frame_map_flops(layer: torch.nn.Module, num_edges: int) -> int:
    """Multiply-add flops of the edge-frame map of TFN-layout per-edge weights (``SO2Conv.from_tfn``): per edge
    and term (one order m of one path), a (1 x mul_in) row times the path's (mul_in x mul_out) block."""
    plan = layer._native_plan
    per_term = plan.path[:, 1] * plan.path[:, 2] * (plan.path[:, 4] - plan.path[:, 3])
    return 2 * num_edges * int(per_term.sum())


def tfn_frame_map_bytes(layer: torch.nn.Module, num_edges: int, itemsize: int) -> int:
    """Bytes that map must move at least once: the weights, the edge-frame inputs and outputs."""
    return num_edges * (layer.weight_numel + layer.rot_in.rot_dim + layer.rot_out.rot_dim) * itemsize


def make_tfn_frame_map(
    layer: torch.nn.Module, weight: Tensor, generator: torch.Generator | None = None
) -> Callable[[], Tensor]:
    """The edge-frame map of ``SO2Conv.from_tfn`` layer alone, forward, as the layer runs it (the compiled kernel
    when available, else PyTorch ops), on random edge-frame inputs and the given (E, weight_numel) weights."""
    rot = torch.randn(weight.shape[0], layer.rot_in.rot_dim, dtype=weight.dtype, generator=generator)
    w = weight.detach()

    def run() -> Tensor:
        with torch.no_grad():
            return layer.frame_map(rot, w)

    return run


def make_so2_stage(
    layer: torch.nn.Module, num_edges: int, dtype: torch.dtype, generator: torch.Generator | None = None
) -> Callable[[], list[Tensor]]:
    """The SO(2) matmuls of ``layer`` on random inputs: per stage ``v (E, ncol, n_in)`` times ``B^T``, with ``B``
    per edge ``(E, n_out, n_in)`` (``torch.bmm``) or shared ``(n_out, n_in)`` when ``layer.shared_weights``.

    Only the matmuls are reproduced (no gathers, gates or weight maps), i.e. the stage whose flops
    :func:`so2_stage_flops` counts."""
    shared = bool(getattr(layer, "shared_weights", False))
    operands = []
    for _, ncol, n_in, n_out in so2_stage_shapes(layer):
        v = torch.randn(num_edges, ncol, n_in, dtype=dtype, generator=generator)
        shape = (n_out, n_in) if shared else (num_edges, n_out, n_in)
        B = torch.randn(*shape, dtype=dtype, generator=generator)
        operands.append((v, B.transpose(-1, -2)))

    def run() -> list[Tensor]:
        with torch.no_grad():
            return [v @ Bt if shared else torch.bmm(v, Bt) for v, Bt in operands]

    return run


def make_rotation(edge_vec: Tensor, lmax: int, mmax: int, channels: int, part: str = "all") -> Callable[[], object]:
    """Edge-frame rotation of ``channels`` features of every order ``l <= lmax`` (rows ``|m| <= mmax``).

    ``part``: ``"frame"`` builds :func:`escn.o3.edge_frame.edge_frame` and all ``wigner_rows(l)``;
    ``"apply"`` only multiplies precomputed blocks, ``(E, C, 2l+1) @ D^T``; ``"all"`` does both.
    """
    from escn.o3.edge_frame import edge_frame

    if part not in ("frame", "apply", "all"):
        raise ValueError(f"part must be 'frame', 'apply' or 'all', got {part!r}")
    E = edge_vec.shape[0]
    feats = [torch.randn(E, channels, 2 * l + 1, dtype=edge_vec.dtype) for l in range(lmax + 1)]

    def blocks() -> list[Tensor]:
        frame = edge_frame(edge_vec, lmax, mmax)
        return [frame.wigner_rows(l) for l in range(lmax + 1)]

    fixed = blocks() if part == "apply" else None

    def run() -> object:
        with torch.no_grad():
            D = fixed if fixed is not None else blocks()
            if part == "frame":
                return D
            return [x @ d.transpose(1, 2) for x, d in zip(feats, D)]

    return run


def has_torch_scatter() -> bool:
    """Whether ``torch_scatter`` can be imported (checked without importing it)."""
    return importlib.util.find_spec("torch_scatter") is not None


def make_aggregation(
    messages: Tensor, edge_dst: Tensor, num_nodes: int, backend: str = "index_add"
) -> Callable[[], Tensor]:
    """Sum of ``messages`` (E, F) into ``num_nodes`` rows by ``edge_dst``: ``"index_add"`` (torch) or ``"scatter"``
    (``torch_scatter.scatter(..., reduce="sum")``)."""
    if backend == "index_add":
        return lambda: messages.new_zeros(num_nodes, messages.shape[1]).index_add_(0, edge_dst, messages)
    if backend == "scatter":
        if not has_torch_scatter():
            raise RuntimeError("torch_scatter is not installed (pip install torch-scatter)")
        from torch_scatter import scatter

        return lambda: scatter(messages, edge_dst, dim=0, dim_size=num_nodes, reduce="sum")
    raise ValueError(f"backend must be 'index_add' or 'scatter', got {backend!r}")
