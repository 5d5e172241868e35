"""Elementwise functions whose higher derivatives are cheaper than PyTorch's own composition.

:func:`silu` equals ``torch.nn.functional.silu``. Its gradient is one fused ``silu_backward`` pass, and the
gradient of that gradient (the second derivative, needed when training on forces) is computed in 7 passes over
the tensor with fused kernels (``sigmoid_backward``, ``silu_backward``) where PyTorch's generic formula takes
more; every derivative is itself differentiable, so derivatives of any order are exact.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

__all__ = ["silu"]


class _SiLUGrad(torch.autograd.Function):
    """``(g, x) -> g * silu'(x)``, with ``d/dg = silu'(x)`` and ``d/dx = g * silu''(x)``."""

    @staticmethod
    def forward(ctx, g: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(g, x)
        return torch.ops.aten.silu_backward(g, x)

    @staticmethod
    def backward(ctx, gg: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        g, x = ctx.saved_tensors
        sig = torch.sigmoid(x)
        # silu''(x) = sig (1 - sig) (2 + x (1 - 2 sig))
        t = torch.addcmul(torch.full((), 2.0, dtype=x.dtype, device=x.device), x, torch.add(1.0, sig, alpha=-2.0))
        second = torch.ops.aten.sigmoid_backward(t, sig)
        return _SiLUGrad.apply(gg, x), second * g * gg


class _SiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.nn.functional.silu(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return _SiLUGrad.apply(g, x)


def silu(x: Tensor) -> Tensor:
    """``x * sigmoid(x)``, elementwise, any shape; the same values as ``torch.nn.functional.silu``."""
    return _SiLU.apply(x)
