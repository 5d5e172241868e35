"""escn.ase.Calculator against direct model calls and finite differences; NVE runs and g(r) (escn.md)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ase = pytest.importorskip("ase")

from ase import Atoms  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.calculators.calculator import PropertyNotImplementedError  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402

from escn.ase import Calculator  # noqa: E402
from escn.data import AtomsGraph, collate  # noqa: E402
from escn.md import energy_drift_per_atom, plot_rdf, radial_distribution, run_nve  # noqa: E402
from escn.models import ESCN  # noqa: E402

A_CU = 3.59  # EMT's equilibrium fcc lattice constant, Angstrom
SPECIES = [29, 47]  # the test model's elements: Cu -> type 0, Ag -> type 1
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


@pytest.fixture(autouse=True)
def _float64_one_thread():
    """float64 default dtype and one intra-op thread for every test here, restored afterwards."""
    old_dtype, old_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_default_dtype(old_dtype)
        torch.set_num_threads(old_threads)


@pytest.fixture(scope="module")
def model():
    """A small untrained float64 ESCN (random weights, fixed seed)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        return ESCN(lmax=2, mmax=2, channels=4, num_layers=1, cutoff=3.0, atomic_numbers=SPECIES).double().eval()
    finally:
        torch.set_default_dtype(old)


def _triclinic_cu() -> Atoms:
    """8 Cu atoms in the rattled 2x2x2 primitive (triclinic) fcc cell: all six stress components non-zero."""
    atoms = bulk("Cu", "fcc", a=A_CU).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=2)
    return atoms


def _batch(atoms: Atoms):
    """The model's input for ``atoms``: type indices = positions of the atomic numbers in SPECIES."""
    graph = AtomsGraph.from_ase(atoms)
    graph.atom_types = torch.tensor([SPECIES.index(int(z)) for z in atoms.numbers])
    return collate([graph]).with_radius_graph(3.0)


def _energy(atoms: Atoms, make_calc) -> float:
    a = atoms.copy()
    a.calc = make_calc()
    return a.get_potential_energy()


def _strain_fd_stress(atoms: Atoms, make_calc, h: float = 1e-4) -> np.ndarray:
    """ASE-convention stress by central differences: (1/V) dE/d(eps) with cell -> cell (I + eps), atoms scaled."""
    cell = atoms.get_cell()[:].copy()
    out = np.zeros(6)
    for k, (i, j) in enumerate(VOIGT):
        eps = np.zeros((3, 3))
        eps[i, j] += h / 2
        eps[j, i] += h / 2
        e = []
        for sign in (1.0, -1.0):
            a = atoms.copy()
            a.set_cell(cell @ (np.eye(3) + sign * eps), scale_atoms=True)
            e.append(_energy(a, make_calc))
        out[k] = (e[0] - e[1]) / (2 * h) / atoms.get_volume()
    return out


# ----------------------------------------------------------------------------- calculator


def test_calculator_equals_direct_model_call(model):
    atoms = _triclinic_cu()
    atoms.calc = Calculator(model)
    ref = model(_batch(atoms), compute_forces=True, compute_stress=True)
    assert abs(atoms.get_potential_energy() - float(ref["energy"].detach()[0])) <= 1e-12
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"].detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(atoms.get_stress(voigt=False), ref["stress"][0].detach().numpy(), rtol=0, atol=1e-12)
    s = ref["stress"][0].detach().numpy()
    np.testing.assert_allclose(atoms.get_stress(), [s[i, j] for i, j in VOIGT], rtol=0, atol=1e-12)
    assert np.all(np.abs(atoms.get_stress()) > 1e-6)  # the test cell exercises every Voigt component


def test_forces_are_minus_energy_gradient(model):
    atoms = _triclinic_cu()
    atoms.calc = Calculator(model)
    forces = atoms.get_forces()
    pos, h = atoms.get_positions(), 1e-4
    fd = np.zeros_like(forces)
    for n in range(len(atoms)):
        for d in range(3):
            e = []
            for sign in (1.0, -1.0):
                a = atoms.copy()
                p = pos.copy()
                p[n, d] += sign * h
                a.set_positions(p)
                e.append(_energy(a, lambda: Calculator(model)))
            fd[n, d] = -(e[0] - e[1]) / (2 * h)
    assert np.abs(forces).max() > 1e-3
    np.testing.assert_allclose(forces, fd, rtol=0, atol=1e-6)  # measured 2e-8


