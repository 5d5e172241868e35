"""The eSCN backbone: node features from positions, atom types and a graph with edges.

:class:`ESCNBackbone` embeds the atom types into the ``0e`` channels, optionally mixes in node inputs, and applies
``num_layers`` message blocks (:class:`EdgeFrameBlock`), each a residual update

    x <- x + block(x)        block: rotate both endpoints into the edge frame, two SO(2) maps with an
                             activation between them, rotate back, sum over neighbours / sqrt(avg_num_neighbors)

It returns node features (N, irreps.dim) in the irreps layout of :func:`node_irreps`. Heads and the energy model
that owns the force and stress derivatives are :class:`escn.models.ESCN`. See ``docs/design.md``.
"""

from __future__ import annotations

import math
from typing import Sequence, cast

import torch
from torch import nn

from escn.data.batch import Batch
from escn.data.graph import edge_vectors
from escn.nn.constants import ConstantModule
from escn.nn.edge_rotation import EdgeRotation
from escn.nn.linear import Linear
from escn.nn.radial import BesselBasis, PolynomialCutoff, RadialMLP, second_moment_scale, soft_one_hot_linspace
from escn.nn.s2_activation import S2Grid
from escn.nn.so2_conv import SO2Conv, grouped_permutation
from escn.nn.so2_conv import take_columns as _take_columns
from escn.o3.edge_frame import EdgeFrame, edge_frame
from escn.o3.irreps import Irreps

Tensor = torch.Tensor

__all__ = ["ESCNBackbone", "EdgeFrameBlock", "node_irreps"]

ACTIVATIONS = ("gate", "s2")
RADIAL_BASES = ("bessel", "gaussian", "smooth_finite")


def node_irreps(channels: int, lmax: int, pseudo: bool = False) -> Irreps:
    """``channels x l`` for ``l = 0..lmax`` with parity ``(-1)^l``; with ``pseudo`` each order is followed by
    ``channels x l`` of the opposite parity."""
    entries: list[tuple[int, tuple[int, int]]] = []
    for l in range(lmax + 1):
        entries.append((channels, (l, (-1) ** l)))
        if pseudo:
            entries.append((channels, (l, -((-1) ** l))))
    return Irreps(entries)


def _doubled(irreps: Irreps) -> Irreps:
    return Irreps([(2 * mul, (ir.l, ir.p)) for mul, ir in irreps])


def _first(parts: Sequence[Tensor | None]) -> Tensor:
    """The first stage of a stage list: never a known-zero (None) stage, since m = 0 always carries the scalars."""
    first = parts[0]
    if first is None:
        raise RuntimeError("the first (m = 0) stage is missing")
    return first


