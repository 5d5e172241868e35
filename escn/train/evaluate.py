"""Evaluate a model (or a training checkpoint) on a data set: MAE / RMSE / MSE per output key."""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from escn.checkpoint import load_checkpoint
from escn.data import AtomsGraph
from escn.models.io import load

from .config import ConfigError, DataSource, LossTerm, TrainConfig
from .data import SPLITS, PreparedDataset, ShardLoader, global_batches, load_source, load_splits
from .losses import LossFunction, item_target_level
from .progress import fmt

__all__ = ["evaluate_model", "evaluate_checkpoint", "default_keys", "format_evaluation", "force_field_lines"]

_STANDARD = ("energy", "forces", "stress")


def default_keys(item: AtomsGraph, loss: Optional[Mapping[str, LossTerm]] = None) -> Dict[str, LossTerm]:
    """Keys to evaluate: the training loss keys whose targets the data has, plus energy / forces / stress
    when present (those not in the loss get weight 0)."""
    terms: Dict[str, LossTerm] = {}
    for k, t in (loss or {}).items():
        if item_target_level(item, t.target or k) is not None:
            terms[k] = t
    for k in _STANDARD:
        if k not in terms and item_target_level(item, k) is not None:
            terms[k] = LossTerm(weight=0.0)
    return terms


def evaluate_model(
    model: nn.Module,
    data: Sequence[AtomsGraph],
    terms: Mapping[str, LossTerm],
    *,
    batch_size: int = 16,
    dtype: Optional[torch.dtype] = None,
    cutoff: Optional[float] = None,
    device: Union[str, torch.device] = "cpu",
) -> Dict[str, float]:
    """Metrics of ``model`` on ``data``: ``loss``, and per output key ``mae_<k>``, ``rmse_<k>`` and ``mse_<k>``
    (mean over all target elements, e.g. every coordinate of every node vector; ``acc_<k>`` for classes), also
    ``*_energy_per_atom`` with an energy key. Every item of ``data`` is evaluated.

    Args:
        model: called as ``model(batch, compute_forces=..., compute_stress=...)``.
        data: the items (targets must be present for every key in ``terms``).
        terms: output key -> loss term (weights define ``loss``).
        batch_size: graphs per forward pass.
        dtype: floating dtype of the data (default: the model's parameter dtype).
        cutoff: radius-graph cutoff for items without edges.

    A model with chemical species (an ``atomic_numbers`` attribute) gets the items' atomic numbers mapped to
    its type indices (see :class:`escn.train.data.PreparedDataset`).
    """
    if not terms:
        raise ConfigError("nothing to evaluate: the data has no targets for energy, forces, stress or the loss keys")
    loss_fn = LossFunction(terms)
    loss_fn.check_item(data[0], "evaluation data")
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())
    cutoff = cutoff if cutoff is not None else getattr(model, "cutoff", None)  # graphs are built here, not in forward
    dataset = PreparedDataset(data, dtype, cutoff, getattr(model, "atomic_numbers", None))
    loader = ShardLoader(dataset, global_batches(list(range(len(dataset))), batch_size))
    stats = torch.zeros(len(loss_fn.stat_names), dtype=torch.float64)
    need_grad = loss_fn.compute_forces or loss_fn.compute_stress
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            batch = batch.to(device)
            with torch.set_grad_enabled(need_grad):
                out = model(batch, compute_forces=loss_fn.compute_forces, compute_stress=loss_fn.compute_stress)
            _, s = loss_fn({k: v.detach() for k, v in out.items()}, batch, loss_fn.counts(batch))
            stats += s.cpu()
    finally:
        model.train(was_training)
    metrics = loss_fn.summarize(stats)
    names = loss_fn.stat_names
    for key in [k[len("rmse_") :] for k in metrics if k.startswith("rmse_")]:
        metrics[f"mse_{key}"] = float(stats[names.index(f"{key}/sq")] / stats[names.index(f"{key}/n")])
    return metrics


