"""The energy model as one traced graph, for ``torch.export`` and AOTInductor.

An :class:`escn.models.ESCN` computes forces and stress with ``torch.autograd.grad`` inside ``forward``, which
``torch.export`` cannot capture directly. :func:`trace_energy_model` first traces forward *and* the derivatives
with ``make_fx`` (symbolic shapes): the autograd engine runs during tracing, so the backward pass is recorded as
ordinary operators (the ``escn`` custom operators' backward formulas are again ``escn`` operators) in one
forward-only graph. :func:`export_energy_model` exports that graph with the numbers of atoms and edges as
``torch.export.Dim`` dimensions, and :func:`deploy` compiles it with AOTInductor into a ``.pt2`` package that
:class:`escn.ase.Calculator` runs.

Inputs are :class:`escn.data.Batch` objects (a registered pytree) with the fields of the example batch present
(``pos``, ``batch``, ``ptr``, ``pbc``, ``atom_types``, ``cell``, ``edge_src``, ``edge_dst``, ``shift``; the
number of graphs is that of the example). Outputs: a dict with ``"energy"`` (B,), ``"forces"`` (N, 3) and, with
``compute_stress``, ``"stress"`` (B, 3, 3).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterator, cast

import torch
from torch import nn

from escn.data.batch import AtomsGraph, Batch, collate

Tensor = torch.Tensor

__all__ = [
    "example_batch",
    "export_batch",
    "DeployedModel",
    "batch_dynamic_shapes",
    "trace_energy_model",
    "export_energy_model",
    "deploy",
    "load_deployed",
    "EXPORTED_FIELDS",
]

#: the Batch fields an exported energy model takes (the others must be None)
EXPORTED_FIELDS = ("pos", "batch", "ptr", "pbc", "atom_types", "cell", "edge_src", "edge_dst", "shift")
_PER_NODE = ("pos", "batch", "atom_types")
_PER_EDGE = ("edge_src", "edge_dst", "shift")


def export_batch(batch: Batch) -> Batch:
    """``batch`` with only :data:`EXPORTED_FIELDS` (targets and extra attributes dropped), the input form of an
    exported energy model. ValueError if it has no cell or no edges."""
    if not isinstance(batch, Batch):
        raise TypeError(f"batch must be an escn.data.Batch, got {type(batch).__name__}")
    missing = [f for f in EXPORTED_FIELDS if getattr(batch, f) is None]
    if missing:
        raise ValueError(
            f"an exported energy model takes batches with {list(EXPORTED_FIELDS)}; this one has no "
            f"{missing} (give a cell, even for a molecule, and build the graph with with_radius_graph)"
        )
    return Batch(**{f: getattr(batch, f) for f in EXPORTED_FIELDS})


def batch_dynamic_shapes(batch: Batch, num_atoms: Any, num_edges: Any) -> list:
    """``dynamic_shapes`` for a :class:`Batch` argument of ``torch.export.export``: dimension 0 of the per-atom
    fields is ``num_atoms`` and of the per-edge fields ``num_edges`` (``torch.export.Dim`` objects); the others
    are static. One entry per leaf of the batch's pytree (its non-None fields, in field order)."""
    names = [f for f in batch.__dataclass_fields__ if getattr(batch, f) is not None]
    out: list = []
    for name in names:
        value = getattr(batch, name)
        if isinstance(value, dict):
            out.append({k: None for k in value})
        elif name in _PER_NODE:
            out.append({0: num_atoms})
        elif name in _PER_EDGE:
            out.append({0: num_edges})
        else:
            out.append(None)
    return out


@contextlib.contextmanager
def _no_duck_shapes() -> Iterator[None]:
    """Symbolic sizes that are equal in the example (e.g. 3 edges of 3 atoms, or N equal to a weight width) stay
    separate symbols, so the trace does not tie the numbers of atoms and edges to each other or to constants."""
    import torch.fx.experimental._config as fx_config

    with fx_config.patch(use_duck_shape=False):  # type: ignore[attr-defined]
        yield


class _EnergyOutputs(nn.Module):
    def __init__(self, model: nn.Module, compute_stress: bool) -> None:
        super().__init__()
        self.model = model
        self.compute_stress = compute_stress

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        out = self.model(batch, compute_forces=True, compute_stress=self.compute_stress)
        keys = ("energy", "forces", "stress") if self.compute_stress else ("energy", "forces")
        return {k: out[k] for k in keys}


def trace_energy_model(model: nn.Module, batch: Batch, compute_stress: bool = True) -> torch.fx.GraphModule:
    """Energy, forces (and stress) of ``model`` (eval mode) as one forward-only graph, traced with ``make_fx``
    and symbolic sizes from the example ``batch`` (its fields :data:`EXPORTED_FIELDS`). The parameters become
    constants of the graph. Call the result with a :class:`Batch` with the same fields."""
    from torch.fx.experimental.proxy_tensor import make_fx

    if model.training:
        raise ValueError(
            "trace_energy_model needs the model in eval mode (model.eval()): the traced graph "
            "computes forces without the training graph"
        )
    batch = export_batch(batch)
    wrapper = _EnergyOutputs(model, compute_stress)
    with _no_duck_shapes():
        return make_fx(wrapper, tracing_mode="symbolic", _allow_non_fake_inputs=True)(batch)


