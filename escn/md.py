"""Molecular-dynamics checks for force fields: NVE runs, energy drift, radial distribution functions.

* :func:`run_nve` integrates Newton's equations with ASE's velocity Verlet and records the energies
  (needs ``ase``: ``pip install "escn[ase]"``).
* :func:`energy_drift_per_atom` summarises how well the total energy is conserved.
* :func:`radial_distribution` computes g(r) of periodic frames with :func:`escn.data.radius_graph`
  (torch and numpy only).
* :func:`plot_rdf` draws g(r) curves into a PNG (needs ``matplotlib``).

Units: Angstrom, eV, femtoseconds for time steps and times, picoseconds for drift rates, kelvin.
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from escn.data.graph import radius_graph

__all__ = ["run_nve", "energy_drift_per_atom", "radial_distribution", "plot_rdf"]

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[Any]]


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _as_float64(name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array, got {type(value).__name__}") from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


# ----------------------------------------------------------------------------- NVE


def run_nve(
    atoms: Any,
    calculator: Any,
    timestep_fs: float,
    steps: int,
    log_every: int = 1,
    temperature_K: Optional[float] = None,
    seed: Optional[int] = None,
    record_positions: bool = False,
) -> Dict[str, Any]:
    """Constant-energy MD with ``ase.md.verlet.VelocityVerlet``; ``atoms`` is advanced in place.

    Args:
        atoms: an ``ase.Atoms``; its momenta are the initial velocities unless ``temperature_K`` is set.
            ``atoms.calc`` is set to ``calculator``.
        calculator: any ASE calculator giving energies and forces (e.g. :class:`escn.ase.Calculator`).
        timestep_fs: integration time step in femtoseconds.
        steps: number of time steps.
        log_every: record every ``log_every`` steps (the initial state and the last step are always recorded).
        temperature_K: if given, draw Maxwell-Boltzmann momenta at this temperature (numpy generator seeded
            by ``seed``) and remove the centre-of-mass momentum before the run.
        seed: seed of the velocity draw.
        record_positions: also keep the (N, 3) positions of every recorded frame (e.g. for
            :func:`radial_distribution`).

    Returns:
        dict with ``time_fs``, ``potential_energy``, ``kinetic_energy``, ``total_energy`` (eV, whole
        system) and ``temperature_K``, each an (F,) float64 array over the F recorded frames; ``num_atoms``;
        ``timestep_fs``; ``cell`` (3, 3) at the end; and with ``record_positions`` ``positions`` (F, N, 3).
    """
    try:
        from ase import units
        from ase.md.verlet import VelocityVerlet
    except ImportError as exc:
        raise ImportError('run_nve needs ase; install it with pip install "escn[ase]"') from exc
    from ase import Atoms

    if not isinstance(atoms, Atoms):
        raise TypeError(f"atoms must be an ase.Atoms, got {type(atoms).__name__}")
    if calculator is None:
        raise TypeError("calculator must be an ASE calculator, got None")
    dt = _positive_float("timestep_fs", timestep_fs)
    steps = _positive_int("steps", steps)
    log_every = _positive_int("log_every", log_every)
    if temperature_K is not None:
        temperature_K = float(temperature_K)
        if not math.isfinite(temperature_K) or temperature_K < 0:
            raise ValueError(f"temperature_K must be a finite number >= 0, got {temperature_K!r}")

    atoms.calc = calculator
    if temperature_K is not None:
        # Maxwell-Boltzmann momenta p ~ N(0, m kT) per component, then zero total momentum
        masses = atoms.get_masses()[:, None]
        normal = np.random.default_rng(seed).standard_normal((len(atoms), 3))
        momenta = normal * np.sqrt(masses * units.kB * temperature_K)
        momenta -= masses * (momenta.sum(axis=0) / masses.sum())
        atoms.set_momenta(momenta)
    dyn = VelocityVerlet(atoms, timestep=dt * units.fs)

    records: Dict[str, list] = {k: [] for k in ("time_fs", "potential_energy", "kinetic_energy", "temperature_K")}
    frames: list = []

    def record(step: int) -> None:
        epot = float(atoms.get_potential_energy())
        ekin = float(atoms.get_kinetic_energy())
        records["time_fs"].append(step * dt)
        records["potential_energy"].append(epot)
        records["kinetic_energy"].append(ekin)
        records["temperature_K"].append(float(atoms.get_temperature()))
        if record_positions:
            frames.append(atoms.get_positions().copy())

    record(0)
    done = 0
    while done < steps:
        chunk = min(log_every, steps - done)
        dyn.run(chunk)
        done += chunk
        record(done)

    out: Dict[str, Any] = {k: np.asarray(v, dtype=np.float64) for k, v in records.items()}
    out["total_energy"] = out["potential_energy"] + out["kinetic_energy"]
    out["num_atoms"] = len(atoms)
    out["timestep_fs"] = dt
    out["cell"] = np.asarray(atoms.get_cell()[:], dtype=np.float64).copy()
    if record_positions:
        out["positions"] = np.stack(frames)
    return out


def energy_drift_per_atom(result: Mapping[str, Any]) -> Dict[str, float]:
    """Energy conservation of an NVE run from :func:`run_nve`.

    Args:
        result: a dict with ``time_fs`` (F,), ``total_energy`` (F,) in eV and ``num_atoms``.

    Returns:
        ``{"slope_eV_per_atom_per_ps": ..., "max_abs_deviation_eV_per_atom": ..., "std_eV_per_atom": ...}``:
        the slope of a least-squares line through ``E_total(t) / N`` (eV/atom/ps), ``max_t |E(t) - E(0)| / N``
        and the standard deviation of ``E_total / N`` over the run.
    """
    for key in ("time_fs", "total_energy", "num_atoms"):
        if key not in result:
            raise ValueError(f"result must contain {key!r} (as returned by run_nve)")
    t = _as_float64("result['time_fs']", result["time_fs"]).reshape(-1)
    e = _as_float64("result['total_energy']", result["total_energy"]).reshape(-1)
    n = _positive_int("result['num_atoms']", result["num_atoms"])
    if t.shape != e.shape or t.size < 2:
        raise ValueError(f"time_fs and total_energy must have the same length >= 2, got {t.size} and {e.size}")
    e_atom = e / n
    t_ps = t * 1e-3
    slope = float(np.polyfit(t_ps - t_ps.mean(), e_atom - e_atom.mean(), 1)[0])
    return {
        "slope_eV_per_atom_per_ps": slope,
        "max_abs_deviation_eV_per_atom": float(np.max(np.abs(e_atom - e_atom[0]))),
        "std_eV_per_atom": float(np.std(e_atom)),
    }


# ----------------------------------------------------------------------------- RDF


def radial_distribution(
    positions_frames: ArrayLike,
    cell: ArrayLike,
    r_max: float,
    bins: int = 100,
) -> Tuple[np.ndarray, np.ndarray]:
    """Radial distribution function g(r) of periodic frames (one species, all axes periodic).

    Every ordered pair of atoms within ``r_max`` is counted once per periodic image (the neighbour list
    of :func:`escn.data.radius_graph`, so ``r_max`` may exceed half the cell; an atom's own images count
    as neighbours, as in the infinite crystal).  The histogram is divided by
    ``F * N * (N - 1) / V * 4/3 pi (r_hi^3 - r_lo^3)`` per bin, so for N independent uniformly placed
    atoms (an ideal gas) the expectation of g(r) is exactly 1 (for r below the shortest lattice vector).

    Args:
        positions_frames: (F, N, 3) or (N, 3) positions in Angstrom (atoms may lie outside the cell).
        cell: (3, 3) lattice vectors as rows, shared by all frames, or (F, 3, 3) one per frame.
        r_max: largest distance, Angstrom.
        bins: number of equal-width bins on ``[0, r_max]``.

    Returns:
        ``(r, g)``: (bins,) bin centres in Angstrom and (bins,) g(r), averaged over the frames
        (each frame with its own volume).
    """
    pos = _as_float64("positions_frames", positions_frames)
    if pos.ndim == 2:
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[2] != 3 or pos.shape[1] < 2 or pos.shape[0] < 1:
        raise ValueError(f"positions_frames must have shape (F, N, 3) or (N, 3) with N >= 2, got {pos.shape}")
    num_frames, n = pos.shape[0], pos.shape[1]
    cells = _as_float64("cell", cell)
    if cells.shape == (3, 3):
        cells = np.broadcast_to(cells, (num_frames, 3, 3))
    if cells.shape != (num_frames, 3, 3):
        raise ValueError(f"cell must have shape (3, 3) or ({num_frames}, 3, 3), got {cells.shape}")
    r_max = _positive_float("r_max", r_max)
    bins = _positive_int("bins", bins)

    edges = np.linspace(0.0, r_max, bins + 1)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = np.zeros(bins)
    for f in range(num_frames):
        volume = abs(float(np.linalg.det(cells[f])))
        if volume <= 0:
            raise ValueError(f"cell of frame {f} has zero volume")
        graph = radius_graph(torch.from_numpy(pos[f].copy()), r_max, cell=torch.from_numpy(cells[f].copy()), pbc=True)
        dist = torch.linalg.vector_norm(graph.edge_vec, dim=1).numpy()
        hist, _ = np.histogram(dist, bins=edges)
        g += hist / (n * (n - 1) / volume * shell)
    r = 0.5 * (edges[1:] + edges[:-1])
    return r, g / num_frames


def plot_rdf(
    curves: Mapping[str, Tuple[ArrayLike, ArrayLike]],
    path: Union[str, os.PathLike],
    title: Optional[str] = None,
) -> str:
    """Plot g(r) curves on one axis and save a PNG.

    Args:
        curves: label -> ``(r, g)`` with (bins,) arrays, e.g. ``{"EMT": radial_distribution(...),
            "eSCN": radial_distribution(...)}``.
        path: output file (PNG); parent directories are created.
        title: optional axis title.

    Returns:
        The path written, as a string.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plot_rdf needs matplotlib; install it with pip install matplotlib") from exc
    if not isinstance(curves, Mapping) or len(curves) == 0:
        raise ValueError("curves must be a non-empty dict of label -> (r, g)")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")

    fig = Figure(figsize=(6.0, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    styles = ["-", "--", ":", "-."]
    for k, (label, curve) in enumerate(curves.items()):
        if not isinstance(curve, (tuple, list)) or len(curve) != 2:
            raise ValueError(f"curves[{label!r}] must be a pair (r, g)")
        r = _as_float64(f"curves[{label!r}] r", curve[0]).reshape(-1)
        g = _as_float64(f"curves[{label!r}] g", curve[1]).reshape(-1)
        if r.shape != g.shape:
            raise ValueError(f"curves[{label!r}]: r and g have different lengths ({r.size} and {g.size})")
        ax.plot(r, g, styles[k % len(styles)], label=str(label), linewidth=1.5)
    ax.axhline(1.0, color="0.6", linewidth=0.8)
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("g(r)")
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    out = os.fspath(path)
    parent = os.path.dirname(out)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out
