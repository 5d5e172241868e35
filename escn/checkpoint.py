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
    rng               per-rank {"torch", "numpy", "python"} states (tensors and plain numbers, see :func:`rng_state`)
    config            the full training config (canonical dict)

Everything in it is a tensor or a plain value (dict, list, tuple, str, int, float, bool, None), and the configs
are JSON-compatible, so :func:`load_checkpoint` reads it with ``torch.load(..., weights_only=True)``, which
never runs code from the file. Checkpoint version 1 (escn before this format) stored the numpy and python RNG
states as pickled numpy objects, which a weights-only load refuses: reading such a file raises a
:class:`CheckpointError` saying so. If the file is trusted, convert it once with ``escn upgrade-checkpoint FILE``
(:func:`upgrade_checkpoint`) or read it with ``load_checkpoint(path, trusted=True)``.

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
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from escn._util import atomic_write

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "atomic_save",
    "load_checkpoint",
    "remove_partial_files",
    "require_entries",
    "state_mismatch",
    "rng_state",
    "set_rng_state",
    "upgrade_checkpoint",
]

FORMAT = "escn-train-checkpoint"
#: 2: RNG states as tensors and plain numbers (readable with weights_only=True); 1: numpy / python RNG states pickled
VERSION = 2
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


def _unsafe_objects_error(path: Path, exc: BaseException) -> "CheckpointError":
    """The one-line error for a complete file that a weights-only load refuses (pickled Python objects)."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f" ({found.group(1)})" if found else ""
    return CheckpointError(
        f"checkpoint {str(path)!r} holds pickled Python objects{what} that a safe load (torch.load with "
        "weights_only=True) refuses: it was written by an escn older than checkpoint version 2, or not by escn. "
        f"If you trust the file, convert it once with `escn upgrade-checkpoint {path}` (or read it with "
        "escn.checkpoint.load_checkpoint(path, trusted=True))"
    )


def load_checkpoint(
    path: Union[str, os.PathLike], map_location: Any = "cpu", *, trusted: bool = False
) -> Dict[str, Any]:
    """Read a training checkpoint.

    Args:
        path: the checkpoint file.
        map_location: as for ``torch.load``.
        trusted: False (default): read with ``torch.load(..., weights_only=True)``, which only rebuilds tensors
            and plain values and never runs code from the file; a file holding other pickled objects (a
            version-1 checkpoint) is refused with a :class:`CheckpointError` saying how to convert it. True: a
            full unpickling (``weights_only=False``), which can run arbitrary code from the file -- only for files
            from a trusted source, e.g. to read or convert (:func:`upgrade_checkpoint`) a version-1 checkpoint.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError (a ValueError): the file is truncated or corrupt, holds pickled objects (and ``trusted``
            is False), is not an escn training checkpoint, was written by a newer version, or lacks the model
            entries.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        if not trusted and "weights only" in str(exc).lower() and zipfile.is_zipfile(path):
            raise _unsafe_objects_error(path, exc) from None
        raise _corrupt(path, exc) from exc
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle means the file is unusable
        raise _corrupt(path, exc) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = f"a dict with format {ckpt.get('format')!r}" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
        raise CheckpointError(
            f"{str(path)!r} is not an escn training checkpoint: expected a dict with format {FORMAT!r}, got {got}"
        )
    version = ckpt.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint version {version!r}: expected an integer up to {VERSION} "
            "(a newer escn wrote it, or the file is damaged)"
        )
    require_entries(ckpt, MODEL_ENTRIES, path)
    return ckpt


def _corrupt(path: Path, exc: BaseException) -> "CheckpointError":
    return CheckpointError(
        f"checkpoint {str(path)!r} ({path.stat().st_size} bytes) is truncated or corrupt: torch.load failed "
        f"({_first_line(exc)}); expected a complete file written by escn train"
    )


