"""The S2 activation's grid pass as one compiled operator per derivative: coefficients -> sphere grid -> SiLU
(or a derivative of it) -> coefficients, edge by edge, with the grid values kept in a per-thread buffer (see
``s2_grid.h``) instead of (E C, G) tensors.

Notation. ``x`` (E, K_x C) holds coefficients in the stage layout (K_x coefficient rows, C channels fastest; K_x
a prefix of the grid's K coefficients). Two tables: side 0 synthesises with ``to_grid`` (``S_0(x) = x @
to_grid``, per channel) and analyses with its transpose (``A_0``); side 1 synthesises with ``from_grid^T`` and
analyses with ``from_grid`` (``A_1(g) = g @ from_grid``). The tables are given factorised (``lat`` (2, K, B)
latitude factors of side 0 and 1, ``az`` (R, A) azimuth factors, ``mrow`` the azimuth row of each coefficient,
from :class:`escn.nn.S2Grid`), so each transform costs ``K B + R B A`` multiply-adds per channel, not ``K B A``.

The operator ``escn::s2_silu_grid(x, u0, u1, lat, az, plan, spec)`` (``us = [u0, u1]`` without the Nones) with ``plan = [C, K, B, A, R, *mrow]`` and
``spec = [order, out_side, K_out, *sides]`` (one side per ``u`` of ``us``, ``len(us) = order <= 2``) returns

    A_out( silu^(order)(S_0(x)) * prod_i S_side_i(u_i) )                           (E, K_out C)

``order = 0`` is the activation itself (``out_side = 1``: ``silu(x @ to_grid) @ from_grid``). The family is
closed under differentiation: w.r.t. ``x`` with cotangent ``w`` the derivative is the member with ``order + 1``
and ``w`` appended (side ``out_side``), analysed on side 0; w.r.t. ``u_j`` it is the member with ``u_j``
replaced by ``w`` and analysed on ``side_j``. Orders up to 2 (forces, then training on forces) are the
compiled pass; the third derivative and beyond are PyTorch ops (:func:`grid_silu_torch`), differentiable
further. ``escn::s2_silu_grid_backward(x, u, w, lat, az, plan, spec)`` is the backward of an order-1 member
(both gradients, ``(d_u, d_x)``) in one pass.

Only ``x`` and the ``u`` are differentiated; the tables are constants (a table that requires grad is a
ValueError).
"""

from __future__ import annotations

from typing import Sequence

import torch

from escn.native._runtime import (
    I64,
    PTR,
    add,
    check_float_operands,
    function,
    restored_args,
    run_over_edges,
    saved_args,
    suffix,
)
from escn.native.silu_kernel import silu_third_derivative
from escn.native.transforms import escn_op

Tensor = torch.Tensor

__all__ = ["grid_plan", "grid_silu", "grid_silu_torch"]

_ARGTYPES = [I64, I64, PTR, PTR, PTR, PTR, PTR, PTR, PTR, PTR, PTR, I64]
_GRAIN = 16  # edges per thread at least


def grid_plan(channels: int, lat: Tensor, az: Tensor, azimuth_rows: Sequence[int]) -> list[int]:
    """``[C, K, B, A, R, *mrow]`` for tables ``lat`` (2, K, B) and ``az`` (R, A)."""
    K, B = lat.shape[1], lat.shape[2]
    R, A = az.shape
    return [int(channels), int(K), int(B), int(A), int(R), *(int(r) for r in azimuth_rows)]


