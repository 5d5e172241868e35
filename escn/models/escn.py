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
import inspect
import math
from typing import Any, Sequence

import torch
from torch import nn

from escn._util import check_int as _check_int
from escn.data.batch import Batch, check_values
from escn.data.species import check_atomic_numbers
from escn.models.backbone import ACTIVATIONS, RADIAL_BASES, EdgeFrameBlock, ESCNBackbone, node_irreps
from escn.models.heads import EnergyHead, GraphHead
from escn.native._runtime import ReplacedAttribute, check_executor
from escn.nn.checks import check_float_input, module_tensor
from escn.nn.constants import ConstantModule
from escn.nn.edge_rotation import EdgeRotation
from escn.nn.linear import Linear
from escn.nn.so2_conv import SO2Conv
from escn.o3.irreps import Irreps

Tensor = torch.Tensor

__all__ = ["ESCN", "ESCNBackbone", "EdgeFrameBlock", "node_irreps"]

#: children of the model that moved into ``backbone`` (checkpoints of earlier versions name them at the top)
_BACKBONE_CHILDREN = ("type_embedding", "edge_type_embedding", "radial_basis", "envelope", "node_input", "blocks")
OUTPUTS = ("energy", "node_vectors", "graph_outputs")
#: constructor arguments that moved to task models, with the value that means "unused" and where they went
MOVED_ARGUMENTS = {
    "type_permutations": ([], "escn.datasets.nbody_model:NBodyESCN"),
    "type_average_in_training": (True, "escn.datasets.nbody_model:NBodyESCN"),
    "num_classes": (None, "escn.datasets.tetris_model:TetrisESCN"),
    "mirror_pairs": ([], "escn.datasets.tetris_model:TetrisESCN"),
}


