"""Autograd, to any order, for a bilinear per-edge map given by three kernels.

For a map ``y = f(a, b)`` linear in each argument, with ``g(gy, b) = (df/da)^T gy`` and
``h(a, gy) = (df/db)^T gy``, every derivative is again one of ``f, g, h``:
``<f(a, v), gy> = <a, g(gy, v)> = <v, h(a, gy)>`` and ``<f(u, b), gy> = <u, g(gy, b)>``. So three autograd
Functions that call each other in their backward passes give exact gradients of every order (forces, then
training on forces, for example) from three compiled kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class BilinearKernels:
    """The three kernels of one bilinear map (and, optionally, ``g`` and ``h`` in one pass).

    ``f(plan, a, b) -> y``, ``g(plan, gy, b) -> ga``, ``h(plan, a, gy) -> gb``;
    ``gh(plan, gy, a, b) -> (ga, gb)`` computes both adjoints at once (e.g. reading ``b`` once)."""

    f: Callable[[Any, Tensor, Tensor], Tensor]
    g: Callable[[Any, Tensor, Tensor], Tensor]
    h: Callable[[Any, Tensor, Tensor], Tensor]
    gh: Callable[[Any, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]] | None = None


class _F(torch.autograd.Function):
    """y = f(a, b)."""

    @staticmethod
    def forward(ctx, k: BilinearKernels, plan: Any, a: Tensor, b: Tensor) -> Tensor:
        ctx.k, ctx.plan = k, plan
        ctx.save_for_backward(a, b)
        return k.f(plan, a, b)

    @staticmethod
    def backward(ctx, gy: Tensor):
        a, b = ctx.saved_tensors
        k, plan = ctx.k, ctx.plan
        need_a, need_b = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        if torch.is_grad_enabled():  # building a graph of the gradient: keep both adjoints differentiable
            ga = _G.apply(k, plan, gy, b) if need_a else None
            gb = _H.apply(k, plan, a, gy) if need_b else None
        elif need_a and need_b and k.gh is not None:
            ga, gb = k.gh(plan, gy, a, b)
        else:
            ga = k.g(plan, gy, b) if need_a else None
            gb = k.h(plan, a, gy) if need_b else None
        return None, None, ga, gb


class _G(torch.autograd.Function):
    """ga = g(gy, b); linear in gy (adjoint f(., b)) and in b (adjoint h(., gy))."""

    @staticmethod
    def forward(ctx, k: BilinearKernels, plan: Any, gy: Tensor, b: Tensor) -> Tensor:
        ctx.k, ctx.plan = k, plan
        ctx.save_for_backward(gy, b)
        return k.g(plan, gy, b)

    @staticmethod
    def backward(ctx, gga: Tensor):
        gy, b = ctx.saved_tensors
        ggy = _F.apply(ctx.k, ctx.plan, gga, b) if ctx.needs_input_grad[2] else None
        gb = _H.apply(ctx.k, ctx.plan, gga, gy) if ctx.needs_input_grad[3] else None
        return None, None, ggy, gb


class _H(torch.autograd.Function):
    """gb = h(a, gy); linear in a (adjoint g(gy, .)) and in gy (adjoint f(a, .))."""

    @staticmethod
    def forward(ctx, k: BilinearKernels, plan: Any, a: Tensor, gy: Tensor) -> Tensor:
        ctx.k, ctx.plan = k, plan
        ctx.save_for_backward(a, gy)
        return k.h(plan, a, gy)

    @staticmethod
    def backward(ctx, ggb: Tensor):
        a, gy = ctx.saved_tensors
        ga = _G.apply(ctx.k, ctx.plan, gy, ggb) if ctx.needs_input_grad[2] else None
        ggy = _F.apply(ctx.k, ctx.plan, a, ggb) if ctx.needs_input_grad[3] else None
        return None, None, ga, ggy


def apply_f(k: BilinearKernels, plan: Any, a: Tensor, b: Tensor) -> Tensor:
    """``f(a, b)``, differentiable to any order."""
    return _F.apply(k, plan, a, b)

