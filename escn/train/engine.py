"""The training loop: :class:`Trainer` and :func:`train`.

One optimisation step takes one global batch of ``batch_size`` graphs (see
:mod:`escn.train.data` for the seeded order and the rank shards, drawn with a ``DistributedSampler``), computes
the weighted loss normalised by global element counts (:mod:`escn.train.losses`), sums gradients over ranks
(``DistributedDataParallel``, :mod:`escn.train.ddp`), clips the global norm, takes an AdamW step at the rate
of a ``torch.optim.lr_scheduler`` schedule (:mod:`escn.train.schedule`) and updates the weight EMA (an
``AveragedModel``, :mod:`escn.train.ema`).

At the end of every epoch the validation set is evaluated with the EMA weights; ``best.pt`` keeps the
state with the lowest validation loss.  Every ``checkpoint_every`` steps and at the end, rank 0
writes ``checkpoint.pt`` atomically with everything needed to continue exactly: weights, EMA,
optimizer, schedule, step / epoch / position in the epoch, RNG states and the length of the metrics
log (a resumed run truncates ``metrics.jsonl`` back to it, so the log reads as one run).

The loop draws nothing from the global random generators itself (the data loaders get their own seeded
generator), so the RNG states saved in a checkpoint are exactly those of the uninterrupted run at that
step: a run stopped and resumed any number of times ends bitwise equal to the uninterrupted one on the
same machine (see docs/training.md for the exact conditions).
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, TextIO, Union

import numpy as np
import torch
from torch import Tensor, nn

from escn.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    atomic_save,
    load_checkpoint,
    remove_partial_files,
    require_entries,
    rng_state,
    set_rng_state,
    state_mismatch,
)
from escn.data import AtomsGraph, Batch
from escn.models.registry import build_model, get_model_class, model_config

from . import ddp
from .atom_energies import fit_atom_energies
from .config import RESUMABLE_CHANGES, ConfigError, TrainConfig, check_model_kwargs, config_differences, load_config
from .data import (
    FORCE_FIELD_TARGETS,
    PreparedDataset,
    ShardLoader,
    SpeciesMapped,
    collate_or_none,
    load_splits,
    rank_batches,
    training_species,
)
from .ema import EMA
from .losses import LossFunction
from .progress import EpochProgress, format_summary
from .schedule import LRSchedule

__all__ = ["Trainer", "TrainResult", "train", "CHECKPOINT_NAME", "BEST_NAME", "METRICS_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"
# the entries resuming reads
RESUME_ENTRIES = (
    "config",
    "model_config",
    "model_state",
    "ema_state",
    "ema_updates",
    "optimizer_state",
    "schedule_state",
    "progress",
    "epoch_stats",
    "sampler",
    "rng",
)

ConfigLike = Union[str, os.PathLike, Mapping[str, Any], TrainConfig]


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        step, epoch, position: progress when training stopped (epoch and position 0-based).
        history: one dict per finished epoch (train and valid metrics).
        best: ``{"epoch", "step", "valid_loss", "metrics"}`` of the best validation, or None.
        final_train / final_valid: metrics of the last epoch (valid: None without validation data).
        checkpoint: path of the last checkpoint written.
        model: the trained model (raw weights; the EMA is in the checkpoint).
        completed: False when stopped early by ``until_step``.
    """

    step: int
    epoch: int
    position: int
    history: List[Dict[str, Any]]
    best: Optional[Dict[str, Any]]
    final_train: Optional[Dict[str, float]]
    final_valid: Optional[Dict[str, float]]
    checkpoint: Optional[Path]
    model: nn.Module
    completed: bool = True


@dataclass
class _Progress:
    step: int = 0
    epoch: int = 0
    position: int = 0
    log_bytes: int = 0
    elapsed: float = 0.0
    best: Optional[Dict[str, Any]] = None
    history: List[Dict[str, Any]] = field(default_factory=list)
    last_valid_step: int = -1
    last_valid: Optional[Dict[str, float]] = None

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


