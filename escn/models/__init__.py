"""Whole networks: the eSCN backbone (node features) and the energy / force / vector model on it, the model registry and checkpoint loading."""

from escn.models.backbone import EdgeFrameBlock, ESCNBackbone, node_irreps
from escn.models.escn import ESCN
from escn.models.io import load
from escn.models.registry import build_model, get_model_class, register_model, registered_models

register_model("escn", ESCN)

__all__ = [
    "ESCN",
    "ESCNBackbone",
    "EdgeFrameBlock",
    "build_model",
    "get_model_class",
    "load",
    "node_irreps",
    "register_model",
    "registered_models",
]