def test_stress_matches_strain_finite_difference(model):
    atoms = _triclinic_cu()
    atoms.calc = Calculator(model)
    fd = _strain_fd_stress(atoms, lambda: Calculator(model))
    np.testing.assert_allclose(atoms.get_stress(), fd, rtol=0, atol=1e-6)  # measured 6e-9


def test_emt_reference_follows_the_same_stress_convention():
    """ASE's own EMT passes the finite-difference check used above, so that check pins ASE's convention."""
    atoms = _triclinic_cu()
    atoms.calc = EMT()
    np.testing.assert_allclose(atoms.get_stress(), _strain_fd_stress(atoms, EMT), rtol=0, atol=1e-6)
    # and the sign means what the docs say: a compressed crystal has negative stress (positive pressure)
    squeezed = bulk("Cu", "fcc", a=0.97 * A_CU, cubic=True)
    squeezed.calc = EMT()
    assert np.all(squeezed.get_stress()[:3] < 0)
    # a sign flip of the model's stress would fail the model's check: the two differ by far more than 1e-6
    assert np.abs(atoms.get_stress()).max() > 1e-4


def test_results_follow_positions_cell_and_numbers(model):
    atoms = _triclinic_cu()
    calc = Calculator(model)
    atoms.calc = calc
    e0, f0, s0 = atoms.get_potential_energy(), atoms.get_forces().copy(), atoms.get_stress().copy()
    moved = atoms.get_positions()
    moved[3] += [0.1, -0.05, 0.02]
    atoms.set_positions(moved)
    e1, f1 = atoms.get_potential_energy(), atoms.get_forces()
    assert abs(e1 - e0) > 1e-6 and np.abs(f1 - f0).max() > 1e-6
    assert e1 == pytest.approx(_energy(atoms, lambda: Calculator(model)), abs=1e-12)
    atoms.set_cell(atoms.get_cell()[:] * 1.01, scale_atoms=True)
    assert np.abs(atoms.get_stress() - s0).max() > 1e-6
    e_cu = atoms.get_potential_energy()
    assert e_cu == pytest.approx(_energy(atoms, lambda: Calculator(model)), abs=1e-12)
    numbers = atoms.get_atomic_numbers()
    numbers[0] = 47  # Ag: another type embedding
    atoms.set_atomic_numbers(numbers)
    e_ag = atoms.get_potential_energy()
    assert abs(e_ag - e_cu) > 1e-6
    assert e_ag == pytest.approx(float(model(_batch(atoms))["energy"].detach()[0]), abs=1e-12)
    assert calc.results["energy"] == atoms.get_potential_energy()


def test_open_boundaries_give_energy_and_forces_but_no_stress(model):
    cluster = bulk("Cu", "fcc", a=A_CU, cubic=True)
    cluster.set_pbc(False)
    cluster.center(vacuum=4.0)
    cluster.calc = Calculator(model)
    ref = model(_batch(cluster))
    assert abs(cluster.get_potential_energy() - float(ref["energy"].detach()[0])) <= 1e-12
    np.testing.assert_allclose(cluster.get_forces(), ref["forces"].detach().numpy(), rtol=0, atol=1e-12)
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        cluster.get_stress()
    slab = _triclinic_cu()
    slab.set_pbc((True, True, False))
    slab.calc = Calculator(model)
    assert np.isfinite(slab.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError):
        slab.get_stress()


def test_model_runs_in_eval_mode_and_keeps_its_mode(model):
    atoms = _triclinic_cu()
    seen = []
    handle = model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(m.training), with_kwargs=True)
    try:
        model.train()
        atoms.calc = Calculator(model)
        atoms.get_forces()
        assert seen == [False] and model.training
    finally:
        handle.remove()
        model.eval()


