"""GFN2-xTB Langevin molecular dynamics of small molecules, written as extended XYZ (``escn data xtb-md``).

The reference method is GFN2-xTB from the ``tblite`` package (``pip install "escn[xtb]"``), run through its ASE
calculator; the thermostat is ASE's :class:`ase.md.langevin.Langevin`.  One call of :func:`generate_xtb_md`

1. builds the starting geometry from internal coordinates written below (:func:`aspirin`, or any
   ``ase.Atoms``), relaxes it with BFGS to ``fmax`` and checks that the bonds found from covalent radii are
   the bonds of the molecule's connectivity table;
2. draws Maxwell-Boltzmann velocities at the temperature (numpy generator seeded with ``seed``) and runs
   ``equilibration_fs`` of Langevin MD;
3. runs a pilot of ``pilot_fs`` and measures the normalised autocorrelation of the potential energy and of
   the forces (mean over the 3N components); the sampling interval is the larger of their statistical
   inefficiencies (:func:`statistical_inefficiency`: twice the integrated autocorrelation time, so frames that
   far apart are roughly independent), rounded up to whole steps and clipped to ``[min_interval_fs,
   max_interval_fs]``, unless ``interval_fs`` fixes it;
4. continues the trajectory and keeps one frame every interval until ``n_frames`` are collected;
5. appends every kept frame to ``<prefix>_trajectory.extxyz`` as it comes (time order), then shuffles the frames with a generator seeded with ``seed`` and writes the splits (``split`` = counts of
   train / valid / test) as ``<prefix>_<name>.extxyz`` with ``energy`` (eV) and ``forces`` (eV/Angstrom), plus
   ``<prefix>_meta.json`` with every setting, the measured autocorrelations and the wall time.

Everything runs in float64 on one trajectory; with the same tblite build and thread count the same seed gives
the same frames.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from escn.md import bonded_pairs as md_bonded_pairs

__all__ = [
    "ASPIRIN_BONDS",
    "aspirin",
    "bonded_pairs",
    "check_bonds",
    "autocorrelation",
    "statistical_inefficiency",
    "XtbMDSettings",
    "xtb_calculator",
    "relax",
    "generate_xtb_md",
    "MOLECULES",
]


def _place(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle_deg: float, dihedral_deg: float
) -> np.ndarray:
    """The position of atom d with |cd| = bond, angle(b, c, d) = angle and dihedral(a, b, c, d) = dihedral."""
    angle, dihedral = math.radians(angle_deg), math.radians(dihedral_deg)
    bc = c - b
    bc /= np.linalg.norm(bc)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d_local = np.array(
        [
            -bond * math.cos(angle),
            bond * math.sin(angle) * math.cos(dihedral),
            bond * math.sin(angle) * math.sin(dihedral),
        ]
    )
    return c + d_local[0] * bc + d_local[1] * m + d_local[2] * n


# Aspirin (2-acetoxybenzoic acid, C9H8O4) as a Z-matrix: (symbol, bonded-to, angle-with, dihedral-with, bond in
# Angstrom, angle and dihedral in degrees).  Atoms 0-5 the ring (0 carries the acid, 1 the acetoxy group),
# 6-9 COOH, 10-16 O-C(=O)-CH3, 17-20 the ring hydrogens.
_ASPIRIN_ZMATRIX: Tuple[Tuple[str, int, int, int, float, float, float], ...] = (
    ("C", -1, -1, -1, 0.0, 0.0, 0.0),
    ("C", 0, -1, -1, 1.40, 0.0, 0.0),
    ("C", 1, 0, -1, 1.39, 120.0, 0.0),
    ("C", 2, 1, 0, 1.39, 120.0, 0.0),
    ("C", 3, 2, 1, 1.39, 120.0, 0.0),
    ("C", 4, 3, 2, 1.39, 120.0, 0.0),
    ("C", 0, 1, 2, 1.48, 120.0, 180.0),  # carboxyl C
    ("O", 6, 0, 1, 1.22, 123.0, 0.0),  # C=O, towards the ester oxygen
    ("O", 6, 0, 1, 1.35, 113.0, 180.0),  # O-H oxygen
    ("H", 8, 6, 0, 0.97, 106.0, 180.0),
    ("O", 1, 0, 6, 1.40, 120.0, 0.0),  # ester oxygen on the ring
    ("C", 10, 1, 0, 1.36, 118.0, 90.0),  # acetyl C, out of the ring plane
    ("O", 11, 10, 1, 1.20, 123.0, 0.0),
    ("C", 11, 10, 1, 1.50, 110.0, 180.0),  # methyl C
    ("H", 13, 11, 10, 1.09, 109.5, 180.0),
    ("H", 13, 11, 10, 1.09, 109.5, 60.0),
    ("H", 13, 11, 10, 1.09, 109.5, -60.0),
    ("H", 2, 1, 0, 1.08, 120.0, 180.0),
    ("H", 3, 2, 1, 1.08, 120.0, 180.0),
    ("H", 4, 3, 2, 1.08, 120.0, 180.0),
    ("H", 5, 4, 3, 1.08, 120.0, 180.0),
)

#: the 21 bonds of aspirin in the atom order of :func:`aspirin` (i < j)
ASPIRIN_BONDS: Tuple[Tuple[int, int], ...] = tuple(
    sorted(
        [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (0, 5)]
        + [(min(i, z[1]), max(i, z[1])) for i, z in enumerate(_ASPIRIN_ZMATRIX) if i >= 6]
    )
)


def _from_zmatrix(rows: Sequence[Tuple[str, int, int, int, float, float, float]]) -> Tuple[List[str], np.ndarray]:
    pos = np.zeros((len(rows), 3))
    for i, (_, b, a, d, bond, angle, dihedral) in enumerate(rows):
        if i == 0:
            continue
        if i == 1:
            pos[1] = pos[b] + [bond, 0.0, 0.0]
        elif i == 2:  # in the xy plane
            ref = pos[a] + [0.0, 1.0, 0.0] if d < 0 else pos[d]
            pos[2] = _place(ref + [0.0, 0.0, 1.0], pos[a], pos[b], bond, angle, 90.0)
        else:
            pos[i] = _place(pos[d], pos[a], pos[b], bond, angle, dihedral)
    return [r[0] for r in rows], pos


def aspirin() -> Any:
    """Aspirin, C9H8O4 (21 atoms), from idealised internal coordinates (bond lengths, angles, dihedrals of the
    connectivity in :data:`ASPIRIN_BONDS`; the acetoxy group perpendicular to the ring).  Not relaxed: see
    :func:`relax`.  Returns an ``ase.Atoms`` centred at the origin, without cell or periodicity."""
    from ase import Atoms

    symbols, pos = _from_zmatrix(_ASPIRIN_ZMATRIX)
    atoms = Atoms(symbols=symbols, positions=pos)
    atoms.positions -= atoms.get_center_of_mass()
    return atoms


def _water() -> Any:
    from ase import Atoms

    return Atoms("OH2", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])


#: molecules the command line knows: name -> (builder, bonds)
MOLECULES: Dict[str, Tuple[Callable[[], Any], Tuple[Tuple[int, int], ...]]] = {
    "aspirin": (aspirin, ASPIRIN_BONDS),
    "water": (_water, ((0, 1), (0, 2))),
}


def bonded_pairs(atoms: Any, scale: float = 1.2) -> List[Tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of ``atoms`` closer than ``scale`` times the sum of their covalent radii
    (:func:`escn.md.bonded_pairs`)."""
    return md_bonded_pairs(atoms.numbers, atoms.positions, scale)


