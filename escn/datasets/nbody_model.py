"""The n-body task's model: :class:`escn.models.ESCN` averaged over relabellings of the atom types that leave
the task unchanged (negating every charge of the charged n-body system).

Model name for configs: ``"escn.datasets.nbody_model:NBodyESCN"``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from escn.data.batch import Batch
from escn.models.escn import ESCN

Tensor = torch.Tensor

__all__ = ["NBodyESCN"]


def _type_group(perms: Sequence[Sequence[int]], num_types: int) -> list[list[int]]:
    """Validate ``type_permutations``: the identity followed by the given relabellings, closed under composition."""
    if isinstance(perms, (str, bytes)):
        raise TypeError(f"type_permutations must be a list of permutations, got {perms!r}")
    identity = list(range(num_types))
    group = [identity]
    for g in perms:
        if isinstance(g, (str, bytes)) or not all(isinstance(t, int) and not isinstance(t, bool) for t in g):
            raise TypeError(f"type_permutations entries must be lists of ints, got {g!r}")
        g = list(g)
        if sorted(g) != identity:
            raise ValueError(f"type_permutations entry {g} is not a permutation of the types 0..{num_types - 1}")
        if g not in group:
            group.append(g)
    for a in group:
        for b in group:
            if [a[t] for t in b] not in group:
                raise ValueError(f"type_permutations with the identity must form a group: {a} after {b} is missing")
    return group


class NBodyESCN(ESCN):
    """:class:`escn.models.ESCN` whose outputs are exactly invariant under relabellings of the atom types.

    Args:
        type_permutations: relabellings that leave the task unchanged, e.g. ``[[1, 0]]`` when swapping types 0
            and 1 changes nothing (the charged n-body system with all charges negated). Each entry maps type
            ``t`` to ``perm[t]``; with the identity they must form a group. The node features (and the per-type
            energy offsets) are averaged over the group; the cost is one pass through the backbone per element.
        type_average_in_training: with False, the average is taken in eval mode only and training runs one pass
            on the given types (for training on relabelled copies of the data instead: as many optimiser steps
            per pass; the eval-mode model that validation and prediction use is still exactly invariant).
        **kwargs: the arguments of :class:`escn.models.ESCN`.
    """

    def __init__(
        self, type_permutations: Sequence[Sequence[int]] = (), type_average_in_training: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        group = _type_group(type_permutations, self.num_atom_types)
        if not isinstance(type_average_in_training, bool):
            raise TypeError(f"type_average_in_training must be a bool, got {type(type_average_in_training).__name__}")
        self.type_average_in_training = type_average_in_training
        self.config.update(
            type_permutations=[list(g) for g in group[1:]], type_average_in_training=type_average_in_training
        )
        # (|G|, num_atom_types) relabellings, identity first
        self.register_buffer("_type_group", torch.tensor(group, dtype=torch.long), persistent=False)

    def _active_type_group(self) -> Tensor:
        """The relabellings averaged over in the current mode, (|G|, num_atom_types), identity first."""
        if self.training and not self.type_average_in_training:
            return self._type_group[:1]
        return self._type_group

    def node_features(self, batch: Batch, pos: Tensor, cell: Tensor | None) -> Tensor:
        types = self._types(batch, pos.shape[0], pos.device)
        group = self._active_type_group()
        if group.shape[0] == 1:
            return self.backbone(batch, pos, cell, types)
        return sum(self.backbone(batch, pos, cell, g[types]) for g in group) / group.shape[0]

    def atom_energy_offsets(self) -> Tensor:
        return super().atom_energy_offsets()[self._active_type_group()].mean(dim=0)
