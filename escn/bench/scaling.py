"""High-l scaling sweep: eSCN (SO(2)) convolutions against full-CG TFN (and e3nn) as the order L grows.

One random graph (the e3nn convolution guide's: ``nodes`` points drawn from N(0, 1)^3, radius graph) and,
for every L, node features ``C x 0e + C x 1o + ... + C x Lp`` (natural parity) in and out. Every method
(see :data:`METHODS`) is timed on the same graph, features and — where the weight layouts agree — the
same per-edge weights. The radial MLP is excluded everywhere: weights are a random leaf tensor.

Per configuration (method, L):

* ``fwd`` is the forward pass under ``torch.no_grad()`` (inference); ``fwd+bwd`` is forward plus backward
  of a fixed random cotangent w.r.t. ``x``, ``edge_vec``, the per-edge weights and the layer's parameters
  (training / forces). Both are medians over ``repeats`` calls after one warm-up fwd+bwd.
* Peak memory is the rise of the process's resident-set high-water mark (``VmHWM``, reset through
  ``/proc/self/clear_refs``) over its resident size just before the warm-up fwd+bwd, after ``gc`` and
  ``malloc_trim``. It counts every allocation made by that call (torch's CPU allocator returns memory
  to the system), costs nothing extra, and is ``None`` where ``/proc`` does not allow the reset.
* Budget: before building a layer, its fwd+bwd time is extrapolated from the method's previous L
  (power law through the last two points, or exponent 3 from a single point) and its memory from a lower bound
  ``(4 * weights + 8 * features) * E * itemsize`` and from the previous peaks (power law through the last two); a configuration predicted to
  exceed ``budget_seconds / 2.5`` per fwd+bwd is "skipped (time)", one predicted to exceed ``max_memory_gb``
  "skipped (memory)", up front. Otherwise the warm-up is timed and ``repeats`` is lowered to what fits in the
  budget (fwd + fwd+bwd per repeat); if not even one repeat fits, the row is "skipped (time)" and keeps the
  warm-up time as an estimate.
* Anchor: at ``SweepConfig.anchor_l`` (default 4, when it is one of the swept L) every method is exempt from
  the time budget: it always runs, with at least one repeat, so the speed-ups over TFN and e3nn are measured
  even on a loaded machine. The memory budget still applies there.
* Threads: ``SweepConfig.threads = None`` (the default) runs on ``torch.get_num_threads()`` as it is; a number
  sets it for the sweep and restores the previous count afterwards. ``SweepResult.num_threads`` is the count used.
* For SO(2) rows, the SO(2) stage is also timed alone, forward, as the layer runs it: the per-m matmuls
  (:func:`escn.bench.blocks.make_so2_stage`), or for ``so2_equal`` the edge-frame map of its TFN-layout
  weights (:func:`escn.bench.blocks.make_tfn_frame_map`); its GFLOP/s is compared with a dense GEMM and, for
  per-edge weights, its GB/s with a large copy, both measured in the same run.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import importlib.util
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

from escn import native
from escn.bench.allocator import reuse_freed_memory
from escn.bench.blocks import (
    copy_bandwidth_gbs,
    gemm_gflops,
    has_torch_scatter,
    make_so2_stage,
    make_tfn_frame_map,
    median_time,
    so2_stage_bytes,
    so2_stage_flops,
    tfn_frame_map_bytes,
    tfn_frame_map_flops,
)
from escn.data import radius_graph
from escn.nn import SO2Conv, TFNConv
from escn.nn.tfn_conv import tfn_paths
from escn.o3.irreps import Irreps

Tensor = torch.Tensor

#: Values of ``SweepConfig.allocator`` (see :mod:`escn.bench.allocator`).
ALLOCATORS: tuple[str, ...] = ("reuse", "system")
#: Methods in table order.
METHODS: tuple[str, ...] = ("so2_equal", "so2_shared_mmaxL", "so2_shared_mmax2", "tfn", "e3nn", "so2_equal_scatter")

#: One-line description of every method (shown by ``escn bench --help``).
METHOD_HELP: dict[str, str] = {
    "so2_equal": "SO2Conv.from_tfn(TFNConv(lmax_filter=2L)): TFN's function from TFN-layout per-edge weights",
    "so2_shared_mmaxL": "SO2Conv(mmax=L, shared_weights=True) with a per-edge modulation (num_gates)",
    "so2_shared_mmax2": "SO2Conv(mmax=min(2, L), shared_weights=True) with a per-edge modulation",
    "tfn": "TFNConv(lmax_filter=2L): full Clebsch-Gordan reference with per-edge weights",
    "e3nn": "e3nn guide conv: FullyConnectedTensorProduct + spherical harmonics + index_add_ (needs e3nn)",
    "so2_equal_scatter": "so2_equal's messages aggregated with torch_scatter.scatter (needs torch_scatter)",
}

# Exponent of fwd+bwd time in L used to extrapolate from a single earlier point. Mild on purpose: small-L
# times are dominated by per-call overhead, and a wrong guess costs at most one warm-up call.
_PRIOR_EXPONENT = 3.0
# Largest exponent taken from two points (the asymptotic cost of full CG is L^6, plus slack for cache effects).
_MAX_EXPONENT = 8.0
# Measurement cost per repeat in units of one fwd+bwd (fwd ~ half of fwd+bwd), plus the warm-up.
_REPEAT_COST = 1.5
_WARMUP_AND_ONE_REPEAT = 1.0 + _REPEAT_COST
# Methods whose weights are TFN's per-path layout (they share one weight tensor per L).
_TFN_LAYOUT = ("so2_equal", "tfn", "e3nn", "so2_equal_scatter")


def method_available(method: str) -> bool:
    """Whether ``method`` can run here (e3nn / torch_scatter rows need their packages)."""
    if method == "e3nn":
        return importlib.util.find_spec("e3nn") is not None
    if method == "so2_equal_scatter":
        return has_torch_scatter()
    return method in METHODS


def default_methods() -> list[str]:
    """All methods that can run here, in table order."""
    return [m for m in METHODS if method_available(m)]


def node_irreps(L: int, channels: int) -> str:
    """``C x 0e + C x 1o + ... + C x Lp`` with natural parity ``p = (-1)^l``."""
    return " + ".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(L + 1))


# --------------------------------------------------------------------------- configuration and results
@dataclass
class SweepConfig:
    """Parameters of one sweep (the CLI's options)."""

    ls: list[int] = field(default_factory=lambda: list(range(1, 9)))
    channels: int = 16
    nodes: int = 100
    radius: float = 1.8
    dtype: torch.dtype = torch.float32
    threads: int | None = None  # None: torch.get_num_threads() as it is; a number: set for the sweep, then restored
    repeats: int = 5
    budget_seconds: float = 10.0
    anchor_l: int | None = 4  # every method runs at this L whatever the time budget (None: no anchor)
    max_memory_gb: float = 4.0
    methods: list[str] = field(default_factory=default_methods)
    seed: int = 0
    allocator: str = "system"  # "reuse": escn.bench.allocator.reuse_freed_memory() before the sweep; "system": as is
    executor: str = "native"  # of the SO2Conv layers: "native" (compiled kernels where they apply) or "torch"


@dataclass
class Row:
    """One (method, L) configuration. Times in ms, memory in MB; ``None`` where not measured."""

    method: str
    L: int
    channels: int
    irreps_dim: int
    num_edges: int
    status: str = "ok"
    repeats: int = 0
    fwd_ms: float | None = None
    fwd_bwd_ms: float | None = None
    peak_mem_mb: float | None = None
    params_per_edge: int | None = None
    speedup_vs_tfn: float | None = None
    speedup_vs_e3nn: float | None = None
    so2_stage_ms: float | None = None
    so2_stage_gflop: float | None = None
    so2_gflops: float | None = None
    so2_gemm_fraction: float | None = None
    so2_gbs: float | None = None
    so2_bandwidth_fraction: float | None = None
    weight_floor_ms: float | None = None
    floor_speedup_vs_tfn: float | None = None
    estimate_fwd_bwd_ms: float | None = None
    estimate_source: str | None = None
    build_s: float | None = None
    max_rel_diff_vs_tfn: float | None = None
    index_add_over_scatter: float | None = None

    @property
    def ran(self) -> bool:
        return self.status == "ok"


@dataclass
class SweepResult:
    """All rows plus the run's context (graph size, GEMM throughput, versions)."""

    config: SweepConfig
    rows: list[Row]
    num_edges: int
    gemm_gflops_float32: float
    gemm_gflops_dtype: float
    copy_gbs: float = 0.0
    wall_seconds: float = 0.0
    torch_version: str = torch.__version__
    num_threads: int = 1  # torch.get_num_threads() during the sweep
    load_avg: tuple[float, float] | None = None  # 1-minute load average at the start and the end
    other_cores: float | None = None  # mean cores kept busy by other processes during the sweep (Linux)
    allocator: str = "system"  # what the sweep ran with: "reuse" (freed memory kept for reuse) or "system"
    native: str = ""  # how SO2Conv.from_tfn applied its weights: see native_status()


# --------------------------------------------------------------------------- memory
class PeakRss:
    """Context manager measuring the rise of the resident-set high-water mark during its body (bytes).

    ``peak`` is ``None`` when ``/proc/self/clear_refs`` cannot reset the mark (non-Linux, restricted /proc)."""

    _libc = None

    def __init__(self) -> None:
        self.peak: int | None = None
        self._base = 0
        self._ok = False

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(key)

    @classmethod
    def _trim(cls) -> None:
        if cls._libc is None:
            name = ctypes.util.find_library("c")
            cls._libc = ctypes.CDLL(name) if name else False
        if cls._libc and hasattr(cls._libc, "malloc_trim"):
            cls._libc.malloc_trim(0)

    def __enter__(self) -> "PeakRss":
        gc.collect()
        try:
            self._trim()
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self._base = self._status("VmRSS")
            self._ok = True
        except (OSError, KeyError, ValueError):
            self._ok = False
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ok:
            try:
                self.peak = max(0, self._status("VmHWM") - self._base)
            except (OSError, KeyError, ValueError):
                self.peak = None


# --------------------------------------------------------------------------- problem and cases
@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Temporarily set torch's default dtype (layers create their constant buffers in it)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@dataclass
class Graph:
    """The benchmark graph: ``edge_vec = pos[dst] - pos[src]``, detached."""

    num_nodes: int
    edge_src: Tensor
    edge_dst: Tensor
    edge_vec: Tensor

    @property
    def num_edges(self) -> int:
        return int(self.edge_src.shape[0])


def make_graph(nodes: int, radius: float, dtype: torch.dtype, seed: int) -> Graph:
    """Positions N(0, 1)^3 (seeded) and their radius graph, as in the e3nn convolution guide."""
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(nodes, 3, generator=gen, dtype=torch.float64).to(dtype)
    g = radius_graph(pos, radius)
    return Graph(nodes, g.edge_src, g.edge_dst, g.edge_vec.detach())


class Problem:
    """Inputs shared by all methods at one L: features, edge vectors (leaves), TFN-layout weights, cotangent."""

    def __init__(self, graph: Graph, L: int, channels: int, dtype: torch.dtype, seed: int) -> None:
        self.graph = graph
        self.L = L
        self.channels = channels
        self.dtype = dtype
        self.irreps = node_irreps(L, channels)
        self.dim = Irreps(self.irreps).dim
        self.gen = torch.Generator().manual_seed(seed * 1000 + L)
        self.x = torch.randn(graph.num_nodes, self.dim, generator=self.gen, dtype=dtype).requires_grad_()
        self.edge_vec = graph.edge_vec.clone().requires_grad_()
        self.cotangent = torch.randn(graph.num_nodes, self.dim, generator=self.gen, dtype=dtype)
        self._tfn: TFNConv | None = None
        self._tfn_weight: Tensor | None = None
        self.tfn_output: Tensor | None = None

    def tfn(self) -> TFNConv:
        """The TFNConv of this L (built once, shared by so2_equal and tfn)."""
        if self._tfn is None:
            with default_dtype(self.dtype):
                self._tfn = TFNConv(self.irreps, self.irreps, lmax_filter=2 * self.L).to(self.dtype)
        return self._tfn

    def tfn_weight(self) -> Tensor:
        """Random per-edge weights in TFN's path layout, (E, weight_numel), shared by the TFN-layout methods."""
        if self._tfn_weight is None:
            n = tfn_weight_numel(self.irreps, self.L)
            self._tfn_weight = torch.randn(
                self.graph.num_edges, n, generator=self.gen, dtype=self.dtype
            ).requires_grad_()
        return self._tfn_weight

    def random_weight(self, numel: int) -> Tensor:
        """A fresh random (E, numel) leaf."""
        return torch.randn(self.graph.num_edges, numel, generator=self.gen, dtype=self.dtype).requires_grad_()


@dataclass
class Case:
    """A built configuration: ``forward()`` returns (N, dim); ``leaves`` receive gradients."""

    forward: Callable[[], Tensor]
    leaves: list[Tensor]
    so2_layer: SO2Conv | None = None


def tfn_weight_numel(irreps: str, L: int) -> int:
    """Number of TFN per-path weights of ``irreps x Y^<=2L -> irreps`` (no CG tensors are built)."""
    ir = Irreps(irreps)
    return sum(p.mul_in * p.mul_out for p in tfn_paths(ir, 2 * L, ir))


def params_per_edge(method: str, problem: Problem) -> int:
    """Per-edge weight count: TFN-layout ``weight_numel``, or ``num_gates`` for the shared-weight rows."""
    if method in _TFN_LAYOUT:
        return tfn_weight_numel(problem.irreps, problem.L)
    mmax = problem.L if method == "so2_shared_mmaxL" else min(2, problem.L)
    return SO2Conv(problem.irreps, problem.irreps, mmax=mmax, shared_weights=True).weight_numel


def _so2_conv_forward(layer: SO2Conv, p: Problem, weight: Tensor) -> Callable[[], Tensor]:
    g = p.graph
    return lambda: layer(p.x, g.edge_src, g.edge_dst, p.edge_vec, weight)


def build_case(method: str, p: Problem, executor: str = "native") -> Case:
    """Build ``method``'s layer for problem ``p`` (SO2Conv layers with ``executor``) and bind its inputs."""
    g = p.graph
    if method == "tfn":
        layer = p.tfn()
        w = p.tfn_weight()
        return Case(lambda: layer(p.x, g.edge_src, g.edge_dst, p.edge_vec, w), [p.x, p.edge_vec, w])
    if method in ("so2_equal", "so2_equal_scatter"):
        with default_dtype(p.dtype):
            layer = SO2Conv.from_tfn(p.tfn(), executor=executor).to(p.dtype)
        w = p.tfn_weight()
        fwd = _so2_conv_forward(layer, p, w) if method == "so2_equal" else _scatter_forward(layer, p, w)
        return Case(fwd, [p.x, p.edge_vec, w], so2_layer=layer)
    if method in ("so2_shared_mmaxL", "so2_shared_mmax2"):
        mmax = p.L if method == "so2_shared_mmaxL" else min(2, p.L)
        with default_dtype(p.dtype):
            layer = SO2Conv(p.irreps, p.irreps, mmax=mmax, shared_weights=True, executor=executor).to(p.dtype)
        w = p.random_weight(layer.weight_numel)
        return Case(_so2_conv_forward(layer, p, w), [p.x, p.edge_vec, w, *layer.parameters()], so2_layer=layer)
    if method == "e3nn":
        return _e3nn_case(p)
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def _scatter_forward(layer: SO2Conv, p: Problem, weight: Tensor) -> Callable[[], Tensor]:
    """SO2Conv messages summed with ``torch_scatter.scatter`` instead of ``index_add_``."""
    from torch_scatter import scatter

    g = p.graph

    def run() -> Tensor:
        messages = layer.message(p.x[g.edge_src], p.edge_vec, weight)
        return scatter(messages, g.edge_dst, dim=0, dim_size=g.num_nodes, reduce="sum")

    return run


def _e3nn_case(p: Problem) -> Case:
    """The e3nn guide's convolution: SH of the edges, per-edge-weight FullyConnectedTensorProduct, index_add_."""
    from e3nn import o3

    irreps = o3.Irreps(p.irreps)
    irreps_sh = o3.Irreps.spherical_harmonics(2 * p.L)
    with default_dtype(p.dtype):
        tp = o3.FullyConnectedTensorProduct(irreps, irreps_sh, irreps, shared_weights=False).to(p.dtype)
    w = p.tfn_weight()
    if tp.weight_numel != w.shape[1]:
        raise RuntimeError(f"e3nn weight_numel {tp.weight_numel} != TFN layout {w.shape[1]}")
    g = p.graph

    def run() -> Tensor:
        sh = o3.spherical_harmonics(irreps_sh, p.edge_vec, normalize=True, normalization="component")
        messages = tp(p.x[g.edge_src], sh, w)
        return p.x.new_zeros(g.num_nodes, irreps.dim).index_add_(0, g.edge_dst, messages)

    return Case(run, [p.x, p.edge_vec, w, *tp.parameters()])


# --------------------------------------------------------------------------- cost model
@dataclass
class _Point:
    L: int
    fwd_bwd_s: float
    mem_bytes: float | None


def _power_law(points: Sequence[tuple[int, float]], L: int, prior: float, lo: float, hi: float) -> float:
    """Extrapolate ``y(L)`` from the last point with the exponent through the last two (clamped), or ``prior``."""
    L0, y0 = points[-1]
    k = prior
    if len(points) >= 2:
        L1, y1 = points[-2]
        if L0 != L1 and y0 > 0 and y1 > 0:
            k = math.log(y0 / y1) / math.log(L0 / L1)
    k = min(max(k, lo), hi)
    return y0 * (L / L0) ** k


def predict(method: str, L: int, history: Sequence[_Point]) -> tuple[float | None, float | None]:
    """Extrapolated (fwd+bwd seconds, peak bytes) of ``method`` at ``L`` from its earlier points, or None."""
    pts = [h for h in history if h.L < L]
    if not pts:
        return None, None
    t = _power_law([(h.L, h.fwd_bwd_s) for h in pts], L, _PRIOR_EXPONENT, lo=1.0, hi=_MAX_EXPONENT)
    mem_pts = [(h.L, h.mem_bytes) for h in pts if h.mem_bytes]
    # one RSS reading (noisy at small L) is not enough to extrapolate memory: the analytic floor covers that case
    mem = _power_law(mem_pts, L, 3.0, lo=1.0, hi=8.0) if len(mem_pts) >= 2 else None
    return t, mem


def memory_lower_bound(method: str, p: Problem, weights_per_edge: int, executor: str = "native") -> float:
    """Bytes that the fwd+bwd must hold at least: weights, their gradient and transients, features per edge.

    TFN-layout weights need two transients of their size (TFN's and e3nn's per-path products, or the
    regrouped copies of SO2Conv's PyTorch path), except where the compiled edge-frame kernel reads them in
    place: then the weights and their gradient."""
    item = torch.empty((), dtype=p.dtype).element_size()
    in_place = method.startswith("so2_equal") and native.use_kernels(executor, p.x)
    per_edge = 8 * p.dim + (4 * weights_per_edge if method in _TFN_LAYOUT and not in_place else 2 * weights_per_edge)
    return float(item * p.graph.num_edges * per_edge)


# --------------------------------------------------------------------------- measurement
def _zero_grads(leaves: Sequence[Tensor]) -> None:
    for t in leaves:
        t.grad = None


def _fwd_bwd(case: Case, cotangent: Tensor) -> Tensor:
    _zero_grads(case.leaves)
    out = case.forward()
    out.backward(cotangent)
    return out.detach()


def _fwd(case: Case) -> Tensor:
    with torch.no_grad():
        return case.forward()


def _repeats_that_fit(warmup_s: float, budget_s: float, wanted: int) -> int:
    """How many (fwd, fwd+bwd) pairs fit into what is left of the budget after the warm-up."""
    if warmup_s <= 0:
        return wanted
    return max(0, min(wanted, int((budget_s - warmup_s) / (_REPEAT_COST * warmup_s))))


def measure(
    method: str, p: Problem, cfg: SweepConfig, history: list[_Point], gemm_dtype: float, bandwidth_gbs: float = 0.0
) -> Row:
    """Run one configuration under the budget (at ``cfg.anchor_l`` under the memory budget only, with at least
    one repeat); append its point to ``history``; return its row.

    ``gemm_dtype`` (GFLOP/s) and ``bandwidth_gbs`` (GB/s, 0 = unknown) are this machine's yardsticks measured
    in the same run."""
    row = Row(method, p.L, p.channels, p.dim, p.graph.num_edges)
    row.params_per_edge = params_per_edge(method, p)
    if method in _PER_EDGE_TFN_WEIGHTS and bandwidth_gbs > 0:
        row.weight_floor_ms = weight_traffic_floor_ms(
            row.params_per_edge, p.graph.num_edges, p.x.element_size(), bandwidth_gbs
        )
    t_pred, mem_pred = predict(method, p.L, history)
    mem_floor = memory_lower_bound(method, p, row.params_per_edge, cfg.executor)
    mem_limit = cfg.max_memory_gb * 1e9
    if max(mem_floor, mem_pred or 0.0) > mem_limit:
        row.status = "skipped (memory)"
        row.peak_mem_mb = None
        row.estimate_source = f"model: >= {max(mem_floor, mem_pred or 0.0) / 1e6:.0f} MB"
        return row
    anchor = cfg.anchor_l is not None and p.L == cfg.anchor_l
    if not anchor and t_pred is not None and t_pred * _WARMUP_AND_ONE_REPEAT > cfg.budget_seconds:
        row.status = "skipped (time)"
        row.estimate_fwd_bwd_ms = 1e3 * t_pred
        row.estimate_source = "extrapolated"
        return row

    t0 = time.perf_counter()
    case = build_case(method, p, cfg.executor)
    row.build_s = time.perf_counter() - t0
    with PeakRss() as rss:
        t0 = time.perf_counter()
        out = _fwd_bwd(case, p.cotangent)
        warmup = time.perf_counter() - t0
    row.peak_mem_mb = None if rss.peak is None else rss.peak / 1e6
    history.append(_Point(p.L, warmup, rss.peak))
    _compare_with_tfn(method, p, out, row)

    n = _repeats_that_fit(warmup, cfg.budget_seconds, cfg.repeats)
    if anchor:
        n = max(n, 1)
    if n < 1:
        row.status = "skipped (time)"
        row.estimate_fwd_bwd_ms = 1e3 * warmup
        row.estimate_source = "warm-up"
        return row
    row.repeats = n
    row.fwd_ms = 1e3 * median_time(lambda: _fwd(case), n, warmup=0)
    row.fwd_bwd_ms = 1e3 * median_time(lambda: _fwd_bwd(case, p.cotangent), n, warmup=0)
    history[-1] = _Point(p.L, row.fwd_bwd_ms / 1e3, rss.peak)
    if case.so2_layer is not None:
        _measure_so2_stage(case.so2_layer, p, n, gemm_dtype, bandwidth_gbs, row)
    return row


_PER_EDGE_TFN_WEIGHTS = ("so2_equal", "so2_equal_scatter")


def weight_traffic_floor_ms(params_per_edge: int, num_edges: int, itemsize: int, bandwidth_gbs: float) -> float:
    """Least fwd+bwd time of any layer taking per-edge weights: the weights are read in the forward, read
    again in the backward (for the input gradient) and their gradient is written once, ``3 * E * P * itemsize``
    bytes at ``bandwidth_gbs`` (a copy's bytes read plus written per second). Activations, rotations and
    aggregation are left out, so real layers are slower."""
    if bandwidth_gbs <= 0:
        raise ValueError(f"bandwidth_gbs must be > 0, got {bandwidth_gbs}")
    return 1e3 * 3.0 * num_edges * params_per_edge * itemsize / (bandwidth_gbs * 1e9)


def _compare_with_tfn(method: str, p: Problem, out: Tensor, row: Row) -> None:
    """Keep TFN's output; for the layers computing the same function, record the max relative difference."""
    if method == "tfn":
        p.tfn_output = out
    elif method in ("so2_equal", "e3nn", "so2_equal_scatter") and p.tfn_output is not None:
        scale = float(p.tfn_output.abs().max()) or 1.0
        row.max_rel_diff_vs_tfn = float((out - p.tfn_output).abs().max()) / scale


def _measure_so2_stage(
    layer: SO2Conv, p: Problem, repeats: int, gemm_dtype: float, bandwidth_gbs: float, row: Row
) -> None:
    """Time the SO(2) stage alone, forward, as the layer runs it: the per-m matmuls on random inputs of the
    layer's shapes, or for TFN-layout per-edge weights the edge-frame map (:func:`make_tfn_frame_map`) on the
    problem's weights. GFLOP/s and fraction of GEMM, and for per-edge weights GB/s and fraction of the copy
    bandwidth."""
    E = p.graph.num_edges
    tfn_map = layer.weight_layout == "tfn" and not layer.shared_weights
    if tfn_map:
        stage = make_tfn_frame_map(layer, p.tfn_weight(), generator=p.gen)
        flops, nbytes = tfn_frame_map_flops(layer, E), tfn_frame_map_bytes(layer, E, p.x.element_size())
    else:
        stage = make_so2_stage(layer, E, p.dtype, generator=p.gen)
        flops, nbytes = so2_stage_flops(layer, E), so2_stage_bytes(layer, E, p.x.element_size())
    seconds = median_time(stage, repeats, warmup=1)
    row.so2_stage_ms = 1e3 * seconds
    row.so2_stage_gflop = flops / 1e9
    row.so2_gflops = flops / seconds / 1e9 if seconds > 0 else None
    row.so2_gemm_fraction = row.so2_gflops / gemm_dtype if row.so2_gflops and gemm_dtype > 0 else None
    if seconds > 0 and not layer.shared_weights:  # shared weights are reused across edges: flop-bound, not memory-bound
        row.so2_gbs = nbytes / seconds / 1e9
        row.so2_bandwidth_fraction = row.so2_gbs / bandwidth_gbs if bandwidth_gbs > 0 else None


# --------------------------------------------------------------------------- the sweep
def _execution_order(methods: Sequence[str]) -> list[str]:
    """TFN first (its output is the reference of the equal-function rows), e3nn second, then the rest."""
    first = [m for m in ("tfn", "e3nn") if m in methods]
    return first + [m for m in methods if m not in first]


def _free_memory() -> None:
    gc.collect()
    PeakRss._trim()


def native_status(executor: str = "native") -> str:
    """What the SO2Conv rows run on with ``executor`` (the rotations into and out of the edge frame, and
    so2_equal's map of TFN-layout weights): the compiled kernels of :mod:`escn.native`, or PyTorch ops and
    why."""
    if native.check_executor(executor) == "torch":
        return "PyTorch ops (executor 'torch')"
    if native.available():
        return "compiled kernels (escn.native)"
    return f"PyTorch ops ({native.unavailable_reason()})"


def run_sweep(cfg: SweepConfig, progress: Callable[[int, int, str], None] | None = None) -> SweepResult:
    """Run every (L, method) configuration of ``cfg``; ``progress(done, total, label)`` after each one.

    With ``cfg.threads`` set, torch's thread count is that number during the sweep and restored afterwards."""
    if cfg.allocator not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {ALLOCATORS}, got {cfg.allocator!r}")
    if cfg.threads is not None and (
        isinstance(cfg.threads, bool) or not isinstance(cfg.threads, int) or cfg.threads < 1
    ):
        raise ValueError(f"threads must be None (torch.get_num_threads() as it is) or an int >= 1, got {cfg.threads!r}")
    if cfg.anchor_l is not None and (
        isinstance(cfg.anchor_l, bool) or not isinstance(cfg.anchor_l, int) or cfg.anchor_l < 1
    ):
        raise ValueError(f"anchor_l must be None (no anchor) or an int >= 1, got {cfg.anchor_l!r}")
    native.check_executor(cfg.executor)
    previous_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_sweep(cfg, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _run_sweep(cfg: SweepConfig, progress: Callable[[int, int, str], None] | None) -> SweepResult:
    allocator = "reuse" if cfg.allocator == "reuse" and reuse_freed_memory() else "system"
    start = time.perf_counter()
    load_start = _load_average()
    cpu_start = _cpu_seconds()
    num_threads = torch.get_num_threads()
    graph = make_graph(cfg.nodes, cfg.radius, cfg.dtype, cfg.seed)
    if graph.num_edges == 0:
        raise ValueError(
            f"the radius graph of {cfg.nodes} nodes with radius {cfg.radius} has no edges; raise --radius or --nodes"
        )
    gemm32 = gemm_gflops(torch.float32)
    gemm_dt = gemm32 if cfg.dtype == torch.float32 else gemm_gflops(cfg.dtype)
    bandwidth = copy_bandwidth_gbs()
    history: dict[str, list[_Point]] = {m: [] for m in cfg.methods}
    rows: list[Row] = []
    total = len(cfg.ls) * len(cfg.methods)
    done = 0
    for L in cfg.ls:
        problem = Problem(graph, L, cfg.channels, cfg.dtype, cfg.seed)
        for method in _execution_order(cfg.methods):
            if progress is not None:
                progress(done, total, f"L={L} {method}")
            rows.append(_measure_safely(method, problem, cfg, history[method], gemm_dt, bandwidth))
            done += 1
            _free_memory()
        del problem
        _free_memory()
    if progress is not None:
        progress(total, total, "done")
    order = {m: i for i, m in enumerate(METHODS)}
    rows.sort(key=lambda r: (r.L, order.get(r.method, len(order))))
    add_ratios(rows)
    load_end = _load_average()
    cpu_end = _cpu_seconds()
    other = None
    if cpu_start is not None and cpu_end is not None and cpu_end[2] > cpu_start[2]:
        busy, own, wall = (b - a for a, b in zip(cpu_start, cpu_end))
        other = max(0.0, (busy - own) / wall)
    load = (load_start, load_end) if load_start is not None and load_end is not None else None
    return SweepResult(
        cfg,
        rows,
        graph.num_edges,
        gemm32,
        gemm_dt,
        bandwidth,
        time.perf_counter() - start,
        num_threads=num_threads,
        load_avg=load,
        other_cores=other,
        allocator=allocator,
        native=native_status(cfg.executor),
    )


def _cpu_seconds() -> tuple[float, float, float] | None:
    """(CPU seconds all processes have been busy, from /proc/stat; CPU seconds of this process, all threads;
    wall seconds). Differences over the sweep give the cores other processes kept busy, which unlike the
    1-minute load average does not still count a program that has just exited."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 8:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    steal = int(fields[8]) if len(fields) > 8 else 0
    busy = (user + nice + system + irq + softirq + steal) / ticks
    t = os.times()
    return busy, t.user + t.system, time.perf_counter()


def _load_average() -> float | None:
    """The system's 1-minute load average (other processes competing for the cores skew every timing)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _measure_safely(
    method: str, p: Problem, cfg: SweepConfig, history: list[_Point], gemm_dtype: float, bandwidth_gbs: float = 0.0
) -> Row:
    """:func:`measure`, turning an out-of-memory or runtime failure into an "error" row."""
    try:
        return measure(method, p, cfg, history, gemm_dtype, bandwidth_gbs)
    except (RuntimeError, MemoryError) as exc:
        row = Row(method, p.L, p.channels, p.dim, p.graph.num_edges)
        row.status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
        return row


def add_ratios(rows: Sequence[Row]) -> None:
    """Fill speed-ups vs TFN / e3nn (fwd+bwd, same L), the largest speed-up vs TFN any per-edge-weight layer
    could reach (TFN's time over the weight-traffic floor) and index_add / torch_scatter for the scatter rows."""
    by_key = {(r.method, r.L): r for r in rows}
    for r in rows:
        tfn = by_key.get(("tfn", r.L))
        if r.weight_floor_ms and tfn is not None and tfn.ran and tfn.fwd_bwd_ms:
            r.floor_speedup_vs_tfn = tfn.fwd_bwd_ms / r.weight_floor_ms
        if not r.ran:
            continue
        for ref, attr in (("tfn", "speedup_vs_tfn"), ("e3nn", "speedup_vs_e3nn")):
            other = by_key.get((ref, r.L))
            if other is not None and other.ran and r.fwd_bwd_ms:
                setattr(r, attr, other.fwd_bwd_ms / r.fwd_bwd_ms)
        if r.method == "so2_equal_scatter":
            native = by_key.get(("so2_equal", r.L))
            if native is not None and native.ran and r.fwd_bwd_ms:
                r.index_add_over_scatter = native.fwd_bwd_ms / r.fwd_bwd_ms
