"""Milliseconds per MD step of a force field through :class:`escn.ase.Calculator`: one molecule, and a periodic
box of copies of it.

    python -m escn.bench.md CHECKPOINT MOLECULE.extxyz [--copies 32] [--steps 200] [--threads N]

Each system runs ``warmup`` velocity-Verlet steps (ASE's ``VelocityVerlet``, initial velocities at 300 K),
then ``steps`` timed ones; the time per step is the wall time of the timed steps divided by their number (one
energy + forces evaluation, graph construction included, and ASE's integrator).  The box holds ``copies``
randomly rotated copies of the molecule on a ``k x k x m`` grid of spacing ``spacing`` Angstrom, periodic, each
rotation redrawn until no atom is closer than ``min_distance`` to an atom of another copy (through the periodic
images too); its density is reported.  Needs ASE.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np
import torch

__all__ = ["MDTiming", "molecule_box", "time_md", "run", "main"]


@dataclass(frozen=True)
class MDTiming:
    """One timed system: its name, atoms, edges of the model's graph at the start, ms per step, steps timed,
    torch threads, and the density (g/cm^3, periodic boxes only)."""

    name: str
    atoms: int
    edges: int
    ms_per_step: float
    steps: int
    threads: int
    density_g_cm3: Optional[float] = None


def _grid(copies: int) -> tuple[int, int, int]:
    """The most cubic ``(a, b, c)`` with ``a * b * c == copies`` (a >= b >= c)."""
    best = (copies, 1, 1)
    for c in range(1, copies + 1):
        for b in range(c, copies + 1):
            if copies % (b * c) == 0:
                a = copies // (b * c)
                if a >= b and (a - c) < (best[0] - best[2]):
                    best = (a, b, c)
    return best


def molecule_box(
    molecule: Any, copies: int, spacing: float, seed: int = 0, min_distance: float = 2.0, max_tries: int = 200
) -> Any:
    """A periodic ``ase.Atoms`` of ``copies`` randomly rotated copies of ``molecule`` (see the module docstring).

    Raises:
        ValueError: ``copies`` < 1, ``spacing`` <= 0, or no rotation keeps ``min_distance`` within ``max_tries``.
    """
    from ase import Atoms
    from ase.geometry import get_distances

    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValueError(f"copies must be an int >= 1, got {copies!r}")
    if not (isinstance(spacing, (int, float)) and math.isfinite(spacing) and spacing > 0):
        raise ValueError(f"spacing must be a finite number > 0, got {spacing!r}")
    rng = np.random.default_rng(seed)
    a, b, c = _grid(copies)
    cell = np.diag([a * spacing, b * spacing, c * spacing])
    base = molecule.get_positions() - molecule.get_center_of_mass()
    placed: List[np.ndarray] = []
    numbers: List[np.ndarray] = []
    for ix in range(a):
        for iy in range(b):
            for iz in range(c):
                centre = (np.array([ix, iy, iz]) + 0.5) * spacing
                for _ in range(max_tries):
                    q = rng.standard_normal(4)
                    q /= np.linalg.norm(q)
                    w, x, y, z = q
                    rot = np.array(
                        [
                            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
                        ]
                    )
                    pos = base @ rot.T + centre
                    if not placed:
                        break
                    _, d = get_distances(pos, np.concatenate(placed), cell=cell, pbc=True)
                    if d.min() >= min_distance:
                        break
                else:
                    raise ValueError(
                        f"no rotation of copy {len(placed)} keeps {min_distance} A from the others at "
                        f"spacing {spacing} A; increase spacing"
                    )
                placed.append(pos)
                numbers.append(molecule.numbers)
    return Atoms(numbers=np.concatenate(numbers), positions=np.concatenate(placed), cell=cell, pbc=True)


def time_md(atoms: Any, calculator: Any, steps: int, warmup: int = 5, timestep_fs: float = 0.5, seed: int = 0) -> float:
    """Milliseconds per velocity-Verlet step of ``atoms`` with ``calculator`` (``atoms`` is advanced in place)."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    atoms.calc = calculator
    masses = atoms.get_masses()[:, None]
    momenta = np.random.default_rng(seed).standard_normal((len(atoms), 3)) * np.sqrt(masses * units.kB * 300.0)
    atoms.set_momenta(momenta - masses * (momenta.sum(axis=0) / masses.sum()))
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    if warmup:
        dyn.run(warmup)
    t0 = time.perf_counter()
    dyn.run(steps)
    return 1000.0 * (time.perf_counter() - t0) / steps


