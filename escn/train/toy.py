"""A small synthetic data set for examples and smoke tests: Lennard-Jones clusters.

``data.train = { source = "escn.train.toy:lj_clusters", kwargs = { n = 64, seed = 0 } }``

The atoms are argon by default (``atom_types`` = atomic number 18), so a force field trained on them stores
``atomic_numbers = [18]`` and runs on ``ase.Atoms("Ar8", ...)``; lengths and energies are in reduced LJ units
(``sigma``, ``epsilon``), whatever the element.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from escn._util import check_int
from escn.data import AtomsGraph
from escn.data.species import check_atomic_numbers

__all__ = ["lj_clusters", "lj_energy", "ARGON"]

ARGON = 18  # atomic number of the default atoms


def lj_energy(pos: torch.Tensor, sigma: float = 1.0, epsilon: float = 1.0, cutoff: float = 2.5) -> torch.Tensor:
    """() energy of a cluster: sum over pairs of the shifted LJ potential, zero beyond ``cutoff``.

    Args:
        pos: (N, 3) positions.
    """
    i, j = torch.triu_indices(pos.shape[0], pos.shape[0], offset=1)
    r = (pos[i] - pos[j]).norm(dim=-1)

    def lj(x: torch.Tensor) -> torch.Tensor:
        s6 = (sigma / x) ** 6
        return 4 * epsilon * (s6 * s6 - s6)

    shift = lj(torch.tensor(cutoff, dtype=pos.dtype))
    return torch.where(r < cutoff, lj(r) - shift, torch.zeros_like(r)).sum()


def lj_clusters(
    n: int = 64,
    min_atoms: int = 3,
    max_atoms: int = 8,
    radius: float = 1.6,
    min_distance: float = 1.0,
    num_types: Optional[int] = None,
    seed: int = 0,
    sigma: float = 1.0,
    epsilon: float = 1.0,
    cutoff: float = 2.5,
    atomic_numbers: Optional[Sequence[int]] = None,
) -> List[AtomsGraph]:
    """``n`` random open clusters with LJ energies and forces (float64, no edges: give ``cutoff`` in the config).

    Atoms are drawn uniformly in a ball of ``radius`` (scaled by the cube root of the atom count) and
    rejected closer than ``min_distance``.  Each atom's element is drawn uniformly from ``atomic_numbers``
    (default ``[18]``, argon) and ``atom_types`` holds its atomic number; with ``num_types`` instead,
    ``atom_types`` are plain labels drawn from ``[0, num_types)``.  Neither changes the energy.

    Raises:
        ValueError: both ``num_types`` and ``atomic_numbers`` given, or a bad count / atomic number.
    """
    if num_types is not None and atomic_numbers is not None:
        raise ValueError(
            f"give num_types (plain labels) or atomic_numbers (elements), not both: got num_types="
            f"{num_types!r}, atomic_numbers={atomic_numbers!r}"
        )
    if num_types is not None:
        labels = torch.arange(check_int("num_types", num_types, 1))
    else:
        labels = torch.tensor(check_atomic_numbers([ARGON] if atomic_numbers is None else atomic_numbers))
    gen = torch.Generator().manual_seed(seed)
    graphs: List[AtomsGraph] = []
    for _ in range(n):
        count = int(torch.randint(min_atoms, max_atoms + 1, (), generator=gen))
        r_max = radius * (count / 4.0) ** (1.0 / 3.0)
        pts: List[torch.Tensor] = []
        while len(pts) < count:
            p = (torch.rand(3, generator=gen, dtype=torch.float64) * 2 - 1) * r_max
            if p.norm() <= r_max and all((p - q).norm() >= min_distance for q in pts):
                pts.append(p)
        pos = torch.stack(pts).requires_grad_(True)
        energy = lj_energy(pos, sigma, epsilon, cutoff)
        (grad,) = torch.autograd.grad(energy, pos)
        graphs.append(
            AtomsGraph(
                pos=pos.detach(),
                atom_types=labels[torch.randint(0, len(labels), (count,), generator=gen)],
                energy=energy.detach(),
                forces=-grad,
            )
        )
    return graphs