def test_float32_model_is_moved_to_the_requested_dtype(model):
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    m32 = ESCN(lmax=2, mmax=2, channels=4, num_layers=1, cutoff=3.0, atomic_numbers=[29])
    assert next(m32.parameters()).dtype == torch.float32
    calc = Calculator(m32)  # float64 by default
    assert calc.dtype == torch.float64 and next(m32.parameters()).dtype == torch.float64
    m32b = ESCN(lmax=2, mmax=2, channels=4, num_layers=1, cutoff=3.0, atomic_numbers=[29])
    assert Calculator(m32b, dtype=None).dtype == torch.float32
    atoms = _triclinic_cu()
    atoms.calc = Calculator(m32b, dtype=None)
    assert np.isfinite(atoms.get_forces()).all()


def test_bad_arguments(model):
    with pytest.raises(TypeError, match="model_or_checkpoint"):
        Calculator(3)
    with pytest.raises(TypeError, match="dtype"):
        Calculator(model, dtype=torch.int64)
    with pytest.raises(ValueError, match="device"):
        Calculator(model, device="not-a-device")


def test_checkpoint_path_loads_the_model(model, tmp_path):
    try:
        from escn.checkpoint import FORMAT, VERSION, atomic_save
        from escn.models.io import load  # noqa: F401
    except ImportError:
        pytest.skip("checkpoint loading (escn.models.io) is not available")
    path = tmp_path / "best.pt"
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
        path,
    )
    atoms = _triclinic_cu()
    atoms.calc = Calculator(str(path))
    direct = _energy(atoms, lambda: Calculator(model))
    assert atoms.get_potential_energy() == pytest.approx(direct, abs=1e-12)
    with pytest.raises(FileNotFoundError):
        Calculator(tmp_path / "missing.pt")


