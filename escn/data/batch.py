"""Atomistic graph containers, PyG-style batching and a DataLoader helper.

A single structure is an :class:`AtomsGraph`; :func:`collate` concatenates a list of them
into one disconnected graph, a :class:`Batch`:

* per-node tensors (``pos``, ``atom_types``, ``node_features``, ``forces``,
  ``node_attrs[...]``) are concatenated along dim 0;
* ``batch`` (N,) gives the graph of each node and ``ptr`` (B + 1,) the node offsets,
  so graph ``b`` owns nodes ``ptr[b]:ptr[b + 1]``;
* edge indices are shifted by their graph's node offset (edges never cross graphs),
  edge shifts are concatenated;
* per-graph tensors (``cell``, ``pbc``, ``energy``, ``stress``, ``graph_attrs[...]``)
  are stacked along a new dim 0.

An optional field must be present in all graphs of a batch or in none of them.
Edge conventions are those of :func:`escn.data.graph.radius_graph`
(``edge_vec = pos[dst] - pos[src] + shift @ cell``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.utils._pytree as _pytree
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .graph import edge_vectors, radius_graph

__all__ = ["AtomsGraph", "Batch", "collate", "check_values", "GraphDataset", "make_dataloader"]

_NODE_FIELDS = ("atom_types", "node_features", "forces")
_GRAPH_FIELDS = ("cell", "energy", "stress")  # pbc is always set and stacked separately


def _expect_shape(name: str, t: Optional[Tensor], shape: tuple) -> None:
    """Raise ValueError unless ``t`` is None or has ``shape`` (``-1`` matches any size)."""
    if t is None:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    ok = t.dim() == len(shape) and all(s == -1 or s == d for s, d in zip(shape, t.shape))
    if not ok:
        want = "(" + ", ".join("*" if s == -1 else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")


def _to(t: Any, device: Optional[torch.device], dtype: Optional[torch.dtype]) -> Any:
    """Move a tensor (or a dict of tensors); only floating tensors change dtype."""
    if isinstance(t, dict):
        return {k: _to(v, device, dtype) for k, v in t.items()}
    if not isinstance(t, Tensor):
        return t
    return t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else None)


@dataclass
class AtomsGraph:
    """One structure (molecule, crystal, point cloud).

    Attributes:
        pos: (N, 3) positions.
        atom_types: (N,) long species / type indices, optional.
        node_features: (N, F) extra input features, optional.
        cell: (3, 3) lattice vectors as rows, optional.
        pbc: (3,) bool periodicity; defaults to all True with a cell, all False without.
        energy: () total energy target, optional (a 1-element tensor is accepted).
        forces: (N, 3) force targets, optional.
        stress: (3, 3) stress target, optional.
        edge_src, edge_dst: (E,) long edges (see :func:`radius_graph`), optional.
        shift: (E, 3) long lattice shifts of the edges (zeros if omitted with edges).
        node_attrs: extra per-node tensors, each with leading dim N.
        graph_attrs: extra per-graph tensors (any shape, stacked when batched).
    """

    pos: Tensor
    atom_types: Optional[Tensor] = None
    node_features: Optional[Tensor] = None
    cell: Optional[Tensor] = None
    pbc: Optional[Tensor] = None
    energy: Optional[Tensor] = None
    forces: Optional[Tensor] = None
    stress: Optional[Tensor] = None
    edge_src: Optional[Tensor] = None
    edge_dst: Optional[Tensor] = None
    shift: Optional[Tensor] = None
    node_attrs: Dict[str, Tensor] = field(default_factory=dict)
    graph_attrs: Dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _expect_shape("pos", self.pos, (-1, 3))
        n = self.pos.shape[0]
        _expect_shape("atom_types", self.atom_types, (n,))
        _expect_shape("node_features", self.node_features, (n, -1))
        _expect_shape("cell", self.cell, (3, 3))
        _expect_shape("forces", self.forces, (n, 3))
        _expect_shape("stress", self.stress, (3, 3))
        if self.energy is not None:
            if not isinstance(self.energy, Tensor) or self.energy.numel() != 1:
                raise ValueError("energy must be a tensor with a single element")
            self.energy = self.energy.reshape(())
        if self.pbc is None:
            self.pbc = torch.full((3,), self.cell is not None, dtype=torch.bool)
        else:
            self.pbc = torch.as_tensor(self.pbc, dtype=torch.bool)
            _expect_shape("pbc", self.pbc, (3,))
            if bool(self.pbc.any()) and self.cell is None:
                raise ValueError("pbc has a periodic axis but no cell was given")
        if (self.edge_src is None) != (self.edge_dst is None):
            raise ValueError("edge_src and edge_dst must be given together")
        if self.edge_src is not None:
            _expect_shape("edge_src", self.edge_src, (-1,))
            _expect_shape("edge_dst", self.edge_dst, (self.edge_src.shape[0],))
            if self.shift is None:
                self.shift = torch.zeros(self.edge_src.shape[0], 3, dtype=torch.long, device=self.edge_src.device)
            _expect_shape("shift", self.shift, (self.edge_src.shape[0], 3))
        elif self.shift is not None:
            raise ValueError("shift given without edge_src / edge_dst")
        for key, value in self.node_attrs.items():
            if not isinstance(value, Tensor) or value.dim() == 0 or value.shape[0] != n:
                raise ValueError(f"node_attrs[{key!r}] must be a tensor with leading dim {n}")

    @property
    def num_nodes(self) -> int:
        """Number of atoms N."""
        return self.pos.shape[0]

    @property
    def num_edges(self) -> int:
        """Number of edges E (0 when no edges are stored)."""
        return 0 if self.edge_src is None else self.edge_src.shape[0]

    def with_radius_graph(self, cutoff: float, **kwargs: Any) -> "AtomsGraph":
        """A copy with edges from :func:`radius_graph` (keyword arguments are passed on)."""
        cell = self.cell if bool(self.pbc.any()) else None
        g = radius_graph(self.pos, cutoff, cell=cell, pbc=self.pbc if cell is not None else None, **kwargs)
        return dataclasses.replace(self, edge_src=g.edge_src, edge_dst=g.edge_dst, shift=g.shift)

    def edge_vec(self) -> Tensor:
        """(E, 3) differentiable edge vectors ``pos[dst] - pos[src] + shift @ cell``."""
        if self.edge_src is None:
            raise ValueError("this graph has no edges; call with_radius_graph first")
        return edge_vectors(self.pos, self.edge_src, self.edge_dst, self.shift, self.cell)

    def to(self, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> "AtomsGraph":
        """Copy on ``device``; ``dtype`` applies to floating tensors only."""
        return dataclasses.replace(
            self, **{f.name: _to(getattr(self, f.name), device, dtype) for f in dataclasses.fields(self)}
        )

    @classmethod
    def from_ase(
        cls,
        atoms: Any,
        dtype: torch.dtype = torch.float64,
        energy: Optional[float] = None,
        forces: Optional[Any] = None,
        stress: Optional[Any] = None,
    ) -> "AtomsGraph":
        """Build from an ``ase.Atoms`` (ASE itself is not imported here).

        ``atom_types`` are the atomic numbers; the cell is kept only if some axis is
        periodic.  ``stress`` is a (3, 3) array (convert ASE's Voigt 6-vector first).
        """
        pbc = torch.as_tensor(atoms.get_pbc(), dtype=torch.bool)
        cell = torch.as_tensor(atoms.get_cell()[:], dtype=dtype) if bool(pbc.any()) else None
        return cls(
            pos=torch.as_tensor(atoms.get_positions(), dtype=dtype),
            atom_types=torch.as_tensor(atoms.get_atomic_numbers(), dtype=torch.long),
            cell=cell,
            pbc=pbc if cell is not None else None,
            energy=None if energy is None else torch.tensor(energy, dtype=dtype),
            forces=None if forces is None else torch.as_tensor(forces, dtype=dtype),
            stress=None if stress is None else torch.as_tensor(stress, dtype=dtype),
        )


@dataclass
class Batch:
    """Several :class:`AtomsGraph` merged into one disconnected graph (see :func:`collate`).

    Shapes use N nodes, E edges and B graphs in total.

    Attributes:
        pos: (N, 3) positions.
        batch: (N,) long graph index of each node.
        ptr: (B + 1,) long node offsets of the graphs.
        atom_types: (N,) long type indices, optional.
        node_features: (N, F), optional.
        forces: (N, 3), optional.
        cell: (B, 3, 3) lattice vectors as rows, optional.
        pbc: (B, 3) bool periodicity, always present.
        energy: (B,), optional.
        stress: (B, 3, 3), optional.
        edge_src, edge_dst: (E,) global node indices, optional.
        shift: (E, 3) lattice-vector counts of the edges, optional.
        node_attrs: per-node tensors, concatenated.
        graph_attrs: per-graph tensors, stacked.
    """

    pos: Tensor
    batch: Tensor
    ptr: Tensor
    pbc: Tensor
    atom_types: Optional[Tensor] = None
    node_features: Optional[Tensor] = None
    cell: Optional[Tensor] = None
    energy: Optional[Tensor] = None
    forces: Optional[Tensor] = None
    stress: Optional[Tensor] = None
    edge_src: Optional[Tensor] = None
    edge_dst: Optional[Tensor] = None
    shift: Optional[Tensor] = None
    node_attrs: Dict[str, Tensor] = field(default_factory=dict)
    graph_attrs: Dict[str, Tensor] = field(default_factory=dict)

    @property
    def num_graphs(self) -> int:
        """Number of graphs B."""
        return self.ptr.shape[0] - 1

    @property
    def num_nodes(self) -> int:
        """Total number of nodes N."""
        return self.pos.shape[0]

    def __len__(self) -> int:
        return self.num_graphs

    def with_radius_graph(self, cutoff: float, **kwargs: Any) -> "Batch":
        """A copy with edges of all graphs from one batched :func:`radius_graph` call."""
        cell = self.cell if self.cell is not None and bool(self.pbc.any()) else None
        g = radius_graph(
            self.pos, cutoff, cell=cell, pbc=self.pbc if cell is not None else None, batch=self.batch, **kwargs
        )
        return dataclasses.replace(self, edge_src=g.edge_src, edge_dst=g.edge_dst, shift=g.shift)

    def edge_vec(self) -> Tensor:
        """(E, 3) differentiable edge vectors, each using its own graph's cell."""
        if self.edge_src is None:
            raise ValueError("this batch has no edges; call with_radius_graph first")
        return edge_vectors(self.pos, self.edge_src, self.edge_dst, self.shift, self.cell, self.batch)

    def to(self, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> "Batch":
        """Copy on ``device``; ``dtype`` applies to floating tensors only."""
        return dataclasses.replace(
            self, **{f.name: _to(getattr(self, f.name), device, dtype) for f in dataclasses.fields(self)}
        )


# A Batch is a pytree (its tensor fields are the leaves; fields that are None are part of the structure), so
# torch.export, make_fx and torch.utils._pytree take it as an input and AOTInductor packages name it.
_pytree.register_dataclass(Batch, serialized_type_name="escn.data.Batch")


def check_values(batch: "Batch", num_atom_types: Optional[int] = None, hint: str = "") -> None:
    """Check the values of a batch where it is made (:func:`collate` calls it; so does
    :meth:`escn.models.ESCN.check_batch` with the model's ``num_atom_types``). These checks read tensor values,
    i.e. synchronise with the device, which is why models do not repeat them in ``forward``.

    Raises ValueError naming the field: ``pos`` with NaN or infinite values (first atom given), ``atom_types``
    outside ``[0, num_atom_types)`` (``num_atom_types`` None: negative types only; ``hint`` is appended), a
    periodic graph whose ``cell`` has (near) zero volume.
    """
    pos = batch.pos
    finite = torch.isfinite(pos).all(dim=1)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0, 0])
        raise ValueError(f"batch.pos has NaN or infinite values (first at atom {bad})")
    t = batch.atom_types
    if t is not None and t.numel():
        upper = num_atom_types if num_atom_types is not None else None
        outside = (t < 0) if upper is None else (t < 0) | (t >= upper)
        if bool(outside.any()):
            bad = sorted({int(v) for v in t[outside].tolist()})
            known = "types must be >= 0" if upper is None else f"this model knows types 0..{upper - 1}"
            raise ValueError(f"unknown atom types {bad[:10]} in batch.atom_types: {known}{hint}")
    if batch.cell is not None:
        periodic = batch.pbc.any(dim=-1)
        if bool(periodic.any()):
            cell = batch.cell[periodic].detach().to(torch.float64)
            vol = torch.linalg.det(cell).abs()
            scale = cell.norm(dim=-1).prod(dim=-1)
            if bool((vol <= 1e-8 * scale).any()):
                raise ValueError("batch.cell has a periodic cell with (near) zero volume")


