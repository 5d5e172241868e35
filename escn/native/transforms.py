"""``torch.func`` transforms (``grad``, ``vjp``, ``jacrev``, ``vmap`` and their compositions) over the ``escn``
operators.

Two pieces, each added to an operator in a line or two (``docs/native_ops.md``, "torch.func"):

- :class:`TransformableOp` wraps a ``torch.library.custom_op``. Its ``register_autograd`` registers the backward
  formula with the operator (``torch.autograd``, ``torch.compile`` and ``torch.export`` see the operator as
  before) and also builds a ``torch.autograd.Function`` with a separate ``setup_context`` from the same
  formula. Calling the wrapper runs the operator, or, while a ``torch.func`` transform is active, that Function:
  in PyTorch 2.13 the autograd wrapper that ``register_autograd`` generates is an ``autograd.Function`` without
  ``setup_context``, which every functorch transform refuses, while an ``autograd.Function`` with
  ``setup_context`` is the form ``torch.func`` supports. The Function's forward is the operator; its vmap rule
  is generated (``generate_vmap_rule``), so under ``vmap`` the operator's own vmap rule runs. The backward
  formulas call the wrappers, so derivatives of every order work under the transforms as well.
- :func:`register_rowwise_vmap` gives an operator whose outputs are per-row functions of its row operands (row
  ``e`` of each output depends only on row ``e`` of each row operand: the edge-frame rotation, the TFN map, the
  elementwise SiLU) a ``torch.library.register_vmap`` rule that folds the vmapped dimension into the rows: one
  kernel call over ``B * E`` rows, each row computed as without vmap, so the result is exact. When an operand
  that is not a row operand is vmapped over, the rule loops over the samples instead (also exact).

The Function has no forward-mode formula: ``torch.func.jvp``, ``jacfwd`` and ``hessian`` (forward over reverse)
over an operator raise a NotImplementedError saying so; ``jacrev`` of ``jacrev`` gives second derivatives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

Tensor = torch.Tensor


def transforms_active() -> bool:
    """True while a ``torch.func`` transform (``grad``, ``vjp``, ``jacrev``, ``vmap``, ...) is active. The same
    test ``torch.autograd.Function.apply`` makes before it hands a Function to the transforms."""
    return torch._C._are_functorch_transforms_active()


class TransformableOp:
    """A custom operator (``torch.library.custom_op``) that also works under ``torch.func`` transforms.

    Calling it calls the operator (the ``escn::name`` op, as ``torch.ops.escn.name``), or, while a transform is
    active, an ``autograd.Function`` made of the same backward formula (see the module docstring). Attributes
    not defined here (``register_fake``, ``register_vmap``, ...) are the operator's.
    """

    def __init__(self, op: Any) -> None:
        self.op = op
        self.name: str = op._qualname
        self.function: type[torch.autograd.Function] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.op, name)

    def __call__(self, *args: Any) -> Any:
        if self.function is not None and transforms_active():
            return self.function.apply(*args)
        return self.op(*args)

    def register_autograd(self, backward: Callable[..., Any], *, setup_context: Callable[..., None]) -> None:
        """Register ``backward`` / ``setup_context`` (the signatures of ``torch.library.register_autograd``) with
        the operator, and build the ``autograd.Function`` that the transforms run. ``backward`` should call
        wrappers (:class:`TransformableOp`), not bare operators, so that its own derivative works under the
        transforms too."""
        self.op.register_autograd(backward, setup_context=setup_context)
        op, name = self.op, self.name

        def forward(*args: Any) -> Any:
            return op(*args)

        def jvp(ctx: Any, *tangents: Any) -> Any:
            raise NotImplementedError(
                f"{name} has no forward-mode derivative, so torch.func.jvp, jacfwd and hessian cannot run over it; "
                "use reverse mode (torch.func.grad, vjp, jacrev; jacrev(jacrev(f)) for second derivatives), or "
                "the layer's executor='torch'"
            )

        self.function = type(
            name.replace("::", "_") + "_function",
            (torch.autograd.Function,),
            {
                "generate_vmap_rule": True,
                "forward": staticmethod(forward),
                "setup_context": staticmethod(setup_context),
                "backward": staticmethod(backward),
                "jvp": staticmethod(jvp),
            },
        )


def transformable(op: Any) -> TransformableOp:
    """``TransformableOp(op)``, usable as a decorator above ``@torch.library.custom_op(...)``."""
    return TransformableOp(op)


def _is_batched(dim: Any) -> bool:
    return isinstance(dim, int)


def register_rowwise_vmap(op: Any, row_args: Sequence[int] | None = None) -> None:
    """Give ``op`` (a custom operator or :class:`TransformableOp`) a ``torch.vmap`` rule for a per-row map.

    ``row_args``: positions of the row operands, tensors whose first dimension is the row (edge) dimension
    shared by every row operand and by every output with rows; None: every tensor operand, and the operator is
    elementwise of any shape (then the vmapped dimension simply leads). Outputs whose first size is not
    ``B * rows`` (placeholders such as ``rotation_adjoint``'s empty parts) are returned unbatched.

    Vmapping over row operands only: the vmapped dimension is moved first and merged with the rows (operands
    not vmapped over are repeated), the operator runs once over ``B * E`` rows and the outputs are split back
    to ``(B, E, ...)``. Vmapping over any other operand: the operator runs once per sample, and the outputs are
    stacked.
    """
    target = op.op if isinstance(op, TransformableOp) else op

    def rule(info: Any, in_dims: tuple, *args: Any) -> tuple[Any, Any]:
        B = info.batch_size
        rows = [i for i, a in enumerate(args) if isinstance(a, Tensor)] if row_args is None else list(row_args)
        if any(_is_batched(d) and i not in rows for i, d in enumerate(in_dims)):
            return _loop(target, B, in_dims, args)
        new = list(args)
        E = None
        for i in rows:
            a, d = args[i], in_dims[i]
            a = a.movedim(d, 0) if _is_batched(d) else a.unsqueeze(0).expand(B, *a.shape)
            if row_args is not None:
                E = a.shape[1]
                a = a.reshape(B * E, *a.shape[2:])
            new[i] = a
        out = target(*new)
        if row_args is None:
            return out, 0 if isinstance(out, Tensor) else tuple(0 for _ in out)
        assert E is not None

        def split(t: Tensor) -> tuple[Tensor, int | None]:
            if t.dim() >= 1 and t.shape[0] == B * E and (E > 0 or t.dim() >= 2):
                return t.reshape(B, E, *t.shape[1:]), 0
            return t, None

        if isinstance(out, Tensor):
            return split(out)
        pairs = [split(t) for t in out]
        return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)

    target.register_vmap(rule)


def _loop(op: Any, B: int, in_dims: tuple, args: tuple) -> tuple[Any, Any]:
    """``op`` once per sample of the vmapped dimension, the outputs stacked along a new first dimension."""
    outs = [op(*(a.select(d, b) if _is_batched(d) else a for a, d in zip(args, in_dims))) for b in range(B)]
    if isinstance(outs[0], Tensor):
        return torch.stack(outs), 0
    return tuple(torch.stack(parts) for parts in zip(*outs)), tuple(0 for _ in outs[0])


def escn_op(name: str, args: str, returns: str = "Tensor") -> Callable[[Callable[..., Any]], TransformableOp]:
    """Decorator: register ``fn`` as the CPU custom operator ``escn::name`` with schema ``(args) -> returns`` (no
    mutated arguments) and wrap it in a :class:`TransformableOp`, the form every compiled kernel takes."""
    from escn.native._runtime import OPS_NAMESPACE

    def register(fn: Callable[..., Any]) -> TransformableOp:
        op = torch.library.custom_op(
            f"{OPS_NAMESPACE}::{name}", fn, mutates_args=(), device_types="cpu", schema=f"({args}) -> {returns}"
        )
        return transformable(op)

    return register
