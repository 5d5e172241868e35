"""SiLU and its first and second derivatives as compiled elementwise kernels (see ``silu.h``), with autograd to
any order.

PyTorch computes the second derivative of SiLU (needed when training on forces) in several passes over the
tensor, each reading and writing it whole; here each derivative is one pass. The kernels are PyTorch operators
(registered when this module is imported; the C library is built at the first call), all operands of one shape
(any shape, no broadcasting), CPU, float32 or float64, one dtype:

- ``escn::silu(x) -> x sigmoid(x)``
- ``escn::silu_grad(grad, x) -> grad silu'(x)``
- ``escn::silu_grad2(grad_grad, grad, x) -> grad_grad grad silu''(x)``
- ``escn::silu_grad_backward(grad_grad, grad, x) -> (silu_grad(grad_grad, x), silu_grad2(grad_grad, grad, x))``:
  the backward of ``silu_grad`` w.r.t. both arguments, in one pass.

Backward formulas: ``silu``'s is ``silu_grad``; ``silu_grad``'s is ``silu_grad_backward`` (or one of its two
parts); ``silu_grad2``'s uses ``silu_grad2`` for its first two arguments and ``silu'''`` computed with PyTorch
ops for ``x`` (third and higher derivatives: PyTorch's autograd differentiates those ops further). So
derivatives of every order are exact.

Outputs are contiguous; the kernels agree with ``torch.nn.functional.silu`` and its derivatives to a few units
in the last place (tests/test_native_silu.py states the bounds).
"""

from __future__ import annotations

import torch

from escn.native._runtime import (
    I64,
    PTR,
    add,
    check_float_operands,
    function,
    restored_args,
    run_over_edges,
    saved_args,
    suffix,
)
from escn.native.transforms import escn_op, register_rowwise_vmap

Tensor = torch.Tensor

# Elements per thread at least (PyTorch's elementwise ops split at 32768 too): below that, starting a second
# thread costs more than it saves.
_GRAIN = 32768
_NAMES = {1: ("x",), 2: ("grad", "x"), 3: ("grad_grad", "grad", "x")}


def _check(op: str, *tensors: Tensor) -> None:
    """One dtype (float32 or float64) and one shape for every operand, else TypeError / ValueError naming the
    operand (metadata only)."""
    names = _NAMES[len(tensors)]
    check_float_operands(op, **dict(zip(names, tensors)))
    for name, t in zip(names[1:], tensors[1:]):
        if t.shape != tensors[0].shape:
            raise ValueError(
                f"{op}: {name} must have the shape of {names[0]} {tuple(tensors[0].shape)}, got {tuple(t.shape)}"
            )


def _run(kernel: str, inputs: tuple[Tensor, ...], num_outputs: int) -> list[Tensor]:
    """Call ``kernel + suffix`` over the flat elements of ``inputs`` (made contiguous) into new contiguous
    outputs of their shape."""
    flat = [t.contiguous() for t in inputs]
    outs = [torch.empty(flat[0].shape, dtype=flat[0].dtype) for _ in range(num_outputs)]
    fn = function(f"escn_{kernel}" + suffix(flat[0].dtype), [I64, I64] + [PTR] * (len(flat) + num_outputs) + [I64])
    run_over_edges(fn, flat[0].numel(), *(t.data_ptr() for t in flat), *(o.data_ptr() for o in outs), grain=_GRAIN)
    return outs


@escn_op("silu", "Tensor x")
def _silu_op(x: Tensor) -> Tensor:
    _check("silu", x)
    return _run("silu", (x,), 1)[0]


@_silu_op.register_fake
def _(x):
    _check("silu", x)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@escn_op("silu_grad", "Tensor grad, Tensor x")
def _silu_grad_op(grad: Tensor, x: Tensor) -> Tensor:
    _check("silu_grad", grad, x)
    return _run("silu_grad", (grad, x), 1)[0]


@_silu_grad_op.register_fake
def _(grad, x):
    _check("silu_grad", grad, x)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@escn_op("silu_grad2", "Tensor grad_grad, Tensor grad, Tensor x")
def _silu_grad2_op(grad_grad: Tensor, grad: Tensor, x: Tensor) -> Tensor:
    _check("silu_grad2", grad_grad, grad, x)
    return _run("silu_grad2", (grad_grad, grad, x), 1)[0]