def check_bonds(atoms: Any, bonds: Sequence[Tuple[int, int]], what: str) -> None:
    """Raise ValueError naming ``what`` when the bonds found by :func:`bonded_pairs` differ from ``bonds``."""
    found, expected = set(bonded_pairs(atoms)), {tuple(sorted(b)) for b in bonds}
    if found != expected:
        raise ValueError(
            f"{what}: the bonds found from covalent radii differ from the molecule's connectivity: "
            f"extra {sorted(found - expected)}, missing {sorted(expected - found)}"
        )


def autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Normalised autocorrelation of a series, averaged over its columns.

    Args:
        x: ``(T,)`` or ``(T, K)`` samples at equal time steps.
        max_lag: largest lag (``< T``).

    Returns:
        ``(max_lag + 1,)``: ``c[k] = mean_j sum_t dx[t, j] dx[t + k, j] / sum_t dx[t, j]^2`` with ``dx = x - mean``
        (so ``c[0] = 1``); columns of zero variance are left out.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in (1, 2) or not 0 <= max_lag < x.shape[0]:
        raise ValueError(
            f"autocorrelation: expected a (T,) or (T, K) series with T > max_lag = {max_lag}, got shape {x.shape}"
        )
    if x.ndim == 1:
        x = x[:, None]
    dx = x - x.mean(axis=0)
    var = (dx * dx).sum(axis=0)
    keep = var > 0
    if not keep.any():
        raise ValueError("autocorrelation: every column of the series is constant")
    dx, var = dx[:, keep], var[keep]
    t = x.shape[0]
    out = np.array([((dx[: t - k] * dx[k:]).sum(axis=0) / var).mean() for k in range(max_lag + 1)])
    return out


