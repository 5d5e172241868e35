"""Training configuration: schema, validation with precise errors, TOML/YAML/JSON loading.

A configuration is a nested mapping (a TOML or YAML file, or a Python dict)::

    seed = 0
    dtype = "float64"              # float32 | float64
    batch_size = 8                 # graphs per optimisation step (the global batch under DDP)
    epochs = 20                    # and/or max_steps = 1000
    max_time = 1800                # optional: also stop after this many seconds of training (wall clock)
    cutoff = 5.0                   # radius graph for items without edges
    grad_clip = 10.0               # max gradient norm (omit or 0: off)
    ema_decay = 0.99               # EMA of the weights used for validation (omit or 0: off)
    fit_atom_energies = true       # start from least-squares per-type energies (default true)
    valid_every = 1                # epochs between validations (the last epoch is always validated)
    checkpoint_every = 100         # steps
    output_dir = "runs/example"

    [model]                        # name + keyword arguments of the model class
    name = "escn"

    [data]
    train = "train.pt"             # torch.save(list of AtomsGraph) | ASE-readable file | "pkg.mod:function"
    valid = { source = "pkg.mod:function", kwargs = { n = 50, seed = 1 } }
    test = "test.extxyz"           # optional, never trained on (escn evaluate CKPT --split test)
    # or: valid_fraction = 0.05, test_fraction = 0.2, split_seed = 1 (a seeded split of train)
    energy_key = "energy"          # where ASE-readable files keep the targets (also forces_key, stress_key)

    [optimizer]                    # AdamW
    lr = 1e-3
    weight_decay = 0.0

    [schedule]                     # constant | cosine | warmup_cosine | linear | plateau
    name = "warmup_cosine"
    warmup_steps = 20

    [loss]                         # output key -> weight, or a table {weight, type, per_atom, delta}
    energy = { weight = 1.0, per_atom = true }
    forces = 10.0

Every section and key is checked: unknown keys raise :class:`ConfigError` listing the allowed
ones; wrong types and values name the key and what was expected.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

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
    "parse_config",
    "apply_overrides",
    "config_differences",
    "check_model_kwargs",
    "DTYPES",
    "SCHEDULES",
    "LOSS_TYPES",
    "RESUMABLE_CHANGES",
]

DTYPES = ("float32", "float64")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "linear", "plateau")
LOSS_TYPES = ("mse", "mae", "huber", "cross_entropy")
OPTIMIZERS = ("adamw",)
# keys that may differ between a checkpoint's config and the config used to resume it (the learning-rate
# schedule keeps the horizon it started with, so a resumed run continues exactly)
RESUMABLE_CHANGES = (
    "epochs",
    "max_steps",
    "checkpoint_every",
    "log_every",
    "progress",
    "output_dir",
    "threads",
    "eval_batch_size",
    "max_time",
    "data.num_workers",
    "data.test.source",
    "data.test.kwargs",
)


class ConfigError(ValueError):
    """An invalid training configuration (the message names the key and what was expected)."""


# --------------------------------------------------------------------------- checking helpers
def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(section: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = [k for k in section if k not in allowed]
    if unknown:
        k = unknown[0]
        name = f"{where}.{k}" if where else k
        raise ConfigError(
            f"unknown config key {name!r}{_suggest(str(k), allowed)}; allowed keys"
            f"{' in [' + where + ']' if where else ''}: {', '.join(allowed)}"
        )


def check_model_kwargs(cls: type, kwargs: Mapping[str, Any], name: str) -> None:
    """Check the ``[model]`` keys against the keyword arguments of the model class ``cls`` (registered as ``name``).

    Raises:
        ConfigError: a key the class does not take (with the closest accepted key, and the accepted ones), or
            a required argument that is missing. Classes taking ``**kwargs`` accept every key.
    """
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):  # no introspectable signature: the class call reports problems itself
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    named = [p for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    accepted = [p.name for p in named]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        k = str(unknown[0])
        raise ConfigError(
            f"unknown config key 'model.{k}'{_suggest(k, accepted)}; model {name!r} "
            f"({cls.__name__}) takes: {', '.join(accepted) or 'no keyword arguments'}"
        )
    missing = [p.name for p in named if p.default is inspect.Parameter.empty and p.name not in kwargs]
    if missing:
        raise ConfigError(
            f"config key 'model.{missing[0]}' is required by model {name!r} ({cls.__name__}); "
            f"it takes: {', '.join(accepted)}"
        )


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _get(
    section: Mapping[str, Any],
    key: str,
    where: str,
    kind: str,
    default: Any = None,
    *,
    choices: Optional[Sequence[str]] = None,
    minimum: Optional[float] = None,
    strict_min: bool = False,
    maximum: Optional[float] = None,
    optional: bool = True,
) -> Any:
    """Read ``section[key]`` as ``kind`` (int | float | bool | str | table), validating range and choices."""
    name = _path(where, key)
    if key not in section or section[key] is None:
        if not optional and default is None:
            raise ConfigError(f"config key {name!r} is required")
        return default
    value = section[key]
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"config key {name!r}: expected an integer, got {value!r}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {name!r}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"config key {name!r}: expected a finite number, got {value!r}")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"config key {name!r}: expected true or false, got {value!r}")
    elif kind == "str":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"config key {name!r}: expected a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise ConfigError(
                f"config key {name!r}: expected one of {', '.join(repr(c) for c in choices)}, "
                f"got {value!r}{_suggest(value, choices)}"
            )
    elif kind == "table":
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {name!r}: expected a table (mapping), got {value!r}")
        value = dict(value)
    else:  # pragma: no cover - programming error
        raise AssertionError(kind)
    if minimum is not None and (value < minimum or (strict_min and value == minimum)):
        raise ConfigError(
            f"config key {name!r}: expected a value {'>' if strict_min else '>='} {minimum:g}, got {value!r}"
        )
    if maximum is not None and value > maximum:
        raise ConfigError(f"config key {name!r}: expected a value <= {maximum:g}, got {value!r}")
    return value


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: registry name (or ``"pkg.mod:Class"``) and the class's keyword arguments."""

    name: str
    kwargs: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        name = _get(d, "name", "model", "str", optional=False)
        return cls(name=name, kwargs={k: copy.deepcopy(v) for k, v in d.items() if k != "name"})

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, **copy.deepcopy(self.kwargs)}