def _same_presence(graphs: Sequence[AtomsGraph], name: str) -> bool:
    """True if every graph has field ``name``, False if none has; ValueError if mixed."""
    present = [getattr(g, name) is not None for g in graphs]
    if any(present) and not all(present):
        missing = present.index(False)
        raise ValueError(f"collate: field {name!r} is set in some graphs but not in graph {missing}")
    return present[0]


def _same_keys(graphs: Sequence[AtomsGraph], attr: str) -> List[str]:
    """Keys of the dict ``attr`` shared by all graphs; ValueError if they differ."""
    keys = list(getattr(graphs[0], attr))
    for i, g in enumerate(graphs):
        if set(getattr(g, attr)) != set(keys):
            raise ValueError(f"collate: {attr} keys of graph {i} {sorted(getattr(g, attr))} differ from {sorted(keys)}")
    return keys


def collate(graphs: Sequence[AtomsGraph]) -> Batch:
    """Merge graphs into a :class:`Batch` (node offsets applied to edge indices).

    Args:
        graphs: non-empty sequence of :class:`AtomsGraph`.

    Returns:
        A :class:`Batch` with concatenated node tensors, stacked per-graph tensors,
        ``batch`` (N,) and ``ptr`` (B + 1,).

    Raises ValueError for values no model can take (:func:`check_values`): non-finite positions, negative
    atom types, a periodic cell of (near) zero volume.
    """
    if len(graphs) == 0:
        raise ValueError("collate needs at least one graph")
    for i, g in enumerate(graphs):
        if not isinstance(g, AtomsGraph):
            raise TypeError(f"collate expects AtomsGraph items, got {type(g).__name__} at index {i}")
    device = graphs[0].pos.device
    sizes = torch.tensor([g.num_nodes for g in graphs], dtype=torch.long, device=device)
    ptr = torch.zeros(len(graphs) + 1, dtype=torch.long, device=device)
    ptr[1:] = torch.cumsum(sizes, 0)
    out: Dict[str, Any] = {
        "pos": torch.cat([g.pos for g in graphs]),
        "batch": torch.repeat_interleave(torch.arange(len(graphs), device=device), sizes),
        "ptr": ptr,
        "pbc": torch.stack([g.pbc for g in graphs]),
    }
    for name in _NODE_FIELDS:
        if _same_presence(graphs, name):
            out[name] = torch.cat([getattr(g, name) for g in graphs])
    for name in _GRAPH_FIELDS:
        if _same_presence(graphs, name):
            out[name] = torch.stack([getattr(g, name) for g in graphs])
    if _same_presence(graphs, "edge_src"):
        offsets = [int(p) for p in ptr[:-1]]
        out["edge_src"] = torch.cat([g.edge_src + o for g, o in zip(graphs, offsets)])
        out["edge_dst"] = torch.cat([g.edge_dst + o for g, o in zip(graphs, offsets)])
        out["shift"] = torch.cat([g.shift for g in graphs])
    out["node_attrs"] = {k: torch.cat([g.node_attrs[k] for g in graphs]) for k in _same_keys(graphs, "node_attrs")}
    out["graph_attrs"] = {k: torch.stack([g.graph_attrs[k] for g in graphs]) for k in _same_keys(graphs, "graph_attrs")}
    batch = Batch(**out)
    check_values(batch)
    return batch


