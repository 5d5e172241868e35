"""Edge frames: for every edge, a rotation carrying the edge onto +y, and its Wigner-D blocks.

Construction (two charts, algebraic, no trigonometric functions):

* chart 0 (``|n_y| <= 1/sqrt(2)``): ``R = R_x(-beta) R_y(-alpha)`` with ``n = (sin a sin b, cos b, cos a sin b)``;
* chart 1 (``|n_y| > 1/sqrt(2)``): ``R = R_x(-beta') R_y(-alpha') G`` where ``G = Q^T`` (a quarter turn
  about z) first moves ``n`` near the equator, and ``(alpha', beta')`` are the angles of ``G n``.

In both charts the polar distance ``rho = sqrt(m_x^2 + m_z^2) >= 1/sqrt(2)`` of the vector whose angles are
used, so ``cos/sin`` of the angles (``m_z/rho, m_x/rho, m_y, rho``) are smooth with bounded derivatives:
gradients are finite for every nonzero edge, including edges on or next to ``+-y``, where angle-based
frames divide by zero. ``cos(k a), sin(k a)`` follow by angle addition, so everything is polynomial in
those. The roll about the edge is a deterministic function of the edge; it jumps where the chart
changes, which is harmless because the eSCN message is independent of the roll (equivariance).

Wigner-D of the frame: ``D^l(R) = J Y(-beta) J^T Y(-alpha) [J^T in chart 1]``, where ``Y(t)`` acts on the
``(+m, -m)`` pairs elementwise and ``J`` is the fixed matrix of :func:`escn.o3.J_matrix`. Only the rows
``|m| <= mmax`` are ever needed, and only they are formed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from escn.o3.wigner import J_matrix, cos_sin_multiples, rot_y_diagonals

Tensor = torch.Tensor

_CHART_THRESHOLD = 1 / math.sqrt(2)


@dataclass
class EdgeFrame:
    """Frames of a batch of ``E`` edges.

    Attributes:
        rotation: (E, 3, 3), ``rotation @ edge_vec = |edge_vec| * e_y``.
        cos_alpha, sin_alpha: (E, lmax+1), ``cos(k * -alpha)``, ``sin(k * -alpha)`` for k = 0..lmax.
        cos_beta, sin_beta: (E, lmax+1), likewise for ``-beta``.
        chart: (E,) bool, True where the quarter turn ``G`` is applied first (edges near +-y).
        valid: (E,) bool, False for zero-length edges that were masked (their frame is arbitrary).
        lmax, mmax: the orders the tables cover and the rows kept (``|m| <= mmax``).
        cache: memo of tensors derived from the frame (filled by the layers that use it).
    """

    rotation: Tensor
    cos_alpha: Tensor
    sin_alpha: Tensor
    cos_beta: Tensor
    sin_beta: Tensor
    chart: Tensor
    valid: Tensor
    lmax: int
    mmax: int
    cache: dict[Any, Tensor] = field(default_factory=dict, repr=False, compare=False)
    """Memo for tensors derived from this frame (e.g. per-edge Wigner rows), so that the layers of one
    forward pass that share the frame build them once."""

    @property
    def num_edges(self) -> int:
        return self.rotation.shape[0]

    def rows(self, l: int) -> int:
        """Number of kept rows of ``D^l``: ``2 * min(l, mmax) + 1``."""
        return 2 * min(l, self.mmax) + 1

    def wigner_rows_standard(self, l: int) -> Tensor:
        """Rows ``|m| <= mmax`` of ``J Y(-beta) J^T Y(-alpha)`` (the frame without the chart turn).

        Returns (E, 2*min(l, mmax)+1, 2l+1)."""
        if not 0 <= l <= self.lmax:
            raise ValueError(f"l must be in 0..{self.lmax}, got {l}")
        dtype, device = self.rotation.dtype, self.rotation.device
        J = J_matrix(l, dtype, device)
        k = min(l, self.mmax)
        J_rows = J[l - k : l + k + 1]  # (r, 2l+1)
        diag_b, anti_b = rot_y_diagonals(self.cos_beta, self.sin_beta, l)  # (E, 2l+1)
        M = J_rows * diag_b[:, None, :] + J_rows.flip(-1) * anti_b[:, None, :]  # J_rows Y(-beta)
        M = M @ J.T
        diag_a, anti_a = rot_y_diagonals(self.cos_alpha, self.sin_alpha, l)
        return M * diag_a[:, None, :] + M.flip(-1) * anti_a[:, None, :]

    def wigner_rows(self, l: int) -> Tensor:
        """Rows ``|m| <= mmax`` of ``D^l(rotation)``, shape (E, 2*min(l, mmax)+1, 2l+1)."""
        M = self.wigner_rows_standard(l)
        J = J_matrix(l, M.dtype, M.device)
        return torch.where(self.chart[:, None, None], M @ J.T, M)

    def wigner_blocks(self) -> list[Tensor]:
        """``[wigner_rows(0), ..., wigner_rows(lmax)]``."""
        return [self.wigner_rows(l) for l in range(self.lmax + 1)]


def edge_frame(edge_vec: Tensor, lmax: int, mmax: int | None = None, mask_zero_edges: bool = False) -> EdgeFrame:
    """Build the frames of a batch of edges.

    Args:
        edge_vec: (E, 3) floating tensor of edge vectors (need not be normalised).
        lmax: highest order whose Wigner-D the frame will provide.
        mmax: keep only rows ``|m| <= mmax`` of each D (default: ``lmax``).
        mask_zero_edges: zero-length edges raise ``ValueError`` unless this is True; then they get an
            arbitrary fixed frame, no gradient, and ``valid = False`` so callers can drop them.

    Returns:
        :class:`EdgeFrame`.
    """
    if not isinstance(edge_vec, Tensor) or not edge_vec.is_floating_point():
        raise TypeError("edge_vec must be a floating-point tensor of shape (E, 3)")
    if edge_vec.ndim != 2 or edge_vec.shape[1] != 3:
        raise ValueError(f"edge_vec must have shape (E, 3), got {tuple(edge_vec.shape)}")
    if isinstance(lmax, bool) or not isinstance(lmax, int) or lmax < 0:
        raise ValueError(f"lmax must be an int >= 0, got {lmax!r}")
    mmax = lmax if mmax is None else mmax
    if isinstance(mmax, bool) or not isinstance(mmax, int) or not 0 <= mmax <= lmax:
        raise ValueError(f"mmax must be an int in 0..lmax={lmax}, got {mmax!r}")
    if not torch.isfinite(edge_vec).all():
        raise ValueError("edge_vec contains NaN or infinite entries")

    norm2 = (edge_vec * edge_vec).sum(-1)
    valid = norm2 > 0
    if not bool(valid.all()):
        if not mask_zero_edges:
            bad = int((~valid).sum())
            raise ValueError(
                f"edge_vec has {bad} zero-length edge(s), whose frame is undefined; "
                "remove them or pass mask_zero_edges=True"
            )
        edge_vec = torch.where(valid[:, None], edge_vec, torch.tensor([1.0, 0.0, 0.0], dtype=edge_vec.dtype, device=edge_vec.device))
        norm2 = torch.where(valid, norm2, torch.ones_like(norm2))
    n = edge_vec * torch.rsqrt(norm2)[:, None]
    nx, ny, nz = n.unbind(-1)
    chart = ny.abs() > _CHART_THRESHOLD
    # m = G n in chart 1 with G = Q^T: (x, y, z) -> (-y, x, z)
    mx = torch.where(chart, -ny, nx)
    my = torch.where(chart, nx, ny)
    mz = nz
    rho = torch.sqrt(mx * mx + mz * mz)  # >= 1/sqrt(2) by the chart choice
    cos_a, sin_a = mz / rho, -mx / rho  # angle -alpha
    cos_b, sin_b = my, -rho  # angle -beta
    cos_alpha, sin_alpha = cos_sin_multiples(cos_a, sin_a, lmax)
    cos_beta, sin_beta = cos_sin_multiples(cos_b, sin_b, lmax)

    # R = R_x(-beta) R_y(-alpha) [G]
    zero, one = torch.zeros_like(cos_a), torch.ones_like(cos_a)
    Rx = torch.stack([torch.stack([one, zero, zero], -1), torch.stack([zero, cos_b, -sin_b], -1), torch.stack([zero, sin_b, cos_b], -1)], -2)
    Ry = torch.stack([torch.stack([cos_a, zero, sin_a], -1), torch.stack([zero, one, zero], -1), torch.stack([-sin_a, zero, cos_a], -1)], -2)
    R = Rx @ Ry
    G = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=R.dtype, device=R.device)
    R = torch.where(chart[:, None, None], R @ G, R)
    return EdgeFrame(R, cos_alpha, sin_alpha, cos_beta, sin_beta, chart, valid, lmax, mmax)