@dataclass(frozen=True)
class DataSource:
    """One data set: a file path or a ``"pkg.mod:function"`` callable with keyword arguments."""

    source: str
    kwargs: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any, where: str) -> "DataSource":
        if isinstance(value, str):
            if not value:
                raise ConfigError(f"config key {where!r}: expected a path or 'module:function', got ''")
            return cls(source=value)
        if isinstance(value, Mapping):
            _check_keys(value, ("source", "kwargs"), where)
            source = _get(value, "source", where, "str", optional=False)
            kwargs = _get(value, "kwargs", where, "table", {})
            return cls(source=source, kwargs=kwargs)
        raise ConfigError(
            f"config key {where!r}: expected a path, 'module:function' or a table "
            f"{{source = ..., kwargs = {{...}}}}, got {value!r}"
        )

    def to_dict(self) -> Dict[str, Any]:
        return {"source": self.source, "kwargs": copy.deepcopy(self.kwargs)}


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: training, validation and test sets, and how ASE-readable files are read.

    * ``train``, ``valid``, ``test``: data sources (a file or ``"module:function"``); ``test`` is never used in
      training (``escn evaluate CHECKPOINT --split test`` reads it).
    * ``valid_fraction``, ``test_fraction``: without a ``valid`` (``test``) source, that fraction of the
      ``train`` items is held out by a random split seeded with ``split_seed`` (default: the run's ``seed``);
      the same config always gives the same split.
    * ``energy_key``, ``forces_key``, ``stress_key``: names under which ASE-readable files store the targets
      (see :func:`escn.data.extxyz.read_frames`); a file source's ``kwargs`` may override them per file.
    """

    train: DataSource
    valid: Optional[DataSource] = None
    test: Optional[DataSource] = None
    valid_fraction: float = 0.0
    test_fraction: float = 0.0
    split_seed: Optional[int] = None
    num_workers: int = 0
    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: str = "stress"

    KEYS = (
        "train",
        "valid",
        "test",
        "valid_fraction",
        "test_fraction",
        "split_seed",
        "num_workers",
        "energy_key",
        "forces_key",
        "stress_key",
    )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DataConfig":
        _check_keys(d, cls.KEYS, "data")
        if d.get("train") is None:
            raise ConfigError("config key 'data.train' is required (a path, 'module:function' or a table)")
        train = DataSource.parse(d["train"], "data.train")
        valid = DataSource.parse(d["valid"], "data.valid") if d.get("valid") is not None else None
        test = DataSource.parse(d["test"], "data.test") if d.get("test") is not None else None
        frac = _get(d, "valid_fraction", "data", "float", 0.0, minimum=0.0, maximum=0.9)
        test_frac = _get(d, "test_fraction", "data", "float", 0.0, minimum=0.0, maximum=0.9)
        if valid is not None and frac > 0:
            raise ConfigError("config keys 'data.valid' and 'data.valid_fraction' exclude each other")
        if test is not None and test_frac > 0:
            raise ConfigError("config keys 'data.test' and 'data.test_fraction' exclude each other")
        if frac + test_frac >= 1:
            raise ConfigError(
                f"config keys 'data.valid_fraction' + 'data.test_fraction' = {frac + test_frac:g} leave "
                "no training items; expected a sum < 1"
            )
        return cls(
            train=train,
            valid=valid,
            test=test,
            valid_fraction=frac,
            test_fraction=test_frac,
            split_seed=_get(d, "split_seed", "data", "int", None, minimum=0),
            num_workers=_get(d, "num_workers", "data", "int", 0, minimum=0),
            energy_key=_get(d, "energy_key", "data", "str", "energy"),
            forces_key=_get(d, "forces_key", "data", "str", "forces"),
            stress_key=_get(d, "stress_key", "data", "str", "stress"),
        )

    def read_options(self) -> Dict[str, str]:
        """The target key names for ASE-readable files (keyword arguments of ``read_frames``)."""
        return {"energy_key": self.energy_key, "forces_key": self.forces_key, "stress_key": self.stress_key}

    def to_dict(self) -> Dict[str, Any]:
        return {
            "train": self.train.to_dict(),
            "valid": None if self.valid is None else self.valid.to_dict(),
            "test": None if self.test is None else self.test.to_dict(),
            "valid_fraction": self.valid_fraction,
            "test_fraction": self.test_fraction,
            "split_seed": self.split_seed,
            "num_workers": self.num_workers,
            **self.read_options(),
        }


@dataclass(frozen=True)
class OptimizerConfig:
    """``[optimizer]``: AdamW hyper-parameters."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    KEYS = ("name", "lr", "weight_decay", "betas", "eps")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OptimizerConfig":
        _check_keys(d, cls.KEYS, "optimizer")
        betas = d.get("betas", (0.9, 0.999))
        if (
            not isinstance(betas, (list, tuple))
            or len(betas) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
        ):
            raise ConfigError(f"config key 'optimizer.betas': expected two numbers in [0, 1), got {betas!r}")
        return cls(
            name=_get(d, "name", "optimizer", "str", "adamw", choices=OPTIMIZERS),
            lr=_get(d, "lr", "optimizer", "float", 1e-3, minimum=0.0, strict_min=True),
            weight_decay=_get(d, "weight_decay", "optimizer", "float", 0.0, minimum=0.0),
            betas=(float(betas[0]), float(betas[1])),
            eps=_get(d, "eps", "optimizer", "float", 1e-8, minimum=0.0, strict_min=True),
        )

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "betas": list(self.betas),
            "eps": self.eps,
        }


