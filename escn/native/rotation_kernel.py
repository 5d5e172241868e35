"""Rotation into and out of the edge frame in one compiled pass over all orders (see ``edge_rotation.h``).

:class:`escn.nn.edge_rotation.EdgeRotation` applies, per edge and channel of order l, the factorised
``D = J_rows Y(-beta) J^T Y(-alpha)`` from the frame's tables ``cos/sin(m alpha)``, ``cos/sin(m beta)``: two
complex multiplies by phases and two products with fixed matrices. With PyTorch ops that is a dozen small
kernels per order plus their backward passes; here it is one loop over edges, channels in vector lanes.

The kernels are PyTorch operators (``torch.ops.escn.*``, registered when this module is imported; the C library
is built at the first call), so ``torch.compile``, ``torch.export`` and FakeTensor tracing see them as single
ops with known output shapes:

- ``escn::rotate_to_frame(x, cos_a, sin_a, cos_b, sin_b, group, mats, dims) -> y``, with the plan's tables
  ``group``, ``mats`` and ``dims = [x_dim, y_dim, lmax, dmax]`` (:meth:`RotationPlan.op_args`)
- ``escn::rotate_from_frame(y, cos_a, sin_a, cos_b, sin_b, group, mats, dims) -> x``
- ``escn::rotation_adjoint(x, cos_a, sin_a, cos_b, sin_b, y, group, mats, dims, parts) -> (from_frame(y),
  g_cos_a, g_sin_a, g_cos_b, g_sin_b, to_frame(x))``: one pass for the parts asked for in ``parts =
  [from_frame, table_grads, to_frame]`` (each part not asked for is an empty (0,) tensor); the table gradients
  are those of ``<to_frame(x), y>``.

Exact derivatives of every order: ``F(x, A, B, y) = <to_frame(x; A, B), y>`` is linear in each of its four
slots (features x, alpha table pair A, beta table pair B, edge-frame rows y), so the derivative of the map
that leaves one slot open, w.r.t. one of its inputs, is the map that leaves that input's slot open, with the
cotangent put in the first one. So the backward formula of each operator is made of the three operators,
which have backward formulas themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from escn.native._runtime import (
    I64,
    OPS_NAMESPACE,
    PTR,
    add,
    check_float_operands,
    check_rows,
    check_table,
    function,
    ptr,
    restored_args,
    rows,
    run_over_edges,
    saved_args,
    suffix,
)
from escn.native.transforms import register_rowwise_vmap, transformable

Tensor = torch.Tensor
Tables = tuple[Tensor, Tensor, Tensor, Tensor]  # cos_a, sin_a, cos_b, sin_b: (E, >= lmax + 1)


@dataclass
class RotationPlan:
    """group: (Q, 8) int64 rows ``l, M, d, r, x offset, y offset, J offset, JrT offset``; mats64 / mats32: the
    fixed matrices in float64 / float32; x_dim, y_dim: widths; lmax, dmax: largest l and d."""

    group: Tensor
    mats64: Tensor
    mats32: Tensor
    x_dim: int
    y_dim: int
    lmax: int
    dmax: int

    def mats(self, dtype: torch.dtype) -> Tensor:
        """The fixed matrices in ``dtype`` (float32 or float64)."""
        return self.mats32 if dtype == torch.float32 else self.mats64

    def op_args(self, dtype: torch.dtype) -> tuple:
        """The plan's arguments of the ``escn`` rotation operators: ``group, mats, [x_dim, y_dim, lmax, dmax]``."""
        return self.group, self.mats(dtype), [self.x_dim, self.y_dim, self.lmax, self.dmax]


