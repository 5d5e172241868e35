"""Load trained models from training checkpoints (written by ``escn train``)."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from escn.models.registry import build_model

__all__ = ["load"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def load(checkpoint_path: Union[str, os.PathLike], map_location: Any = "cpu", *, ema: bool = True,
         checkpoint: Optional[Dict[str, Any]] = None) -> nn.Module:
    """The model stored in a training checkpoint, in eval mode.

    The architecture is rebuilt from the checkpoint's model name (registry name or import path) and
    ``model_config``, in the dtype it was trained in.

    Args:
        checkpoint_path: ``checkpoint.pt`` / ``best.pt`` of a training run.
        map_location: as for ``torch.load``; a device (string or ``torch.device``) also moves the model there.
        ema: load the EMA weights (default) when the run kept an EMA; False: the raw weights.
        checkpoint: an already loaded checkpoint dict (skips reading the file again).

    Raises:
        FileNotFoundError: missing file.  ValueError: not a training checkpoint, or an unknown model name.
    """
    from escn.train.checkpoint import load_checkpoint

    ckpt = checkpoint if checkpoint is not None else load_checkpoint(checkpoint_path, map_location=map_location)
    model = build_model(ckpt["model_name"], **ckpt["model_config"])
    model = model.to(dtype=_DTYPES[ckpt.get("dtype", "float32")])
    state = ckpt["ema_state"] if ema and ckpt.get("ema_state") is not None else ckpt["model_state"]
    model.load_state_dict(state)
    if isinstance(map_location, (str, torch.device)):
        model = model.to(torch.device(map_location))
    return model.eval()
