"""Every public module of escn.nn, escn.models and the task models survives pickling, ``torch.save`` /
``torch.load(weights_only=False)``, ``copy.deepcopy`` and ``.to("meta")``; the round-tripped module computes
exactly what the original does (float64, bit for bit). The convolutions and the model also run on meta and
FakeTensor inputs (shape propagation, as ``torch.export`` and memory planners do), giving the real output shapes.

A public module class without a case here fails :func:`test_every_public_module_class_has_a_case`.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import io
import pickle
import pkgutil
import subprocess
import sys
from typing import Any, Callable

import pytest
import torch
from test_dtype_move import CASES as MOVE_CASES
from test_dtype_move import COVERS as MOVE_COVERS
from test_dtype_move import Case, _features, _graph, _molecule, _seeded
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

import escn.models
import escn.nn
from escn.bench.scaling import default_dtype
from escn.data import AtomsGraph, collate
from escn.datasets.nbody_model import NBodyESCN
from escn.datasets.tetris_model import TetrisESCN
from escn.models.export import DeployedModel
from escn.models.heads import EnergyHead, GraphHead
from escn.nn import S2Activation
from escn.nn.constants import ConstantModule
from escn.nn.edge_rotation import EdgeRotation
from escn.o3.edge_frame import edge_frame

pytestmark = pytest.mark.usefixtures("single_thread")


def _square(t: torch.Tensor) -> torch.Tensor:  # a module-level activation: a lambda does not pickle
    return t * t


def _constant_module() -> ConstantModule:
    m = ConstantModule()
    m.register_constant("table", torch.linspace(0.0, 1.0, 7, dtype=torch.float64) / 3)
    return m


def _rotation_case() -> Case:
    def inputs() -> list[Any]:
        g = torch.Generator().manual_seed(4)
        vec = torch.randn(9, 3, generator=g, dtype=torch.float64)
        x = torch.randn(9, EdgeRotation([(0, 2), (1, 2), (2, 1)], 1).full_dim, generator=g, dtype=torch.float64)
        return [x, vec]

    def call(m: EdgeRotation, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        return m.to_frame(x, edge_frame(vec, 2, 1))

    return Case(_seeded(lambda: EdgeRotation([(0, 2), (1, 2), (2, 1)], 1)), inputs, call)


def _batch(types_max: int = 3) -> Any:
    pos, types = _molecule()
    return collate([AtomsGraph(pos=pos, atom_types=types % types_max)]).with_radius_graph(3.0)


def _graph_head_call(m: GraphHead, x: torch.Tensor) -> torch.Tensor:
    return m(_batch(), x)


_SMALL = dict(lmax=3, mmax=2, channels=4, num_layers=1, cutoff=3.0, num_radial=5, radial_hidden=8)


def _model_outputs(m: nn.Module) -> tuple[torch.Tensor, ...]:
    out = m(_batch(m.num_atom_types))
    return tuple(out[k] for k in sorted(out))


CASES: dict[str, Case] = {
    **{k: v for k, v in MOVE_CASES.items() if k != "S2Activation (x^2, exact grid)"},
    "S2Activation (x^2, exact grid)": Case(
        _seeded(lambda: S2Activation("2x0e + 2x1o + 2x2e", act=_square, normalize_act=False, resolution=(8, 9))),
        _features(18),
    ),
    "ConstantModule": Case(_constant_module, lambda: [], lambda m: m.table),
    "EdgeRotation": _rotation_case(),
    "EnergyHead": Case(
        _seeded(lambda: EnergyHead(4, 8, 3, scale=2.0, shift=-1.0)), lambda: [*_features(6, rows=10)(), _molecule()[1]]
    ),
    "GraphHead": Case(
        _seeded(lambda: GraphHead("2x0e + 1x1o", "1x0e + 1x1o")), _features(5, rows=10), _graph_head_call
    ),
    "NBodyESCN": Case(
        _seeded(lambda: NBodyESCN(type_permutations=[[1, 0]], num_atom_types=2, **_SMALL).eval()),
        lambda: [],
        _model_outputs,
    ),
    "TetrisESCN": Case(
        _seeded(
            lambda: TetrisESCN(num_classes=4, mirror_pairs=[[0, 1]], pseudo=True, num_atom_types=3, **_SMALL).eval()
        ),
        lambda: [],
        _model_outputs,
    ),
}

COVERS: dict[type, list[str]] = {
    **MOVE_COVERS,
    ConstantModule: ["ConstantModule"],
    EdgeRotation: ["EdgeRotation"],
    EnergyHead: ["EnergyHead"],
    GraphHead: ["GraphHead"],
    NBodyESCN: ["NBodyESCN"],
    TetrisESCN: ["TetrisESCN"],
}


def _public_module_classes() -> set[type]:
    """nn.Module subclasses defined in escn.nn.*, escn.models.* and the task-model modules under a public name
    (in the module's ``__all__`` if it has one)."""
    modules = ["escn.datasets.nbody_model", "escn.datasets.tetris_model"]
    for pkg in (escn.nn, escn.models):
        modules.append(pkg.__name__)
        modules += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    found = set()
    for name in modules:
        mod = importlib.import_module(name)
        names = getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]
        for n in names:
            obj = getattr(mod, n)
            if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__.startswith("escn."):
                found.add(obj)
    return found


