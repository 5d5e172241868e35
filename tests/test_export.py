"""torch.export of the layers and of the energy model (energy, forces, stress) with dynamic numbers of atoms and
edges, escn.data.Batch as a pytree, and the AOTInductor package of `escn deploy` run by escn.ase.Calculator."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.utils._pytree as pytree

from escn import native
from escn.data import AtomsGraph, Batch, collate
from escn.models.escn import ESCN
from escn.models.export import batch_dynamic_shapes, export_energy_model
from escn.nn import SO2Conv, TFNConv
from escn.o3 import Irreps

pytestmark = pytest.mark.usefixtures("single_thread")

EXECUTORS = ["native", "torch"]


def _executor(executor: str) -> str:
    if executor == "native" and not native.available():
        pytest.skip(f"compiled kernels unavailable: {native.unavailable_reason()}")
    return executor


def _structure(n: int, seed: int, dtype=torch.float64, side: float = 4.0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    pos = (torch.rand(n, 3, generator=g, dtype=torch.float64) * side).to(dtype)
    types = torch.randint(0, 2, (n,), generator=g)
    cell = torch.tensor([[side, 0.0, 0.0], [0.2, side, 0.0], [0.0, 0.3, side]], dtype=dtype)
    return collate([AtomsGraph(pos=pos, atom_types=types, cell=cell)]).with_radius_graph(3.0)


def _model(executor: str = "native", dtype=torch.float64) -> ESCN:
    torch.manual_seed(0)
    return (
        ESCN(
            lmax=1,
            mmax=1,
            channels=4,
            num_layers=2,
            cutoff=3.0,
            num_radial=4,
            radial_hidden=8,
            atomic_numbers=[29, 47],
            executor=executor,
        )
        .to(dtype)
        .eval()
    )


def test_batch_is_a_pytree():
    batch = _structure(5, 0)
    leaves, spec = pytree.tree_flatten(batch)
    assert len(leaves) == 9  # pos, batch, ptr, pbc, atom_types, cell, edge_src, edge_dst, shift
    back = pytree.tree_unflatten(leaves, spec)
    assert isinstance(back, Batch) and back.pos is batch.pos and back.energy is None
    N, E = torch.export.Dim("N"), torch.export.Dim("E")
    shapes = batch_dynamic_shapes(batch, N, E)
    assert shapes[0] == {0: N} and shapes[2] is None and shapes[6] == {0: E} and shapes[-1] == {}


@pytest.mark.parametrize("executor", EXECUTORS)
def test_export_layers_with_dynamic_atoms_and_edges(executor):
    so2 = SO2Conv(
        "3x0e + 2x1o + 1x2e", "2x0e + 2x1o", mmax=1, shared_weights=True, executor=_executor(executor)
    ).double()
    tfn = TFNConv("3x0e + 2x1o", "2x0e + 2x1o", lmax_filter=2).double()

    class Layers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.so2, self.tfn = so2, tfn

        def forward(self, x, src, dst, vec, radial, w):
            return self.so2(x, src, dst, vec, radial), self.tfn(x[:, :9], src, dst, vec, w)

    def inputs(n, e, seed):
        g = torch.Generator().manual_seed(seed)
        src = torch.randint(0, n, (e,), generator=g)
        dst = (src + torch.randint(1, n, (e,), generator=g)) % n
        return (
            Irreps("3x0e + 2x1o + 1x2e").randn(n, -1, generator=g, dtype=torch.float64),
            src,
            dst,
            torch.randn(e, 3, generator=g, dtype=torch.float64),
            torch.randn(e, so2.weight_numel, generator=g, dtype=torch.float64),
            torch.randn(e, tfn.weight_numel, generator=g, dtype=torch.float64),
        )

    module = Layers()
    module(*inputs(5, 9, 0))  # first call fills the spherical-harmonics tables (not traceable)
    N, E = torch.export.Dim("N", min=2), torch.export.Dim("E", min=2)
    # opt_einsum chooses TFNConv's contraction order from the sizes, which would fix E: off while exporting
    with torch.backends.opt_einsum.flags(enabled=False):
        ep = torch.export.export(
            module, inputs(7, 19, 1), dynamic_shapes=({0: N}, {0: E}, {0: E}, {0: E}, {0: E}, {0: E})
        )
    for n, e, seed in ((7, 19, 1), (9, 23, 2), (4, 11, 3)):
        args = inputs(n, e, seed)
        for got, ref in zip(ep.module()(*args), module(*args)):
            assert got.shape == ref.shape and (got - ref).abs().max() <= 1e-10


@pytest.mark.parametrize("executor", EXECUTORS)
def test_export_energy_forces_stress_with_dynamic_atoms_and_edges(executor):
    model = _model(_executor(executor))
    ep = export_energy_model(model, _structure(8, 0))
    for n, seed in ((8, 0), (13, 1), (5, 2)):
        batch = _structure(n, seed)
        got, ref = ep.module()(batch), model(batch, compute_stress=True)
        assert set(got) == {"energy", "forces", "stress"} and got["forces"].shape == (n, 3)
        for k in got:
            assert (got[k] - ref[k]).abs().max() <= 1e-10, k
    # the dimensions are symbols: nothing tied the atoms to the edges or to a constant
    names = {str(s) for s in ep.range_constraints}
    assert len(names) == 2, names


def _deploy_and_compare(tmp_path, dtype: torch.dtype, tol: float, cli: bool) -> None:
    """Write a package (``escn deploy CKPT -o model.pt2`` or escn.models.export.deploy) and compare the calculator
    on it with the eager model: energy, forces and stress within ``tol``, on 16 and 32 atoms (exported with 8)."""
    pytest.importorskip("ase")
    from ase.build import bulk

    from escn.ase import Calculator
    from escn.checkpoint import FORMAT, VERSION, atomic_save
    from escn.cli import main
    from escn.models.export import deploy, example_batch, load_deployed

    executor = "native" if native.available() else "torch"
    model = _model(executor)
    path = tmp_path / "model.pt2"
    if cli:
        ckpt = tmp_path / "best.pt"
        atomic_save(
            {
                "format": FORMAT,
                "version": VERSION,
                "model_name": "escn.models.escn:ESCN",
                "model_config": model.config,
                "dtype": "float64",
                "model_state": model.state_dict(),
                "ema_state": None,
            },
            ckpt,
        )
        name = str(dtype).replace("torch.", "")
        assert main(["deploy", str(ckpt), "-o", str(path), "--dtype", name, "--executor", executor]) == 0
    else:
        model = model.to(dtype)
        deploy(model, example_batch(model), path)

    atoms = bulk("Cu", "fcc", a=3.59, cubic=True).repeat((2, 1, 1))
    atoms.numbers[::3] = 47
    atoms.rattle(0.05, seed=1)
    ref_model = _model(executor, dtype)
    for a in (atoms, atoms.repeat((1, 2, 1))):  # 16 and 32 atoms: other numbers of atoms and edges
        a = a.copy()
        a.calc = Calculator(str(path))
        assert a.calc.dtype == dtype
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
        b = a.copy()
        b.calc = Calculator(ref_model, dtype=dtype)
        assert abs(e - b.get_potential_energy()) <= tol * max(1.0, abs(e))
        assert abs(f - b.get_forces()).max() <= tol
        assert abs(s - b.get_stress()).max() <= tol
    # the package pickles and deep-copies by path: the copy loads the same package and gives the same numbers
    deployed = load_deployed(path)
    batch = collate(
        [
            AtomsGraph(
                pos=torch.as_tensor(atoms.positions, dtype=dtype),
                atom_types=torch.as_tensor([ref_model.atomic_numbers.index(z) for z in atoms.numbers]),
                cell=torch.as_tensor(atoms.cell.array, dtype=dtype),
            )
        ]
    ).with_radius_graph(deployed.cutoff)
    want = deployed(batch, compute_forces=True)
    for copy_ in (pickle.loads(pickle.dumps(deployed)), copy.deepcopy(deployed)):
        got = copy_(batch, compute_forces=True)
        assert copy_.path == deployed.path and torch.equal(got["energy"], want["energy"])
        assert torch.equal(got["forces"], want["forces"])


def test_escn_deploy_package_runs_in_the_ase_calculator_float64(tmp_path):
    _deploy_and_compare(tmp_path, torch.float64, 1e-10, cli=True)


def test_deployed_package_float32(tmp_path):
    _deploy_and_compare(tmp_path, torch.float32, 1e-5, cli=False)