class GraphDataset(Dataset):
    """A list of :class:`AtomsGraph` with an optional per-item transform.

    Args:
        graphs: the structures.
        transform: applied to each item on access, e.g.
            ``lambda g: g.with_radius_graph(5.0)``.
    """

    def __init__(self, graphs: Sequence[AtomsGraph], transform: Optional[Callable[[AtomsGraph], AtomsGraph]] = None):
        self.graphs = list(graphs)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int) -> AtomsGraph:
        g = self.graphs[index]
        return self.transform(g) if self.transform is not None else g


def make_dataloader(
    dataset: Union[Dataset, Sequence[AtomsGraph]],
    batch_size: int = 1,
    shuffle: bool = False,
    seed: Optional[int] = None,
    **kwargs: Any,
) -> DataLoader:
    """A ``torch.utils.data.DataLoader`` yielding :class:`Batch` objects.

    Args:
        dataset: a Dataset of :class:`AtomsGraph` or a plain sequence of them.
        batch_size: graphs per batch.
        shuffle: reshuffle every epoch.
        seed: seeds the shuffling generator, so the order is reproducible.
        **kwargs: passed to DataLoader (e.g. ``num_workers``, ``drop_last``).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(dataset, Dataset):
        dataset = GraphDataset(dataset)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator, **kwargs
    )
