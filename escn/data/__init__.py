"""Graphs: radius graphs with periodic cells, batching, datasets."""

from escn.data.batch import AtomsGraph, Batch, GraphDataset, collate, make_dataloader
from escn.data.graph import Graph, edge_vectors, radius_graph

__all__ = ["AtomsGraph", "Batch", "Graph", "GraphDataset", "collate", "edge_vectors", "make_dataloader", "radius_graph"]