def statistical_inefficiency(c: np.ndarray, window: float = 5.0) -> Optional[float]:
    """The statistical inefficiency ``g = 1 + 2 sum_{k=1..M} c[k]`` of a normalised autocorrelation ``c``, with
    Sokal's automatic window: ``M`` is the smallest lag with ``M >= window * g(M) / 2``; None when no lag within
    ``c`` qualifies.  Samples ``g`` steps apart are roughly independent (``g / 2`` is the integrated
    autocorrelation time); ``g`` is at least 1 for a positively correlated series (values below 1 are returned
    as they are, for anticorrelated ones)."""
    a = np.asarray(c, dtype=np.float64).reshape(-1)
    if a.size < 2 or abs(a[0] - 1.0) > 1e-9:
        raise ValueError(
            f"statistical_inefficiency: expected a normalised autocorrelation with c[0] = 1, got "
            f"{a[:1].tolist()} (length {a.size})"
        )
    g = 1.0 + 2.0 * np.cumsum(a[1:])
    for m in range(1, a.size):
        if m >= window * g[m - 1] / 2.0:
            return float(g[m - 1])
    return None


@dataclass(frozen=True)
class XtbMDSettings:
    """Settings of :func:`generate_xtb_md` (units: K, fs, 1/fs, eV/Angstrom).

    Attributes:
        molecule: a key of :data:`MOLECULES`.
        temperature_K: thermostat and initial-velocity temperature.
        timestep_fs: integration time step.
        friction_per_fs: Langevin friction coefficient.
        relax_fmax: BFGS convergence of the starting geometry (max force, eV/Angstrom).
        equilibration_fs: MD discarded before the pilot.
        pilot_fs: MD whose autocorrelations choose the sampling interval (not written).
        interval_fs: fixed sampling interval; None: from the pilot.
        min_interval_fs, max_interval_fs: bounds of the measured interval.
        sokal_window: the window constant of :func:`statistical_inefficiency`.
        n_frames: frames written.
        split: (name, count) pairs; counts sum to ``n_frames``.
        seed: seeds the velocities, the Langevin noise and the shuffle before the split.
        method: the tblite method.
    """

    molecule: str = "aspirin"
    temperature_K: float = 500.0
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.02
    relax_fmax: float = 0.01
    equilibration_fs: float = 2000.0
    pilot_fs: float = 2000.0
    interval_fs: Optional[float] = None
    min_interval_fs: float = 20.0
    max_interval_fs: float = 50.0
    sokal_window: float = 5.0
    n_frames: int = 1500
    split: Tuple[Tuple[str, int], ...] = (("train", 950), ("valid", 50), ("test", 500))
    seed: int = 0
    method: str = "GFN2-xTB"

    def __post_init__(self) -> None:
        if self.molecule not in MOLECULES:
            raise ValueError(f"molecule: expected one of {', '.join(MOLECULES)}, got {self.molecule!r}")
        for name in (
            "temperature_K",
            "timestep_fs",
            "friction_per_fs",
            "relax_fmax",
            "min_interval_fs",
            "max_interval_fs",
            "sokal_window",
        ):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: expected a finite number > 0, got {v!r}")
        for name in ("equilibration_fs", "pilot_fs"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
        if self.interval_fs is None and self.pilot_fs < 8 * self.max_interval_fs:
            raise ValueError(
                f"pilot_fs: the measured interval needs a pilot of at least 8 * max_interval_fs = "
                f"{8 * self.max_interval_fs:g} fs, got {self.pilot_fs:g} (or give interval_fs)"
            )
        if self.interval_fs is not None and not (
            math.isfinite(self.interval_fs) and self.interval_fs >= self.timestep_fs
        ):
            raise ValueError(
                f"interval_fs: expected a number >= timestep_fs = {self.timestep_fs:g}, got {self.interval_fs!r}"
            )
        if self.min_interval_fs > self.max_interval_fs:
            raise ValueError(
                f"min_interval_fs = {self.min_interval_fs:g} exceeds max_interval_fs = {self.max_interval_fs:g}"
            )
        if isinstance(self.n_frames, bool) or not isinstance(self.n_frames, int) or self.n_frames < 1:
            raise ValueError(f"n_frames: expected an int >= 1, got {self.n_frames!r}")
        names = [s[0] for s in self.split]
        counts = [s[1] for s in self.split]
        if (
            not self.split
            or len(set(names)) != len(names)
            or any(not isinstance(n, str) or not n for n in names)
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts)
            or sum(counts) != self.n_frames
        ):
            raise ValueError(
                f"split: expected distinct (name, count) pairs with counts summing to n_frames = "
                f"{self.n_frames}, got {self.split!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: expected an int >= 0, got {self.seed!r}")

    def steps(self, fs: float) -> int:
        """``fs`` as a whole number of time steps (rounded up)."""
        return int(math.ceil(fs / self.timestep_fs - 1e-9))


