"""Atomic checkpoint files and random-number-generator states.

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

Files are written to a temporary file in the destination directory, flushed to disk and moved into
place with ``os.replace``, so a crash (even SIGKILL) leaves either the old or the new checkpoint.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

from escn._util import atomic_write

__all__ = ["FORMAT", "VERSION", "atomic_save", "load_checkpoint", "rng_state", "set_rng_state"]

FORMAT = "escn-train-checkpoint"
VERSION = 1


def atomic_save(obj: Any, path: Union[str, os.PathLike]) -> None:
    """``torch.save(obj, path)`` through a temporary file in the same directory and ``os.replace``."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: Union[str, os.PathLike], map_location: Any = "cpu") -> Dict[str, Any]:
    """Read a training checkpoint.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not an escn training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{str(path)!r} is not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not an escn training checkpoint")
    if ckpt.get("version", 0) > VERSION:
        raise ValueError(f"{str(path)!r} was written by a newer escn (checkpoint version {ckpt['version']})")
    return ckpt


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
