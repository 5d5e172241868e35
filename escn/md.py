"""Molecular-dynamics checks for force fields: NVE runs, energy drift, radial distribution functions.

* :func:`run_nve` integrates Newton's equations with ASE's velocity Verlet and records the energies
  (needs ``ase``: ``pip install "escn[ase]"``).
* :func:`run_langevin` runs constant-temperature MD with ASE's Langevin thermostat, recording the same.
* :func:`energy_drift_per_atom` summarises how well the total energy is conserved.
* :func:`bonded_pairs` and :func:`molecule_integrity` check that a molecule stays whole: bonds of a reference
  geometry that stretch too far, and atoms that move away from the centre of mass.
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

__all__ = [
    "run_nve",
    "run_langevin",
    "energy_drift_per_atom",
    "bonded_pairs",
    "molecule_integrity",
    "radial_distribution",
    "plot_rdf",
]

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
    return _integrate(atoms, dyn, dt, steps, log_every, record_positions)


def run_langevin(
    atoms: Any,
    calculator: Any,
    timestep_fs: float,
    steps: int,
    temperature_K: float,
    friction_per_fs: float = 0.01,
    log_every: int = 1,
    seed: Optional[int] = None,
    record_positions: bool = False,
    initial_velocities: bool = True,
) -> Dict[str, Any]:
    """Constant-temperature MD with ``ase.md.langevin.Langevin``; ``atoms`` is advanced in place.

    Args:
        atoms: an ``ase.Atoms``; ``atoms.calc`` is set to ``calculator``.
        calculator: any ASE calculator giving energies and forces.
        timestep_fs: integration time step in femtoseconds.
        steps: number of time steps.
        temperature_K: thermostat temperature.
        friction_per_fs: Langevin friction coefficient in 1/fs.
        log_every: record every ``log_every`` steps (the initial state and the last step are always recorded).
        seed: seeds one numpy generator for the initial velocities and the thermostat noise.
        record_positions: also keep the (N, 3) positions of every recorded frame.
        initial_velocities: draw Maxwell-Boltzmann momenta at ``temperature_K`` (centre-of-mass momentum
            removed) before the run; False keeps the momenta ``atoms`` has.

    Returns:
        As :func:`run_nve`: ``time_fs``, ``potential_energy``, ``kinetic_energy``, ``total_energy``,
        ``temperature_K`` ((F,) arrays), ``num_atoms``, ``timestep_fs``, ``cell``, and ``positions`` (F, N, 3)
        with ``record_positions``.
    """
    try:
        from ase import Atoms, units
        from ase.md.langevin import Langevin
    except ImportError as exc:
        raise ImportError('run_langevin needs ase; install it with pip install "escn[ase]"') from exc

    if not isinstance(atoms, Atoms):
        raise TypeError(f"atoms must be an ase.Atoms, got {type(atoms).__name__}")
    if calculator is None:
        raise TypeError("calculator must be an ASE calculator, got None")
    dt = _positive_float("timestep_fs", timestep_fs)
    steps = _positive_int("steps", steps)
    log_every = _positive_int("log_every", log_every)
    temperature = _positive_float("temperature_K", temperature_K)
    friction = _positive_float("friction_per_fs", friction_per_fs)
    rng = np.random.default_rng(seed)
    atoms.calc = calculator
    if initial_velocities:
        masses = atoms.get_masses()[:, None]
        momenta = rng.standard_normal((len(atoms), 3)) * np.sqrt(masses * units.kB * temperature)
        momenta -= masses * (momenta.sum(axis=0) / masses.sum())
        atoms.set_momenta(momenta)
    dyn = Langevin(
        atoms, timestep=dt * units.fs, temperature_K=temperature, friction=friction / units.fs, fixcm=False, rng=rng
    )
    return _integrate(atoms, dyn, dt, steps, log_every, record_positions)


def _integrate(atoms: Any, dyn: Any, dt: float, steps: int, log_every: int, record_positions: bool) -> Dict[str, Any]:
    records: Dict[str, list] = {k: [] for k in ("time_fs", "potential_energy", "kinetic_energy", "temperature_K")}
    frames: list = []

    def record(step: int) -> None:
        records["time_fs"].append(step * dt)
        records["potential_energy"].append(float(atoms.get_potential_energy()))
        records["kinetic_energy"].append(float(atoms.get_kinetic_energy()))
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


def bonded_pairs(numbers: ArrayLike, positions: ArrayLike, scale: float = 1.2) -> list[Tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, closer than ``scale`` times the sum of their covalent radii (ASE's table,
    Cordero et al. 2008), sorted.

    Args:
        numbers: (N,) atomic numbers.
        positions: (N, 3) positions in Angstrom (no periodic images).
        scale: tolerance on the covalent-radius sum.
    """
    from ase.data import covalent_radii

    z = np.asarray(numbers).reshape(-1).astype(np.int64)
    pos = _as_float64("positions", positions)
    if pos.shape != (z.size, 3):
        raise ValueError(f"positions must have shape ({z.size}, 3) for {z.size} atomic numbers, got {pos.shape}")
    scale = _positive_float("scale", scale)
    r = covalent_radii[z]
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    i, j = np.nonzero(np.triu(d < scale * (r[:, None] + r[None, :]), k=1))
    return sorted(zip(i.tolist(), j.tolist()))


