"""The edge-frame TFN map as one fused kernel per direction, with autograd to any order.

For TFN-layout per-edge weights (:meth:`escn.nn.SO2Conv.from_tfn`) the map in the edge frame is
``y[e] = sum over paths p and terms t of p: coef[t] * x[e, rows_in(t)] @ W_p[e]``, where each path's
(mul_in x mul_out) weight block ``W_p[e]`` couples only the few orders m its Clebsch-Gordan coefficients allow.
In PyTorch ops this needs the weights regrouped (a copy of the largest tensor, forward and backward) before
batched matmuls of tiny matrices. The kernel instead reads each block once where it lies, forward, and once
in the backward, which also writes the weight gradient in place in TFN layout.

The kernels are PyTorch operators (registered when this module is imported; the C library is built at the
first call), with ``plan`` = ``path, term, coef, perm_in, perm_out, [weight_numel, block_max, terms_max,
row_max]`` (:meth:`TFNFramePlan.op_args`):

- ``escn::tfn_frame_map(x, weight, *plan) -> y``: (E, in_dim), (E, weight_numel) -> (E, out_dim)
- ``escn::tfn_frame_map_input_grad(grad, weight, *plan) -> (E, in_dim)``
- ``escn::tfn_frame_map_weight_grad(x, grad, *plan) -> (E, weight_numel)``
- ``escn::tfn_frame_map_backward(grad, x, weight, *plan) -> (input grad, weight grad)``, in one pass.

The map is bilinear in (x, W), so :mod:`escn.native.bilinear` gives these operators backward formulas made of
themselves: exact derivatives of every order from the forward kernel and the backward kernel (which computes
either adjoint, or both in one pass).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from escn.native._runtime import I64 as _I64
from escn.native._runtime import PTR as _PTR
from escn.native._runtime import (
    check_float_operands,
    check_rows,
    check_table,
    function,
    ptr,
    rows,
    run_over_edges,
    suffix,
)
from escn.native.bilinear import register_bilinear_autograd
from escn.native.transforms import TransformableOp, escn_op, register_rowwise_vmap

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

    def op_args(self) -> tuple:
        """The plan's arguments of the ``escn`` TFN-map operators."""
        return (
            self.path,
            self.term,
            self.coef,
            self.perm_in,
            self.perm_out,
            [self.weight_numel, self.block_max, self.terms_max, self.row_max],
        )


def make_plan(
    paths: list[tuple[int, int, int]],
    terms: list[list[tuple[int, int, float]]],
    perm_in: list[int],
    perm_out: list[int],
) -> TFNFramePlan:
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


_ARGTYPES_FWD = [
    _I64,
    _I64,
    _I64,
    _PTR,
    _PTR,
    _PTR,
    _I64,
    _PTR,
    _I64,
    _PTR,
    _PTR,
    _I64,
    _PTR,
    _I64,
    _PTR,
    _I64,
    _I64,
    _I64,
]
_ARGTYPES_BWD = [
    _I64,
    _I64,
    _I64,
    _PTR,
    _PTR,
    _PTR,
    _I64,
    _PTR,
    _I64,
    _PTR,
    _PTR,
    _I64,
    _PTR,
    _I64,
    _PTR,
    _I64,
    _PTR,
    _I64,
    _PTR,
    _I64,
    _I64,
    _I64,
    _I64,
    _I64,
]


def _check(op: str, first: tuple[str, Tensor, str], others: list[tuple[str, Tensor, str]], plan: tuple) -> int:
    """Dtypes and shapes of a TFN-map operator's arguments (metadata only); returns E. ``first`` and ``others``:
    (name, tensor, which width: "in", "out" or "weight"); every operand has the first one's rows."""
    path, term, coef, perm_in, perm_out, weight_numel = plan[:6]
    check_float_operands(op, **{first[0]: first[1]}, **{name: t for name, t, _ in others})
    check_table(op, "path", path, torch.int64, (-1, 5))
    check_table(op, "term", term, torch.int64, (-1, 2))
    check_table(op, "coef", coef, torch.float64, (term.shape[0],))
    check_table(op, "perm_in", perm_in, torch.int64, (-1,))
    check_table(op, "perm_out", perm_out, torch.int64, (-1,))
    width = {"in": perm_in.shape[0], "out": perm_out.shape[0], "weight": weight_numel}
    check_rows(first[0], first[1], width[first[2]])
    E = first[1].shape[0]
    for name, t, kind in others:
        check_rows(name, t, width[kind], E)
    return E


