"""Training engine: configs, the training loop with exact resume and DDP, checkpoints, evaluation.

>>> from escn.train import train
>>> result = train("examples/configs/lj_escn.toml")          # doctest: +SKIP

See :mod:`escn.train.config` for the configuration format and :mod:`escn.train.engine` for the loop.
"""

from escn.checkpoint import atomic_save, load_checkpoint
from escn.train.config import (
    ConfigError,
    DataConfig,
    DataSource,
    LossTerm,
    ModelConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
    load_config,
)
from escn.train.engine import BEST_NAME, CHECKPOINT_NAME, METRICS_NAME, Trainer, TrainResult, train
from escn.train.evaluate import evaluate_checkpoint, evaluate_model

__all__ = [
    "ConfigError",
    "TrainConfig",
    "ModelConfig",
    "DataConfig",
    "DataSource",
    "OptimizerConfig",
    "ScheduleConfig",
    "LossTerm",
    "load_config",
    "Trainer",
    "TrainResult",
    "train",
    "evaluate_model",
    "evaluate_checkpoint",
    "atomic_save",
    "load_checkpoint",
    "CHECKPOINT_NAME",
    "BEST_NAME",
    "METRICS_NAME",
]