def export_energy_model(
    model: nn.Module, batch: Batch, compute_stress: bool = True, min_atoms: int = 2, min_edges: int = 1
) -> torch.export.ExportedProgram:
    """``torch.export`` of the energy model (energy, forces and, with ``compute_stress``, stress) with dynamic
    numbers of atoms (``>= min_atoms``) and edges (``>= min_edges``); the number of graphs is the example's."""
    traced = trace_energy_model(model, batch, compute_stress)
    batch = export_batch(batch)
    N = torch.export.Dim("num_atoms", min=min_atoms)
    E = torch.export.Dim("num_edges", min=min_edges)
    with _no_duck_shapes():
        return torch.export.export(traced, (batch,), dynamic_shapes=(batch_dynamic_shapes(batch, N, E),))


def example_batch(model: nn.Module, dtype: torch.dtype | None = None) -> Batch:
    """A periodic example structure for exporting ``model``: 8 atoms of its types on a simple cubic lattice with
    spacing ``0.6 * cutoff`` in a cube of twice that side, with its radius graph; in the model's dtype."""
    if dtype is None:
        dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    a = 0.6 * float(cast(Any, model).cutoff)
    grid = torch.tensor([[i, j, k] for i in range(2) for j in range(2) for k in range(2)], dtype=dtype) * a
    grid = grid + torch.linspace(0.0, 0.05 * a, 8, dtype=dtype)[:, None]  # not a perfect lattice
    types = torch.arange(8) % int(getattr(model, "num_atom_types", 1))
    cell = torch.eye(3, dtype=dtype) * 2 * a
    return collate([AtomsGraph(pos=grid, atom_types=types, cell=cell)]).with_radius_graph(
        float(cast(Any, model).cutoff)
    )


#: Inductor settings for packages and compiled models of this model family. For the MD benchmark's model (lmax 2,
#: mmax 2, 16 channels, 2 layers, float64), Inductor 2.13's vectorised C++ code generation fails on the per-graph
#: energy sum (an ``index_add_`` into a (num_graphs,) buffer, "AssertionError: isinstance(index, CppCSEVariable)
#: and index.is_vec"); scalar code generation compiles it. The tests' smaller models compile either way.
INDUCTOR_WORKAROUNDS: dict[str, Any] = {"cpp.simdlen": 1}

#: key of the package metadata that holds escn's own (JSON: cutoff, atomic_numbers, dtype, stress, num_graphs)
METADATA_KEY = "escn"


def deploy(model: nn.Module, example: Batch, path: str | os.PathLike, compute_stress: bool = True) -> str:
    """Write an AOTInductor package of the energy model to ``path`` (``.pt2``): the exported program of
    :func:`export_energy_model` compiled ahead of time by Inductor, in the dtype of the model. The package also
    records the model's ``cutoff``, ``atomic_numbers`` and dtype for :class:`escn.ase.Calculator`. Returns the
    path."""
    import torch._inductor

    ep = export_energy_model(model, example, compute_stress)
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    info = {
        "cutoff": float(cast(Any, model).cutoff),
        "atomic_numbers": None
        if getattr(model, "atomic_numbers", None) is None
        else list(cast(Any, model).atomic_numbers),
        "dtype": str(dtype).replace("torch.", ""),
        "stress": bool(compute_stress),
        "num_graphs": int(example.num_graphs),
    }
    return torch._inductor.aoti_compile_and_package(
        ep,
        package_path=os.fspath(path),
        inductor_configs={"aot_inductor.metadata": {METADATA_KEY: json.dumps(info)}, **INDUCTOR_WORKAROUNDS},
    )


class DeployedModel(nn.Module):
    """An AOTInductor package written by :func:`deploy`, with the protocol of :class:`escn.models.ESCN` that
    :class:`escn.ase.Calculator` uses: ``model(batch, compute_forces=True, compute_stress=False)`` -> dict,
    attributes ``cutoff``, ``atomic_numbers``, ``dtype``. ``batch`` must have the exported fields (a cell too)."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        import torch._inductor

        self.path = os.fspath(path)
        self.runner = torch._inductor.aoti_load_package(self.path)
        meta = self.runner.get_metadata()
        if METADATA_KEY not in meta:
            raise ValueError(
                f"{self.path} is an AOTInductor package without escn's metadata; write it with "
                "escn deploy (escn.models.export.deploy)"
            )
        info = json.loads(meta[METADATA_KEY])
        self.cutoff: float = info["cutoff"]
        self.atomic_numbers = None if info["atomic_numbers"] is None else tuple(info["atomic_numbers"])
        self.dtype: torch.dtype = getattr(torch, info["dtype"])
        self.has_stress: bool = info["stress"]
        self.num_graphs: int = info["num_graphs"]

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """Pickle, ``torch.save`` and ``copy.deepcopy`` keep the package's path and load the package again: a
        compiled package is a file, not Python state. Its dtype and device were fixed by :func:`deploy`, so
        ``.to()`` moves nothing (give ``escn deploy --dtype`` instead) and it has no meta or fake form."""
        return (type(self), (self.path,))

    def forward(self, batch: Batch, compute_forces: bool = True, compute_stress: bool = False) -> dict[str, Tensor]:
        if compute_stress and not self.has_stress:
            raise ValueError(f"{self.path} was deployed without stress (deploy(..., compute_stress=False))")
        if batch.num_graphs != self.num_graphs:
            raise ValueError(f"{self.path} takes batches of {self.num_graphs} graph(s), got {batch.num_graphs}")
        batch = export_batch(batch)
        if batch.pos.dtype != self.dtype:
            raise TypeError(f"batch.pos has dtype {batch.pos.dtype} but the deployed model is in {self.dtype}")
        return self.runner(batch)


def load_deployed(path: str | os.PathLike) -> DeployedModel:
    """The package written by :func:`deploy`, as a :class:`DeployedModel`."""
    return DeployedModel(path)