def make_rotation_plan(groups: list[tuple[int, int, Tensor, Tensor]]) -> RotationPlan:
    """Plan for consecutive groups ``[(l, M, J, JrT), ...]``: ``M`` channels of ``d = 2l + 2`` slots in x and
    ``r`` rows in y; ``J`` (d x d) and ``JrT`` (d x r) act on row vectors (``b @ J``)."""
    table, mats = [], []
    xo = yo = mo = 0
    for l, M, J, JrT in groups:
        d = 2 * l + 2
        r = JrT.shape[1]
        if J.shape != (d, d) or JrT.shape[0] != d or r > 2 * l + 1:
            raise ValueError(
                f"order {l}: J must be ({d}, {d}) and JrT ({d}, r <= {2 * l + 1}), got {tuple(J.shape)}, {tuple(JrT.shape)}"
            )
        table.append((l, M, d, r, xo, yo, mo, mo + d * d))
        mats += [J.reshape(-1), JrT.reshape(-1)]
        xo, yo, mo = xo + M * d, yo + M * r, mo + d * d + d * r
    mats64 = torch.cat(mats).to(torch.float64).contiguous() if mats else torch.zeros(0, dtype=torch.float64)
    return RotationPlan(
        group=torch.tensor(table, dtype=torch.int64).reshape(-1, 8),
        mats64=mats64,
        mats32=mats64.to(torch.float32),
        x_dim=xo,
        y_dim=yo,
        lmax=max((l for l, *_ in groups), default=0),
        dmax=max((2 * l + 2 for l, *_ in groups), default=2),
    )


# ------------------------------------------------------------------ argument checks (metadata only)
def _check(
    op: str,
    x: Tensor | None,
    t: Tables,
    y: Tensor | None,
    group: Tensor,
    mats: Tensor,
    x_dim: int,
    y_dim: int,
    lmax: int,
) -> int:
    """Shapes and dtypes of a rotation operator's arguments (x and y: (E, x_dim), (E, y_dim); the four tables
    (E, > lmax), one shape; group (Q, 8) int64; mats 1-D in the features' dtype); returns E."""
    named = {"x": x, "y": y}
    floats = {k: v for k, v in named.items() if v is not None}
    check_float_operands(op, **floats, cos_alpha=t[0], sin_alpha=t[1], cos_beta=t[2], sin_beta=t[3], mats=mats)
    check_table(op, "group", group, torch.int64, (-1, 8))
    if mats.dim() != 1:
        raise ValueError(f"{op}: mats must be 1-D, got shape {tuple(mats.shape)}")
    first = x if x is not None else y
    assert first is not None
    E = first.shape[0] if first.dim() == 2 else -1
    if x is not None:
        check_rows("x", x, x_dim)
    if y is not None:
        check_rows("y", y, y_dim, E if x is not None else None)
    width = t[0].shape[1] if t[0].dim() == 2 else -1
    if width <= lmax:
        raise ValueError(f"the frame's tables must have shape (E, > {lmax}), got {tuple(t[0].shape)}")
    for a in t:
        check_rows("table", a, width, E)
    return E


# ------------------------------------------------------------------ kernel calls (CPU)
_TO = [I64, I64, I64, PTR, PTR, PTR, I64, PTR, PTR, PTR, PTR, I64, PTR, I64, I64, I64]
_ADJ = [
    I64,
    I64,
    I64,
    PTR,
    PTR,
    PTR,
    I64,
    PTR,
    PTR,
    PTR,
    PTR,
    I64,
    PTR,
    I64,
    PTR,
    I64,
    PTR,
    PTR,
    PTR,
    PTR,
    I64,
    I64,
    I64,
    PTR,
    I64,
    I64,
]


def _contiguous_tables(t: Tables) -> Tables:
    """The four tables, contiguous (the kernels read them with one row stride)."""
    return tuple(a.contiguous() for a in t)  # type: ignore[return-value]


