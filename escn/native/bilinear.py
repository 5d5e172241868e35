"""Autograd, to any order, for a bilinear per-edge map given by four PyTorch operators.

For a map ``y = f(a, b)`` linear in each argument, with ``g(gy, b) = (df/da)^T gy`` and
``h(a, gy) = (df/db)^T gy``, every derivative is again one of ``f, g, h``:
``<f(a, v), gy> = <a, g(gy, v)> = <v, h(a, gy)>`` and ``<f(u, b), gy> = <u, g(gy, b)>``. So backward formulas
for ``f, g, h`` (and ``gh(gy, a, b) = (g(gy, b), h(a, gy))``, both adjoints in one pass) that call the
operators themselves give exact gradients of every order (forces, then training on forces, for example) from
compiled kernels, and keep every step visible to ``torch.compile`` and ``torch.export`` as one operator.
"""

from __future__ import annotations

from typing import Any

from escn.native._runtime import add, restored_args, saved_args


def _setup(ctx, inputs, output) -> None:
    saved_args(ctx, inputs)
    ctx.set_materialize_grads(False)


def register_bilinear_autograd(f: Any, g: Any, h: Any, gh: Any) -> None:
    """Register the backward formulas of four custom operators (``torch.library.custom_op`` objects) that take
    the same trailing plan arguments: ``f(a, b, *plan) -> y``, ``g(gy, b, *plan) -> ga``,
    ``h(a, gy, *plan) -> gb`` and ``gh(gy, a, b, *plan) -> (ga, gb)``. The plan arguments get no gradient."""

    def f_backward(ctx, gy):
        a, b, *plan = restored_args(ctx)
        n = ctx.needs_input_grad
        if gy is None:
            return (None,) * len(n)
        if n[0] and n[1]:
            ga, gb = gh(gy, a, b, *plan)
        else:
            ga = g(gy, b, *plan) if n[0] else None
            gb = h(a, gy, *plan) if n[1] else None
        return ga, gb, *(None,) * len(plan)

    def g_backward(ctx, gga):  # ga = g(gy, b): <gga, ga> = <f(gga, b), gy> = <h(gga, gy), b>
        gy, b, *plan = restored_args(ctx)
        n = ctx.needs_input_grad
        if gga is None:
            return (None,) * len(n)
        return (f(gga, b, *plan) if n[0] else None, h(gga, gy, *plan) if n[1] else None, *(None,) * len(plan))

    def h_backward(ctx, ggb):  # gb = h(a, gy): <ggb, gb> = <g(gy, ggb), a> = <f(a, ggb), gy>
        a, gy, *plan = restored_args(ctx)
        n = ctx.needs_input_grad
        if ggb is None:
            return (None,) * len(n)
        return (g(gy, ggb, *plan) if n[0] else None, f(a, ggb, *plan) if n[1] else None, *(None,) * len(plan))

    def gh_backward(ctx, gga, ggb):  # both of the above: (ga, gb) = (g(gy, b), h(a, gy))
        gy, a, b, *plan = restored_args(ctx)
        n = ctx.needs_input_grad
        d_gy = d_a = d_b = None
        if gga is not None:
            d_gy = f(gga, b, *plan) if n[0] else None
            d_b = h(gga, gy, *plan) if n[2] else None
        if ggb is not None:
            d_gy = add(d_gy, f(a, ggb, *plan)) if n[0] else d_gy
            d_a = g(gy, ggb, *plan) if n[1] else None
        return d_gy, d_a, d_b, *(None,) * len(plan)

    f.register_autograd(f_backward, setup_context=_setup)
    g.register_autograd(g_backward, setup_context=_setup)
    h.register_autograd(h_backward, setup_context=_setup)
    gh.register_autograd(gh_backward, setup_context=_setup)