def _plan_pointers(plan: tuple) -> tuple:
    path, term, coef, perm_in, perm_out = (t.contiguous() for t in plan[:5])
    keep = (path, term, coef, perm_in, perm_out)  # alive for the call
    return keep, (
        path.shape[0],
        ptr(path),
        ptr(term),
        ptr(coef),
        perm_in.shape[0],
        ptr(perm_in),
        perm_out.shape[0],
        ptr(perm_out),
    )


def _forward(x: Tensor, w: Tensor, plan: tuple) -> Tensor:
    """f: (E, in_dim), (E, weight_numel) -> (E, out_dim)."""
    *_, weight_numel, block_max, terms_max, row_max = plan
    x = rows(x, "x", x.shape[1])
    E = x.shape[0]
    w = rows(w, "weight", weight_numel, E)
    keep, args = _plan_pointers(plan)
    y = x.new_empty(E, keep[4].shape[0])
    fn = function("escn_tfn_forward" + suffix(x.dtype), _ARGTYPES_FWD)
    run_over_edges(
        fn, E, *args, x.data_ptr(), x.stride(0), w.data_ptr(), w.stride(0), y.data_ptr(), y.stride(0), row_max
    )
    return y


def _backward(gy: Tensor, x: Tensor | None, w: Tensor | None, plan: tuple) -> tuple[Tensor | None, Tensor | None]:
    """(g(gy, w) if w is given, h(x, gy) if x is given), in one pass over the weights."""
    *_, weight_numel, block_max, terms_max, row_max = plan
    keep, args = _plan_pointers(plan)
    in_dim = keep[3].shape[0]
    gy = rows(gy, "grad", gy.shape[1])
    E = gy.shape[0]
    x = None if x is None else rows(x, "x", in_dim, E)
    w = None if w is None else rows(w, "weight", weight_numel, E)
    gx = None if w is None else gy.new_empty(E, in_dim)
    gw = None if x is None else gy.new_empty(E, weight_numel)
    fn = function("escn_tfn_backward" + suffix(gy.dtype), _ARGTYPES_BWD)
    sx, sw = (0 if x is None else x.stride(0)), (0 if w is None else w.stride(0))
    sgx, sgw = (0 if gx is None else gx.stride(0)), (0 if gw is None else gw.stride(0))
    run_over_edges(
        fn,
        E,
        *args,
        gy.data_ptr(),
        gy.stride(0),
        ptr(x),
        sx,
        ptr(w),
        sw,
        ptr(gx),
        sgx,
        ptr(gw),
        sgw,
        block_max,
        terms_max,
        row_max,
    )
    return gx, gw


# sizes: weight_numel, block_max, terms_max, row_max (one list: few arguments, see rotation_kernel.py)
_PLAN_SCHEMA = "Tensor path, Tensor term, Tensor coef, Tensor perm_in, Tensor perm_out, int[] sizes"


def _plan(path: Tensor, term: Tensor, coef: Tensor, perm_in: Tensor, perm_out: Tensor, sizes: list[int]) -> tuple:
    if len(sizes) != 4:
        raise ValueError(f"sizes must be [weight_numel, block_max, terms_max, row_max], got {list(sizes)}")
    return (path, term, coef, perm_in, perm_out, *sizes)


def _op(name: str, args: str, returns: str = "Tensor") -> Callable[[Callable[..., Any]], TransformableOp]:
    """:func:`escn.native.transforms.escn_op` with the plan's arguments appended to ``args``."""
    return escn_op(name, f"{args}, {_PLAN_SCHEMA}", returns)