def format_evaluation(metrics: Mapping[str, float], title: str = "") -> str:
    """A table of MAE, RMSE and MSE (or accuracy) per key of :func:`evaluate_model` output, then the loss.

    The MSE is printed with six significant digits: for a position target it is the task's usual metric.
    """

    keys = [k.split("_", 1)[1] for k in metrics if k.startswith(("mae_", "acc_"))]
    lines = [title] if title else []
    lines.append(f"{'key':24s}{'MAE':>14s}{'RMSE':>14s}{'MSE':>16s}")
    for k in keys:
        if f"acc_{k}" in metrics:
            lines.append(f"{k:24s}{'acc ' + fmt(metrics[f'acc_{k}']):>14s}{'-':>14s}{'-':>16s}")
        else:
            mse = metrics.get(f"mse_{k}")
            lines.append(
                f"{k:24s}{fmt(metrics.get(f'mae_{k}')):>14s}{fmt(metrics.get(f'rmse_{k}')):>14s}"
                f"{'-' if mse is None else format(mse, '.6g'):>16s}"
            )
    if "loss" in metrics:
        lines.append(f"{'loss':24s}{fmt(metrics['loss']):>14s}")
    lines += force_field_lines(metrics)
    return "\n".join(lines)


# key -> (label, unit of the milli-scaled value); energies in eV, forces in eV/A, stresses in eV/A^3
_FORCE_FIELD_UNITS = (
    ("energy", "E/structure", "meV"),
    ("energy_per_atom", "E/atom", "meV/atom"),
    ("forces", "F/component", "meV/A"),
    ("stress", "S/component", "meV/A^3"),
)


def force_field_lines(metrics: Mapping[str, float]) -> list[str]:
    """MAE and RMSE of energy (per structure and per atom), forces and stress in meV units, for the keys present
    in ``metrics`` (output of :func:`evaluate_model`, energies in eV and forces in eV/Angstrom); empty when
    none is."""
    rows = [
        (label, unit, 1000 * metrics[f"mae_{k}"], 1000 * metrics[f"rmse_{k}"])
        for k, label, unit in _FORCE_FIELD_UNITS
        if f"mae_{k}" in metrics and f"rmse_{k}" in metrics
    ]
    if not rows:
        return []
    lines = [f"{'in meV units':24s}{'MAE':>14s}{'RMSE':>14s}  unit"]
    lines += [f"{label:24s}{mae:14.3f}{rmse:14.3f}  {unit}" for label, unit, mae, rmse in rows]
    return lines


def evaluate_checkpoint(
    checkpoint: Union[str, os.PathLike],
    data: Union[str, DataSource, Sequence[AtomsGraph], None] = None,
    *,
    ema: bool = True,
    batch_size: int = 16,
    kwargs: Optional[Dict[str, Any]] = None,
    cutoff: Optional[float] = None,
    device: str = "cpu",
    split: Optional[str] = None,
) -> Tuple[Dict[str, float], int]:
    """Load a training checkpoint and evaluate it on ``data`` (a source spec or items).

    With ``data=None`` the source is the training config's validation source (``data.valid``), its keyword
    arguments updated by ``kwargs``: e.g. ``kwargs={"split": "test"}`` evaluates the test split with every
    other setting (inputs, dtype, augmentation flags) as in validation.  With ``split`` (``"train"``,
    ``"valid"`` or ``"test"``, and ``data=None``) the items are that part of the training config's data, its
    own source or the part held out by ``valid_fraction`` / ``test_fraction`` (the same split as in training).
    ASE-readable files are read with the training config's ``energy_key`` / ``forces_key`` / ``stress_key``
    unless ``kwargs`` names others.
    The cutoff defaults to the training config's; the keys are :func:`default_keys`.

    Returns:
        ``(metrics, number of items)``.
    """

    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    config = TrainConfig.from_dict(ckpt["config"])
    model = load(checkpoint, map_location=device, ema=ema, checkpoint=ckpt)
    if split is not None:
        if data is not None:
            raise ValueError(
                f"split={split!r} evaluates a part of the training config's data; give no data with it (got {data!r})"
            )
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        items = load_splits(config, (split,))[split]
        if items is None:
            raise ValueError(
                f"the training config of {checkpoint} has no {split} data (no data.{split} source and no "
                f"data.{split}_fraction)"
            )
        data = items
    elif data is None:
        valid = config.data.valid
        if valid is None:
            raise ValueError(
                f"no data given and the training config of {checkpoint} has no data.valid source to start from"
            )
        data = DataSource(source=valid.source, kwargs={**valid.kwargs, **(kwargs or {})})
        kwargs = None
    if isinstance(data, (str, DataSource)):
        source = data if isinstance(data, DataSource) else DataSource(source=data, kwargs=dict(kwargs or {}))
        items = load_source(source, "evaluation data", read_options=config.data.read_options())
    else:
        items = data
    terms = default_keys(items[0], config.loss)
    metrics = evaluate_model(
        model,
        items,
        terms,
        batch_size=batch_size,
        dtype=config.torch_dtype,
        cutoff=cutoff if cutoff is not None else config.cutoff,
        device=device,
    )
    return metrics, len(items)