def _to_frame_kernel(x: Tensor, t: Tables, group: Tensor, mats: Tensor, y_dim: int, dmax: int) -> Tensor:
    x = rows(x, "x", x.shape[1])
    ca, sa, cb, sb = _contiguous_tables(t)
    group, mats = group.contiguous(), mats.contiguous()
    y = x.new_empty(x.shape[0], y_dim)
    fn = function("escn_rot_to_frame" + suffix(x.dtype), _TO)
    run_over_edges(
        fn,
        x.shape[0],
        group.shape[0],
        group.data_ptr(),
        mats.data_ptr(),
        x.data_ptr(),
        x.stride(0),
        ca.data_ptr(),
        sa.data_ptr(),
        cb.data_ptr(),
        sb.data_ptr(),
        ca.stride(0),
        y.data_ptr(),
        y.stride(0),
        dmax,
    )
    return y


def _adjoint_kernel(
    gy: Tensor,
    t: Tables,
    x: Tensor | None,
    group: Tensor,
    mats: Tensor,
    x_dim: int,
    lmax: int,
    dmax: int,
    want_gx: bool,
    want_x_to_frame: bool,
) -> tuple[Tensor | None, Tables | None, Tensor | None]:
    """(to_frame^T gy if want_gx, gradients of <to_frame(x), gy> w.r.t. the tables if x is given, and
    to_frame(x) if want_x_to_frame, x given), in one pass."""
    gy = rows(gy, "y", gy.shape[1])
    E = gy.shape[0]
    ca, sa, cb, sb = _contiguous_tables(t)
    group, mats = group.contiguous(), mats.contiguous()
    width = ca.shape[1]
    gx = gy.new_empty(E, x_dim) if want_gx else None
    xy = gy.new_empty(E, gy.shape[1]) if (want_x_to_frame and x is not None) else None
    if x is not None:
        x = rows(x, "x", x_dim, E)
        alloc = gy.new_zeros if width > lmax + 1 else gy.new_empty  # the kernel writes columns 0..lmax
        gt = tuple(alloc(E, width) for _ in range(4))
    else:
        gt = None
    fn = function("escn_rot_adjoint" + suffix(gy.dtype), _ADJ)
    gp = (None,) * 4 if gt is None else tuple(a.data_ptr() for a in gt)
    run_over_edges(
        fn,
        E,
        group.shape[0],
        group.data_ptr(),
        mats.data_ptr(),
        gy.data_ptr(),
        gy.stride(0),
        ca.data_ptr(),
        sa.data_ptr(),
        cb.data_ptr(),
        sb.data_ptr(),
        ca.stride(0),
        ptr(gx),
        0 if gx is None else gx.stride(0),
        ptr(x),
        0 if x is None else x.stride(0),
        *gp,
        width,
        lmax,
        dmax,
        ptr(xy),
        0 if xy is None else xy.stride(0),
    )
    return gx, gt, xy  # type: ignore[return-value]


# ------------------------------------------------------------------ the operators
# Few arguments: PyTorch's autograd wrapper of a custom operator walks the schema once per argument on every
# call in grad mode, a cost that grows with the square of their number (profiled: 5x less time in it with 8
# arguments than with 15), so the plan's sizes travel as one int list and the adjoint's parts as one bool list.
_PLAN_SCHEMA = "Tensor group, Tensor mats, int[] dims"  # dims: x_dim, y_dim, lmax, dmax
_TABLES_SCHEMA = "Tensor cos_a, Tensor sin_a, Tensor cos_b, Tensor sin_b"


def _dims(op: str, dims) -> tuple[int, int, int, int]:
    if len(dims) != 4:
        raise ValueError(f"{op}: dims must be [x_dim, y_dim, lmax, dmax], got {list(dims)}")
    return tuple(dims)  # type: ignore[return-value]


def _parts_flags(parts) -> tuple[bool, bool, bool]:
    if len(parts) != 3:
        raise ValueError(
            f"rotation_adjoint: parts must be three bools (from_frame, table_grads, to_frame), got {list(parts)}"
        )
    return bool(parts[0]), bool(parts[1]), bool(parts[2])


