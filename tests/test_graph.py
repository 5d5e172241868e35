"""Tests of escn.data.graph.radius_graph against a brute-force reference and ASE."""

from __future__ import annotations

import itertools
import math
import sys
from typing import Optional, Sequence, Tuple

import numpy as np
import pytest
import torch

from escn.data.graph import Graph, edge_vectors, radius_graph, vesin_available

DTYPE = torch.float64
# both neighbour searches; vesin's only where the optional package is installed
SEARCHES = [
    "torch",
    pytest.param("vesin", marks=pytest.mark.skipif(not vesin_available(), reason="vesin not installed")),
]


# --------------------------------------------------------------------------- reference


def brute_force(
    pos: torch.Tensor,
    cutoff: float,
    cell: Optional[torch.Tensor] = None,
    pbc: Sequence[bool] = (False, False, False),
    self_interaction: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pairs times an explicit box of shifts, no loops over atoms.

    The shift range per periodic axis is chosen generously (from the cell heights, plus
    the largest wrap of an atom outside the cell, plus 1) so the reference does not
    depend on the reasoning used by the implementation.

    Returns src, dst, shift (E, 3) long and edge_vec (E, 3), sorted by (dst, src, shift).
    """
    n = pos.shape[0]
    if cell is None:
        shifts = torch.zeros(1, 3, dtype=torch.long)
        cell_m = torch.zeros(3, 3, dtype=pos.dtype)
    else:
        cell_m = cell
        frac = pos @ torch.linalg.inv(cell)
        heights = 1.0 / torch.linalg.inv(cell).norm(dim=0)
        ranges = []
        for k in range(3):
            if pbc[k]:
                m = math.ceil(cutoff / float(heights[k])) + int(frac[:, k].abs().max().ceil()) + 1
                ranges.append(range(-m, m + 1))
            else:
                ranges.append(range(0, 1))
        shifts = torch.tensor(list(itertools.product(*ranges)), dtype=torch.long)
    s = shifts.shape[0]
    src = torch.arange(n).view(n, 1, 1).expand(n, n, s)
    dst = torch.arange(n).view(1, n, 1).expand(n, n, s)
    shift = shifts.view(1, 1, s, 3).expand(n, n, s, 3)
    vec = pos[dst] - pos[src] + shift.to(pos.dtype) @ cell_m
    keep = (vec * vec).sum(-1) < cutoff**2
    if not self_interaction:
        keep &= (src != dst) | (shift != 0).any(-1)
    src, dst, shift, vec = src[keep], dst[keep], shift[keep], vec[keep]
    # lexicographic (dst, src, shift x, y, z); np.lexsort takes the primary key last
    order = torch.as_tensor(np.lexsort([shift[:, 2], shift[:, 1], shift[:, 0], src, dst]), dtype=torch.long)
    return src[order], dst[order], shift[order], vec[order]


def assert_same_graph(g: Graph, ref: Tuple[torch.Tensor, ...]) -> None:
    src, dst, shift, vec = ref
    assert g.edge_src.dtype == torch.long and g.edge_dst.dtype == torch.long and g.shift.dtype == torch.long
    assert g.edge_src.shape[0] == src.shape[0], (g.edge_src.shape, src.shape)
    assert torch.equal(g.edge_src, src)
    assert torch.equal(g.edge_dst, dst)
    assert torch.equal(g.shift, shift)
    torch.testing.assert_close(g.edge_vec, vec, rtol=0, atol=1e-12)


def random_cell(gen: torch.Generator, skew: float = 0.4, scale: float = 4.0) -> torch.Tensor:
    """A random triclinic cell with positive volume (rows = lattice vectors)."""
    while True:
        cell = scale * (torch.eye(3, dtype=DTYPE) + skew * (2 * torch.rand(3, 3, generator=gen, dtype=DTYPE) - 1))
        cell = cell * (0.6 + 0.8 * torch.rand(3, 1, generator=gen, dtype=DTYPE))
        if torch.linalg.det(cell) > 0.2 * cell.norm(dim=1).prod():
            return cell


# --------------------------------------------------------------------------- open


@pytest.mark.parametrize("backend", SEARCHES)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("self_interaction", [False, True])
def test_open_cloud_matches_brute_force(seed: int, self_interaction: bool, backend: str) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = [1, 30, 80, 150][seed]
    pos = 6.0 * torch.rand(n, 3, generator=gen, dtype=DTYPE) - 3.0
    cutoff = [1.0, 1.5, 2.5, 0.7][seed]
    g = radius_graph(pos, cutoff, self_interaction=self_interaction, backend=backend)
    assert_same_graph(g, brute_force(pos, cutoff, self_interaction=self_interaction))


def test_open_symmetry_and_convention() -> None:
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [5.0, 0.0, 0.0]], dtype=DTYPE)
    g = radius_graph(pos, 1.5)
    assert g.edge_src.tolist() == [1, 0] and g.edge_dst.tolist() == [0, 1]
    # edge_vec points from src to dst
    torch.testing.assert_close(g.edge_vec, torch.tensor([[-1.0, 0, 0], [1.0, 0, 0]], dtype=DTYPE))
    assert torch.equal(g.shift, torch.zeros(2, 3, dtype=torch.long))


def test_cutoff_is_strict() -> None:
    pos = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]], dtype=DTYPE)
    assert radius_graph(pos, 2.0).edge_src.numel() == 0
    assert radius_graph(pos, 2.0 + 1e-9).edge_src.numel() == 2


def test_empty_and_float32() -> None:
    g = radius_graph(torch.zeros(0, 3, dtype=DTYPE), 1.0)
    assert g.edge_src.shape == (0,) and g.edge_vec.shape == (0, 3) and g.shift.shape == (0, 3)
    gen = torch.Generator().manual_seed(0)
    pos = 4.0 * torch.rand(60, 3, generator=gen)
    g32 = radius_graph(pos, 1.2)
    ref = brute_force(pos.double(), 1.2)
    assert g32.edge_vec.dtype == torch.float32
    assert torch.equal(g32.edge_src, ref[0]) and torch.equal(g32.edge_dst, ref[1])


def test_max_num_neighbors_keeps_nearest() -> None:
    gen = torch.Generator().manual_seed(3)
    pos = 3.0 * torch.rand(60, 3, generator=gen, dtype=DTYPE)
    full = radius_graph(pos, 1.5)
    k = 3
    g = radius_graph(pos, 1.5, max_num_neighbors=k)
    assert int(torch.bincount(g.edge_dst, minlength=60).max()) <= k
    dist = full.edge_vec.norm(dim=1)
    for i in range(60):
        d_all = torch.sort(dist[full.edge_dst == i]).values[:k]
        d_g = torch.sort(g.edge_vec[g.edge_dst == i].norm(dim=1)).values
        torch.testing.assert_close(d_g, d_all)
    # still sorted by dst then src
    key = g.edge_dst * 60 + g.edge_src
    assert bool((key[1:] >= key[:-1]).all())


# --------------------------------------------------------------------------- periodic


PERIODIC_CASES = [
    # (seed, n atoms, cutoff, pbc, skew, cell scale)
    (0, 20, 2.0, (True, True, True), 0.2, 4.0),  # cutoff about half the cell
    (1, 12, 3.5, (True, True, True), 0.5, 3.0),  # skewed, cutoff > cell size
    (2, 15, 2.5, (True, False, True), 0.4, 3.5),  # mixed pbc
    (3, 8, 5.0, (True, True, True), 0.6, 2.0),  # cutoff much larger than the cell
    (4, 25, 1.8, (False, True, False), 0.3, 4.0),  # one periodic axis
    (5, 10, 2.0, (False, False, False), 0.3, 3.0),  # cell given, open boundaries
    (6, 1, 3.0, (True, True, True), 0.3, 2.0),  # a single atom sees only its own images
]


@pytest.mark.parametrize("backend", SEARCHES)
@pytest.mark.parametrize("case", PERIODIC_CASES, ids=[f"case{c[0]}" for c in PERIODIC_CASES])
def test_periodic_matches_brute_force(case: tuple, backend: str) -> None:
    seed, n, cutoff, pbc, skew, scale = case
    gen = torch.Generator().manual_seed(100 + seed)
    cell = random_cell(gen, skew=skew, scale=scale)
    # fractional coordinates in [-1, 2): many atoms outside the home cell
    frac = 3.0 * torch.rand(n, 3, generator=gen, dtype=DTYPE) - 1.0
    pos = frac @ cell
    g = radius_graph(pos, cutoff, cell=cell, pbc=pbc, backend=backend)
    assert_same_graph(g, brute_force(pos, cutoff, cell, pbc))
    torch.testing.assert_close(g.edge_vec, edge_vectors(pos, g.edge_src, g.edge_dst, g.shift, cell))


def test_periodic_self_interaction_and_own_images() -> None:
    cell = torch.diag(torch.tensor([2.0, 3.0, 10.0], dtype=DTYPE))
    pos = torch.tensor([[0.5, 0.5, 0.5]], dtype=DTYPE)
    g = radius_graph(pos, 3.5, cell=cell, pbc=(True, True, False))
    assert sorted(map(tuple, g.shift.tolist())) == [(-1, 0, 0), (0, -1, 0), (0, 1, 0), (1, 0, 0)]
    assert torch.equal(g.edge_src, torch.zeros(4, dtype=torch.long)) and torch.equal(g.edge_dst, g.edge_src)
    gs = radius_graph(pos, 3.5, cell=cell, pbc=(True, True, False), self_interaction=True)
    assert gs.edge_src.numel() == 5 and (gs.shift == 0).all(dim=1).sum() == 1


def test_very_skewed_cell() -> None:
    gen = torch.Generator().manual_seed(7)
    # the third vector nearly in the plane of the first two: small height, long vectors
    cell = torch.tensor([[3.0, 0.0, 0.0], [2.9, 1.0, 0.0], [2.5, 0.8, 0.9]], dtype=DTYPE)
    pos = torch.rand(10, 3, generator=gen, dtype=DTYPE) @ cell
    assert_same_graph(radius_graph(pos, 2.2, cell=cell), brute_force(pos, 2.2, cell, (True,) * 3))


@pytest.mark.parametrize("seed", range(3))
def test_matches_ase_neighbor_list(seed: int) -> None:
    ase = pytest.importorskip("ase")
    from ase.neighborlist import neighbor_list

    gen = torch.Generator().manual_seed(200 + seed)
    cell = random_cell(gen, skew=0.4, scale=4.0)
    n = 20
    pos = (1.4 * torch.rand(n, 3, generator=gen, dtype=DTYPE) - 0.2) @ cell
    pbc = [(True, True, True), (True, False, True), (True, True, True)][seed]
    cutoff = [2.5, 3.0, 5.0][seed]
    atoms = ase.Atoms("H" * n, positions=pos.numpy(), cell=cell.numpy(), pbc=pbc)
    i, j, d, s = neighbor_list("ijDS", atoms, cutoff)
    # ASE: D = pos[j] - pos[i] + S @ cell, i.e. i = src, j = dst, S = shift
    ase_edges = sorted(zip(j.tolist(), i.tolist(), map(tuple, s.tolist())))
    g = radius_graph(pos, cutoff, cell=cell, pbc=pbc)
    ours = list(zip(g.edge_dst.tolist(), g.edge_src.tolist(), map(tuple, g.shift.tolist())))
    assert ours == ase_edges
    order = sorted(range(len(i)), key=lambda e: (int(j[e]), int(i[e]), *map(int, s[e])))
    torch.testing.assert_close(g.edge_vec, torch.as_tensor(d[order]), rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- gradients


def test_edge_vec_gradient_pos_and_cell() -> None:
    gen = torch.Generator().manual_seed(11)
    cell = random_cell(gen, scale=3.0).requires_grad_(True)
    pos = (torch.rand(6, 3, generator=gen, dtype=DTYPE) @ cell.detach()).requires_grad_(True)
    cutoff = 3.0

    g0 = radius_graph(pos, cutoff, cell=cell)
    weights = torch.randn(g0.edge_vec.shape[0], 3, generator=gen, dtype=DTYPE)

    def energy(p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # fixed topology: a smooth function of the edge vectors
        v = edge_vectors(p, g0.edge_src, g0.edge_dst, g0.shift, c)
        return (weights * v).sum() + (v * v).sum(dim=1).sin().sum()

    e = (weights * g0.edge_vec).sum() + (g0.edge_vec * g0.edge_vec).sum(dim=1).sin().sum()
    gp, gc = torch.autograd.grad(e, (pos, cell))
    assert torch.autograd.gradcheck(energy, (pos, cell))
    h = 1e-6
    for t, grad, idx in ((pos, gp, (2, 1)), (cell, gc, (1, 2))):
        p1, c1 = pos.detach().clone(), cell.detach().clone()
        p2, c2 = pos.detach().clone(), cell.detach().clone()
        if t is pos:
            p1[idx] += h
            p2[idx] -= h
        else:
            c1[idx] += h
            c2[idx] -= h
        fd = (energy(p1, c1) - energy(p2, c2)) / (2 * h)
        assert abs(float(fd) - float(grad[idx])) < 1e-6


# --------------------------------------------------------------------------- batches


def test_batch_equals_per_graph_calls() -> None:
    gen = torch.Generator().manual_seed(5)
    sizes = [7, 12, 1, 9]
    cells = torch.stack([random_cell(gen, scale=3.0) for _ in sizes])
    pos_list = [(1.6 * torch.rand(n, 3, generator=gen, dtype=DTYPE) - 0.3) @ c for n, c in zip(sizes, cells)]
    pos = torch.cat(pos_list)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    pbc = torch.tensor([[True, True, True], [True, False, True], [False, False, False], [True, True, True]])
    cutoff = 2.6

    def per_graph(periodic: bool) -> Tuple[torch.Tensor, ...]:
        parts = []
        offset = 0
        for b, p in enumerate(pos_list):
            g = radius_graph(p, cutoff, cell=cells[b], pbc=pbc[b]) if periodic else radius_graph(p, cutoff)
            parts.append((g.edge_src + offset, g.edge_dst + offset, g.shift, g.edge_vec))
            offset += p.shape[0]
        return tuple(torch.cat(x) for x in zip(*parts))

    for periodic in (False, True):
        if periodic:
            g = radius_graph(pos, cutoff, cell=cells, pbc=pbc, batch=batch)
        else:
            g = radius_graph(pos, cutoff, batch=batch)
        src, dst, shift, vec = per_graph(periodic)
        assert torch.equal(g.edge_src, src) and torch.equal(g.edge_dst, dst) and torch.equal(g.shift, shift)
        torch.testing.assert_close(g.edge_vec, vec, rtol=0, atol=1e-12)
        assert torch.equal(batch[g.edge_src], batch[g.edge_dst])


def test_batch_unsorted_and_single_cell() -> None:
    gen = torch.Generator().manual_seed(9)
    cell = random_cell(gen, scale=3.0)
    pos = torch.rand(20, 3, generator=gen, dtype=DTYPE) @ cell
    batch = torch.randint(0, 3, (20,), generator=gen)
    g = radius_graph(pos, 2.0, cell=cell, batch=batch)  # one cell shared by all graphs
    assert torch.equal(batch[g.edge_src], batch[g.edge_dst])
    for b in range(3):
        idx = (batch == b).nonzero().squeeze(1)
        ref = brute_force(pos[idx], 2.0, cell, (True,) * 3)
        sel = batch[g.edge_dst] == b
        assert torch.equal(idx[ref[0]], g.edge_src[sel]) and torch.equal(idx[ref[1]], g.edge_dst[sel])
        assert torch.equal(ref[2], g.shift[sel])


# --------------------------------------------------------------------------- errors


# --------------------------------------------------------------------------- backends


def _edges(g: Graph) -> list:
    return list(zip(g.edge_src.tolist(), g.edge_dst.tolist(), map(tuple, g.shift.tolist())))


@pytest.mark.skipif(not vesin_available(), reason="vesin not installed")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_vesin_and_torch_searches_give_the_same_edges(dtype: torch.dtype) -> None:
    """Same (src, dst, shift) lists, in the same order, and the same edge vectors: open clouds, periodic and
    mixed cells, cells smaller than the cutoff (each atom meets many images of every other one and of itself),
    atoms outside the cell, batches of graphs with their own cells, self-interaction and max_num_neighbors."""
    gen = torch.Generator().manual_seed(42)
    systems = []
    for n, cutoff in ((1, 1.0), (40, 1.3), (200, 0.9)):
        systems.append(dict(pos=6.0 * torch.rand(n, 3, generator=gen, dtype=DTYPE) - 3.0, cutoff=cutoff))
    for seed, n, cutoff, pbc, skew, scale in PERIODIC_CASES:
        cell = random_cell(torch.Generator().manual_seed(300 + seed), skew=skew, scale=scale)
        pos = (3.0 * torch.rand(n, 3, generator=gen, dtype=DTYPE) - 1.0) @ cell
        systems.append(dict(pos=pos, cutoff=cutoff, cell=cell, pbc=pbc))
    small = torch.diag(torch.tensor([1.1, 1.3, 0.9], dtype=DTYPE))  # cutoff 3.1 = 2.4 to 3.4 cell lengths
    systems.append(dict(pos=torch.rand(3, 3, generator=gen, dtype=DTYPE) @ small, cutoff=3.1, cell=small))
    sizes = [7, 12, 1, 9]
    cells = torch.stack([random_cell(gen, scale=2.0) for _ in sizes])
    systems.append(
        dict(
            pos=torch.cat([torch.rand(n, 3, generator=gen, dtype=DTYPE) @ c for n, c in zip(sizes, cells)]),
            cutoff=2.6,
            cell=cells,
            batch=torch.repeat_interleave(torch.arange(4), torch.tensor(sizes)),
            pbc=torch.tensor([[True, True, True], [True, False, True], [False, False, False], [True, True, True]]),
        )
    )
    checked = 0
    for system in systems:
        system = {
            k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in system.items()
        }
        for extra in ({}, {"self_interaction": True}, {"max_num_neighbors": 4}):
            a = radius_graph(**system, **extra, backend="torch")
            b = radius_graph(**system, **extra, backend="vesin")
            assert _edges(a) == _edges(b)
            assert torch.equal(a.edge_vec, b.edge_vec)
            checked += len(_edges(a))
    assert checked > 20_000  # the small cells really produce many image edges


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import escn.data.graph as graph

    pos = torch.rand(10, 3, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    used = []
    real = graph._vesin_pairs
    monkeypatch.setattr(graph, "_vesin_pairs", lambda *a: used.append("vesin") or real(*a))
    reference = _edges(radius_graph(pos, 0.6, backend="torch"))
    assert used == []
    if vesin_available():
        assert _edges(radius_graph(pos, 0.6)) == reference and used == ["vesin"]  # auto: vesin when installed
    monkeypatch.setitem(sys.modules, "vesin", None)  # as if vesin were not installed
    assert not vesin_available()
    assert _edges(radius_graph(pos, 0.6)) == reference  # auto falls back to the torch search
    with pytest.raises(ValueError, match=r"backend='vesin' needs the vesin package, which is not installed"):
        radius_graph(pos, 0.6, backend="vesin")
    with pytest.raises(ValueError, match=r"backend must be one of 'auto', 'torch', 'vesin', got 'cuda'"):
        radius_graph(pos, 0.6, backend="cuda")


def test_bad_inputs() -> None:
    pos = torch.rand(5, 3, dtype=DTYPE)
    cell = torch.eye(3, dtype=DTYPE)
    with pytest.raises(ValueError, match="pos"):
        radius_graph(torch.rand(5, 2, dtype=DTYPE), 1.0)
    with pytest.raises(ValueError, match="pos"):
        radius_graph(torch.rand(5, dtype=DTYPE), 1.0)
    with pytest.raises(TypeError, match="pos"):
        radius_graph(pos.numpy(), 1.0)
    with pytest.raises(TypeError, match="pos"):
        radius_graph(torch.zeros(5, 3, dtype=torch.long), 1.0)
    for bad in (float("nan"), float("inf")):
        p = pos.clone()
        p[2, 1] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            radius_graph(p, 1.0)
    for cutoff in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="cutoff"):
            radius_graph(pos, cutoff)
    with pytest.raises(TypeError, match="cutoff"):
        radius_graph(pos, "1.0")
    with pytest.raises(ValueError, match="cell"):
        radius_graph(pos, 1.0, cell=torch.eye(2, dtype=DTYPE))
    with pytest.raises(ValueError, match="volume"):
        radius_graph(pos, 1.0, cell=torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0]], dtype=DTYPE))
    with pytest.raises(ValueError, match="volume"):
        radius_graph(pos, 1.0, cell=torch.diag(torch.tensor([1.0, 1.0, 1e-12], dtype=DTYPE)))
    with pytest.raises(ValueError, match="pbc"):
        radius_graph(pos, 1.0, cell=cell, pbc=(True, False))
    with pytest.raises(ValueError, match="pbc"):
        radius_graph(pos, 1.0, pbc=(True, True, True))  # periodic without a cell
    with pytest.raises(ValueError, match="batch"):
        radius_graph(pos, 1.0, batch=torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="batch"):
        radius_graph(pos, 1.0, batch=torch.zeros(5))
    with pytest.raises(ValueError, match="batch"):
        radius_graph(pos, 1.0, batch=torch.tensor([0, 0, -1, 1, 1]))
    with pytest.raises(ValueError, match="cell"):
        radius_graph(pos, 1.0, cell=torch.eye(3, dtype=DTYPE).expand(1, 3, 3), batch=torch.tensor([0, 0, 1, 1, 1]))
    with pytest.raises(TypeError, match="cell"):
        radius_graph(pos, 1.0, cell=torch.eye(3, dtype=torch.float32))
    with pytest.raises(ValueError, match="max_num_neighbors"):
        radius_graph(pos, 1.0, max_num_neighbors=0)


def test_atoms_at_one_position_are_refused() -> None:
    """Their edge would have zero length and no direction (no edge frame): refused where the graph is made, in
    every mode; the zero-length i -> i edges of self_interaction=True are what was asked for and stay."""
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.5, 0.0, 0.0]], dtype=DTYPE)
    for kwargs in ({}, {"self_interaction": True}, {"batch": torch.tensor([0, 0, 0])}):
        with pytest.raises(ValueError, match=r"atoms 1 and 2 are at the same position"):
            radius_graph(pos, 1.0, **kwargs)
    cell = torch.eye(3, dtype=DTYPE)
    with pytest.raises(ValueError, match=r"atoms 1 and 2 \(its periodic image \[1, 0, 0\]\) are at the same position"):
        radius_graph(torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [1.5, 0.5, 0.5]], dtype=DTYPE), 0.6, cell=cell)
    g = radius_graph(pos[:2], 1.0, self_interaction=True)
    assert int(((g.edge_vec * g.edge_vec).sum(1) == 0).sum()) == 2  # the two i -> i edges
    # atoms in different graphs of a batch never share an edge
    assert radius_graph(pos, 1.0, batch=torch.tensor([0, 0, 1])).edge_src.numel() == 2