@_op("tfn_frame_map", "Tensor x, Tensor weight")
def _map_op(x, weight, path, term, coef, perm_in, perm_out, sizes):
    plan = _plan(path, term, coef, perm_in, perm_out, sizes)
    _check("tfn_frame_map", ("x", x, "in"), [("weight", weight, "weight")], plan)
    return _forward(x, weight, plan)


@_map_op.register_fake
def _(x, weight, path, term, coef, perm_in, perm_out, sizes):
    plan = _plan(path, term, coef, perm_in, perm_out, sizes)
    E = _check("tfn_frame_map", ("x", x, "in"), [("weight", weight, "weight")], plan)
    return x.new_empty(E, perm_out.shape[0])


@_op("tfn_frame_map_input_grad", "Tensor grad, Tensor weight")
def _input_grad_op(grad, weight, path, term, coef, perm_in, perm_out, sizes):
    plan = _plan(path, term, coef, perm_in, perm_out, sizes)
    _check("tfn_frame_map_input_grad", ("grad", grad, "out"), [("weight", weight, "weight")], plan)
    return _backward(grad, None, weight, plan)[0]


@_input_grad_op.register_fake
def _(grad, weight, path, term, coef, perm_in, perm_out, sizes):
    plan = _plan(path, term, coef, perm_in, perm_out, sizes)
    E = _check("tfn_frame_map_input_grad", ("grad", grad, "out"), [("weight", weight, "weight")], plan)
    return grad.new_empty(E, perm_in.shape[0])


@_op("tfn_frame_map_weight_grad", "Tensor x, Tensor grad")
def _weight_grad_op(x, grad, path, term, coef, perm_in, perm_out, sizes):
    plan = _plan(path, term, coef, perm_in, perm_out, sizes)
    _check("tfn_frame_map_weight_grad", ("x", x, "in"), [("grad", grad, "out")], plan)
    return _backward(grad, x, None, plan)[1]


@_weight_grad_op.register_fake
def _(x, grad, path, term, coef, perm_in, perm_out, sizes):
    plan = _plan(path, term, coef, perm_in, perm_out, sizes)
    E = _check("tfn_frame_map_weight_grad", ("x", x, "in"), [("grad", grad, "out")], plan)
    return x.new_empty(E, sizes[0])


@_op("tfn_frame_map_backward", "Tensor grad, Tensor x, Tensor weight", "(Tensor, Tensor)")
def _backward_op(grad, x, weight, path, term, coef, perm_in, perm_out, sizes):
    plan = _plan(path, term, coef, perm_in, perm_out, sizes)
    _check("tfn_frame_map_backward", ("grad", grad, "out"), [("x", x, "in"), ("weight", weight, "weight")], plan)
    return _backward(grad, x, weight, plan)


@_backward_op.register_fake
def _(grad, x, weight, path, term, coef, perm_in, perm_out, sizes):
    plan = _plan(path, term, coef, perm_in, perm_out, sizes)
    E = _check("tfn_frame_map_backward", ("grad", grad, "out"), [("x", x, "in"), ("weight", weight, "weight")], plan)
    return grad.new_empty(E, perm_in.shape[0]), grad.new_empty(E, sizes[0])


register_bilinear_autograd(_map_op, _input_grad_op, _weight_grad_op, _backward_op)
# Row e of every output depends only on row e of the two operands: vmap folds into the edges.
for _o in (_map_op, _input_grad_op, _weight_grad_op, _backward_op):
    register_rowwise_vmap(_o, row_args=(0, 1, 2) if _o is _backward_op else (0, 1))


def tfn_frame_map(plan: TFNFramePlan, x: Tensor, weight: Tensor) -> Tensor:
    """The map ``(E, in_dim), (E, weight_numel) -> (E, out_dim)`` with the compiled kernels (the operator
    ``escn::tfn_frame_map``, differentiable to any order). Callers check :func:`available` and :func:`supports`
    first."""
    if not isinstance(plan, TFNFramePlan):
        raise TypeError(f"plan must be a TFNFramePlan, got {type(plan).__name__}")
    return _map_op(x, weight, *plan.op_args())
