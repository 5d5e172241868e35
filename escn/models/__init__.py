"""Whole networks: the eSCN energy / force / vector model."""

from escn.models.escn import ESCN, EdgeFrameBlock, node_irreps

__all__ = ["ESCN", "EdgeFrameBlock", "node_irreps"]
