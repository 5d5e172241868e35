"""Benchmarks of the eSCN convolution against full-CG TFN (and e3nn): the high-l scaling sweep of ``escn bench``.

:mod:`escn.bench.scaling` runs the sweep, :mod:`escn.bench.report` prints and saves it, and
:mod:`escn.bench.blocks` times single building blocks (also used by the scripts in ``benchmarks/``).
matplotlib and e3nn are optional (``pip install escn[bench]``) and imported only when used.
"""

from escn.bench.scaling import METHODS, Row, SweepConfig, SweepResult, default_methods, node_irreps, run_sweep

__all__ = ["METHODS", "Row", "SweepConfig", "SweepResult", "default_methods", "node_irreps", "run_sweep"]