@dataclass(frozen=True)
class ScheduleConfig:
    """``[schedule]``: learning-rate schedule.

    * ``constant``;
    * ``cosine``: cosine decay from ``lr`` to ``min_lr_ratio * lr`` over ``total_steps``;
    * ``warmup_cosine``: linear warm-up over ``warmup_steps``, then cosine;
    * ``linear``: linear warm-up, then linear decay to ``min_lr_ratio * lr``;
    * ``plateau``: multiply by ``factor`` when the validation loss has not improved by a relative
      ``threshold`` for ``patience`` validations (never below ``min_lr_ratio * lr``).

    ``total_steps`` defaults to ``max_steps``, else ``epochs`` x batches per epoch.
    """

    name: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    total_steps: Optional[int] = None
    factor: float = 0.5
    patience: int = 5
    threshold: float = 1e-4

    KEYS = ("name", "warmup_steps", "min_lr_ratio", "total_steps", "factor", "patience", "threshold")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ScheduleConfig":
        _check_keys(d, cls.KEYS, "schedule")
        s = cls(
            name=_get(d, "name", "schedule", "str", "constant", choices=SCHEDULES),
            warmup_steps=_get(d, "warmup_steps", "schedule", "int", 0, minimum=0),
            min_lr_ratio=_get(d, "min_lr_ratio", "schedule", "float", 0.0, minimum=0.0, maximum=1.0),
            total_steps=_get(d, "total_steps", "schedule", "int", None, minimum=1),
            factor=_get(d, "factor", "schedule", "float", 0.5, minimum=0.0, strict_min=True, maximum=1.0),
            patience=_get(d, "patience", "schedule", "int", 5, minimum=0),
            threshold=_get(d, "threshold", "schedule", "float", 1e-4, minimum=0.0),
        )
        if s.name == "plateau" and s.warmup_steps:
            raise ConfigError(
                "config key 'schedule.warmup_steps' is not used by the 'plateau' schedule; remove it "
                "or use 'warmup_cosine' / 'linear'"
            )
        return s

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LossTerm:
    """One loss term ``weight * mean(err)`` over the elements of the global batch.

    Attributes:
        weight: factor of the term.
        type: ``mse`` | ``mae`` | ``huber`` (with ``delta``) | ``cross_entropy`` (target: class indices).
        per_atom: graph-level keys only: divide prediction and target by the number of atoms first.
        delta: Huber threshold.
        target: name of the target (a Batch field, ``node_attrs`` or ``graph_attrs`` key) when it differs from
            the output key, e.g. ``class_logits = {type = "cross_entropy", target = "label"}``.
    """

    weight: float = 1.0
    type: str = "mse"
    per_atom: bool = False
    delta: float = 1.0
    target: Optional[str] = None

    KEYS = ("weight", "type", "per_atom", "delta", "target")

    @classmethod
    def parse(cls, value: Any, where: str) -> "LossTerm":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = {"weight": value}
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"config key {where!r}: expected a weight (number) or a table "
                f"{{weight, type, per_atom, delta}}, got {value!r}"
            )
        _check_keys(value, cls.KEYS, where)
        term = cls(
            weight=_get(value, "weight", where, "float", 1.0, minimum=0.0),
            type=_get(value, "type", where, "str", "mse", choices=LOSS_TYPES),
            per_atom=_get(value, "per_atom", where, "bool", False),
            delta=_get(value, "delta", where, "float", 1.0, minimum=0.0, strict_min=True),
            target=_get(value, "target", where, "str", None),
        )
        if term.per_atom and term.type == "cross_entropy":
            raise ConfigError(f"config key {where + '.per_atom'!r}: not available with type 'cross_entropy'")
        return term

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- the whole config
_TOP_KEYS = (
    "model",
    "data",
    "optimizer",
    "schedule",
    "loss",
    "seed",
    "dtype",
    "device",
    "batch_size",
    "eval_batch_size",
    "epochs",
    "max_steps",
    "max_time",
    "lr_over_time",
    "cutoff",
    "grad_clip",
    "ema_decay",
    "checkpoint_every",
    "log_every",
    "output_dir",
    "progress",
    "threads",
    "fit_atom_energies",
    "valid_every",
)