def _canonical(config: Dict[str, Any]) -> Dict[str, Any]:
    """A checkpoint's config with the defaults of keys added since it was written filled in (as written when
    it no longer parses)."""
    try:
        return TrainConfig.from_dict(config).to_dict()
    except ConfigError:
        return config


class Trainer:
    """Train a registered model from a config (file path, mapping or :class:`TrainConfig`).

    Args:
        config: the training configuration.
        resume: False/None: fresh run (refuses an output_dir that already holds a checkpoint unless
            ``overwrite``); True: continue from ``output_dir/checkpoint.pt``; a path: continue from it.
            A resumed trainer prints the step and epoch it continues from to ``stream``.
        overwrite: start fresh even if ``output_dir`` has a checkpoint (it is replaced).
        stream: where the summary table and the resume line go (default stdout).

    On start-up, temporary files a killed run left while writing ``checkpoint.pt`` / ``best.pt`` are deleted
    (one run per ``output_dir`` at a time).

    Raises:
        ConfigError: invalid config, a ``[model]`` key the model class does not take, or a checkpoint that
            does not match the config (the message names the differing keys with both values).
        CheckpointError: the checkpoint to resume is truncated, corrupt or incomplete.
        FileNotFoundError: no checkpoint to resume.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is joined here; call :meth:`close`
    (or use :func:`train`) to leave it.
    """

    def __init__(
        self,
        config: ConfigLike,
        *,
        resume: Union[bool, str, os.PathLike, None] = None,
        overwrite: bool = False,
        stream: Optional[TextIO] = None,
    ):
        self.config = load_config(config)
        cfg = self.config
        self.stream = stream if stream is not None else sys.stdout
        self.info = ddp.init_distributed(cfg.device)
        self._set_threads()
        self.device = torch.device(cfg.device if not cfg.device == "cuda" else f"cuda:{self.info.local_rank}")
        self.dtype = cfg.torch_dtype
        self.out = Path(cfg.output_dir)
        self.loss_fn = LossFunction(cfg.loss)
        self.removed_partial: List[Path] = []
        if self.info.is_main:
            self.removed_partial = remove_partial_files(self.out, (CHECKPOINT_NAME, BEST_NAME))
            for tmp in self.removed_partial:
                print(f"removed {tmp}: a partial checkpoint left by a run killed while writing it", file=self.stream)
        check_model_kwargs(get_model_class(cfg.model.name), cfg.model.kwargs, cfg.model.name)

        resume_path = self._resume_path(resume, overwrite)
        train_items, valid_items = self._load_data()
        # chemical species (atomic numbers -> type indices), from the model config or the training data
        self.atomic_numbers = training_species(cfg.model.name, cfg.model.kwargs, cfg.loss, train_items, valid_items)
        model_kwargs = dict(cfg.model.kwargs)
        if self.atomic_numbers is not None:
            model_kwargs["atomic_numbers"] = self.atomic_numbers

        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model.name, **model_kwargs).to(device=self.device, dtype=self.dtype)
        self.model_config = model_config(self.model, model_kwargs)
        # graphs are built here, where the data is made: at the config's cutoff, else the model's
        cutoff = cfg.cutoff if cfg.cutoff is not None else getattr(self.model, "cutoff", None)
        self.train_set = PreparedDataset(train_items, self.dtype, cutoff, self.atomic_numbers)
        self.valid_set = PreparedDataset(valid_items, self.dtype, cutoff, self.atomic_numbers) if valid_items else None
        if resume_path is None:
            self._fit_atom_energies(SpeciesMapped(train_items, self.atomic_numbers))
        # under torchrun: DistributedDataParallel, built from rank 0's weights; self.model stays the plain module
        self.train_model = ddp.data_parallel(self.model, self.info, self.device)
        if self.info.distributed and self.info.is_main:
            print(
                f"data parallel: {self.info.world_size} ranks (DistributedDataParallel, "
                f"{torch.distributed.get_backend()})",
                file=self.stream,
                flush=True,
            )
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError(f"model {cfg.model.name!r} has no trainable parameters")
        o = cfg.optimizer
        self.optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        self.batches_per_epoch = math.ceil(len(self.train_set) / cfg.batch_size)
        self.total_steps = self._total_steps()
        self.schedule = LRSchedule(cfg.schedule, self.optimizer, self.total_steps)
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self.state = _Progress()
        self.epoch_stats = self._zero_stats()
        self.resumed_from: Optional[Path] = None
        if resume_path is not None:
            self._restore(resume_path)

    # ------------------------------------------------------------------ set-up helpers
    def _set_threads(self) -> None:
        threads = self.config.threads
        if threads is None and self.info.distributed:
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.info.world_size))
            threads = max(1, (os.cpu_count() or 1) // max(1, local_world))
        if threads is not None:
            torch.set_num_threads(threads)

    def _fit_atom_energies(self, train_items: Sequence[AtomsGraph]) -> None:
        """Least-squares per-type energy offsets from the training set (config ``fit_atom_energies``)."""
        cfg = self.config
        term = cfg.loss.get("energy")
        if not cfg.fit_atom_energies or term is None or term.weight == 0 or (term.target or "energy") != "energy":
            return
        setter = getattr(self.model, "set_atom_energies", None)
        num_types = getattr(self.model, "num_atom_types", None)
        if setter is None or not isinstance(num_types, int):
            return
        setter(fit_atom_energies(train_items, num_types))

    def _resume_path(self, resume: Union[bool, str, os.PathLike, None], overwrite: bool) -> Optional[Path]:
        default = self.out / CHECKPOINT_NAME
        if resume is None or resume is False:
            if default.exists() and not overwrite:
                raise ConfigError(
                    f"output_dir {str(self.out)!r} already holds {CHECKPOINT_NAME}: resume it "
                    "(escn train CONFIG --resume) or start over with --overwrite / another output_dir"
                )
            return None
        path = default if resume is True else Path(resume)
        if not path.is_file():
            partial = any(p.name.startswith(f".{path.name}.") for p in self.removed_partial)
            hint = (
                (
                    ": the run was killed while writing its first checkpoint (the partial file was removed); "
                    "start it afresh without --resume"
                )
                if partial
                else ""
            )
            raise FileNotFoundError(f"cannot resume: checkpoint {str(path)!r} not found{hint}")
        return path

    def _load_data(self) -> tuple[Sequence[AtomsGraph], Optional[Sequence[AtomsGraph]]]:
        require = [t for t in FORCE_FIELD_TARGETS if t in {term.target or k for k, term in self.config.loss.items()}]
        parts = load_splits(self.config, ("train", "valid"), require=require)
        train_items, valid_items = parts["train"], parts["valid"]
        self.loss_fn.check_item(train_items[0], "training data")
        if valid_items is not None:
            self.loss_fn.check_item(valid_items[0], "validation data")
        return train_items, valid_items

    def _total_steps(self) -> int:
        cfg = self.config
        candidates = [cfg.max_steps] if cfg.max_steps else []
        if cfg.epochs:
            candidates.append(cfg.epochs * self.batches_per_epoch)
        return min(candidates)

    def _zero_stats(self) -> Tensor:
        return torch.zeros(len(self.loss_fn.stat_names), dtype=torch.float64, device=self.device)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_dict(self) -> Optional[Dict[str, Any]]:
        rngs = ddp.all_gather_objects(rng_state(), self.info)  # collective: every rank calls it
        if not self.info.is_main:
            return None
        cfg = self.config
        return {
            "format": FORMAT,
            "version": VERSION,
            "model_name": cfg.model.name,
            "model_config": self.model_config,
            "dtype": cfg.dtype,
            "model_state": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "ema_state": None if self.ema is None else {k: v.cpu().clone() for k, v in self.ema.state_dict().items()},
            "ema_updates": 0 if self.ema is None else self.ema.updates,
            "optimizer_state": self.optimizer.state_dict(),
            "schedule_state": self.schedule.state_dict(),
            "progress": self.state.to_dict(),
            "epoch_stats": self.epoch_stats.cpu().clone(),
            "sampler": {
                "seed": cfg.seed,
                "epoch": self.state.epoch,
                "position": self.state.position,
                "batch_size": cfg.batch_size,
                "num_items": len(self.train_set),
            },
            "rng": rngs,
            "world_size": self.info.world_size,
            "config": cfg.to_dict(),
        }

    def save_checkpoint(self, path: Optional[Path] = None) -> Optional[Path]:
        """Write a checkpoint (rank 0; every rank must call this). Returns the path on rank 0."""
        if self.info.is_main and self._log is not None:
            self._log.flush()
            self.state.log_bytes = self._log.tell()
        self.state.elapsed = self._elapsed()
        ckpt = self._checkpoint_dict()
        if ckpt is None:
            return None
        path = path or self.out / CHECKPOINT_NAME
        atomic_save(ckpt, path)
        return path

    def _restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location="cpu")
        where = f"cannot resume from {str(path)!r}"
        require_entries(ckpt, RESUME_ENTRIES, path)
        # the model as built (its model_config, defaults included) rather than the keys the [model] sections spell
        # out: "lmax = 2" written out or left at its default of 2 is the same model
        diffs = [
            d
            for d in config_differences(_canonical(ckpt["config"]), self.config.to_dict())
            if not d[0].startswith("model.") or d[0] == "model.name"
        ]
        diffs += [(f"model.{k}", a, b) for k, a, b in config_differences(ckpt["model_config"], self.model_config, ())]
        diffs.sort(key=lambda d: d[0])
        if diffs:
            shown = "; ".join(f"{k} (checkpoint: {json.dumps(a)}, now: {json.dumps(b)})" for k, a, b in diffs[:8])
            more = f" and {len(diffs) - 8} more" if len(diffs) > 8 else ""
            raise ConfigError(
                f"{where}: the config differs from the checkpoint's in "
                f"{shown}{more}. Only {', '.join(RESUMABLE_CHANGES)} may change."
            )
        saved = ckpt["model_config"].get("atomic_numbers")
        if saved != self.model_config.get("atomic_numbers"):
            raise ConfigError(
                f"cannot resume from {str(path)!r}: the checkpoint's model was trained on atomic_numbers "
                f"{saved}, this run's training data give {self.model_config.get('atomic_numbers')}"
            )
        s = ckpt["sampler"]
        if s["num_items"] != len(self.train_set):
            raise ConfigError(
                f"{where}: the training set has {len(self.train_set)} items, "
                f"the checkpoint was trained on {s['num_items']}"
            )
        model_state = self.model.state_dict()
        for what, state in (("weights", ckpt["model_state"]), ("EMA weights", ckpt["ema_state"])):
            if state is None and what == "EMA weights" and self.ema is None:
                continue
            problem = (
                "no EMA weights (expected them, ema_decay is set)"
                if state is None
                else state_mismatch(model_state, state)
            )
            if problem:
                raise CheckpointError(
                    f"{where}: the checkpoint's {what} do not fit the model built from the config: {problem}"
                )
        self.model.load_state_dict(ckpt["model_state"])
        if self.ema is not None:
            self.ema.load_state_dict({k: v.to(self.device) for k, v in ckpt["ema_state"].items()}, ckpt["ema_updates"])
        try:
            self.optimizer.load_state_dict(ckpt["optimizer_state"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(
                f"{where}: the optimizer state does not fit the model's parameters "
                f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})"
            ) from exc
        self.state = _Progress(**ckpt["progress"])
        self.schedule.load_state_dict(ckpt["schedule_state"], self.state.step)
        self.epoch_stats = ckpt["epoch_stats"].to(self.device)
        rngs = ckpt["rng"]
        set_rng_state(rngs[self.info.rank] if len(rngs) == self.info.world_size else rngs[0])
        self.resumed_from = path
        st = self.state
        if self.info.is_main:
            print(
                f"resuming from {path}: step {st.step}, epoch {st.epoch + 1} "
                f"({st.position} of its {self.batches_per_epoch} batches done)",
                file=self.stream,
                flush=True,
            )

    # ------------------------------------------------------------------ logging
    _log: Optional[Any] = None
    _t0: float = 0.0

    _elapsed0: float = 0.0

    def _elapsed(self) -> float:
        """Training seconds, summed over resumed runs."""
        return self._elapsed0 + (time.perf_counter() - self._t0) if self._t0 else self.state.elapsed

    def _open_log(self) -> None:
        if not self.info.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        path = self.out / METRICS_NAME
        if self.resumed_from is not None and path.exists():
            with open(path, "r+b") as f:
                f.truncate(min(self.state.log_bytes, path.stat().st_size))
            self._log = open(path, "a", encoding="utf-8")
        else:
            self._log = open(path, "w", encoding="utf-8")

    def _write(self, record: Dict[str, Any]) -> None:
        if self._log is not None:
            self._log.write(json.dumps(record) + "\n")
            self._log.flush()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # ------------------------------------------------------------------ steps
    def _forward(self, batch: Batch, model: nn.Module) -> Dict[str, Tensor]:
        out = model(batch, compute_forces=self.loss_fn.compute_forces, compute_stress=self.loss_fn.compute_stress)
        if not isinstance(out, Mapping):
            raise TypeError(f"the model must return a dict of tensors, got {type(out).__name__}")
        return out

    def train_step(self, batch: Optional[Batch]) -> Tensor:
        """One optimisation step on this rank's shard of a global batch (None: empty shard).

        Returns the float64 statistics of the whole global batch (summed over ranks).
        """
        self.model.train()
        if self.config.lr_over_time and self.config.max_time:
            # the schedule runs on the clock: this step's rate is that of the further of the step and the
            # elapsed fraction of max_time (the LambdaLR's own rate is overridden for this step)
            lr = self.schedule.lr(self._schedule_step())
            self._last_lr = lr
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        if batch is not None:
            batch = batch.to(self.device)
        counts = ddp.all_reduce_sum(self.loss_fn.counts(batch, self.device), self.info)
        self.optimizer.zero_grad(set_to_none=True)
        stats = self._zero_stats()
        if batch is not None:
            loss, stats = self.loss_fn(self._forward(batch, self.train_model), batch, counts)
            loss.backward()  # under DDP: gradients summed over ranks
        elif self.info.distributed:
            # an empty shard (a global batch smaller than the world) still joins the gradient sum: zero
            # gradients from one item's forward and backward
            filler = collate_or_none([self.train_set[0]]).to(self.device)
            loss, _ = self.loss_fn(self._forward(filler, self.train_model), filler, counts)
            (loss * 0.0).backward()
        ddp.all_reduce_sum(stats, self.info)
        total = self.loss_fn.summarize(stats)["loss"]
        if not math.isfinite(total):
            raise FloatingPointError(
                f"non-finite training loss {total} at step {self.state.step} "
                f"(epoch {self.state.epoch + 1}); lower optimizer.lr or set grad_clip"
            )
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return stats

    def evaluate(self, dataset: Optional[PreparedDataset] = None, use_ema: bool = True) -> Optional[Dict[str, float]]:
        """Loss and metrics (``valid_`` prefixed) on ``dataset`` (default: the validation set), sharded over ranks."""
        dataset = dataset if dataset is not None else self.valid_set
        if dataset is None:
            return None
        bs = self.config.eval_batch_size or self.config.batch_size
        shards = rank_batches(dataset, bs, self.info.rank, self.info.world_size, shuffle=False)
        loader = ShardLoader(dataset, shards, self.config.data.num_workers, seed=self.config.seed)
        stats = self._zero_stats()
        model = self.ema.module if (use_ema and self.ema is not None) else self.model
        was_training = model.training
        model.eval()
        need_grad = self.loss_fn.compute_forces or self.loss_fn.compute_stress
        for batch in loader:
            if batch is None:
                continue
            batch = batch.to(self.device)
            with torch.set_grad_enabled(need_grad):
                out = self._forward(batch, model)
            counts = self.loss_fn.counts(batch, self.device)
            _, s = self.loss_fn({k: v.detach() for k, v in out.items()}, batch, counts)
            stats += s
        model.train(was_training)
        ddp.all_reduce_sum(stats, self.info)
        return self.loss_fn.summarize(stats, "valid_")

    # ------------------------------------------------------------------ the loop
    def _done(self, epochs_finished: Optional[int] = None) -> bool:
        """Training is over after ``epochs_finished`` epochs (default: the state's) and the steps taken."""
        cfg = self.config
        epoch = self.state.epoch if epochs_finished is None else epochs_finished
        return bool(
            (cfg.max_steps and self.state.step >= cfg.max_steps)
            or (cfg.epochs and epoch >= cfg.epochs)
            or self._timed_out
        )

    _timed_out: bool = False
    _last_lr: float = 0.0

    def _schedule_step(self) -> int:
        """The step the learning-rate schedule is at: the optimisation step, or with ``lr_over_time`` the further
        of it and ``total_steps * training time / max_time`` (the same on every rank: rank times are maxed)."""
        step = self.state.step
        cfg = self.config
        if cfg.lr_over_time and cfg.max_time:
            t = torch.tensor([self._elapsed()], dtype=torch.float64, device=self.device)
            if self.info.distributed:
                torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            step = max(step, min(self.total_steps, int(self.total_steps * float(t.item()) / cfg.max_time)))
        return step

    def _check_time(self) -> bool:
        """Whether the training time has reached ``max_time`` (the run stops after the current step); every rank
        gets the same answer (the flags are summed over ranks), and it is remembered for :meth:`_done`."""
        limit = self.config.max_time
        if limit and not self._timed_out:
            flag = torch.tensor([1.0 if self._elapsed() >= limit else 0.0], dtype=torch.float64, device=self.device)
            self._timed_out = bool(ddp.all_reduce_sum(flag, self.info).item() > 0)
        return self._timed_out

    def _end_of_validation(self, metrics: Optional[Dict[str, float]], record: Dict[str, Any]) -> None:
        st = self.state
        st.last_valid_step = st.step
        st.last_valid = metrics
        if metrics is None:
            return
        self.schedule.observe(metrics["valid_loss"])
        if st.best is None or metrics["valid_loss"] < st.best["valid_loss"]:
            record["best"] = True
            st.best = {
                "epoch": st.epoch,
                "step": st.step,
                "valid_loss": metrics["valid_loss"],
                "metrics": {k: v for k, v in record.items() if k != "time"},
            }
            self.save_checkpoint(self.out / BEST_NAME)

    def _end_epoch(self) -> None:
        st = self.state
        train_metrics = self.loss_fn.summarize(self.epoch_stats, "train_")
        validate = self._done(st.epoch + 1) or (st.epoch + 1) % self.config.valid_every == 0
        valid_metrics = self.evaluate() if validate else None
        record: Dict[str, Any] = {
            "type": "epoch",
            "step": st.step,
            "epoch": st.epoch + 1,
            "lr": self._last_lr if self.config.lr_over_time else self.schedule.lr(max(st.step - 1, 0)),
            **train_metrics,
            **(valid_metrics or {}),
        }
        if validate:
            self._end_of_validation(valid_metrics, record)
        record["time"] = round(self._elapsed(), 3)
        self._write(record)
        st.history.append({k: v for k, v in record.items() if k != "time"})
        st.epoch += 1
        st.position = 0
        self.epoch_stats = self._zero_stats()

    def fit(self, until_step: Optional[int] = None) -> TrainResult:
        """Train until ``epochs`` / ``max_steps`` (or, to stop early, until global step ``until_step``).

        Returns a :class:`TrainResult`; rank 0 prints the summary table when training completes.
        """
        cfg = self.config
        st = self.state
        self._t0 = time.perf_counter()
        self._elapsed0 = st.elapsed
        self._timed_out = False
        self._check_time()
        self._open_log()
        stopped = until_step is not None and st.step >= until_step and not self._done()
        try:
            while not self._done() and not stopped:
                batches = rank_batches(
                    self.train_set, cfg.batch_size, self.info.rank, self.info.world_size, seed=cfg.seed, epoch=st.epoch
                )
                shards = batches[st.position :]
                # the loader's own generator: creating it must not advance the global RNG, or every resume
                # (which creates one more loader mid-epoch) would shift the global RNG stream by one draw
                loader = ShardLoader(self.train_set, shards, cfg.data.num_workers, seed=cfg.seed * 1_000_003 + st.epoch)
                bar = EpochProgress(st.epoch, len(batches), st.position, enabled=cfg.progress and self.info.is_main)
                try:
                    for batch in loader:
                        lr = self.schedule.lr(st.step)
                        stats = self.train_step(batch)
                        if cfg.lr_over_time and cfg.max_time:
                            lr = self._last_lr  # the step ran at the clock's rate
                        st.step += 1
                        st.position += 1
                        self.epoch_stats += stats
                        metrics = self.loss_fn.summarize(stats)
                        if st.step % cfg.log_every == 0:
                            self._write(
                                {
                                    "type": "train",
                                    "step": st.step,
                                    "epoch": st.epoch + 1,
                                    "lr": lr,
                                    **metrics,
                                    "time": round(self._elapsed(), 3),
                                }
                            )
                        bar.update({"loss": metrics["loss"], "lr": lr})
                        if st.step % cfg.checkpoint_every == 0:
                            self.save_checkpoint()
                        if (
                            (cfg.max_steps and st.step >= cfg.max_steps)
                            or (until_step is not None and st.step >= until_step)
                            or self._check_time()
                        ):
                            break
                finally:
                    bar.close()
                if st.position >= len(batches):
                    self._end_epoch()
                if until_step is not None and st.step >= until_step and not self._done():
                    stopped = True
            if not stopped and self.valid_set is not None and st.last_valid_step != st.step:
                # stopped mid-epoch by max_steps: validate the final weights once
                metrics = self.evaluate()
                record = {"type": "valid", "step": st.step, "epoch": st.epoch + 1, **(metrics or {})}
                self._end_of_validation(metrics, record)
                record["time"] = round(self._elapsed(), 3)
                self._write(record)
            path = self.save_checkpoint()
        finally:
            self._close_log()
        result = self._result(path, completed=not stopped)
        if self.info.is_main and not stopped and self._timed_out:
            print(
                f"stopped by max_time = {cfg.max_time:g} s after {st.elapsed:.0f} s of training, at step {st.step}",
                file=self.stream,
                flush=True,
            )
        if self.info.is_main and not stopped:
            print(
                format_summary(
                    result.final_train,
                    result.final_valid,
                    st.best,
                    st.step,
                    st.epoch + st.position / max(1, self.batches_per_epoch),
                    st.elapsed,
                ),
                file=self.stream,
                flush=True,
            )
        return result

    def _result(self, path: Optional[Path], completed: bool) -> TrainResult:
        st = self.state
        last = st.history[-1] if st.history else None
        final_train = (
            {k: v for k, v in last.items() if k.startswith("train_")}
            if last
            else self.loss_fn.summarize(self.epoch_stats, "train_")
        )
        return TrainResult(
            step=st.step,
            epoch=st.epoch,
            position=st.position,
            history=list(st.history),
            best=st.best,
            final_train=final_train,
            final_valid=st.last_valid,
            checkpoint=path,
            model=self.model,
            completed=completed,
        )

    def close(self, synchronize: bool = True) -> None:
        """Leave the process group (if one was joined); ``synchronize=False`` after an error (see
        :func:`escn.train.ddp.shutdown`)."""
        ddp.shutdown(self.info, synchronize)


def train(
    config: ConfigLike,
    *,
    resume: Union[bool, str, os.PathLike, None] = None,
    overwrite: bool = False,
    until_step: Optional[int] = None,
    stream: Optional[TextIO] = None,
) -> TrainResult:
    """Build a :class:`Trainer` from ``config``, fit it and leave the process group.

    Args:
        config: path of a TOML/YAML/JSON file, a nested dict or a :class:`TrainConfig`.
        resume: True for ``output_dir/checkpoint.pt``, or a checkpoint path.
        overwrite: start fresh even if ``output_dir`` holds a checkpoint.
        until_step: stop (with a checkpoint) once this global step is reached.
    """
    trainer = Trainer(config, resume=resume, overwrite=overwrite, stream=stream)
    try:
        result = trainer.fit(until_step=until_step)
    except BaseException:
        trainer.close(synchronize=False)
        raise
    trainer.close()
    return result
