"""Per-type reference energies fitted to the training set (the usual "E0" or atomic-reference fit).

Total energies from electronic-structure codes carry a per-atom constant that depends on the species (the
isolated atom's energy, often far larger than the per-atom variations a potential has to learn). A network that
starts near zero has to learn that constant through its weights first; fitting it by least squares before
training removes it. (ASE's EMT energies are near zero for bulk metals, so there the fit changes little.)
"""

from __future__ import annotations

from typing import Sequence

import torch

from escn._util import check_int
from escn.data import AtomsGraph

__all__ = ["fit_atom_energies"]


def fit_atom_energies(items: Sequence[AtomsGraph], num_types: int) -> torch.Tensor:
    """Least-squares per-type energies ``e`` with ``E_graph ~ sum_t n_t(graph) e_t``.

    Args:
        items: graphs with ``energy`` set (items without an energy are skipped).
        num_types: number of atom types ``T``; types must lie in ``[0, T)`` (graphs without ``atom_types``
            count as all type 0).

    Returns:
        (T,) float64 tensor; the minimum-norm solution, so types that never occur get 0, and types that
        always occur in the same proportion share the fit evenly per atom.

    Raises:
        ValueError: no item has an energy, or an atom type is outside ``[0, num_types)``.
    """
    num_types = check_int("num_types", num_types, 1)
    rows, energies = [], []
    for g in items:
        if g.energy is None:
            continue
        n = g.pos.shape[0]
        types = g.atom_types if g.atom_types is not None else torch.zeros(n, dtype=torch.long)
        if types.numel() and (int(types.min()) < 0 or int(types.max()) >= num_types):
            raise ValueError(f"atom type outside [0, {num_types}) in the training data: {types.unique().tolist()}")
        rows.append(torch.bincount(types.reshape(-1).cpu(), minlength=num_types).to(torch.float64))
        energies.append(float(g.energy.reshape(-1)[0]))
    if not rows:
        raise ValueError("no training item has an energy to fit atom energies to")
    counts = torch.stack(rows)  # (G, T)
    target = torch.tensor(energies, dtype=torch.float64)
    # minimum-norm least squares via the pseudo-inverse (handles absent and co-occurring types)
    return torch.linalg.pinv(counts) @ target