#: public module classes whose serialization is tested elsewhere, and why
ELSEWHERE: dict[type, str] = {
    DeployedModel: "a compiled AOTInductor package (dtype fixed at deploy time, no meta form); it pickles and "
    "deep-copies by path, tested in tests/test_export.py where a package is built",
}


def test_every_public_module_class_has_a_case():
    public = _public_module_classes() - set(ELSEWHERE)
    assert {NBodyESCN, TetrisESCN, EdgeRotation, EnergyHead} <= public
    assert public == set(COVERS), f"public module classes without a serialization case: {public - set(COVERS)}"
    assert all(name in CASES for names in COVERS.values() for name in names)


def _outputs(case: Case, module: nn.Module) -> list[torch.Tensor]:
    out = case.call(module, *case.inputs())
    return list(out) if isinstance(out, tuple) else [out]


def _torch_save_load(m: nn.Module) -> nn.Module:
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


ROUND_TRIPS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "torch.save": _torch_save_load,
    "deepcopy": copy.deepcopy,
}


@pytest.mark.parametrize("how", list(ROUND_TRIPS))
@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_computes_the_same(name, how):
    case = CASES[name]
    with default_dtype(torch.float64):
        module = case.build()
    copied = ROUND_TRIPS[how](module)
    assert type(copied) is type(module) and copied is not module
    for (ka, a), (kb, b) in zip(module.state_dict().items(), copied.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    expected, got = _outputs(case, module), _outputs(case, copied)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == torch.float64 and torch.equal(g, e)
    # the copy is independent: moving it leaves the original's dtype alone
    copied.float()
    assert all(t.dtype == torch.float64 for t in module.state_dict().values() if t.is_floating_point())


@pytest.mark.parametrize("name", list(CASES))
def test_move_to_meta_keeps_every_shape(name):
    with default_dtype(torch.float64):
        module = CASES[name].build()
    shapes = {k: (v.shape, v.dtype) for k, v in list(module.named_parameters()) + list(module.named_buffers())}
    meta = copy.deepcopy(module).to("meta")
    moved = dict(list(meta.named_parameters()) + list(meta.named_buffers()))
    assert moved.keys() == shapes.keys()
    assert all(v.device.type == "meta" and (v.shape, v.dtype) == shapes[k] for k, v in moved.items())


# ---------------------------------------------------------------- shape propagation: meta and FakeTensor inputs
CONVS = [
    "SO2Conv per-edge weights, L = 6 mixed parity",
    "SO2Conv shared weights, L = 6 mixed parity",
    "SO2Conv.from_tfn, L = 3",
    "TFNConv, L = 3",
]
MODELS = ["ESCN (gate): energy, forces", "ESCN (s2): energy, forces"]


def _conv_args(name: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(x, edge_src, edge_dst, edge_vec, weight) of a convolution case and its real output."""
    case = CASES[name]
    with default_dtype(torch.float64):
        module = case.build()
    x, pos, w = case.inputs()
    _, src, dst = _graph()
    return [x, src, dst, pos[dst] - pos[src], w], module(x, src, dst, pos[dst] - pos[src], w)


def _model_batch(name: str):
    with default_dtype(torch.float64):
        module = CASES[name].build()
    pos, types = _molecule()
    batch = collate([AtomsGraph(pos=pos, atom_types=types)]).with_radius_graph(module.cutoff)
    return module, batch, module(batch)


def _batch_tensors(batch, convert: Callable[[torch.Tensor], torch.Tensor]):
    return dataclasses.replace(
        batch,
        **{
            f.name: convert(getattr(batch, f.name))
            for f in dataclasses.fields(batch)
            if isinstance(getattr(batch, f.name), torch.Tensor)
        },
    )


@pytest.mark.parametrize("name", CONVS)
def test_convolution_on_meta_gives_the_output_shape(name):
    args, real = _conv_args(name)
    with default_dtype(torch.float64):
        module = CASES[name].build().to("meta")
    out = module(*[a.to("meta") for a in args])
    assert out.device.type == "meta" and out.shape == real.shape and out.dtype == real.dtype


@pytest.mark.parametrize("name", CONVS)
def test_convolution_under_fake_tensor_mode_gives_the_output_shape(name):
    args, real = _conv_args(name)
    with default_dtype(torch.float64):
        module = CASES[name].build()
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        out = module(*[mode.from_tensor(a) for a in args])
    assert out.shape == real.shape and out.dtype == real.dtype
    # the constant tables built while tracing are real tensors: the module still computes on real inputs
    again = module(*args)
    assert torch.equal(again, real)


@pytest.mark.parametrize("name", MODELS)
def test_model_on_meta_gives_the_output_shapes(name):
    module, batch, real = _model_batch(name)
    out = copy.deepcopy(module).to("meta")(_batch_tensors(batch, lambda t: t.to("meta")))
    assert out.keys() == real.keys()
    assert all(
        out[k].device.type == "meta" and out[k].shape == real[k].shape and out[k].dtype == real[k].dtype for k in out
    )


@pytest.mark.parametrize("name", MODELS)
def test_model_under_fake_tensor_mode_gives_the_output_shapes(name):
    module, batch, real = _model_batch(name)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        out = module(_batch_tensors(batch, mode.from_tensor))
    assert out.keys() == real.keys()
    assert all(out[k].shape == real[k].shape and out[k].dtype == real[k].dtype for k in out)
    again = module(batch)
    assert all(torch.equal(again[k], real[k]) for k in real)


_FAKE_FIRST = """
import json, torch
from torch._subclasses.fake_tensor import FakeTensorMode
from escn.o3 import spherical_harmonics
from escn.o3.wigner import J_matrix
x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
with FakeTensorMode(allow_non_fake_inputs=True) as mode:  # the cached tables are real constants
    fake = spherical_harmonics([1, 2, 3, 6], mode.from_tensor(x), normalize=True)
    J = J_matrix(3, torch.float64)
assert fake.shape == (5, 3 + 5 + 7 + 13), fake.shape
print(json.dumps([spherical_harmonics([1, 2, 3, 6], x, normalize=True).tolist(), J_matrix(3, torch.float64).tolist()]))
"""


def test_tables_first_built_under_fake_tensor_mode_are_real():
    """In a fresh process the first spherical-harmonics and J-matrix calls are made with FakeTensors: the cached
    tables they build must be real tensors, with which later real calls compute what this process computes."""
    import json

    from escn.o3 import spherical_harmonics
    from escn.o3.wigner import J_matrix

    proc = subprocess.run([sys.executable, "-c", _FAKE_FIRST], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sh, J = (torch.tensor(v, dtype=torch.float64) for v in json.loads(proc.stdout))
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert (sh - spherical_harmonics([1, 2, 3, 6], x, normalize=True)).abs().max() <= 1e-12
    assert (J - J_matrix(3, torch.float64)).abs().max() <= 1e-12
