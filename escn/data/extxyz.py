"""Structures with energies, forces and stresses from ASE-readable files (extended XYZ and the rest).

:func:`read_frames` turns every frame of a file into an :class:`~escn.data.AtomsGraph` (atomic numbers as
``atom_types``, float64).  Targets are looked up by name, so files whose reference values are stored under
other keys (``REF_energy``, ``dft_forces``, ...) are read without rewriting them:

* the energy: the calculator result ``energy_key`` (where ASE's extended-XYZ reader puts ``energy=``), else
  ``atoms.info[energy_key]``; with the default key also ``free_energy``;
* the forces: the calculator result ``forces_key``, else the per-atom array ``atoms.arrays[forces_key]``;
  shape ``(n_atoms, 3)``;
* the stress: the calculator result or ``atoms.info[stress_key]``, as a Voigt 6-vector, 9 numbers or a
  ``(3, 3)`` matrix.

Every frame is checked, and each problem is a ValueError naming the file and the frame index (counted from 0
in the frames read): a target present in some frames and missing in others, a target listed in ``require``
that a frame lacks, forces whose atom count differs from the positions', a stress of the wrong size, NaN or
infinite positions, energies, forces or stresses, and frames ASE cannot parse.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from escn.data.batch import AtomsGraph

__all__ = ["read_frames", "TARGETS"]

#: the targets :func:`read_frames` reads
TARGETS = ("energy", "forces", "stress")


def _results(atoms: Any) -> Dict[str, Any]:
    calc = getattr(atoms, "calc", None)
    return dict(getattr(calc, "results", None) or {}) if calc is not None else {}


def _lookup(atoms: Any, results: Dict[str, Any], target: str, key: str, default_key: bool) -> Optional[Any]:
    if key in results and results[key] is not None:
        return results[key]
    if target == "forces":
        return atoms.arrays.get(key)
    value = atoms.info.get(key)
    if value is None and target == "energy" and default_key:
        value = results.get("free_energy", atoms.info.get("free_energy"))
    return value


def _stress_3x3(value: Any, where: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 6:
        xx, yy, zz, yz, xz, xy = arr.reshape(6)
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if arr.size == 9:
        return arr.reshape(3, 3)
    raise ValueError(
        f"{where}: the stress has {arr.size} numbers (shape {arr.shape}); expected a Voigt 6-vector, "
        "9 numbers or a (3, 3) matrix"
    )


def _finite(arr: np.ndarray, what: str, where: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        first = np.argwhere(bad)[0].tolist()
        at = f" (first at index {first})" if arr.ndim else ""
        raise ValueError(f"{where}: the {what} contain{'s' if arr.ndim == 0 else ''} NaN or infinite values{at}")


def read_frames(
    path: str | os.PathLike,
    *,
    energy_key: str = "energy",
    forces_key: str = "forces",
    stress_key: str = "stress",
    index: str = ":",
    require: Sequence[str] = (),
    format: Optional[str] = None,
) -> List[AtomsGraph]:
    """Read every frame of an ASE-readable file (see the module docstring) as float64 :class:`AtomsGraph`.

    Args:
        path: the file (extended XYZ, or any format ``ase.io.read`` knows).
        energy_key, forces_key, stress_key: where the targets are stored (names in the calculator results,
            ``atoms.info`` or, for forces, ``atoms.arrays``).
        index: ASE index of the frames to read (``":"``: all).
        require: targets (of :data:`TARGETS`) every frame must have.
        format: ASE format name (default: from the file name and content).

    Returns:
        One graph per frame: ``pos`` (n, 3), ``atom_types`` (n,) atomic numbers, ``energy`` () or None,
        ``forces`` (n, 3) or None, ``stress`` (3, 3) or None, ``cell``/``pbc`` for periodic frames.

    Raises:
        ValueError: the problems listed in the module docstring, or a file without frames.
        TypeError: a key that is not a non-empty string.
        ImportError: ASE is not installed.
        FileNotFoundError: no such file.
    """
    keys = {"energy": energy_key, "forces": forces_key, "stress": stress_key}
    for name, key in (
        ("energy_key", energy_key),
        ("forces_key", forces_key),
        ("stress_key", stress_key),
        ("index", index),
    ):
        if not isinstance(key, str) or not key:
            raise TypeError(f"{name} must be a non-empty string, got {key!r}")
    unknown = [r for r in require if r not in TARGETS]
    if unknown:
        raise ValueError(f"require: expected targets among {', '.join(TARGETS)}, got {list(require)!r}")
    try:
        import ase.io
    except ImportError:
        raise ImportError(f"reading {str(path)!r} needs ASE: pip install 'escn[ase]'") from None
    name = str(path)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"data file {name!r} not found")

    graphs: List[AtomsGraph] = []
    seen: Dict[str, Tuple[int, bool]] = {}  # target -> (first frame, present there)
    frames = ase.io.iread(name, index=index, format=format)
    i = 0
    while True:
        where = f"{name}, frame {i}"
        try:
            atoms = next(frames)
        except StopIteration:
            break
        except Exception as exc:  # noqa: BLE001 - any parse error, reported with the frame
            raise ValueError(f"{where}: ASE cannot read it ({type(exc).__name__}: {exc})") from exc
        n = len(atoms)
        pos = np.asarray(atoms.get_positions(), dtype=np.float64)
        _finite(pos, "positions", where)
        results = _results(atoms)
        values: Dict[str, Any] = {}
        for target in TARGETS:
            key = keys[target]
            value = _lookup(atoms, results, target, key, key == target)
            present = value is not None
            first = seen.setdefault(target, (i, present))
            if target in require and not present:
                raise ValueError(
                    f"{where}: no {target} (looked for {key!r} in the calculator results and "
                    f"{'atoms.arrays' if target == 'forces' else 'atoms.info'}; "
                    f"{_found(atoms, results)})"
                )
            if present != first[1]:
                had, lacked = (first[0], i) if first[1] else (i, first[0])
                raise ValueError(
                    f"{name}: frame {lacked} has no {target} ({key!r}) but frame {had} has; every "
                    f"frame must have the same targets"
                )
            if not present:
                values[target] = None
                continue
            if target == "energy":
                try:
                    arr = np.asarray(value, dtype=np.float64)
                except (TypeError, ValueError):
                    raise ValueError(f"{where}: the energy {key!r} is not a number: {value!r}") from None
                if arr.size != 1:
                    raise ValueError(f"{where}: the energy {key!r} has {arr.size} values; expected one number")
                arr = arr.reshape(())
            elif target == "forces":
                arr = np.asarray(value, dtype=np.float64)
                if arr.shape != (n, 3):
                    raise ValueError(
                        f"{where}: the forces {key!r} have shape {tuple(arr.shape)} but the frame has "
                        f"{n} atoms; expected ({n}, 3)"
                    )
            else:
                arr = _stress_3x3(value, where)
            _finite(arr, f"{target} ({key!r})", where)
            values[target] = arr
        graphs.append(AtomsGraph.from_ase(atoms, dtype=torch.float64, **values))
        i += 1
    if not graphs:
        raise ValueError(f"{name}: no frames (index {index!r})")
    return graphs


def _found(atoms: Any, results: Dict[str, Any]) -> str:
    parts = [
        f"results: {', '.join(sorted(results)) or 'none'}",
        f"info: {', '.join(sorted(map(str, atoms.info))) or 'none'}",
        f"arrays: {', '.join(sorted(atoms.arrays))}",
    ]
    return "; ".join(parts)
