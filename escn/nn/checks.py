"""Input validation shared by the layers and models: supported dtypes, dtype and device agreement with the
module, convolution arguments. Only tensor metadata is read, except for the index-range check of
:func:`check_conv_inputs`, which runs only on tensors that hold values (:func:`has_values`)."""

from __future__ import annotations

import torch

from escn._util import has_values

Tensor = torch.Tensor

#: dtypes the layers compute in; float16/bfloat16 are refused (the constant tables and the compiled kernels are
#: float32/float64 only, and half-precision equivariance errors would be ~1e-2)
SUPPORTED_DTYPES = (torch.float32, torch.float64)


def module_tensor(module: torch.nn.Module) -> Tensor | None:
    """The first floating parameter or buffer of ``module`` (its dtype and device), or None if it has none."""
    for t in module.parameters():
        if t.is_floating_point():
            return t
    for b in module.buffers():
        if b.is_floating_point():
            return b
    return None


def check_float_input(layer: str, name: str, t: object, like: Tensor | None) -> None:
    """Raise a clear ``TypeError``/``ValueError`` unless ``t`` is a float32/float64 tensor with the dtype and
    device of the module tensor ``like`` (any supported dtype and device when ``like`` is None). Reads only
    metadata (no host synchronisation)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{layer}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{layer}: {name} has dtype {t.dtype}; supported: torch.float32 and torch.float64 (integer, float16 and "
            f"bfloat16 inputs are not supported: convert with {name}.float() or {name}.double())"
        )
    if like is None:
        return
    if t.dtype != like.dtype:
        raise TypeError(
            f"{layer}: {name} has dtype {t.dtype} but the module is in {like.dtype}; move the module with "
            f".to({t.dtype}) or convert the input with .to({like.dtype})"
        )
    if t.device != like.device:
        raise ValueError(
            f"{layer}: {name} is on device {t.device} but the module is on {like.device}; move one of them"
        )


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
    like: Tensor | None = None,
) -> None:
    """Raise a clear ``TypeError``/``ValueError`` for malformed convolution inputs (``like``: a floating
    tensor of the layer, whose dtype and device the inputs must have). The index ranges are read only when the
    tensors hold values (:func:`escn._util.has_values`: eager mode, real tensors)."""
    for name, t in (("x", x), ("edge_vec", edge_vec), ("weight", weight)):
        check_float_input(layer, name, t, like)
    if x.ndim != 2 or x.shape[1] != in_dim:
        raise ValueError(f"{layer}: x must have shape (N, {in_dim}) for irreps_in, got {tuple(x.shape)}")
    for name, idx in (("edge_src", edge_src), ("edge_dst", edge_dst)):
        if not isinstance(idx, Tensor) or idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{layer}: {name} must be an int64 tensor of shape (E,)")
        if idx.ndim != 1:
            raise ValueError(f"{layer}: {name} must have shape (E,), got {tuple(idx.shape)}")
        if idx.device != x.device:
            raise ValueError(f"{layer}: {name} is on device {idx.device} but x is on {x.device}")
    E = edge_src.shape[0]
    if edge_dst.shape[0] != E:
        raise ValueError(f"{layer}: edge_src has {E} edges but edge_dst has {edge_dst.shape[0]}")
    if E and has_values(edge_src, edge_dst):  # index ranges: values (eager mode only)
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
        raise ValueError(
            f"{layer}: weight must have shape (E, weight_numel) = ({E}, {weight_numel}), got {tuple(weight.shape)}"
        )
    if x.dtype != edge_vec.dtype or x.dtype != weight.dtype:
        raise TypeError(
            f"{layer}: x, edge_vec and weight must share a dtype, got {x.dtype}, {edge_vec.dtype}, {weight.dtype}"
        )
