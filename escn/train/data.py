"""Data for training: loading sources, graph/dtype preparation, seeded epoch order, rank shards.

Sources (see :class:`escn.train.config.DataSource`):

* a file written with ``torch.save(list_of_AtomsGraph)`` (``.pt`` / ``.pth`` / ``.pkl`` / anything
  ``torch.load`` reads);
* any other file is read with :func:`escn.data.extxyz.read_frames` when ASE is installed (extended XYZ with
  energy / forces / stress under configurable key names; every frame is checked, errors name file and frame);
* ``"package.module:function"``: called with the source's ``kwargs``; must return a list (or a
  ``Dataset``) of :class:`~escn.data.AtomsGraph`.

Chemical species: data keep atomic numbers in ``atom_types``.  A force-field run (a model class that takes
``atomic_numbers`` and a loss on energy, forces or stress) trains on the sorted distinct atomic numbers of its
training set, or on the model config's ``atomic_numbers`` when given (:func:`training_species`); the model is
built with that list, so it lands in the checkpoint, and :class:`PreparedDataset` maps every item's atomic
numbers to type indices (the position in the list) when the item is prepared -- on the host, not in the model.

Batch order: epoch ``e`` visits a permutation drawn from a generator seeded with
``seed * 1_000_003 + e``, cut into consecutive global batches of ``batch_size`` graphs (the last one
may be smaller).  The order is a pure function of ``(seed, epoch)``, so a resumed run re-derives it
and skips to the saved position.  Under DDP, rank ``r`` of ``W`` takes the items of each global batch whose
position in the epoch's order is ``r`` modulo ``W`` (``global_batch[r::W]`` when ``W`` divides ``batch_size``;
possibly none): :func:`rank_batches` draws the order and the rank's share with a
:class:`torch.utils.data.DistributedSampler`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from escn._util import import_object
from escn.data import AtomsGraph, Batch, collate
from escn.data.extxyz import read_frames
from escn.data.species import SpeciesMap, check_atomic_numbers, element_name, species_of
from escn.models.registry import accepts_argument

from .config import ConfigError, DataSource, TrainConfig

__all__ = [
    "load_source",
    "load_splits",
    "split_items",
    "SPLITS",
    "FILE_OPTIONS",
    "PreparedDataset",
    "SpeciesMapped",
    "training_species",
    "FORCE_FIELD_TARGETS",
    "epoch_permutation",
    "global_batches",
    "shard",
    "split_train_valid",
    "ShardLoader",
    "collate_or_none",
    "rank_batches",
]

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
        raise ConfigError(
            f"data file {str(path)!r}: cannot read it with torch.load as a list of AtomsGraph "
            f"({type(exc).__name__}: {exc})"
        ) from exc


#: keyword arguments a file source (not a torch file) may carry: how escn.data.extxyz.read_frames reads it
FILE_OPTIONS = ("energy_key", "forces_key", "stress_key", "index", "format")


def _ase_load(path: Path, options: Mapping[str, Any], require: Sequence[str]) -> List[AtomsGraph]:
    try:
        return read_frames(path, require=require, **options)
    except ImportError:
        raise ConfigError(
            f"data file {str(path)!r}: reading non-torch files needs ASE (pip install 'escn[ase]'); "
            "or save a list of AtomsGraph with torch.save to a .pt file"
        ) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc


def _as_sequence(obj: Any, what: str) -> Sequence[AtomsGraph]:
    if isinstance(obj, Dataset) or isinstance(obj, (list, tuple)):
        if len(obj) == 0:  # type: ignore[arg-type]
            raise ConfigError(f"{what} is empty")
        first = obj[0]
        if not isinstance(first, AtomsGraph):
            raise ConfigError(f"{what}: expected AtomsGraph items, got {type(first).__name__}")
        return obj  # type: ignore[return-value]
    raise ConfigError(f"{what}: expected a list or Dataset of AtomsGraph, got {type(obj).__name__}")


def load_source(
    source: DataSource,
    what: str = "data",
    *,
    read_options: Optional[Mapping[str, Any]] = None,
    require: Sequence[str] = (),
) -> Sequence[AtomsGraph]:
    """The items of a data source (see the module docstring).

    Args:
        source: the source; for an ASE-readable file its ``kwargs`` may hold :data:`FILE_OPTIONS` (they override
            ``read_options``).
        what: how errors name the source (e.g. ``"data.train"``).
        read_options: defaults of the file options (e.g. :meth:`DataConfig.read_options`).
        require: targets every frame of an ASE-readable file must have (e.g. ``("energy", "forces")``).

    Raises:
        ConfigError: missing file, unreadable content (naming the file and frame), wrong item type, unknown
            file options.
    """
    spec = source.source
    if _is_callable_spec(spec):
        return _as_sequence(_call_source(spec, dict(source.kwargs)), f"{what} ({spec})")
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"{what}: data file {spec!r} not found (expected a file or 'package.module:function')")
    if path.suffix.lower() in _TORCH_SUFFIXES:
        if source.kwargs:
            raise ConfigError(
                f"{what}: kwargs are only used with a 'module:function' source or an ASE-readable file, "
                f"not with the torch file {spec!r}"
            )
        return _as_sequence(_torch_load(path), f"{what} ({spec})")
    unknown = [k for k in source.kwargs if k not in FILE_OPTIONS]
    if unknown:
        raise ConfigError(
            f"{what}: unknown option {unknown[0]!r} for the file {spec!r}; a file source takes "
            f"{', '.join(FILE_OPTIONS)}"
        )
    options = {**(read_options or {}), **source.kwargs}
    return _as_sequence(_ase_load(path, options, require), f"{what} ({spec})")


#: the parts of a data configuration
SPLITS = ("train", "valid", "test")


def split_items(
    items: Sequence[AtomsGraph], valid_fraction: float, test_fraction: float, seed: int
) -> tuple[list, list, list]:
    """A seeded random split ``(train, valid, test)`` of ``items``: a permutation drawn from a generator seeded
    with ``seed + 7919``; its first ``round(valid_fraction * n)`` items (at least 1 when the fraction is > 0) are
    the validation set, the next ``round(test_fraction * n)`` (likewise) the test set, the rest the training
    set (in permutation order)."""
    n = len(items)
    n_valid = max(1, round(valid_fraction * n)) if valid_fraction > 0 else 0
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    if n_valid + n_test >= n:
        raise ConfigError(
            f"data.valid_fraction = {valid_fraction} and data.test_fraction = {test_fraction} leave no "
            f"training items out of {n}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919)).tolist()
    return (
        [items[i] for i in perm[n_valid + n_test :]],
        [items[i] for i in perm[:n_valid]],
        [items[i] for i in perm[n_valid : n_valid + n_test]],
    )


def load_splits(
    config: TrainConfig, parts: Sequence[str] = SPLITS, require: Sequence[str] = ()
) -> Dict[str, Optional[Sequence[AtomsGraph]]]:
    """The items of the requested ``parts`` (``train`` / ``valid`` / ``test``) of a training config: each from its
    own source, or held out of ``train`` by ``valid_fraction`` / ``test_fraction`` (:func:`split_items` with
    ``split_seed``, default the run's ``seed``); None for a part the config does not define.

    Raises:
        ConfigError: as :func:`load_source`, or an unknown part.
    """
    bad = [p for p in parts if p not in SPLITS]
    if bad:
        raise ConfigError(f"unknown data split {bad[0]!r}; expected one of {', '.join(SPLITS)}")
    d = config.data
    options = d.read_options()
    out: Dict[str, Optional[Sequence[AtomsGraph]]] = {}
    held_out = (d.valid is None and d.valid_fraction > 0) or (d.test is None and d.test_fraction > 0)
    if "train" in parts or held_out:
        train = load_source(d.train, "data.train", read_options=options, require=require)
        if held_out:
            seed = d.split_seed if d.split_seed is not None else config.seed
            train, valid, test = split_items(
                train, d.valid_fraction if d.valid is None else 0.0, d.test_fraction if d.test is None else 0.0, seed
            )
            if d.valid is None and d.valid_fraction > 0:
                out["valid"] = valid
            if d.test is None and d.test_fraction > 0:
                out["test"] = test
        out["train"] = train
    for part in ("valid", "test"):
        source = getattr(d, part)
        if source is not None and part in parts:
            out[part] = load_source(source, f"data.{part}", read_options=options, require=require)
    return {p: out.get(p) for p in parts}


def split_train_valid(items: Sequence[AtomsGraph], fraction: float, seed: int) -> tuple[list, list]:
    """A seeded random split: ``(train, valid)`` with ``round(fraction * n)`` (>= 1) validation items (the
    two-way case of :func:`split_items`)."""
    train, valid, _ = split_items(items, fraction, 0.0, seed)
    return train, valid


#: loss targets that make a run a force field (its atom types are chemical species)
FORCE_FIELD_TARGETS = ("energy", "forces", "stress")


def training_species(
    model_name: str,
    model_kwargs: Mapping[str, Any],
    loss: Mapping[str, Any],
    items: Sequence[AtomsGraph],
    valid: Optional[Sequence[AtomsGraph]] = None,
) -> Optional[List[int]]:
    """The atomic numbers a run trains on, or None when its atom types are plain labels.

    * ``model_kwargs["atomic_numbers"]`` when given;
    * otherwise, when the model class takes ``atomic_numbers`` and some loss term targets energy, forces or
      stress (:data:`FORCE_FIELD_TARGETS`): the sorted distinct ``atom_types`` of ``items``, read as atomic
      numbers (None when no item has atom types);
    * otherwise None (e.g. class labels, charges, a model without species).

    With species, every item of ``items`` and ``valid`` is checked to hold only those elements (here, before
    training, rather than when the item is first batched).

    Args:
        model_name: registry name or import path of the model class.
        model_kwargs: the model config.
        loss: output key -> loss term (an object with a ``target`` attribute, or None for the key itself).
        items: the training items.
        valid: the validation items, if any.

    Raises:
        ConfigError: a malformed ``atomic_numbers``, atom types outside ``[0, 118]``, or an element of the data
            outside the given ``atomic_numbers`` (named, with the data set it is in).
    """

    given = model_kwargs.get("atomic_numbers")
    if given is not None:
        try:
            species = check_atomic_numbers(given, "model.atomic_numbers")
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from exc
    elif "atomic_numbers" in model_kwargs:  # an explicit None: plain labels
        return None
    else:
        targets = {(getattr(term, "target", None) or key) for key, term in loss.items()}
        if not targets & set(FORCE_FIELD_TARGETS) or not accepts_argument(model_name, "atomic_numbers"):
            return None
        try:
            species = species_of(g.atom_types for g in items)
        except ValueError as exc:
            raise ConfigError(
                f"training data: {exc}; a force-field model reads atom_types as atomic numbers (or "
                "set model.atomic_numbers = null to use them as plain labels)"
            ) from exc
        if species is None:
            return None
        n = model_kwargs.get("num_atom_types")
        if n is not None and n != len(species):
            raise ConfigError(
                f"model.num_atom_types = {n}, but the training data hold {len(species)} element(s), "
                f"{', '.join(element_name(z) for z in species)}, which become the model's atom types: leave "
                "num_atom_types out (it defaults to the number of elements) or list model.atomic_numbers"
            )
    mapper = SpeciesMap(species)
    for what, data in (("data.train", items), ("data.valid", valid)):
        for i, g in enumerate(data or ()):
            if g.atom_types is not None and g.atom_types.numel():
                try:
                    mapper(g.atom_types, f"{what} item {i}")
                except ValueError as exc:
                    raise ConfigError(str(exc)) from exc
    return species


def _mapped(g: AtomsGraph, species: Optional[SpeciesMap], index: int) -> AtomsGraph:
    if species is None:
        return g
    if g.atom_types is None:
        raise ValueError(
            f"data item {index} has no atom_types; the model needs the atomic number of every atom "
            f"(it knows {list(species.atomic_numbers)})"
        )
    return dataclasses.replace(g, atom_types=species(g.atom_types, f"data item {index}"))


class SpeciesMapped(Dataset):
    """A view of ``items`` with atomic numbers replaced by type indices (positions in ``atomic_numbers``).

    ``atomic_numbers=None`` passes the items through unchanged.  Items are mapped on every access (no cache).
    """

    def __init__(self, items: Sequence[AtomsGraph], atomic_numbers: Optional[Sequence[int]]):
        self.items = items
        self.species = None if atomic_numbers is None else SpeciesMap(atomic_numbers)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> AtomsGraph:
        return _mapped(self.items[index], self.species, index)


class PreparedDataset(Dataset):
    """Items converted to ``dtype`` (floating tensors) with radius-graph edges when missing, and atomic numbers
    mapped to the model's type indices when ``atomic_numbers`` is given.

    Prepared items are cached (in the process that reads them).

    Args:
        items: the raw :class:`AtomsGraph` sequence.
        dtype: floating dtype of positions, cells and targets.
        cutoff: radius-graph cutoff for items without edges (None: leave them as they are).
        atomic_numbers: the model's species; ``atom_types`` (atomic numbers) become positions in this list,
            and an element outside it raises ValueError naming the item and the element.  None: types unchanged.
    """

    def __init__(
        self,
        items: Sequence[AtomsGraph],
        dtype: torch.dtype,
        cutoff: Optional[float],
        atomic_numbers: Optional[Sequence[int]] = None,
    ):
        self.items = items
        self.dtype = dtype
        self.cutoff = cutoff
        self.species = None if atomic_numbers is None else SpeciesMap(atomic_numbers)
        self._cache: Dict[int, AtomsGraph] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> AtomsGraph:
        g = self._cache.get(index)
        if g is None:
            g = self.items[index]
            if not isinstance(g, AtomsGraph):
                raise TypeError(f"data item {index} is a {type(g).__name__}, expected AtomsGraph")
            g = _mapped(g, self.species, index).to(dtype=self.dtype)
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
    return [list(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]


def shard(indices: Sequence[int], rank: int, world_size: int) -> List[int]:
    """Rank ``rank``'s share of one global batch: ``indices[rank::world_size]`` (may be empty)."""
    return list(indices[rank::world_size])


def rank_batches(
    dataset: Dataset,
    batch_size: int,
    rank: int,
    world_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
) -> List[List[int]]:
    """This rank's share of every global batch ``b`` of
    ``global_batches(epoch_permutation(len(dataset), seed, epoch, shuffle), batch_size)``: the items of ``b`` at
    epoch positions ``p`` with ``p % world_size == rank`` (``shard(b, rank, world_size)`` when ``world_size``
    divides ``batch_size``).

    The order and the share come from a :class:`~torch.utils.data.DistributedSampler` (seeded with
    ``seed * 1_000_003`` at epoch ``epoch``: the permutation of :func:`epoch_permutation`), which hands rank ``r``
    the items at positions ``r, r + W, r + 2W, ...`` of the order; its padding (repeated items that make every
    rank's list equally long) is dropped, so each item is used once.  Every rank gets ``ceil(n / batch_size)``
    lists, some of them possibly empty, so that all ranks take the same number of steps.
    """
    n = len(dataset)  # type: ignore[arg-type]
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed * 1_000_003, drop_last=False
    )
    sampler.set_epoch(epoch)
    out: List[List[int]] = [[] for _ in range(-(-n // batch_size))]
    for j, index in enumerate(sampler):
        position = rank + world_size * j
        if position >= n:  # the sampler's padding
            break
        out[position // batch_size].append(index)
    return out


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


def ShardLoader(
    dataset: Dataset, batches: Sequence[Sequence[int]], num_workers: int = 0, *, seed: int = 0
) -> DataLoader:
    """A DataLoader yielding ``Batch`` (or None for empty index lists) for the given index lists, in order.

    The loader has its own generator seeded with ``seed``: a ``DataLoader`` draws a base seed for its workers
    each time it is iterated, from the global torch generator unless it has one, and that draw would make
    the global random stream depend on how many loaders a run created (a resumed run creates an extra one).
    """
    return DataLoader(
        dataset,
        batch_sampler=_ListSampler(batches),
        collate_fn=collate_or_none,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
