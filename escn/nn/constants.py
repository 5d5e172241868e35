"""Constant tables that stay exact in whatever floating dtype a module is moved to.

A table computed once in float64 (Clebsch-Gordan coefficients, Wigner J matrices, quadrature grids, signs and
normalisations) and registered as an ordinary buffer in float32 keeps only float32 accuracy after
``module.double()``: the cast widens the already rounded numbers. :class:`ConstantModule` keeps the float64
master of each such table and, after every ``.to()`` / ``.double()`` / ``.float()`` / ``.half()`` / device
move, replaces the buffer by the master rounded once to the buffer's new dtype and placed on its new device.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Tensor = torch.Tensor

__all__ = ["ConstantModule"]


class ConstantModule(nn.Module):
    """``nn.Module`` whose floating constant tables follow ``.to(dtype/device)`` exactly.

    :meth:`register_constant` registers a non-persistent buffer (not in the ``state_dict``: it is rebuilt by
    the constructor) in the default dtype, and keeps its float64 master on the CPU. After any move of the
    module the buffer equals ``master.to(dtype, device)`` for the dtype and device the move gave it, so a
    module built in float32 and moved to float64 computes exactly what the same module built in float64 does.
    """

    def __init__(self) -> None:
        super().__init__()
        self._constant_masters: dict[str, Tensor] = {}

    def register_constant(self, name: str, value: Tensor, dtype: torch.dtype | None = None) -> None:
        """Register ``value`` as the constant buffer ``name``.

        Args:
            name: buffer name (an attribute of the module).
            value: the table, any shape; floating tensors are taken as the exact values and kept in float64
                (compute them in float64).
            dtype: dtype of the buffer now; default: ``torch.get_default_dtype()``.
        """
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise TypeError(f"constant {name!r} must be a floating-point tensor, got {type(value).__name__}")
        master = value.detach().to(device="cpu", dtype=torch.float64).contiguous()
        self._constant_masters[name] = master
        self.register_buffer(name, master.to(dtype or torch.get_default_dtype()), persistent=False)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> "ConstantModule":  # type: ignore[override]
        super()._apply(fn, recurse)
        for name, master in self._constant_masters.items():
            moved = self._buffers.get(name)
            if moved is not None:
                self._buffers[name] = master.to(device=moved.device, dtype=moved.dtype)
        return self
