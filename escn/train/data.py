"""Data for training: loading sources, graph/dtype preparation, seeded epoch order, rank shards.

Sources (see :class:`escn.train.config.DataSource`):

* a file written with ``torch.save(list_of_AtomsGraph)`` (``.pt`` / ``.pth`` / ``.pkl`` / anything
  ``torch.load`` reads);
* any other file is read with ``ase.io.read(path, index=":")`` when ASE is installed
  (extxyz with energy / forces / stress);
* ``"package.module:function"``: called with the source's ``kwargs``; must return a list (or a
  ``Dataset``) of :class:`~escn.data.AtomsGraph`.

Batch order: epoch ``e`` visits a permutation drawn from a generator seeded with
``seed * 1_000_003 + e``, cut into consecutive global batches of ``batch_size`` graphs (the last one
may be smaller).  The order is a pure function of ``(seed, epoch)``, so a resumed run re-derives it
and skips to the saved position.  Under DDP, rank ``r`` of ``W`` takes ``global_batch[r::W]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from escn._util import import_object
from escn.data import AtomsGraph, Batch, collate

from .config import ConfigError, DataSource

__all__ = ["load_source", "PreparedDataset", "epoch_permutation", "global_batches", "shard", "split_train_valid",
           "ShardLoader", "collate_or_none"]

_TORCH_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".torch")


def _is_callable_spec(source: str) -> bool:
    if os.path.exists(source) or ":" not in source:
        return False
    module, _, attr = source.partition(":")
    return all(p.isidentifier() for p in module.split(".")) and all(p.isidentifier() for p in attr.split("."))


def _call_source(spec: str, kwargs: Dict[str, Any]) -> Any:
    try:
        fn = import_object(spec, "data source")
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if not callable(fn):
        raise ConfigError(f"data source {spec!r} is not callable")
    try:
        return fn(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"data source {spec!r} rejected kwargs {sorted(kwargs)}: {exc}") from exc


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals([AtomsGraph]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - reported with the path below
        raise ConfigError(f"data file {str(path)!r}: cannot read it with torch.load as a list of AtomsGraph "
                          f"({type(exc).__name__}: {exc})") from exc


def _ase_stress(atoms: Any) -> Optional[Any]:
    try:
        return atoms.get_stress(voigt=False)
    except Exception:  # noqa: BLE001 - no stress in this frame
        return None


def _ase_load(path: Path) -> List[AtomsGraph]:
    try:
        import ase.io
    except ImportError:
        raise ConfigError(f"data file {str(path)!r}: reading non-torch files needs ASE (pip install 'escn[ase]'); "
                          "or save a list of AtomsGraph with torch.save to a .pt file") from None
    try:
        frames = ase.io.read(str(path), index=":")
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"data file {str(path)!r}: ASE cannot read it ({type(exc).__name__}: {exc})") from exc
    graphs = []
    for atoms in frames:
        energy = forces = stress = None
        if atoms.calc is not None:
            results = atoms.calc.results
            energy = results.get("energy", results.get("free_energy"))
            forces = results.get("forces")
            stress = _ase_stress(atoms) if "stress" in results else None
        graphs.append(AtomsGraph.from_ase(atoms, dtype=torch.float64, energy=energy, forces=forces, stress=stress))
    return graphs


def _as_sequence(obj: Any, what: str) -> Sequence[AtomsGraph]:
    if isinstance(obj, Dataset) or isinstance(obj, (list, tuple)):
        if len(obj) == 0:  # type: ignore[arg-type]
            raise ConfigError(f"{what} is empty")
        first = obj[0]
        if not isinstance(first, AtomsGraph):
            raise ConfigError(f"{what}: expected AtomsGraph items, got {type(first).__name__}")
        return obj  # type: ignore[return-value]
    raise ConfigError(f"{what}: expected a list or Dataset of AtomsGraph, got {type(obj).__name__}")


def load_source(source: DataSource, what: str = "data") -> Sequence[AtomsGraph]:
    """The items of a data source (see the module docstring).

    Raises:
        ConfigError: missing file, unreadable content, wrong item type.
    """
    spec = source.source
    if _is_callable_spec(spec):
        return _as_sequence(_call_source(spec, dict(source.kwargs)), f"{what} ({spec})")
    path = Path(spec)
    if source.kwargs:
        raise ConfigError(f"{what}: kwargs are only used with a 'module:function' source, not with file {spec!r}")
    if not path.is_file():
        raise ConfigError(f"{what}: data file {spec!r} not found (expected a file or 'package.module:function')")
    if path.suffix.lower() in _TORCH_SUFFIXES:
        return _as_sequence(_torch_load(path), f"{what} ({spec})")
    return _as_sequence(_ase_load(path), f"{what} ({spec})")


def split_train_valid(items: Sequence[AtomsGraph], fraction: float, seed: int) -> tuple[list, list]:
    """A seeded random split: ``(train, valid)`` with ``round(fraction * n)`` (>= 1) validation items."""
    n = len(items)
    n_valid = max(1, round(fraction * n))
    if n_valid >= n:
        raise ConfigError(f"data.valid_fraction = {fraction} leaves no training items out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919)).tolist()
    return [items[i] for i in perm[n_valid:]], [items[i] for i in perm[:n_valid]]


class PreparedDataset(Dataset):
    """Items converted to ``dtype`` (floating tensors) with radius-graph edges when missing.

    Prepared items are cached (in the process that reads them).

    Args:
        items: the raw :class:`AtomsGraph` sequence.
        dtype: floating dtype of positions, cells and targets.
        cutoff: radius-graph cutoff for items without edges (None: leave them as they are).
    """

    def __init__(self, items: Sequence[AtomsGraph], dtype: torch.dtype, cutoff: Optional[float]):
        self.items = items
        self.dtype = dtype
        self.cutoff = cutoff
        self._cache: Dict[int, AtomsGraph] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> AtomsGraph:
        g = self._cache.get(index)
        if g is None:
            g = self.items[index]
            if not isinstance(g, AtomsGraph):
                raise TypeError(f"data item {index} is a {type(g).__name__}, expected AtomsGraph")
            g = g.to(dtype=self.dtype)
            if g.edge_src is None and self.cutoff is not None:
                g = g.with_radius_graph(self.cutoff)
            self._cache[index] = g
        return g


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> List[int]:
    """The visiting order of epoch ``epoch``: a pure function of ``(n, seed, epoch)``."""
    if not shuffle:
        return list(range(n))
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


def global_batches(order: Sequence[int], batch_size: int) -> List[List[int]]:
    """Consecutive chunks of ``batch_size`` indices (the last may be shorter)."""
    return [list(order[i:i + batch_size]) for i in range(0, len(order), batch_size)]


def shard(indices: Sequence[int], rank: int, world_size: int) -> List[int]:
    """Rank ``rank``'s share of one global batch: ``indices[rank::world_size]`` (may be empty)."""
    return list(indices[rank::world_size])


def collate_or_none(graphs: Sequence[AtomsGraph]) -> Optional[Batch]:
    """:func:`escn.data.collate`, or None for an empty shard."""
    return collate(graphs) if len(graphs) else None


class _ListSampler:
    """A batch sampler over precomputed index lists (possibly empty ones)."""

    def __init__(self, batches: Sequence[Sequence[int]]):
        self.batches = [list(b) for b in batches]

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def ShardLoader(dataset: Dataset, batches: Sequence[Sequence[int]], num_workers: int = 0, *,
                seed: int = 0) -> DataLoader:
    """A DataLoader yielding ``Batch`` (or None for empty index lists) for the given index lists, in order.

    The loader has its own generator seeded with ``seed``: a ``DataLoader`` draws a base seed for its workers
    each time it is iterated, from the global torch generator unless it has one, and that draw would make
    the global random stream depend on how many loaders a run created (a resumed run creates an extra one).
    """
    return DataLoader(dataset, batch_sampler=_ListSampler(batches), collate_fn=collate_or_none,
                      num_workers=num_workers, generator=torch.Generator().manual_seed(seed))
