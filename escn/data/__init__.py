"""Graphs: radius graphs with periodic cells, batching, datasets."""

from escn.data.batch import AtomsGraph, Batch, GraphDataset, check_values, collate, make_dataloader
from escn.data.graph import Graph, edge_vectors, radius_graph

__all__ = [
    "AtomsGraph",
    "Batch",
    "Graph",
    "GraphDataset",
    "check_values",
    "collate",
    "edge_vectors",
    "make_dataloader",
    "radius_graph",
]
