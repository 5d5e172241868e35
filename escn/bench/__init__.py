"""Benchmarks of the eSCN convolution against full-CG TFN (and e3nn): the high-l scaling sweep of ``escn bench``,
and the building-block benchmarks, each a runnable module (``python -m escn.bench.<name> --help``).

:mod:`escn.bench.scaling` runs the sweep, :mod:`escn.bench.report` prints and saves it, and
:mod:`escn.bench.blocks` times single building blocks. The runnable modules: ``aggregation``, ``allocator``,
``edge_rotation``, ``model_step``, ``o3``, ``radius_graph``, ``rotation``, ``so2_stage`` and ``tfn_frame_map``.
matplotlib and e3nn are optional (``pip install escn[bench]``) and imported only when used.

The names below are loaded from :mod:`escn.bench.scaling` on first use, so that running one of the modules does
not import the others first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from escn.bench.scaling import METHODS, Row, SweepConfig, SweepResult, default_methods, node_irreps, run_sweep

__all__ = ["METHODS", "Row", "SweepConfig", "SweepResult", "default_methods", "node_irreps", "run_sweep"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("escn.bench.scaling"), name)
    raise AttributeError(f"module 'escn.bench' has no attribute {name!r}")