def test_escn_imports_without_ase_and_escn_ase_says_how_to_install_it():
    code = (
        "import sys; sys.modules['ase'] = None\n"
        "import escn, escn.md, escn.data, escn.models\n"
        "try:\n    import escn.ase\nexcept ImportError as e:\n    print('ERR', e)\n"
        "try:\n    escn.md.run_nve(None, None, 1.0, 1)\nexcept ImportError as e:\n    print('ERR', e)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=root)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("ERR") and 'pip install "escn[ase]"' in line for line in lines)


# ----------------------------------------------------------------------------- NVE


def test_nve_emt_conserves_energy():
    atoms = bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(2)  # 32 atoms
    result = run_nve(atoms, EMT(), timestep_fs=1.0, steps=50, log_every=5, temperature_K=300.0, seed=0)
    np.testing.assert_allclose(result["time_fs"], np.arange(0, 51, 5.0))
    assert result["num_atoms"] == 32 and result["total_energy"].shape == (11,)
    np.testing.assert_allclose(result["total_energy"], result["potential_energy"] + result["kinetic_energy"])
    assert 150 < result["temperature_K"][0] < 450 and result["temperature_K"][-1] < result["temperature_K"][0]
    drift = energy_drift_per_atom(result)
    assert drift["max_abs_deviation_eV_per_atom"] < 5e-5  # measured 8.1e-6 (the kinetic energy moves by 2.8e-2 eV/atom)
    assert abs(drift["slope_eV_per_atom_per_ps"]) < 1e-3  # measured 1.75e-4


def test_nve_escn_model_conserves_energy(model):
    atoms = bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(2)  # 32 atoms
    result = run_nve(
        atoms,
        Calculator(model),
        timestep_fs=1.0,
        steps=50,
        log_every=10,
        temperature_K=300.0,
        seed=0,
        record_positions=True,
    )
    assert result["positions"].shape == (6, 32, 3)
    drift = energy_drift_per_atom(result)
    assert drift["max_abs_deviation_eV_per_atom"] < 3e-5  # measured 2.6e-6
    assert abs(drift["slope_eV_per_atom_per_ps"]) < 1e-3  # measured 5.5e-5
    assert np.ptp(result["kinetic_energy"]) / 32 > 10 * drift["max_abs_deviation_eV_per_atom"]


def test_energy_drift_of_a_known_line():
    t = np.linspace(0.0, 2000.0, 21)  # fs
    result = {"time_fs": t, "total_energy": -100.0 + 0.004 * t, "num_atoms": 4}  # 4 eV/ps over 4 atoms
    drift = energy_drift_per_atom(result)
    assert drift["slope_eV_per_atom_per_ps"] == pytest.approx(1.0)
    assert drift["max_abs_deviation_eV_per_atom"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="num_atoms"):
        energy_drift_per_atom({"time_fs": t, "total_energy": t})
    with pytest.raises(ValueError, match="steps"):
        run_nve(bulk("Cu"), EMT(), 1.0, 0)
    with pytest.raises(ValueError, match="timestep_fs"):
        run_nve(bulk("Cu"), EMT(), -1.0, 1)
    with pytest.raises(TypeError, match="atoms"):
        run_nve("Cu", EMT(), 1.0, 1)


# ----------------------------------------------------------------------------- g(r)


def test_rdf_of_an_ideal_gas_is_one():
    rng = np.random.default_rng(0)
    frames, n, box = 4, 300, 10.0
    pos = rng.uniform(0.0, box, size=(frames, n, 3))
    r_max, bins = 8.0, 32  # beyond half the box: every periodic image is counted
    r, g = radial_distribution(pos, np.eye(3) * box, r_max, bins)
    assert r.shape == g.shape == (bins,)
    np.testing.assert_allclose(r, (np.arange(bins) + 0.5) * r_max / bins)
    edges = np.linspace(0.0, r_max, bins + 1)
    expected = frames * n * (n - 1) / box**3 * 4 / 3 * np.pi * np.diff(edges**3)  # ordered pairs per bin
    sigma = np.sqrt(2.0 / expected)  # each unordered pair is counted twice
    keep = expected > 50
    assert np.all(np.abs(g[keep] - 1.0) < 5 * sigma[keep])
    total = np.sum(g * expected) / np.sum(expected)
    assert total == pytest.approx(1.0, abs=5 * np.sqrt(2.0 / expected.sum()))


@pytest.mark.parametrize("cubic", [True, False])
def test_rdf_of_a_perfect_fcc_crystal(cubic):
    atoms = bulk("Cu", "fcc", a=A_CU, cubic=cubic).repeat(3)  # 108 atoms (cubic) or 27 (triclinic primitive)
    n, volume = len(atoms), atoms.get_volume()
    r, g = radial_distribution(torch.as_tensor(atoms.get_positions()), atoms.get_cell()[:], 6.0, 120)
    dr = r[1] - r[0]
    peak = r[np.argmax(g)]
    assert abs(peak - A_CU / np.sqrt(2)) <= dr / 2
    shell = 4 / 3 * np.pi * ((r + dr / 2) ** 3 - (r - dr / 2) ** 3)
    coordination = np.cumsum(g * (n - 1) / volume * shell)  # neighbours per atom within r + dr/2
    assert coordination[np.searchsorted(r, 3.0)] == pytest.approx(12.0)
    assert coordination[np.searchsorted(r, 4.0)] == pytest.approx(18.0)  # + 6 at a
    assert np.all(g[r < 2.4] == 0)


def test_rdf_argument_checks():
    box = np.eye(3) * 5.0
    with pytest.raises(ValueError, match="positions_frames"):
        radial_distribution(np.zeros((2, 4)), box, 2.0)
    with pytest.raises(ValueError, match="cell"):
        radial_distribution(np.zeros((3, 4, 3)), np.zeros((2, 3, 3)), 2.0)
    with pytest.raises(ValueError, match="r_max"):
        radial_distribution(np.random.rand(4, 3), box, 0.0)
    with pytest.raises(ValueError, match="bins"):
        radial_distribution(np.random.rand(4, 3), box, 2.0, bins=0)


def test_plot_rdf_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    atoms = bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(2)
    curves = {"fcc": radial_distribution(atoms.get_positions(), atoms.get_cell()[:], 5.0, 50)}
    atoms.rattle(0.1, seed=0)
    curves["rattled"] = radial_distribution(atoms.get_positions(), atoms.get_cell()[:], 5.0, 50)
    path = plot_rdf(curves, tmp_path / "sub" / "rdf.png", title="Cu")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="curves"):
        plot_rdf({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="pair"):
        plot_rdf({"bad": np.zeros(3)}, tmp_path / "x.png")
