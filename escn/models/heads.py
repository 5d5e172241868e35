"""Output heads on the backbone's node features (:class:`escn.models.ESCNBackbone`).

- :class:`EnergyHead`: per-atom energies from the invariant (``0e``) channels plus a learned offset per atom type.
- :class:`GraphHead`: an equivariant linear map of the per-graph mean of the node features.
- the per-node vector output is an equivariant :class:`escn.nn.Linear` to ``1x1o``.
"""

from __future__ import annotations

import torch
from torch import nn

from escn.data.batch import Batch
from escn.nn.linear import Linear
from escn.nn.radial import RadialMLP
from escn.o3.irreps import Irreps

Tensor = torch.Tensor

__all__ = ["EnergyHead", "GraphHead"]


class EnergyHead(nn.Module):
    """Per-atom energy ``scale * MLP(x_0e) + shift + offset[type]``.

    Args:
        channels: number of ``0e`` channels read (the first ``channels`` columns of the node features).
        hidden: hidden width of the MLP.
        num_atom_types: number of per-type offsets (initialised to zero).
        scale, shift: applied to the MLP's output.

    ``forward(x, types, offsets=None)``: node features (N, >= channels), types (N,) int64, optional offsets
    (num_atom_types,) replacing the learned ones (e.g. averaged over relabellings) -> per-atom energies (N,).
    """

    def __init__(self, channels: int, hidden: int, num_atom_types: int, scale: float = 1.0, shift: float = 0.0) -> None:
        super().__init__()
        self.channels = channels
        self.scale = float(scale)
        self.shift = float(shift)
        self.mlp = RadialMLP([channels, hidden, 1])
        self.atom_energy = nn.Embedding(num_atom_types, 1)
        nn.init.zeros_(self.atom_energy.weight)

    def forward(self, x: Tensor, types: Tensor, offsets: Tensor | None = None) -> Tensor:
        e = self.mlp(x[:, : self.channels])[:, 0] * self.scale + self.shift
        offsets = self.atom_energy.weight[:, 0] if offsets is None else offsets
        return e + offsets.to(x.dtype)[types]


class GraphHead(nn.Module):
    """``Linear(mean over each graph's nodes)``: (N, irreps_in.dim) node features -> (B, irreps_out.dim)."""

    def __init__(self, irreps_in: Irreps | str, irreps_out: Irreps | str) -> None:
        super().__init__()
        self.linear = Linear(irreps_in, irreps_out)

    @staticmethod
    def pooled(batch: Batch, x: Tensor) -> Tensor:
        """Per-graph mean of node features: (N, d) -> (B, d)."""
        counts = torch.bincount(batch.batch, minlength=batch.num_graphs).clamp_min(1).to(x.dtype)
        return x.new_zeros(batch.num_graphs, x.shape[1]).index_add_(0, batch.batch, x) / counts[:, None]

    def forward(self, batch: Batch, x: Tensor) -> Tensor:
        return self.linear(self.pooled(batch, x))