def _edges(atoms: Any, cutoff: float) -> int:
    from escn.data.batch import AtomsGraph

    return int(AtomsGraph.from_ase(atoms).with_radius_graph(cutoff).edge_src.numel())


def run(
    model: Any,
    molecule: Any,
    copies: int = 32,
    steps: int = 200,
    box_steps: Optional[int] = None,
    spacing: float = 8.0,
    threads: Optional[int] = None,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> List[MDTiming]:
    """Time one molecule and a box of ``copies`` (``box_steps`` steps, default ``max(10, steps // 10)``).

    Args:
        model: a checkpoint path or an energy model (see :class:`escn.ase.Calculator`).
        molecule: ``ase.Atoms`` of one molecule.
        threads: ``torch.set_num_threads`` for the runs (default: torch's current setting).
        dtype: the calculator's dtype.
    """
    from escn.ase import Calculator

    if threads is not None:
        torch.set_num_threads(threads)
    calc = Calculator(model, dtype=dtype)
    cutoff = float(calc.model.cutoff)
    out = []
    single = molecule.copy()
    single.pbc = False
    single.cell = None
    out.append(
        MDTiming(
            "1 molecule",
            len(single),
            _edges(single, cutoff),
            time_md(single, calc, steps, seed=seed),
            steps,
            torch.get_num_threads(),
        )
    )
    if copies > 1:
        box = molecule_box(molecule, copies, spacing, seed=seed)
        n_box = box_steps if box_steps is not None else max(10, steps // 10)
        density = float(box.get_masses().sum() * 1.66053906660 / box.get_volume())
        out.append(
            MDTiming(
                f"{copies} molecules, periodic",
                len(box),
                _edges(box, cutoff),
                time_md(box, Calculator(calc.model, dtype=dtype), n_box, seed=seed),
                n_box,
                torch.get_num_threads(),
                density,
            )
        )
    return out


def format_timings(rows: Sequence[MDTiming]) -> str:
    """A table of :func:`run`'s timings."""
    lines = [
        f"{'system':28s}{'atoms':>7s}{'edges':>8s}{'ms/step':>10s}{'us/atom':>9s}{'steps':>7s}{'threads':>8s}  density"
    ]
    for r in rows:
        dens = "-" if r.density_g_cm3 is None else f"{r.density_g_cm3:.2f} g/cm^3"
        lines.append(
            f"{r.name:28s}{r.atoms:7d}{r.edges:8d}{r.ms_per_step:10.2f}{1000 * r.ms_per_step / r.atoms:9.1f}"
            f"{r.steps:7d}{r.threads:8d}  {dens}"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m escn.bench.md``: print the timing table."""
    import ase.io

    p = argparse.ArgumentParser(prog="python -m escn.bench.md", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="training checkpoint (best.pt / checkpoint.pt)")
    p.add_argument("molecule", help="ASE-readable file whose first frame is the molecule")
    p.add_argument("--copies", type=int, default=32, help="molecules in the box (default 32; 1: no box)")
    p.add_argument("--steps", type=int, default=200, help="timed steps of one molecule (default 200)")
    p.add_argument("--box-steps", type=int, default=None, help="timed steps of the box (default steps / 10, >= 10)")
    p.add_argument("--spacing", type=float, default=8.0, help="grid spacing of the box in Angstrom (default 8)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--float32", action="store_true", help="run the model in float32 (default float64)")
    args = p.parse_args(argv)
    molecule = ase.io.read(args.molecule, index=0)
    rows = run(
        args.checkpoint,
        molecule,
        args.copies,
        args.steps,
        args.box_steps,
        args.spacing,
        args.threads,
        torch.float32 if args.float32 else torch.float64,
    )
    print(format_timings(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