def xtb_calculator(method: str = "GFN2-xTB") -> Any:
    """tblite's ASE calculator for ``method``, quiet.  Raises ImportError naming the extra when tblite is missing."""
    try:
        from tblite.ase import TBLite
    except ImportError as exc:
        raise ImportError(
            "the xTB data generator needs tblite: pip install 'escn[xtb]' (or pip install tblite)"
        ) from exc
    return TBLite(method=method, verbosity=0)


def relax(atoms: Any, calculator: Any, fmax: float, max_steps: int = 1000) -> int:
    """BFGS on ``atoms`` (in place) until the largest force is below ``fmax``; returns the number of steps.

    Raises:
        RuntimeError: not converged within ``max_steps``.
    """
    from ase.optimize import BFGS

    atoms.calc = calculator
    opt = BFGS(atoms, logfile=None)
    if not opt.run(fmax=fmax, steps=max_steps):
        raise RuntimeError(
            f"BFGS did not reach fmax = {fmax} eV/A in {max_steps} steps "
            f"(max force {np.abs(atoms.get_forces()).max():.3g})"
        )
    return int(opt.nsteps)


def _snapshot(atoms: Any) -> Any:
    from ase.calculators.singlepoint import SinglePointCalculator

    frame = atoms.copy()
    frame.set_constraint()
    frame.arrays.pop("momenta", None)
    frame.calc = SinglePointCalculator(
        frame,
        energy=float(atoms.get_potential_energy()),
        forces=np.array(atoms.get_forces(apply_constraint=False), dtype=np.float64),
    )
    return frame


