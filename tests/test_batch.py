"""Tests of escn.data.batch: AtomsGraph, collate, GraphDataset and make_dataloader."""

from __future__ import annotations

from typing import List

import pytest
import torch

from escn.data.batch import AtomsGraph, Batch, GraphDataset, collate, make_dataloader
from escn.data.graph import radius_graph

DTYPE = torch.float64


def make_graphs(periodic: bool, cutoff: float = 2.0, seed: int = 0) -> List[AtomsGraph]:
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for i, n in enumerate([5, 1, 8, 3]):
        cell = torch.diag(torch.tensor([3.0, 3.5, 4.0], dtype=DTYPE)) if periodic else None
        pos = 3.0 * torch.rand(n, 3, generator=gen, dtype=DTYPE)
        g = AtomsGraph(
            pos=pos,
            atom_types=torch.randint(0, 4, (n,), generator=gen),
            cell=cell,
            energy=torch.tensor(float(i), dtype=DTYPE),
            forces=torch.randn(n, 3, generator=gen, dtype=DTYPE),
            node_attrs={"charge": torch.randn(n, generator=gen, dtype=DTYPE)},
            graph_attrs={"label": torch.tensor([i, -i])},
        )
        graphs.append(g.with_radius_graph(cutoff))
    return graphs


@pytest.mark.parametrize("periodic", [False, True])
def test_collate_offsets_and_stacking(periodic: bool) -> None:
    graphs = make_graphs(periodic)
    b = collate(graphs)
    assert isinstance(b, Batch) and b.num_graphs == 4 and len(b) == 4
    assert b.ptr.tolist() == [0, 5, 6, 14, 17]
    assert b.batch.tolist() == [0] * 5 + [1] + [2] * 8 + [3] * 3
    assert b.pos.shape == (17, 3) and b.forces.shape == (17, 3) and b.atom_types.shape == (17,)
    assert b.energy.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert b.graph_attrs["label"].shape == (4, 2) and b.node_attrs["charge"].shape == (17,)
    assert b.pbc.shape == (4, 3) and bool(b.pbc.all()) == periodic
    if periodic:
        assert b.cell.shape == (4, 3, 3)
    else:
        assert b.cell is None
    # edges: offsets applied, never crossing graphs, same per-graph content
    src_parts, dst_parts = [], []
    for g, off in zip(graphs, b.ptr[:-1].tolist()):
        src_parts.append(g.edge_src + off)
        dst_parts.append(g.edge_dst + off)
    assert torch.equal(b.edge_src, torch.cat(src_parts)) and torch.equal(b.edge_dst, torch.cat(dst_parts))
    assert torch.equal(b.batch[b.edge_src], b.batch[b.edge_dst])
    assert b.edge_src.numel() > 0
    torch.testing.assert_close(b.edge_vec(), torch.cat([g.edge_vec() for g in graphs]))


@pytest.mark.parametrize("periodic", [False, True])
def test_batch_radius_graph_equals_collated_edges(periodic: bool) -> None:
    graphs = make_graphs(periodic, cutoff=2.0, seed=1)
    b = collate(graphs)
    rebuilt = b.with_radius_graph(2.0)
    assert torch.equal(rebuilt.edge_src, b.edge_src) and torch.equal(rebuilt.edge_dst, b.edge_dst)
    assert torch.equal(rebuilt.shift, b.shift)


def test_edge_vec_matches_radius_graph_and_grad() -> None:
    g = make_graphs(True)[0]
    pos = g.pos.clone().requires_grad_(True)
    ref = radius_graph(pos, 2.0, cell=g.cell)
    g2 = AtomsGraph(pos=pos, cell=g.cell, edge_src=ref.edge_src, edge_dst=ref.edge_dst, shift=ref.shift)
    v = g2.edge_vec()
    torch.testing.assert_close(v, ref.edge_vec)
    (v * v).sum().backward()
    assert pos.grad is not None and torch.isfinite(pos.grad).all()


def test_collate_mixed_fields_raise() -> None:
    a = AtomsGraph(pos=torch.zeros(2, 3), energy=torch.tensor(1.0))
    b = AtomsGraph(pos=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="energy"):
        collate([a, b])
    c = AtomsGraph(pos=torch.zeros(3, 3), energy=torch.tensor(1.0), node_attrs={"q": torch.zeros(3)})
    with pytest.raises(ValueError, match="node_attrs"):
        collate([a, c])
    with pytest.raises(ValueError):
        collate([])
    with pytest.raises(TypeError):
        collate([a, "not a graph"])


def test_atoms_graph_validation() -> None:
    with pytest.raises(ValueError, match="pos"):
        AtomsGraph(pos=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="forces"):
        AtomsGraph(pos=torch.zeros(3, 3), forces=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="cell"):
        AtomsGraph(pos=torch.zeros(3, 3), cell=torch.eye(2))
    with pytest.raises(ValueError, match="pbc"):
        AtomsGraph(pos=torch.zeros(3, 3), pbc=(True, True))
    with pytest.raises(ValueError, match="cell"):
        AtomsGraph(pos=torch.zeros(3, 3), pbc=(True, False, False))
    with pytest.raises(ValueError, match="energy"):
        AtomsGraph(pos=torch.zeros(3, 3), energy=torch.zeros(2))
    with pytest.raises(ValueError, match="edge"):
        AtomsGraph(pos=torch.zeros(3, 3), edge_src=torch.zeros(2, dtype=torch.long))
    g = AtomsGraph(pos=torch.zeros(3, 3), cell=torch.eye(3), energy=torch.tensor([2.0]))
    assert g.pbc.tolist() == [True, True, True] and g.energy.shape == ()


def test_dataloader_seeded_shuffle() -> None:
    graphs = [AtomsGraph(pos=torch.full((i + 1, 3), float(i)), graph_attrs={"id": torch.tensor(i)}) for i in range(10)]

    def order(seed: int) -> List[int]:
        loader = make_dataloader(GraphDataset(graphs), batch_size=3, shuffle=True, seed=seed)
        ids = []
        for b in loader:
            assert isinstance(b, Batch)
            assert b.num_nodes == int(b.ptr[-1])
            ids += b.graph_attrs["id"].tolist()
        return ids

    assert order(0) == order(0)
    assert sorted(order(0)) == list(range(10))
    assert order(0) != order(1)
    batches = list(make_dataloader(graphs, batch_size=4))  # plain list, no shuffle
    assert [b.num_graphs for b in batches] == [4, 4, 2]
    assert batches[0].graph_attrs["id"].tolist() == [0, 1, 2, 3]


def test_dataset_transform_and_from_ase() -> None:
    ase = pytest.importorskip("ase")
    atoms = ase.Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], cell=[4, 4, 4], pbc=True)
    g = AtomsGraph.from_ase(atoms, energy=-1.5)
    assert g.atom_types.tolist() == [1, 1, 8] and g.cell.dtype == DTYPE and bool(g.pbc.all())
    ds = GraphDataset([g], transform=lambda x: x.with_radius_graph(1.2))
    assert ds[0].num_edges == 4  # O-H twice, both directions
    molecule = AtomsGraph.from_ase(ase.Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]]))
    assert molecule.cell is None and not bool(molecule.pbc.any())