def _backbone_keys(state_dict: dict, prefix: str, *args: Any) -> None:
    """Load a checkpoint written before the backbone was its own module: ``blocks.0.…`` -> ``backbone.blocks.0.…``
    (same tensors, same outputs). Renames in place."""
    for key in list(state_dict):
        rest = key[len(prefix) :] if key.startswith(prefix) else None
        if rest is None:
            continue
        head = rest.split(".", 1)[0]
        if head in _BACKBONE_CHILDREN:
            state_dict[prefix + "backbone." + rest] = state_dict.pop(key)
        elif head == "atom_energy":  # the offsets moved into the energy head
            state_dict[prefix + "energy_head." + rest] = state_dict.pop(key)
        elif rest.startswith("energy_head.weights."):  # the energy MLP is the head's mlp
            state_dict[prefix + "energy_head.mlp." + rest[len("energy_head.") :]] = state_dict.pop(key)
        elif rest.startswith("graph_head.") and not rest.startswith("graph_head.linear."):
            state_dict[prefix + "graph_head.linear." + rest[len("graph_head.") :]] = state_dict.pop(key)


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


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
        graph_output_irreps: irreps of ``"graph_outputs"``, e.g. ``"7x0e + 1x0o"`` (a ``0o`` output needs
            ``pseudo=True``).
        energy_scale, energy_shift: per-atom energy = scale * network output + shift + learned per-type offset.
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

    #: the outputs this class computes (task models add theirs)
    OUTPUTS: tuple[str, ...] = OUTPUTS

    @classmethod
    def upgrade_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A config of an earlier version of the model, for this one: arguments that moved to a task model are
        dropped when they hold their unused value; otherwise a ValueError names the task model to use."""
        out = dict(config)
        for name, (unused, where) in MOVED_ARGUMENTS.items():
            if name in out and name not in inspect.signature(cls).parameters:
                if out[name] not in (unused, () if unused == [] else unused):
                    raise ValueError(
                        f"model argument {name}={out[name]!r} moved to the task model {where!r}: build that "
                        f"model (model name {where!r}) instead of {cls.__name__}"
                    )
                del out[name]
        return out

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
        energy_scale: float = 1.0,
        energy_shift: float = 0.0,
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
            raise ValueError(
                f"num_atom_types={num_atom_types} disagrees with atomic_numbers={species} ({len(species)} "
                "species): leave num_atom_types out, it defaults to len(atomic_numbers)"
            )
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
            raise ValueError(
                "activation='s2' works on natural-parity features only; use activation='gate' with pseudo=True"
            )
        allowed = type(self).OUTPUTS
        if isinstance(outputs, str) or not all(o in allowed for o in outputs) or len(outputs) == 0:
            raise ValueError(f"outputs must be a non-empty list drawn from {allowed}, got {outputs!r}")
        if ("graph_outputs" in outputs) != (graph_output_irreps is not None):
            raise ValueError("graph_output_irreps must be given exactly when outputs contains 'graph_outputs'")
        if not isinstance(energy_scale, (int, float)) or not isinstance(energy_shift, (int, float)):
            raise TypeError("energy_scale and energy_shift must be numbers")
        check_executor(executor)
        self.config: dict[str, Any] = dict(
            num_atom_types=num_atom_types,
            lmax=lmax,
            mmax=mmax,
            channels=channels,
            num_layers=num_layers,
            cutoff=float(cutoff),
            num_radial=num_radial,
            radial_basis=radial_basis,
            radial_hidden=radial_hidden,
            inverse_distance_powers=inverse_distance_powers,
            inverse_distance_scale=float(inverse_distance_scale),
            type_embedding_dim=type_embedding_dim,
            activation=activation,
            s2_resolution=None
            if s2_resolution is None
            else (s2_resolution if isinstance(s2_resolution, int) else list(s2_resolution)),
            avg_num_neighbors=float(avg_num_neighbors),
            pseudo=bool(pseudo),
            node_input_irreps=node_input_irreps,
            outputs=list(outputs),
            graph_output_irreps=graph_output_irreps,
            energy_scale=float(energy_scale),
            energy_shift=float(energy_shift),
            atomic_numbers=species,
        )
        #: the chemical species (type index -> atomic number), or None for plain type labels
        self.atomic_numbers: tuple[int, ...] | None = None if species is None else tuple(species)
        self.num_atom_types = num_atom_types
        self.cutoff = float(cutoff)
        self.outputs = tuple(outputs)
        self.irreps = node_irreps(channels, lmax, pseudo)
        self.channels = channels
        self.backbone = ESCNBackbone(
            num_atom_types,
            lmax,
            mmax,
            channels,
            num_layers,
            cutoff,
            num_radial,
            radial_basis,
            radial_hidden,
            inverse_distance_powers,
            inverse_distance_scale,
            type_embedding_dim,
            activation,
            s2_resolution,
            avg_num_neighbors,
            pseudo,
            node_input_irreps,
            scalar_output=tuple(outputs) == ("energy",),
        )
        self.node_input_irreps = self.backbone.node_input_irreps
        self.set_executor(executor)
        self.energy_head = (
            EnergyHead(channels, radial_hidden, num_atom_types, energy_scale, energy_shift)
            if "energy" in outputs
            else None
        )
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
            self.graph_head = GraphHead(self.irreps, gout)

    # ------------------------------------------------------------------ input checks
    def check_batch(self, batch: Batch) -> None:
        """Check the values of ``batch`` for this model, where the batch is made (the data pipeline and
        :class:`escn.ase.Calculator` call it): :func:`escn.data.check_values` with the model's
        ``num_atom_types``, so atom types outside ``0..num_atom_types - 1`` are a ValueError naming them (and,
        for a force field with species, how to map atomic numbers). It reads tensor values (a host
        synchronisation on an accelerator); ``forward`` checks only metadata (types, dtypes, devices, shapes)."""
        self._check_batch(batch)
        hint = (
            ""
            if self.atomic_numbers is None
            else f" (type indices into atomic_numbers={list(self.atomic_numbers)}; map atomic numbers with "
            "escn.data.species.SpeciesMap where the batch is made)"
        )
        check_values(batch, self.num_atom_types, hint)

    def _check_batch(self, batch: Batch, compute_stress: bool = False) -> None:
        """Metadata checks of ``forward`` (no tensor values are read, so no host synchronisation and no graph
        break under ``torch.compile``)."""
        if not isinstance(batch, Batch):
            raise TypeError(f"ESCN expects an escn.data.Batch (see escn.data.collate), got {type(batch).__name__}")
        check_float_input("ESCN", "batch.pos", batch.pos, module_tensor(self))
        if self.node_input_irreps is not None:
            f = batch.node_features
            if f is None or f.shape != (batch.num_nodes, self.node_input_irreps.dim):
                got = None if f is None else tuple(f.shape)
                raise ValueError(
                    f"batch.node_features must have shape ({batch.num_nodes}, {self.node_input_irreps.dim}) for "
                    f"node_input_irreps={self.node_input_irreps}, got {got}"
                )
        if batch.edge_src is None:
            raise ValueError(
                "ESCN: the batch has no edges; build the graph where the data is made, e.g. "
                "batch.with_radius_graph(model.cutoff)"
            )
        if compute_stress and batch.cell is None:
            raise ValueError(
                "compute_stress needs periodic cells (batch.cell with pbc on all axes); the batch has no cell"
            )

    # ------------------------------------------------------------------ forward
    def _types(self, batch: Batch, n: int, device: torch.device) -> Tensor:
        return batch.atom_types if batch.atom_types is not None else torch.zeros(n, dtype=torch.long, device=device)

    def node_features(self, batch: Batch, pos: Tensor, cell: Tensor | None) -> Tensor:
        """Final node features (N, irreps.dim) for the given (possibly strained) positions and cells."""
        return self.backbone(batch, pos, cell, self._types(batch, pos.shape[0], pos.device))

    def atom_energy_offsets(self) -> Tensor:
        """The learned per-type energy offsets, (num_atom_types,)."""
        return self._energy_head().atom_energy.weight[:, 0]

    def _energy_head(self) -> EnergyHead:
        if self.energy_head is None:
            raise ValueError("this model has no 'energy' output (outputs={})".format(list(self.outputs)))
        return self.energy_head

    def pooled(self, batch: Batch, x: Tensor) -> Tensor:
        """Per-graph mean of node features: (N, d) -> (B, d)."""
        return GraphHead.pooled(batch, x)

    @property
    def atom_energy(self) -> nn.Embedding | None:
        """The learned per-type energy offsets (an (num_atom_types, 1) embedding), or None without energy."""
        return None if self.energy_head is None else self.energy_head.atom_energy

    def extra_outputs(self, batch: Batch, x: Tensor, out: dict[str, Tensor]) -> None:
        """Add a task's own outputs to ``out`` from the final node features ``x`` (N, irreps.dim); nothing here.
        Task models (e.g. :class:`escn.datasets.tetris.TetrisESCN`) override it."""

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
        if self.energy_head is None:
            raise ValueError("set_atom_energies needs a model with the 'energy' output")
        table = self.energy_head.atom_energy
        per_type = torch.as_tensor(per_type)
        if per_type.shape != (table.num_embeddings,):
            raise ValueError(f"per_type must have shape ({table.num_embeddings},), got {tuple(per_type.shape)}")
        with torch.no_grad():
            table.weight[:, 0] = (per_type - self.energy_head.shift).to(table.weight)

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
        want_energy = "energy" in self.outputs
        compute_forces = bool(compute_forces) and want_energy
        compute_stress = bool(compute_stress) and want_energy
        self._check_batch(batch, compute_stress)
        out: dict[str, Tensor] = {}
        with torch.enable_grad() if (compute_forces or compute_stress) else contextlib.nullcontext():
            pos, cell = batch.pos, batch.cell
            # differentiation variables made here (requires_grad_ on fresh tensors: torch.compile traces that,
            # not a factory call with requires_grad=True); outputs that depend on them are detached below unless
            # the derivatives are part of a training graph
            made_here = compute_stress or (compute_forces and not pos.requires_grad)
            if compute_forces and not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            strain: Tensor | None = None
            if compute_stress and cell is not None:
                strain = torch.zeros(batch.num_graphs, 3, 3, dtype=pos.dtype, device=pos.device).requires_grad_(True)
                sym = 0.5 * (strain + strain.transpose(1, 2))
                pos = pos + torch.einsum("ni,nij->nj", pos, sym.index_select(0, batch.batch))
                cell = cell + torch.bmm(cell, sym)
            x = self.node_features(batch, pos, cell)
            if want_energy:
                types = self._types(batch, x.shape[0], x.device)
                e_atom = self._energy_head()(x, types, self.atom_energy_offsets())
                energy = x.new_zeros(batch.num_graphs).index_add_(0, batch.batch, e_atom)
                out["energy"] = energy
                inputs = ([pos] if compute_forces else []) + ([strain] if strain is not None else [])
                if inputs:
                    grads = torch.autograd.grad(energy.sum(), inputs, create_graph=self.training)
                    if compute_forces:
                        out["forces"] = -grads[0]
                    if compute_stress:
                        vol = torch.linalg.det(batch.cell).abs()
                        out["stress"] = grads[-1] / vol[:, None, None]
            if self.vector_head is not None:
                out["node_vectors"] = self.vector_head(x)
            if self.graph_head is not None:
                out["graph_outputs"] = self.graph_head(batch, x)
            self.extra_outputs(batch, x, out)
        if made_here and not self.training:
            out = {k: v.detach() for k, v in out.items()}
        return out

    def extra_repr(self) -> str:
        c = self.config
        return f"lmax={c['lmax']}, mmax={c['mmax']}, channels={c['channels']}, layers={c['num_layers']}, activation={c['activation']}, irreps={self.irreps}"