# ------------------------------------------------------------------ checks (metadata only)
def _check(
    op: str, x: Tensor, us: Sequence[Tensor], lat: Tensor, az: Tensor, plan: Sequence[int], spec: Sequence[int]
) -> tuple[int, int, int]:
    """Shapes, dtypes and the plan of one call; returns (E, C, K_out)."""
    check_float_operands(op, x=x, lat=lat, az=az, **{f"us[{i}]": u for i, u in enumerate(us)})
    if len(plan) < 5:
        raise ValueError(f"{op}: plan must be [C, K, B, A, R, *mrow], got {list(plan)}")
    C, K, B, A, R = (int(v) for v in plan[:5])
    mrow = list(plan[5:])
    if C < 1 or K < 1 or len(mrow) != K or any(not 0 <= r < R for r in mrow):
        raise ValueError(f"{op}: plan must be [C >= 1, K >= 1, B, A, R, K rows in [0, R)], got {list(plan)}")
    if tuple(lat.shape) != (2, K, B) or tuple(az.shape) != (R, A):
        raise ValueError(
            f"{op}: lat must have shape (2, {K}, {B}) and az ({R}, {A}), got {tuple(lat.shape)}, {tuple(az.shape)}"
        )
    if lat.requires_grad or az.requires_grad:
        raise ValueError(f"{op}: the tables lat and az are constants; they must not require grad")
    if len(spec) < 3:
        raise ValueError(f"{op}: spec must be [order, out_side, K_out, *sides], got {list(spec)}")
    order, out_side, K_out = (int(v) for v in spec[:3])
    sides = list(spec[3:])
    if (
        not 0 <= order <= 2
        or len(us) != order
        or len(sides) != order
        or any(s not in (0, 1) for s in [out_side, *sides])
    ):
        raise ValueError(
            f"{op}: spec must be [order in 0..2, out_side, K_out, one side (0 or 1) per u], with "
            f"len(us) = order; got {list(spec)} and {len(us)} us"
        )
    if not 1 <= K_out <= K:
        raise ValueError(f"{op}: K_out must be in [1, {K}], got {K_out}")
    if x.dim() != 2 or x.shape[1] % C or not 1 <= x.shape[1] // C <= K:
        raise ValueError(f"{op}: x must have shape (E, K_x * {C}) with 1 <= K_x <= {K}, got {tuple(x.shape)}")
    for i, u in enumerate(us):
        if u.dim() != 2 or u.shape[0] != x.shape[0] or u.shape[1] % C or not 1 <= u.shape[1] // C <= K:
            raise ValueError(
                f"{op}: us[{i}] must have shape ({x.shape[0]}, K_u * {C}) with 1 <= K_u <= {K}, got {tuple(u.shape)}"
            )
    return x.shape[0], C, K_out


# ------------------------------------------------------------------ the kernel call
_dims_cache: dict[tuple, tuple[Tensor, Tensor]] = {}


def _dims(plan: Sequence[int], head: list[int]) -> tuple[Tensor, Tensor]:
    key = (tuple(plan), tuple(head))
    hit = _dims_cache.get(key)
    if hit is None:
        if len(_dims_cache) > 256:
            _dims_cache.clear()
        hit = (torch.tensor(list(plan[:5]) + head, dtype=torch.int64), torch.tensor(list(plan[5:]), dtype=torch.int64))
        _dims_cache[key] = hit
    return hit


