"""Charged N-body system (the 5-body task of EGNN, Satorras et al. 2021), with a vectorised simulator.

Physics and protocol
--------------------
* ``N = 5`` particles of unit mass with charges ``q_i = +1`` or ``-1`` (probability 1/2 each).
* Coulomb force ``F_i = sum_{j != i} q_i q_j (x_i - x_j) / |x_i - x_j|^3`` (like charges repel;
  the potential is ``U = sum_{i<j} q_i q_j / |x_i - x_j|``); each Cartesian component of the
  *total* force on a particle is clipped to ``[-100, 100]`` (``max_force``).
* Semi-implicit (symplectic) Euler with ``dt = 0.001``: every step first kicks
  ``v <- v + F(x) dt``, then drifts ``x <- x + v dt`` with the new velocity.  No box, no walls.
* Initial positions ``x ~ N(0, 1)`` per coordinate; initial velocities of speed exactly 0.5 in
  uniformly random directions.
* Trajectories of 5,000 steps, sampled every 100 steps.  In :func:`simulate` / :func:`integrate`,
  **frame k is the state after k * 100 steps and frame 0 is the initial state**, so a 5,000-step
  run has frames 0..50 (51 frames).  The stored velocity of a frame is the one used in that
  frame's last drift.
* Task (the frames of EGNN's ``nbody_small`` set, which SEGNN reuses): input = the state after
  **3,100 steps** (positions, velocities, charges), target = the positions after **4,100 steps**
  (:data:`INPUT_STEP`, :data:`TARGET_STEP`), i.e. frames 31 and 41 of :func:`simulate`.  Why
  3,100 and not 3,000: the published generator (``n_body_system/dataset/synthetic_sim.py`` of
  the ``vgsatorras/egnn`` repository; ``RobDHess/Steerable-E3-GNN`` has the same one in ``nbody/dataset``)
  stores ``T / sample_freq - 1 = 49`` frames of a 5,000-step run: its first stored frame (index 0)
  is written after 100 steps (the initial state it writes there first is overwritten), so its
  index k holds the state after ``100 (k + 1)`` steps.  Both repositories' data loaders
  (``dataset_nbody.py``, ``nbody_small``) take input index 30 and target index 40, i.e. steps
  3,100 and 4,100.  The integrator is the same: the generator kicks once with the initial force,
  then repeats drift, store, kick, which stores after k steps exactly the state after k of this
  module's kick-then-drift steps, with the velocity of the last drift.  Nothing after step 4,100
  is used, and the simulation is causal, so :func:`load_nbody` stops there (the frames it
  returns are bit-identical to those of a 5,000-step run).
* Splits: 3,000 train / 2,000 valid / 2,000 test trajectories.  Trajectory ``i`` of split ``s``
  draws its initial conditions from ``numpy.random.default_rng([seed, code(s), i])`` with
  ``code = {"train": 0, "valid": 1, "test": 2}``: the splits use distinct seeds, and the first
  ``n`` trajectories of a split do not depend on how many are generated.

Determinism: the integrator uses only IEEE-exact float64 operations (+, -, *, /, sqrt) in a fixed
order and no BLAS, so a given seed gives bit-identical arrays regardless of thread count or
chunking.

Measured on this project's 2-core CPU machine (numpy float64, seed 0):

* simulating all 7,000 trajectories for the full 5,000 steps (:func:`simulate`): 6.4-7.6 s over
  two runs (0.4 s of it drawing initial conditions); :func:`load_nbody` for all three splits
  (then cached): 5.6-6.7 s when it stopped at step 4,000 (now 4,100, 2.5% more steps); a cached
  split loads in milliseconds.
* baselines, mean squared error over all coordinates of the target positions (step 4,100):

  =============================================  ======  ======  ======
  baseline                                        train   valid   test
  =============================================  ======  ======  ======
  no motion (predict the input positions)        0.2693  0.2713  0.2688
  constant velocity x + v t, t = 0.7339 fitted   0.0842  0.0878  0.0855
  constant velocity x + v t, t = 1 (elapsed)     0.1086  0.1146  0.1114
  =============================================  ======  ======  ======

  ``t`` is fitted by least squares on the 3,000 training trajectories.  It is well below the
  elapsed time 1.0 (1,000 steps of 0.001) because velocities do not persist: fitted per speed
  bin, ``t`` falls from 0.84 for the slower half of the particles to 0.31 for the fastest 1%
  (speed > 2.3, bound pairs of opposite charge whose velocity turns around).  With the frames
  one sample earlier (input after 3,000 steps, target after 4,000) these were 0.2682 (no motion)
  and 0.0868 (fitted constant velocity) on the test split.
* the protocol's dynamics are not energy-conserving in general: in 1.2% of the sampled frames
  some force component exceeds the clip, and over 5,000 steps the total energy (kinetic +
  Coulomb) moves by a median 0.056 but by more than 3.8 in 10% of trajectories (close encounters
  at dt = 0.001).  Away from encounters the integrator conserves energy to O(dt).
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from escn._util import check_int as _check_int

from ..data.batch import AtomsGraph
from ..o3.irreps import Irreps
from ._cache import PathLike, cached_arrays

__all__ = [
    "SPLIT_SIZES",
    "INPUT_STEP",
    "TARGET_STEP",
    "coulomb_forces",
    "potential_energy",
    "total_energy",
    "initial_conditions",
    "integrate",
    "simulate",
    "load_nbody",
    "nbody_graphs",
    "baseline_mse",
    "nbody_task_graphs",
    "predict_positions",
]

SPLIT_SIZES: Dict[str, int] = {"train": 3000, "valid": 2000, "test": 2000}
_SPLIT_CODES: Dict[str, int] = {"train": 0, "valid": 1, "test": 2}

DT = 0.001
MAX_FORCE = 100.0
SPEED = 0.5
NUM_PARTICLES = 5
SAMPLE_EVERY = 100
#: steps simulated before the input state and before the target positions (EGNN's indices 30 and 40)
INPUT_STEP = 3100
TARGET_STEP = 4100
#: the same states as frame indices of :func:`simulate` (frame k = after k * SAMPLE_EVERY steps)
FRAME_INPUT = INPUT_STEP // SAMPLE_EVERY  # 31
FRAME_TARGET = TARGET_STEP // SAMPLE_EVERY  # 41
_CHUNK = 1024  # trajectories integrated together (keeps the working set in cache)

SeedLike = Union[int, Sequence[int]]


# --------------------------------------------------------------------------- checks


def _check_positive(name: str, value: object, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (value > 0) or (math.isinf(value) and not allow_inf) or math.isnan(value):
        raise ValueError(f"{name} must be a {'positive' if allow_inf else 'finite positive'} number, got {value}")
    return value


def _seed_tuple(seed: object) -> Tuple[int, ...]:
    if isinstance(seed, bool):
        raise TypeError("seed must be a non-negative int or a sequence of them, got bool")
    if isinstance(seed, Integral):
        seed = (seed,)
    if not isinstance(seed, (tuple, list)) or len(seed) == 0:
        raise TypeError(f"seed must be a non-negative int or a non-empty sequence of them, got {seed!r}")
    for s in seed:
        if isinstance(s, bool) or not isinstance(s, Integral) or s < 0:
            raise ValueError(f"seed must contain non-negative ints only, got {seed!r}")
    return tuple(int(s) for s in seed)


def _check_split(split: object) -> str:
    if not isinstance(split, str):
        raise TypeError(f"split must be one of {sorted(SPLIT_SIZES)}, got {type(split).__name__}")
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be one of {sorted(SPLIT_SIZES)}, got {split!r}")
    return split


def _check_system(pos: np.ndarray, charges: np.ndarray, vel: Optional[np.ndarray] = None) -> Tuple[np.ndarray, ...]:
    pos = np.asarray(pos, dtype=np.float64)
    charges = np.asarray(charges, dtype=np.float64)
    if pos.ndim < 2 or pos.shape[-1] != 3:
        raise ValueError(f"pos must have shape (..., N, 3), got {pos.shape}")
    try:
        charges = np.broadcast_to(charges, pos.shape[:-1])
    except ValueError:
        raise ValueError(
            f"charges must have shape {pos.shape[:-1]} (pos without its last axis) or broadcast to it, got {charges.shape}"
        ) from None
    if vel is not None:
        vel = np.asarray(vel, dtype=np.float64)
        if vel.shape != pos.shape:
            raise ValueError(f"vel must have the shape of pos {pos.shape}, got {vel.shape}")
        return pos, charges, vel
    return pos, charges


# --------------------------------------------------------------------------- physics


def coulomb_forces(pos: np.ndarray, charges: np.ndarray, max_force: Optional[float] = MAX_FORCE) -> np.ndarray:
    """Clipped Coulomb forces ``F_i = clip(sum_{j != i} q_i q_j (x_i - x_j) / |x_i - x_j|^3)``.

    Args:
        pos: (..., N, 3) positions.
        charges: (..., N) charges (broadcast against ``pos[..., 0]``).
        max_force: each component of the total force is clipped to ``[-max_force, max_force]``;
            ``None`` disables clipping.

    Returns:
        (..., N, 3) float64 forces.
    """
    pos, charges = _check_system(pos, charges)
    if max_force is not None:
        max_force = _check_positive("max_force", max_force, allow_inf=True)
    d = pos[..., :, None, :] - pos[..., None, :, :]  # (..., N, N, 3): x_i - x_j
    r2 = (d * d).sum(-1)
    n = pos.shape[-2]
    eye = np.eye(n, dtype=bool)
    r2 = np.where(eye, np.inf, r2)
    coef = charges[..., :, None] * charges[..., None, :] / (r2 * np.sqrt(r2))
    forces = (coef[..., None] * d).sum(-2)
    if max_force is not None:
        forces = np.clip(forces, -max_force, max_force)
    return forces


def potential_energy(pos: np.ndarray, charges: np.ndarray) -> np.ndarray:
    """Coulomb energy ``sum_{i<j} q_i q_j / |x_i - x_j|`` of (..., N, 3) positions -> (...)."""
    pos, charges = _check_system(pos, charges)
    i, j = np.triu_indices(pos.shape[-2], 1)
    r = np.sqrt(((pos[..., i, :] - pos[..., j, :]) ** 2).sum(-1))
    return (charges[..., i] * charges[..., j] / r).sum(-1)


def total_energy(pos: np.ndarray, vel: np.ndarray, charges: np.ndarray) -> np.ndarray:
    """Kinetic (unit masses) plus Coulomb energy of (..., N, 3) positions and velocities -> (...).

    This is the energy of the unclipped dynamics; it is conserved up to O(dt) by the integrator
    while no force component reaches the clip.
    """
    pos, charges, vel = _check_system(pos, charges, vel)
    return 0.5 * (vel * vel).sum((-1, -2)) + potential_energy(pos, charges)


def initial_conditions(
    num_traj: int, seed: SeedLike, num_particles: int = NUM_PARTICLES, speed: float = SPEED
) -> Dict[str, np.ndarray]:
    """Random initial states; trajectory ``i`` uses ``numpy.random.default_rng([*seed, i])``.

    Per trajectory: positions ``N(0, 1)`` per coordinate, then velocity directions (normalised
    Gaussian vectors, i.e. uniform on the sphere) scaled to ``speed``, then charges
    ``+-1`` with probability 1/2.

    Returns:
        ``pos`` (B, N, 3), ``vel`` (B, N, 3), ``charges`` (B, N), all float64.
    """
    num_traj = _check_int("num_traj", num_traj, 0)
    num_particles = _check_int("num_particles", num_particles, 1)
    speed = _check_positive("speed", speed)
    seed = _seed_tuple(seed)
    pos = np.empty((num_traj, num_particles, 3))
    vel = np.empty((num_traj, num_particles, 3))
    charges = np.empty((num_traj, num_particles))
    for t in range(num_traj):
        rng = np.random.default_rng([*seed, t])
        pos[t] = rng.standard_normal((num_particles, 3))
        direction = rng.standard_normal((num_particles, 3))
        vel[t] = speed * direction / np.sqrt((direction * direction).sum(-1, keepdims=True))
        charges[t] = 2.0 * rng.integers(0, 2, size=num_particles) - 1.0
    return {"pos": pos, "vel": vel, "charges": charges}


def integrate(
    pos: np.ndarray,
    vel: np.ndarray,
    charges: np.ndarray,
    steps: int,
    sample_every: int = SAMPLE_EVERY,
    dt: float = DT,
    max_force: Optional[float] = MAX_FORCE,
) -> Dict[str, np.ndarray]:
    """Integrate many systems at once with semi-implicit Euler (kick, then drift).

    One step: ``v <- v + clip(F(x)) dt`` then ``x <- x + v dt`` (unit masses).

    Args:
        pos, vel: (B, N, 3) initial positions and velocities.
        charges: (B, N).
        steps: number of steps, a multiple of ``sample_every``.
        sample_every: steps between stored frames.
        dt: time step.
        max_force: component-wise clip of the total force (``None``: no clipping).

    Returns:
        ``pos`` and ``vel`` (B, T + 1, N, 3) with ``T = steps // sample_every``: frame ``k`` is
        the state after ``k * sample_every`` steps (frame 0 = the initial state).
    """
    pos, charges, vel = _check_system(pos, charges, vel)
    if pos.ndim != 3:
        raise ValueError(f"pos must have shape (B, N, 3), got {pos.shape}")
    steps = _check_int("steps", steps, 0)
    sample_every = _check_int("sample_every", sample_every, 1)
    if steps % sample_every:
        raise ValueError(f"steps ({steps}) must be a multiple of sample_every ({sample_every})")
    dt = _check_positive("dt", dt)
    clip = None if max_force is None else _check_positive("max_force", max_force, allow_inf=True)
    num_traj, n, _ = pos.shape
    frames = steps // sample_every + 1
    out_pos = np.empty((num_traj, frames, n, 3))
    out_vel = np.empty((num_traj, frames, n, 3))
    pi, pj = np.triu_indices(n, 1)
    for start in range(0, num_traj, _CHUNK):
        stop = min(start + _CHUNK, num_traj)
        # structure-of-arrays layout (N, 3, b): every elementwise op runs over contiguous trajectories
        # (always copies: for a single trajectory the transposed view is already contiguous and
        # ascontiguousarray would hand back the caller's array to be updated in place)
        x = pos[start:stop].transpose(1, 2, 0).copy(order="C")
        v = vel[start:stop].transpose(1, 2, 0).copy(order="C")
        q = charges[start:stop].T
        qq = q[pi] * q[pj]  # (P, b)
        force = np.empty_like(x)
        out_pos[start:stop, 0] = x.transpose(2, 0, 1)
        out_vel[start:stop, 0] = v.transpose(2, 0, 1)
        for step in range(1, steps + 1):
            d = x[pi] - x[pj]  # (P, 3, b): x_i - x_j for i < j
            r2 = d[:, 0] * d[:, 0]
            r2 += d[:, 1] * d[:, 1]
            r2 += d[:, 2] * d[:, 2]
            d *= (qq / (r2 * np.sqrt(r2)))[:, None, :]  # pair force on i (minus on j)
            force.fill(0.0)
            for p in range(len(pi)):  # fixed summation order: deterministic
                force[pi[p]] += d[p]
                force[pj[p]] -= d[p]
            if clip is not None:
                np.clip(force, -clip, clip, out=force)
            force *= dt
            v += force  # kick
            x += v * dt  # drift
            if step % sample_every == 0:
                k = step // sample_every
                out_pos[start:stop, k] = x.transpose(2, 0, 1)
                out_vel[start:stop, k] = v.transpose(2, 0, 1)
    return {"pos": out_pos, "vel": out_vel}


def simulate(
    num_traj: int,
    seed: SeedLike,
    steps: int = 5000,
    sample_every: int = SAMPLE_EVERY,
    dt: float = DT,
    num_particles: int = NUM_PARTICLES,
    max_force: Optional[float] = MAX_FORCE,
) -> Dict[str, np.ndarray]:
    """Draw initial conditions (:func:`initial_conditions`) and integrate them (:func:`integrate`).

    Args:
        num_traj: number of trajectories B.
        seed: an int or a sequence of ints; trajectory ``i`` uses ``default_rng([*seed, i])``.
        steps, sample_every, dt, max_force: see :func:`integrate`.
        num_particles: N.

    Returns:
        ``pos``, ``vel`` (B, T + 1, N, 3) with ``T = steps // sample_every`` (frame ``k`` = after
        ``k * sample_every`` steps, frame 0 = initial) and ``charges`` (B, N); float64.
    """
    init = initial_conditions(num_traj, seed, num_particles)
    traj = integrate(init["pos"], init["vel"], init["charges"], steps, sample_every, dt, max_force)
    return {"pos": traj["pos"], "vel": traj["vel"], "charges": init["charges"]}


# --------------------------------------------------------------------------- data set


def load_nbody(
    split: str,
    num_traj: Optional[int] = None,
    seed: int = 0,
    cache_dir: Optional[PathLike] = None,
    use_cache: bool = True,
) -> Dict[str, np.ndarray]:
    """The EGNN charged 5-body task for one split (generated on first use, then cached).

    Args:
        split: ``"train"`` (3,000 trajectories), ``"valid"`` or ``"test"`` (2,000 each).
        num_traj: use only the first ``num_traj`` trajectories of the split (default: all).
            They are the same as the first ones of the full split.
        seed: base seed; the split's trajectories use ``default_rng([seed, code(split), i])``.
        cache_dir: cache directory (default ``$ESCN_DATA_DIR`` or ``~/.cache/escn/datasets``).
        use_cache: read/write the ``.npz`` cache.

    Returns:
        float64 arrays ``pos`` (B, 5, 3) and ``vel`` (B, 5, 3) after 3,100 steps (:data:`INPUT_STEP`),
        ``charges`` (B, 5), ``target`` (B, 5, 3) positions after 4,100 steps (:data:`TARGET_STEP`).
    """
    split = _check_split(split)
    num_traj = SPLIT_SIZES[split] if num_traj is None else _check_int("num_traj", num_traj, 1)
    seed = _check_int("seed", seed, 0)
    steps = TARGET_STEP
    params = {
        "split": split,
        "n": num_traj,
        "seed": seed,
        "dt": DT,
        "steps": steps,
        "every": SAMPLE_EVERY,
        "frames": (FRAME_INPUT, FRAME_TARGET),
        "maxf": MAX_FORCE,
        "speed": SPEED,
        "particles": NUM_PARTICLES,
    }

    def generate() -> Dict[str, np.ndarray]:
        traj = simulate(num_traj, (seed, _SPLIT_CODES[split]), steps=steps)
        return {
            "pos": traj["pos"][:, FRAME_INPUT].copy(),
            "vel": traj["vel"][:, FRAME_INPUT].copy(),
            "charges": traj["charges"],
            "target": traj["pos"][:, FRAME_TARGET].copy(),
        }

    return cached_arrays("nbody", params, generate, cache_dir, use_cache)


def _full_graph(n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    src, dst = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = src != dst
    return src[keep], dst[keep]


def nbody_graphs(data: Mapping[str, np.ndarray], dtype: Optional[torch.dtype] = None) -> List[AtomsGraph]:
    """One fully connected :class:`AtomsGraph` per trajectory (no self-edges).

    Args:
        data: arrays as returned by :func:`load_nbody`.
        dtype: floating dtype of the tensors (default ``torch.get_default_dtype()``).

    Returns:
        B graphs with ``pos`` (5, 3) of the input state, ``atom_types`` (5,) = 0 for charge -1 and
        1 for +1, edges ``i -> j`` for all ``i != j`` (20), and ``node_attrs`` ``"vel"`` (5, 3),
        ``"charge"`` (5, 1) and ``"target"`` (5, 3) (the target positions).
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a mapping of arrays (see load_nbody), got {type(data).__name__}")
    missing = {"pos", "vel", "charges", "target"} - set(data)
    if missing:
        raise ValueError(f"data is missing the arrays {sorted(missing)}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    pos = torch.as_tensor(np.asarray(data["pos"]), dtype=dtype)
    vel = torch.as_tensor(np.asarray(data["vel"]), dtype=dtype)
    charges = torch.as_tensor(np.asarray(data["charges"]), dtype=dtype)
    target = torch.as_tensor(np.asarray(data["target"]), dtype=dtype)
    if pos.dim() != 3 or pos.shape[-1] != 3 or vel.shape != pos.shape or target.shape != pos.shape:
        raise ValueError(
            f"pos, vel and target must all have shape (B, N, 3), got {tuple(pos.shape)}, {tuple(vel.shape)}, {tuple(target.shape)}"
        )
    if charges.shape != pos.shape[:2]:
        raise ValueError(f"charges must have shape (B, N) = {tuple(pos.shape[:2])}, got {tuple(charges.shape)}")
    src, dst = _full_graph(pos.shape[1])
    types = (charges > 0).long()
    return [
        AtomsGraph(
            pos=pos[b],
            atom_types=types[b],
            edge_src=src,
            edge_dst=dst,
            node_attrs={"vel": vel[b], "charge": charges[b].unsqueeze(-1), "target": target[b]},
        )
        for b in range(pos.shape[0])
    ]


def baseline_mse(
    split: str = "test",
    seed: int = 0,
    num_traj: Optional[int] = None,
    num_train: Optional[int] = None,
    cache_dir: Optional[PathLike] = None,
    use_cache: bool = True,
) -> Dict[str, float]:
    """Mean squared error (over all coordinates) of two trivial predictors of the target positions.

    * ``"no_motion"``: the input positions (1,000 steps earlier).
    * ``"constant_velocity"``: ``x + v t`` with the single time ``t`` minimising the squared
      error on the training split (first ``num_train`` trajectories), reported as ``"t"``.

    Returns:
        ``{"no_motion": ..., "constant_velocity": ..., "t": ...}``.
    """
    train = load_nbody("train", num_train, seed, cache_dir, use_cache)
    disp = train["target"] - train["pos"]
    t = float((train["vel"] * disp).sum() / (train["vel"] * train["vel"]).sum())
    data = (
        train
        if (split == "train" and num_traj == num_train)
        else load_nbody(split, num_traj, seed, cache_dir, use_cache)
    )
    return {
        "no_motion": float(((data["target"] - data["pos"]) ** 2).mean()),
        "constant_velocity": float(((data["target"] - data["pos"] - t * data["vel"]) ** 2).mean()),
        "t": t,
    }


def nbody_task_graphs(
    split: str,
    num_traj: Optional[int] = None,
    seed: int = 0,
    cache_dir: Optional[PathLike] = None,
    dtype: Optional[torch.dtype] = None,
    charge_flip: bool = False,
    inputs: str = "velocity",
) -> List[AtomsGraph]:
    """The task as training items: :func:`nbody_graphs` of :func:`load_nbody` with node inputs (the velocity,
    by default) and the displacement as the node target.

    Args:
        split, num_traj, seed, cache_dir: as :func:`load_nbody`.
        dtype: floating dtype of the tensors (default ``torch.get_default_dtype()``).
        charge_flip: also return every trajectory with all charges negated (appended after the originals).
            The forces depend on charges only through products ``q_i q_j``, so the flipped system follows
            exactly the same path: an exact symmetry of the data that the atom-type embedding does not
            know, offered as augmentation of the training split.
        inputs: the node inputs (:data:`NODE_INPUTS`): ``"velocity"`` (5, 3), irreps ``1x1o``;
            ``"speed_velocity"`` (5, 4) = speed, velocity, irreps ``1x0e + 1x1o``; or ``"velocity_centroid"``
            (5, 7) = speed, velocity, position minus the system's centroid, irreps ``1x0e + 2x1o`` (SEGNN's
            node inputs). All are invariant under translations. The speed matters: escn's message blocks see
            a node's velocity linearly, and their gates act only on its projections on the edge directions,
            so ``|v|`` itself is only approximated inside the network.

    Returns:
        B graphs (2B with ``charge_flip``) as :func:`nbody_graphs`, plus ``node_features`` as ``inputs`` says
        (of the input state) and ``node_attrs["node_vectors"]`` (5, 3) = target minus input
        positions, the target of a model's ``"node_vectors"`` output (its MSE is the task's position MSE).
    """
    if not isinstance(charge_flip, bool):
        raise TypeError(f"charge_flip must be a bool, got {type(charge_flip).__name__}")
    _check_inputs(inputs)
    data = load_nbody(split, num_traj, seed, cache_dir)
    if charge_flip:
        data = {
            k: np.concatenate([v, -v if k == "charges" else v])
            for k, v in data.items()
            if k in ("pos", "vel", "charges", "target")
        }
    graphs = _node_inputs(nbody_graphs(data, dtype=dtype), inputs)
    for g in graphs:
        g.node_attrs["node_vectors"] = g.node_attrs["target"] - g.pos
    return graphs


#: node input sets of :func:`nbody_task_graphs`: name -> irreps of ``node_features``
NODE_INPUTS: Dict[str, str] = {"velocity": "1x1o", "speed_velocity": "1x0e + 1x1o", "velocity_centroid": "1x0e + 2x1o"}


def _check_inputs(inputs: object) -> str:
    if not isinstance(inputs, str) or inputs not in NODE_INPUTS:
        raise ValueError(f"inputs must be one of {sorted(NODE_INPUTS)}, got {inputs!r}")
    return inputs


def _node_inputs(graphs: List[AtomsGraph], inputs: str = "velocity") -> List[AtomsGraph]:
    """Set each graph's ``node_features`` to the input set ``inputs`` (see :func:`nbody_task_graphs`)."""
    for g in graphs:
        vel = g.node_attrs["vel"]
        parts = [vel] if inputs == "velocity" else [vel.norm(dim=1, keepdim=True), vel]
        if inputs == "velocity_centroid":
            parts.append(g.pos - g.pos.mean(dim=0, keepdim=True))
        g.node_features = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return graphs


def predict_positions(
    model: Union[torch.nn.Module, str, os.PathLike],
    pos: Union[np.ndarray, torch.Tensor],
    vel: Union[np.ndarray, torch.Tensor],
    charges: Union[np.ndarray, torch.Tensor],
    batch_size: int = 1000,
) -> np.ndarray:
    """Positions 1,000 steps (one time unit) ahead, predicted by a trained model.

    >>> from escn.datasets.nbody import load_nbody, predict_positions
    >>> d = load_nbody("test", 10)
    >>> x40 = predict_positions("runs/nbody/best.pt", d["pos"], d["vel"], d["charges"])  # doctest: +SKIP

    Args:
        model: a model with a ``"node_vectors"`` output trained on :func:`nbody_task_graphs` (e.g. by
            ``escn train examples/configs/nbody.toml``), or the path of its checkpoint. Its node inputs are
            the set of :data:`NODE_INPUTS` whose irreps match ``model.config["node_input_irreps"]``.
        pos: (B, 5, 3) positions; vel: (B, 5, 3) velocities; charges: (B, 5) with values +1 / -1.
        batch_size: systems per forward pass.

    Returns:
        (B, 5, 3) float64 predicted positions.
    """
    if not isinstance(model, torch.nn.Module):
        from ..models import load

        model = load(model)
    model.eval()
    pos_a = np.asarray(pos, dtype=np.float64)
    vel_a = np.asarray(vel, dtype=np.float64)
    q = np.asarray(charges, dtype=np.float64)
    if pos_a.ndim != 3 or pos_a.shape[-1] != 3:
        raise ValueError(f"pos must have shape (B, N, 3), got {pos_a.shape}")
    if vel_a.shape != pos_a.shape:
        raise ValueError(f"vel must have the shape of pos {pos_a.shape}, got {vel_a.shape}")
    if q.shape != pos_a.shape[:2]:
        raise ValueError(f"charges must have shape {pos_a.shape[:2]}, got {q.shape}")
    if not np.all(np.isin(q, (-1.0, 1.0))):
        raise ValueError("charges must be +1 or -1")
    dtype = next(model.parameters()).dtype
    data = {"pos": pos_a, "vel": vel_a, "charges": q, "target": pos_a}
    irreps = Irreps(getattr(model, "config", {}).get("node_input_irreps", "1x1o"))
    names = [k for k, v in NODE_INPUTS.items() if Irreps(v) == irreps]
    if not names:
        raise ValueError(f"the model takes node inputs {irreps}, none of the n-body input sets {NODE_INPUTS}")
    graphs = _node_inputs(nbody_graphs(data, dtype=dtype), names[0])
    from ..data import collate

    out = []
    with torch.no_grad():
        for i in range(0, len(graphs), batch_size):
            b = collate(graphs[i : i + batch_size]).with_radius_graph(model.cutoff)
            out.append((b.pos + model(b)["node_vectors"]).double().reshape(-1, pos_a.shape[1], 3))
    return torch.cat(out).numpy()