def upgrade_checkpoint(path: Union[str, os.PathLike], output: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Rewrite a trusted checkpoint of an earlier version in the current format (readable with
    ``weights_only=True``): its RNG states become tensors and plain numbers, its version :data:`VERSION`.

    The file is read with a full unpickling (``load_checkpoint(path, trusted=True)``), which can run code from
    it: only convert files from a trusted source. Written atomically to ``output`` (default: over ``path``).
    Returns the path written. Raises :class:`CheckpointError` when the result would still hold objects other
    than tensors and plain values (then it is not written).
    """
    ckpt = load_checkpoint(path, trusted=True)
    if isinstance(ckpt.get("rng"), list):
        ckpt["rng"] = [_plain_rng(r) for r in ckpt["rng"]]
    ckpt["version"] = VERSION
    bad = _unsafe_entry(ckpt, "checkpoint")
    if bad:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be converted: {bad} is not a tensor or plain value")
    out = Path(output) if output is not None else Path(path)
    atomic_save(ckpt, out)
    return out


def _unsafe_entry(obj: Any, where: str) -> Optional[str]:
    """The first entry of ``obj`` (``where``-rooted path and type) that is not a tensor, torch.Size or plain
    value, or None."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                return f"{where} key {k!r} ({type(k).__name__})"
            bad = _unsafe_entry(v, f"{where}.{k}")
            if bad:
                return bad
        return None
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple, torch.Size):
        for i, v in enumerate(obj):
            bad = _unsafe_entry(v, f"{where}[{i}]")
            if bad:
                return bad
        return None
    if obj is None or type(obj) in (str, int, float, bool) or type(obj) is torch.Tensor:
        return None
    return f"{where} ({type(obj).__module__}.{type(obj).__qualname__})"


def require_entries(ckpt: Mapping[str, Any], names: Sequence[str], path: Union[str, os.PathLike]) -> None:
    """CheckpointError naming the entries of ``names`` that ``ckpt`` lacks."""
    missing = [n for n in names if n not in ckpt]
    if missing:
        raise CheckpointError(
            f"checkpoint {str(path)!r} lacks the entries {', '.join(missing)} (expected every "
            f"entry of a checkpoint written by escn train: {', '.join(names)})"
        )


def _shape(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def state_mismatch(expected: Mapping[str, Any], got: Mapping[str, Any], limit: int = 4) -> str | None:
    """Why ``got`` (a checkpoint's ``state_dict``) cannot be loaded where ``expected`` (the model's) is: keys
    missing from it, keys the model does not have and shape differences, in one line; None when they fit."""
    problems: List[str] = []
    shapes = [
        f"{k} {_shape(got[k])} in the checkpoint, {_shape(v)} in the model"
        for k, v in expected.items()
        if k in got
        and isinstance(v, torch.Tensor)
        and (not isinstance(got[k], torch.Tensor) or got[k].shape != v.shape)
    ]
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
    """The torch (CPU and CUDA), numpy and python global generator states, as tensors and plain numbers.

    Returns:
        A dict with keys ``torch`` (uint8 tensor), ``cuda`` (a uint8 tensor per device, with CUDA only),
        ``numpy`` (``bit_generator`` str, ``key`` int64 tensor (624,), ``pos``, ``has_gauss`` ints,
        ``cached_gaussian`` float) and ``python`` (``version`` int, ``state`` int64 tensor (625,),
        ``gauss_next`` float or None).
    """
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _plain_numpy(np.random.get_state()),
        "python": _plain_python(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (also the pickled tuples of version-1 checkpoints)."""
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(_numpy_tuple(state["numpy"]))
    random.setstate(_python_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain_numpy(st: Any) -> Any:
    if isinstance(st, dict):
        return st
    name, key, pos, has_gauss, cached = st
    return {
        "bit_generator": str(name),
        "key": torch.from_numpy(np.asarray(key, dtype=np.int64).copy()),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _numpy_tuple(st: Any) -> Any:
    if not isinstance(st, dict):
        return st
    return (
        st["bit_generator"],
        st["key"].cpu().numpy().astype(np.uint32),
        st["pos"],
        st["has_gauss"],
        st["cached_gaussian"],
    )


def _plain_python(st: Any) -> Any:
    if isinstance(st, dict):
        return st
    version, internal, gauss_next = st
    return {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next}


def _python_tuple(st: Any) -> Any:
    if not isinstance(st, dict):
        return st
    return (st["version"], tuple(int(v) for v in st["state"].tolist()), st["gauss_next"])


def _plain_rng(state: Dict[str, Any]) -> Dict[str, Any]:
    """A per-rank RNG state of a version-1 checkpoint in the current form."""
    return {**state, "numpy": _plain_numpy(state["numpy"]), "python": _plain_python(state["python"])}
