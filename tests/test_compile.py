"""torch.compile(fullgraph=True) of the layers, the backbone, the energy model with forces and stress, and a force
training step (create_graph=True), on both executors: no graph break and the eager numbers (float64, 1e-10), checked
with escn.testing.assert_compiles. Most tests use the "eager" / "aot_eager" backends (the capture and AOTAutograd;
compile times of seconds), one layer goes through Inductor."""

from __future__ import annotations

import pytest
import torch

from escn import native
from escn.data import AtomsGraph, collate
from escn.models.escn import ESCN
from escn.nn import SO2Conv, TFNConv
from escn.o3 import Irreps
from escn.testing import assert_compiles

pytestmark = pytest.mark.usefixtures("float64_default", "single_thread")

EXECUTORS = ["native", "torch"]


def _executor(executor: str) -> str:
    if executor == "native" and not native.available():
        pytest.skip(f"compiled kernels unavailable: {native.unavailable_reason()}")
    return executor


def _graph(n: int = 8, e: int = 30, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(n, 3, generator=g)
    src = torch.randint(0, n, (e,), generator=g)
    dst = (src + torch.randint(1, n, (e,), generator=g)) % n
    return pos, src, dst


def tiny_model(executor: str = "native", activation: str = "gate", **kw) -> ESCN:
    torch.manual_seed(0)
    args = dict(
        num_atom_types=3,
        lmax=2,
        mmax=1,
        channels=4,
        num_layers=2,
        cutoff=3.0,
        num_radial=4,
        radial_hidden=8,
        activation=activation,
        executor=executor,
    )
    args.update(kw)
    return ESCN(**args)


def tiny_batch(n: int = 8, seed: int = 0, periodic: bool = True):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 3, generator=g) * 4.0
    types = torch.randint(0, 3, (n,), generator=g)
    cell = torch.tensor([[4.0, 0.0, 0.0], [0.3, 4.2, 0.0], [0.0, 0.2, 3.9]]) if periodic else None
    return collate([AtomsGraph(pos=pos, atom_types=types, cell=cell)]).with_radius_graph(3.0)


# ------------------------------------------------------------------------------------------ the helper
def test_assert_compiles_names_the_graph_break():
    def branchy(x):
        if x.sum() > 0:  # a branch on a value: Dynamo must break the graph here
            return x * 2
        return x

    with pytest.raises(AssertionError, match=r"graph break in .*branchy.*fullgraph=True"):
        assert_compiles(branchy, torch.ones(3), backend="eager")


def test_assert_compiles_reports_outputs_that_differ():
    def differs(x):
        return {"y": x + (1.0 if torch.compiler.is_compiling() else 0.0)}

    with pytest.raises(AssertionError, match=r"differ by more than 1e-10: \{\"\['y'\]\": 1.0\}"):
        assert_compiles(differs, torch.ones(3), backend="eager")
    assert assert_compiles(lambda x: (x.sin(), 2), torch.ones(3), backend="eager") == {"[0]": 0.0}


# ------------------------------------------------------------------------------------------ layers
@pytest.mark.parametrize("executor", EXECUTORS)
def test_so2conv_compiles_forward_and_backward(executor):
    layer = SO2Conv(
        "4x0e + 2x1o + 2x2e", "3x0e + 2x1o + 1x2e", mmax=1, shared_weights=True, executor=_executor(executor)
    )
    pos, src, dst = _graph()
    x = Irreps("4x0e + 2x1o + 2x2e").randn(8, -1).requires_grad_(True)
    radial = torch.randn(len(src), layer.weight_numel)

    def f(x, pos):
        vec = pos[dst] - pos[src]
        out = layer(x, src, dst, vec, radial)
        return out.detach(), torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])

    errors = assert_compiles(f, x, pos, backend="aot_eager")
    assert len(errors) == 1 + 1 + len(list(layer.parameters()))


def test_so2conv_from_tfn_and_tfn_compile_with_inductor():
    tfn = TFNConv("3x0e + 2x1o", "2x0e + 2x1o + 1x2e", lmax_filter=2)
    so2 = SO2Conv.from_tfn(tfn)
    pos, src, dst = _graph()
    x = Irreps("3x0e + 2x1o").randn(8, -1)
    w = torch.randn(len(src), tfn.weight_numel)

    def f(x, pos, w):
        vec = pos[dst] - pos[src]
        return tfn(x, src, dst, vec, w), so2(x, src, dst, vec, w)

    errors = assert_compiles(f, x, pos, w, backend="inductor")
    assert set(errors) == {"[0]", "[1]"}


# ------------------------------------------------------------------------------------------ models
def test_backbone_compiles():
    model = tiny_model("native" if native.available() else "torch").eval()
    batch = tiny_batch()
    types = batch.atom_types
    assert_compiles(lambda b: model.backbone(b, b.pos, b.cell, types), batch, backend="aot_eager")


@pytest.mark.parametrize("executor,activation", [("native", "gate"), ("torch", "gate"), ("native", "s2")])
def test_energy_forces_stress_compile(executor, activation):
    """Eval mode, as in MD: energy, forces and stress from one compiled graph (autograd.grad traced)."""
    model = tiny_model(_executor(executor), activation).eval()
    errors = assert_compiles(
        lambda b: model(b, compute_forces=True, compute_stress=True), tiny_batch(), backend="eager"
    )
    assert set(errors) == {"['energy']", "['forces']", "['stress']"}


def test_energy_forces_compile_with_aot_autograd():
    model = tiny_model("native" if native.available() else "torch").eval()
    assert_compiles(lambda b: model(b, compute_forces=True, compute_stress=True), tiny_batch(), backend="aot_eager")


@pytest.mark.parametrize("executor", EXECUTORS)
def test_force_training_step_compiles(executor):
    """One step of force training: forces with create_graph=True, the force loss backward to the parameters."""
    model = tiny_model(_executor(executor)).train()
    batch = tiny_batch(periodic=False)
    target = torch.randn(batch.num_nodes, 3, generator=torch.Generator().manual_seed(3))
    params = list(model.parameters())

    def step(b):
        for p in params:
            p.grad = None
        out = model(b, compute_forces=True)
        loss = (out["energy"] ** 2).sum() + ((out["forces"] - target) ** 2).sum()
        loss.backward()
        return loss.detach(), [p.grad for p in params]

    errors = assert_compiles(step, batch, backend="aot_eager")
    assert len(errors) == 1 + len(params)


def test_forward_reads_no_values():
    """ESCN.forward has no host synchronisation: a batch on the meta device runs through its checks and tracing
    (value checks are where the batch is made: collate, ESCN.check_batch)."""
    model = tiny_model("torch").eval()
    batch = tiny_batch()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        explanation = torch._dynamo.explain(lambda b: model(b, compute_stress=True))(batch)
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]
