"""TFNConv: the full Clebsch-Gordan Tensor Field Network convolution (the reference layer).

For every edge ``e = (src -> dst)`` the message is the fully connected tensor product of ``x[src]``
with the spherical harmonics of the edge (component normalisation, unit vector), with per-edge
weights; messages are summed into ``dst``. Paths, their order, the weight layout and the
normalisation are those of e3nn's
``FullyConnectedTensorProduct(irreps_in, Irreps.spherical_harmonics(lmax_filter), irreps_out,
shared_weights=False)`` with default options, so given the same weights the numbers are e3nn's.

Cost per edge: ``sum over paths of mul_in * (2l1+1)(2lf+1)(2l3+1) + mul_in * mul_out * (2l3+1)``,
i.e. O(L^6) for L = lmax of everything — which is what :class:`escn.nn.SO2Conv` avoids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from escn.nn.checks import check_conv_inputs, module_tensor
from escn.nn.constants import ConstantModule
from escn.o3.irreps import Irreps
from escn.o3.spherical_harmonics import spherical_harmonics
from escn.o3.wigner import wigner_3j

Tensor = torch.Tensor


@dataclass(frozen=True)
class TFNPath:
    """One path ``irreps_in[i_in] (x) Y^{l_f} -> irreps_out[i_out]`` and where its weights live.

    ``weight[:, offset : offset + mul_in * mul_out]`` viewed as ``(mul_in, mul_out)``.
    ``norm`` is e3nn's path normalisation ``sqrt((2 l_out + 1) / fan_in(i_out))``.
    """

    i_in: int
    l_filter: int
    i_out: int
    mul_in: int
    mul_out: int
    l_in: int
    l_out: int
    offset: int
    norm: float


def tfn_paths(irreps_in: Irreps, lmax_filter: int, irreps_out: Irreps) -> list[TFNPath]:
    """Paths of e3nn's fully connected tensor product with ``Irreps.spherical_harmonics(lmax_filter)``,
    in e3nn's instruction order (input irrep, then filter order, then output irrep)."""
    sh = Irreps.spherical_harmonics(lmax_filter)
    raw = []
    for i_in, (mul_in, ir_in) in enumerate(irreps_in):
        for _, ir_f in sh:
            for i_out, (mul_out, ir_out) in enumerate(irreps_out):
                if ir_out in list(ir_in * ir_f):
                    raw.append((i_in, ir_f.l, i_out, mul_in, mul_out, ir_in.l, ir_out.l))
    fan_in = [0] * len(irreps_out)
    for r in raw:
        fan_in[r[2]] += r[3]  # "uvw" with mul_filter = 1: mul_in * 1 elements
    paths = []
    offset = 0
    for i_in, lf, i_out, mul_in, mul_out, l_in, l_out in raw:
        norm = math.sqrt((2 * l_out + 1) / fan_in[i_out]) if fan_in[i_out] > 0 else 0.0
        paths.append(TFNPath(i_in, lf, i_out, mul_in, mul_out, l_in, l_out, offset, norm))
        offset += mul_in * mul_out
    return paths


