"""S2-grid activation: spherical-harmonic coefficients -> values on a sphere grid -> pointwise nonlinearity
-> coefficients.

A channel holding coefficients ``c_lm`` (``0 <= l <= lmax``) of natural parity (``p = (-1)^l``, the parity of
``Y_l``) is the function ``f(s) = sum_lm c_lm Y_lm(s)`` on the unit sphere (component-normalised ``Y``, so
``sum_m Y_lm^2 = 2l + 1``). The activation returns the coefficients of ``act(f)`` by quadrature:

    c'_lm = (1 / 4 pi) sum_g w_g act(f(s_g)) Y_lm(s_g)

The grid is Gauss-Legendre in ``y = cos(beta)`` (``y`` is the polar axis, as in e3nn) times a uniform grid in
the azimuth about ``y``. It integrates products ``Y_lm Y_l'm'`` exactly as soon as ``res_beta >= lmax + 1`` and
``res_alpha >= 2 mmax + 1``, so with ``act`` = identity the map is the identity to round-off. ``act(f)`` is not
band-limited, so the projection aliases and the layer is equivariant only approximately; the error falls as
the grid grows. Measured (float64, lmax = 4, 8 channels, unit-variance inputs, SiLU, max abs error over random
rotations and reflections relative to the output's max abs value; ``tests/test_s2_activation.py``):

    res_beta x res_alpha     rotation     reflection     (default for lmax = 4: 10 x 18)
        5 x 9                  2.4e-1       2.3e-1
       10 x 18                 2.5e-2       2.5e-2
       20 x 36                 3.2e-3       3.3e-3
       40 x 72                 2.4e-4       1.6e-4
       80 x 144                1.3e-6       9.3e-7

Translations do not act on the features. A reflection is a rotation times
the inversion ``s -> -s``, which maps the grid onto itself for an even ``res_alpha``, so its error is that of a
rotation.

Inside an edge frame only orders ``|m| <= mmax`` are kept; :class:`S2Grid` then keeps only those coefficient
rows. The azimuthal grid is uniform about ``y``, so rolls about the edge by multiples of ``2 pi / res_alpha`` are
exact symmetries.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from escn.native._runtime import use_kernels
from escn.native.s2_grid_kernel import grid_plan, grid_silu
from escn.nn.checks import check_float_input
from escn.nn.constants import ConstantModule
from escn.nn.functional import silu
from escn.nn.radial import second_moment_scale
from escn.o3.irreps import Irrep, Irreps
from escn.o3.spherical_harmonics import spherical_harmonics

Tensor = torch.Tensor
Act = Callable[[Tensor], Tensor]

__all__ = ["S2Grid", "S2Activation", "default_resolution"]


def default_resolution(lmax: int, mmax: int | None = None) -> tuple[int, int]:
    """``(res_beta, res_alpha) = (2 (lmax + 1), 2 (2 mmax + 1))``: twice the exact-quadrature minimum in both
    directions (``mmax`` defaults to ``lmax``); always even in alpha so the grid is symmetric under ``s -> -s``."""
    mmax = lmax if mmax is None else mmax
    return 2 * (lmax + 1), 2 * (2 * mmax + 1)


def _check_resolution(resolution: int | tuple[int, int] | None, lmax: int, mmax: int) -> tuple[int, int]:
    if resolution is None:
        return default_resolution(lmax, mmax)
    if isinstance(resolution, int) and not isinstance(resolution, bool):
        res = (resolution, 2 * resolution)
    elif isinstance(resolution, (tuple, list)) and len(resolution) == 2:
        res = (resolution[0], resolution[1])
    else:
        raise TypeError(f"resolution must be None, an int or a pair (res_beta, res_alpha), got {resolution!r}")
    for name, r in zip(("res_beta", "res_alpha"), res):
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"resolution: {name} must be a positive int, got {r!r}")
    return int(res[0]), int(res[1])


class S2Grid(ConstantModule):
    """Synthesis and analysis matrices between per-channel coefficients and a sphere grid.

    Coefficients are ordered per l ascending, inside an order ``m = -k..k`` with ``k = min(l, mmax)``
    (the standard e3nn order restricted to ``|m| <= mmax``): ``K = sum_l (2 min(l, mmax) + 1)`` of them, unless
    ``coefficients`` gives another order.

    Args:
        lmax: largest order.
        mmax: largest ``|m|`` kept (default ``lmax``).
        resolution: ``(res_beta, res_alpha)``, an int ``n`` meaning ``(n, 2n)``, or None for
            :func:`default_resolution`.
        coefficients: the ``(l, m)`` of each coefficient, in the order of the caller's layout (every ``(l, m)``
            with ``|m| <= min(l, mmax)`` once); the tables' rows and columns follow it.

    Attributes:
        to_grid: (K, G) values ``Y_lm(s_g)``; ``f = c @ to_grid``.
        from_grid: (G, K) ``w_g Y_lm(s_g) / 4 pi``; ``c = f @ from_grid``.
        azimuth: (R, res_alpha) the azimuth factors of the harmonics, one row per signed order ``m`` of
            ``azimuth_orders`` (``1``, ``cos(m alpha)`` for ``m > 0``, ``sin(|m| alpha)`` for ``m < 0``).
        azimuth_rows: per coefficient, its row of ``azimuth``.
        to_latitude: (K, res_beta) latitude factors: ``to_grid[k, j * res_alpha + a] =
            to_latitude[k, j] * azimuth[azimuth_rows[k], a]`` (grid points are latitude-major).
        from_latitude: (K, res_beta) the same for ``from_grid`` (``to_latitude`` times the quadrature weight
            of the latitude, ``w_j / 4 pi`` with the azimuth's ``2 pi / res_alpha`` folded in).
    """

    # constant tables (registered in __init__)
    to_grid: Tensor
    from_grid: Tensor
    azimuth: Tensor
    to_latitude: Tensor
    from_latitude: Tensor

    def __init__(
        self,
        lmax: int,
        mmax: int | None = None,
        resolution: int | tuple[int, int] | None = None,
        coefficients: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(lmax, bool) or not isinstance(lmax, int) or lmax < 0:
            raise ValueError(f"lmax must be an int >= 0, got {lmax!r}")
        if mmax is None:
            mmax = lmax
        if isinstance(mmax, bool) or not isinstance(mmax, int) or mmax < 0:
            raise ValueError(f"mmax must be None or an int >= 0, got {mmax!r}")
        mmax = min(mmax, lmax)
        self.lmax, self.mmax = lmax, mmax
        self.res_beta, self.res_alpha = _check_resolution(resolution, lmax, mmax)
        nodes, weights = np.polynomial.legendre.leggauss(self.res_beta)  # y = cos(beta), weights sum to 2
        y = torch.tensor(nodes, dtype=torch.float64)
        wy = torch.tensor(weights, dtype=torch.float64)
        alpha = torch.arange(self.res_alpha, dtype=torch.float64) * (2 * math.pi / self.res_alpha)
        rho = torch.sqrt((1 - y * y).clamp_min(0))
        # points s = (rho sin(alpha), y, rho cos(alpha)): beta from +y, alpha about y
        pts = torch.stack(
            [
                rho[:, None] * torch.sin(alpha)[None, :],
                y[:, None].expand(-1, self.res_alpha),
                rho[:, None] * torch.cos(alpha)[None, :],
            ],
            dim=-1,
        ).reshape(-1, 3)
        w = (wy[:, None] * (2 * math.pi / self.res_alpha)).expand(-1, self.res_alpha).reshape(-1)  # sums to 4 pi
        Y = spherical_harmonics(
            list(range(lmax + 1)), pts, normalize=False, normalization="component"
        )  # (G, (lmax+1)^2)
        if coefficients is None:
            coefficients = [(l, m) for l in range(lmax + 1) for m in range(-min(l, mmax), min(l, mmax) + 1)]
        coefficients = [(int(l), int(m)) for l, m in coefficients]
        if sorted(coefficients) != sorted(
            (l, m) for l in range(lmax + 1) for m in range(-min(l, mmax), min(l, mmax) + 1)
        ):
            raise ValueError(f"coefficients must list every (l, m) with l <= {lmax}, |m| <= min(l, {mmax}) once")
        self.coefficients = coefficients
        keep = [l * l + l + m for l, m in coefficients]
        Y = Y[:, keep]
        self.num_coefficients = len(keep)
        self.num_points = pts.shape[0]
        self.register_constant("to_grid", Y.T)
        self.register_constant("from_grid", Y * (w / (4 * math.pi))[:, None])
        # the separable form: Y_lm(s_ja) = lat_k[j] az_r(k)[a], az_r = 1, cos(m alpha) (m > 0), sin(|m| alpha) (m < 0)
        orders: list[int] = []
        for _, m in coefficients:
            if m not in orders:
                orders.append(m)
        self.azimuth_orders = orders
        self.azimuth_rows = [orders.index(m) for _, m in coefficients]
        az = torch.stack(
            [
                torch.ones_like(alpha) if m == 0 else torch.cos(m * alpha) if m > 0 else torch.sin(-m * alpha)
                for m in orders
            ]
        )  # (R, res_alpha)
        Yk = Y.T.reshape(len(keep), self.res_beta, self.res_alpha)  # (K, res_beta, res_alpha)
        azk = az[self.azimuth_rows]  # (K, res_alpha)
        norm = (azk * azk).sum(1)
        lat = torch.einsum("kja,ka->kj", Yk, azk) / torch.where(norm > 0, norm, torch.ones_like(norm))[:, None]
        lat = torch.where(norm[:, None] > 0, lat, torch.zeros_like(lat))
        err = (lat[:, :, None] * azk[:, None, :] - Yk).abs().max().item() if len(keep) else 0.0
        if err > 1e-12:  # pragma: no cover - the harmonics are products of a latitude and an azimuth factor
            raise AssertionError(f"the grid's harmonics do not factorise (error {err:.2e})")
        self.register_constant("azimuth", az)
        self.register_constant("to_latitude", lat)
        self.register_constant("from_latitude", lat * (wy / (2 * self.res_alpha))[None, :])

    def silu_stages(
        self, x: Tensor, channels: int, num_out: int | None = None, scale: float = 1.0, executor: str = "native"
    ) -> Tensor:
        """``scale * silu`` of the represented functions on coefficients laid out channels fastest:
        (E, K_in * channels) -> (E, K_out * channels), row ``k`` of the coefficients being ``self.coefficients[k]``.
        ``K_in`` (from x's width) and ``K_out = num_out`` (default ``K``) keep only the first coefficients: the
        missing inputs are zero, the missing outputs are not computed.

        With ``executor="native"`` and the compiled kernels available for x, one fused pass per edge (the
        operator ``escn::s2_silu_grid``: the separable transforms, the grid values never stored, every derivative
        again one pass; :mod:`escn.native.s2_grid_kernel`); otherwise PyTorch ops (two GEMMs with the dense tables
        around :func:`escn.nn.functional.silu`), the reference."""
        C = int(channels)
        E, K_in = x.shape[0], x.shape[1] // C
        K_out = self.num_coefficients if num_out is None else int(num_out)
        if use_kernels(executor, x):
            lat = torch.stack([self.to_latitude, self.from_latitude * scale]).to(x.dtype)
            plan = grid_plan(C, lat, self.azimuth, self.azimuth_rows)
            return grid_silu(x, lat, self.azimuth.to(x.dtype), plan, K_out)
        hc = x.reshape(E, K_in, C).transpose(1, 2).reshape(E * C, K_in)
        f = silu(hc @ self.to_grid[:K_in].to(x.dtype), executor)
        out = f @ (self.from_grid[:, :K_out].to(x.dtype) * scale)  # (E * C, K_out)
        return out.view(E, C, K_out).transpose(1, 2).reshape(E, K_out * C)

    def activate(self, x: Tensor, act: Act, scale: float = 1.0) -> Tensor:
        """(..., K) coefficients -> (..., K) coefficients of ``scale * act(f)`` for the represented ``f``."""
        return (act(x @ self.to_grid.to(x.dtype)) * scale) @ self.from_grid.to(x.dtype)

    def extra_repr(self) -> str:
        return f"lmax={self.lmax}, mmax={self.mmax}, resolution=({self.res_beta}, {self.res_alpha}), points={self.num_points}"


class S2Activation(nn.Module):
    """Pointwise nonlinearity on the sphere for features ``C x (0e + 1o + 2e + ... + lmax)``.

    Args:
        irreps: ``C`` copies of every order ``0..lmax`` with natural parity ``(-1)^l``, given either as
            one entry per order (``"8x0e + 8x1o + 8x2e"``) or any equivalent split; the layout is the
            usual irreps layout (entry by entry, channel-major).
        act: the pointwise function (default SiLU, rescaled to unit second moment on N(0, 1) inputs).
        resolution: grid, see :class:`S2Grid`.

    ``forward(x)``: (..., irreps.dim) -> (..., irreps.dim). :meth:`on_channels` works on (..., C, K) coefficient
    blocks directly (the layout of :class:`S2Grid`), which is what edge-frame blocks use.
    """

    _to_channels: Tensor
    _from_channels: Tensor

    def __init__(
        self,
        irreps: Irreps | str,
        act: Act = torch.nn.functional.silu,
        resolution: int | tuple[int, int] | None = None,
        normalize_act: bool = True,
    ) -> None:
        super().__init__()
        self.irreps = Irreps(irreps)
        if self.irreps.dim == 0:
            raise ValueError("irreps must not be empty")
        if not callable(act):
            raise TypeError(f"act must be callable, got {act!r}")
        counts: dict[int, int] = {}
        for mul, ir in self.irreps:
            if ir.p != (-1) ** ir.l:
                raise ValueError(
                    f"S2Activation needs natural parity p = (-1)^l (the parity of Y_l); {self.irreps} has {Irrep(ir.l, ir.p)}"
                )
            counts[ir.l] = counts.get(ir.l, 0) + mul
        lmax = max(counts)
        muls = {counts.get(l, 0) for l in range(lmax + 1)}
        if len(muls) != 1:
            raise ValueError(f"S2Activation needs the same multiplicity for every order 0..{lmax}, got {self.irreps}")
        self.channels = muls.pop()
        self.lmax = lmax
        self.grid = S2Grid(lmax, None, resolution)
        self.act = act
        self.act_scale = second_moment_scale(act) if normalize_act else 1.0
        # irreps layout -> (C, K) layout: column c*K + k reads irreps column index[c*K + k]
        slices = self.irreps.slices()
        seen: dict[int, int] = {}
        where: dict[tuple[int, int], int] = {}  # (l, channel) -> first column in the irreps layout
        for (mul, ir), sl in zip(self.irreps, slices):
            for u in range(mul):
                c = seen.get(ir.l, 0)
                where[(ir.l, c)] = sl.start + u * ir.dim
                seen[ir.l] = c + 1
        index = [
            where[(l, c)] + (m + l) for c in range(self.channels) for l in range(lmax + 1) for m in range(-l, l + 1)
        ]
        self.register_buffer("_to_channels", torch.tensor(index, dtype=torch.long), persistent=False)
        inverse = [0] * len(index)
        for k, col in enumerate(index):
            inverse[col] = k
        self.register_buffer("_from_channels", torch.tensor(inverse, dtype=torch.long), persistent=False)

    def on_channels(self, x: Tensor) -> Tensor:
        """(..., C, K) coefficients -> (..., C, K) coefficients of ``act`` of the represented functions."""
        return self.grid.activate(x, self.act, self.act_scale)

    def forward(self, x: Tensor) -> Tensor:
        check_float_input("S2Activation", "x", x, self.grid.to_grid)
        if x.shape[-1] != self.irreps.dim:
            raise ValueError(
                f"S2Activation: x must have last dimension {self.irreps.dim} ({self.irreps}), got {tuple(x.shape)}"
            )
        lead = x.shape[:-1]
        xc = x.index_select(-1, self._to_channels).reshape(*lead, self.channels, self.grid.num_coefficients)
        y = self.on_channels(xc).reshape(*lead, self.irreps.dim)
        return y.index_select(-1, self._from_channels)

    def extra_repr(self) -> str:
        return f"irreps={self.irreps}, resolution=({self.grid.res_beta}, {self.grid.res_alpha})"
