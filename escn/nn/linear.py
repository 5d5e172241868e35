"""Equivariant linear map between irreps: channel mixing within each irrep type (l, p)."""

from __future__ import annotations

import math

import torch
from torch import nn

from escn.nn.checks import check_float_input
from escn.o3.irreps import Irreps

Tensor = torch.Tensor

__all__ = ["Linear"]


class Linear(nn.Module):
    """``y[out entry j, channel v] = sum over input entries i with the same irrep, channels u of
    W_ij[u, v] x[i, u] / sqrt(fan_in)`` — the most general equivariant linear map (Schur's lemma).

    ``fan_in`` is the total input multiplicity of that irrep, so unit-variance inputs give unit-variance
    outputs. Output entries whose irrep is absent from the input are zero. The weights are one flat
    parameter ``weight`` (e3nn's ``o3.Linear`` layout without biases: paths in (output entry, input entry)
    order, each ``(mul_in, mul_out)`` row-major).

    Args:
        irreps_in, irreps_out: irreps (strings or ``Irreps``).

    ``forward(x)``: (..., irreps_in.dim) -> (..., irreps_out.dim).
    """

    def __init__(self, irreps_in: Irreps | str, irreps_out: Irreps | str) -> None:
        super().__init__()
        self.irreps_in = Irreps(irreps_in)
        self.irreps_out = Irreps(irreps_out)
        self.paths: list[tuple[int, int, int, int, float]] = []  # (i_in, i_out, offset, numel, 1/sqrt(fan_in))
        offset = 0
        for j, (mul_out, ir_out) in enumerate(self.irreps_out):
            ins = [i for i, (_, ir) in enumerate(self.irreps_in) if ir == ir_out]
            fan_in = sum(self.irreps_in[i].mul for i in ins)
            for i in ins:
                n = self.irreps_in[i].mul * mul_out
                self.paths.append((i, j, offset, n, 1.0 / math.sqrt(fan_in)))
                offset += n
        self.weight_numel = offset
        self.weight = nn.Parameter(torch.randn(offset, dtype=torch.get_default_dtype()))

    def forward(self, x: Tensor) -> Tensor:
        check_float_input("Linear", "x", x, self.weight)
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(
                f"Linear: x must have last dimension {self.irreps_in.dim} ({self.irreps_in}), got {tuple(x.shape)}"
            )
        lead = x.shape[:-1]
        xs = torch.split(x, [mul * ir.dim for mul, ir in self.irreps_in], dim=-1)
        outs: list[Tensor | None] = [None] * len(self.irreps_out)
        for i, j, off, n, scale in self.paths:
            mul_in, ir = self.irreps_in[i]
            mul_out = self.irreps_out[j].mul
            w = self.weight[off : off + n].reshape(mul_in, mul_out) * scale
            y = torch.einsum("...ud,uv->...vd", xs[i].reshape(*lead, mul_in, ir.dim), w)
            prev = outs[j]
            outs[j] = y if prev is None else prev + y
        pieces = [
            (o.reshape(*lead, mul * ir.dim) if o is not None else x.new_zeros(*lead, mul * ir.dim))
            for o, (mul, ir) in zip(outs, self.irreps_out)
        ]
        return torch.cat(pieces, dim=-1) if pieces else x.new_zeros(*lead, 0)

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out}, weight_numel={self.weight_numel}"