def molecule_integrity(
    positions_frames: ArrayLike,
    reference: ArrayLike,
    bonds: Sequence[Tuple[int, int]],
    masses: Optional[ArrayLike] = None,
    max_stretch: float = 1.5,
    max_escape: float = 2.0,
) -> Dict[str, Any]:
    """Whether a molecule stayed whole along a trajectory (one molecule, no periodic images).

    A bond (i, j) of the reference is broken in a frame where ``|r_ij| > max_stretch * |r_ij(reference)|``.
    An atom has left in a frame where its distance from the centre of mass exceeds its largest distance from the
    centre of mass in the reference by more than ``max_escape`` Angstrom.

    Args:
        positions_frames: (F, N, 3) positions.
        reference: (N, 3) reference positions (e.g. the relaxed geometry).
        bonds: pairs (i, j) of the reference to follow (e.g. :func:`bonded_pairs` of the reference).
        masses: (N,) masses for the centre of mass (default: equal).
        max_stretch: ratio to the reference length above which a bond counts as broken.
        max_escape: Angstrom beyond the reference's largest centre distance at which an atom counts as gone.

    Returns:
        ``ok`` (no broken bond, no atom gone), ``broken_bonds`` (pairs broken in some frame),
        ``first_broken_frame`` (or None), ``max_bond_ratio`` (largest ``|r_ij| / |r_ij(ref)|`` over bonds and
        frames), ``max_bond_ratio_pair``, ``min_bond_ratio``, ``left_atoms`` (indices), ``max_center_distance``
        (Angstrom, over atoms and frames) and ``reference_max_center_distance``.
    """
    pos = _as_float64("positions_frames", positions_frames)
    ref = _as_float64("reference", reference)
    if ref.ndim != 2 or ref.shape[1] != 3 or pos.ndim != 3 or pos.shape[1:] != ref.shape:
        raise ValueError(
            f"positions_frames must have shape (F, N, 3) and reference (N, 3) with the same N, got "
            f"{pos.shape} and {ref.shape}"
        )
    pairs = np.asarray(list(bonds), dtype=np.int64).reshape(-1, 2)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= ref.shape[0]):
        raise ValueError(f"bonds must index atoms in [0, {ref.shape[0]}), got {pairs.min()}..{pairs.max()}")
    w = np.ones(ref.shape[0]) if masses is None else _as_float64("masses", masses).reshape(-1)
    if w.shape != (ref.shape[0],):
        raise ValueError(f"masses must have shape ({ref.shape[0]},), got {w.shape}")
    max_stretch = _positive_float("max_stretch", max_stretch)
    max_escape = _positive_float("max_escape", max_escape)

    def centre_distances(p: np.ndarray) -> np.ndarray:
        com = (w[..., :, None] * p).sum(axis=-2, keepdims=True) / w.sum()
        return np.linalg.norm(p - com, axis=-1)

    out: Dict[str, Any] = {}
    if pairs.size:
        d_ref = np.linalg.norm(ref[pairs[:, 0]] - ref[pairs[:, 1]], axis=-1)
        ratio = np.linalg.norm(pos[:, pairs[:, 0]] - pos[:, pairs[:, 1]], axis=-1) / d_ref  # (F, B)
        broken = ratio > max_stretch
        worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        out.update(
            broken_bonds=[tuple(map(int, pairs[b])) for b in np.nonzero(broken.any(axis=0))[0]],
            first_broken_frame=int(np.nonzero(broken.any(axis=1))[0][0]) if broken.any() else None,
            max_bond_ratio=float(ratio.max()),
            max_bond_ratio_pair=tuple(map(int, pairs[worst[1]])),
            min_bond_ratio=float(ratio.min()),
        )
    else:
        out.update(
            broken_bonds=[], first_broken_frame=None, max_bond_ratio=1.0, max_bond_ratio_pair=None, min_bond_ratio=1.0
        )
    ref_max = float(centre_distances(ref).max())
    dist = centre_distances(pos)  # (F, N)
    out["left_atoms"] = np.nonzero((dist > ref_max + max_escape).any(axis=0))[0].tolist()
    out["max_center_distance"] = float(dist.max())
    out["reference_max_center_distance"] = ref_max
    out["ok"] = not out["broken_bonds"] and not out["left_atoms"]
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
