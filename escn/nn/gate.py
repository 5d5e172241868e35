"""Gate nonlinearity: exactly equivariant activation for features of any order.

Input ``[scalars | gates | gated]``; output ``[act_s(scalars) | act_g(gates)_k * gated_k]``: scalars go
through their activation, and every gated irrep (one per multiplicity) is multiplied by its own gate
scalar after the gate activation. Only scalars are acted on pointwise, so the map is exactly
O(3)-equivariant. Activations are rescaled to unit second moment under N(0, 1) inputs. For pseudo-scalar
inputs (``0o``) the activation must be odd (output ``0o``) or even (output ``0e``); otherwise the map
could not be equivariant under reflections and a ``ValueError`` is raised.

Unlike e3nn's ``Gate`` (which takes its input in sorted irreps order), the input layout here is the plain
concatenation ``irreps_scalars + irreps_gates + irreps_gated``; the output irreps are the same as e3nn's.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from escn.nn.checks import check_float_input
from escn.nn.radial import second_moment_scale
from escn.o3.irreps import Irrep, Irreps

Tensor = torch.Tensor
Act = Callable[[Tensor], Tensor]


def _activation_parity(act: Act) -> int:
    """+1 if ``act`` is even, -1 if odd, 0 if neither (checked numerically in float64)."""
    x = torch.linspace(0.1, 5.0, 64, dtype=torch.float64)
    a, b = act(x), act(-x)
    if torch.allclose(a, b, atol=1e-9, rtol=1e-9):
        return 1
    if torch.allclose(a, -b, atol=1e-9, rtol=1e-9):
        return -1
    return 0


def _scalar_output_irreps(irreps: Irreps, acts: Sequence[Act | None], name: str) -> Irreps:
    out = []
    for (mul, ir), act in zip(irreps, acts):
        if ir.l != 0:
            raise ValueError(f"{name} must contain only scalars (l = 0), got {irreps}")
        p = ir.p
        if act is not None and ir.p == -1:
            parity = _activation_parity(act)
            if parity == 0:
                raise ValueError(f"{name}: the activation of the pseudo-scalars {mul}x{ir} must be odd or even")
            p = -1 if parity == -1 else 1  # odd: keeps 0o; even: becomes 0e
        out.append((mul, Irrep(0, p)))
    return Irreps(out)


class Gate(nn.Module):
    """Gate activation.

    Args:
        irreps_scalars: scalars passed through ``act_scalars`` (one activation per entry).
        act_scalars: activations for ``irreps_scalars`` (``None`` = identity).
        irreps_gates: scalars used as gates; ``irreps_gates.num_irreps`` must equal ``irreps_gated.num_irreps``.
        act_gates: activations for ``irreps_gates``.
        irreps_gated: the irreps multiplied by the gates.

    ``forward(x)``: ``x`` (..., irreps_in.dim) with ``irreps_in = irreps_scalars + irreps_gates + irreps_gated``
    -> (..., irreps_out.dim).
    """

    _gate_index: torch.Tensor

    def __init__(
        self,
        irreps_scalars: Irreps | str,
        act_scalars: Sequence[Act | None],
        irreps_gates: Irreps | str,
        act_gates: Sequence[Act | None],
        irreps_gated: Irreps | str,
    ) -> None:
        super().__init__()
        self.irreps_scalars = Irreps(irreps_scalars)
        self.irreps_gates = Irreps(irreps_gates)
        self.irreps_gated = Irreps(irreps_gated)
        if len(act_scalars) != len(self.irreps_scalars):
            raise ValueError(
                f"act_scalars needs one activation per entry of {self.irreps_scalars}, got {len(act_scalars)}"
            )
        if len(act_gates) != len(self.irreps_gates):
            raise ValueError(f"act_gates needs one activation per entry of {self.irreps_gates}, got {len(act_gates)}")
        if self.irreps_gates.num_irreps != self.irreps_gated.num_irreps:
            raise ValueError(
                f"irreps_gates has {self.irreps_gates.num_irreps} scalars but irreps_gated has "
                f"{self.irreps_gated.num_irreps} irreps to gate; they must be equal"
            )
        scalars_out = _scalar_output_irreps(self.irreps_scalars, act_scalars, "irreps_scalars")
        gates_out = _scalar_output_irreps(self.irreps_gates, act_gates, "irreps_gates")
        self.act_scalars = list(act_scalars)
        self.act_gates = list(act_gates)
        self._scale_scalars = [1.0 if a is None else second_moment_scale(a) for a in act_scalars]
        self._scale_gates = [1.0 if a is None else second_moment_scale(a) for a in act_gates]
        # parity of each gated irrep after multiplication by its gate
        gate_parities = [ir.p for mul, ir in gates_out for _ in range(mul)]
        gated_out: list[tuple[int, Irrep]] = []
        k = 0
        for mul, ir in self.irreps_gated:
            # keep the entry whole where its gates share a parity, split it where they change
            for j in range(mul):
                out_ir = Irrep(ir.l, ir.p * gate_parities[k + j])
                if j > 0 and gated_out[-1][1] == out_ir:
                    gated_out[-1] = (gated_out[-1][0] + 1, out_ir)
                else:
                    gated_out.append((1, out_ir))
            k += mul
        self.irreps_in = self.irreps_scalars + self.irreps_gates + self.irreps_gated
        self.irreps_out = scalars_out + Irreps(gated_out)
        # which gate multiplies each component of the gated block
        index = []
        k = 0
        for mul, ir in self.irreps_gated:
            for _ in range(mul):
                index += [k] * ir.dim
                k += 1
        self.register_buffer("_gate_index", torch.tensor(index, dtype=torch.long), persistent=False)

    @staticmethod
    def _activate(x: Tensor, irreps: Irreps, acts: list, scales: list[float]) -> Tensor:
        parts = torch.split(x, [mul * ir.dim for mul, ir in irreps], dim=-1)
        return torch.cat([p if a is None else a(p) * s for p, a, s in zip(parts, acts, scales)], dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        check_float_input("Gate", "x", x, None)
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(
                f"Gate: x must have last dimension {self.irreps_in.dim} ({self.irreps_in}), got {tuple(x.shape)}"
            )
        s, g, v = torch.split(x, [self.irreps_scalars.dim, self.irreps_gates.dim, self.irreps_gated.dim], dim=-1)
        pieces = []
        if self.irreps_scalars.dim:
            pieces.append(self._activate(s, self.irreps_scalars, self.act_scalars, self._scale_scalars))
        if self.irreps_gated.dim:
            gates = self._activate(g, self.irreps_gates, self.act_gates, self._scale_gates)
            pieces.append(v * gates.index_select(-1, self._gate_index))
        return torch.cat(pieces, dim=-1) if pieces else x[..., :0]