def generate_xtb_md(
    settings: XtbMDSettings,
    out_dir: os.PathLike | str,
    prefix: Optional[str] = None,
    log: Optional[Callable[[str], None]] = print,
) -> Dict[str, Any]:
    """Run the generation described in the module docstring and write its files to ``out_dir``.

    Returns:
        The metadata also written to ``<prefix>_meta.json``: settings, relaxed energy, BFGS steps, the pilot's
        autocorrelations, the interval in fs and steps, the files written, frame counts, wall times (s) and the
        process's CPU time (s; the wall time on an otherwise idle core).
    """
    import ase.io
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    s = settings
    say = log or (lambda _: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = prefix or s.molecule
    t_start, cpu_start = time.perf_counter(), time.process_time()
    build, bonds = MOLECULES[s.molecule]
    atoms = build()
    calc = xtb_calculator(s.method)
    n_bfgs = relax(atoms, calc, s.relax_fmax)
    check_bonds(atoms, bonds, f"relaxed {s.molecule}")
    e_min = float(atoms.get_potential_energy())
    relaxed = _snapshot(atoms)
    say(f"relaxed {s.molecule} ({len(atoms)} atoms) with {s.method}: {n_bfgs} BFGS steps, E = {e_min:.6f} eV")

    rng = np.random.default_rng(s.seed)
    with warnings.catch_warnings():  # deprecated in newer ASE in favour of a function drawing the same numbers
        warnings.simplefilter("ignore", DeprecationWarning)
        MaxwellBoltzmannDistribution(atoms, temperature_K=s.temperature_K, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    atoms.set_constraint(FixCom())  # the centre of mass stays put; recorded forces are the unconstrained ones
    dyn = Langevin(
        atoms,
        timestep=s.timestep_fs * units.fs,
        temperature_K=s.temperature_K,
        friction=s.friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )

    t0 = time.perf_counter()
    n_eq = s.steps(s.equilibration_fs)
    if n_eq:
        dyn.run(n_eq)
    check_bonds(atoms, bonds, f"{s.molecule} after {s.equilibration_fs:g} fs of equilibration")
    t_eq = time.perf_counter() - t0
    say(f"equilibrated {s.equilibration_fs:g} fs ({n_eq} steps) in {t_eq:.0f} s")

    pilot: Dict[str, Any] = {}
    if s.interval_fs is None:
        n_pilot = s.steps(s.pilot_fs)
        energies, forces = [], []

        def record() -> None:
            energies.append(float(atoms.get_potential_energy()))
            forces.append(np.array(atoms.get_forces(apply_constraint=False)).reshape(-1))

        dyn.attach(record, interval=1)
        dyn.run(n_pilot)
        dyn.observers.clear()
        max_lag = min(s.steps(4 * s.max_interval_fs), n_pilot // 2)
        c_e = autocorrelation(np.array(energies), max_lag)
        c_f = autocorrelation(np.array(forces), max_lag)
        g_e, g_f = statistical_inefficiency(c_e, s.sokal_window), statistical_inefficiency(c_f, s.sokal_window)
        g = max(g_e if g_e is not None else max_lag, g_f if g_f is not None else max_lag)
        interval_steps = min(max(int(math.ceil(g)), s.steps(s.min_interval_fs)), s.steps(s.max_interval_fs))
        pilot = {
            "steps": n_pilot,
            "max_lag_steps": max_lag,
            "inefficiency_energy_fs": None if g_e is None else round(g_e * s.timestep_fs, 2),
            "inefficiency_forces_fs": None if g_f is None else round(g_f * s.timestep_fs, 2),
            "autocorrelation_energy": [round(float(v), 5) for v in c_e],
            "autocorrelation_forces": [round(float(v), 5) for v in c_f],
        }
        say(
            f"pilot {s.pilot_fs:g} fs: statistical inefficiency {pilot['inefficiency_energy_fs']} fs (energy), "
            f"{pilot['inefficiency_forces_fs']} fs (forces)"
        )
    else:
        interval_steps = s.steps(s.interval_fs)
    interval_fs = interval_steps * s.timestep_fs
    say(f"sampling every {interval_fs:g} fs ({interval_steps} steps)")

    frames = []
    stream = out / f"{prefix}_trajectory.extxyz"
    stream.unlink(missing_ok=True)
    t1 = time.perf_counter()
    while len(frames) < s.n_frames:
        dyn.run(interval_steps)
        frames.append(_snapshot(atoms))
        ase.io.write(str(stream), frames[-1], format="extxyz", append=True)
        if len(frames) % 100 == 0:
            check_bonds(atoms, bonds, f"{s.molecule} at frame {len(frames)}")
            say(f"{len(frames)} / {s.n_frames} frames, {time.perf_counter() - t1:.0f} s")
    t_prod = time.perf_counter() - t1

    order = np.random.default_rng(s.seed + 1).permutation(len(frames))
    files: Dict[str, str] = {}
    start = 0
    for name, count in s.split:
        path = out / f"{prefix}_{name}.extxyz"
        ase.io.write(str(path), [frames[i] for i in order[start : start + count]], format="extxyz")
        files[name] = path.name
        start += count
    ase.io.write(str(out / f"{prefix}_relaxed.extxyz"), relaxed, format="extxyz")
    energies = np.array([f.get_potential_energy() for f in frames])
    meta = {
        "settings": {**asdict(s), "split": [list(p) for p in s.split]},
        "tblite_version": _tblite_version(),
        "natoms": len(atoms),
        "relaxed_energy_eV": e_min,
        "bfgs_steps": n_bfgs,
        "pilot": pilot,
        "interval_fs": interval_fs,
        "interval_steps": interval_steps,
        "md_steps_total": n_eq + pilot.get("steps", 0) + interval_steps * s.n_frames,
        "energy_eV": {
            "mean": float(energies.mean()),
            "std": float(energies.std()),
            "min": float(energies.min()),
            "max": float(energies.max()),
        },
        "files": {**files, "relaxed": f"{prefix}_relaxed.extxyz", "trajectory": stream.name},
        "wall_time_s": {
            "equilibration": round(t_eq, 1),
            "production": round(t_prod, 1),
            "total": round(time.perf_counter() - t_start, 1),
        },
        "cpu_time_s": round(time.process_time() - cpu_start, 1),
    }
    (out / f"{prefix}_meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    say(f"wrote {', '.join(files.values())} to {out} in {meta['wall_time_s']['total']:.0f} s")
    return meta


def _tblite_version() -> Optional[str]:
    try:
        from importlib.metadata import version

        return version("tblite")
    except Exception:  # noqa: BLE001 - metadata missing
        return None
