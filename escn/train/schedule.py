"""Learning-rate schedules as explicit functions of the step, with resumable state.

``lr(step)`` gives the learning rate used by optimisation step ``step`` (0-based).  The step-based
schedules are pure functions of the step; ``plateau`` also keeps a scale that validation updates.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

from .config import ScheduleConfig

__all__ = ["LRSchedule"]


class LRSchedule:
    """Learning rate of each step for one :class:`~escn.train.config.ScheduleConfig`.

    Args:
        config: the schedule section.
        base_lr: the optimizer's ``lr``.
        total_steps: horizon of the decaying schedules (``config.total_steps`` wins when set).
    """

    def __init__(self, config: ScheduleConfig, base_lr: float, total_steps: int):
        self.config = config
        self.base_lr = float(base_lr)
        self.total_steps = max(1, int(config.total_steps or total_steps))
        self.scale = 1.0  # plateau: current multiplier
        self.best: Optional[float] = None
        self.bad_epochs = 0

    def lr(self, step: int) -> float:
        """Learning rate for optimisation step ``step`` (0-based)."""
        c = self.config
        floor = c.min_lr_ratio
        if c.name == "constant":
            return self.base_lr
        if c.name == "plateau":
            return self.base_lr * max(self.scale, floor)
        warm = c.warmup_steps if c.name in ("warmup_cosine", "linear") else 0
        if step < warm:
            return self.base_lr * (step + 1) / warm
        span = max(1, self.total_steps - warm)
        progress = min(1.0, (step - warm) / span)
        if c.name == "linear":
            factor = 1.0 - progress
        else:  # cosine, warmup_cosine
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.base_lr * (floor + (1.0 - floor) * factor)

    def observe(self, valid_loss: float) -> bool:
        """Feed one validation loss (plateau only); returns True when the rate was reduced."""
        if self.config.name != "plateau" or not math.isfinite(valid_loss):
            return False
        if self.best is None or valid_loss < self.best * (1.0 - self.config.threshold):
            self.best = valid_loss
            self.bad_epochs = 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs > self.config.patience:
            self.scale *= self.config.factor
            self.bad_epochs = 0
            return True
        return False

    def state_dict(self) -> Dict[str, Any]:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs, "total_steps": self.total_steps}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.scale = float(state["scale"])
        self.best = state["best"]
        self.bad_epochs = int(state["bad_epochs"])
        self.total_steps = int(state["total_steps"])
