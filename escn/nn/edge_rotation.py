"""Rotation of edge features into and out of the edge frame without per-edge Wigner matrices.

Features are held in an "l-grouped" layout: for each order ``l`` (ascending) a block of ``M_l`` channels
times ``2l+1`` components, channel-major: column ``offset_l + c (2l+1) + (m + l)``. The rotated layout keeps
only ``|m| <= mmax``: ``offset'_l + c r_l + (m + k_l)`` with ``k_l = min(l, mmax)``, ``r_l = 2 k_l + 1``.

With the frame of :func:`escn.o3.edge_frame.edge_frame` (chart turn handled at the nodes by the caller),
``D = J_rows Y(-beta) J^T Y(-alpha)``. ``Y(t)`` is elementwise (components are stored as
``[m=0, (+1,-1), (+2,-2), ...]`` so each pair is one complex number); ``J`` products are shared-matrix GEMMs over all
edges and channels.
Per edge and channel this costs ``sum_l (2l+1)(2l+1 + r_l)`` multiply-adds, all in large GEMMs, and builds
nothing of size E x (2l+1)^2.

Orders ``l <= dense_lmax`` (default 3) instead use the per-edge rows of ``D`` themselves, applied by one
batched matmul: for small blocks the four-step factorisation is dominated by the cost of launching its kernels.
A frame built with ``edge_frame(..., rows_lmax=rot.rows_lmax(x))`` carries those rows where the PyTorch path
will read them, so the layers of a model that share the frame share them (nothing is stored on the frame during
a forward pass).
``l = 0`` needs no arithmetic at all (``D^0 = 1``). Measured with ``python -m escn.bench.edge_rotation``
(shared-weight SO2Conv fwd+bwd, C = 16, the guide graph's 3,740 edges, 2 threads), factorised -> dense up to
l = 3: L = 1 24.4 -> 16.5 ms, L = 2 49.5 -> 41.1 ms (dense up to 2), L = 3 69.9 -> 63.7 ms, L = 4 104.9 ->
93.5 ms, L = 6 174 -> 172 ms (mmax = L).
"""

from __future__ import annotations

import torch

from escn.native._runtime import ReplacedAttribute, check_executor, use_kernels
from escn.native.rotation_kernel import make_rotation_plan, rotate_from_frame, rotate_to_frame
from escn.nn.constants import ConstantModule
from escn.o3.edge_frame import EdgeFrame
from escn.o3.wigner import J_matrix

Tensor = torch.Tensor


PAD = -1


def component_order(l: int) -> list[int]:
    """The ``2l+2`` slots of an order-``l`` block inside this module's full layout, as indices into the
    standard order (m = -l..l) or ``PAD`` for an always-zero slot: ``[m=0, PAD, (+1, -1), (+2, -2), ...]``.
    Each pair ``(+m, -m)`` (and ``(0, PAD)``) is one complex number ``x_{+m} + i x_{-m}``, so a rotation
    about y by ``t`` is a single complex multiply of the whole block by ``exp(i m t)``."""
    order = [l, PAD]
    for m in range(1, l + 1):
        order += [l + m, l - m]
    return order


def _embed(A: torch.Tensor, rows: list[int] | None, cols: list[int] | None) -> torch.Tensor:
    """Reindex a matrix by slot lists (``PAD`` slots become zero rows/columns)."""
    r = list(range(A.shape[0])) if rows is None else rows
    c = list(range(A.shape[1])) if cols is None else cols
    out = torch.zeros(len(r), len(c), dtype=A.dtype)
    for a, i in enumerate(r):
        if i == PAD:
            continue
        for b, j in enumerate(c):
            if j != PAD:
                out[a, b] = A[i, j]
    return out


