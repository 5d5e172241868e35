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
from dataclasses import dataclass

import torch

from escn._util import has_values
from escn.o3.wigner import J_matrix, cos_sin_multiples, rot_y_diagonals

Tensor = torch.Tensor

_CHART_THRESHOLD = 1 / math.sqrt(2)


@dataclass(frozen=True)
class EdgeFrame:
    """Frames of a batch of ``E`` edges. Immutable: nothing is added to a frame after it is built.

    Attributes:
        rotation: (E, 3, 3), ``rotation @ edge_vec = |edge_vec| * e_y``.
        cos_alpha, sin_alpha: (E, lmax+1), ``cos(k * -alpha)``, ``sin(k * -alpha)`` for k = 0..lmax.
        cos_beta, sin_beta: (E, lmax+1), likewise for ``-beta``.
        chart: (E,) bool, True where the quarter turn ``G`` is applied first (edges near +-y).
        valid: (E,) bool, False for zero-length edges (their frame is a fixed arbitrary one when masked,
            non-finite otherwise).
        lmax, mmax: the orders the tables cover and the rows kept (``|m| <= mmax``).
        standard_rows: ``wigner_rows_standard(l)`` for ``l = 0 .. len(standard_rows) - 1``, formed when the
            frame was built (``edge_frame(..., rows_lmax=...)``) so that all layers sharing the frame use the
            same tensors; empty by default.
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
    standard_rows: tuple[Tensor, ...] = ()

    @property
    def num_edges(self) -> int:
        return self.rotation.shape[0]

    def rows(self, l: int) -> int:
        """Number of kept rows of ``D^l``: ``2 * min(l, mmax) + 1``."""
        return 2 * min(l, self.mmax) + 1

    def wigner_rows_standard(self, l: int) -> Tensor:
        """Rows ``|m| <= mmax`` of ``J Y(-beta) J^T Y(-alpha)`` (the frame without the chart turn).

        Returns (E, 2*min(l, mmax)+1, 2l+1): the tensor of :attr:`standard_rows` where the frame holds it,
        otherwise formed now by the same operations."""
        if not 0 <= l <= self.lmax:
            raise ValueError(f"l must be in 0..{self.lmax}, got {l}")
        if l < len(self.standard_rows):
            return self.standard_rows[l]
        return _standard_rows(self.cos_alpha, self.sin_alpha, self.cos_beta, self.sin_beta, l, self.mmax)

    def wigner_rows(self, l: int) -> Tensor:
        """Rows ``|m| <= mmax`` of ``D^l(rotation)``, shape (E, 2*min(l, mmax)+1, 2l+1)."""
        M = self.wigner_rows_standard(l)
        J = J_matrix(l, M.dtype, M.device)
        return torch.where(self.chart[:, None, None], M @ J.T, M)

    def wigner_blocks(self) -> list[Tensor]:
        """``[wigner_rows(0), ..., wigner_rows(lmax)]``."""
        return [self.wigner_rows(l) for l in range(self.lmax + 1)]


def _standard_rows(
    cos_alpha: Tensor, sin_alpha: Tensor, cos_beta: Tensor, sin_beta: Tensor, l: int, mmax: int
) -> Tensor:
    """Rows ``|m| <= mmax`` of ``J Y(-beta) J^T Y(-alpha)`` from the (E, >= l+1) angle tables: (E, r, 2l+1)."""
    J = J_matrix(l, cos_alpha.dtype, cos_alpha.device)
    k = min(l, mmax)
    J_rows = J[l - k : l + k + 1]  # (r, 2l+1)
    diag_b, anti_b = rot_y_diagonals(cos_beta, sin_beta, l)  # (E, 2l+1)
    M = J_rows * diag_b[:, None, :] + J_rows.flip(-1) * anti_b[:, None, :]  # J_rows Y(-beta)
    M = M @ J.T
    diag_a, anti_a = rot_y_diagonals(cos_alpha, sin_alpha, l)
    return M * diag_a[:, None, :] + M.flip(-1) * anti_a[:, None, :]


def check_edge_vectors(edge_vec: Tensor, name: str = "edge_vec") -> None:
    """Raise ``ValueError`` when ``edge_vec`` (E, 3) has NaN or infinite entries or zero-length rows (whose frame
    is undefined). Reads the values (a host synchronisation), so it belongs where edges are made or enter a
    layer; :func:`edge_frame` itself does not look at them. Meta and fake tensors (no values) pass."""
    if not isinstance(edge_vec, Tensor) or not edge_vec.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of shape (E, 3), got {type(edge_vec).__name__}")
    if edge_vec.ndim != 2 or edge_vec.shape[1] != 3:
        raise ValueError(f"{name} must have shape (E, 3), got {tuple(edge_vec.shape)}")
    if not has_values(edge_vec):  # meta / fake tensors: shapes only
        return
    finite = torch.isfinite(edge_vec).all(dim=-1)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0, 0])
        raise ValueError(f"{name} contains NaN or infinite entries (first at edge {first})")
    zero = (edge_vec * edge_vec).sum(-1) == 0
    if bool(zero.any()):
        first = int(zero.nonzero()[0, 0])
        raise ValueError(
            f"{name} has {int(zero.sum())} zero-length edge(s) (first at edge {first}), whose frame is undefined; "
            "remove them or build the frame with edge_frame(..., mask_zero_edges=True)"
        )


def edge_frame(
    edge_vec: Tensor, lmax: int, mmax: int | None = None, mask_zero_edges: bool = False, rows_lmax: int = -1
) -> EdgeFrame:
    """Build the frames of a batch of edges.

    Only metadata (shapes, dtypes, the integer arguments) is checked: no value of ``edge_vec`` is read on the
    host and no branch depends on one, so the function traces into one graph (``torch.compile(fullgraph=True)``).
    Validate the values where edges are made (:func:`check_edge_vectors`; :func:`escn.data.radius_graph` and
    :class:`escn.nn.SO2Conv` do).

    Args:
        edge_vec: (E, 3) floating tensor of edge vectors (need not be normalised), finite.
        lmax: highest order whose Wigner-D the frame will provide.
        mmax: keep only rows ``|m| <= mmax`` of each D (default: ``lmax``).
        mask_zero_edges: give zero-length edges an arbitrary fixed frame with no gradient (``valid = False``
            marks them, so callers can drop them). Without it their frame is non-finite.
        rows_lmax: also form :meth:`EdgeFrame.wigner_rows_standard` of the orders ``0..min(rows_lmax, lmax)``
            now and keep them in :attr:`EdgeFrame.standard_rows`, for the layers that read them (e.g.
            :class:`escn.nn.edge_rotation.EdgeRotation`, orders ``<= dense_lmax``) to share; default -1: none.

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
    if isinstance(rows_lmax, bool) or not isinstance(rows_lmax, int) or rows_lmax < -1:
        raise ValueError(f"rows_lmax must be an int >= -1, got {rows_lmax!r}")

    norm2 = (edge_vec * edge_vec).sum(-1)
    valid = norm2 > 0
    if mask_zero_edges:
        edge_vec = torch.where(valid[:, None], edge_vec, edge_vec.new_tensor([1.0, 0.0, 0.0]))
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
    Rx = torch.stack(
        [
            torch.stack([one, zero, zero], -1),
            torch.stack([zero, cos_b, -sin_b], -1),
            torch.stack([zero, sin_b, cos_b], -1),
        ],
        -2,
    )
    Ry = torch.stack(
        [
            torch.stack([cos_a, zero, sin_a], -1),
            torch.stack([zero, one, zero], -1),
            torch.stack([-sin_a, zero, cos_a], -1),
        ],
        -2,
    )
    R = Rx @ Ry
    G = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=R.dtype, device=R.device)
    R = torch.where(chart[:, None, None], R @ G, R)
    rows = tuple(
        _standard_rows(cos_alpha, sin_alpha, cos_beta, sin_beta, l, mmax) for l in range(min(rows_lmax, lmax) + 1)
    )
    return EdgeFrame(R, cos_alpha, sin_alpha, cos_beta, sin_beta, chart, valid, lmax, mmax, rows)