@_silu_grad2_op.register_fake
def _(grad_grad, grad, x):
    _check("silu_grad2", grad_grad, grad, x)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@escn_op("silu_grad_backward", "Tensor grad_grad, Tensor grad, Tensor x", "(Tensor, Tensor)")
def _silu_grad_backward_op(grad_grad: Tensor, grad: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    _check("silu_grad_backward", grad_grad, grad, x)
    a, b = _run("silu_grad_backward", (grad_grad, grad, x), 2)
    return a, b


@_silu_grad_backward_op.register_fake
def _(grad_grad, grad, x):
    _check("silu_grad_backward", grad_grad, grad, x)
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format),
        torch.empty_like(x, memory_format=torch.contiguous_format),
    )


# ------------------------------------------------------------------ derivatives
def silu_third_derivative(x: Tensor) -> Tensor:
    """``silu'''(x) = d ((1 - 2 s) (3 + x (1 - 2 s)) - 2 x d)`` with ``s = sigmoid(x)``, ``d = s (1 - s)``, in
    PyTorch ops (so differentiable further); same shape as ``x``."""
    s = torch.sigmoid(x)
    d = s * (1 - s)
    q = 1 - 2 * s
    return d * (q * (3 + x * q) - 2 * x * d)


def _setup(ctx, inputs, output) -> None:
    saved_args(ctx, inputs)
    ctx.set_materialize_grads(False)


def _silu_backward(ctx, g):
    (x,) = restored_args(ctx)
    if g is None or not ctx.needs_input_grad[0]:
        return None
    return _silu_grad_op(g, x)


def _silu_grad_backward(ctx, gg):
    grad, x = restored_args(ctx)
    n = ctx.needs_input_grad
    if gg is None:
        return None, None
    if n[0] and n[1]:
        return _silu_grad_backward_op(gg, grad, x)
    return (_silu_grad_op(gg, x) if n[0] else None, _silu_grad2_op(gg, grad, x) if n[1] else None)


def _silu_grad2_backward(ctx, c):
    grad_grad, grad, x = restored_args(ctx)
    n = ctx.needs_input_grad
    if c is None:
        return None, None, None
    d_gg = _silu_grad2_op(c, grad, x) if n[0] else None
    d_g = _silu_grad2_op(c, grad_grad, x) if n[1] else None
    d_x = c * grad_grad * grad * silu_third_derivative(x) if n[2] else None
    return d_gg, d_g, d_x


def _silu_grad_backward_backward(ctx, ca, cb):
    # outputs a = gg silu'(x), b = gg g silu''(x)
    grad_grad, grad, x = restored_args(ctx)
    n = ctx.needs_input_grad
    d_gg = d_g = d_x = None
    if ca is not None:
        d_gg = _silu_grad_op(ca, x) if n[0] else None
        d_x = _silu_grad2_op(ca, grad_grad, x) if n[2] else None
    if cb is not None:
        d_gg = add(d_gg, _silu_grad2_op(cb, grad, x)) if n[0] else d_gg
        d_g = _silu_grad2_op(cb, grad_grad, x) if n[1] else None
        d_x = add(d_x, cb * grad_grad * grad * silu_third_derivative(x)) if n[2] else d_x
    return d_gg, d_g, d_x


_silu_op.register_autograd(_silu_backward, setup_context=_setup)
_silu_grad_op.register_autograd(_silu_grad_backward, setup_context=_setup)
_silu_grad2_op.register_autograd(_silu_grad2_backward, setup_context=_setup)
_silu_grad_backward_op.register_autograd(_silu_grad_backward_backward, setup_context=_setup)
# Elementwise: vmap runs each operator once on the batch (the vmapped dimension leading).
for _o in (_silu_op, _silu_grad_op, _silu_grad2_op, _silu_grad_backward_op):
    register_rowwise_vmap(_o)


def silu(x: Tensor) -> Tensor:
    """``x sigmoid(x)`` with the compiled kernels (the operator ``escn::silu``, differentiable to any order), any
    shape, a contiguous result of x's shape. Callers check :func:`escn.native.available` and
    :func:`escn.native.supports` first."""
    return _silu_op(x)
