"""Seeded, disk-cached generators for three benchmark tasks.

* :mod:`escn.datasets.tetris` -- the 8 tetrominoes of Tensor Field Networks' toy problem
  (chiral pair included), fully connected graphs, randomly rotated test set.
* :mod:`escn.datasets.nbody` -- EGNN's charged 5-body system with its own vectorised simulator:
  input the state after 3,100 steps, target the positions after 4,100 (EGNN's frame indices 30 and 40);
  3,000 / 2,000 / 2,000 trajectories.
* :mod:`escn.datasets.emt` -- Cu energies, forces and stresses from ASE's EMT potential (MD at
  300 K and 1,000 K, rattled and strained cells), split by trajectory; needs ``pip install escn[ase]``.

Generated arrays are cached as ``.npz`` files under ``cache_dir`` (default ``$ESCN_DATA_DIR`` or
``~/.cache/escn/datasets``); the file name holds every generation parameter and the seed, and a
given seed always gives the same arrays (:func:`array_digest` hashes them).
"""

from escn.datasets._cache import array_digest, cache_file_name, default_cache_dir
from escn.datasets.emt import emt_baseline, emt_graphs, generate_emt, load_emt
from escn.datasets.nbody import baseline_mse, integrate, load_nbody, nbody_graphs, simulate
from escn.datasets.tetris import mirror_partners, random_rotation_test_set, tetris_graphs, tetris_shapes

__all__ = [
    "array_digest",
    "baseline_mse",
    "cache_file_name",
    "default_cache_dir",
    "emt_baseline",
    "emt_graphs",
    "generate_emt",
    "integrate",
    "load_emt",
    "load_nbody",
    "mirror_partners",
    "nbody_graphs",
    "random_rotation_test_set",
    "simulate",
    "tetris_graphs",
    "tetris_shapes",
]
