"""SO2Conv: the eSCN convolution — rotate into the edge frame, SO(2) linear maps per m, rotate back.

Once an edge is rotated onto +y, the TFN message ``x (x)_w Y(y)`` only couples order ``+m`` with ``+-m``
(docs/design.md, "Conventions"). For input block ``(l1, p1)`` and output block ``(l3, p3)`` write
``eps = p (-1)^l`` ("natural" irreps have eps = +1, "pseudo" ones eps = -1). Pairs of equal eps couple
through ``W1`` (``y+ = W1 x+, y- = W1 x-``), pairs of opposite eps through ``W2``
(``y+ = -W2 x-, y- = W2 x+``, absent at m = 0). Treating a pseudo component as ``i`` times a natural one,
both become one real matrix ``B_m`` acting on two stacked vectors, so each m is one (batched) matmul:

    V+ = [x+ (natural cols); -x- (pseudo cols)],  V- = [x- (natural); x+ (pseudo)],  P = B_m [V+ V-]
    natural rows: y+ = P+, y- = P-;   pseudo rows: y+ = P-, y- = -P+.

m = 0 has only ``W1``: one matrix per class. This keeps the layer O(3)-equivariant (parity respected),
not only SO(3). With ``mmax < lmax`` orders ``|m| > mmax`` are dropped in the edge frame, which stays
exactly equivariant.

Weights (``weight_numel`` columns, layout below) come per edge (default, e.g. from a radial MLP: same
call as :class:`escn.nn.TFNConv`) or are owned by the layer (``shared_weights=True``, eSCN style), in
which case the per-edge input is a radial modulation of the SO(2) inputs (``num_gates`` columns).
Layout "so2" (``lmax_filter=None``): for m = 0 the natural-class block then the pseudo-class block,
then ``B_1 .. B_mmax``, each row-major (output component, input component), components ordered by
irreps entry then multiplicity. Layout "tfn" (``lmax_filter`` given, or :meth:`SO2Conv.from_tfn`):
exactly TFNConv's per-path weights, mapped to ``B_m`` by a fixed sparse linear map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from escn import native as native_kernels
from escn.native._runtime import ReplacedAttribute, check_executor, use_kernels
from escn.nn.checks import check_conv_inputs, module_tensor
from escn.nn.constants import ConstantModule
from escn.nn.edge_rotation import PAD, EdgeRotation, component_order
from escn.nn.tfn_conv import TFNConv, TFNPath, tfn_paths
from escn.o3.edge_frame import EdgeFrame, check_edge_vectors, edge_frame
from escn.o3.irreps import Irreps
from escn.o3.wigner import wigner_3j

Tensor = torch.Tensor


@dataclass
class SO2Stage:
    """One SO(2) stage of the edge-frame (stage) layout: one order ``m`` (or, at ``m = 0``, one parity class).

    In the stage layout a stage holds ``ncol`` rows (1 at m = 0; 2 for m > 0: the class-adjusted ``+m`` and
    ``-m`` components) of ``n_in`` input columns (``n_out`` output columns), in irreps-entry then channel order;
    its map is one real ``(n_out, n_in)`` matrix applied to every row.
    """

    m: int
    n_in: int
    n_out: int
    offset: int  # into the so2 weight vector
    gate_offset: int  # into the gate vector (shared mode)
    in_offset: int  # into the gathered V vector (per row of V)
    out_offset: int  # into the P vector

    @property
    def ncol(self) -> int:
        """Rows of the stage: 1 at m = 0, 2 (+m and -m) for m > 0."""
        return 1 if self.m == 0 else 2


def _v_source(eps: int, minus: bool) -> tuple[bool, float]:
    """Where the class-adjusted input ``V+`` (``minus=False``) or ``V-`` reads from, for m > 0: (read the -m
    component?, sign). Natural (eps = +1): V+ = x+, V- = x-. Pseudo (eps = -1): V+ = -x-, V- = x+."""
    if eps == 1:
        return minus, 1.0
    return (False, 1.0) if minus else (True, -1.0)


def _y_source(eps: int, minus: bool) -> tuple[bool, float]:
    """Which stage output the rotated component ``y+`` (``minus=False``) or ``y-`` takes, for m > 0: (take P-?,
    sign). Natural rows: y+ = P+, y- = P-. Pseudo rows: y+ = P-, y- = -P+."""
    if eps == 1:
        return minus, 1.0
    return (False, -1.0) if minus else (True, 1.0)


class _RotatedPositions:
    """``pos(entry, u, m)``: the column of channel ``u`` of irreps entry ``entry``, order ``m``, in the rotated
    flat layout. A class rather than a closure so that modules holding it pickle and deep-copy."""

    def __init__(self, chan_index: dict[tuple[int, int], tuple[int, int]], mmax: int) -> None:
        self.chan_index = chan_index  # (entry, u) -> (l, first column of the channel's block)
        self.mmax = mmax

    def __call__(self, i: int, u: int, m: int) -> int:
        l, base = self.chan_index[(i, u)]
        return base + min(l, self.mmax) + m


class _Layout:
    """Index maps between irreps layout, rotated (edge-frame) layout and the per-m SO(2) stages."""

    def __init__(self, irreps_in: Irreps, irreps_out: Irreps, mmax: int) -> None:
        self.mmax = mmax
        self.lmax_in = max((ir.l for _, ir in irreps_in), default=0)
        self.lmax_out = max((ir.l for _, ir in irreps_out), default=0)
        self.lmax = max(self.lmax_in, self.lmax_out)
        self.in_groups, in_pos = self._groups(irreps_in)
        self.out_groups, out_pos = self._groups(irreps_out)
        self.in_pos, self.out_pos = in_pos, out_pos

        # components per m: (entry, u, eps, position of +m, position of -m) in the rotated flat layout
        def comps(irreps: Irreps, pos: _RotatedPositions, m: int) -> list[tuple[int, int, int, int, int]]:
            out = []
            for i, (mul, ir) in enumerate(irreps):
                if ir.l < m:
                    continue
                eps = ir.p * (-1) ** ir.l
                for u in range(mul):
                    out.append((i, u, eps, pos(i, u, m), pos(i, u, -m)))
            return out

        self.stages: list[SO2Stage] = []
        self.in_cols: list[list] = []  # per stage, the component list for columns
        self.out_rows: list[list] = []
        gather_idx: list[int] = []
        gather_sign: list[float] = []
        n_w = n_g = n_v = n_p = 0
        for m in range(0, mmax + 1):
            cin, cout = comps(irreps_in, in_pos, m), comps(irreps_out, out_pos, m)
            if m == 0:
                classes = [
                    (+1, [c for c in cin if c[2] == 1], [c for c in cout if c[2] == 1]),
                    (-1, [c for c in cin if c[2] == -1], [c for c in cout if c[2] == -1]),
                ]
                for _, ci, co in classes:
                    st = SO2Stage(0, len(ci), len(co), n_w, n_g, n_v, n_p)
                    self.stages.append(st)
                    self.in_cols.append(ci)
                    self.out_rows.append(co)
                    gather_idx += [c[3] for c in ci]
                    gather_sign += [1.0] * len(ci)
                    n_w += st.n_in * st.n_out
                    n_g += st.n_in
                    n_v += st.n_in
                    n_p += st.n_out
            else:
                st = SO2Stage(m, len(cin), len(cout), n_w, n_g, n_v, n_p)
                self.stages.append(st)
                self.in_cols.append(cin)
                self.out_rows.append(cout)
                for minus in (False, True):  # V+ then V-
                    for c in cin:
                        from_minus, sign = _v_source(c[2], minus)
                        gather_idx.append(c[4] if from_minus else c[3])
                        gather_sign.append(sign)
                n_w += st.n_in * st.n_out
                n_g += st.n_in
                n_v += 2 * st.n_in
                n_p += 2 * st.n_out
        self.so2_numel = n_w
        self.num_gates = n_g
        self.gather_idx = gather_idx
        self.gather_sign = gather_sign
        self.p_numel = n_p

        # scatter: every rotated output position reads one P entry, with a sign
        out_size = sum(len(g["channels"]) * (2 * min(l, mmax) + 1) for l, g in self.out_groups.items())
        scatter_idx = [0] * out_size
        scatter_sign = [0.0] * out_size
        for st, rows in zip(self.stages, self.out_rows):
            for r, (_i, _u, eps, pos_p, pos_m) in enumerate(rows):
                if st.m == 0:
                    scatter_idx[pos_p] = st.out_offset + r
                    scatter_sign[pos_p] = 1.0
                    continue
                slots = (st.out_offset + r, st.out_offset + st.n_out + r)  # (P+, P-)
                for pos, minus in ((pos_p, False), (pos_m, True)):
                    take_minus, sign = _y_source(eps, minus)
                    scatter_idx[pos], scatter_sign[pos] = slots[take_minus], sign
        self.scatter_idx = scatter_idx
        self.scatter_sign = scatter_sign

    def _groups(self, irreps: Irreps) -> tuple[dict[int, dict[str, Any]], _RotatedPositions]:
        """Group irreps entries by l. Returns ({l: {"entries": [...], "channels": [(entry, u)...], "offset": int}},
        pos(entry, u, m) -> index in the rotated flat layout)."""
        mmax = self.mmax
        groups: dict[int, dict] = {}
        for i, (mul, ir) in enumerate(irreps):
            g = groups.setdefault(ir.l, {"entries": [], "channels": []})
            g["entries"].append(i)
            g["channels"] += [(i, u) for u in range(mul)]
        offset = 0
        chan_index: dict[tuple[int, int], tuple[int, int]] = {}
        for l in sorted(groups):
            g = groups[l]
            g["offset"] = offset
            r = 2 * min(l, mmax) + 1
            for c, key in enumerate(g["channels"]):
                chan_index[key] = (l, offset + c * r)
            offset += len(g["channels"]) * r
        groups = dict(sorted(groups.items()))
        return groups, _RotatedPositions(chan_index, mmax)


def take_columns(x: Tensor, index: Tensor) -> Tensor:
    """``x[:, index]`` for a 2-D ``x``. ``torch.gather`` with a broadcast index is about 2x faster than
    ``index_select`` along dim 1 on CPU for the (E, ~1000) tensors here; its backward is a scatter-add."""
    return torch.gather(x, 1, index.expand(x.shape[0], index.shape[0]))


def grouped_permutation(irreps: Irreps) -> list[int]:
    """For each slot of :class:`EdgeRotation`'s full layout (orders ascending; inside an order, entries in
    irreps order, then channels, each channel's slots in :func:`component_order`), the irreps-layout
    column it holds, or ``irreps.dim`` (an appended zero column) for padding slots."""
    slices = irreps.slices()
    perm: list[int] = []
    for l in sorted({ir.l for _, ir in irreps}):
        order = component_order(l)
        for i, (mul, ir) in enumerate(irreps):
            if ir.l == l:
                for u in range(mul):
                    base = slices[i].start + u * (2 * l + 1)
                    perm.extend(irreps.dim if j == PAD else base + j for j in order)
    return perm


class SO2Conv(ConstantModule):
    """eSCN convolution: edge-frame rotation + per-m SO(2) linear maps + rotation back + sum into dst.

    Args:
        irreps_in, irreps_out: node feature irreps (strings or ``Irreps``); any multiplicities and parities.
        mmax: keep orders ``|m| <= mmax`` in the edge frame (default: the largest l, i.e. no truncation).
        lmax_filter: if given, restrict to the function space of a TFN with filters ``Y^0..Y^lmax_filter``
            and take weights in TFNConv's path layout; default None: the full SO(2) weight space.
        shared_weights: if True the layer owns the weights and ``forward``'s ``weight`` argument is the
            per-edge radial modulation of shape (E, num_gates) (eSCN style).
        avg_num_neighbors: if given, divide the neighbour sum by ``sqrt(avg_num_neighbors)``.
        executor: ``"native"`` (default): the compiled kernels of :mod:`escn.native` on the CPU in
            float32/float64 (PyTorch ops elsewhere, and everywhere, after one warning naming the reason, if they
            cannot be built): the rotations into and out of the edge frame, and the edge-frame map of TFN-layout
            per-edge weights (``lmax_filter`` given, ``shared_weights=False``; other layouts keep their per-m
            matmuls). Measured faster in every configuration of the scaling benchmark (C = 16, 3,740 edges;
            shared weights, fwd+bwd: 1.3-1.8x at L = 1-12). ``"torch"``: PyTorch ops only. Same function either
            way, up to rounding; :meth:`set_executor` changes it (for the rotations too).

    ``forward(x, edge_src, edge_dst, edge_vec, weight)``: ``x`` (N, irreps_in.dim), ``edge_src``/``edge_dst``
    (E,) int64, ``edge_vec`` (E, 3) = ``pos[dst] - pos[src]`` (nonzero), ``weight`` (E, weight_numel) —
    returns (N, irreps_out.dim). Inputs must have the module's dtype (float32 or float64; float16, bfloat16 and
    integer inputs are refused) and device. Constant tables are exact in the dtype the module is moved to.
    """

    # index and sign tables (buffers and constants, registered in __init__)
    _perm_in: Tensor
    _perm_out_inv: Tensor
    input_index: Tensor
    output_index: Tensor
    input_sign: Tensor | None
    output_sign: Tensor | None
    _so2_scale: Tensor
    _out_idx: Tensor
    _out_sign: Tensor

    #: replaced by the ``executor`` argument
    native = ReplacedAttribute("pass executor='native' or 'torch' to the constructor, or call set_executor()")

    def __init__(
        self,
        irreps_in: Irreps | str,
        irreps_out: Irreps | str,
        mmax: int | None = None,
        lmax_filter: int | None = None,
        shared_weights: bool = False,
        avg_num_neighbors: float | None = None,
        executor: str = "native",
    ) -> None:
        super().__init__()
        self._executor = check_executor(executor)
        self.irreps_in = Irreps(irreps_in)
        self.irreps_out = Irreps(irreps_out)
        if self.irreps_in.dim == 0 or self.irreps_out.dim == 0:
            raise ValueError(
                f"irreps_in and irreps_out must be non-empty, got {self.irreps_in!s} -> {self.irreps_out!s}"
            )
        lmax = max(max(ir.l for _, ir in self.irreps_in), max(ir.l for _, ir in self.irreps_out))
        if mmax is None:
            mmax = lmax
        if isinstance(mmax, bool) or not isinstance(mmax, int) or mmax < 0:
            raise ValueError(f"mmax must be an int >= 0, got {mmax!r}")
        mmax = min(mmax, lmax)
        if lmax_filter is not None and (
            isinstance(lmax_filter, bool) or not isinstance(lmax_filter, int) or lmax_filter < 0
        ):
            raise ValueError(f"lmax_filter must be None or an int >= 0, got {lmax_filter!r}")
        if avg_num_neighbors is not None and not avg_num_neighbors > 0:
            raise ValueError(f"avg_num_neighbors must be > 0, got {avg_num_neighbors!r}")
        self.lmax = lmax
        self.mmax = mmax
        self.lmax_filter = lmax_filter
        self.shared_weights = shared_weights
        self.avg_num_neighbors = avg_num_neighbors
        self.layout = _Layout(self.irreps_in, self.irreps_out, mmax)
        L = self.layout
        dt = torch.get_default_dtype()
        self.rot_in = EdgeRotation([(l, len(g["channels"])) for l, g in L.in_groups.items()], mmax, executor=executor)
        self.rot_out = EdgeRotation([(l, len(g["channels"])) for l, g in L.out_groups.items()], mmax, executor=executor)
        self.register_buffer(
            "_perm_in", torch.tensor(grouped_permutation(self.irreps_in), dtype=torch.long), persistent=False
        )
        slot_of = {col: k for k, col in enumerate(grouped_permutation(self.irreps_out)) if col < self.irreps_out.dim}
        self.register_buffer(
            "_perm_out_inv",
            torch.tensor([slot_of[j] for j in range(self.irreps_out.dim)], dtype=torch.long),
            persistent=False,
        )
        self.stages: list[SO2Stage] = L.stages
        # rotated (l-major) input -> stage layout and stage layout -> rotated output: one gather each; the signs
        # of the class adjustment (pseudo-parity entries only) are a multiply only where one of them is -1
        self.register_buffer("input_index", torch.tensor(L.gather_idx, dtype=torch.long), persistent=False)
        self.register_buffer("output_index", torch.tensor(L.scatter_idx, dtype=torch.long), persistent=False)
        for name, signs in (("input_sign", L.gather_sign), ("output_sign", L.scatter_sign)):
            if any(v != 1.0 for v in signs):
                self.register_constant(name, torch.tensor(signs, dtype=torch.float64))
            else:
                self.register_buffer(name, None, persistent=False)

        if lmax_filter is None:
            self.weight_layout = "so2"
            self.param_numel = L.so2_numel
            # variance-preserving: each output sums fan_in = n_in products of unit-variance terms
            scale = (
                torch.cat(
                    [
                        torch.full(
                            (st.n_in * st.n_out,), 1 / math.sqrt(st.n_in) if st.n_in else 0.0, dtype=torch.float64
                        )
                        for st in L.stages
                    ]
                )
                if L.stages
                else torch.zeros(0, dtype=torch.float64)
            )
            self.register_constant("_so2_scale", scale)
        else:
            self.weight_layout = "tfn"
            self._build_tfn_map(lmax_filter)
        if shared_weights:
            self.weight = nn.Parameter(torch.randn(self.param_numel, dtype=dt))
            self.weight_numel = L.num_gates
        else:
            self.weight_numel = self.param_numel

    @property
    def executor(self) -> str:
        """``"native"`` or ``"torch"`` (constructor argument); changed by :meth:`set_executor`."""
        return self._executor

    def set_executor(self, executor: str) -> "SO2Conv":
        """Run with ``executor`` (``"native"`` or ``"torch"``, as in the constructor) from now on, the rotations
        included; returns self."""
        self._executor = check_executor(executor)
        self.rot_in.set_executor(executor)
        self.rot_out.set_executor(executor)
        return self

    # ------------------------------------------------------------------ TFN -> SO(2) weight map
    def _build_tfn_map(self, lmax_filter: int) -> None:
        """Precompute the fixed linear map from TFNConv's path weights to the SO(2) weights: each path's
        coefficient per m (:meth:`_path_coefficient`), grouped per output entry (per-edge weights) or
        per (input entry, output entry) pair (shared weights)."""
        paths = tfn_paths(self.irreps_in, lmax_filter, self.irreps_out)
        self.tfn_paths = paths
        self.param_numel = sum(p.mul_in * p.mul_out for p in paths)
        path_coefs = [[self._path_coefficient(p, m) for m in range(min(p.l_in, p.l_out, self.mmax) + 1)] for p in paths]

        # Shared weights: per (input entry, output entry) pair, one small GEMM
        # (E, mul_in*mul_out, n_paths) @ (n_paths, n_m), then each stage's B_m assembled from blocks once.
        pairs: dict[tuple[int, int], list[int]] = {}
        for k, p in enumerate(paths):
            pairs.setdefault((p.i_in, p.i_out), []).append(k)
        self._pairs: list[tuple[int, int, list[int], int]] = []  # (i_in, i_out, path indices, number of m columns)
        for (i_in, i_out), ks in pairs.items():
            p0 = paths[ks[0]]
            n_m = min(p0.l_in, p0.l_out, self.mmax) + 1
            T = torch.zeros(len(ks), n_m, dtype=torch.float64)
            for a, k in enumerate(ks):
                T[a] = torch.tensor(path_coefs[k], dtype=torch.float64)
            self.register_constant(f"_pairT{len(self._pairs)}", T)
            self._pairs.append((i_in, i_out, ks, n_m))

        # Per-edge weights, evaluated per output entry o without forming B: with the paths into o side by side,
        # y_o[(m, s), w] = sum over (path p, u) of X_o[(m, s), (p, u)] W_o[(p, u), w], one batched matmul per o,
        # where W_o stacks the paths' (mul_in, mul_out) weight blocks (a fixed column permutation of the TFN
        # layout) and X_o[(m, s), (p, u)] = coefficient(p, m) * (class-adjusted input of p's entry at (u, m, s)).
        # Rows (m, s): m = 0 once, then (m, +), (m, -) for m = 1..M_o - 1; V+/V- are the class-adjusted pair.
        self._build_output_groups(path_coefs)

    def _build_output_groups(self, path_coefs: list[list[float]]) -> None:
        """Index maps of the per-output-entry evaluation of TFN-layout per-edge weights (see ``_so2_by_output``).

        For output entry ``o`` with ``M_o = min(l_o, mmax) + 1`` orders and the paths ``p`` into it
        (TFN order), ``X_o`` is ``(R_o, K_o)`` with ``K_o = sum_p mul_in(p)`` and
        ``R_o = 2 M_o - 1``: entry ``(r, (p, u))`` reads column ``_xidx{o}`` of the zero-padded rotated input
        times ``_xcoef{o}`` (sign of the class adjustment times the path's coefficient at that m; 0 where the
        path has no such m). ``y_o`` is ``(R_o, mul_out)``; ``_out_idx``/``_out_sign`` place every rotated
        output component."""
        L = self.layout
        paths = self.tfn_paths
        zero_slot = self.rot_in.rot_dim  # index of the appended zero column
        self._out_groups: list[tuple[int, int, int]] = []  # (R_o, K_o, mul_o)
        rot_out_dim = self.rot_out.rot_dim
        out_idx = [0] * rot_out_dim
        out_sign = [0.0] * rot_out_dim
        base = 0
        for o, (mul_o, ir_o) in enumerate(self.irreps_out):
            ks = [k for k, p in enumerate(paths) if p.i_out == o]
            M = min(ir_o.l, self.mmax) + 1
            R = 2 * M - 1
            K = sum(paths[k].mul_in for k in ks)
            x_idx: list[int] = []
            x_coef: list[float] = []
            for r in range(R):  # row-major (r, (p, u)): X_o itself, so the backward's grad of X_o is contiguous
                m, minus = (0, False) if r == 0 else ((r + 1) // 2, r % 2 == 0)
                for k in ks:
                    p = paths[k]
                    ir_in = self.irreps_in[p.i_in].ir
                    eps = ir_in.p * (-1) ** ir_in.l
                    for u in range(p.mul_in):
                        if m >= len(path_coefs[k]):
                            x_idx.append(zero_slot)
                            x_coef.append(0.0)
                            continue
                        from_minus, sign = _v_source(eps, minus) if m else (False, 1.0)
                        x_idx.append(L.in_pos(p.i_in, u, -m if from_minus else m))
                        x_coef.append(sign * path_coefs[k][m])
            self.register_buffer(f"_xidx{o}", torch.tensor(x_idx, dtype=torch.long), persistent=False)
            self.register_constant(f"_xcoef{o}", torch.tensor(x_coef, dtype=torch.float64))
            self._out_groups.append((R, K, mul_o))
            eps_o = ir_o.p * (-1) ** ir_o.l
            for w in range(mul_o):
                out_idx[L.out_pos(o, w, 0)], out_sign[L.out_pos(o, w, 0)] = base + w, 1.0
                for m in range(1, M):
                    slots = (base + (2 * m - 1) * mul_o + w, base + 2 * m * mul_o + w)  # rows (m, +), (m, -)
                    for minus in (False, True):
                        take_minus, sign = _y_source(eps_o, minus)
                        pos = L.out_pos(o, w, -m if minus else m)
                        out_idx[pos], out_sign[pos] = slots[take_minus], sign
            base += R * mul_o
        self.register_buffer("_out_idx", torch.tensor(out_idx, dtype=torch.long), persistent=False)
        self.register_constant("_out_sign", torch.tensor(out_sign, dtype=torch.float64))
        # TFN layout -> one contiguous weight block per output entry: the paths into it, in TFN order
        self._path_numels = [p.mul_in * p.mul_out for p in paths]
        self._paths_into = [[k for k, p in enumerate(paths) if p.i_out == o] for o in range(len(self.irreps_out))]
        self._native_plan = self._build_native_plan()

    def _build_native_plan(self) -> native_kernels.TFNFramePlan:
        """Tables of the compiled edge-frame map (:mod:`escn.native.tfn_kernel`): buffers in (entry, m,
        channel) order and, per TFN path, one term per nonzero of its edge-frame matrix ``M[k, i]``
        (:meth:`_edge_frame_matrix`) with ``|m| <= mmax`` on both sides."""
        L = self.layout

        def rows(irreps: Irreps, pos: _RotatedPositions) -> tuple[list[int], dict[tuple[int, int], int]]:
            perm: list[int] = []
            row: dict[tuple[int, int], int] = {}
            for i, (mul, ir) in enumerate(irreps):
                k = min(ir.l, self.mmax)
                for m in range(-k, k + 1):
                    row[(i, m)] = len(perm)
                    perm += [pos(i, u, m) for u in range(mul)]
            return perm, row

        perm_in, row_in = rows(self.irreps_in, L.in_pos)
        perm_out, row_out = rows(self.irreps_out, L.out_pos)
        path_rows, terms = [], []
        for p in self.tfn_paths:
            M = self._edge_frame_matrix(p)
            ts = []
            for k, i in (M.abs() > 1e-13).nonzero().tolist():
                m_out, m_in = k - p.l_out, i - p.l_in
                if abs(m_in) <= self.mmax and abs(m_out) <= self.mmax:
                    ts.append((row_in[(p.i_in, m_in)], row_out[(p.i_out, m_out)], float(M[k, i])))
            path_rows.append((p.offset, p.mul_in, p.mul_out))
            terms.append(ts)
        return native_kernels.make_plan(path_rows, terms, perm_in, perm_out)

    @staticmethod
    def _edge_frame_matrix(p: TFNPath) -> Tensor:
        """TFN path ``p``'s map in the edge frame, float64 ``M[k, i] = norm * sqrt(2 lf + 1) * C[i, lf, k]``
        (output component k, input component i; the filter ``Y^lf`` of the +y axis is ``sqrt(2 lf + 1)`` at
        its m = 0 component and zero elsewhere)."""
        C = wigner_3j(p.l_in, p.l_filter, p.l_out, dtype=torch.float64)[:, p.l_filter, :]  # (i, k)
        return (p.norm * math.sqrt(2 * p.l_filter + 1)) * C.T

    def _path_coefficient(self, p: TFNPath, m: int) -> float:
        """Entry of ``B_m`` produced by a unit weight on TFN path ``p`` (zero at m = 0 across classes).

        With ``M`` the path's map in the edge frame (:meth:`_edge_frame_matrix`), ``W1 = M[+m, +m]`` and ``W2 = M[-m, +m]``; B holds W1 within a class, W2 (natural rows) or -W2
        (pseudo rows) across classes."""
        eps_in = self.irreps_in[p.i_in].ir.p * (-1) ** p.l_in
        eps_out = self.irreps_out[p.i_out].ir.p * (-1) ** p.l_out
        if m == 0 and eps_in != eps_out:
            return 0.0
        M = self._edge_frame_matrix(p)
        if eps_in == eps_out:
            return float(M[p.l_out + m, p.l_in + m])
        w2 = float(M[p.l_out - m, p.l_in + m])
        return w2 if eps_out == 1 else -w2

    def _tfn_to_stage_weights(self, w: Tensor) -> list[Tensor]:
        """(E, n_tfn) path weights -> per-stage B matrices [(E, n_out, n_in), ...] (structured map)."""
        E = w.shape[0]
        chunks = torch.split(w, [p.mul_in * p.mul_out for p in self.tfn_paths], dim=1)
        mapped: dict[tuple[int, int], Tensor] = {}
        for n, (i_in, i_out, ks, _n_m) in enumerate(self._pairs):
            stacked = torch.stack([chunks[k] for k in ks], dim=-1)  # (E, mul_in*mul_out, n_p)
            mapped[(i_in, i_out)] = stacked @ getattr(self, f"_pairT{n}")  # (E, mul_in*mul_out, n_m)
        out = []
        L = self.layout
        for st, rows, cols in zip(L.stages, L.out_rows, L.in_cols):
            if st.n_in == 0 or st.n_out == 0:
                out.append(w.new_zeros(E, st.n_out, st.n_in))
                continue
            in_entries = list(dict.fromkeys(c[0] for c in cols))
            out_entries = list(dict.fromkeys(r[0] for r in rows))
            row_blocks = []
            for o in out_entries:
                mul_o = self.irreps_out[o].mul
                blocks = []
                for i in in_entries:
                    mul_i = self.irreps_in[i].mul
                    t = mapped.get((i, o))
                    if t is None or st.m >= t.shape[-1]:
                        blocks.append(w.new_zeros(E, mul_o, mul_i))
                    else:
                        blocks.append(t[:, :, st.m].reshape(E, mul_i, mul_o).transpose(1, 2))
                row_blocks.append(torch.cat(blocks, dim=2) if len(blocks) > 1 else blocks[0])
            out.append(torch.cat(row_blocks, dim=1) if len(row_blocks) > 1 else row_blocks[0])
        return out

    def _tfn_to_so2(self, w: Tensor) -> Tensor:
        """(B, n_tfn) path weights -> (B, so2_numel) SO(2) weights in the "so2" layout (the explicit map)."""
        return torch.cat([b.reshape(w.shape[0], -1) for b in self._tfn_to_stage_weights(w)], dim=1)

    @classmethod
    def from_tfn(cls, tfn: TFNConv, executor: str = "native") -> "SO2Conv":
        """An SO2Conv computing exactly ``tfn``'s function from TFN-layout per-edge weights (``executor``: as in
        the constructor), in ``tfn``'s dtype and on its device."""
        if not isinstance(tfn, TFNConv):
            raise TypeError(f"from_tfn expects a TFNConv, got {type(tfn).__name__}")
        conv = cls(
            tfn.irreps_in,
            tfn.irreps_out,
            mmax=None,
            lmax_filter=tfn.lmax_filter,
            avg_num_neighbors=tfn.avg_num_neighbors,
            executor=executor,
        )
        table = next((b for b in tfn.buffers() if b.is_floating_point()), None)
        return conv if table is None else conv.to(device=table.device, dtype=table.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, lmax={self.lmax}, mmax={self.mmax}, "
            f"layout={self.weight_layout}, shared_weights={self.shared_weights}, weight_numel={self.weight_numel}"
        )

    # ------------------------------------------------------------------ forward
    def _stage_weights(self, weight: Tensor) -> list[Tensor]:
        """Per-stage SO(2) matrices ``[(B, n_out, n_in), ...]`` from (B, weight_numel) weights, scaled."""
        if self.weight_layout == "tfn":
            return self._tfn_to_stage_weights(weight)
        parts = torch.split(weight * self._so2_scale, [st.n_in * st.n_out for st in self.layout.stages], dim=-1)
        return [p.reshape(weight.shape[0], st.n_out, st.n_in) for p, st in zip(parts, self.layout.stages)]

    def _frame_and_rotated(self, x: Tensor, edge_src: Tensor, edge_vec: Tensor) -> tuple[EdgeFrame, Tensor]:
        """The edge frames (with the dense rows the PyTorch-ops rotations read, formed once) and the rotated
        input (E, rot_in.rot_dim) of rows ``edge_src`` of ``x`` (N, irreps_in.dim)."""
        frame = edge_frame(
            edge_vec, self.lmax, self.mmax, rows_lmax=max(self.rot_in.rows_lmax(x), self.rot_out.rows_lmax(x))
        )
        grouped = take_columns(torch.cat([x, x.new_zeros(x.shape[0], 1)], dim=1), self._perm_in)  # padded slots read 0
        return frame, self.rot_in.gather_to_frame(self.rot_in.chart_table(grouped), edge_src, frame)

    def frame_map(self, rotated: Tensor, weight: Tensor) -> Tensor:
        """The SO(2) stage alone, for blocks that chain several maps inside the edge frame.

        Args:
            rotated: (E, rot_in.rot_dim) edge-frame input in :class:`EdgeRotation`'s rotated layout
                (per l ascending: channels grouped by irreps entry then multiplicity, ``|m| <= mmax``).
            weight: (E, weight_numel) as in :meth:`forward`.

        Returns:
            (E, rot_out.rot_dim) edge-frame output in the same kind of layout for ``irreps_out``.
        """
        if self.weight_layout == "tfn" and not self.shared_weights:
            return self._so2_by_output(rotated, weight)
        return self.stage_output(self.stage_map(self.stage_input(rotated), weight))

    def _use_native(self, rotated: Tensor, weight: Tensor) -> bool:
        return use_kernels(self._executor, rotated, weight)

    def _so2_by_output(self, rotated: Tensor, weight: Tensor) -> Tensor:
        """TFN-layout per-edge weights applied in the edge frame, one batched matmul per output entry.
        rotated: (E, rot_in_dim), weight: (E, n_tfn) -> (E, rot_out_dim).

        Grouping by output (not path by path) gives E matmuls of (R_o x K_o) @ (K_o x mul_o) per output entry
        instead of E tiny (mul x mul) matmuls per path; the price is one regrouping copy of the weight columns
        (and one in the backward). Measured against it (C = 16, L = 4, fwd+bwd of this map): one batched matmul
        over all (edge, path) blocks of the TFN tensor as it is, no regrouping, was 1.3x slower (the batched
        GEMM's per-matrix cost dominates 16 x 16 blocks), and one block-sparse matrix per edge over all output
        entries, in TFN column order, 1.7x slower (it holds 4-6x the entries of the per-output inputs)."""
        if self._use_native(rotated, weight):
            return native_kernels.tfn_frame_map(self._native_plan, rotated, weight)
        E = rotated.shape[0]
        padded = torch.cat([rotated, rotated.new_zeros(E, 1)], dim=1)
        # Regroup the weight columns per output with split + cat: cat copies row by row (each row of the source
        # read once, in cache) and its backward, with split's, is one more cat. Column-block copies per path
        # over all rows were 1.1-1.2x slower here.
        path_w = torch.split(weight, self._path_numels, dim=1)
        ys = []
        for o, (R, K, mul_o) in enumerate(self._out_groups):
            ks = self._paths_into[o]
            if K == 0:
                ys.append(rotated.new_zeros(E, R * mul_o))
                continue
            w = torch.cat([path_w[k] for k in ks], dim=1) if len(ks) > 1 else path_w[ks[0]]  # (E, K * mul_o)
            x_o = take_columns(padded, getattr(self, f"_xidx{o}")).mul_(
                getattr(self, f"_xcoef{o}")
            )  # (E, R * K); in place: gather keeps no output for its backward
            ys.append(torch.bmm(x_o.view(E, R, K), w.view(E, K, mul_o)).reshape(E, R * mul_o))
        y = torch.cat(ys, dim=1) if len(ys) > 1 else ys[0]
        return take_columns(y, self._out_idx) * self._out_sign

    def shared_stage_weights(self) -> list[Tensor]:
        """The layer's own SO(2) matrices (``shared_weights=True``), scaled: one ``(n_out, n_in)`` per stage."""
        if not self.shared_weights:
            raise ValueError("shared_stage_weights needs shared_weights=True")
        return [w[0] for w in self._stage_weights(self.weight.unsqueeze(0))]

    def first_stage_rows(self, part: Tensor, rows: int) -> Tensor:
        """The first ``rows`` outputs of the first stage alone (``shared_weights=True``, no gates): ``part``
        (E, 1, n_in) -> (E, rows). For a caller that reads only those columns (e.g. the ``0e`` channels)."""
        w = self.shared_stage_weights()[0][:rows]
        return part.reshape(part.shape[0], part.shape[2]) @ w.T

    def stage_columns(self, output: bool = False) -> list[list[tuple[int, int]]]:
        """Per stage of :attr:`stages`, the ``(irreps entry, channel)`` of each input (``output=False``) or
        output column, in order."""
        cols = self.layout.out_rows if output else self.layout.in_cols
        return [[(c[0], c[1]) for c in stage] for stage in cols]

    def stage_input(self, rotated: Tensor) -> list[Tensor]:
        """Rotated input (E, rot_in.rot_dim), l-major as :class:`EdgeRotation` writes it -> the stage layout:
        one ``(E, stage.ncol, stage.n_in)`` tensor per stage of :attr:`stages` (views of one gathered tensor)."""
        V = take_columns(rotated, self.input_index)
        if self.input_sign is not None:
            V = V * self.input_sign
        return self.split_stages(V)

    def split_stages(self, V: Tensor) -> list[Tensor]:
        """(E, sum of ncol * n_in) in stage order -> one ``(E, ncol, n_in)`` view per stage."""
        E = V.shape[0]
        parts = torch.split(
            V, [st.ncol * st.n_in for st in self.stages], dim=1
        )  # one split: no per-slice zero-filled grads
        return [v.view(E, st.ncol, st.n_in) for v, st in zip(parts, self.stages)]

    def stage_map(self, parts: Sequence[Tensor | None], weight: Tensor | None) -> list[Tensor | None]:
        """The SO(2) maps on the stage layout: ``[(E, ncol, n_in), ...] -> [(E, ncol, n_out), ...]``.

        Args:
            parts: the stage layout of the input, one entry per stage of :attr:`stages`: a tensor, or None for a
                stage known to be zero (its output is None too). A tensor with fewer than ``n_in`` columns holds
                the stage's leading columns, the others being zero (only those columns of the map are applied).
            weight: per-edge SO(2) weights (E, weight_numel) (``shared_weights=False``, "so2" or shared "tfn"
                layout), or, with ``shared_weights``, per-edge gates (E, num_gates) that scale every input
                column of a stage (the same gate for its +m and -m rows), or None for no gates.
        """
        if self.shared_weights:
            W_parts = self.shared_stage_weights()
        else:
            if weight is None:
                raise ValueError("SO2Conv.stage_map: per-edge weights are required without shared_weights")
            W_parts = self._stage_weights(weight)
        if self.shared_weights and weight is not None:  # one split, not slices: no zero-filled full-size gradients
            gate_parts = torch.split(weight, [st.n_in for st in self.stages], dim=1)
        out: list[Tensor | None] = []
        for k, (st, v, w) in enumerate(zip(self.stages, parts, W_parts)):
            if v is None:
                out.append(None)
                continue
            E, n = v.shape[0], v.shape[2]
            if st.n_out == 0 or n == 0:
                out.append(v.new_zeros(E, st.ncol, st.n_out))
                continue
            if n < st.n_in:  # leading columns only
                w = w[..., :n]
            if self.shared_weights:
                if weight is not None:
                    g = gate_parts[k] if n == st.n_in else gate_parts[k][:, :n]
                    v = v * g.unsqueeze(1)
                p = (v.reshape(E * st.ncol, n) @ w.T).view(E, st.ncol, st.n_out)
            else:
                p = torch.bmm(v, w.transpose(1, 2))
            out.append(p)
        return out

    def stage_output(self, parts: list[Tensor | None]) -> Tensor:
        """Stage layout of the output ``[(E, ncol, n_out) or None (zero), ...]`` -> rotated output
        (E, rot_out.rot_dim)."""
        ref = next(p for p in parts if p is not None)
        E = ref.shape[0]
        P = torch.cat(
            [
                p.reshape(E, p.shape[1] * p.shape[2]) if p is not None else ref.new_zeros(E, st.ncol * st.n_out)
                for p, st in zip(parts, self.stages)
            ],
            dim=1,
        )  # explicit sizes: E may be 0
        y = take_columns(P, self.output_index)
        return y if self.output_sign is None else y * self.output_sign

    def message(self, x_src: Tensor, edge_vec: Tensor, weight: Tensor) -> Tensor:
        """Per-edge messages ``(E, irreps_in.dim), (E, 3), (E, weight_numel) -> (E, irreps_out.dim)``
        (for custom aggregation; :meth:`forward` fuses the chart turn into the aggregation instead)."""
        check_edge_vectors(edge_vec)
        frame, rotated = self._frame_and_rotated(x_src, torch.arange(x_src.shape[0], device=x_src.device), edge_vec)
        y = self.rot_out.from_frame(self.frame_map(rotated, weight), frame)
        # chart edges used J^T x_src[e] = row E + e of the chart table; undo with J per edge
        y = torch.where(frame.chart[:, None], self.rot_out.apply_J(y, transpose=False), y)
        return take_columns(y, self._perm_out_inv)

    def forward(self, x: Tensor, edge_src: Tensor, edge_dst: Tensor, edge_vec: Tensor, weight: Tensor) -> Tensor:
        check_conv_inputs(
            "SO2Conv",
            x,
            self.irreps_in.dim,
            edge_src,
            edge_dst,
            edge_vec,
            weight,
            self.weight_numel,
            x.shape[0],
            module_tensor(self),
        )
        check_edge_vectors(edge_vec)  # reads values only in eager mode on real tensors
        frame, rotated = self._frame_and_rotated(x, edge_src, edge_vec)
        out = self.rot_out.aggregate_from_frame(self.frame_map(rotated, weight), edge_dst, frame, x.shape[0])
        out = take_columns(out, self._perm_out_inv)
        if self.avg_num_neighbors is not None:
            out = out / math.sqrt(self.avg_num_neighbors)
        return out
