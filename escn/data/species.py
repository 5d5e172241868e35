"""Chemical species of force-field models: atomic numbers <-> type indices.

A force-field model stores the atomic numbers it was trained on as a list, ``atomic_numbers``; the type index
of an atom is the position of its atomic number in that list (``[1, 8]``: H -> 0, O -> 1).  Data keep atomic
numbers (``AtomsGraph.atom_types`` of :meth:`escn.data.AtomsGraph.from_ase`, :mod:`escn.datasets.emt`,
:func:`escn.train.toy.lj_clusters`); the conversion happens where batches are made (the training data
pipeline, :class:`escn.ase.Calculator`) with a :class:`SpeciesMap`, on the host, before the model runs.
"""

from __future__ import annotations

from numbers import Integral
from typing import Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["MAX_ATOMIC_NUMBER", "SpeciesMap", "check_atomic_numbers", "element_name", "species_of"]

# chemical symbols by atomic number; 0 is ASE's dummy element "X"
_SYMBOLS: Tuple[str, ...] = tuple(
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu "
    "Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg "
    "Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og".split()
)
MAX_ATOMIC_NUMBER = len(_SYMBOLS) - 1  # 118, oganesson
assert MAX_ATOMIC_NUMBER == 118


def element_name(z: int) -> str:
    """``"Cu (Z=29)"`` for 29; atomic numbers outside 0..118 give ``"Z=<z>"``."""
    return f"{_SYMBOLS[z]} (Z={z})" if 0 <= z <= MAX_ATOMIC_NUMBER else f"Z={z}"


def _names(zs: Iterable[int]) -> str:
    return ", ".join(element_name(z) for z in zs)


def check_atomic_numbers(value: object, name: str = "atomic_numbers") -> List[int]:
    """``value`` as a list of distinct atomic numbers in ``[0, 118]`` (order kept: the position is the type index).

    Raises:
        TypeError: not a sequence of ints (a string, a bool or a float entry).
        ValueError: empty, an entry outside ``[0, 118]``, or a repeated entry.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, Tensor)):
        raise TypeError(f"{name} must be a list of atomic numbers (ints), got {value!r}")
    if isinstance(value, Tensor):
        if value.dim() != 1 or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(
                f"{name} must be a 1-D integer tensor or a list of ints, got {value.dtype} of shape "
                f"{tuple(value.shape)}"
            )
        value = value.tolist()
    out: List[int] = []
    for z in value:
        if isinstance(z, bool) or not isinstance(z, Integral):
            raise TypeError(
                f"{name} must hold ints (atomic numbers), got {z!r} ({type(z).__name__}) in {list(value)!r}"
            )
        if not 0 <= z <= MAX_ATOMIC_NUMBER:
            raise ValueError(
                f"{name} must hold atomic numbers in [0, {MAX_ATOMIC_NUMBER}], got {int(z)} in {list(value)!r}"
            )
        out.append(int(z))
    if not out:
        raise ValueError(f"{name} must name at least one element, got an empty list")
    if len(set(out)) != len(out):
        twice = sorted({z for z in out if out.count(z) > 1})
        raise ValueError(f"{name} must not repeat an element, got {out} ({_names(twice)} more than once)")
    return out


def species_of(types: Iterable[Optional[Tensor]]) -> Optional[List[int]]:
    """Sorted distinct atomic numbers of a collection of ``atom_types`` tensors (None entries are skipped).

    Returns None when every entry is None (no atom carries an atomic number).

    Raises:
        ValueError: a value outside ``[0, 118]`` (then the data do not hold atomic numbers).
    """
    seen: set[int] = set()
    any_types = False
    for t in types:
        if t is None:
            continue
        any_types = True
        if t.numel():
            seen.update(int(z) for z in torch.unique(t.detach().reshape(-1).cpu()).tolist())
    if not any_types:
        return None
    bad = sorted(z for z in seen if not 0 <= z <= MAX_ATOMIC_NUMBER)
    if bad:
        raise ValueError(f"atom_types {bad[:10]} are not atomic numbers (expected values in [0, {MAX_ATOMIC_NUMBER}])")
    if not seen:
        raise ValueError("the data have atom_types but no atoms: cannot tell which elements they hold")
    return sorted(seen)


class SpeciesMap:
    """Atomic numbers -> type indices of a model trained on ``atomic_numbers`` (index = position in the list).

    Args:
        atomic_numbers: the model's species (see :func:`check_atomic_numbers`).

    ``species_map(numbers, where)``: ``numbers`` (N,) integer tensor of atomic numbers -> (N,) long type
    indices on the same device.  An element outside the list raises ValueError naming it (``where`` says
    which input held it) and listing the elements the model knows.  A CPU lookup table; for data on another
    device the table is copied there once.
    """

    def __init__(self, atomic_numbers: Sequence[int]) -> None:
        self.atomic_numbers: Tuple[int, ...] = tuple(check_atomic_numbers(atomic_numbers))
        table = torch.full((MAX_ATOMIC_NUMBER + 1,), -1, dtype=torch.long)
        table[list(self.atomic_numbers)] = torch.arange(len(self.atomic_numbers))
        self._tables = {torch.device("cpu"): table}

    def __len__(self) -> int:
        return len(self.atomic_numbers)

    def __repr__(self) -> str:
        return f"SpeciesMap({list(self.atomic_numbers)})"

    def unknown(self, numbers: Tensor) -> List[int]:
        """Sorted distinct atomic numbers in ``numbers`` that are not in the list."""
        known = set(self.atomic_numbers)
        return sorted(int(z) for z in torch.unique(numbers.detach().reshape(-1).cpu()).tolist() if int(z) not in known)

    def __call__(self, numbers: Tensor, where: str = "the input") -> Tensor:
        if (
            not isinstance(numbers, Tensor)
            or numbers.is_floating_point()
            or numbers.is_complex()
            or numbers.dtype == torch.bool
        ):
            got = numbers.dtype if isinstance(numbers, Tensor) else type(numbers).__name__
            raise TypeError(f"atomic numbers of {where} must be an integer tensor, got {got}")
        table = self._tables.get(numbers.device)
        if table is None:
            table = self._tables[numbers.device] = self._tables[torch.device("cpu")].to(numbers.device)
        z = numbers.long()
        inside = (z >= 0) & (z <= MAX_ATOMIC_NUMBER)
        types = table[z.clamp(0, MAX_ATOMIC_NUMBER)]
        if not bool((inside & (types >= 0)).all()):
            bad = self.unknown(numbers)
            raise ValueError(
                f"{where} contains {_names(bad)}, which this model was not trained on; it knows "
                f"{_names(self.atomic_numbers)} (model atomic_numbers = {list(self.atomic_numbers)})"
            )
        return types