class EdgeFrameBlock(ConstantModule):
    """One eSCN message block (module docstring), from node features to aggregated messages.

    Args:
        irreps: node feature irreps, as built by :func:`node_irreps`.
        mmax: orders ``|m| <= mmax`` kept in the edge frame.
        edge_features: width of the per-edge invariant input of the radial MLP.
        radial_hidden: hidden width of the radial MLP.
        activation: ``"gate"`` or ``"s2"`` (natural parity only).
        s2_resolution: grid of the S2 activation (see :class:`escn.nn.S2Grid`).
        avg_num_neighbors: the neighbour sum is divided by its square root.

    Layouts. Node features are carried between blocks in the *grouped* layout of :class:`EdgeRotation`
    (``(N, rot.full_dim)``: per order ``l``, channels x ``2l+2`` slots; :meth:`to_grouped` and
    :meth:`from_grouped` convert from and to the irreps layout, once per network). Inside the edge frame every
    tensor is in the *stage layout* of :class:`escn.nn.SO2Conv` (per order m: the ``+m`` row then the ``-m``
    row of ``(l, channel)`` columns), which is what the SO(2) matrix multiplies read and write: one gather
    brings the two rotated endpoints into it, the activation works on it in place of a layout (the gate by
    slices, the S2 grid with tables whose rows follow it), and one gather brings the second map's output back
    to the rotation's layout.

    ``forward(x, edge_src, edge_dst, frame, edge_feat, envelope)``: ``x`` (N, rot.full_dim) grouped layout,
    edges (E,), ``frame`` from :func:`escn.o3.edge_frame` of the (E, 3) edge vectors, ``edge_feat``
    (E, edge_features), ``envelope`` (E,) -> the update (N, rot.full_dim), grouped layout.
    """

    # index tables (buffers registered in __init__)
    _to_grouped: Tensor
    _from_grouped: Tensor
    _edge_index: Tensor
    _scalar_edge_index: Tensor

    def __init__(
        self,
        irreps: Irreps,
        mmax: int,
        edge_features: int,
        radial_hidden: int,
        activation: str = "gate",
        s2_resolution: int | Sequence[int] | None = None,
        avg_num_neighbors: float = 1.0,
        scalar_input: bool = False,
        scalar_output: bool = False,
    ) -> None:
        super().__init__()
        self.irreps = irreps
        self.scalar_input = bool(scalar_input)
        self.executor = "native"  # of the S2 activation's SiLU; set with the model's set_executor
        self.scalar_output = bool(scalar_output)
        self.lmax = irreps.lmax
        self.mmax = min(mmax, self.lmax)
        self.activation = activation
        self.avg_num_neighbors = float(avg_num_neighbors)
        groups: dict[int, int] = {}
        for mul, ir in irreps:
            groups[ir.l] = groups.get(ir.l, 0) + mul
        self.rot = EdgeRotation(sorted(groups.items()), self.mmax)
        r = {l: 2 * min(l, self.mmax) + 1 for l in groups}
        perm = grouped_permutation(irreps)
        self.register_buffer("_to_grouped", torch.tensor(perm, dtype=torch.long), persistent=False)
        slot_of = {col: k for k, col in enumerate(perm) if col < irreps.dim}
        self.register_buffer(
            "_from_grouped", torch.tensor([slot_of[j] for j in range(irreps.dim)], dtype=torch.long), persistent=False
        )

        if activation == "gate":
            scalars = Irreps([(mul, (ir.l, ir.p)) for mul, ir in irreps if ir.l == 0 and ir.p == 1])
            others = Irreps([(mul, (ir.l, ir.p)) for mul, ir in irreps if not (ir.l == 0 and ir.p == 1)])
            self.num_scalars = scalars.dim
            self.num_gates = others.num_irreps
            mid = scalars + Irreps(f"{self.num_gates}x0e") + others if self.num_gates else scalars
            self._silu_scale = second_moment_scale(torch.nn.functional.silu)
            self._sigmoid_scale = second_moment_scale(torch.sigmoid)
        elif activation == "s2":
            if any(ir.p != (-1) ** ir.l for _, ir in irreps):
                raise ValueError("activation='s2' needs natural parity features (pseudo=False)")
            mid = irreps
            self._silu_scale = second_moment_scale(torch.nn.functional.silu)
        else:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.conv1 = SO2Conv(_doubled(irreps), mid, mmax=self.mmax, shared_weights=True)
        self.conv2 = SO2Conv(irreps, irreps, mmax=self.mmax, shared_weights=True)
        self.radial = RadialMLP([edge_features, radial_hidden, radial_hidden, self.conv1.weight_numel])

        # [rotated x_src | rotated x_dst] -> conv1's stage layout: the rotations' layout is that of EdgeRotation
        # (per l: channels x r_l); conv1's rotated input has, per l, the src channels then the dst channels of
        # each entry of _doubled(irreps); input_index then picks the stage layout. Both composed into one gather.
        rot_dim = self.rot.rot_dim
        concat: list[int] = []
        for (l, _n_l), roff in zip(self.rot.groups, self.rot.rot_offsets):
            c0 = 0
            for mul, ir in irreps:
                if ir.l != l:
                    continue
                for side in (0, 1):
                    for u in range(mul):
                        base = side * rot_dim + roff + (c0 + u) * r[l]
                        concat.extend(range(base, base + r[l]))
                c0 += mul
        edge_index = torch.tensor(concat, dtype=torch.long)[self.conv1.input_index]
        self.register_buffer("_edge_index", edge_index, persistent=False)
        # scalar input: only the l = 0 channels (columns 0..C0-1 of each rotated endpoint) can be nonzero; they
        # need no rotation (D^0 = 1) and no chart turn, and every other column of conv1's input reads a zero
        C0 = groups.get(0, 0)
        self.num_l0 = C0
        scalar_edge_index = [
            c if c < C0 else (C0 + c - rot_dim if rot_dim <= c < rot_dim + C0 else 2 * C0) for c in edge_index.tolist()
        ]
        self.register_buffer("_scalar_edge_index", torch.tensor(scalar_edge_index, dtype=torch.long), persistent=False)
        # natural parity: the l = 0 channels of both endpoints are the first 2 C0 columns of conv1's first stage
        # (src channels, then dst channels), and every other stage has only l >= 1 columns or none (the m = 0
        # rows of the odd class are an empty stage)
        self._scalar_stage_input = (
            self.conv1.stages[0].m == 0
            and all(st.m > 0 or st.n_in == 0 for st in self.conv1.stages[1:])
            and self.conv1.stage_columns()[0][: 2 * C0] == [(0, u) for u in range(2 * C0)]
            and all(ir.l == 0 for _, ir in irreps[:1])
            and groups.get(0) == irreps[0].mul
        )
        # scalar output: the 0e channels are the first entry of irreps, the first columns of conv2's first stage
        # and the first channels of the l = 0 group
        self.num_0e = irreps[0].mul if irreps[0].ir.l == 0 and irreps[0].ir.p == 1 else 0
        if self.scalar_output and not (
            self.num_0e
            and self.conv2.stages[0].m == 0
            and self.conv2.stage_columns(output=True)[0][: self.num_0e] == [(0, u) for u in range(self.num_0e)]
        ):
            raise ValueError(f"scalar_output needs irreps starting with the 0e channels, got {irreps}")

        # the activation maps conv1's output stages onto conv2's input stages column by column (checked here)
        out1, in2 = self.conv1.stage_columns(output=True), self.conv2.stage_columns()
        if activation == "gate":
            gate_id: dict[tuple[int, int], int] = {}
            k = 0
            for i, (mul, _) in enumerate(mid):
                if i >= (1 if self.num_scalars else 0) + (1 if self.num_gates else 0):
                    for u in range(mul):
                        gate_id[(i, u)] = k
                        k += 1
            entry_of_other = [i for i, (_, ir) in enumerate(irreps) if not (ir.l == 0 and ir.p == 1)]
            first_other = (1 if self.num_scalars else 0) + (1 if self.num_gates else 0)
            self._gate_slices: list[tuple[int, int, int, int]] = []  # per stage: (scalars, gates, gated start, stop)
            for s, (cols_out, cols_in) in enumerate(zip(out1, in2)):
                n_s = sum(1 for i, _ in cols_out if self.num_scalars and i == 0)
                n_g = sum(1 for i, _ in cols_out if self.num_gates and i == (1 if self.num_scalars else 0))
                gated = cols_out[n_s + n_g :]
                ids = [gate_id[c] for c in gated]
                expect = cols_out[:n_s] + [(entry_of_other[i - first_other], u) for i, u in gated]
                if expect != cols_in:
                    raise AssertionError("conv1's output stages do not line up with conv2's input stages")
                if ids == list(range(ids[0], ids[0] + len(ids))) if ids else True:  # consecutive gates: a slice
                    self._gate_slices.append((n_s, n_g, ids[0] if ids else 0, ids[-1] + 1 if ids else 0))
                else:  # interleaved parities (pseudo=True): a gather
                    self._gate_slices.append((n_s, n_g, -1, -1))
                    self.register_buffer(f"_gate_index{s}", torch.tensor(ids, dtype=torch.long), persistent=False)
            # the stages' gates, when they tile the gate vector in order: one split instead of a slice per stage
            bounds = [(a, b) for _, _, a, b in self._gate_slices]
            tiles = (
                all(a >= 0 for a, _ in bounds)
                and bounds[0][0] == 0
                and bounds[-1][1] == self.num_gates
                and all(b0 == a1 for (_, b0), (a1, _) in zip(bounds, bounds[1:]))
            )
            self._gate_split: list[int] | None = [b - a for a, b in bounds] if tiles else None
        else:
            # the stage layout is (E, K, C): coefficient rows (per stage: +m then -m rows of l = m..lmax), channels
            # fastest; the grid's tables are built with their rows in that order
            C = groups[0]
            coefficients: list[tuple[int, int]] = []
            for st, cols in zip(self.conv1.stages, out1):
                ls = [irreps[i].ir.l for i, u in cols if u == 0]
                for sign in (1,) if st.m == 0 else (1, -1):
                    coefficients += [(l, sign * st.m) for l in ls]
            self.channels = C
            resolution = (
                None
                if s2_resolution is None
                else (
                    s2_resolution if isinstance(s2_resolution, int) else (int(s2_resolution[0]), int(s2_resolution[1]))
                )
            )
            self.grid = S2Grid(self.lmax, self.mmax, resolution, coefficients=coefficients)

    def to_grouped(self, x: Tensor) -> Tensor:
        """Irreps layout (N, irreps.dim) -> grouped layout (N, rot.full_dim) (padding slots zero)."""
        return _take_columns(torch.cat([x, x.new_zeros(x.shape[0], 1)], dim=1), self._to_grouped)

    def from_grouped(self, x: Tensor) -> Tensor:
        """Grouped layout (N, rot.full_dim) -> irreps layout (N, irreps.dim)."""
        return _take_columns(x, self._from_grouped)

    def _act(self, parts: list[Tensor | None]) -> list[Tensor | None]:
        """Nonlinearity on conv1's output stages [(E, ncol, n_out) or None (zero), ...] -> conv2's input stages
        (only the first one with ``scalar_output``: nothing else is read)."""
        return self._s2_act(parts) if self.activation == "s2" else self._gate_act(parts)

    def _s2_act(self, parts: list[Tensor | None]) -> list[Tensor | None]:
        # the stage layout flattened is (E, K, C), the layout of the grid's silu_stages (a fused compiled pass,
        # or two GEMMs with a transposing copy on each side); the activation's normalisation is folded into
        # the analysis table. Inputs: all coefficients, or the first stage's (m = 0) when the others are
        # known zero
        E, C = _first(parts).shape[0], self.channels
        h = torch.cat([p.reshape(E, p.shape[1] * p.shape[2]) for p in parts if p is not None], dim=1)
        # conv2 reads only its first stage (the m = 0 coefficients, first in stage order) with scalar_output
        K_out = self.conv2.stages[0].n_in // C if self.scalar_output else self.grid.num_coefficients
        out = self.grid.silu_stages(h, C, K_out, self._silu_scale, self.executor)
        result: list[Tensor | None] = [out.unsqueeze(1)] if self.scalar_output else list(self.conv2.split_stages(out))
        return result

    def _gate_act(self, parts: list[Tensor | None]) -> list[Tensor | None]:
        # one split per tensor, not slices: a slice's backward zero-fills a full-size gradient
        n_s, n_g, _, _ = self._gate_slices[0]
        first = _first(parts)
        scal, gates, rest = torch.split(first, [n_s, n_g, first.shape[2] - n_s - n_g], dim=2)
        gates = torch.sigmoid(gates) * self._sigmoid_scale  # (E, 1, num_gates)
        stage_gates = torch.split(gates, self._gate_split, dim=2) if self._gate_split is not None else None
        out: list[Tensor | None] = []
        for s, (p, (_, _, a, b)) in enumerate(zip(parts, self._gate_slices)):
            if p is None:  # a stage known to be zero stays zero
                out.append(None)
                continue
            if stage_gates is not None:
                g = stage_gates[s]
            else:
                g = gates[:, :, a:b] if a >= 0 else gates.index_select(2, getattr(self, f"_gate_index{s}"))
            gated = (rest if s == 0 else p) * g
            if s == 0 and n_s:
                gated = torch.cat([torch.nn.functional.silu(scal) * self._silu_scale, gated], dim=2)
            out.append(gated)
            if self.scalar_output:  # only conv2's first stage is read
                break
        return out

    def forward(
        self, x: Tensor, edge_src: Tensor, edge_dst: Tensor, frame: EdgeFrame, edge_feat: Tensor, envelope: Tensor
    ) -> Tensor:
        _N, E = x.shape[0], edge_src.shape[0]
        C0 = self.num_l0
        if self.scalar_input:  # x holds only l = 0 channels (the first block of a network without node inputs)
            x0 = x[:, 0 : 2 * C0 : 2]  # the m = 0 slots of the l = 0 group
            if self._scalar_stage_input:  # they are the leading columns of conv1's first stage; other stages are zero
                v0 = torch.cat([x0.index_select(0, edge_src), x0.index_select(0, edge_dst)], dim=1)
                parts: list[Tensor | None] = [v0.unsqueeze(1)] + [None] * (len(self.conv1.stages) - 1)
                h = self._act(self.conv1.stage_map(parts, self.radial(edge_feat)))
                return self._output(h, x, edge_dst, frame, envelope)
            z = torch.cat([x0.index_select(0, edge_src), x0.index_select(0, edge_dst), x0.new_zeros(E, 1)], dim=1)
            v = _take_columns(z, self._scalar_edge_index)
        else:
            table = self.rot.chart_table(x)
            rs = self.rot.gather_to_frame(table, edge_src, frame)
            rd = self.rot.gather_to_frame(table, edge_dst, frame)
            v = _take_columns(torch.cat([rs, rd], dim=1), self._edge_index)
        if self.conv1.input_sign is not None:
            v = v * self.conv1.input_sign
        h = self._act(self.conv1.stage_map(self.conv1.split_stages(v), self.radial(edge_feat)))
        return self._output(h, x, edge_dst, frame, envelope)

    def _output(
        self, h: list[Tensor | None], x: Tensor, edge_dst: Tensor, frame: EdgeFrame, envelope: Tensor
    ) -> Tensor:
        """conv2 on the activated stages, the rotation back and the aggregation -> the update (N, full_dim)."""
        N, _E = x.shape[0], edge_dst.shape[0]
        scale = 1.0 / math.sqrt(self.avg_num_neighbors)
        if self.scalar_output:  # only the 0e channels are read after this block: m = 0 rows, no rotation back
            n = self.num_0e
            y = self.conv2.first_stage_rows(_first(h), n) * envelope[:, None]  # m = 0, natural class: 0e first
            agg = y.new_zeros(N, n).index_add_(0, edge_dst, y) * scale
            update = torch.stack([agg, torch.zeros_like(agg)], dim=2).view(N, 2 * n)  # l = 0 group: (m = 0, pad) slots
            return torch.nn.functional.pad(update, (0, x.shape[1] - 2 * n))
        out = self.conv2.stage_output(self.conv2.stage_map(h, None)) * envelope[:, None]
        return self.rot.aggregate_from_frame(out, edge_dst, frame, N) * scale


