"""The eSCN model: atom-type embedding -> edge-frame message blocks -> energy (and forces, stress) or
per-node vectors.

One message block (:class:`EdgeFrameBlock`), for every edge ``src -> dst`` with frame ``D`` (edge on +y):

    v   = D [x_src || x_dst]                    both endpoint features rotated into the edge frame, |m| <= mmax
    h   = SO2_1(v; gates = MLP(radial basis(|r|) || type emb(src) || type emb(dst)))
    h   = act(h)                                gate (exactly equivariant) or S2 grid (approximately)
    msg = D^T SO2_2(h; gates = envelope(|r|))   second SO(2) map, rotated back
    x_dst <- x_dst + sum_edges msg / sqrt(avg_num_neighbors)

Everything between the two rotations stays in the edge frame: one rotation in per endpoint, one rotation out.
The envelope multiplies the last (linear) map, so each message and all its derivatives up to second order go
smoothly to zero at the cutoff and the energy is continuous when atoms cross it.

Features are ``C x l`` for ``l = 0..lmax`` with natural parity ``(-1)^l`` (and, with ``pseudo=True``, another
``C x l`` of the opposite parity so that pseudo-scalar outputs are possible). The energy is a sum of per-atom
energies from the invariant channels; forces are ``-dE/dpos`` by autograd through the rotations (no
detaching), stress ``(1/V) dE/d(strain)`` as in ASE.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Sequence

import torch
from torch import nn

from escn._util import check_int as _check_int
from escn.data.batch import Batch
from escn.data.graph import edge_vectors
from escn.data.species import check_atomic_numbers
from escn.nn.checks import check_float_input, module_tensor
from escn.nn.constants import ConstantModule
from escn.nn.edge_rotation import EdgeRotation
from escn.nn.functional import silu
from escn.nn.linear import Linear
from escn.nn.radial import BesselBasis, PolynomialCutoff, RadialMLP, second_moment_scale, soft_one_hot_linspace
from escn.nn.s2_activation import S2Grid
from escn.nn.so2_conv import SO2Conv, grouped_permutation, take_columns as _take_columns
from escn.o3.edge_frame import EdgeFrame, edge_frame
from escn.o3.irreps import Irreps

Tensor = torch.Tensor

__all__ = ["ESCN", "EdgeFrameBlock", "node_irreps"]

ACTIVATIONS = ("gate", "s2")
RADIAL_BASES = ("bessel", "gaussian", "smooth_finite")
OUTPUTS = ("energy", "node_vectors", "graph_outputs", "class_logits")


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
        self.register_buffer("_from_grouped", torch.tensor([slot_of[j] for j in range(irreps.dim)], dtype=torch.long), persistent=False)

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
        for (l, n_l), roff in zip(self.rot.groups, self.rot.rot_offsets):
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
        # scalar output: the 0e channels are the first entry of irreps, the first columns of conv2's first stage
        # and the first channels of the l = 0 group
        self.num_0e = irreps[0].mul if irreps[0].ir.l == 0 and irreps[0].ir.p == 1 else 0
        if self.scalar_output and not (self.num_0e and self.conv2.stages[0].m == 0
                                       and self.conv2.stage_columns(output=True)[0][: self.num_0e] == [(0, u) for u in range(self.num_0e)]):
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
        else:
            # the stage layout is (E, K, C): coefficient rows (per stage: +m then -m rows of l = m..lmax), channels
            # fastest; the grid's tables are built with their rows in that order
            C = groups[0]
            coefficients: list[tuple[int, int]] = []
            for st, cols in zip(self.conv1.stages, out1):
                ls = [irreps[i].ir.l for i, u in cols if u == 0]
                for sign in ((1,) if st.m == 0 else (1, -1)):
                    coefficients += [(l, sign * st.m) for l in ls]
            self.channels = C
            self.grid = S2Grid(self.lmax, self.mmax, None if s2_resolution is None else (tuple(s2_resolution) if not isinstance(s2_resolution, int) else s2_resolution),
                               coefficients=coefficients)

    def to_grouped(self, x: Tensor) -> Tensor:
        """Irreps layout (N, irreps.dim) -> grouped layout (N, rot.full_dim) (padding slots zero)."""
        return _take_columns(torch.cat([x, x.new_zeros(x.shape[0], 1)], dim=1), self._to_grouped)

    def from_grouped(self, x: Tensor) -> Tensor:
        """Grouped layout (N, rot.full_dim) -> irreps layout (N, irreps.dim)."""
        return _take_columns(x, self._from_grouped)

    def _act(self, parts: list[Tensor]) -> list[Tensor]:
        """Nonlinearity on conv1's output stages [(E, ncol, n_out), ...] -> conv2's input stages."""
        if self.activation == "s2":
            E = parts[0].shape[0]
            h = torch.cat([p.reshape(E, p.shape[1] * p.shape[2]) for p in parts], dim=1)
            K, C = self.grid.num_coefficients, self.channels
            # (E, K, C) -> (E * C, K): one transposing copy, then one GEMM to the grid and one back; the
            # activation's normalisation is folded into the (G, K) analysis table
            hc = h.view(E, K, C).transpose(1, 2).reshape(E * C, K)
            f = silu(hc @ self.grid.to_grid)
            out = f @ (self.grid.from_grid * self._silu_scale)  # (E * C, K)
            return self.conv2.split_stages(out.view(E, C, K).transpose(1, 2).reshape(E, K * C))
        # one split per tensor, not slices: a slice's backward zero-fills a full-size gradient
        n_s, n_g, _, _ = self._gate_slices[0]
        scal, gates, rest = torch.split(parts[0], [n_s, n_g, parts[0].shape[2] - n_s - n_g], dim=2)
        gates = torch.sigmoid(gates) * self._sigmoid_scale  # (E, 1, num_gates)
        bounds = [(a, b) for _, _, a, b in self._gate_slices]
        consecutive = all(a >= 0 for a, _ in bounds) and all(b0 == a1 for (_, b0), (a1, _) in zip(bounds, bounds[1:]))
        stage_gates = torch.split(gates, [b - a for a, b in bounds], dim=2) if consecutive and bounds[0][0] == 0 and bounds[-1][1] == n_g else None
        out = []
        for s, (p, (_, _, a, b)) in enumerate(zip(parts, self._gate_slices)):
            if stage_gates is not None:
                g = stage_gates[s]
            else:
                g = gates[:, :, a:b] if a >= 0 else gates.index_select(2, getattr(self, f"_gate_index{s}"))
            gated = (rest if s == 0 else p) * g
            if s == 0 and n_s:
                gated = torch.cat([torch.nn.functional.silu(scal) * self._silu_scale, gated], dim=2)
            out.append(gated)
        return out

    def forward(self, x: Tensor, edge_src: Tensor, edge_dst: Tensor, frame: EdgeFrame, edge_feat: Tensor, envelope: Tensor) -> Tensor:
        N, E = x.shape[0], edge_src.shape[0]
        C0 = self.num_l0
        if self.scalar_input:  # x holds only l = 0 channels (the first block of a network without node inputs)
            x0 = x[:, 0 : 2 * C0 : 2]  # the m = 0 slots of the l = 0 group
            z = torch.cat([x0.index_select(0, edge_src), x0.index_select(0, edge_dst), x0.new_zeros(E, 1)], dim=1)
            v = _take_columns(z, self._scalar_edge_index)
        else:
            xb = torch.cat([x, self.rot.apply_J(x, transpose=True)], dim=0)  # chart turn once per node
            off = N * frame.chart
            rs = self.rot.to_frame(xb.index_select(0, edge_src + off), frame)
            rd = self.rot.to_frame(xb.index_select(0, edge_dst + off), frame)
            v = _take_columns(torch.cat([rs, rd], dim=1), self._edge_index)
        if self.conv1.input_sign is not None:
            v = v * self.conv1.input_sign
        h = self._act(self.conv1.stage_map(self.conv1.split_stages(v), self.radial(edge_feat)))
        scale = 1.0 / math.sqrt(self.avg_num_neighbors)
        if self.scalar_output:  # only the 0e channels are read after this block: m = 0 rows, no rotation back
            n = self.num_0e
            w0 = self.conv2.shared_stage_weights()[0][:n]  # (n, n_in) of the m = 0, natural-class stage
            y = (h[0].reshape(E, h[0].shape[2]) @ w0.T) * envelope[:, None]
            agg = y.new_zeros(N, n).index_add_(0, edge_dst, y) * scale
            update = torch.stack([agg, torch.zeros_like(agg)], dim=2).view(N, 2 * n)  # l = 0 group: (m = 0, pad) slots
            return torch.nn.functional.pad(update, (0, x.shape[1] - 2 * n))
        out = self.conv2.stage_output(self.conv2.stage_map(h, None)) * envelope[:, None]
        y = self.rot.from_frame(out, frame)
        off = N * frame.chart
        acc = y.new_zeros(2 * N, y.shape[1]).index_add_(0, edge_dst + off, y)
        return (acc[:N] + self.rot.apply_J(acc[N:], transpose=False)) * scale


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _type_group(perms: Sequence[Sequence[int]], num_types: int) -> list[list[int]]:
    """Validate ``type_permutations``: the identity followed by the given relabellings, closed under composition."""
    if isinstance(perms, (str, bytes)):
        raise TypeError(f"type_permutations must be a list of permutations, got {perms!r}")
    identity = list(range(num_types))
    group = [identity]
    for g in perms:
        if isinstance(g, (str, bytes)) or not all(isinstance(t, int) and not isinstance(t, bool) for t in g):
            raise TypeError(f"type_permutations entries must be lists of ints, got {g!r}")
        g = list(g)
        if sorted(g) != identity:
            raise ValueError(f"type_permutations entry {g} is not a permutation of the types 0..{num_types - 1}")
        if g not in group:
            group.append(g)
    for a in group:
        for b in group:
            if [a[t] for t in b] not in group:
                raise ValueError(f"type_permutations with the identity must form a group: {a} after {b} is missing")
    return group


class ESCN(ConstantModule):
    """eSCN network for energies/forces/stress or per-node vectors.

    Args:
        num_atom_types: atom types are integers in ``[0, num_atom_types)``.  Default: ``len(atomic_numbers)``
            when ``atomic_numbers`` is given, else 100.
        lmax: largest order of the node features.
        mmax: orders ``|m| <= mmax`` kept in the edge frame (``None``: ``lmax``, no truncation).
        channels: multiplicity ``C`` of every order.
        num_layers: message blocks.
        cutoff: radius of the graph built when a batch has no edges, and of the smooth envelope.
        num_radial: radial basis size.
        radial_basis: ``"bessel"`` (DimeNet/NequIP, :class:`escn.nn.BesselBasis`), ``"gaussian"`` or
            ``"smooth_finite"`` (:func:`escn.nn.soft_one_hot_linspace` on ``[0, cutoff]``).
        radial_hidden: hidden width of the radial MLPs.
        inverse_distance_powers: also feed ``(a / (r + a))^p`` for ``p = 1..k`` to the radial MLPs (default 0:
            none), with ``a = inverse_distance_scale``. They fall off as ``(a / r)^p``, a power law that a basis
            on ``[0, cutoff]`` resolves poorly at short range (e.g. Coulomb's ``1/r^2`` between point charges),
            and stay in ``(0, 1]``, so training is as stable as with the basis alone (raw ``1/r^p`` inputs
            diverged in training).
        inverse_distance_scale: the length ``a`` above (units of the positions).
        type_embedding_dim: width of the atom-type embedding fed to the radial MLPs (per endpoint).
        activation: ``"gate"`` (exactly equivariant) or ``"s2"`` (grid activation, approximately equivariant).
        s2_resolution: ``(res_beta, res_alpha)`` of the S2 grid (default :func:`escn.nn.s2_activation.default_resolution`).
        avg_num_neighbors: messages are summed and divided by ``sqrt(avg_num_neighbors)``.
        pseudo: also carry opposite-parity features (needed for pseudo-scalar / pseudo-vector outputs).
        node_input_irreps: irreps of ``batch.node_features`` (e.g. ``"1x0e + 1x1o"`` for a charge and a
            velocity), mixed into the initial features by an equivariant linear map; None: no node inputs.
        outputs: any of ``"energy"`` (per graph, with ``"forces"``/``"stress"`` on request),
            ``"node_vectors"`` ((N, 3), an l = 1 output per node) and ``"graph_outputs"`` ((B, dim), an
            equivariant linear map of the per-graph mean of the node features to ``graph_output_irreps``).
            ``"class_logits"`` ((B, num_classes), invariant logits from the same pooled features).
        graph_output_irreps: irreps of ``"graph_outputs"``, e.g. ``"7x0e + 1x0o"`` (a ``0o`` output needs
            ``pseudo=True``).
        num_classes: number of classes of ``"class_logits"``.
        mirror_pairs: pairs ``[a, b]`` of classes that are mirror images of each other (e.g. the chiral
            tetrominoes). Each pair shares a scalar ``s`` and owns a pseudo-scalar ``p``:
            ``logit_a = s + p``, ``logit_b = s - p``, so a reflection swaps the two predictions exactly.
            Needs ``pseudo=True``.
        energy_scale, energy_shift: per-atom energy = scale * network output + shift + learned per-type offset.
        type_permutations: an exact symmetry of the task under relabelling atom types, e.g. ``[[1, 0]]`` when
            swapping types 0 and 1 changes nothing (the charged n-body system with all charges negated). Each
            entry maps type ``t`` to ``perm[t]``; with the identity they must form a group. The node features
            (and the per-type energy offsets) are averaged over the group, so every output is exactly invariant
            under these relabellings; the cost is one pass through the network per group element.
        type_average_in_training: with False, the average is taken in eval mode only and training runs one
            pass on the given types, for training on the relabelled copies of the data instead (data
            augmentation: as many optimiser steps per pass through the network; then the eval-mode model
            that validation, checkpoint selection and prediction use is still exactly invariant).
        atomic_numbers: the chemical species of a force field: type index ``t`` is the element with atomic
            number ``atomic_numbers[t]`` (distinct, in ``[0, 118]``; ``num_atom_types`` must be its length).
            Stored in ``config`` and so in checkpoints; the model's input is still type indices, converted from
            atomic numbers where batches are made (:mod:`escn.data.species`: the training data pipeline and
            :class:`escn.ase.Calculator`).  None (default): the types are plain labels with no element.

    ``forward(batch, compute_forces=True, compute_stress=False)`` returns a dict with ``"energy"`` (B,),
    ``"forces"`` (N, 3), ``"stress"`` (B, 3, 3), ``"node_vectors"`` (N, 3), ``"graph_outputs"`` (B, dim) as
    configured. ``model.config``
    holds the constructor arguments: ``ESCN(**model.config)`` rebuilds the architecture.
    """

    def __init__(
        self,
        num_atom_types: int | None = None,
        lmax: int = 6,
        mmax: int | None = 2,
        channels: int = 16,
        num_layers: int = 2,
        cutoff: float = 5.0,
        num_radial: int = 8,
        radial_basis: str = "bessel",
        radial_hidden: int = 32,
        inverse_distance_powers: int = 0,
        inverse_distance_scale: float = 0.5,
        type_embedding_dim: int = 8,
        activation: str = "gate",
        s2_resolution: int | Sequence[int] | None = None,
        avg_num_neighbors: float = 12.0,
        pseudo: bool = False,
        node_input_irreps: str | None = None,
        outputs: Sequence[str] = ("energy",),
        graph_output_irreps: str | None = None,
        num_classes: int | None = None,
        mirror_pairs: Sequence[Sequence[int]] = (),
        energy_scale: float = 1.0,
        energy_shift: float = 0.0,
        type_permutations: Sequence[Sequence[int]] = (),
        type_average_in_training: bool = True,
        atomic_numbers: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        species = None if atomic_numbers is None else check_atomic_numbers(atomic_numbers)
        if num_atom_types is None:
            num_atom_types = 100 if species is None else len(species)
        _check_int("num_atom_types", num_atom_types, 1)
        if species is not None and num_atom_types != len(species):
            raise ValueError(f"num_atom_types={num_atom_types} disagrees with atomic_numbers={species} ({len(species)} "
                             "species): leave num_atom_types out, it defaults to len(atomic_numbers)")
        _check_int("lmax", lmax, 0)
        if mmax is None:
            mmax = lmax
        _check_int("mmax", mmax, 0)
        _check_int("channels", channels, 1)
        _check_int("num_layers", num_layers, 1)
        _check_positive("cutoff", cutoff)
        _check_int("num_radial", num_radial, 1)
        _check_int("radial_hidden", radial_hidden, 1)
        _check_int("inverse_distance_powers", inverse_distance_powers, 0)
        _check_positive("inverse_distance_scale", inverse_distance_scale)
        _check_int("type_embedding_dim", type_embedding_dim, 1)
        _check_positive("avg_num_neighbors", avg_num_neighbors)
        if radial_basis not in RADIAL_BASES:
            raise ValueError(f"radial_basis must be one of {RADIAL_BASES}, got {radial_basis!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if activation == "s2" and pseudo:
            raise ValueError("activation='s2' works on natural-parity features only; use activation='gate' with pseudo=True")
        if isinstance(outputs, str) or not all(o in OUTPUTS for o in outputs) or len(outputs) == 0:
            raise ValueError(f"outputs must be a non-empty list drawn from {OUTPUTS}, got {outputs!r}")
        if ("graph_outputs" in outputs) != (graph_output_irreps is not None):
            raise ValueError("graph_output_irreps must be given exactly when outputs contains 'graph_outputs'")
        if ("class_logits" in outputs) != (num_classes is not None):
            raise ValueError("num_classes must be given exactly when outputs contains 'class_logits'")
        pairs = [tuple(int(c) for c in pr) for pr in mirror_pairs]
        if num_classes is not None:
            _check_int("num_classes", num_classes, 1)
            flat = [c for pr in pairs for c in pr]
            if any(len(pr) != 2 for pr in pairs) or len(set(flat)) != len(flat) or any(not 0 <= c < num_classes for c in flat):
                raise ValueError(f"mirror_pairs must be disjoint pairs of classes in [0, {num_classes}), got {mirror_pairs!r}")
            if pairs and not pseudo:
                raise ValueError("mirror_pairs need pseudo-scalars: set pseudo=True")
        elif pairs:
            raise ValueError("mirror_pairs given without num_classes")
        group = _type_group(type_permutations, num_atom_types)
        if not isinstance(type_average_in_training, bool):
            raise TypeError(f"type_average_in_training must be a bool, got {type(type_average_in_training).__name__}")
        if not isinstance(energy_scale, (int, float)) or not isinstance(energy_shift, (int, float)):
            raise TypeError("energy_scale and energy_shift must be numbers")
        self.config: dict[str, Any] = dict(
            num_atom_types=num_atom_types, lmax=lmax, mmax=mmax, channels=channels, num_layers=num_layers,
            cutoff=float(cutoff), num_radial=num_radial, radial_basis=radial_basis, radial_hidden=radial_hidden,
            inverse_distance_powers=inverse_distance_powers, inverse_distance_scale=float(inverse_distance_scale),
            type_embedding_dim=type_embedding_dim, activation=activation,
            s2_resolution=None if s2_resolution is None else (s2_resolution if isinstance(s2_resolution, int) else list(s2_resolution)),
            avg_num_neighbors=float(avg_num_neighbors), pseudo=bool(pseudo), node_input_irreps=node_input_irreps,
            outputs=list(outputs), graph_output_irreps=graph_output_irreps,
            num_classes=num_classes, mirror_pairs=[list(pr) for pr in pairs], energy_scale=float(energy_scale), energy_shift=float(energy_shift),
            type_permutations=[list(g) for g in group[1:]], type_average_in_training=type_average_in_training,
            atomic_numbers=species,
        )
        #: the chemical species (type index -> atomic number), or None for plain type labels
        self.atomic_numbers: tuple[int, ...] | None = None if species is None else tuple(species)
        self.type_average_in_training = type_average_in_training
        self.num_atom_types = num_atom_types
        self.cutoff = float(cutoff)
        self.outputs = tuple(outputs)
        self.energy_scale = float(energy_scale)
        self.energy_shift = float(energy_shift)
        self.irreps = node_irreps(channels, lmax, pseudo)
        self.channels = channels
        # (|G|, num_atom_types) relabellings, identity first
        self.register_buffer("_type_group", torch.tensor(group, dtype=torch.long), persistent=False)
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
                self.irreps, mmax, num_radial + inverse_distance_powers + 2 * type_embedding_dim, radial_hidden, activation, s2_resolution,
                avg_num_neighbors, scalar_input=k == 0 and node_input_irreps is None,
                scalar_output=k == num_layers - 1 and tuple(outputs) == ("energy",),
            )
            for k in range(num_layers)
        )
        self.energy_head = RadialMLP([channels, radial_hidden, 1]) if "energy" in outputs else None
        self.atom_energy = nn.Embedding(num_atom_types, 1) if "energy" in outputs else None
        if self.atom_energy is not None:
            nn.init.zeros_(self.atom_energy.weight)
        self.vector_head = Linear(self.irreps, "1x1o") if "node_vectors" in outputs else None
        self.graph_head = None
        if graph_output_irreps is not None:
            gout = Irreps(graph_output_irreps)
            missing = [str(ir) for _, ir in gout if ir not in [i for _, i in self.irreps]]
            if missing:
                raise ValueError(
                    f"graph_output_irreps {gout} needs {missing}, absent from the node features {self.irreps}"
                    + (" (set pseudo=True)" if not pseudo else "")
                )
            self.graph_head = Linear(self.irreps, gout)
        self.class_head = None
        if num_classes is not None:
            # scalars: one per pair, then one per unpaired class; pseudo-scalars: one per pair
            paired = {c: (j, +1.0 if k == 0 else -1.0) for j, pr in enumerate(pairs) for k, c in enumerate(pr)}
            unpaired = [c for c in range(num_classes) if c not in paired]
            n_s, n_p = len(pairs) + len(unpaired), len(pairs)
            s_idx, p_idx, sign = [], [], []
            for c in range(num_classes):
                if c in paired:
                    j, sg = paired[c]
                    s_idx.append(j), p_idx.append(j), sign.append(sg)
                else:
                    s_idx.append(len(pairs) + unpaired.index(c)), p_idx.append(0), sign.append(0.0)
            self.class_head = Linear(self.irreps, f"{n_s}x0e" + (f"+{n_p}x0o" if n_p else ""))
            self._n_class_scalars = n_s
            self.register_buffer("_class_s", torch.tensor(s_idx, dtype=torch.long), persistent=False)
            self.register_buffer("_class_p", torch.tensor(p_idx, dtype=torch.long), persistent=False)
            self.register_constant("_class_sign", torch.tensor(sign, dtype=torch.float64))

    # ------------------------------------------------------------------ input checks
    def _check_batch(self, batch: Batch) -> None:
        if not isinstance(batch, Batch):
            raise TypeError(f"ESCN expects an escn.data.Batch (see escn.data.collate), got {type(batch).__name__}")
        pos = batch.pos
        check_float_input("ESCN", "batch.pos", pos, module_tensor(self))
        if not bool(torch.isfinite(pos).all()):
            bad = int((~torch.isfinite(pos).all(dim=1)).nonzero()[0, 0])
            raise ValueError(f"batch.pos has non-finite values (first at atom {bad})")
        if batch.atom_types is not None:
            t = batch.atom_types
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_atom_types):
                bad = sorted({int(v) for v in t[(t < 0) | (t >= self.num_atom_types)].tolist()})
                raise ValueError(f"unknown atom types {bad[:10]}: this model knows types 0..{self.num_atom_types - 1}")
        if self.node_input_irreps is not None:
            f = batch.node_features
            if f is None or f.shape != (batch.num_nodes, self.node_input_irreps.dim):
                got = None if f is None else tuple(f.shape)
                raise ValueError(
                    f"batch.node_features must have shape ({batch.num_nodes}, {self.node_input_irreps.dim}) for "
                    f"node_input_irreps={self.node_input_irreps}, got {got}"
                )
        if batch.cell is not None and bool(batch.pbc.any()):
            vol = torch.linalg.det(batch.cell.to(torch.float64)).abs()
            scale = batch.cell.to(torch.float64).norm(dim=-1).prod(dim=-1)
            if bool((vol <= 1e-8 * scale).any()):
                raise ValueError("batch.cell has a cell with (near) zero volume")

    # ------------------------------------------------------------------ forward
    def _types(self, batch: Batch, n: int, device: torch.device) -> Tensor:
        return batch.atom_types if batch.atom_types is not None else torch.zeros(n, dtype=torch.long, device=device)

    def _active_type_group(self) -> Tensor:
        """The relabellings averaged over in the current mode, (|G|, num_atom_types), identity first."""
        if self.training and not self.type_average_in_training:
            return self._type_group[:1]
        return self._type_group

    def node_features(self, batch: Batch, pos: Tensor, cell: Tensor | None) -> Tensor:
        """Final node features (N, irreps.dim) for the given (possibly strained) positions and cells
        (averaged over ``type_permutations`` when given)."""
        types = self._types(batch, pos.shape[0], pos.device)
        group = self._active_type_group()
        if group.shape[0] == 1:
            return self._node_features(batch, pos, cell, types)
        return sum(self._node_features(batch, pos, cell, g[types]) for g in group) / group.shape[0]

    def _node_features(self, batch: Batch, pos: Tensor, cell: Tensor | None, types: Tensor) -> Tensor:
        """One pass of the network with the given atom types (N,)."""
        N = pos.shape[0]
        x = pos.new_zeros(N, self.irreps.dim)
        x[:, : self.channels] = self.type_embedding(types).to(pos.dtype)
        if self.node_input is not None:
            x = x + self.node_input(batch.node_features.to(pos.dtype))
        src, dst = batch.edge_src, batch.edge_dst
        vec = edge_vectors(pos, src, dst, batch.shift, cell, batch.batch)
        r = torch.linalg.vector_norm(vec, dim=1)
        frame = edge_frame(vec, self.irreps.lmax, self.blocks[0].mmax)
        temb = self.edge_type_embedding(types).to(pos.dtype)
        edge_feat = torch.cat([self.radial_features(r), temb.index_select(0, src), temb.index_select(0, dst)], dim=1)
        env = self.envelope(r)
        first = self.blocks[0]
        xg = first.to_grouped(x)
        for block in self.blocks:
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

    def set_atom_energies(self, per_type: Tensor) -> None:
        """Set the per-type energy offsets so that an atom of type ``t`` adds ``per_type[t]`` on top of
        ``energy_scale * network output`` (``energy_shift`` is accounted for). ``per_type``: (num_atom_types,)."""
        if self.atom_energy is None:
            raise ValueError("set_atom_energies needs a model with the 'energy' output")
        per_type = torch.as_tensor(per_type)
        if per_type.shape != (self.atom_energy.num_embeddings,):
            raise ValueError(f"per_type must have shape ({self.atom_energy.num_embeddings},), got {tuple(per_type.shape)}")
        with torch.no_grad():
            self.atom_energy.weight[:, 0] = (per_type - self.energy_shift).to(self.atom_energy.weight)

    #: The compiled edge-frame rotation (:mod:`escn.native`): None (default) uses it whenever the kernels are
    #: available, True forces it, False uses PyTorch ops. Measured (lmax 6, mmax 2, 128 atoms, 2 threads): a
    #: force-training step 314-316 ms with it against 423-425 ms without, eval with forces 100-106 against
    #: 152-158 ms. (Before the kernels shared PyTorch's OpenMP threads, the force-training step was slower with
    #: them, 447-491 against 411-422 ms, and None chose PyTorch ops there.) Not part of the config: it changes
    #: no number.
    native_rotation: bool | None = None

    def _set_rotation_path(self) -> None:
        use = True if self.native_rotation is None else bool(self.native_rotation)
        rotations = self.__dict__.get("_rotations")
        if rotations is None:  # found once, not on every forward (the module tree is fixed after __init__)
            rotations = self.__dict__["_rotations"] = [m for m in self.modules() if isinstance(m, EdgeRotation)]
        for m in rotations:
            m.native = use

    def forward(self, batch: Batch, compute_forces: bool = True, compute_stress: bool = False) -> dict[str, Tensor]:
        self._check_batch(batch)
        if batch.edge_src is None:
            raise ValueError("ESCN: the batch has no edges; build the graph where the data is made, e.g. "
                             "batch.with_radius_graph(model.cutoff)")
        want_energy = "energy" in self.outputs
        compute_forces = bool(compute_forces) and want_energy
        compute_stress = bool(compute_stress) and want_energy
        self._set_rotation_path()
        if compute_stress and (batch.cell is None or not bool(batch.pbc.all())):
            raise ValueError("compute_stress needs periodic cells (batch.cell with pbc on all axes)")
        out: dict[str, Tensor] = {}
        with torch.enable_grad() if (compute_forces or compute_stress) else contextlib.nullcontext():
            pos, cell = batch.pos, batch.cell
            if compute_forces and not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            strain = None
            if compute_stress:
                strain = torch.zeros(batch.num_graphs, 3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True)
                sym = 0.5 * (strain + strain.transpose(1, 2))
                pos = pos + torch.einsum("ni,nij->nj", pos, sym.index_select(0, batch.batch))
                cell = cell + torch.bmm(cell, sym)
            x = self.node_features(batch, pos, cell)
            if want_energy:
                types = self._types(batch, x.shape[0], x.device)
                e_atom = self.energy_head(x[:, : self.channels])[:, 0] * self.energy_scale + self.energy_shift
                offsets = self.atom_energy.weight[:, 0].to(x.dtype)[self._active_type_group()].mean(dim=0)  # group-averaged
                e_atom = e_atom + offsets[types]
                energy = x.new_zeros(batch.num_graphs).index_add_(0, batch.batch, e_atom)
                out["energy"] = energy
                inputs = ([pos] if compute_forces else []) + ([strain] if compute_stress else [])
                if inputs:
                    grads = torch.autograd.grad(energy.sum(), inputs, create_graph=self.training)
                    if compute_forces:
                        out["forces"] = -grads[0]
                    if compute_stress:
                        vol = torch.linalg.det(batch.cell).abs()
                        out["stress"] = grads[-1] / vol[:, None, None]
            if self.vector_head is not None:
                out["node_vectors"] = self.vector_head(x)
            if self.graph_head is not None or self.class_head is not None:
                counts = torch.bincount(batch.batch, minlength=batch.num_graphs).clamp_min(1).to(x.dtype)
                mean = x.new_zeros(batch.num_graphs, x.shape[1]).index_add_(0, batch.batch, x) / counts[:, None]
                if self.graph_head is not None:
                    out["graph_outputs"] = self.graph_head(mean)
                if self.class_head is not None:
                    y = self.class_head(mean)
                    sc, ps = y[:, : self._n_class_scalars], y[:, self._n_class_scalars :]
                    logits = sc.index_select(1, self._class_s)
                    if ps.shape[1]:
                        logits = logits + ps.index_select(1, self._class_p) * self._class_sign.to(y.dtype)
                    out["class_logits"] = logits
        return out

    def extra_repr(self) -> str:
        c = self.config
        return f"lmax={c['lmax']}, mmax={c['mmax']}, channels={c['channels']}, layers={c['num_layers']}, activation={c['activation']}, irreps={self.irreps}"
