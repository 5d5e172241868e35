"""Every public module of escn.nn and escn.models is exact in the dtype it is moved to.

A module built while float32 is the default dtype and then moved with ``.double()`` must compute what the same
weights compute in a module built under float64 (<= 1e-12), and keep float64 equivariance (<= 1e-12): its
constant tables (CG, Wigner J, grids, signs, normalisations) must not stay float32-accurate.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pytest
import torch
from torch import nn

import escn.models
import escn.nn
from escn.bench.scaling import default_dtype
from escn.data import AtomsGraph, collate
from escn.models import ESCN, EdgeFrameBlock, ESCNBackbone, node_irreps
from escn.nn import BesselBasis, Gate, Linear, PolynomialCutoff, RadialMLP, S2Activation, S2Grid, SO2Conv, TFNConv
from escn.o3 import Irreps
from escn.o3.edge_frame import edge_frame
from escn.testing import CARTESIAN_POINTS, equivariance_error

pytestmark = pytest.mark.usefixtures("single_thread")

TOL = 1e-12


@dataclass
class Case:
    """build(): the module (seeded); inputs(): float64 inputs; call(module, *inputs) -> outputs;
    irreps_in / irreps_out: declarations for escn.testing (None: the module is not equivariant by itself)."""

    build: Callable[[], nn.Module]
    inputs: Callable[[], list[Any]]
    call: Callable[..., Any] = lambda m, *a: m(*a)
    irreps_in: Sequence[Any] | None = None
    irreps_out: Any = None


def _graph(num_nodes: int = 12, num_edges: int = 60, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(num_nodes, 3, generator=g, dtype=torch.float64)
    src = torch.randint(0, num_nodes, (num_edges,), generator=g)
    dst = torch.randint(0, num_nodes, (num_edges,), generator=g)
    keep = src != dst
    return pos, src[keep], dst[keep]


MIXED_L6_IN = "2x0e + 1x0o + 2x1o + 1x1e + 2x2e + 1x3o + 1x3e + 1x4e + 1x5o + 1x6e"
MIXED_L6_OUT = "1x0e + 2x1o + 1x1e + 1x2e + 1x2o + 2x3o + 1x4e + 1x5e + 1x6e"


def _conv_case(
    make: Callable[[], nn.Module], irreps_in: str, irreps_out: str, weight_numel: Callable[[nn.Module], int]
) -> Case:
    pos, src, dst = _graph()
    E = src.shape[0]

    def inputs() -> list[Any]:
        g = torch.Generator().manual_seed(3)
        m = make()
        x = torch.randn(pos.shape[0], Irreps(irreps_in).dim, generator=g, dtype=torch.float64)
        w = torch.randn(E, weight_numel(m), generator=g, dtype=torch.float64)
        return [x, pos, w]

    def call(m: nn.Module, x: torch.Tensor, p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return m(x, src, dst, p[dst] - p[src], w)

    return Case(make, inputs, call, [irreps_in, CARTESIAN_POINTS, None], irreps_out)


def _so2_per_edge() -> SO2Conv:
    torch.manual_seed(0)
    return SO2Conv(MIXED_L6_IN, MIXED_L6_OUT, mmax=4, executor="torch")


def _so2_shared() -> SO2Conv:
    torch.manual_seed(0)
    return SO2Conv(MIXED_L6_IN, MIXED_L6_OUT, shared_weights=True, avg_num_neighbors=5.0)


TFN_IN, TFN_OUT = "2x0e + 1x1o + 1x1e + 2x2e + 1x3o", "1x0e + 2x1o + 1x2e + 1x2o + 1x3e"


def _tfn() -> TFNConv:
    torch.manual_seed(0)
    return TFNConv(TFN_IN, TFN_OUT, lmax_filter=3, avg_num_neighbors=5.0)


def _so2_from_tfn() -> SO2Conv:
    return SO2Conv.from_tfn(_tfn())


def _molecule() -> list[Any]:
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(10, 3, generator=g, dtype=torch.float64) * 1.4
    types = torch.randint(0, 3, (10,), generator=g)
    return [pos, types]


def _escn(activation: str) -> Callable[[], ESCN]:
    def build() -> ESCN:
        torch.manual_seed(0)
        return ESCN(
            num_atom_types=3,
            lmax=6,
            mmax=2,
            channels=4,
            num_layers=2,
            cutoff=3.0,
            num_radial=6,
            radial_hidden=16,
            activation=activation,
        ).eval()

    return build


def _energy_forces(m: ESCN, pos: torch.Tensor, types: torch.Tensor):
    out = m(collate([AtomsGraph(pos=pos, atom_types=types)]).with_radius_graph(m.cutoff))
    return out["energy"], out["forces"]


def _backbone() -> ESCNBackbone:
    torch.manual_seed(0)
    return ESCNBackbone(
        num_atom_types=3,
        lmax=4,
        mmax=2,
        channels=3,
        num_layers=2,
        cutoff=3.0,
        num_radial=5,
        radial_basis="bessel",
        radial_hidden=8,
        inverse_distance_powers=0,
        inverse_distance_scale=0.5,
        type_embedding_dim=4,
        activation="gate",
        s2_resolution=None,
        avg_num_neighbors=4.0,
        pseudo=False,
        node_input_irreps=None,
    )


def _backbone_call(m: ESCNBackbone, pos: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
    batch = collate([AtomsGraph(pos=pos, atom_types=types)]).with_radius_graph(m.cutoff)
    return m(batch, batch.pos, None, batch.atom_types)


def _block() -> EdgeFrameBlock:
    torch.manual_seed(0)
    return EdgeFrameBlock(node_irreps(3, 4), mmax=2, edge_features=5, radial_hidden=8, avg_num_neighbors=4.0)


def _block_inputs() -> list[Any]:
    pos, _, _ = _graph()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(pos.shape[0], node_irreps(3, 4).dim, generator=g, dtype=torch.float64)
    return [x, pos]


def _block_call(m: EdgeFrameBlock, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    _, src, dst = _graph()
    vec = pos[dst] - pos[src]
    r = torch.linalg.vector_norm(vec, dim=1)
    feat = torch.stack([torch.cos(k * r) for k in range(1, 6)], dim=1)
    return m.from_grouped(m(m.to_grouped(x), src, dst, edge_frame(vec, 4, 2), feat, torch.exp(-r)))


def _seeded(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return factory()

    return build


def _features(dim: int, rows: int = 7) -> Callable[[], list[Any]]:
    return lambda: [torch.randn(rows, dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)]


S2_IRREPS = "3x0e + 3x1o + 3x2e + 3x3o + 3x4e"
GATE = ("2x0e + 1x0o", [torch.tanh, torch.tanh], "2x0e", [torch.sigmoid], "1x1o + 1x2e")

CASES: dict[str, Case] = {
    "SO2Conv per-edge weights, L = 6 mixed parity": _conv_case(
        _so2_per_edge, MIXED_L6_IN, MIXED_L6_OUT, lambda m: m.weight_numel
    ),
    "SO2Conv shared weights, L = 6 mixed parity": _conv_case(
        _so2_shared, MIXED_L6_IN, MIXED_L6_OUT, lambda m: m.weight_numel
    ),
    "SO2Conv.from_tfn, L = 3": _conv_case(_so2_from_tfn, TFN_IN, TFN_OUT, lambda m: m.weight_numel),
    "TFNConv, L = 3": _conv_case(_tfn, TFN_IN, TFN_OUT, lambda m: m.weight_numel),
    # polynomial activation of degree 2 on a grid exact for it: the S2 activation is then exactly equivariant
    "S2Activation (x^2, exact grid)": Case(
        _seeded(
            lambda: S2Activation("2x0e + 2x1o + 2x2e", act=lambda t: t * t, normalize_act=False, resolution=(8, 9))
        ),
        _features(18),
        irreps_in=["2x0e + 2x1o + 2x2e"],
        irreps_out="2x0e + 2x1o + 2x2e",
    ),
    "S2Activation (SiLU)": Case(_seeded(lambda: S2Activation(S2_IRREPS)), _features(Irreps(S2_IRREPS).dim)),
    "S2Grid": Case(
        _seeded(lambda: S2Grid(4, 2)),
        _features(3 * 1 + 3 * 3 + 3 * 5 * 3, rows=4),
        call=lambda m, x: m.activate(x.reshape(4, 3, -1), torch.nn.functional.silu),
    ),
    "Gate": Case(
        _seeded(lambda: Gate(*GATE)),
        _features(Irreps("2x0e + 1x0o + 2x0e + 1x1o + 1x2e").dim),
        irreps_in=["2x0e + 1x0o + 2x0e + 1x1o + 1x2e"],
        irreps_out="2x0e + 1x0o + 1x1o + 1x2e",
    ),
    "Linear": Case(
        _seeded(lambda: Linear("2x0e + 3x1o + 1x2e", "1x0e + 2x1o + 2x2e")),
        _features(Irreps("2x0e + 3x1o + 1x2e").dim),
        irreps_in=["2x0e + 3x1o + 1x2e"],
        irreps_out="1x0e + 2x1o + 2x2e",
    ),
    "BesselBasis": Case(
        _seeded(lambda: BesselBasis(4.0, 8, trainable=True)),
        lambda: [torch.linspace(0.1, 3.9, 11, dtype=torch.float64)],
    ),
    "PolynomialCutoff": Case(
        _seeded(lambda: PolynomialCutoff(4.0)), lambda: [torch.linspace(0.1, 3.9, 11, dtype=torch.float64)]
    ),
    "RadialMLP": Case(_seeded(lambda: RadialMLP([6, 16, 5])), _features(6)),
    "ESCNBackbone": Case(_backbone, _molecule, _backbone_call, [CARTESIAN_POINTS, None], node_irreps(3, 4)),
    "EdgeFrameBlock": Case(
        _block, _block_inputs, _block_call, [node_irreps(3, 4), CARTESIAN_POINTS], node_irreps(3, 4)
    ),
    "ESCN (gate): energy, forces": Case(
        _escn("gate"), _molecule, _energy_forces, [CARTESIAN_POINTS, None], ["0e", "1o"]
    ),
    "ESCN (s2): energy, forces": Case(_escn("s2"), _molecule, _energy_forces),
}

#: the public module classes each case exercises
COVERS: dict[type, list[str]] = {
    SO2Conv: [
        "SO2Conv per-edge weights, L = 6 mixed parity",
        "SO2Conv shared weights, L = 6 mixed parity",
        "SO2Conv.from_tfn, L = 3",
    ],
    TFNConv: ["TFNConv, L = 3"],
    S2Activation: ["S2Activation (x^2, exact grid)", "S2Activation (SiLU)"],
    S2Grid: ["S2Grid"],
    Gate: ["Gate"],
    Linear: ["Linear"],
    BesselBasis: ["BesselBasis"],
    PolynomialCutoff: ["PolynomialCutoff"],
    RadialMLP: ["RadialMLP"],
    EdgeFrameBlock: ["EdgeFrameBlock"],
    ESCNBackbone: ["ESCNBackbone"],
    ESCN: ["ESCN (gate): energy, forces", "ESCN (s2): energy, forces"],
}


def test_every_public_module_has_a_case():
    public = {
        obj
        for pkg in (escn.nn, escn.models)
        for name in pkg.__all__
        if inspect.isclass(obj := getattr(pkg, name)) and issubclass(obj, nn.Module)
    }
    assert public == set(COVERS), f"public modules without a dtype-move case: {public - set(COVERS)}"


def _outputs(case: Case, module: nn.Module) -> list[torch.Tensor]:
    out = case.call(module, *case.inputs())
    return list(out) if isinstance(out, tuple) else [out]


@pytest.mark.parametrize("name", list(CASES))
def test_float32_build_moved_to_float64_equals_float64_build(name):
    case = CASES[name]
    with default_dtype(torch.float32):
        moved = case.build()
    moved = moved.double()
    with default_dtype(torch.float64):
        reference = case.build()
    reference.load_state_dict(moved.state_dict())  # the same (float32-representable) weights
    for a, b in zip(moved.state_dict().values(), reference.state_dict().values()):
        assert a.dtype == b.dtype
    for buf_a, buf_b in zip(moved.buffers(), reference.buffers()):
        assert buf_a.dtype == buf_b.dtype and torch.equal(buf_a, buf_b)
    got, expected = _outputs(case, moved), _outputs(case, reference)
    for g, e in zip(got, expected):
        assert g.dtype == torch.float64
        assert (g - e).abs().max().item() <= TOL * max(1.0, e.abs().max().item())
    if case.irreps_in is not None:
        errors = equivariance_error(
            lambda *a: case.call(moved, *a),
            case.inputs(),
            case.irreps_in,
            case.irreps_out,
            trials=1,
            generator=torch.Generator().manual_seed(7),
        )
        assert max(errors.values()) <= TOL, errors


def test_float64_build_moved_to_float32_and_back_is_exact():
    with default_dtype(torch.float64):
        reference = _so2_per_edge()
        there_and_back = _so2_per_edge().float().double()
    there_and_back.load_state_dict(reference.state_dict())
    for a, b in zip(there_and_back.buffers(), reference.buffers()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_so2conv_from_tfn_inherits_dtype_and_device(dtype):
    with default_dtype(torch.float32 if dtype == torch.float64 else torch.float64):
        tfn = _tfn()
    tfn = tfn.to(dtype)
    so2 = SO2Conv.from_tfn(tfn)
    tensors = [t for t in list(so2.parameters()) + list(so2.buffers()) if t.is_floating_point()]
    assert tensors and all(t.dtype == dtype and t.device == torch.device("cpu") for t in tensors)
    case = CASES["TFNConv, L = 3"]
    x, pos, w = case.inputs()
    x, pos, w = x.to(dtype), pos.to(dtype), w.to(dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    assert (case.call(so2, x, pos, w) - case.call(tfn, x, pos, w)).abs().max().item() <= tol


def test_meta_device_move_keeps_shapes():
    with default_dtype(torch.float32):
        m = _so2_per_edge()
    shapes = {n: b.shape for n, b in m.named_buffers()}
    m = m.to("meta")
    assert all(b.device.type == "meta" and b.shape == shapes[n] for n, b in m.named_buffers())
