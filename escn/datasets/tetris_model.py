"""The 3D Tetris task's model: :class:`escn.models.ESCN` with class logits in which mirror-image classes share a
scalar and own a pseudo-scalar, so that a reflection swaps their predictions exactly.

Model name for configs: ``"escn.datasets.tetris_model:TetrisESCN"``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from escn._util import check_int
from escn.data.batch import Batch
from escn.models.escn import ESCN, OUTPUTS
from escn.nn.linear import Linear

Tensor = torch.Tensor

__all__ = ["TetrisESCN"]


class TetrisESCN(ESCN):
    """:class:`escn.models.ESCN` with the output ``"class_logits"`` ((B, num_classes), invariant logits from the
    per-graph mean of the node features).

    Args:
        num_classes: number of classes.
        mirror_pairs: pairs ``[a, b]`` of classes that are mirror images of each other (e.g. the chiral
            tetrominoes). Each pair shares a scalar ``s`` and owns a pseudo-scalar ``p``: ``logit_a = s + p``,
            ``logit_b = s - p``, so a reflection swaps the two predictions exactly. Needs ``pseudo=True``.
        **kwargs: the arguments of :class:`escn.models.ESCN`; ``outputs`` may contain ``"class_logits"``
            (default: only it).
    """

    OUTPUTS = OUTPUTS + ("class_logits",)

    def __init__(self, num_classes: int, mirror_pairs: Sequence[Sequence[int]] = (), **kwargs: Any) -> None:
        kwargs.setdefault("outputs", ["class_logits"])
        check_int("num_classes", num_classes, 1)
        pairs = [tuple(int(c) for c in pr) for pr in mirror_pairs]
        flat = [c for pr in pairs for c in pr]
        if (
            any(len(pr) != 2 for pr in pairs)
            or len(set(flat)) != len(flat)
            or any(not 0 <= c < num_classes for c in flat)
        ):
            raise ValueError(
                f"mirror_pairs must be disjoint pairs of classes in [0, {num_classes}), got {mirror_pairs!r}"
            )
        if pairs and not kwargs.get("pseudo", False):
            raise ValueError("mirror_pairs need pseudo-scalars: set pseudo=True")
        if "class_logits" not in kwargs["outputs"]:
            raise ValueError("TetrisESCN computes 'class_logits': list it in outputs")
        super().__init__(**kwargs)
        self.config.update(num_classes=num_classes, mirror_pairs=[list(pr) for pr in pairs])
        # scalars: one per pair, then one per unpaired class; pseudo-scalars: one per pair
        paired = {c: (j, +1.0 if k == 0 else -1.0) for j, pr in enumerate(pairs) for k, c in enumerate(pr)}
        unpaired = [c for c in range(num_classes) if c not in paired]
        n_s, n_p = len(pairs) + len(unpaired), len(pairs)
        s_idx, p_idx, sign = [], [], []
        for c in range(num_classes):
            if c in paired:
                j, sg = paired[c]
                s_idx.append(j), p_idx.append(j), sign.append(sg)
            else:
                s_idx.append(len(pairs) + unpaired.index(c)), p_idx.append(0), sign.append(0.0)
        self.class_head = Linear(self.irreps, f"{n_s}x0e" + (f"+{n_p}x0o" if n_p else ""))
        self._n_class_scalars = n_s
        self.register_buffer("_class_s", torch.tensor(s_idx, dtype=torch.long), persistent=False)
        self.register_buffer("_class_p", torch.tensor(p_idx, dtype=torch.long), persistent=False)
        self.register_constant("_class_sign", torch.tensor(sign, dtype=torch.float64))

    def extra_outputs(self, batch: Batch, x: Tensor, out: dict[str, Tensor]) -> None:
        y = self.class_head(self.pooled(batch, x))
        sc, ps = y[:, : self._n_class_scalars], y[:, self._n_class_scalars :]
        logits = sc.index_select(1, self._class_s)
        if ps.shape[1]:
            logits = logits + ps.index_select(1, self._class_p) * self._class_sign
        out["class_logits"] = logits