class TFNConv(ConstantModule):
    """Tensor Field Network convolution with full Clebsch-Gordan products (reference).

    Args:
        irreps_in: irreps of the node features ``x``.
        irreps_out: irreps of the output node features.
        lmax_filter: highest order of the edge spherical harmonics ``Y^0..Y^lmax_filter``.
        avg_num_neighbors: if given, the sum over neighbours is divided by ``sqrt(avg_num_neighbors)``
            (as in the e3nn convolution guide); default: plain sum.

    ``forward(x, edge_src, edge_dst, edge_vec, weight)`` with ``x`` (N, irreps_in.dim), ``edge_src``,
    ``edge_dst`` (E,) int64, ``edge_vec`` (E, 3) (``pos[dst] - pos[src]``), ``weight``
    (E, weight_numel) returns (N, irreps_out.dim). Inputs must have the module's dtype (float32 or float64;
    float16, bfloat16 and integer inputs are refused) and device.
    """

    def __init__(
        self,
        irreps_in: Irreps | str,
        irreps_out: Irreps | str,
        lmax_filter: int,
        avg_num_neighbors: float | None = None,
    ) -> None:
        super().__init__()
        if isinstance(lmax_filter, bool) or not isinstance(lmax_filter, int) or lmax_filter < 0:
            raise ValueError(f"lmax_filter must be an int >= 0, got {lmax_filter!r}")
        if avg_num_neighbors is not None and not avg_num_neighbors > 0:
            raise ValueError(f"avg_num_neighbors must be > 0, got {avg_num_neighbors!r}")
        self.irreps_in = Irreps(irreps_in)
        self.irreps_out = Irreps(irreps_out)
        self.lmax_filter = lmax_filter
        self.avg_num_neighbors = avg_num_neighbors
        self.paths = tfn_paths(self.irreps_in, lmax_filter, self.irreps_out)
        self.weight_numel = sum(p.mul_in * p.mul_out for p in self.paths)
        # One scaled 3j tensor per path: norm * sqrt(2lf+1) (component-normalised Y) is folded in later.
        for k, p in enumerate(self.paths):
            self.register_constant(f"_cg{k}", wigner_3j(p.l_in, p.l_filter, p.l_out, dtype=torch.float64).mul(p.norm))

    def extra_repr(self) -> str:
        return f"{self.irreps_in} x Y^<={self.lmax_filter} -> {self.irreps_out}, weight_numel={self.weight_numel}"

    def message(self, x_src: Tensor, edge_vec: Tensor, weight: Tensor) -> Tensor:
        """Per-edge messages: ``(E, irreps_in.dim), (E, 3), (E, weight_numel) -> (E, irreps_out.dim)``."""
        E = x_src.shape[0]
        sh = spherical_harmonics(list(range(self.lmax_filter + 1)), edge_vec, normalize=True, normalization="component")
        sh_blocks = [sh[:, l * l : (l + 1) * (l + 1)] for l in range(self.lmax_filter + 1)]
        in_slices = self.irreps_in.slices()
        outs: list[Tensor | None] = [None] * len(self.irreps_out)
        for k, p in enumerate(self.paths):
            cg = getattr(self, f"_cg{k}")
            x = x_src[:, in_slices[p.i_in]].reshape(E, p.mul_in, 2 * p.l_in + 1)
            w = weight[:, p.offset : p.offset + p.mul_in * p.mul_out].reshape(E, p.mul_in, p.mul_out)
            xy = torch.einsum("eui,ijk,ej->euk", x, cg, sh_blocks[p.l_filter])
            term = torch.einsum("euw,euk->ewk", w, xy)
            prev = outs[p.i_out]
            outs[p.i_out] = term if prev is None else prev + term
        pieces = []
        for i_out, (mul, ir) in enumerate(self.irreps_out):
            o = outs[i_out]
            pieces.append(x_src.new_zeros(E, mul * ir.dim) if o is None else o.reshape(E, mul * ir.dim))
        return torch.cat(pieces, dim=1) if pieces else x_src.new_zeros(E, 0)

    def forward(self, x: Tensor, edge_src: Tensor, edge_dst: Tensor, edge_vec: Tensor, weight: Tensor) -> Tensor:
        check_conv_inputs(
            "TFNConv",
            x,
            self.irreps_in.dim,
            edge_src,
            edge_dst,
            edge_vec,
            weight,
            self.weight_numel,
            x.shape[0],
            module_tensor(self),
        )
        messages = self.message(x[edge_src], edge_vec, weight)
        out = x.new_zeros(x.shape[0], self.irreps_out.dim).index_add_(0, edge_dst, messages)
        if self.avg_num_neighbors is not None:
            out = out / math.sqrt(self.avg_num_neighbors)
        return out
