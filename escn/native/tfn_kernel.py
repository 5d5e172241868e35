"""The edge-frame TFN map as one fused kernel per direction, with autograd to any order.

For TFN-layout per-edge weights (:meth:`escn.nn.SO2Conv.from_tfn`) the map in the edge frame is
``y[e] = sum over paths p and terms t of p: coef[t] * x[e, rows_in(t)] @ W_p[e]``, where each path's
(mul_in x mul_out) weight block ``W_p[e]`` couples only the few orders m its Clebsch-Gordan coefficients allow.
In PyTorch ops this needs the weights regrouped (a copy of the largest tensor, forward and backward) before
batched matmuls of tiny matrices. The kernel instead reads each block once where it lies, forward, and once
in the backward, which also writes the weight gradient in place in TFN layout.

The map is bilinear, ``y = f(x, W)``; with its adjoints ``g(gy, W) = (df/dx)^T gy`` and
``h(x, gy) = (df/dW)^T gy`` every derivative is again one of ``f, g, h``:
``<f(x, V), gy> = <x, g(gy, V)> = <V, h(x, gy)>``. So the three autograd Functions below call each other in
their backward passes, and gradients of any order (forces, then training on forces) stay exact.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from escn.native import build

Tensor = torch.Tensor

_P64 = ctypes.POINTER(ctypes.c_int64)
_I64 = ctypes.c_int64
_PTR = ctypes.c_void_p


@dataclass(frozen=True)
class TFNFramePlan:
    """Index tables of the map (CPU int64 / float64 tensors, kept alive for the kernel's pointers).

    path: (P, 5) weight offset, mul_in, mul_out, first term, one past the last term.
    term: (T, 2) offsets of the term's input row and output row in the (entry, m, channel) buffers.
    coef: (T,) the term's coefficient.
    perm_in: (in_dim,) buffer slot k holds rotated input column ``perm_in[k]``; perm_out likewise for outputs.
    weight_numel: columns of the TFN-layout weight; block_max: the largest mul_in * mul_out; terms_max: the
    most terms of one path; row_max: the largest multiplicity.
    """

    path: Tensor
    term: Tensor
    coef: Tensor
    perm_in: Tensor
    perm_out: Tensor
    weight_numel: int
    block_max: int
    terms_max: int
    row_max: int

    @property
    def in_dim(self) -> int:
        return self.perm_in.numel()

    @property
    def out_dim(self) -> int:
        return self.perm_out.numel()


def make_plan(paths: list[tuple[int, int, int]], terms: list[list[tuple[int, int, float]]],
              perm_in: list[int], perm_out: list[int]) -> TFNFramePlan:
    """Build a plan from per-path ``(weight offset, mul_in, mul_out)`` and per-path term lists
    ``[(in_offset, out_offset, coef), ...]`` (offsets into the (entry, m, channel) buffers)."""
    if len(paths) != len(terms):
        raise ValueError(f"paths and terms must have the same length, got {len(paths)} and {len(terms)}")
    rows, term_rows, coefs = [], [], []
    for (off, mi, mo), ts in zip(paths, terms):
        first = len(term_rows)
        for a, b, c in ts:
            if not (0 <= a and a + mi <= len(perm_in) and 0 <= b and b + mo <= len(perm_out)):
                raise ValueError(f"term ({a}, {b}) of the path at weight offset {off} leaves the buffers")
            term_rows.append((a, b))
            coefs.append(c)
        rows.append((off, mi, mo, first, len(term_rows)))
    numel = max((off + mi * mo for off, mi, mo in paths), default=0)
    return TFNFramePlan(
        path=torch.tensor(rows, dtype=torch.int64).reshape(-1, 5),
        term=torch.tensor(term_rows, dtype=torch.int64).reshape(-1, 2),
        coef=torch.tensor(coefs, dtype=torch.float64),
        perm_in=torch.tensor(perm_in, dtype=torch.int64),
        perm_out=torch.tensor(perm_out, dtype=torch.int64),
        weight_numel=numel,
        block_max=max((mi * mo for _, mi, mo in paths), default=0),
        terms_max=max((len(ts) for ts in terms), default=0),
        row_max=max((max(mi, mo) for _, mi, mo in paths), default=0),
    )


def available() -> bool:
    """True when the compiled kernels can be used (built or buildable, and not disabled)."""
    return build.load() is not None


def supports(*tensors: Tensor) -> bool:
    """True when the kernels apply to these tensors: on the CPU, float32 or float64, one dtype."""
    dt = tensors[0].dtype
    return dt in (torch.float32, torch.float64) and all(t.device.type == "cpu" and t.dtype == dt for t in tensors)


# ------------------------------------------------------------------ threads
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _workers() -> int:
    return max(1, torch.get_num_threads())


def _parallel(fn, n: int) -> None:
    """Run ``fn(e0, e1)`` over [0, n) split into one chunk per torch thread. The kernels release the GIL
    (ctypes foreign calls do), so chunks run in parallel; the calling thread takes the first chunk."""
    global _pool, _pool_size
    k = min(_workers(), max(1, n // 64))
    bounds = [n * i // k for i in range(k + 1)]
    if k == 1:
        _check(fn(0, n))
        return
    if _pool is None or _pool_size < k - 1:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool, _pool_size = ThreadPoolExecutor(max_workers=k - 1, thread_name_prefix="escn-native"), k - 1
    futures = [_pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, k)]
    results = [fn(bounds[0], bounds[1])] + [f.result() for f in futures]
    for r in results:
        _check(r)


def _check(rc: int) -> None:
    if rc != 0:
        raise MemoryError("escn native kernel: could not allocate its per-thread buffer")


def _after_fork() -> None:
    global _pool, _pool_size
    _pool, _pool_size = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _suffix(dtype: torch.dtype) -> str:
    return "_f32" if dtype == torch.float32 else "_f64"


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _rows(t: Tensor, name: str, width: int) -> Tensor:
    """``t`` as a 2-D CPU tensor with unit column stride and ``width`` columns."""
    if t.dim() != 2 or t.shape[1] != width:
        raise ValueError(f"{name} must have shape (E, {width}), got {tuple(t.shape)}")
    return t if t.stride(1) == 1 and t.stride(0) >= width else t.contiguous()


def _plan_args(plan: TFNFramePlan) -> tuple:
    return (plan.path.shape[0], _ptr(plan.path), _ptr(plan.term), _ptr(plan.coef),
            plan.in_dim, _ptr(plan.perm_in), plan.out_dim, _ptr(plan.perm_out))


_ARGTYPES_FWD = [_I64, _I64, _I64, _PTR, _PTR, _PTR, _I64, _PTR, _I64, _PTR, _PTR, _I64, _PTR, _I64, _PTR, _I64, _I64]
_ARGTYPES_BWD = [_I64, _I64, _I64, _PTR, _PTR, _PTR, _I64, _PTR, _I64, _PTR,
                 _PTR, _I64, _PTR, _I64, _PTR, _I64, _PTR, _I64, _PTR, _I64, _I64, _I64, _I64]


def _function(name: str, argtypes: list):
    lib = build.load()
    if lib is None:
        raise RuntimeError(f"escn native kernels unavailable: {build.error()}")
    fn = getattr(lib, name)
    if fn.argtypes is None:
        fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return fn


def _forward(plan: TFNFramePlan, x: Tensor, w: Tensor) -> Tensor:
    """f: (E, in_dim), (E, weight_numel) -> (E, out_dim)."""
    x, w = _rows(x, "x", plan.in_dim), _rows(w, "weight", plan.weight_numel)
    E = x.shape[0]
    y = x.new_empty(E, plan.out_dim)
    fn = _function("escn_tfn_forward" + _suffix(x.dtype), _ARGTYPES_FWD)
    args = _plan_args(plan)
    _parallel(lambda e0, e1: fn(e0, e1, *args, x.data_ptr(), x.stride(0), w.data_ptr(), w.stride(0), y.data_ptr(), y.stride(0), plan.row_max), E)
    return y


def _backward(plan: TFNFramePlan, gy: Tensor, x: Tensor | None, w: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """(g(gy, w) if w is given, h(x, gy) if x is given), in one pass over the weights."""
    gy = _rows(gy, "grad", plan.out_dim)
    E = gy.shape[0]
    x = None if x is None else _rows(x, "x", plan.in_dim)
    w = None if w is None else _rows(w, "weight", plan.weight_numel)
    gx = None if w is None else gy.new_empty(E, plan.in_dim)
    gw = None if x is None else gy.new_empty(E, plan.weight_numel)
    fn = _function("escn_tfn_backward" + _suffix(gy.dtype), _ARGTYPES_BWD)
    args = _plan_args(plan)
    sx, sw = (0 if x is None else x.stride(0)), (0 if w is None else w.stride(0))
    sgx, sgw = (0 if gx is None else gx.stride(0)), (0 if gw is None else gw.stride(0))
    _parallel(lambda e0, e1: fn(e0, e1, *args, gy.data_ptr(), gy.stride(0), _ptr(x), sx, _ptr(w), sw,
                                _ptr(gx), sgx, _ptr(gw), sgw, plan.block_max, plan.terms_max, plan.row_max), E)
    return gx, gw


class _Map(torch.autograd.Function):
    """y = f(x, W)."""

    @staticmethod
    def forward(ctx, plan: TFNFramePlan, x: Tensor, w: Tensor) -> Tensor:
        ctx.plan = plan
        ctx.save_for_backward(x, w)
        return _forward(plan, x, w)

    @staticmethod
    def backward(ctx, gy: Tensor):
        x, w = ctx.saved_tensors
        plan = ctx.plan
        need_x, need_w = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        if torch.is_grad_enabled():  # building a graph of the gradient: keep both adjoints differentiable
            gx = _AdjointX.apply(plan, gy, w) if need_x else None
            gw = _AdjointW.apply(plan, x, gy) if need_w else None
            return None, gx, gw
        gx, gw = _backward(plan, gy, x if need_w else None, w if need_x else None)
        return None, gx, gw


class _AdjointX(torch.autograd.Function):
    """gx = g(gy, W) = (df/dx)^T gy; linear in gy (adjoint f(., W)) and in W (adjoint h(., gy))."""

    @staticmethod
    def forward(ctx, plan: TFNFramePlan, gy: Tensor, w: Tensor) -> Tensor:
        ctx.plan = plan
        ctx.save_for_backward(gy, w)
        return _backward(plan, gy, None, w)[0]

    @staticmethod
    def backward(ctx, ggx: Tensor):
        gy, w = ctx.saved_tensors
        ggy = _Map.apply(ctx.plan, ggx, w) if ctx.needs_input_grad[1] else None
        gw = _AdjointW.apply(ctx.plan, ggx, gy) if ctx.needs_input_grad[2] else None
        return None, ggy, gw


class _AdjointW(torch.autograd.Function):
    """gW = h(x, gy) = (df/dW)^T gy; linear in x (adjoint g(gy, .)) and in gy (adjoint f(x, .))."""

    @staticmethod
    def forward(ctx, plan: TFNFramePlan, x: Tensor, gy: Tensor) -> Tensor:
        ctx.plan = plan
        ctx.save_for_backward(x, gy)
        return _backward(plan, gy, x, None)[1]

    @staticmethod
    def backward(ctx, ggw: Tensor):
        x, gy = ctx.saved_tensors
        gx = _AdjointX.apply(ctx.plan, gy, ggw) if ctx.needs_input_grad[1] else None
        ggy = _Map.apply(ctx.plan, x, ggw) if ctx.needs_input_grad[2] else None
        return None, gx, ggy


def tfn_frame_map(plan: TFNFramePlan, x: Tensor, weight: Tensor) -> Tensor:
    """The map ``(E, in_dim), (E, weight_numel) -> (E, out_dim)`` with the compiled kernels (differentiable
    to any order). Callers check :func:`available` and :func:`supports` first."""
    return _Map.apply(plan, x, weight)