@transformable
@torch.library.custom_op(
    f"{OPS_NAMESPACE}::rotate_to_frame",
    mutates_args=(),
    device_types="cpu",
    schema=f"(Tensor x, {_TABLES_SCHEMA}, {_PLAN_SCHEMA}) -> Tensor",
)
def _rotate_to_frame_op(x, cos_a, sin_a, cos_b, sin_b, group, mats, dims):
    x_dim, y_dim, lmax, dmax = _dims("rotate_to_frame", dims)
    t = (cos_a, sin_a, cos_b, sin_b)
    _check("rotate_to_frame", x, t, None, group, mats, x_dim, y_dim, lmax)
    return _to_frame_kernel(x, t, group, mats, y_dim, dmax)


@_rotate_to_frame_op.register_fake
def _(x, cos_a, sin_a, cos_b, sin_b, group, mats, dims):
    x_dim, y_dim, lmax, _ = _dims("rotate_to_frame", dims)
    E = _check("rotate_to_frame", x, (cos_a, sin_a, cos_b, sin_b), None, group, mats, x_dim, y_dim, lmax)
    return x.new_empty(E, y_dim)


@transformable
@torch.library.custom_op(
    f"{OPS_NAMESPACE}::rotate_from_frame",
    mutates_args=(),
    device_types="cpu",
    schema=f"(Tensor y, {_TABLES_SCHEMA}, {_PLAN_SCHEMA}) -> Tensor",
)
def _rotate_from_frame_op(y, cos_a, sin_a, cos_b, sin_b, group, mats, dims):
    x_dim, y_dim, lmax, dmax = _dims("rotate_from_frame", dims)
    t = (cos_a, sin_a, cos_b, sin_b)
    _check("rotate_from_frame", None, t, y, group, mats, x_dim, y_dim, lmax)
    return _adjoint_kernel(y, t, None, group, mats, x_dim, lmax, dmax, True, False)[0]


@_rotate_from_frame_op.register_fake
def _(y, cos_a, sin_a, cos_b, sin_b, group, mats, dims):
    x_dim, y_dim, lmax, _ = _dims("rotate_from_frame", dims)
    E = _check("rotate_from_frame", None, (cos_a, sin_a, cos_b, sin_b), y, group, mats, x_dim, y_dim, lmax)
    return y.new_empty(E, x_dim)


@transformable
@torch.library.custom_op(
    f"{OPS_NAMESPACE}::rotation_adjoint",
    mutates_args=(),
    device_types="cpu",
    schema=f"(Tensor x, {_TABLES_SCHEMA}, Tensor y, {_PLAN_SCHEMA}, bool[] parts) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
)
def _rotation_adjoint_op(x, cos_a, sin_a, cos_b, sin_b, y, group, mats, dims, parts):
    x_dim, y_dim, lmax, dmax = _dims("rotation_adjoint", dims)
    want_from_frame, want_table_grads, want_to_frame = _parts_flags(parts)
    t = (cos_a, sin_a, cos_b, sin_b)
    _check("rotation_adjoint", x, t, y, group, mats, x_dim, y_dim, lmax)
    use_x = want_table_grads or want_to_frame
    gx, gt, xy = _adjoint_kernel(
        y, t, x if use_x else None, group, mats, x_dim, lmax, dmax, want_from_frame, want_to_frame
    )
    if gt is None or not want_table_grads:
        gt = tuple(y.new_empty(0) for _ in range(4))
    return (y.new_empty(0) if gx is None else gx, *gt, y.new_empty(0) if xy is None else xy)


@_rotation_adjoint_op.register_fake
def _(x, cos_a, sin_a, cos_b, sin_b, y, group, mats, dims, parts):
    x_dim, y_dim, lmax, _ = _dims("rotation_adjoint", dims)
    want_from_frame, want_table_grads, want_to_frame = _parts_flags(parts)
    E = _check("rotation_adjoint", x, (cos_a, sin_a, cos_b, sin_b), y, group, mats, x_dim, y_dim, lmax)
    width = cos_a.shape[1]
    gx = y.new_empty(E, x_dim) if want_from_frame else y.new_empty(0)
    gt = [y.new_empty(E, width) if want_table_grads else y.new_empty(0) for _ in range(4)]
    xy = y.new_empty(E, y_dim) if want_to_frame else y.new_empty(0)
    return (gx, *gt, xy)


