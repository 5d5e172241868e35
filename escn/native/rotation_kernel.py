"""Rotation into and out of the edge frame in one compiled pass over all orders (see ``edge_rotation.h``).

:class:`escn.nn.edge_rotation.EdgeRotation` applies, per edge and channel of order l, the factorised
``D = J_rows Y(-beta) J^T Y(-alpha)`` from the frame's tables ``cos/sin(m alpha)``, ``cos/sin(m beta)``: two
complex multiplies by phases and two products with fixed matrices. With PyTorch ops that is a dozen small
kernels per order plus their backward passes; here it is one loop over edges, channels in vector lanes.

Exact derivatives of every order: ``F(x, A, B, y) = <to_frame(x; A, B), y>`` is linear in each of its four
slots (features x, alpha table pair A, beta table pair B, edge-frame rows y), so the derivative of the map
that leaves one slot open, w.r.t. one of its inputs, is the map that leaves that input's slot open, with the
cotangent put in the first one. Autograd Functions for the open slots call each other in their backward
passes (the two table slots share one, as the adjoint kernel computes both in one pass); two kernels compute
all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from escn.native._runtime import I64, PTR, function, ptr, rows, run_over_edges, suffix

Tensor = torch.Tensor
Tables = tuple[Tensor, Tensor, Tensor, Tensor]  # cos_a, sin_a, cos_b, sin_b: (E, >= lmax + 1)


@dataclass
class RotationPlan:
    """group: (Q, 8) int64 rows ``l, M, d, r, x offset, y offset, J offset, JrT offset``; mats64: the fixed
    matrices (float64), one copy per dtype made on demand; x_dim, y_dim: widths; lmax, dmax: largest l and d."""

    group: Tensor
    mats64: Tensor
    x_dim: int
    y_dim: int
    lmax: int
    dmax: int
    _mats: dict = field(default_factory=dict, repr=False)

    def mats(self, dtype: torch.dtype) -> Tensor:
        m = self._mats.get(dtype)
        if m is None:
            m = self._mats[dtype] = self.mats64.to(dtype).contiguous()
        return m


def make_rotation_plan(groups: list[tuple[int, int, Tensor, Tensor]]) -> RotationPlan:
    """Plan for consecutive groups ``[(l, M, J, JrT), ...]``: ``M`` channels of ``d = 2l + 2`` slots in x and
    ``r`` rows in y; ``J`` (d x d) and ``JrT`` (d x r) act on row vectors (``b @ J``)."""
    table, mats = [], []
    xo = yo = mo = 0
    for l, M, J, JrT in groups:
        d = 2 * l + 2
        r = JrT.shape[1]
        if J.shape != (d, d) or JrT.shape[0] != d or r > 2 * l + 1:
            raise ValueError(f"order {l}: J must be ({d}, {d}) and JrT ({d}, r <= {2 * l + 1}), got {tuple(J.shape)}, {tuple(JrT.shape)}")
        table.append((l, M, d, r, xo, yo, mo, mo + d * d))
        mats += [J.reshape(-1), JrT.reshape(-1)]
        xo, yo, mo = xo + M * d, yo + M * r, mo + d * d + d * r
    return RotationPlan(
        group=torch.tensor(table, dtype=torch.int64).reshape(-1, 8),
        mats64=torch.cat(mats).to(torch.float64) if mats else torch.zeros(0, dtype=torch.float64),
        x_dim=xo, y_dim=yo,
        lmax=max((l for l, *_ in groups), default=0),
        dmax=max((2 * l + 2 for l, *_ in groups), default=2),
    )


_TO = [I64, I64, I64, PTR, PTR, PTR, I64, PTR, PTR, PTR, PTR, I64, PTR, I64, I64, I64]
_ADJ = [I64, I64, I64, PTR, PTR, PTR, I64, PTR, PTR, PTR, PTR, I64, PTR, I64, PTR, I64, PTR, PTR, PTR, PTR, I64, I64, I64, PTR, I64, I64]


def _tables(plan: RotationPlan, t: Tables, num_rows: int) -> Tables:
    """The four tables, contiguous (the kernels read them with one row stride), (num_rows, width > lmax)."""
    width = t[0].shape[1] if t[0].dim() == 2 else -1
    if width <= plan.lmax:
        raise ValueError(f"the frame's tables must have shape (E, > {plan.lmax}), got {tuple(t[0].shape)}")
    return tuple(rows(a, "table", width, num_rows).contiguous() for a in t)  # type: ignore[return-value]


def _to_frame(plan: RotationPlan, x: Tensor, t: Tables) -> Tensor:
    x = rows(x, "x", plan.x_dim)
    ca, sa, cb, sb = _tables(plan, t, x.shape[0])
    y = x.new_empty(x.shape[0], plan.y_dim)
    fn = function("escn_rot_to_frame" + suffix(x.dtype), _TO)
    m, n, g = plan.mats(x.dtype), plan.group.shape[0], ptr(plan.group)
    run_over_edges(fn, x.shape[0], n, g, m.data_ptr(), x.data_ptr(), x.stride(0), ca.data_ptr(), sa.data_ptr(),
                   cb.data_ptr(), sb.data_ptr(), ca.stride(0), y.data_ptr(), y.stride(0), plan.dmax)
    return y


def _adjoint(plan: RotationPlan, gy: Tensor, t: Tables, x: Tensor | None, want_gx: bool,
             want_x_to_frame: bool = False) -> tuple[Tensor | None, Tables | None, Tensor | None]:
    """(to_frame^T gy if want_gx, gradients of <to_frame(x), gy> w.r.t. the tables if x is given, and
    to_frame(x) if want_x_to_frame, x given), in one pass."""
    gy = rows(gy, "y", plan.y_dim)
    E = gy.shape[0]
    ca, sa, cb, sb = _tables(plan, t, E)
    width = ca.shape[1]
    gx = gy.new_empty(E, plan.x_dim) if want_gx else None
    xy = gy.new_empty(E, plan.y_dim) if (want_x_to_frame and x is not None) else None
    if x is not None:
        x = rows(x, "x", plan.x_dim, E)
        alloc = gy.new_zeros if width > plan.lmax + 1 else gy.new_empty  # the kernel writes columns 0..lmax
        gt = tuple(alloc(E, width) for _ in range(4))
    else:
        gt = None
    fn = function("escn_rot_adjoint" + suffix(gy.dtype), _ADJ)
    m, n, g = plan.mats(gy.dtype), plan.group.shape[0], ptr(plan.group)
    gp = (None,) * 4 if gt is None else tuple(a.data_ptr() for a in gt)
    run_over_edges(fn, E, n, g, m.data_ptr(), gy.data_ptr(), gy.stride(0), ca.data_ptr(), sa.data_ptr(), cb.data_ptr(),
                   sb.data_ptr(), ca.stride(0), ptr(gx), 0 if gx is None else gx.stride(0), ptr(x),
                   0 if x is None else x.stride(0), *gp, width, plan.lmax, plan.dmax, ptr(xy),
                   0 if xy is None else xy.stride(0))
    return gx, gt, xy  # type: ignore[return-value]


class _OpenY(torch.autograd.Function):
    """y = to_frame(x; A, B)."""

    @staticmethod
    def forward(ctx, plan: RotationPlan, x: Tensor, ca: Tensor, sa: Tensor, cb: Tensor, sb: Tensor) -> Tensor:
        ctx.plan = plan
        ctx.save_for_backward(x, ca, sa, cb, sb)
        return _to_frame(plan, x, (ca, sa, cb, sb))

    @staticmethod
    def backward(ctx, gy: Tensor):
        x, ca, sa, cb, sb = ctx.saved_tensors
        need_x, need_a, need_b = ctx.needs_input_grad[1], any(ctx.needs_input_grad[2:4]), any(ctx.needs_input_grad[4:6])
        plan, t = ctx.plan, (ca, sa, cb, sb)
        if torch.is_grad_enabled():  # a graph of the gradient is being built: each slot by its own Function
            gx = _OpenX.apply(plan, gy, ca, sa, cb, sb) if need_x else None
            gt = _OpenTables.apply(plan, x, ca, sa, cb, sb, gy) if (need_a or need_b) else (None,) * 4
            return None, gx, *gt
        gx, gt, _ = _adjoint(plan, gy, t, x if (need_a or need_b) else None, need_x)
        gt = gt if gt is not None else (None,) * 4
        return None, gx, *gt


class _OpenX(torch.autograd.Function):
    """x = to_frame^T(y; A, B): the rotation out of the frame."""

    @staticmethod
    def forward(ctx, plan: RotationPlan, y: Tensor, ca: Tensor, sa: Tensor, cb: Tensor, sb: Tensor) -> Tensor:
        ctx.plan = plan
        ctx.save_for_backward(y, ca, sa, cb, sb)
        return _adjoint(plan, y, (ca, sa, cb, sb), None, True)[0]

    @staticmethod
    def backward(ctx, gx: Tensor):
        y, ca, sa, cb, sb = ctx.saved_tensors
        need_y, need_a, need_b = ctx.needs_input_grad[1], any(ctx.needs_input_grad[2:4]), any(ctx.needs_input_grad[4:6])
        plan, t = ctx.plan, (ca, sa, cb, sb)
        if torch.is_grad_enabled():
            gy = _OpenY.apply(plan, gx, ca, sa, cb, sb) if need_y else None
            gt = _OpenTables.apply(plan, gx, ca, sa, cb, sb, y) if (need_a or need_b) else (None,) * 4
            return None, gy, *gt
        if need_a or need_b:  # the table gradients and gy = to_frame(gx) in one pass
            _, gt, gy = _adjoint(plan, y, t, gx, False, want_x_to_frame=need_y)
            return None, gy, *gt
        return None, _to_frame(plan, gx, t) if need_y else None, None, None, None, None


class _OpenTables(torch.autograd.Function):
    """Both table slots of F(x, A, B, y) = <to_frame(x; A, B), y> in one adjoint pass:
    gA = dF/dA (a function of x, B, y) and gB = dF/dB (of x, A, y)."""

    @staticmethod
    def forward(ctx, plan: RotationPlan, x: Tensor, ca: Tensor, sa: Tensor, cb: Tensor, sb: Tensor, y: Tensor):
        ctx.plan = plan
        ctx.save_for_backward(x, ca, sa, cb, sb, y)
        return _adjoint(plan, y, (ca, sa, cb, sb), x, False)[1]

    @staticmethod
    def backward(ctx, g_ca: Tensor, g_sa: Tensor, g_cb: Tensor, g_sb: Tensor):
        # cotangents (c_A, c_B) for (gA, gB): <c_A, gA> + <c_B, gB> = F(x, c_A, B, y) + F(x, A, c_B, y)
        x, ca, sa, cb, sb, y = ctx.saved_tensors
        plan, n = ctx.plan, ctx.needs_input_grad
        gx = gy = None
        if n[1]:
            gx = _OpenX.apply(plan, y, g_ca, g_sa, cb, sb) + _OpenX.apply(plan, y, ca, sa, g_cb, g_sb)
        if n[6]:
            gy = _OpenY.apply(plan, x, g_ca, g_sa, cb, sb) + _OpenY.apply(plan, x, ca, sa, g_cb, g_sb)
        ga = gb = (None, None)
        if n[2] or n[3]:  # A appears in F(x, A, c_B, y): its table slot with B := c_B
            ga = _OpenTables.apply(plan, x, ca, sa, g_cb, g_sb, y)[:2]
        if n[4] or n[5]:  # B appears in F(x, c_A, B, y)
            gb = _OpenTables.apply(plan, x, g_ca, g_sa, cb, sb, y)[2:]
        return None, gx, *ga, *gb, gy


def rotate_to_frame(plan: RotationPlan, x: Tensor, tables: Tables) -> Tensor:
    """(E, x_dim) features -> (E, y_dim) edge-frame rows, differentiable to any order."""
    return _OpenY.apply(plan, x, *tables)


def rotate_from_frame(plan: RotationPlan, y: Tensor, tables: Tables) -> Tensor:
    """(E, y_dim) edge-frame rows -> (E, x_dim) features (the transpose), differentiable to any order."""
    return _OpenX.apply(plan, y, *tables)
