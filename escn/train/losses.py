"""Loss terms and metric sums over a (sharded) global batch.

For an output key ``k`` the target is the :class:`~escn.data.Batch` field ``k`` (``energy`` (B,),
``forces`` (N, 3), ``stress`` (B, 3, 3)), else ``batch.node_attrs[k]`` (leading dim N), else
``batch.graph_attrs[k]`` (leading dim B).

Each term is ``weight * sum(err) / count`` where ``count`` is the number of target elements (rows for
``cross_entropy``) in the **global** batch.  Every rank computes ``sum(err)`` over its shard and divides
by the global count, so the sum over ranks of the shard losses -- and of their gradients -- is exactly
the single-process loss of the global batch, whatever the number of atoms in each shard.

Statistics are kept as one float64 vector of sums (see :class:`LossFunction.stat_names`) so they can
be all-reduced in one call and accumulated over an epoch.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from escn.data import AtomsGraph, Batch

from .config import ConfigError, LossTerm

__all__ = ["find_target", "item_target_level", "LossFunction", "summarize"]

_BATCH_FIELDS = {"energy": "graph", "forces": "node", "stress": "graph"}


def find_target(batch: Batch, key: str) -> Tuple[Optional[Tensor], str]:
    """``(target, level)`` of output ``key`` in ``batch``; level is ``"node"`` or ``"graph"``."""
    if key in _BATCH_FIELDS:
        return getattr(batch, key), _BATCH_FIELDS[key]
    if key in batch.node_attrs:
        return batch.node_attrs[key], "node"
    if key in batch.graph_attrs:
        return batch.graph_attrs[key], "graph"
    return None, "graph"


def item_target_level(item: AtomsGraph, key: str) -> Optional[str]:
    """Where an :class:`AtomsGraph` keeps the target of ``key`` ("node" / "graph"), None if absent."""
    if key in _BATCH_FIELDS:
        return _BATCH_FIELDS[key] if getattr(item, key) is not None else None
    if key in item.node_attrs:
        return "node"
    if key in item.graph_attrs:
        return "graph"
    return None


def _available_targets(item: AtomsGraph) -> List[str]:
    keys = [k for k in _BATCH_FIELDS if getattr(item, k) is not None]
    return keys + [f"node_attrs[{k!r}]" for k in item.node_attrs] + [f"graph_attrs[{k!r}]" for k in item.graph_attrs]


class LossFunction:
    """Weighted loss over output keys, normalised by global element counts.

    Args:
        terms: output key -> :class:`~escn.train.config.LossTerm`.
    """

    def __init__(self, terms: Mapping[str, LossTerm]):
        if not terms:
            raise ConfigError("the loss needs at least one output key")
        self.terms: Dict[str, LossTerm] = dict(terms)
        self.keys: List[str] = list(self.terms)
        names: List[str] = []
        for k, t in self.terms.items():
            names += [f"{k}/loss", f"{k}/abs", f"{k}/sq", f"{k}/n"]
            if t.type == "cross_entropy":
                names.append(f"{k}/correct")
            if k == "energy":
                names += ["energy_per_atom/abs", "energy_per_atom/sq", "energy_per_atom/n"]
        self.stat_names: List[str] = names
        self._index = {n: i for i, n in enumerate(names)}

    # ------------------------------------------------------------------ configuration checks
    def check_item(self, item: AtomsGraph, what: str = "training data") -> None:
        """Raise ConfigError if an item lacks the target of a loss key or a per-atom term is node-level."""
        for k, t in self.terms.items():
            level = item_target_level(item, t.target or k)
            if level is None:
                k = t.target or k
                have = ", ".join(_available_targets(item)) or "none"
                raise ConfigError(
                    f"config key 'loss.{k}': the {what} has no target for {k!r} (looked for the "
                    f"field {k!r}, node_attrs[{k!r}], graph_attrs[{k!r}]; targets present: {have})"
                )
            if t.per_atom and level != "graph":
                raise ConfigError(
                    f"config key 'loss.{k}.per_atom': {k!r} is a per-node target, per_atom only "
                    "applies to per-graph targets such as energy"
                )

    @property
    def compute_forces(self) -> bool:
        return "forces" in self.terms

    @property
    def compute_stress(self) -> bool:
        return "stress" in self.terms

    # ------------------------------------------------------------------ counts and loss
    def _target(self, batch: Batch, key: str) -> Tuple[Tensor, str]:
        key = self.terms[key].target or key
        target, level = find_target(batch, key)
        if target is None:
            raise ValueError(f"loss key {key!r}: the batch has no target for it")
        return target, level

    def counts(self, batch: Optional[Batch], device: torch.device | None = None) -> Tensor:
        """(K,) float64 normalising counts of the loss keys in ``batch`` (zeros for None)."""
        out = torch.zeros(len(self.keys), dtype=torch.float64, device=device)
        if batch is None:
            return out
        for i, (k, t) in enumerate(self.terms.items()):
            target, _ = self._target(batch, k)
            out[i] = target.shape[0] if t.type == "cross_entropy" else target.numel()
        return out

    def __call__(self, out: Mapping[str, Tensor], batch: Batch, global_counts: Tensor) -> Tuple[Tensor, Tensor]:
        """Shard loss and statistics.

        Args:
            out: model outputs, e.g. ``energy`` (B,), ``forces`` (N, 3).
            batch: the shard the outputs belong to.
            global_counts: (K,) counts of the whole global batch (:meth:`counts` summed over ranks).

        Returns:
            ``(loss, stats)``: the differentiable scalar ``sum_k w_k sum(err_k) / global_count_k`` of this
            shard and a detached float64 vector of sums laid out as :attr:`stat_names`.
        """
        stats = torch.zeros(len(self.stat_names), dtype=torch.float64, device=batch.pos.device)
        loss: Tensor | float = 0.0
        for i, (k, t) in enumerate(self.terms.items()):
            if k not in out:
                raise ValueError(
                    f"loss key {k!r}: the model returned no {k!r} output "
                    f"(it returned {', '.join(sorted(out)) or 'nothing'})"
                )
            pred = out[k]
            target, level = self._target(batch, k)
            term_sum, err = self._term(k, t, pred, target, batch, level)
            loss = loss + (t.weight / max(float(global_counts[i]), 1.0)) * term_sum
            self._stats(stats, k, t, pred, target, err, term_sum, batch)
        assert isinstance(loss, Tensor)
        return loss, stats

    def _term(
        self, key: str, t: LossTerm, pred: Tensor, target: Tensor, batch: Batch, level: str
    ) -> Tuple[Tensor, Optional[Tensor]]:
        if t.type == "cross_entropy":
            if pred.dim() != 2 or pred.shape[0] != target.shape[0] or target.dim() != 1:
                raise ValueError(
                    f"loss key {key!r} (cross_entropy): expected logits (R, C) and class indices (R,), "
                    f"got {tuple(pred.shape)} and {tuple(target.shape)}"
                )
            return F.cross_entropy(pred, target.long(), reduction="sum"), None
        if pred.shape != target.shape:
            raise ValueError(
                f"loss key {key!r}: model output has shape {tuple(pred.shape)}, target has shape {tuple(target.shape)}"
            )
        err = pred - target.to(pred.dtype)
        if t.per_atom:
            natoms = (batch.ptr[1:] - batch.ptr[:-1]).to(pred.dtype)
            err = err / natoms.reshape(-1, *([1] * (err.dim() - 1)))
        if t.type == "mse":
            return err.square().sum(), err
        if t.type == "mae":
            return err.abs().sum(), err
        a = err.abs()
        huber = torch.where(a < t.delta, 0.5 * a.square(), t.delta * (a - 0.5 * t.delta))
        return huber.sum(), err

    @torch.no_grad()
    def _stats(
        self,
        stats: Tensor,
        key: str,
        t: LossTerm,
        pred: Tensor,
        target: Tensor,
        err: Optional[Tensor],
        term_sum: Tensor,
        batch: Batch,
    ) -> None:
        ix = self._index
        stats[ix[f"{key}/loss"]] = term_sum.detach().double()
        if t.type == "cross_entropy":
            stats[ix[f"{key}/n"]] = target.shape[0]
            stats[ix[f"{key}/correct"]] = (pred.detach().argmax(-1) == target).sum().double()
            return
        raw = (pred.detach() - target.to(pred.dtype)).double()
        stats[ix[f"{key}/abs"]] = raw.abs().sum()
        stats[ix[f"{key}/sq"]] = raw.square().sum()
        stats[ix[f"{key}/n"]] = raw.numel()
        if key == "energy":
            natoms = (batch.ptr[1:] - batch.ptr[:-1]).double().reshape(-1, *([1] * (raw.dim() - 1)))
            pa = raw / natoms
            stats[ix["energy_per_atom/abs"]] = pa.abs().sum()
            stats[ix["energy_per_atom/sq"]] = pa.square().sum()
            stats[ix["energy_per_atom/n"]] = pa.numel()

    # ------------------------------------------------------------------ reporting
    def summarize(self, stats: Tensor, prefix: str = "") -> Dict[str, float]:
        """Loss and metrics from summed statistics.

        Returns keys ``loss`` (weighted total), ``loss_<k>``, ``mae_<k>`` and ``rmse_<k>`` (``acc_<k>`` for
        cross_entropy terms), ``mae_energy_per_atom`` / ``rmse_energy_per_atom`` with an energy term;
        each prefixed with ``prefix``.
        """
        s = stats.double().cpu().tolist()
        ix = self._index
        out: Dict[str, float] = {}
        total = 0.0
        for k, t in self.terms.items():
            n = s[ix[f"{k}/n"]]
            if n <= 0:
                continue
            term = s[ix[f"{k}/loss"]] / n
            total += t.weight * term
            out[f"loss_{k}"] = term
            if t.type == "cross_entropy":
                out[f"acc_{k}"] = s[ix[f"{k}/correct"]] / n
            else:
                out[f"mae_{k}"] = s[ix[f"{k}/abs"]] / n
                out[f"rmse_{k}"] = math.sqrt(s[ix[f"{k}/sq"]] / n)
            if k == "energy" and s[ix["energy_per_atom/n"]] > 0:
                m = s[ix["energy_per_atom/n"]]
                out["mae_energy_per_atom"] = s[ix["energy_per_atom/abs"]] / m
                out["rmse_energy_per_atom"] = math.sqrt(s[ix["energy_per_atom/sq"]] / m)
        result = {"loss": total, **out}
        return {prefix + k: v for k, v in result.items()}


def summarize(loss_fn: LossFunction, stats: Tensor, prefix: str = "") -> Dict[str, float]:
    """Shortcut for :meth:`LossFunction.summarize`."""
    return loss_fn.summarize(stats, prefix)
