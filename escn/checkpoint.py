"""Atomic checkpoint files (the format written by ``escn train``, read by ``escn.models.load``) and RNG states.

A checkpoint is a dict saved with ``torch.save``::

    format            "escn-train-checkpoint" and version
    model_name        registry name (or import path) of the model class
    model_config      the class's keyword arguments (``model.config``)
    dtype             "float32" | "float64"
    model_state       raw weights (``state_dict``)
    ema_state         EMA weights (``state_dict`` layout) or None
    optimizer_state, schedule_state
    progress          {"step", "epoch", "position", "log_bytes", "best": {...}, "history": [...], "epoch_stats"}
    rng               per-rank {"torch", "numpy", "python"} states and the sampler's (seed, epoch)
    config            the full training config (canonical dict)

Files are written to a temporary file in the destination directory (``.checkpoint.pt.<random>.tmp``),
flushed to disk and moved into place with ``os.replace``, so a crash (even SIGKILL) leaves either the old
or the new checkpoint under the real name, never a partial one. A process killed while writing leaves its
temporary file behind; :func:`remove_partial_files` deletes such files (the trainer calls it on start-up),
and they are never read, since only the real name is ever loaded.

Reading errors (missing, truncated or corrupt file, another format, missing entries, weights that do not
fit a model) raise :class:`CheckpointError` with a one-line message saying what was expected.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Union

import numpy as np
import torch

from escn._util import atomic_write

__all__ = ["FORMAT", "VERSION", "CheckpointError", "atomic_save", "load_checkpoint", "remove_partial_files",
           "require_entries", "state_mismatch", "rng_state", "set_rng_state"]

FORMAT = "escn-train-checkpoint"
VERSION = 1
# entries every checkpoint has (what ``escn.models.load`` needs); resuming needs more (see the engine)
MODEL_ENTRIES = ("model_name", "model_config", "model_state")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, another format, or not fitting the model (one-line message)."""


def atomic_save(obj: Any, path: Union[str, os.PathLike]) -> None:
    """``torch.save(obj, path)`` through a temporary file in the same directory and ``os.replace``."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def load_checkpoint(path: Union[str, os.PathLike], map_location: Any = "cpu") -> Dict[str, Any]:
    """Read a training checkpoint.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError (a ValueError): the file is truncated or corrupt, is not an escn training
            checkpoint, was written by a newer version, or lacks the model entries.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle means the file is unusable
        raise CheckpointError(
            f"checkpoint {str(path)!r} ({path.stat().st_size} bytes) is truncated or corrupt: torch.load failed "
            f"({_first_line(exc)}); expected a complete file written by escn train") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = f"a dict with format {ckpt.get('format')!r}" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
        raise CheckpointError(f"{str(path)!r} is not an escn training checkpoint: expected a dict with format "
                              f"{FORMAT!r}, got {got}")
    version = ckpt.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{str(path)!r} has checkpoint version {version!r}: expected an integer up to {VERSION} "
                              "(a newer escn wrote it, or the file is damaged)")
    require_entries(ckpt, MODEL_ENTRIES, path)
    return ckpt


def require_entries(ckpt: Mapping[str, Any], names: Sequence[str], path: Union[str, os.PathLike]) -> None:
    """CheckpointError naming the entries of ``names`` that ``ckpt`` lacks."""
    missing = [n for n in names if n not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks the entries {', '.join(missing)} (expected every "
                              f"entry of a checkpoint written by escn train: {', '.join(names)})")


def _shape(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def state_mismatch(expected: Mapping[str, Any], got: Mapping[str, Any], limit: int = 4) -> str | None:
    """Why ``got`` (a checkpoint's ``state_dict``) cannot be loaded where ``expected`` (the model's) is: keys
    missing from it, keys the model does not have and shape differences, in one line; None when they fit."""
    problems: List[str] = []
    shapes = [f"{k} {_shape(got[k])} in the checkpoint, {_shape(v)} in the model" for k, v in expected.items()
              if k in got and isinstance(v, torch.Tensor) and (not isinstance(got[k], torch.Tensor)
                                                              or got[k].shape != v.shape)]
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]

    def listed(items: List[str]) -> str:
        more = f" and {len(items) - limit} more" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    if shapes:
        problems.append("shapes differ: " + listed(shapes))
    if missing:
        problems.append("missing from the checkpoint: " + listed(missing))
    if extra:
        problems.append("not in the model: " + listed(extra))
    return "; ".join(problems) if problems else None


def remove_partial_files(directory: Union[str, os.PathLike], names: Sequence[str]) -> List[Path]:
    """Delete the temporary files an interrupted :func:`atomic_save` of ``directory/<name>`` left behind
    (``.<name>.<random>.tmp``, for each of ``names``); returns the removed paths.

    Only call this when no other process is writing checkpoints into ``directory``."""
    removed: List[Path] = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for name in names:
        for tmp in sorted(directory.glob(f".{name}.*.tmp")):
            try:
                tmp.unlink()
            except FileNotFoundError:
                continue
            removed.append(tmp)
    return removed


def rng_state() -> Dict[str, Any]:
    """The torch (CPU and CUDA), numpy and python global generator states."""
    state: Dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