# ------------------------------------------------------------------ derivatives, made of the operators
def _parts(x: Tensor, t: Tables, y: Tensor, plan: tuple, want_from: bool, want_tables: bool, want_to: bool):
    """(from_frame(y; t), gradients of <to_frame(x; t), y> w.r.t. t, to_frame(x; t)), None where not wanted:
    one operator call, the fused adjoint when more than one part is wanted."""
    if want_from + want_tables + want_to > 1:
        out = _rotation_adjoint_op(x, *t, y, *plan, [want_from, want_tables, want_to])
        return (out[0] if want_from else None, tuple(out[1:5]) if want_tables else None, out[5] if want_to else None)
    if want_from:
        return _rotate_from_frame_op(y, *t, *plan), None, None
    if want_to:
        return None, None, _rotate_to_frame_op(x, *t, *plan)
    if want_tables:
        return None, tuple(_rotation_adjoint_op(x, *t, y, *plan, [False, True, False])[1:5]), None
    return None, None, None


def _add_tables(a: tuple | None, b: tuple | None) -> tuple | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(add(u, v) for u, v in zip(a, b))


def _vjp_tables_slot(
    c: tuple, x: Tensor, t: Tables, y: Tensor, plan: tuple, need_x: bool, need_t: tuple, need_y: bool
) -> tuple[Tensor | None, tuple | None, Tensor | None]:
    """Gradients of ``<c, T(x, t, y)>`` (T: the table gradients of ``F(x, t, y) = <to_frame(x; t), y>``) w.r.t.
    x, the four tables and y. ``c``: four cotangents, None for zero. ``<c, T> = F(x, c_A, B, y) +
    F(x, A, c_B, y)`` with ``c_A = (c[0], c[1])``, ``c_B = (c[2], c[3])``."""

    def pair(u, v, like_u, like_v):
        if u is None and v is None:
            return None
        return (torch.zeros_like(like_u) if u is None else u, torch.zeros_like(like_v) if v is None else v)

    ca, sa, cb, sb = t
    c_a, c_b = pair(c[0], c[1], ca, sa), pair(c[2], c[3], cb, sb)
    gx = gy = None
    g_a = g_b = None
    if c_a is not None:  # F(x, c_A, B, y): its B slot gives the beta-table gradient
        fx, ft, fy = _parts(x, (*c_a, cb, sb), y, plan, need_x, need_t[2] or need_t[3], need_y)
        gx, gy, g_b = add(gx, fx), add(gy, fy), None if ft is None else ft[2:]
    if c_b is not None:  # F(x, A, c_B, y): its A slot gives the alpha-table gradient
        fx, ft, fy = _parts(x, (ca, sa, *c_b), y, plan, need_x, need_t[0] or need_t[1], need_y)
        gx, gy, g_a = add(gx, fx), add(gy, fy), None if ft is None else ft[:2]
    gt = None if (g_a is None and g_b is None) else (*(g_a or (None, None)), *(g_b or (None, None)))
    return gx, gt, gy


def _setup(ctx, inputs, output) -> None:
    saved_args(ctx, inputs)
    ctx.set_materialize_grads(False)


def _to_frame_backward(ctx, gy):
    x, ca, sa, cb, sb, *plan = restored_args(ctx)
    n = ctx.needs_input_grad
    if gy is None:
        return (None,) * len(n)
    gx, gt, _ = _parts(x, (ca, sa, cb, sb), gy, tuple(plan), n[0], any(n[1:5]), False)
    return gx, *(gt or (None,) * 4), *(None,) * len(plan)