class EdgeRotation(ConstantModule):
    """Apply ``D_std`` (to the frame) and ``D_std^T`` (back) on l-grouped features.

    Full layout: per order ``l`` (ascending) ``M_l`` channels x ``2l+2`` slots in
    :func:`component_order`. Rotated layout: per order ``M_l`` channels x ``r_l`` components in the standard
    order ``m = -k_l..k_l``.

    Args:
        groups: ``[(l, M_l), ...]`` with distinct ``l`` in ascending order.
        mmax: rows kept in the frame.
        dense_lmax: orders ``l <= dense_lmax`` are rotated with per-edge ``D`` rows (one batched matmul);
            higher orders with the factorisation (module docstring). Both give the same numbers.
        executor: ``"native"`` (default): on the CPU in float32/float64, rotate all orders with the
            factorisation in one compiled pass (:mod:`escn.native.rotation_kernel`), PyTorch ops elsewhere (and
            everywhere, after one warning naming the reason, if the kernels cannot be built); ``"torch"``: PyTorch
            ops always. Same function either way, up to rounding; :meth:`set_executor` changes it. Measured faster
            with the kernel: SO2Conv layers (shared weights, L = 1-12, fwd+bwd: 1.3-1.8x) and the ESCN model (a
            force-training step, which differentiates twice, 25 % faster).
    """

    #: replaced by the ``executor`` argument
    native = ReplacedAttribute("pass executor='native' or 'torch' to the constructor, or call set_executor()")

    def __init__(self, groups: list[tuple[int, int]], mmax: int, dense_lmax: int = 3, executor: str = "native") -> None:
        super().__init__()
        self._executor = check_executor(executor)
        self.groups = [(int(l), int(M)) for l, M in groups]
        self.mmax = mmax
        self.dense_lmax = int(dense_lmax)
        plan_groups = []
        self.full_offsets: list[int] = []
        self.rot_offsets: list[int] = []
        off = roff = 0
        for l, M in self.groups:
            self.full_offsets.append(off)
            self.rot_offsets.append(roff)
            off += M * (2 * l + 2)
            roff += M * (2 * min(l, mmax) + 1)
            J = J_matrix(l, torch.float64)
            order = component_order(l)
            k = min(l, mmax)
            J_new = _embed(J, order, order)  # J acting on the full layout
            self.register_constant(f"_J{l}", J_new)
            self.register_constant(f"_JT{l}", J_new.T)
            rows = _embed(J[l - k : l + k + 1], None, order)  # full layout -> rotated rows
            self.register_constant(f"_Jrows{l}", rows)
            self.register_constant(f"_JrowsT{l}", rows.T)
            plan_groups.append((l, M, J_new, rows.T.contiguous()))
            # standard column -> full-layout slot (PAD slots read an appended zero column)
            self.register_buffer(
                f"_slot{l}", torch.tensor([2 * l + 1 if j == PAD else j for j in order]), persistent=False
            )
        self.full_dim = off
        self.rot_dim = roff
        self._native_plan = make_rotation_plan(plan_groups)

    @property
    def executor(self) -> str:
        """``"native"`` or ``"torch"`` (constructor argument); changed by :meth:`set_executor`."""
        return self._executor

    def set_executor(self, executor: str) -> "EdgeRotation":
        """Run with ``executor`` (``"native"`` or ``"torch"``, as in the constructor) from now on; returns self."""
        self._executor = check_executor(executor)
        return self

    def rows_lmax(self, x: Tensor) -> int:
        """The ``rows_lmax`` to build the frame with (:func:`escn.o3.edge_frame.edge_frame`) for features like
        ``x`` (edge vectors of its dtype and device): ``dense_lmax`` where the rotation runs PyTorch ops and reads
        the dense rows, -1 (none) where the compiled kernel runs, which reads only the angle tables."""
        return -1 if use_kernels(self._executor, x) else self.dense_lmax

    @staticmethod
    def _rot_y(x: Tensor, l: int, phase: Tensor) -> Tensor:
        """Rotation about y of one block x: (E, M, 2l+2) by the complex phases ``exp(i m t)``,
        phase: (E, 1, >= l+1) complex for m = 0..l."""
        if l == 0:
            return x
        E, M, _ = x.shape
        if x.stride(-1) != 1 or x.stride(-2) % 2 or x.stride(0) % 2 or x.storage_offset() % 2:
            x = x.contiguous()
        z = torch.view_as_complex(x.reshape(E, M, l + 1, 2)) * phase[..., : l + 1]
        return torch.view_as_real(z).reshape(E, M, 2 * l + 2)

    @staticmethod
    def _phases(cos: Tensor, sin: Tensor, inverse: bool) -> Tensor:
        """(E, lmax+1) cos/sin tables of ``m t`` -> (E, 1, lmax+1) complex ``exp(+-i m t)``, m = 0..lmax."""
        return torch.complex(cos, -sin if inverse else sin).unsqueeze(1)

    def _dense(self, l: int, frame: EdgeFrame) -> Tensor | None:
        """Per-edge rows of ``D_std^l`` in the full layout, (E, r_l, 2l+2), or None where the factorised path
        is used (``l > dense_lmax``, or a frame built for other orders). The rows are the frame's
        :attr:`~escn.o3.edge_frame.EdgeFrame.standard_rows` when it was built with them (``rows_lmax``), so
        that the layers sharing a frame share them, else formed here; only the slot order is made here."""
        if l > self.dense_lmax or frame.mmax != self.mmax or l > frame.lmax:
            return None
        rows = frame.wigner_rows_standard(l)  # (E, r, 2l+1)
        rows = torch.cat([rows, rows.new_zeros(rows.shape[0], rows.shape[1], 1)], dim=2)
        return rows.index_select(2, getattr(self, f"_slot{l}"))

    def _use_native(self, x: Tensor, frame: EdgeFrame) -> bool:
        return frame.cos_alpha.shape[-1] > self._native_plan.lmax and use_kernels(self._executor, x, frame.cos_alpha)

    @staticmethod
    def _tables(frame: EdgeFrame) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return frame.cos_alpha, frame.sin_alpha, frame.cos_beta, frame.sin_beta

    def to_frame(self, x: Tensor, frame: EdgeFrame) -> Tensor:
        """(E, full_dim) -> (E, rot_dim): rows ``|m| <= mmax`` of ``J Y(-beta) J^T Y(-alpha) x``."""
        if self._use_native(x, frame):
            return rotate_to_frame(self._native_plan, x, self._tables(frame))
        return self._to_frame_ops(x, frame)

    def _to_frame_ops(self, x: Tensor, frame: EdgeFrame) -> Tensor:
        """:meth:`to_frame` with PyTorch ops."""
        E = x.shape[0]
        outs = []
        pa = self._phases(frame.cos_alpha, frame.sin_alpha, inverse=False)
        pb = self._phases(frame.cos_beta, frame.sin_beta, inverse=False)
        blocks = torch.split(x, [M * (2 * l + 2) for l, M in self.groups], dim=1)
        for (l, M), blk in zip(self.groups, blocks):
            d = 2 * l + 2
            b = blk.reshape(E, M, d)
            if l == 0:
                outs.append(b[:, :, 0])  # slot 0 holds m = 0; D^0 = 1
                continue
            D = self._dense(l, frame)
            if D is not None:
                outs.append(torch.bmm(b, D.transpose(1, 2)).reshape(E, M * D.shape[1]))
                continue
            b = self._rot_y(b, l, pa)
            b = b @ getattr(self, f"_J{l}")  # row-vector form of J^T applied to each channel
            b = self._rot_y(b, l, pb)
            b = b @ getattr(self, f"_JrowsT{l}")  # (E, M, r_l)
            outs.append(b.reshape(E, b.shape[1] * b.shape[2]))  # explicit sizes: E may be 0
        return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]

    def from_frame(self, y: Tensor, frame: EdgeFrame) -> Tensor:
        """(E, rot_dim) -> (E, full_dim): ``D^T y`` with ``y`` zero outside ``|m| <= mmax``."""
        if self._use_native(y, frame):
            return rotate_from_frame(self._native_plan, y, self._tables(frame))
        return self._from_frame_ops(y, frame)

    def _from_frame_ops(self, y: Tensor, frame: EdgeFrame) -> Tensor:
        """:meth:`from_frame` with PyTorch ops."""
        E = y.shape[0]
        outs = []
        pa = self._phases(frame.cos_alpha, frame.sin_alpha, inverse=True)
        pb = self._phases(frame.cos_beta, frame.sin_beta, inverse=True)
        blocks = torch.split(y, [M * (2 * min(l, self.mmax) + 1) for l, M in self.groups], dim=1)
        for (l, M), blk in zip(self.groups, blocks):
            r = 2 * min(l, self.mmax) + 1
            b = blk.reshape(E, M, r)
            if l == 0:
                outs.append(torch.stack([blk, torch.zeros_like(blk)], dim=2).reshape(E, 2 * M))  # [m = 0, PAD]
                continue
            D = self._dense(l, frame)
            if D is not None:
                outs.append(torch.bmm(b, D).reshape(E, M * (2 * l + 2)))
                continue
            b = b @ getattr(self, f"_Jrows{l}")  # (E, M, 2l+2)
            b = self._rot_y(b, l, pb)
            b = b @ getattr(self, f"_JT{l}")  # J applied to each channel
            b = self._rot_y(b, l, pa)
            outs.append(b.reshape(E, b.shape[1] * b.shape[2]))
        return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]

    # ---------------------------------------------------------------- the convolution's two ends, written once
    def chart_table(self, x: Tensor) -> Tensor:
        """Node features (N, full_dim) -> the table edges read, (2N, full_dim): ``[x ; J^T x]``. Edges of the
        second chart read row ``N + node`` (their frames assume the chart turn, done here once per node)."""
        return torch.cat([x, self.apply_J(x, transpose=True)], dim=0)

    def gather_to_frame(self, table: Tensor, index: Tensor, frame: EdgeFrame) -> Tensor:
        """Rows ``index`` (E,) of a :meth:`chart_table` (in each edge's chart), rotated into the edge frames:
        (E, rot_dim)."""
        N = table.shape[0] // 2
        return self.to_frame(table.index_select(0, index + N * frame.chart), frame)

    def aggregate_from_frame(self, y: Tensor, index: Tensor, frame: EdgeFrame, num_nodes: int) -> Tensor:
        """Edge-frame messages (E, rot_dim) rotated back and summed into rows ``index`` (E,) of a (num_nodes,
        full_dim) result, the second chart's turned back once per node: ``sum_e D_e^T y_e``."""
        out = self.from_frame(y, frame)
        acc = out.new_zeros(2 * num_nodes, out.shape[1]).index_add_(0, index + num_nodes * frame.chart, out)
        return acc[:num_nodes] + self.apply_J(acc[num_nodes:], transpose=False)

    def apply_J(self, x: Tensor, transpose: bool) -> Tensor:
        """Node-level chart turn: ``J^T x`` (``transpose=True``) or ``J x`` per block, x: (N, full_dim)."""
        N = x.shape[0]
        outs = []
        blocks = torch.split(x, [M * (2 * l + 2) for l, M in self.groups], dim=1)
        for (l, M), blk in zip(self.groups, blocks):
            d = 2 * l + 2
            b = blk.reshape(N, M, d)
            b = b @ getattr(self, f"_J{l}" if transpose else f"_JT{l}")
            outs.append(b.reshape(N, b.shape[1] * b.shape[2]))
        return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
