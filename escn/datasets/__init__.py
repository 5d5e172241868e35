"""Seeded, disk-cached generators for three benchmark tasks.

* :mod:`escn.datasets.tetris` — the 8 tetrominoes of Tensor Field Networks' toy problem.
* :mod:`escn.datasets.nbody` — EGNN's charged 5-body system (own vectorised simulator).
* :mod:`escn.datasets.emt` — Cu energies, forces and stresses from ASE's EMT potential.
"""
