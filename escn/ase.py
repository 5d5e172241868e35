"""An ASE calculator backed by an escn energy model (``pip install "escn[ase]"``).

>>> from ase.build import bulk
>>> from escn.ase import Calculator
>>> atoms = bulk("Cu", "fcc", a=3.59, cubic=True).repeat(2)
>>> atoms.calc = Calculator("runs/emt/best.pt")          # or an nn.Module
>>> atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()

The model is any ``nn.Module`` with the protocol of :class:`escn.models.ESCN`:
``model(batch, compute_forces=True, compute_stress=False)`` on an :class:`escn.data.Batch` returns a dict
with ``"energy"`` (B,) in eV, ``"forces"`` (N, 3) in eV/Angstrom and, when asked, ``"stress"`` (B, 3, 3)
``= (1/V) dE/d(strain)`` in eV/Angstrom^3, building its own radius graph when the batch has no edges.

Chemical species: the model's ``atomic_numbers`` (stored in its config and checkpoint, see
:class:`escn.models.ESCN`) map ``Atoms.numbers`` to the model's type indices (type ``t`` = the element
``atomic_numbers[t]``) before every call, on the host.  An element the model was not trained on raises a
ValueError naming it and the elements the model knows.  A model without species (``atomic_numbers`` None or
absent, e.g. a custom module) needs them given: ``Calculator(model, atomic_numbers=[29])``.

Units and conventions are ASE's: energy in eV, forces in eV/Angstrom, stress in eV/Angstrom^3 as the
6-vector (xx, yy, zz, yz, xz, xy).  The stress sign is ASE's: ``stress = (1/V) dE/d(strain)`` for the
deformation ``cell -> cell (I + strain)`` (rows = lattice vectors) with the atoms moved along, so it is
positive for a stretched cell and the pressure is ``-trace(stress) / 3``.  This is exactly the model's
convention, so no sign flip is applied.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

try:
    from ase import Atoms
    from ase.calculators.calculator import Calculator as _AseCalculator
    from ase.calculators.calculator import PropertyNotImplementedError, all_changes
except ImportError as exc:  # pragma: no cover - exercised by a test that hides ase
    raise ImportError(
        'escn.ase needs the Atomic Simulation Environment (ase); install it with pip install "escn[ase]"'
    ) from exc

from escn.data.batch import AtomsGraph, collate
from escn.data.species import SpeciesMap, check_atomic_numbers

__all__ = ["Calculator"]

# (row, column) of ASE's Voigt order xx, yy, zz, yz, xz, xy
_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def _load_checkpoint(path: Union[str, os.PathLike], device: torch.device) -> nn.Module:
    """The model of a training checkpoint (imported here so that escn.ase does not need the trainer)."""
    try:
        from escn.models import load  # type: ignore[attr-defined]
    except ImportError:
        try:
            from escn.models.io import load
        except ImportError as exc:
            raise ImportError(
                "loading a checkpoint needs escn.models.load, which this escn installation does not provide"
            ) from exc
    return load(path, map_location=device)


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def _species(model: nn.Module, given: Optional[Sequence[int]]) -> Sequence[int]:
    """The atomic numbers of the model's types: ``given`` or the model's ``atomic_numbers`` (see Calculator)."""
    own = getattr(model, "atomic_numbers", None)
    if own is not None:
        own = check_atomic_numbers(own, f"{type(model).__name__}.atomic_numbers")
    if given is not None:
        given = check_atomic_numbers(given)
        if own is not None and list(given) != list(own):
            raise ValueError(
                f"atomic_numbers={list(given)} differs from the model's atomic_numbers={list(own)}; "
                "leave it out to use the model's"
            )
        return given
    if own is None:
        raise ValueError(
            f"the {type(model).__name__} model stores no chemical species (its atomic_numbers is None or missing), so "
            "atomic numbers cannot be mapped to its atom types; train it with species (the model config key "
            "atomic_numbers) or give them: Calculator(model, atomic_numbers=[...]) (type t = atomic_numbers[t])"
        )
    return own


class Calculator(_AseCalculator):
    """ASE calculator for escn energy models: energy, free_energy (the same), forces and stress.

    Args:
        model_or_checkpoint: an ``nn.Module`` following the protocol in the module docstring, the path
            of a training checkpoint (loaded with :func:`escn.models.load`, EMA weights when present), or the
            path of an AOTInductor package written by ``escn deploy`` (a ``.pt2`` file; it runs in its own
            dtype, whatever ``dtype`` says).
        device: where the model runs.  The module is moved there with ``nn.Module.to`` (in place).
        dtype: floating dtype of the positions and the model (moved in place); float64 by default, which
            makes forces consistent with the energy to round-off (good for NVE).  None keeps the model's.
        atomic_numbers: the model's species (type index ``t`` = atomic number ``atomic_numbers[t]``); default:
            the model's ``atomic_numbers`` attribute.  Needed for a model without one; for a model with one it
            must be equal (it cannot relabel a trained model).
        **kwargs: passed to ``ase.calculators.calculator.Calculator`` (e.g. ``label``, ``atoms``).

    Every call rebuilds the graph from the current positions, cell and pbc (no neighbour-list reuse).
    The model runs in eval mode; its previous train/eval mode is restored after each call.  Forces are
    always computed with the energy (one backward pass); the stress only when it is requested and all
    three axes are periodic -- for other systems ``get_stress`` raises ``PropertyNotImplementedError``.
    Atom types passed to the model are the positions of ``Atoms.numbers`` in ``atomic_numbers``
    (:attr:`species`); atoms of another element raise ValueError.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model_or_checkpoint: Union[nn.Module, str, os.PathLike],
        device: Union[str, torch.device] = "cpu",
        dtype: Optional[torch.dtype] = torch.float64,
        atomic_numbers: Optional[Sequence[int]] = None,
        **kwargs: Any,
    ) -> None:
        try:
            self.device = torch.device(device)
        except (TypeError, RuntimeError) as exc:
            raise ValueError(f"device must name a torch device, got {device!r}") from exc
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype or None, got {dtype!r}")
        if isinstance(model_or_checkpoint, nn.Module):
            model = model_or_checkpoint
        elif isinstance(model_or_checkpoint, (str, os.PathLike)) and os.fspath(model_or_checkpoint).endswith(".pt2"):
            from escn.models.export import load_deployed

            model = load_deployed(model_or_checkpoint)
            dtype = model.dtype  # a package runs in the dtype it was compiled for
        elif isinstance(model_or_checkpoint, (str, os.PathLike)):
            model = _load_checkpoint(model_or_checkpoint, self.device)
        else:
            raise TypeError(
                "model_or_checkpoint must be an nn.Module or a checkpoint path, "
                f"got {type(model_or_checkpoint).__name__}"
            )
        #: atomic numbers -> the model's type indices
        self.species: SpeciesMap = SpeciesMap(_species(model, atomic_numbers))
        self.dtype: torch.dtype = dtype if dtype is not None else _model_dtype(model)
        self.model: nn.Module = model.to(device=self.device, dtype=self.dtype)
        super().__init__(**kwargs)

    def calculate(
        self,
        atoms: Optional[Atoms] = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        """Fill ``self.results`` for ``atoms`` (ASE calls this; use ``atoms.get_*`` instead)."""
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        want_stress = "stress" in properties
        if want_stress and not bool(np.all(atoms.pbc)):
            raise PropertyNotImplementedError(
                f"stress needs a cell that is periodic along all three axes, got pbc={atoms.pbc.tolist()}"
            )
        graph = AtomsGraph.from_ase(atoms, dtype=self.dtype)
        graph = dataclasses.replace(graph, atom_types=self.species(graph.atom_types, "atoms"))
        if graph.cell is None and getattr(self.model, "has_stress", None) is not None:
            # a deployed package takes a cell always; with pbc off it enters neither the graph nor the energy
            graph = dataclasses.replace(
                graph, cell=torch.eye(3, dtype=self.dtype), pbc=torch.zeros(3, dtype=torch.bool)
            )
        batch = collate([graph.with_radius_graph(self.model.cutoff)]).to(device=self.device)
        check = getattr(self.model, "check_batch", None)
        if check is not None:  # the model's value checks, here where the batch is made (forward reads no values)
            check(batch)
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model(batch, compute_forces=True, compute_stress=want_stress)
        finally:
            self.model.train(was_training)

        n = len(atoms)
        energy = out["energy"].detach()
        forces = out["forces"].detach()
        if energy.numel() != 1 or tuple(forces.shape) != (n, 3):
            raise ValueError(
                f"the model returned energy of shape {tuple(energy.shape)} and forces of shape "
                f"{tuple(forces.shape)}; expected (1,) and ({n}, 3)"
            )
        e = float(energy.reshape(()).item())
        self.results = {
            "energy": e,
            "free_energy": e,
            "forces": forces.to(device="cpu", dtype=torch.float64).numpy().copy(),
        }
        if want_stress:
            s = out["stress"].detach().to(device="cpu", dtype=torch.float64).reshape(3, 3).numpy()
            s = 0.5 * (s + s.T)
            self.results["stress"] = np.array([s[i, j] for i, j in _VOIGT])