def _from_frame_backward(ctx, gx):
    y, ca, sa, cb, sb, *plan = restored_args(ctx)
    n = ctx.needs_input_grad
    if gx is None:
        return (None,) * len(n)
    # <from_frame(y; t), gx> = F(gx, t, y)
    _, gt, gy = _parts(gx, (ca, sa, cb, sb), y, tuple(plan), False, any(n[1:5]), n[0])
    return gy, *(gt or (None,) * 4), *(None,) * len(plan)


def _adjoint_backward(ctx, c_from, c_ca, c_sa, c_cb, c_sb, c_to):
    x, ca, sa, cb, sb, y, *rest = restored_args(ctx)
    plan, (want_from, want_tables, want_to) = tuple(rest[:3]), _parts_flags(rest[3])
    n = ctx.needs_input_grad
    t = (ca, sa, cb, sb)
    need_x, need_t, need_y = n[0], tuple(n[1:5]), n[5]
    gx = gy = gt = None
    if want_from and c_from is not None:  # from_frame(y; t): <., c_from> = F(c_from, t, y)
        _, ft, fy = _parts(c_from, t, y, plan, False, any(need_t), need_y)
        gy, gt = add(gy, fy), _add_tables(gt, ft)
    if want_tables and any(c is not None for c in (c_ca, c_sa, c_cb, c_sb)):
        fx, ft, fy = _vjp_tables_slot((c_ca, c_sa, c_cb, c_sb), x, t, y, plan, need_x, need_t, need_y)
        gx, gy, gt = add(gx, fx), add(gy, fy), _add_tables(gt, ft)
    if want_to and c_to is not None:  # to_frame(x; t): <., c_to> = F(x, t, c_to)
        fx, ft, _ = _parts(x, t, c_to, plan, need_x, any(need_t), False)
        gx, gt = add(gx, fx), _add_tables(gt, ft)
    return gx, *(gt or (None,) * 4), gy, None, None, None, None


_rotate_to_frame_op.register_autograd(_to_frame_backward, setup_context=_setup)
_rotate_from_frame_op.register_autograd(_from_frame_backward, setup_context=_setup)
_rotation_adjoint_op.register_autograd(_adjoint_backward, setup_context=_setup)
# Row e of every output depends only on row e of x, y and the four tables: vmap folds into the edges.
register_rowwise_vmap(_rotate_to_frame_op, row_args=(0, 1, 2, 3, 4))
register_rowwise_vmap(_rotate_from_frame_op, row_args=(0, 1, 2, 3, 4))
register_rowwise_vmap(_rotation_adjoint_op, row_args=(0, 1, 2, 3, 4, 5))


# ------------------------------------------------------------------ public entry points
def _check_entry(plan: RotationPlan, t: Tables) -> None:
    if not isinstance(plan, RotationPlan):
        raise TypeError(f"plan must be a RotationPlan, got {type(plan).__name__}")
    if not isinstance(t, (tuple, list)) or len(t) != 4:
        raise TypeError(
            f"tables must be four tensors (cos_alpha, sin_alpha, cos_beta, sin_beta), got {type(t).__name__}"
        )


def rotate_to_frame(plan: RotationPlan, x: Tensor, tables: Tables) -> Tensor:
    """(E, x_dim) features -> (E, y_dim) edge-frame rows, differentiable to any order (``escn::rotate_to_frame``).
    tables: ``cos_alpha, sin_alpha, cos_beta, sin_beta``, each (E, > lmax), CPU, in x's dtype (float32/64)."""
    _check_entry(plan, tables)
    return _rotate_to_frame_op(x, *tables, *plan.op_args(x.dtype))


def rotate_from_frame(plan: RotationPlan, y: Tensor, tables: Tables) -> Tensor:
    """(E, y_dim) edge-frame rows -> (E, x_dim) features (the transpose), differentiable to any order
    (``escn::rotate_from_frame``); tables as in :func:`rotate_to_frame`."""
    _check_entry(plan, tables)
    return _rotate_from_frame_op(y, *tables, *plan.op_args(y.dtype))
