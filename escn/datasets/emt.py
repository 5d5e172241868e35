"""Copper energies, forces and stresses from ASE's EMT potential (ASE is an optional dependency).

Four kinds of trajectories of periodic FCC Cu supercells (``pip install escn[ase]``):

* ``md300``, ``md1000``: Langevin MD at 300 K / 1,000 K (``ase.md.langevin.Langevin``, time step
  4 fs, friction 0.02 / fs, centre of mass fixed by ``ase.constraints.FixCom``).  Velocities start from a Maxwell-Boltzmann
  distribution at twice the target temperature (half of it goes into potential energy), then
  ``equilibration_steps`` steps are discarded and a frame is recorded every ``md_interval`` steps.
* ``rattle``: the perfect supercell with every coordinate displaced by ``N(0, s^2)``, ``s``
  drawn per frame uniformly in [0.03, 0.12] Angstrom.
* ``strain``: a random symmetric strain ``e`` (entries uniform in [-0.03, 0.03]) applied to the
  cell and the atoms (``cell <- cell (I + e)``, rows = lattice vectors), then a 0.03 Angstrom rattle.

Supercells alternate between 2x2x2 (32 atoms) and 3x3x3 (108 atoms) conventional cells with EMT's
equilibrium lattice constant a = 3.59 Angstrom (minimum of E(a) on a 0.0025 Angstrom grid).  A
"trajectory" of the rattle / strain kinds is a group of frames generated from one random stream.

Atoms keep their atomic numbers (Cu, 29) in ``atom_types``; the training pipeline maps them to a model's type
indices (:func:`escn.train.data.training_species`), so the model's species list is built from these data.

Recorded per frame: total potential energy (eV), forces (eV/Angstrom) and the 3x3 stress
(eV/Angstrom^3) from ``atoms.get_stress(voigt=False)`` -- ASE's Voigt order is
(xx, yy, zz, yz, xz, xy).  **Sign convention (ASE's):** ``stress = (1/V) dE/d(strain)``, the
potential (virial) part only, without the kinetic ideal-gas term; it is *positive for a cell under
tension* (stretched: it would lower its energy by shrinking) and negative under compression,
so the pressure is ``-trace(stress) / 3``.

Splits are made **by trajectory**: within each kind the trajectories are permuted with a seeded
generator, ``max(1, round(0.2 n))`` go to ``valid``, as many to ``test`` and the rest to
``train``; frames of one trajectory never appear in two splits.

Randomness: trajectory ``j`` of kind ``k`` uses ``numpy.random.default_rng([seed, k, j])`` for its
initial velocities, the Langevin noise (``rng`` argument), rattles and strains.

Measured on this project's 2-core CPU machine with the defaults (5 trajectories per kind, 10 frames
each: 200 frames, 12,480 atoms, 120 / 40 / 40 frames in train / valid / test): generation takes
18-21 s over three runs, about 85% of it the MD (loading the cached file afterwards: milliseconds).  Instantaneous
MD temperatures after the equilibration fluctuate around the target (e.g. 270-330 K at 300 K for
108 atoms).  Baseline (:func:`emt_baseline`: mean training energy per atom, zero forces), seed 0,
on the test split: force MAE 361 meV/Angstrom for the 300 K frames (the reference quotes about
360), 713 at 1,000 K, 652 for the rattled cells, 235 for the strained ones, 573 over all test
frames; per-atom energy MAE 43.7 meV/atom.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from escn._util import check_int as _check_int

from ..data.batch import AtomsGraph
from ._cache import PathLike, cached_arrays

__all__ = ["KINDS", "SPLITS", "LATTICE_CONSTANT", "generate_emt", "load_emt", "emt_graphs", "emt_baseline"]

KINDS: Tuple[str, ...] = ("md300", "md1000", "rattle", "strain")
SPLITS: Tuple[str, ...] = ("train", "valid", "test")
LATTICE_CONSTANT = 3.59  # Angstrom, EMT's equilibrium fcc Cu lattice constant
_TEMPERATURES = {"md300": 300.0, "md1000": 1000.0}
_TIMESTEP_FS = 4.0
_FRICTION_PER_FS = 0.02
_RATTLE_RANGE = (0.03, 0.12)
_STRAIN_MAX = 0.03
_STRAIN_RATTLE = 0.03
_SPLIT_SEED = 1_000_003  # stream id of the split permutations (distinct from the kind codes)


def _require_ase() -> Any:
    try:
        import ase  # noqa: F401
        from ase.build import bulk  # noqa: F401
        from ase.calculators.emt import EMT  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "escn.datasets.emt needs the Atomic Simulation Environment: pip install escn[ase]  (or pip install ase)"
        ) from exc
    return ase


def _check_sizes(sizes: object) -> Tuple[int, ...]:
    if not isinstance(sizes, (tuple, list)) or len(sizes) == 0:
        raise TypeError(f"sizes must be a non-empty tuple of ints (supercell repeats), got {sizes!r}")
    return tuple(_check_int("sizes[i]", s, 1) for s in sizes)


def _check_kinds(kinds: Optional[Sequence[str]]) -> Tuple[str, ...]:
    if kinds is None:
        return KINDS
    if isinstance(kinds, str) or not isinstance(kinds, (tuple, list)) or len(kinds) == 0:
        raise TypeError(f"kinds must be a non-empty sequence of names from {KINDS}, got {kinds!r}")
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"kinds contains {k!r}; valid kinds are {KINDS}")
    return tuple(kinds)


def _split_counts(n: int) -> Tuple[int, int, int]:
    n_valid = max(1, int(round(0.2 * n)))
    return n - 2 * n_valid, n_valid, n_valid


def _supercell(size: int) -> Any:
    from ase.build import bulk

    return bulk("Cu", "fcc", a=LATTICE_CONSTANT, cubic=True).repeat((size, size, size))


def _record(atoms: Any) -> Dict[str, np.ndarray]:
    return {
        "numbers": atoms.get_atomic_numbers().astype(np.int64),
        "pos": atoms.get_positions().astype(np.float64),
        "cell": np.asarray(atoms.get_cell()[:], dtype=np.float64),
        "energy": np.float64(atoms.get_potential_energy()),
        "forces": atoms.get_forces(apply_constraint=False).astype(np.float64),
        "stress": np.asarray(atoms.get_stress(voigt=False), dtype=np.float64),
    }


def _md_frames(
    kind: str, size: int, rng: np.random.Generator, frames: int, equilibration: int, interval: int
) -> List[Dict[str, np.ndarray]]:
    from ase import units
    from ase.calculators.emt import EMT
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary

    try:  # ASE >= 3.29; MaxwellBoltzmannDistribution (same draws) is deprecated there
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # pragma: no cover - older ASE
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    temperature = _TEMPERATURES[kind]
    atoms = _supercell(size)
    atoms.calc = EMT()
    thermalize_momenta(atoms, temperature_K=2.0 * temperature, rng=rng)
    Stationary(atoms)
    atoms.set_constraint(FixCom())  # the centre of mass stays put (recorded forces are unconstrained)
    dyn = Langevin(
        atoms,
        timestep=_TIMESTEP_FS * units.fs,
        temperature_K=temperature,
        friction=_FRICTION_PER_FS / units.fs,
        fixcm=False,
        rng=rng,
    )
    if equilibration:
        dyn.run(equilibration)
    out = []
    for _ in range(frames):
        dyn.run(interval)
        out.append(_record(atoms))
    return out


def _static_frames(kind: str, size: int, rng: np.random.Generator, frames: int) -> List[Dict[str, np.ndarray]]:
    from ase.calculators.emt import EMT

    base = _supercell(size)
    out = []
    for _ in range(frames):
        atoms = base.copy()
        if kind == "strain":
            e = rng.uniform(-_STRAIN_MAX, _STRAIN_MAX, size=(3, 3))
            e = 0.5 * (e + e.T)
            atoms.set_cell(atoms.get_cell()[:] @ (np.eye(3) + e), scale_atoms=True)
            std = _STRAIN_RATTLE
        else:
            std = rng.uniform(*_RATTLE_RANGE)
        atoms.positions = atoms.positions + rng.normal(0.0, std, size=atoms.positions.shape)
        atoms.calc = EMT()
        out.append(_record(atoms))
    return out


def generate_emt(
    num_traj_per_kind: int = 5,
    frames_per_traj: int = 10,
    seed: int = 0,
    sizes: Sequence[int] = (2, 3),
    equilibration_steps: int = 50,
    md_interval: int = 10,
    cache_dir: Optional[PathLike] = None,
    use_cache: bool = True,
) -> Dict[str, np.ndarray]:
    """Generate (or load from the cache) all frames of all kinds, as flat arrays.

    Args:
        num_traj_per_kind: trajectories of each of the 4 kinds (>= 3, so every split gets one).
        frames_per_traj: frames recorded per trajectory.
        seed: base seed (see the module docstring).
        sizes: supercell repeats of the conventional 4-atom cell; trajectory ``j`` of a kind uses
            ``sizes[j % len(sizes)]`` (default: 2 -> 32 atoms, 3 -> 108 atoms).
        equilibration_steps: MD steps discarded before the first frame.
        md_interval: MD steps between recorded frames.
        cache_dir: cache directory (default ``$ESCN_DATA_DIR`` or ``~/.cache/escn/datasets``).
        use_cache: read/write the ``.npz`` cache.

    Returns:
        With F frames and A atoms over all frames: ``numbers`` (A,) int64, ``pos`` (A, 3),
        ``forces`` (A, 3), ``num_atoms`` (F,) int64 (frame ``f`` owns the atoms
        ``sum(num_atoms[:f]) : sum(num_atoms[:f + 1])``), ``cell`` (F, 3, 3), ``energy`` (F,),
        ``stress`` (F, 3, 3), and int64 (F,) labels ``kind`` (index into :data:`KINDS`),
        ``traj`` (global trajectory id, ``kind * num_traj_per_kind + j``), ``frame`` (index in
        the trajectory) and ``split`` (index into :data:`SPLITS`).  Floats are float64.
    """
    _require_ase()
    num_traj_per_kind = _check_int("num_traj_per_kind", num_traj_per_kind, 3)
    frames_per_traj = _check_int("frames_per_traj", frames_per_traj, 1)
    seed = _check_int("seed", seed, 0)
    sizes = _check_sizes(sizes)
    equilibration_steps = _check_int("equilibration_steps", equilibration_steps, 0)
    md_interval = _check_int("md_interval", md_interval, 1)
    params = {
        "ntraj": num_traj_per_kind,
        "frames": frames_per_traj,
        "seed": seed,
        "sizes": sizes,
        "equil": equilibration_steps,
        "interval": md_interval,
        "a": LATTICE_CONSTANT,
        "dt": _TIMESTEP_FS,
        "fric": _FRICTION_PER_FS,
    }

    def generate() -> Dict[str, np.ndarray]:
        records: List[Dict[str, np.ndarray]] = []
        labels: List[Tuple[int, int, int, int]] = []
        n_train, n_valid, _ = _split_counts(num_traj_per_kind)
        for k, kind in enumerate(KINDS):
            order = np.random.default_rng([seed, _SPLIT_SEED, k]).permutation(num_traj_per_kind)
            split_of = np.empty(num_traj_per_kind, dtype=np.int64)
            split_of[order[:n_train]] = 0
            split_of[order[n_train : n_train + n_valid]] = 1
            split_of[order[n_train + n_valid :]] = 2
            for j in range(num_traj_per_kind):
                rng = np.random.default_rng([seed, k, j])
                size = sizes[j % len(sizes)]
                if kind in _TEMPERATURES:
                    frames = _md_frames(kind, size, rng, frames_per_traj, equilibration_steps, md_interval)
                else:
                    frames = _static_frames(kind, size, rng, frames_per_traj)
                records.extend(frames)
                labels.extend((k, k * num_traj_per_kind + j, f, int(split_of[j])) for f in range(len(frames)))
        lab = np.asarray(labels, dtype=np.int64)
        return {
            "numbers": np.concatenate([r["numbers"] for r in records]),
            "pos": np.concatenate([r["pos"] for r in records]),
            "forces": np.concatenate([r["forces"] for r in records]),
            "num_atoms": np.asarray([len(r["numbers"]) for r in records], dtype=np.int64),
            "cell": np.stack([r["cell"] for r in records]),
            "energy": np.asarray([r["energy"] for r in records], dtype=np.float64),
            "stress": np.stack([r["stress"] for r in records]),
            "kind": lab[:, 0].copy(),
            "traj": lab[:, 1].copy(),
            "frame": lab[:, 2].copy(),
            "split": lab[:, 3].copy(),
        }

    return cached_arrays("emt_cu", params, generate, cache_dir, use_cache)


def emt_graphs(
    data: Dict[str, np.ndarray],
    split: Optional[str] = None,
    kinds: Optional[Sequence[str]] = None,
    dtype: Optional[torch.dtype] = None,
) -> List[AtomsGraph]:
    """Turn :func:`generate_emt` arrays into graphs, optionally filtered by split and kinds.

    Returns:
        One :class:`AtomsGraph` per frame (in generation order) with ``pos`` (n, 3),
        ``atom_types`` (n,) = atomic numbers (29: a force field trained on these frames stores
        ``atomic_numbers = [29]``, see :mod:`escn.data.species`), ``cell`` (3, 3), ``pbc`` all True, ``energy`` (),
        ``forces`` (n, 3), ``stress`` (3, 3) (ASE's sign convention, eV/Angstrom^3) and
        ``graph_attrs`` ``"kind"``, ``"traj"``, ``"frame"`` (() long).  No edges: call
        ``g.with_radius_graph(cutoff)``.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    kinds = _check_kinds(kinds)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    ptr = np.concatenate([[0], np.cumsum(data["num_atoms"])])
    keep_kinds = {KINDS.index(k) for k in kinds}
    graphs = []
    for f in range(len(data["num_atoms"])):
        if int(data["kind"][f]) not in keep_kinds:
            continue
        if split is not None and int(data["split"][f]) != SPLITS.index(split):
            continue
        a, b = int(ptr[f]), int(ptr[f + 1])
        graphs.append(
            AtomsGraph(
                pos=torch.as_tensor(data["pos"][a:b], dtype=dtype),
                atom_types=torch.as_tensor(data["numbers"][a:b], dtype=torch.long),
                cell=torch.as_tensor(data["cell"][f], dtype=dtype),
                pbc=torch.ones(3, dtype=torch.bool),
                energy=torch.tensor(float(data["energy"][f]), dtype=dtype),
                forces=torch.as_tensor(data["forces"][a:b], dtype=dtype),
                stress=torch.as_tensor(data["stress"][f], dtype=dtype),
                graph_attrs={name: torch.tensor(int(data[name][f])) for name in ("kind", "traj", "frame")},
            )
        )
    return graphs


def load_emt(
    split: str,
    kinds: Optional[Sequence[str]] = None,
    dtype: Optional[torch.dtype] = None,
    **generate_kwargs: Any,
) -> List[AtomsGraph]:
    """Graphs of one split (``"train"``, ``"valid"`` or ``"test"``), generated and cached on first use.

    Args:
        split: which split.
        kinds: subset of :data:`KINDS` (default: all four).
        dtype: floating dtype (default ``torch.get_default_dtype()``).
        **generate_kwargs: passed to :func:`generate_emt` (sizes, seed, cache_dir, ...).

    Returns:
        A list of :class:`AtomsGraph` (see :func:`emt_graphs`).
    """
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return emt_graphs(generate_emt(**generate_kwargs), split=split, kinds=kinds, dtype=dtype)


def emt_baseline(train: Sequence[AtomsGraph], test: Sequence[AtomsGraph]) -> Dict[str, float]:
    """Errors of the trivial model: energy = (mean training energy per atom) x n, forces = 0.

    Returns:
        ``energy_per_atom`` (eV, the fitted constant), ``energy_mae`` (meV/atom, MAE of the
        per-atom energy), ``force_mae`` (meV/Angstrom, mean ``|F|`` over all test force components),
        ``force_rmse`` (meV/Angstrom) and ``force_mae_<kind>`` for each kind present in ``test``.
    """
    for name, graphs in (("train", train), ("test", test)):
        if len(graphs) == 0:
            raise ValueError(f"{name} must contain at least one graph")
        if any(g.energy is None or g.forces is None for g in graphs):
            raise ValueError(f"every graph in {name} needs energy and forces")
    e_train = torch.stack([g.energy.double() for g in train])
    n_train = torch.tensor([g.num_nodes for g in train], dtype=torch.float64)
    e_atom = float(e_train.sum() / n_train.sum())
    per_atom_err = torch.stack([(g.energy.double() / g.num_nodes - e_atom).abs() for g in test])
    forces = torch.cat([g.forces.double() for g in test])
    out = {
        "energy_per_atom": e_atom,
        "energy_mae": 1000.0 * float(per_atom_err.mean()),
        "force_mae": 1000.0 * float(forces.abs().mean()),
        "force_rmse": 1000.0 * float(forces.pow(2).mean().sqrt()),
    }
    if all("kind" in g.graph_attrs for g in test):
        for k, kind in enumerate(KINDS):
            sel = [g.forces.double() for g in test if int(g.graph_attrs["kind"]) == k]
            if sel:
                out[f"force_mae_{kind}"] = 1000.0 * float(torch.cat(sel).abs().mean())
    return out