class ESCNBackbone(ConstantModule):
    """Node features from positions, atom types and edges (module docstring).

    Args: as the same-named arguments of :class:`escn.models.ESCN` (which validates them), plus
        scalar_output: after the last block only the ``0e`` channels are read (an energy-only model): that
            block computes only them and rotates nothing back; the other channels of the result are then the
            previous block's.

    ``forward(batch, pos, cell, types)``: a batch with edges, positions (N, 3) and cells (B, 3, 3) or None (possibly
    strained copies of the batch's), atom types (N,) int64 -> node features (N, irreps.dim).
    """

    def __init__(
        self,
        num_atom_types: int,
        lmax: int,
        mmax: int,
        channels: int,
        num_layers: int,
        cutoff: float,
        num_radial: int,
        radial_basis: str,
        radial_hidden: int,
        inverse_distance_powers: int,
        inverse_distance_scale: float,
        type_embedding_dim: int,
        activation: str,
        s2_resolution: int | Sequence[int] | None,
        avg_num_neighbors: float,
        pseudo: bool,
        node_input_irreps: str | None,
        scalar_output: bool = False,
    ) -> None:
        super().__init__()
        self.irreps = node_irreps(channels, lmax, pseudo)
        self.channels = channels
        self.cutoff = float(cutoff)
        self.type_embedding = nn.Embedding(num_atom_types, channels)
        self.edge_type_embedding = nn.Embedding(num_atom_types, type_embedding_dim)
        self.radial_basis_name = radial_basis
        self.num_radial = num_radial
        self.inverse_distance_powers = inverse_distance_powers
        self.inverse_distance_scale = float(inverse_distance_scale)
        self.radial_basis = BesselBasis(cutoff, num_radial) if radial_basis == "bessel" else None
        self.envelope = PolynomialCutoff(cutoff)
        self.node_input_irreps = None if node_input_irreps is None else Irreps(node_input_irreps)
        self.node_input = None if self.node_input_irreps is None else Linear(self.node_input_irreps, self.irreps)
        # the first block sees only the type embedding (l = 0) unless node inputs are mixed in; after the last
        # block an energy-only model reads only the 0e channels: those blocks skip the rotations they do not need
        self.blocks = nn.ModuleList(
            EdgeFrameBlock(
                self.irreps,
                mmax,
                num_radial + inverse_distance_powers + 2 * type_embedding_dim,
                radial_hidden,
                activation,
                s2_resolution,
                avg_num_neighbors,
                scalar_input=k == 0 and node_input_irreps is None,
                scalar_output=k == num_layers - 1 and scalar_output,
            )
            for k in range(num_layers)
        )

    def forward(self, batch: Batch, pos: Tensor, cell: Tensor | None, types: Tensor) -> Tensor:
        return self._node_features(batch, pos, cell, types)

    def _node_features(self, batch: Batch, pos: Tensor, cell: Tensor | None, types: Tensor) -> Tensor:
        """One pass of the network with the given atom types (N,)."""
        N = pos.shape[0]
        x = pos.new_zeros(N, self.irreps.dim)
        x[:, : self.channels] = self.type_embedding(types).to(pos.dtype)
        if self.node_input is not None:
            x = x + self.node_input(cast(Tensor, batch.node_features).to(pos.dtype))  # shape checked by the model
        src, dst = cast(Tensor, batch.edge_src), cast(Tensor, batch.edge_dst)  # a batch without edges is refused
        blocks = cast(list[EdgeFrameBlock], list(self.blocks))
        vec = edge_vectors(pos, src, dst, batch.shift, cell, batch.batch)
        r = torch.linalg.vector_norm(vec, dim=1)
        frame = edge_frame(vec, self.irreps.lmax, blocks[0].mmax, rows_lmax=max(b.rot.rows_lmax(pos) for b in blocks))
        temb = self.edge_type_embedding(types).to(pos.dtype)
        edge_feat = torch.cat([self.radial_features(r), temb.index_select(0, src), temb.index_select(0, dst)], dim=1)
        env = self.envelope(r)
        first = blocks[0]
        xg = first.to_grouped(x)
        for block in blocks:
            xg = xg + block(xg, src, dst, frame, edge_feat, env)
        return first.from_grouped(xg)

    def radial_features(self, r: Tensor) -> Tensor:
        """(E,) edge lengths -> (E, num_radial + inverse_distance_powers): radial basis values, then
        ``(a / (r + a))^p`` for ``p = 1..inverse_distance_powers``."""
        if self.radial_basis is not None:
            basis = self.radial_basis(r)
        else:
            basis = soft_one_hot_linspace(r, 0.0, self.cutoff, self.num_radial, self.radial_basis_name, cutoff=True)
        if self.inverse_distance_powers == 0:
            return basis
        a = self.inverse_distance_scale
        inv = a / (r + a)
        powers = [inv]
        for _ in range(self.inverse_distance_powers - 1):
            powers.append(powers[-1] * inv)
        return torch.cat([basis, torch.stack(powers, dim=1)], dim=1)
