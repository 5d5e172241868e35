"""The eSCN energy model: :class:`escn.models.backbone.ESCNBackbone` -> heads -> energy (and forces, stress),
per-node vectors, pooled graph outputs or class logits.

One message block of the backbone (:class:`EdgeFrameBlock`), for every edge ``src -> dst`` with frame ``D``
(edge on +y):

    v   = D [x_src || x_dst]                    both endpoint features rotated into the edge frame, |m| <= mmax
    h   = SO2_1(v; gates = MLP(radial basis(|r|) || type emb(src) || type emb(dst)))
    h   = act(h)                                gate (exactly equivariant) or S2 grid (approximately)
    msg = D^T (envelope(|r|) SO2_2(h))          second SO(2) map, rotated back
    x_dst <- x_dst + sum_edges msg / sqrt(avg_num_neighbors)

The envelope multiplies the last (linear) map, so each message and all its derivatives up to second order go
smoothly to zero at the cutoff and the energy is continuous when atoms cross it.

Features are ``C x l`` for ``l = 0..lmax`` with natural parity ``(-1)^l`` (and, with ``pseudo=True``, another
``C x l`` of the opposite parity so that pseudo-scalar outputs are possible). The energy is a sum of per-atom
energies from the invariant channels; :class:`ESCN` owns the derivatives: forces are ``-dE/dpos`` by autograd
through the rotations (no detaching), stress ``(1/V) dE/d(strain)`` as in ASE.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Sequence

import torch
from torch import nn

from escn._util import check_int as _check_int
from escn.data.batch import Batch
from escn.data.species import check_atomic_numbers
from escn.models.backbone import ACTIVATIONS, RADIAL_BASES, ESCNBackbone, EdgeFrameBlock, node_irreps
from escn.native._runtime import ReplacedAttribute, check_executor
from escn.nn.checks import check_float_input, module_tensor
from escn.nn.constants import ConstantModule
from escn.nn.edge_rotation import EdgeRotation
from escn.nn.linear import Linear
from escn.nn.radial import RadialMLP
from escn.nn.so2_conv import SO2Conv
from escn.o3.irreps import Irreps

Tensor = torch.Tensor

__all__ = ["ESCN", "ESCNBackbone", "EdgeFrameBlock", "node_irreps"]

#: children of the model that moved into ``backbone`` (checkpoints of earlier versions name them at the top)
_BACKBONE_CHILDREN = ("type_embedding", "edge_type_embedding", "radial_basis", "envelope", "node_input", "blocks")
OUTPUTS = ("energy", "node_vectors", "graph_outputs", "class_logits")


def _backbone_keys(state_dict: dict, prefix: str, *args: Any) -> None:
    """Load a checkpoint written before the backbone was its own module: ``blocks.0.…`` -> ``backbone.blocks.0.…``
    (same tensors, same outputs). Renames in place."""
    for key in list(state_dict):
        rest = key[len(prefix):] if key.startswith(prefix) else None
        if rest is not None and rest.split(".", 1)[0] in _BACKBONE_CHILDREN:
            state_dict[prefix + "backbone." + rest] = state_dict.pop(key)


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
        executor: what runs the edge-frame rotations and SO(2) layers: ``"native"`` (default), the compiled
            kernels of :mod:`escn.native` on the CPU in float32/float64 (PyTorch ops elsewhere, and everywhere,
            after one warning naming the reason, if they cannot be built), or ``"torch"``, PyTorch ops only. Same
            function either way, up to rounding, so it is not part of ``config``; :meth:`set_executor` changes it.
            Measured (lmax 6, mmax 2, 128 atoms, 2 threads): a force-training step 314-316 ms with the kernels
            against 423-425 ms without, eval with forces 100-106 against 152-158 ms.

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
        executor: str = "native",
    ) -> None:
        super().__init__()
        self._register_load_state_dict_pre_hook(_backbone_keys)
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
        check_executor(executor)
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
        self.backbone = ESCNBackbone(
            num_atom_types, lmax, mmax, channels, num_layers, cutoff, num_radial, radial_basis, radial_hidden,
            inverse_distance_powers, inverse_distance_scale, type_embedding_dim, activation, s2_resolution,
            avg_num_neighbors, pseudo, node_input_irreps, scalar_output=tuple(outputs) == ("energy",),
        )
        self.node_input_irreps = self.backbone.node_input_irreps
        self.set_executor(executor)
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
                hint = ("" if self.atomic_numbers is None else
                        f" (type indices into atomic_numbers={list(self.atomic_numbers)}; map atomic numbers with "
                        "escn.data.species.SpeciesMap where the batch is made)")
                raise ValueError(f"unknown atom types {bad[:10]}: this model knows types 0..{self.num_atom_types - 1}{hint}")
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
            return self.backbone(batch, pos, cell, types)
        return sum(self.backbone(batch, pos, cell, g[types]) for g in group) / group.shape[0]

    @staticmethod
    def upgrade_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A copy of ``state`` with the key names of this version: state dicts written before the backbone was
        its own module name its children at the top level (``blocks.0.…`` for ``backbone.blocks.0.…``).
        ``load_state_dict`` does this itself; this is for comparing keys before loading."""
        out = dict(state)
        _backbone_keys(out, "")
        return out

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

    #: replaced by the ``executor`` argument
    native_rotation = ReplacedAttribute("pass executor='native' or 'torch' to ESCN, or call model.set_executor()")

    @property
    def executor(self) -> str:
        """``"native"`` or ``"torch"``: the executor :meth:`set_executor` (or the constructor) gave every layer."""
        return self._executor

    def set_executor(self, executor: str) -> "ESCN":
        """Run every edge-frame rotation and SO(2) layer of the model with ``executor`` (``"native"`` or
        ``"torch"``, as in the constructor) from now on; returns self. Nothing is changed during forward."""
        self._executor = check_executor(executor)
        for m in self.modules():
            if isinstance(m, (EdgeRotation, SO2Conv)):
                m.set_executor(executor)
            elif isinstance(m, EdgeFrameBlock):
                m.executor = executor
        return self

    def forward(self, batch: Batch, compute_forces: bool = True, compute_stress: bool = False) -> dict[str, Tensor]:
        self._check_batch(batch)
        if batch.edge_src is None:
            raise ValueError("ESCN: the batch has no edges; build the graph where the data is made, e.g. "
                             "batch.with_radius_graph(model.cutoff)")
        want_energy = "energy" in self.outputs
        compute_forces = bool(compute_forces) and want_energy
        compute_stress = bool(compute_stress) and want_energy
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
