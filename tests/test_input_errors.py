"""Inputs of the wrong dtype or device get a TypeError/ValueError naming the argument, what it got and what is
supported: never a raw matmul, index or kernel error. Layers compute in float32 and float64 only."""

from __future__ import annotations

import pytest
import torch

from escn.data import AtomsGraph, collate
from escn.models import ESCN
from escn.nn import BesselBasis, Gate, Linear, PolynomialCutoff, RadialMLP, S2Activation, SO2Conv, TFNConv

UNSUPPORTED = [torch.int64, torch.float16, torch.bfloat16]
IRREPS_IN, IRREPS_OUT = "2x0e + 1x1o + 1x2e", "1x0e + 1x1o + 1x2e"


def _conv_inputs(layer, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(6, 3, generator=g, dtype=torch.float64)
    src, dst = torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([1, 2, 3, 4, 5, 0])
    x = torch.randn(6, layer.irreps_in.dim, generator=g, dtype=torch.float64)
    w = torch.randn(6, layer.weight_numel, generator=g, dtype=torch.float64)
    return {
        "x": x.to(dtype),
        "edge_src": src,
        "edge_dst": dst,
        "edge_vec": (pos[dst] - pos[src]).to(dtype),
        "weight": w.to(dtype),
    }


CONVS = {
    "SO2Conv": lambda: SO2Conv(IRREPS_IN, IRREPS_OUT),
    "SO2Conv(executor='torch')": lambda: SO2Conv(IRREPS_IN, IRREPS_OUT, executor="torch"),
    "SO2Conv.from_tfn": lambda: SO2Conv.from_tfn(TFNConv(IRREPS_IN, IRREPS_OUT, 2)),
    "TFNConv": lambda: TFNConv(IRREPS_IN, IRREPS_OUT, 2),
}


@pytest.mark.parametrize("make", CONVS.values(), ids=CONVS.keys())
@pytest.mark.parametrize("arg", ["x", "edge_vec", "weight"])
@pytest.mark.parametrize("module_dtype,input_dtype", [(torch.float64, torch.float32), (torch.float32, torch.float64)])
def test_conv_mixed_dtypes(make, arg, module_dtype, input_dtype):
    layer = make().to(module_dtype)
    args = _conv_inputs(layer, module_dtype)
    args[arg] = args[arg].to(input_dtype)
    with pytest.raises(TypeError, match=rf"{arg} has dtype {input_dtype} but the module is in {module_dtype}"):
        layer(**args)


@pytest.mark.parametrize("make", CONVS.values(), ids=CONVS.keys())
@pytest.mark.parametrize("dtype", UNSUPPORTED)
def test_conv_unsupported_dtypes(make, dtype):
    layer = make().double()
    args = _conv_inputs(layer)
    args["x"] = args["x"].to(dtype)
    with pytest.raises(TypeError, match=rf"x has dtype {dtype}; supported: torch.float32 and torch.float64"):
        layer(**args)
    with pytest.raises(TypeError, match=rf"edge_vec has dtype {dtype}; supported"):
        layer(**{**_conv_inputs(layer), "edge_vec": _conv_inputs(layer)["edge_vec"].to(dtype)})


@pytest.mark.parametrize("make", CONVS.values(), ids=CONVS.keys())
@pytest.mark.parametrize("arg", ["x", "edge_vec", "weight", "edge_src"])
def test_conv_inputs_on_another_device(make, arg):
    layer = make().double()
    args = _conv_inputs(layer)
    args[arg] = args[arg].to("meta")
    with pytest.raises(ValueError, match=rf"{arg} is on device meta but"):
        layer(**args)


def _x(dim, dtype):
    return torch.randn(3, dim, dtype=torch.float64).to(dtype)


SIMPLE = {
    "S2Activation": (lambda: S2Activation("2x0e + 2x1o + 2x2e"), 18),
    "Linear": (lambda: Linear("2x0e + 1x1o", "1x0e + 2x1o"), 5),
    "RadialMLP": (lambda: RadialMLP([4, 8, 2]), 4),
    "BesselBasis": (lambda: BesselBasis(3.0, 5, trainable=True), None),
}


@pytest.mark.parametrize("name", SIMPLE)
def test_modules_refuse_mixed_and_unsupported_dtypes(name):
    make, dim = SIMPLE[name]
    module = make().double()
    arg = "r" if dim is None else "x"

    def inp(dtype):
        return torch.rand(5, dtype=torch.float64).to(dtype) if dim is None else _x(dim, dtype)

    assert module(inp(torch.float64)).dtype == torch.float64
    with pytest.raises(TypeError, match=rf"{name}: {arg} has dtype torch.float32 but the module is in torch.float64"):
        module(inp(torch.float32))
    for dtype in UNSUPPORTED:
        with pytest.raises(
            TypeError, match=rf"{name}: {arg} has dtype {dtype}; supported: torch.float32 and torch.float64"
        ):
            module(inp(dtype))
    with pytest.raises(ValueError, match=rf"{name}: {arg} is on device meta but the module is on cpu"):
        module(inp(torch.float64).to("meta"))


@pytest.mark.parametrize("dtype", UNSUPPORTED)
def test_stateless_modules_refuse_unsupported_dtypes(dtype):
    gate = Gate("1x0e", [torch.tanh], "1x0e", [torch.sigmoid], "1x1o")
    with pytest.raises(TypeError, match=rf"Gate: x has dtype {dtype}; supported"):
        gate(_x(5, dtype))
    with pytest.raises(TypeError, match=rf"PolynomialCutoff: r has dtype {dtype}; supported"):
        PolynomialCutoff(2.0)(torch.rand(4, dtype=torch.float64).to(dtype))


def _molecule(dtype):
    g = torch.Generator().manual_seed(0)
    pos = (torch.randn(5, 3, generator=g, dtype=torch.float64) * 1.2).to(dtype)
    return collate([AtomsGraph(pos=pos, atom_types=torch.tensor([0, 1, 0, 1, 0]))]).with_radius_graph(3.0)


@pytest.mark.parametrize("module_dtype,input_dtype", [(torch.float64, torch.float32), (torch.float32, torch.float64)])
def test_model_mixed_dtypes(module_dtype, input_dtype):
    model = ESCN(num_atom_types=2, lmax=2, channels=4, num_layers=1, cutoff=3.0).to(module_dtype)
    assert model(_molecule(module_dtype))["energy"].dtype == module_dtype
    with pytest.raises(
        TypeError, match=rf"ESCN: batch.pos has dtype {input_dtype} but the module is in {module_dtype}"
    ):
        model(_molecule(input_dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_model_unsupported_dtypes(dtype):
    model = ESCN(num_atom_types=2, lmax=2, channels=4, num_layers=1, cutoff=3.0)
    with pytest.raises(
        TypeError, match=rf"ESCN: batch.pos has dtype {dtype}; supported: torch.float32 and torch.float64"
    ):
        model(_molecule(dtype))
