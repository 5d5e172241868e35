"""Input validation shared by the convolution layers."""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def check_conv_inputs(
    layer: str,
    x: Tensor,
    in_dim: int,
    edge_src: Tensor,
    edge_dst: Tensor,
    edge_vec: Tensor,
    weight: Tensor,
    weight_numel: int,
    num_nodes_out: int,
) -> None:
    """Raise a clear ``TypeError``/``ValueError`` for malformed convolution inputs."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{layer}: x must be a floating-point tensor of shape (N, {in_dim})")
    if x.ndim != 2 or x.shape[1] != in_dim:
        raise ValueError(f"{layer}: x must have shape (N, {in_dim}) for irreps_in, got {tuple(x.shape)}")
    for name, idx in (("edge_src", edge_src), ("edge_dst", edge_dst)):
        if not isinstance(idx, Tensor) or idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{layer}: {name} must be an int64 tensor of shape (E,)")
        if idx.ndim != 1:
            raise ValueError(f"{layer}: {name} must have shape (E,), got {tuple(idx.shape)}")
    E = edge_src.shape[0]
    if edge_dst.shape[0] != E:
        raise ValueError(f"{layer}: edge_src has {E} edges but edge_dst has {edge_dst.shape[0]}")
    if E:
        if int(edge_src.min()) < 0 or int(edge_src.max()) >= x.shape[0]:
            raise ValueError(f"{layer}: edge_src holds indices outside 0..{x.shape[0] - 1} (x has {x.shape[0]} nodes)")
        if int(edge_dst.min()) < 0 or int(edge_dst.max()) >= num_nodes_out:
            raise ValueError(f"{layer}: edge_dst holds indices outside 0..{num_nodes_out - 1}")
    if not isinstance(edge_vec, Tensor) or not edge_vec.is_floating_point():
        raise TypeError(f"{layer}: edge_vec must be a floating-point tensor of shape (E, 3)")
    if edge_vec.shape != (E, 3):
        raise ValueError(f"{layer}: edge_vec must have shape ({E}, 3), got {tuple(edge_vec.shape)}")
    if not isinstance(weight, Tensor) or not weight.is_floating_point():
        raise TypeError(f"{layer}: weight must be a floating-point tensor of shape (E, {weight_numel})")
    if weight.shape != (E, weight_numel):
        raise ValueError(f"{layer}: weight must have shape (E, weight_numel) = ({E}, {weight_numel}), got {tuple(weight.shape)}")
    if x.dtype != edge_vec.dtype or x.dtype != weight.dtype:
        raise TypeError(f"{layer}: x, edge_vec and weight must share a dtype, got {x.dtype}, {edge_vec.dtype}, {weight.dtype}")
