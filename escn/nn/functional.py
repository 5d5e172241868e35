"""Elementwise functions whose higher derivatives are cheaper than PyTorch's own composition.

:func:`silu` has the values of ``torch.nn.functional.silu`` and exact derivatives of every order. On CPU
float32 / float64 tensors, when the compiled kernels are available (:func:`escn.native.available`), it is the
operator ``escn::silu`` (:mod:`escn.native.silu_kernel`): the function, its gradient, and the backward of that
gradient (the second derivative, needed when training on forces; both of its outputs) are one pass over the
tensor each. Otherwise it is the PyTorch path below: the gradient is one fused ``silu_backward`` pass and the second
derivative 7 passes with fused kernels (``sigmoid_backward``, ``silu_backward``) where PyTorch's generic formula
takes more.
"""

from __future__ import annotations

from typing import Any

import torch

from escn.native import _runtime as native_kernels
from escn.native import silu_kernel

Tensor = torch.Tensor

__all__ = ["silu", "silu_torch"]


class _SiLUGrad(torch.autograd.Function):
    """``(g, x) -> g * silu'(x)``, with ``d/dg = silu'(x)`` and ``d/dx = g * silu''(x)``. ``forward`` and
    ``setup_context`` apart and a generated vmap rule: the form ``torch.func`` transforms accept."""

    generate_vmap_rule = True

    @staticmethod
    def forward(g: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        return torch.ops.aten.silu_backward(g, x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor], output: Tensor) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx: Any, gg: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        g, x = ctx.saved_tensors
        sig = torch.sigmoid(x)
        # silu''(x) = sig (1 - sig) (2 + x (1 - 2 sig))
        t = torch.addcmul(torch.full((), 2.0, dtype=x.dtype, device=x.device), x, torch.add(1.0, sig, alpha=-2.0))
        second = torch.ops.aten.sigmoid_backward(t, sig)
        return _SiLUGrad.apply(gg, x), second * g * gg


class _SiLU(torch.autograd.Function):
    """``silu(x)`` with the backward :class:`_SiLUGrad` (in the form ``torch.func`` transforms accept)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:  # type: ignore[override]
        return torch.nn.functional.silu(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor], output: Tensor) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return _SiLUGrad.apply(g, x)


def silu(x: Tensor, executor: str = "native") -> Tensor:
    """``x * sigmoid(x)``, elementwise, any shape; the values of ``torch.nn.functional.silu`` (to a few units in
    the last place on the compiled path, exactly on the PyTorch path). With ``executor="native"`` the compiled
    kernels are used for CPU float32 / float64 tensors when available (their result is contiguous), else
    PyTorch ops; ``executor="torch"``: PyTorch ops always."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"silu: x must be a tensor, got {type(x).__name__}")
    if executor == "native" and native_kernels.supports(x) and native_kernels.available():
        return silu_kernel.silu(x)
    return silu_torch(x)


def silu_torch(x: Tensor) -> Tensor:
    """:func:`silu` with PyTorch ops only (any device and floating dtype): the reference of the compiled path."""
    return _SiLU.apply(x)