def _run(
    mode: int,
    x: Tensor,
    u0: Tensor | None,
    u1: Tensor | None,
    lat: Tensor,
    az: Tensor,
    plan: Sequence[int],
    side0: int,
    side1: int,
    out: tuple[tuple[int, int], ...],
) -> list[Tensor]:
    C = int(plan[0])
    x = x.contiguous()
    u0 = None if u0 is None else u0.contiguous()
    u1 = None if u1 is None else u1.contiguous()
    lat, az = lat.contiguous(), az.contiguous()
    E = x.shape[0]
    Ku = lambda u: 0 if u is None else u.shape[1] // C  # noqa: E731
    (Ko0, so0), (Ko1, so1) = out[0], (out[1] if len(out) > 1 else (0, 0))
    dims, mrow = _dims(plan, [mode, x.shape[1] // C, Ku(u0), side0, Ku(u1), side1, Ko0, so0, Ko1, so1])
    outs = [x.new_empty(E, K * C) for K, _ in out]
    fn = function("escn_s2_silu_grid" + suffix(x.dtype), _ARGTYPES)
    p = lambda t: None if t is None else t.data_ptr()  # noqa: E731
    run_over_edges(
        fn,
        E,
        dims.data_ptr(),
        mrow.data_ptr(),
        lat.data_ptr(),
        az.data_ptr(),
        x.data_ptr(),
        p(u0),
        p(u1),
        outs[0].data_ptr(),
        outs[1].data_ptr() if len(outs) > 1 else None,
        grain=_GRAIN,
    )
    return outs


# ------------------------------------------------------------------ the operators

_TABLES = "Tensor lat, Tensor az, int[] plan, int[] spec"


def _present(u0: Tensor | None, u1: Tensor | None) -> list[Tensor]:
    return [u for u in (u0, u1) if u is not None]


# The multipliers are two optional tensors rather than a Tensor[] list: each is then an input of its own to
# autograd and to torch.func's autograd.Function (escn.native.transforms), which gives no gradient to a list.
@escn_op("s2_silu_grid", f"Tensor x, Tensor? u0, Tensor? u1, {_TABLES}")
def _grid_op(
    x: Tensor, u0: Tensor | None, u1: Tensor | None, lat: Tensor, az: Tensor, plan: list[int], spec: list[int]
) -> Tensor:
    us = _present(u0, u1)
    _check("s2_silu_grid", x, us, lat, az, plan, spec)
    order, out_side, K_out, *sides = spec
    u0 = us[0] if order >= 1 else None
    u1 = us[1] if order >= 2 else None
    return _run(
        order,
        x,
        u0,
        u1,
        lat,
        az,
        plan,
        sides[0] if order >= 1 else 0,
        sides[1] if order >= 2 else 0,
        ((K_out, out_side),),
    )[0]


@_grid_op.register_fake
def _(x, u0, u1, lat, az, plan, spec):
    E, C, K_out = _check("s2_silu_grid", x, _present(u0, u1), lat, az, plan, spec)
    return x.new_empty(E, K_out * C)


@escn_op("s2_silu_grid_backward", f"Tensor x, Tensor u, Tensor w, {_TABLES}", "(Tensor, Tensor)")
def _grid_backward_op(
    x: Tensor, u: Tensor, w: Tensor, lat: Tensor, az: Tensor, plan: list[int], spec: list[int]
) -> tuple[Tensor, Tensor]:
    C, K_out = _check_backward(x, u, w, lat, az, plan, spec)
    _, out_side, _, side = spec
    # a0 = S_side(u), a1 = S_out_side(w): d_u = A_side(a1 silu'), d_x = A_0(a0 a1 silu'')
    d_u, d_x = _run(3, x, u, w, lat, az, plan, side, out_side, ((u.shape[1] // C, side), (x.shape[1] // C, 0)))
    return d_u, d_x


def _check_backward(x, u, w, lat, az, plan, spec) -> tuple[int, int]:
    E, C, K_out = _check("s2_silu_grid_backward", x, [u], lat, az, plan, spec)
    if int(spec[0]) != 1:
        raise ValueError(f"s2_silu_grid_backward: spec must be that of an order-1 call, got {list(spec)}")
    if w.dim() != 2 or tuple(w.shape) != (E, K_out * C):
        raise ValueError(f"s2_silu_grid_backward: w must have shape ({E}, {K_out * C}), got {tuple(w.shape)}")
    check_float_operands("s2_silu_grid_backward", x=x, w=w)
    return C, K_out


@_grid_backward_op.register_fake
def _(x, u, w, lat, az, plan, spec):
    _check_backward(x, u, w, lat, az, plan, spec)
    return u.new_empty(u.shape), x.new_empty(x.shape)


# ------------------------------------------------------------------ derivatives
def _member(
    x: Tensor,
    us: list[Tensor],
    sides: list[int],
    order: int,
    out_side: int,
    K_out: int,
    lat: Tensor,
    az: Tensor,
    plan: list[int],
) -> Tensor:
    """The family member (module docstring): the operator up to order 2, PyTorch ops beyond."""
    if order <= 2:
        u0, u1 = (list(us) + [None, None])[:2]
        return _grid_op(x, u0, u1, lat, az, plan, [order, out_side, K_out, *sides])
    return grid_silu_torch(x, us, sides, order, out_side, K_out, lat, az, plan)


def _member_backward(
    x, us, sides, order, out_side, lat, az, plan, w, needs
) -> tuple[Tensor | None, list[Tensor | None]]:
    """Gradients w.r.t. x and each u of ``<member(x, us), w>`` (None where not needed)."""
    C = int(plan[0])
    Kx = x.shape[1] // C
    if order == 1 and needs[0] and needs[1]:
        d_u, d_x = _grid_backward_op(x, us[0], w, lat, az, plan, [1, out_side, w.shape[1] // C, sides[0]])
        return d_x, [d_u]
    d_x = _member(x, us + [w], sides + [out_side], order + 1, 0, Kx, lat, az, plan) if needs[0] else None
    d_us: list[Tensor | None] = []
    for j in range(len(us)):
        if needs[1 + j]:
            rest, rest_sides = us[:j] + us[j + 1 :], sides[:j] + sides[j + 1 :]
            d_us.append(
                _member(x, rest + [w], rest_sides + [out_side], order, sides[j], us[j].shape[1] // C, lat, az, plan)
            )
        else:
            d_us.append(None)
    return d_x, d_us


def _setup(ctx, inputs, output) -> None:
    x, u0, u1, lat, az, plan, spec = inputs
    us = _present(u0, u1)
    ctx.save_for_backward(x, lat, az, *us)
    ctx.plan, ctx.spec = list(plan), list(spec)
    ctx.set_materialize_grads(False)


def _grid_backward(ctx, w):
    x, lat, az, *us = ctx.saved_tensors
    order, out_side, _, *sides = ctx.spec
    n = ctx.needs_input_grad
    if w is None:
        return None, None, None, None, None, None, None
    needs = [n[0], n[1], n[2]][: 1 + len(us)]
    d_x, d_us = _member_backward(x, list(us), list(sides), order, out_side, lat, az, ctx.plan, w, needs)
    d_u0, d_u1 = (list(d_us) + [None, None])[:2]
    return d_x, d_u0, d_u1, None, None, None, None


def _setup_backward(ctx, inputs, output) -> None:
    saved_args(ctx, inputs)
    ctx.set_materialize_grads(False)


def _grid_backward_backward(ctx, c_u, c_x):
    x, u, w, lat, az, plan, spec = restored_args(ctx)
    _, out_side, _, side = spec
    n = ctx.needs_input_grad
    d_x = d_u = d_w = None
    # d_u = member(x, [w], [out_side], 1, side), d_x = member(x, [u, w], [side, out_side], 2, 0)
    if c_u is not None:
        gx, (gw,) = _member_backward(x, [w], [out_side], 1, side, lat, az, plan, c_u, [n[0], n[2]])
        d_x, d_w = add(d_x, gx), add(d_w, gw)
    if c_x is not None:
        gx, (gu, gw) = _member_backward(x, [u, w], [side, out_side], 2, 0, lat, az, plan, c_x, [n[0], n[1], n[2]])
        d_x, d_u, d_w = add(d_x, gx), add(d_u, gu), add(d_w, gw)
    return d_x, d_u, d_w, None, None, None, None


_grid_op.register_autograd(_grid_backward, setup_context=_setup)
_grid_backward_op.register_autograd(_grid_backward_backward, setup_context=_setup_backward)


# ------------------------------------------------------------------ PyTorch reference
def _silu_derivative(f: Tensor, order: int) -> Tensor:
    if order == 0:
        return torch.nn.functional.silu(f)
    s = torch.sigmoid(f)
    if order == 1:
        return s * (1 + f * (1 - s))
    if order == 2:
        return s * (1 - s) * (2 + f * (1 - 2 * s))
    if order == 3:
        return silu_third_derivative(f)
    raise NotImplementedError("SiLU derivatives of order above 3 on the grid")


def dense_tables(lat: Tensor, az: Tensor, plan: Sequence[int]) -> Tensor:
    """(2, K, B A) the dense synthesis tables ``lat[side, k, j] az[mrow[k], a]`` (side 0: ``to_grid``, side 1:
    ``from_grid^T``)."""
    mrow = torch.tensor(list(plan[5:]), dtype=torch.long, device=lat.device)
    azk = az.index_select(0, mrow)  # (K, A)
    return (lat[:, :, :, None] * azk[None, :, None, :]).reshape(lat.shape[0], lat.shape[1], -1)


def grid_silu_torch(
    x: Tensor,
    us: Sequence[Tensor],
    sides: Sequence[int],
    order: int,
    out_side: int,
    K_out: int,
    lat: Tensor,
    az: Tensor,
    plan: Sequence[int],
) -> Tensor:
    """The family member of the module docstring with PyTorch ops (dense tables, (E C, G) grid tensors; any
    order up to 3 and differentiable by autograd): the reference of the compiled pass."""
    C = int(plan[0])
    E = x.shape[0]
    T = dense_tables(lat, az, plan)

    def synth(t: Tensor, side: int) -> Tensor:
        Kt = t.shape[1] // C
        return t.reshape(E, Kt, C).transpose(1, 2).reshape(E * C, Kt) @ T[side, :Kt]

    g = _silu_derivative(synth(x, 0), order)
    for u, side in zip(us, sides):
        g = g * synth(u, side)
    out = g @ T[out_side, :K_out].T
    return out.reshape(E, C, K_out).transpose(1, 2).reshape(E, K_out * C)


def grid_silu(x: Tensor, lat: Tensor, az: Tensor, plan: Sequence[int], K_out: int) -> Tensor:
    """``silu(S_0(x)) @ from_grid`` restricted to the first ``K_out`` coefficients (module docstring):
    (E, K_x C) -> (E, K_out C), the operator ``escn::s2_silu_grid`` (order 0), differentiable to any order.
    Callers check :func:`escn.native.use_kernels` first."""
    return _grid_op(x, None, None, lat, az, list(plan), [0, 1, int(K_out)])
