"""Whole networks: the eSCN energy / force / vector model, the model registry and checkpoint loading."""

from escn.models.escn import ESCN, EdgeFrameBlock, node_irreps
from escn.models.io import load
from escn.models.registry import build_model, get_model_class, register_model, registered_models

register_model("escn", ESCN)

__all__ = ["ESCN", "EdgeFrameBlock", "build_model", "get_model_class", "load", "node_irreps", "register_model", "registered_models"]
