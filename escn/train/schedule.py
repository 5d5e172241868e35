"""Learning-rate schedules on :mod:`torch.optim.lr_scheduler`, with resumable state.

The step-based schedules are a :class:`~torch.optim.lr_scheduler.LambdaLR` whose factor is a pure function of
the optimisation step: step ``k`` (0-based) runs at ``lr * factor(k)``.  ``plateau`` is a
:class:`~torch.optim.lr_scheduler.ReduceLROnPlateau` fed the validation losses.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Union

import torch
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from .config import ScheduleConfig

__all__ = ["LRSchedule", "lr_factor"]


def lr_factor(config: ScheduleConfig, total_steps: int) -> Callable[[int], float]:
    """``factor(step)``: the multiple of the base learning rate used by optimisation step ``step`` (0-based).

    * ``constant``: 1;
    * ``warmup_cosine`` / ``linear``: ``(step + 1) / warmup_steps`` during the warm-up;
    * then, with ``p = min(1, (step - warm) / max(1, total_steps - warm))`` and ``floor = min_lr_ratio``:
      ``floor + (1 - floor) * (1 + cos(pi p)) / 2`` (``cosine``, ``warmup_cosine``) or
      ``floor + (1 - floor) * (1 - p)`` (``linear``).
    """
    c = config
    floor = c.min_lr_ratio
    warm = c.warmup_steps if c.name in ("warmup_cosine", "linear") else 0

    def factor(step: int) -> float:
        if c.name in ("constant", "plateau"):
            return 1.0
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        shape = 1.0 - progress if c.name == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return floor + (1.0 - floor) * shape

    return factor


class LRSchedule:
    """The learning rate of every step for one :class:`~escn.train.config.ScheduleConfig`, driving ``optimizer``.

    Call :meth:`step` after each optimisation step and :meth:`observe` with each validation loss.

    Args:
        config: the schedule section.
        optimizer: its first param group's ``lr`` is the base learning rate.
        total_steps: horizon of the decaying schedules (``config.total_steps`` wins when set).

    Attributes:
        scheduler: the :class:`~torch.optim.lr_scheduler.LambdaLR` or
            :class:`~torch.optim.lr_scheduler.ReduceLROnPlateau` that sets the optimizer's learning rate.
    """

    def __init__(self, config: ScheduleConfig, optimizer: torch.optim.Optimizer, total_steps: int):
        self.config = config
        self.optimizer = optimizer
        self.total_steps = max(1, int(config.total_steps or total_steps))
        self.base_lr = float(optimizer.param_groups[0]["lr"])
        self.scheduler: Union[LambdaLR, ReduceLROnPlateau]
        if config.name == "plateau":
            self.scheduler = ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=config.factor,
                patience=config.patience,
                threshold=config.threshold,
                threshold_mode="rel",
                min_lr=self.base_lr * config.min_lr_ratio,
                eps=0.0,
            )
        else:
            # a plain function (not stored in the scheduler's state_dict) reading the horizon restored on resume
            def factor(step: int) -> float:
                return lr_factor(self.config, self.total_steps)(step)

            self.scheduler = LambdaLR(optimizer, factor)

    def lr(self, step: int) -> float:
        """Learning rate of optimisation step ``step`` (plateau: the current rate, which only validation changes)."""
        if isinstance(self.scheduler, ReduceLROnPlateau):
            return float(self.optimizer.param_groups[0]["lr"])
        return self.scheduler.base_lrs[0] * lr_factor(self.config, self.total_steps)(step)

    def step(self) -> None:
        """After an optimisation step: move the step-based schedules to the next step."""
        if isinstance(self.scheduler, LambdaLR):
            self.scheduler.step()

    def observe(self, valid_loss: float) -> None:
        """Feed one validation loss (plateau only; non-finite losses are ignored)."""
        if isinstance(self.scheduler, ReduceLROnPlateau) and math.isfinite(valid_loss):
            self.scheduler.step(valid_loss)

    def state_dict(self) -> Dict[str, Any]:
        """``{"scheduler": the torch scheduler's state_dict(), "total_steps": horizon}`` (plain values)."""
        return {"scheduler": self.scheduler.state_dict(), "total_steps": self.total_steps}

    def load_state_dict(self, state: Dict[str, Any], step: int) -> None:
        """Restore the schedule at optimisation step ``step`` (after the optimizer's own state).

        Also reads the state of escn 0.1.0 checkpoints (``scale``, ``best``, ``bad_epochs``, ``total_steps``).
        """
        self.total_steps = int(state["total_steps"])
        if "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
            return
        if isinstance(self.scheduler, ReduceLROnPlateau):
            lr = self.base_lr * max(float(state["scale"]), self.config.min_lr_ratio)
            self.scheduler.best = math.inf if state["best"] is None else float(state["best"])
            self.scheduler.num_bad_epochs = int(state["bad_epochs"])
        else:
            self.scheduler.last_epoch = int(step)
            lr = self.lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scheduler._last_lr = [lr] * len(self.optimizer.param_groups)