@dataclass(frozen=True)
class TrainConfig:
    """A validated training configuration (see the module docstring for the file format).

    Attributes:
        model, data, optimizer, schedule: the sections.
        loss: output key -> :class:`LossTerm`.
        seed: seeds model initialisation and the per-epoch shuffling.
        dtype: ``"float32"`` or ``"float64"`` for the model and the data.
        device: torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        batch_size: graphs per step (global batch; split across ranks under DDP).
        eval_batch_size: graphs per validation batch (default: ``batch_size``).
        epochs / max_steps: training stops at whichever comes first (at least one is required).
        max_time: also stop once the training time (wall clock since the start, summed over resumed runs, set-up
            and data loading excluded) reaches this many seconds: after the step that crossed it, the final
            weights are validated and checkpointed as at any other end.  The learning-rate schedule still runs
            over ``epochs`` / ``max_steps``; where a run stops under ``max_time`` depends on the machine's speed,
            so such a run is not reproducible step for step.  None: no time limit.
        lr_over_time: with ``max_time``, the schedule's position is the further of the step and
            ``total_steps * training time / max_time``, so the learning rate reaches its final value by the time
            budget on a machine too slow for ``total_steps`` (and by ``total_steps`` on a faster one).  The
            learning rates then depend on the machine's speed (not reproducible step for step).
        cutoff: radius-graph cutoff applied to items without edges (None: leave them).
        grad_clip: max global gradient norm (None: no clipping).
        ema_decay: decay of the weight EMA (None: no EMA, validation uses the raw weights).
        checkpoint_every: steps between checkpoints (one is always written at the end).
        log_every: steps between training lines in ``metrics.jsonl``.
        output_dir: where ``checkpoint.pt``, ``best.pt``, ``metrics.jsonl`` and ``config.json`` go.
        progress: show progress (a tqdm bar on a terminal, else a plain line every few seconds).
        threads: torch intra-op threads (None: torch's default; under DDP cores / ranks).
        valid_every: validate every this many epochs (and always after the last one); the best checkpoint
            is chosen among the validated epochs.
        fit_atom_energies: on a fresh start, set the model's per-type energy offsets to the least-squares
            fit of the training energies on the atom counts (``E_graph ~ sum_t n_t e_t``) when the loss has
            an energy term and the model has ``set_atom_energies``; the network then learns the remainder.
    """

    model: ModelConfig
    data: DataConfig
    loss: Dict[str, LossTerm]
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    batch_size: int = 8
    eval_batch_size: Optional[int] = None
    epochs: Optional[int] = None
    max_steps: Optional[int] = None
    max_time: Optional[float] = None
    lr_over_time: bool = False
    cutoff: Optional[float] = None
    grad_clip: Optional[float] = None
    ema_decay: Optional[float] = None
    checkpoint_every: int = 100
    log_every: int = 1
    output_dir: str = "runs/escn"
    progress: bool = True
    threads: Optional[int] = None
    fit_atom_energies: bool = True
    valid_every: int = 1

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Validate a nested mapping (raises :class:`ConfigError`)."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"a training config must be a mapping of sections, got {type(d).__name__}")
        _check_keys(d, _TOP_KEYS, "")
        for section in ("model", "data", "loss"):
            if d.get(section) is None:
                raise ConfigError(f"config section [{section}] is required")
        for section in ("model", "data", "loss", "optimizer", "schedule"):
            if d.get(section) is not None and not isinstance(d[section], Mapping):
                raise ConfigError(f"config section [{section}]: expected a table, got {d[section]!r}")
        loss_d = d["loss"]
        if not loss_d:
            raise ConfigError(
                "config section [loss] is empty: give at least one output key with a weight, e.g. energy = 1.0"
            )
        loss = {str(k): LossTerm.parse(v, f"loss.{k}") for k, v in loss_d.items()}
        if all(t.weight == 0 for t in loss.values()):
            raise ConfigError("config section [loss]: all weights are zero")
        device = _get(d, "device", "", "str", "cpu")
        if not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
            raise ConfigError(f"config key 'device': expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        grad_clip = _get(d, "grad_clip", "", "float", None, minimum=0.0)
        ema_decay = _get(d, "ema_decay", "", "float", None, minimum=0.0)
        if ema_decay is not None and ema_decay >= 1:
            raise ConfigError(f"config key 'ema_decay': expected a value in [0, 1), got {ema_decay!r}")
        cfg = cls(
            model=ModelConfig.from_dict(d["model"]),
            data=DataConfig.from_dict(d["data"]),
            loss=loss,
            optimizer=OptimizerConfig.from_dict(d.get("optimizer") or {}),
            schedule=ScheduleConfig.from_dict(d.get("schedule") or {}),
            seed=_get(d, "seed", "", "int", 0, minimum=0),
            dtype=_get(d, "dtype", "", "str", "float32", choices=DTYPES),
            device=device,
            batch_size=_get(d, "batch_size", "", "int", 8, minimum=1),
            eval_batch_size=_get(d, "eval_batch_size", "", "int", None, minimum=1),
            epochs=_get(d, "epochs", "", "int", None, minimum=1),
            max_steps=_get(d, "max_steps", "", "int", None, minimum=1),
            max_time=_get(d, "max_time", "", "float", None, minimum=0.0, strict_min=True),
            lr_over_time=_get(d, "lr_over_time", "", "bool", False),
            cutoff=_get(d, "cutoff", "", "float", None, minimum=0.0, strict_min=True),
            grad_clip=grad_clip or None,
            ema_decay=ema_decay or None,
            checkpoint_every=_get(d, "checkpoint_every", "", "int", 100, minimum=1),
            log_every=_get(d, "log_every", "", "int", 1, minimum=1),
            output_dir=_get(d, "output_dir", "", "str", "runs/escn"),
            progress=_get(d, "progress", "", "bool", True),
            threads=_get(d, "threads", "", "int", None, minimum=1),
            fit_atom_energies=_get(d, "fit_atom_energies", "", "bool", True),
            valid_every=_get(d, "valid_every", "", "int", 1, minimum=1),
        )
        if cfg.lr_over_time and cfg.max_time is None:
            raise ConfigError("config key 'lr_over_time' needs 'max_time' (the time the schedule runs over)")
        if cfg.epochs is None and cfg.max_steps is None:
            raise ConfigError("config needs 'epochs' or 'max_steps' (or both: training stops at the first reached)")
        return cfg

    def to_dict(self) -> Dict[str, Any]:
        """The canonical nested dict (defaults filled in, JSON-serialisable); ``from_dict`` round-trips it."""
        out: Dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "loss":
                out["loss"] = {k: t.to_dict() for k, t in v.items()}
            elif hasattr(v, "to_dict"):
                out[f.name] = v.to_dict()
            else:
                out[f.name] = v
        return out

    @property
    def torch_dtype(self) -> "Any":
        import torch

        return {"float32": torch.float32, "float64": torch.float64}[self.dtype]


# --------------------------------------------------------------------------- files and overrides
def _read_file(path: Path) -> Dict[str, Any]:
    suffix = path.suffix.lower()
    text = path.read_text()
    if suffix in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError:
            raise ConfigError(
                f"{path}: reading YAML configs needs pyyaml (pip install pyyaml, or "
                "pip install 'escn[train]'); TOML configs work without it"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
    return data


def _parse_value(text: str) -> Any:
    """A TOML literal (number, bool, string, array, inline table), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(d: Mapping[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """A copy of ``d`` with ``"dotted.key=value"`` overrides (values parsed as TOML literals)."""
    out = copy.deepcopy(dict(d))
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. optimizer.lr=1e-3")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a table")
            node = child
        node[parts[-1]] = _parse_value(value.strip())
    return out


def load_config(
    source: Union[str, os.PathLike, Mapping[str, Any], TrainConfig], overrides: Sequence[str] = ()
) -> TrainConfig:
    """A validated :class:`TrainConfig` from a TOML/YAML/JSON file, a mapping or a config.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: invalid content.
    """
    if isinstance(source, TrainConfig):
        if not overrides:
            return source
        source = source.to_dict()
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} not found")
        data = _read_file(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return TrainConfig.from_dict(data)


def parse_config(d: Mapping[str, Any]) -> TrainConfig:
    """Alias of :meth:`TrainConfig.from_dict`."""
    return TrainConfig.from_dict(d)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: Sequence[str] = RESUMABLE_CHANGES
) -> List[Tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every leaf that differs, except ``ignore``d keys."""
    a, b = _flatten(old), _flatten(new)
    keys = sorted(set(a) | set(b))
    return [(k, a.get(k), b.get(k)) for k in keys if k not in ignore and json.dumps(a.get(k)) != json.dumps(b.get(k))]
