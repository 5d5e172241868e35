"""The edge-frame TFN map as one fused kernel per direction, with autograd to any order.

For TFN-layout per-edge weights (:meth:`escn.nn.SO2Conv.from_tfn`) the map in the edge frame is
``y[e] = sum over paths p and terms t of p: coef[t] * x[e, rows_in(t)] @ W_p[e]``, where each path's
(mul_in x mul_out) weight block ``W_p[e]`` couples only the few orders m its Clebsch-Gordan coefficients allow.
In PyTorch ops this needs the weights regrouped (a copy of the largest tensor, forward and backward) before
batched matmuls of tiny matrices. The kernel instead reads each block once where it lies, forward, and once
in the backward, which also writes the weight gradient in place in TFN layout.

The map is bilinear in (x, W), so :mod:`escn.native.bilinear` gives it exact derivatives of every order from
the forward kernel and the backward kernel (which computes either adjoint, or both in one pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from escn.native._runtime import I64 as _I64
from escn.native._runtime import PTR as _PTR
from escn.native._runtime import function, ptr, rows, run_over_edges, suffix
from escn.native.bilinear import BilinearKernels, apply_f

Tensor = torch.Tensor


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
    path_rows, term_rows, coefs = [], [], []
    for (off, mi, mo), ts in zip(paths, terms):
        first = len(term_rows)
        for a, b, c in ts:
            if not (0 <= a and a + mi <= len(perm_in) and 0 <= b and b + mo <= len(perm_out)):
                raise ValueError(f"term ({a}, {b}) of the path at weight offset {off} leaves the buffers")
            term_rows.append((a, b))
            coefs.append(c)
        path_rows.append((off, mi, mo, first, len(term_rows)))
    numel = max((off + mi * mo for off, mi, mo in paths), default=0)
    return TFNFramePlan(
        path=torch.tensor(path_rows, dtype=torch.int64).reshape(-1, 5),
        term=torch.tensor(term_rows, dtype=torch.int64).reshape(-1, 2),
        coef=torch.tensor(coefs, dtype=torch.float64),
        perm_in=torch.tensor(perm_in, dtype=torch.int64),
        perm_out=torch.tensor(perm_out, dtype=torch.int64),
        weight_numel=numel,
        block_max=max((mi * mo for _, mi, mo in paths), default=0),
        terms_max=max((len(ts) for ts in terms), default=0),
        row_max=max((max(mi, mo) for _, mi, mo in paths), default=0),
    )


def _plan_args(plan: TFNFramePlan) -> tuple:
    return (plan.path.shape[0], ptr(plan.path), ptr(plan.term), ptr(plan.coef),
            plan.in_dim, ptr(plan.perm_in), plan.out_dim, ptr(plan.perm_out))


_ARGTYPES_FWD = [_I64, _I64, _I64, _PTR, _PTR, _PTR, _I64, _PTR, _I64, _PTR, _PTR, _I64, _PTR, _I64, _PTR, _I64, _I64, _I64]
_ARGTYPES_BWD = [_I64, _I64, _I64, _PTR, _PTR, _PTR, _I64, _PTR, _I64, _PTR,
                 _PTR, _I64, _PTR, _I64, _PTR, _I64, _PTR, _I64, _PTR, _I64, _I64, _I64, _I64, _I64]


def _forward(plan: TFNFramePlan, x: Tensor, w: Tensor) -> Tensor:
    """f: (E, in_dim), (E, weight_numel) -> (E, out_dim)."""
    x = rows(x, "x", plan.in_dim)
    E = x.shape[0]
    w = rows(w, "weight", plan.weight_numel, E)
    y = x.new_empty(E, plan.out_dim)
    fn = function("escn_tfn_forward" + suffix(x.dtype), _ARGTYPES_FWD)
    args = _plan_args(plan)
    run_over_edges(fn, E, *args, x.data_ptr(), x.stride(0), w.data_ptr(), w.stride(0), y.data_ptr(), y.stride(0), plan.row_max)
    return y


def _backward(plan: TFNFramePlan, gy: Tensor, x: Tensor | None, w: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """(g(gy, w) if w is given, h(x, gy) if x is given), in one pass over the weights."""
    gy = rows(gy, "grad", plan.out_dim)
    E = gy.shape[0]
    x = None if x is None else rows(x, "x", plan.in_dim, E)
    w = None if w is None else rows(w, "weight", plan.weight_numel, E)
    gx = None if w is None else gy.new_empty(E, plan.in_dim)
    gw = None if x is None else gy.new_empty(E, plan.weight_numel)
    fn = function("escn_tfn_backward" + suffix(gy.dtype), _ARGTYPES_BWD)
    args = _plan_args(plan)
    sx, sw = (0 if x is None else x.stride(0)), (0 if w is None else w.stride(0))
    sgx, sgw = (0 if gx is None else gx.stride(0)), (0 if gw is None else gw.stride(0))
    run_over_edges(fn, E, *args, gy.data_ptr(), gy.stride(0), ptr(x), sx, ptr(w), sw, ptr(gx), sgx, ptr(gw), sgw,
                   plan.block_max, plan.terms_max, plan.row_max)
    return gx, gw


def _g(plan: TFNFramePlan, gy: Tensor, w: Tensor) -> Tensor:
    return _backward(plan, gy, None, w)[0]


def _h(plan: TFNFramePlan, x: Tensor, gy: Tensor) -> Tensor:
    return _backward(plan, gy, x, None)[1]


def _gh(plan: TFNFramePlan, gy: Tensor, x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    return _backward(plan, gy, x, w)


KERNELS = BilinearKernels(_forward, _g, _h, _gh)


def tfn_frame_map(plan: TFNFramePlan, x: Tensor, weight: Tensor) -> Tensor:
    """The map ``(E, in_dim), (E, weight_numel) -> (E, out_dim)`` with the compiled kernels (differentiable
    to any order). Callers check :func:`available` and :func:`supports` first."""
    return apply_f(KERNELS, plan, x, weight)
