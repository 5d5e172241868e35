"""Exponential moving average of a model's floating parameters and buffers."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA:
    """``ema <- d * ema + (1 - d) * weights`` after every optimisation step, with
    ``d = min(decay, (1 + n) / (10 + n))`` at update ``n`` (0-based).

    The warm-up keeps the average from remembering the random initial weights: with a plain 0.999, 42 % of
    the average is still the initialisation after 870 steps (seen as a validation loss 15x the training loss).

    Non-floating buffers (counters, indices) are copied.  :meth:`swapped_in` temporarily loads the
    averages into the model (exactly restoring the raw weights afterwards).

    Args:
        model: the trained model.
        decay: in [0, 1).
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow: Dict[str, Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average."""
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.mul_(d).add_(v.detach(), alpha=1.0 - d)
            else:
                s.copy_(v)
        self.updates += 1

    def state_dict(self) -> Dict[str, Tensor]:
        """The averaged ``model.state_dict()``."""
        return dict(self.shadow)

    def load_state_dict(self, state: Dict[str, Tensor], updates: int = 0) -> None:
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise ValueError(f"EMA state does not match the model: keys {sorted(missing)}")
        for k, v in state.items():
            self.shadow[k].copy_(v)
        self.updates = updates

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Context manager: ``model`` holds the EMA weights inside, its own weights after."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield model
        finally:
            model.load_state_dict(backup)
