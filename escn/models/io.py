"""Load trained models from training checkpoints (written by ``escn train``)."""

from __future__ import annotations

import os
import warnings
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from escn.checkpoint import MODEL_ENTRIES, CheckpointError, load_checkpoint, require_entries, state_mismatch
from escn.data.species import MAX_ATOMIC_NUMBER
from escn.models.registry import accepts_argument, build_model

__all__ = ["load"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def load(
    checkpoint_path: Union[str, os.PathLike],
    map_location: Any = "cpu",
    *,
    ema: bool = True,
    checkpoint: Optional[Dict[str, Any]] = None,
    trusted: bool = False,
) -> nn.Module:
    """The model stored in a training checkpoint, in eval mode.

    The architecture is rebuilt from the checkpoint's model name (registry name or import path) and
    ``model_config``, in the dtype it was trained in.  The chemical species (``atomic_numbers``) come back
    with the config.  A checkpoint written before models stored species (its ``model_config`` has no
    ``atomic_numbers`` key although the class takes one) loads with the explicit identity mapping
    ``atomic_numbers = [0, 1, ..., num_atom_types - 1]`` -- type index = atomic number, which is how such
    models were fed (atomic numbers used directly as types) -- and a ``UserWarning`` saying so.

    Args:
        checkpoint_path: ``checkpoint.pt`` / ``best.pt`` of a training run.
        map_location: as for ``torch.load``; a device (string or ``torch.device``) also moves the model there.
        ema: load the EMA weights (default) when the run kept an EMA; False: the raw weights.
        checkpoint: an already loaded checkpoint dict (skips reading the file again).
        trusted: read the file with a full unpickling instead of ``torch.load(..., weights_only=True)`` (see
            :func:`escn.checkpoint.load_checkpoint`): only for trusted files of an earlier format, which are better
            converted once with ``escn upgrade-checkpoint``.

    Raises:
        FileNotFoundError: missing file.
        ValueError (``escn.checkpoint.CheckpointError`` for the file's own problems): a truncated or
            corrupt file, a file of an earlier format holding pickled objects (the message says how to convert
            it), not a training checkpoint, an unknown model name, or weights that do not fit the model its
            ``model_config`` builds (the message names the differing keys and shapes).
    """

    if checkpoint is None:
        checkpoint = load_checkpoint(checkpoint_path, map_location=map_location, trusted=trusted)
    ckpt = checkpoint
    require_entries(ckpt, MODEL_ENTRIES, checkpoint_path)
    dtype = ckpt.get("dtype", "float32")
    if dtype not in _DTYPES:
        raise CheckpointError(
            f"checkpoint {str(checkpoint_path)!r}: dtype {dtype!r} is not one of {', '.join(_DTYPES)}"
        )
    config = _with_species(ckpt["model_name"], ckpt["model_config"], checkpoint_path)
    model = build_model(ckpt["model_name"], **config)
    model = model.to(dtype=_DTYPES[dtype])
    use_ema = ema and ckpt.get("ema_state") is not None
    state = ckpt["ema_state"] if use_ema else ckpt["model_state"]
    upgrade = getattr(model, "upgrade_state_dict", None)
    if upgrade is not None:  # key names of earlier versions of the model
        state = upgrade(state)
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointError(
            f"checkpoint {str(checkpoint_path)!r}: its {'EMA ' if use_ema else ''}weights do not fit "
            f"the {ckpt['model_name']!r} model its model_config builds: {problem}"
        )
    model.load_state_dict(state)
    if isinstance(map_location, (str, torch.device)):
        model = model.to(torch.device(map_location))
    return model.eval()


def _with_species(name: str, config: Dict[str, Any], path: Any) -> Dict[str, Any]:
    """``config``, with the identity species of a checkpoint from before models stored them (see :func:`load`)."""
    if "atomic_numbers" in config or not isinstance(config.get("num_atom_types"), int):
        return config
    if not accepts_argument(name, "atomic_numbers"):
        return config
    n = config["num_atom_types"]
    if n > MAX_ATOMIC_NUMBER + 1:
        warnings.warn(
            f"checkpoint {str(path)!r} stores no atomic_numbers and has {n} atom types, more than there are "
            "elements: loading it without species (escn.ase.Calculator then needs atomic_numbers=...)",
            UserWarning,
            stacklevel=3,
        )
        return config
    warnings.warn(
        f"checkpoint {str(path)!r} stores no atomic_numbers (it predates species in model configs): loading it with "
        f"the identity mapping atomic_numbers = [0, ..., {n - 1}] (type index = atomic number, as its atom types were "
        "fed); retrain, or rebuild the model with its real atomic_numbers, to name its elements",
        UserWarning,
        stacklevel=3,
    )
    return {**config, "atomic_numbers": list(range(n))}
