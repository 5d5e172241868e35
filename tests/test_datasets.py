"""Data-set generators: tetris shapes, the charged 5-body simulator, EMT Cu frames, the cache."""

from __future__ import annotations

import itertools
import os
import sys

import numpy as np
import pytest
import torch

from escn.data import collate
from escn.datasets import _cache, nbody, tetris
from escn.datasets._cache import array_digest, cache_file_name, cached_arrays

# ----------------------------------------------------------------------------- cache


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("ESCN_DATA_DIR", raising=False)
    assert _cache.default_cache_dir() == _cache.Path.home() / ".cache" / "escn" / "datasets"
    monkeypatch.setenv("ESCN_DATA_DIR", str(tmp_path / "env"))
    assert _cache.resolve_cache_dir(None) == tmp_path / "env"
    assert _cache.resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    with pytest.raises(TypeError, match="cache_dir"):
        _cache.resolve_cache_dir(3)


def test_cache_file_name_holds_all_parameters():
    a = cache_file_name("x", {"seed": 1, "dt": 0.001, "frames": (30, 40)})
    assert a == cache_file_name("x", {"frames": (30, 40), "dt": 0.001, "seed": 1})
    assert "seed=1" in a and "dt=0.001" in a and "frames=30-40" in a and a.endswith(".npz")
    assert a != cache_file_name("x", {"seed": 2, "dt": 0.001, "frames": (30, 40)})


def test_cached_arrays_writes_once_atomically(tmp_path):
    calls = []

    def gen():
        calls.append(1)
        return {"a": np.arange(5.0), "b": np.ones((2, 3), dtype=np.int64)}

    first = cached_arrays("t", {"seed": 0}, gen, cache_dir=tmp_path)
    second = cached_arrays("t", {"seed": 0}, gen, cache_dir=tmp_path)
    assert len(calls) == 1
    assert array_digest(first) == array_digest(second)
    assert sorted(os.listdir(tmp_path)) == [cache_file_name("t", {"seed": 0})]  # no temp files left
    cached_arrays("t", {"seed": 0}, gen, cache_dir=tmp_path, use_cache=False)
    assert len(calls) == 2


def test_array_digest_sees_dtype_shape_and_values():
    a = {"x": np.arange(6.0)}
    assert array_digest(a) == array_digest({"x": np.arange(6.0)})
    assert array_digest(a) != array_digest({"x": np.arange(6.0).reshape(2, 3)})
    assert array_digest(a) != array_digest({"x": np.arange(6.0, dtype=np.float32)})
    assert array_digest(a) != array_digest({"y": np.arange(6.0)})


# ----------------------------------------------------------------------------- tetris


def test_tetris_shapes_and_graphs():
    pos, labels = tetris.tetris_shapes(torch.float64)
    assert pos.shape == (8, 4, 3) and pos.dtype == torch.float64
    assert torch.equal(labels, torch.arange(8))
    assert torch.equal(pos, pos.round())  # unit grid
    # each shape is connected on the grid: 3 nearest-neighbour bonds of length 1 at least
    assert all(sorted(tetris.distance_signature(p))[:3] == [1.0, 1.0, 1.0] for p in pos)
    graphs = tetris.tetris_graphs(dtype=torch.float32)
    assert len(graphs) == 8
    for k, g in enumerate(graphs):
        assert g.pos.dtype == torch.float32 and g.num_edges == 12
        assert not bool((g.edge_src == g.edge_dst).any())
        assert {(int(s), int(d)) for s, d in zip(g.edge_src, g.edge_dst)} == {
            (i, j) for i, j in itertools.permutations(range(4), 2)
        }
        assert int(g.graph_attrs["label"]) == k
        assert torch.equal(g.pos, pos[k].float())
    batch = collate(graphs)
    assert batch.graph_attrs["label"].shape == (8,) and batch.edge_src.shape == (96,)


def test_tetris_distance_signatures_distinct_except_chiral_pair():
    pos, _ = tetris.tetris_shapes(torch.float64)
    sigs = [tetris.distance_signature(p) for p in pos]
    assert sigs[0] == sigs[1]  # mirror images: same distances, only parity tells them apart
    assert len(set(sigs[1:])) == 7


def test_tetris_chiral_pair_are_mirror_images():
    partners = tetris.mirror_partners()
    assert partners.tolist() == [1, 0, 2, 3, 4, 5, 6, 7]
    pos, _ = tetris.tetris_shapes(torch.float64)
    assert tetris.rigid_rmsd(pos[0], pos[1]) > 0.1  # no rotation superposes them
    assert tetris.rigid_rmsd(pos[0], pos[1], allow_reflection=True) < 1e-9
    # opposite handedness: signed volume spanned by the arms at the shared corner
    vol = [float(torch.det(p[1:] - p[0])) for p in pos[:2]]
    assert vol[0] == -vol[1] != 0


def test_tetris_random_rotation_test_set():
    graphs = tetris.random_rotation_test_set(n=24, seed=3, dtype=torch.float64)
    again = tetris.random_rotation_test_set(n=40, seed=3, dtype=torch.float64)
    other = tetris.random_rotation_test_set(n=24, seed=4, dtype=torch.float64)
    pos, _ = tetris.tetris_shapes(torch.float64)
    assert [int(g.graph_attrs["label"]) for g in graphs] == [i % 8 for i in range(24)]
    for g, h, o in zip(graphs, again, other):
        assert torch.equal(g.pos, h.pos)  # prefix of a longer set with the same seed
        assert not torch.allclose(g.pos, o.pos)
        r = g.graph_attrs["rotation"]
        assert torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
        assert abs(float(torch.det(r)) - 1.0) < 1e-12
        assert tetris.rigid_rmsd(g.pos, pos[int(g.graph_attrs["label"])]) < 1e-9
        assert torch.allclose(g.pos, pos[int(g.graph_attrs["label"])] @ r.T, atol=1e-12)


def test_tetris_bad_arguments():
    with pytest.raises(ValueError, match="rotations"):
        tetris.tetris_graphs(torch.eye(3))
    with pytest.raises(TypeError, match="rotations"):
        tetris.tetris_graphs(np.eye(3)[None])
    with pytest.raises(ValueError, match="labels"):
        tetris.tetris_graphs(labels=torch.tensor([8]))
    with pytest.raises(ValueError, match="labels"):
        tetris.tetris_graphs(torch.eye(3).expand(2, 3, 3), labels=torch.tensor([0]))
    with pytest.raises(ValueError, match="n must"):
        tetris.random_rotation_test_set(n=0)
    with pytest.raises(TypeError, match="dtype"):
        tetris.tetris_shapes(torch.long)


# ----------------------------------------------------------------------------- n-body


def test_nbody_shapes_dtypes_and_cache(tmp_path):
    data = nbody.load_nbody("valid", num_traj=6, seed=1, cache_dir=tmp_path)
    assert {k: v.shape for k, v in data.items()} == {
        "pos": (6, 5, 3),
        "vel": (6, 5, 3),
        "charges": (6, 5),
        "target": (6, 5, 3),
    }
    assert all(v.dtype == np.float64 for v in data.values())
    assert set(np.unique(data["charges"])) <= {-1.0, 1.0}
    files = os.listdir(tmp_path)
    assert len(files) == 1 and "split=valid" in files[0] and "seed=1" in files[0] and "n=6" in files[0]
    assert array_digest(nbody.load_nbody("valid", num_traj=6, seed=1, cache_dir=tmp_path)) == array_digest(data)


def test_nbody_deterministic_by_hash():
    def digest(**kw):
        return array_digest(nbody.load_nbody(use_cache=False, **kw))

    a = digest(split="train", num_traj=5, seed=0)
    assert a == digest(split="train", num_traj=5, seed=0)
    assert a != digest(split="train", num_traj=5, seed=1)
    assert a != digest(split="test", num_traj=5, seed=0)  # splits use distinct seeds


def test_nbody_frames_and_initial_conditions():
    sim = nbody.simulate(3, seed=(5, 0), steps=300, sample_every=100)
    assert sim["pos"].shape == (3, 4, 5, 3) and sim["vel"].shape == (3, 4, 5, 3)  # frames 0..3
    init = nbody.initial_conditions(3, (5, 0))
    assert np.array_equal(sim["pos"][:, 0], init["pos"])  # frame 0 = initial state
    assert np.allclose(np.linalg.norm(init["vel"], axis=-1), 0.5, rtol=0, atol=1e-15)
    # frame k = after k * sample_every steps, independent of the sampling and chunking
    coarse = nbody.integrate(init["pos"], init["vel"], init["charges"], steps=300, sample_every=300)
    assert np.array_equal(coarse["pos"][:, 1], sim["pos"][:, 3])
    one = nbody.integrate(init["pos"][1:2], init["vel"][1:2], init["charges"][1:2], steps=300)
    assert np.array_equal(one["pos"][0], sim["pos"][1])
    # prefix stability: the first trajectories do not depend on how many are drawn
    assert np.array_equal(nbody.initial_conditions(5, (5, 0))["pos"][:3], init["pos"])
    # load_nbody: input = the state after 3,100 steps, target = the positions after 4,100 steps (frames 31 and 41)
    assert (nbody.INPUT_STEP, nbody.TARGET_STEP) == (3100, 4100)
    data = nbody.load_nbody("test", num_traj=2, seed=5, use_cache=False)
    full = nbody.simulate(2, seed=(5, 2), steps=5000)
    assert np.array_equal(data["pos"], full["pos"][:, 31]) and np.array_equal(data["vel"], full["vel"][:, 31])
    assert np.array_equal(data["target"], full["pos"][:, 41])
    # the published generator stores 49 frames of its 5,000-step runs, the first after 100 steps (its index k =
    # our frame k + 1), and its loaders take indices 30 and 40: the states after 3,100 and 4,100 steps
    published = full["pos"][:, 1:50]
    assert np.array_equal(data["pos"], published[:, 30]) and np.array_equal(data["target"], published[:, 40])
    # the same states by step count, sampled once
    init = nbody.initial_conditions(2, (5, 2))
    x_in = nbody.integrate(init["pos"], init["vel"], init["charges"], steps=3100, sample_every=3100)
    x_out = nbody.integrate(init["pos"], init["vel"], init["charges"], steps=4100, sample_every=4100)
    assert np.array_equal(x_in["pos"][:, 1], data["pos"]) and np.array_equal(x_in["vel"][:, 1], data["vel"])
    assert np.array_equal(x_out["pos"][:, 1], data["target"])


def test_coulomb_forces_against_pair_loop():
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(4, 5, 3))
    q = rng.choice([-1.0, 1.0], size=(4, 5))
    pos[0, 1] = pos[0, 0] + [0.02, 0.0, 0.0]  # a close pair: its force is clipped
    expected = np.zeros_like(pos)
    for b in range(4):
        for i in range(5):
            for j in range(5):
                if i != j:
                    d = pos[b, i] - pos[b, j]
                    expected[b, i] += q[b, i] * q[b, j] * d / np.linalg.norm(d) ** 3
    assert np.allclose(nbody.coulomb_forces(pos, q, max_force=None), expected, rtol=1e-12, atol=0)
    clipped = nbody.coulomb_forces(pos, q)
    assert np.abs(expected[0]).max() > 100
    assert np.allclose(clipped, np.clip(expected, -100, 100), rtol=1e-12, atol=0)
    # the integrator's internal force (one step from rest: v = F dt) matches too
    step = nbody.integrate(pos, np.zeros_like(pos), q, steps=1, sample_every=1, dt=1e-3)
    assert np.allclose(step["vel"][:, 1], clipped * 1e-3, rtol=1e-12, atol=1e-18)


def test_nbody_kick_then_drift_by_hand():
    # two like charges at distance 1 on the x axis, at rest
    dt = 0.1
    x = np.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    v = np.zeros_like(x)
    q = np.array([[1.0, 1.0]])
    out = nbody.integrate(x, v, q, steps=2, sample_every=1, dt=dt, max_force=None)
    # step 1: F0 = q0 q1 (x0 - x1) / r^3 = -1 along x; kick v0 = -dt; drift x0 = -dt^2
    v1 = -dt
    x1 = v1 * dt
    assert np.allclose(out["vel"][0, 1, 0], [v1, 0, 0], rtol=1e-15, atol=0)
    assert np.allclose(out["pos"][0, 1, 0], [x1, 0, 0], rtol=1e-15, atol=0)
    # step 2: distance r = 1 - 2 x1 ... i.e. 1 + 2 dt^2; force from the *new* positions
    r = (1 - x1) - x1
    v2 = v1 - dt / r**2
    x2 = x1 + v2 * dt
    assert np.allclose(out["vel"][0, 2, 0], [v2, 0, 0], rtol=1e-14, atol=0)
    assert np.allclose(out["pos"][0, 2, 0], [x2, 0, 0], rtol=1e-14, atol=0)
    assert np.allclose(out["pos"][0, :, 1], -out["pos"][0, :, 0] + [1, 0, 0], rtol=0, atol=1e-15)  # symmetric
    # drift-then-kick would leave particle 0 at the origin after the first step
    assert out["pos"][0, 1, 0, 0] != 0.0


def test_nbody_energy_conservation_small_dt():
    init = nbody.initial_conditions(16, (7,))

    def drift(dt, steps):
        tr = nbody.integrate(
            init["pos"], init["vel"], init["charges"], steps=steps, sample_every=steps // 20, dt=dt, max_force=None
        )
        e = nbody.total_energy(tr["pos"], tr["vel"], init["charges"][:, None])
        f = nbody.coulomb_forces(tr["pos"], init["charges"][:, None], max_force=None)
        return np.abs(e - e[:, :1]).max(1), np.abs(f).max((1, 2, 3))

    err, fmax = drift(1e-4, 2000)  # t = 0.2
    calm = fmax < 10  # far from the clip (100): the clipped and unclipped dynamics coincide
    assert calm.sum() >= 12
    # measured: max 1.5e-4 over the calm trajectories
    assert err[calm].max() < 5e-4
    # first-order integrator: halving dt halves the energy error (measured ratio 2.0)
    err_half, _ = drift(5e-5, 4000)
    ratio = err[calm].sum() / err_half[calm].sum()
    assert 1.7 < ratio < 2.3, ratio


def test_nbody_graphs():
    data = nbody.load_nbody("train", num_traj=3, seed=0, use_cache=False)
    graphs = nbody.nbody_graphs(data, dtype=torch.float64)
    assert len(graphs) == 3
    g = graphs[1]
    assert g.num_edges == 20 and not bool((g.edge_src == g.edge_dst).any())
    assert g.node_attrs["vel"].shape == (5, 3) and g.node_attrs["charge"].shape == (5, 1)
    assert torch.equal(g.node_attrs["target"], torch.from_numpy(data["target"][1]))
    assert torch.equal(g.pos, torch.from_numpy(data["pos"][1]))
    assert torch.equal(g.atom_types, torch.from_numpy(data["charges"][1] > 0).long())
    batch = collate(graphs)
    assert batch.node_attrs["charge"].shape == (15, 1) and batch.edge_src.shape == (60,)
    with pytest.raises(ValueError, match="missing"):
        nbody.nbody_graphs({"pos": data["pos"]})


def test_nbody_charge_flip_is_an_exact_symmetry_and_augments(tmp_path):
    # negating every charge leaves all products q_i q_j, hence the whole trajectory, unchanged (bit for bit)
    init = nbody.initial_conditions(4, (3,))
    a = nbody.integrate(init["pos"], init["vel"], init["charges"], steps=300, sample_every=100)
    b = nbody.integrate(init["pos"], init["vel"], -init["charges"], steps=300, sample_every=100)
    assert np.array_equal(a["pos"], b["pos"]) and np.array_equal(a["vel"], b["vel"])
    plain = nbody.nbody_task_graphs("train", num_traj=3, cache_dir=tmp_path, dtype=torch.float64)
    both = nbody.nbody_task_graphs("train", num_traj=3, cache_dir=tmp_path, dtype=torch.float64, charge_flip=True)
    assert len(plain) == 3 and len(both) == 6
    for g, o, f in zip(plain, both[:3], both[3:]):
        assert torch.equal(o.atom_types, g.atom_types) and torch.equal(f.atom_types, 1 - g.atom_types)
        assert torch.equal(f.node_attrs["charge"], -g.node_attrs["charge"])
        for h in (o, f):
            assert torch.equal(h.pos, g.pos) and torch.equal(h.node_features, g.node_features)
            assert torch.equal(h.node_attrs["node_vectors"], g.node_attrs["node_vectors"])
    with pytest.raises(TypeError, match="charge_flip"):
        nbody.nbody_task_graphs("train", num_traj=3, cache_dir=tmp_path, charge_flip=1)


def test_nbody_baselines_small(tmp_path):
    out = nbody.baseline_mse("valid", num_traj=40, num_train=40, cache_dir=tmp_path)
    assert set(out) == {"no_motion", "constant_velocity", "t"}
    assert 0 < out["constant_velocity"] < out["no_motion"]
    assert 0.3 < out["t"] < 1.2


def test_nbody_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        nbody.load_nbody("validation")
    with pytest.raises(ValueError, match="num_traj"):
        nbody.load_nbody("train", num_traj=0)
    with pytest.raises(ValueError, match="multiple of sample_every"):
        nbody.simulate(1, 0, steps=150, sample_every=100)
    with pytest.raises(ValueError, match="dt"):
        nbody.simulate(1, 0, steps=100, dt=-1.0)
    with pytest.raises(ValueError, match="seed"):
        nbody.simulate(1, -1, steps=100)
    with pytest.raises(ValueError, match="charges"):
        nbody.coulomb_forces(np.zeros((2, 5, 3)), np.ones((2, 4)))


# ----------------------------------------------------------------------------- EMT

_EMT_SMALL = dict(num_traj_per_kind=3, frames_per_traj=2, sizes=(2,), equilibration_steps=10, md_interval=5)


@pytest.fixture(scope="module")
def emt_data():
    pytest.importorskip("ase")
    from escn.datasets import emt

    return emt.generate_emt(seed=0, use_cache=False, **_EMT_SMALL)


def _atoms_of(g):
    from ase import Atoms
    from ase.calculators.emt import EMT

    atoms = Atoms(
        numbers=g.atom_types.numpy(), positions=g.pos.double().numpy(), cell=g.cell.double().numpy(), pbc=True
    )
    atoms.calc = EMT()
    return atoms


def test_emt_arrays_shapes_and_determinism(emt_data):
    from escn.datasets import emt

    frames = 4 * 3 * 2
    assert emt_data["num_atoms"].shape == (frames,) and set(emt_data["num_atoms"]) == {32}
    assert emt_data["pos"].shape == (frames * 32, 3) and emt_data["forces"].shape == (frames * 32, 3)
    assert emt_data["cell"].shape == (frames, 3, 3) and emt_data["stress"].shape == (frames, 3, 3)
    assert set(emt_data["numbers"]) == {29}
    assert emt_data["energy"].dtype == np.float64 and emt_data["kind"].dtype == np.int64
    assert np.allclose(emt_data["stress"], emt_data["stress"].transpose(0, 2, 1))
    again = emt.generate_emt(seed=0, use_cache=False, **_EMT_SMALL)
    assert array_digest(again) == array_digest(emt_data)
    other = emt.generate_emt(seed=1, use_cache=False, **dict(_EMT_SMALL, num_traj_per_kind=3))
    assert array_digest(other) != array_digest(emt_data)


def test_emt_split_by_trajectory(emt_data):
    from escn.datasets import emt

    graphs = {s: emt.emt_graphs(emt_data, split=s, dtype=torch.float64) for s in emt.SPLITS}
    trajs = {s: {int(g.graph_attrs["traj"]) for g in graphs[s]} for s in emt.SPLITS}
    assert (
        not (trajs["train"] & trajs["valid"])
        and not (trajs["train"] & trajs["test"])
        and not (trajs["valid"] & trajs["test"])
    )
    assert set().union(*trajs.values()) == set(range(12))
    for s in emt.SPLITS:  # every kind is represented in every split
        assert {int(g.graph_attrs["kind"]) for g in graphs[s]} == {0, 1, 2, 3}
    assert sum(len(v) for v in graphs.values()) == 24
    g = graphs["train"][0]
    assert g.atom_types.dtype == torch.long and bool(g.pbc.all()) and g.stress.shape == (3, 3)
    assert g.energy.shape == () and g.forces.shape == (32, 3)
    batch = collate(graphs["test"]).with_radius_graph(3.0)
    assert batch.energy.shape == (len(graphs["test"]),) and batch.edge_src.numel() > 0
    only_md = emt.emt_graphs(emt_data, kinds=("md300",))
    assert len(only_md) == 6 and all(int(g.graph_attrs["kind"]) == 0 for g in only_md)


def test_emt_forces_and_stress_match_energy_derivatives(emt_data):
    from escn.datasets import emt

    graphs = emt.emt_graphs(emt_data, dtype=torch.float64)
    g = next(h for h in graphs if int(h.graph_attrs["kind"]) == 3)  # a strained, rattled frame
    atoms = _atoms_of(g)
    assert np.isclose(atoms.get_potential_energy(), float(g.energy), rtol=0, atol=1e-10)
    # forces = -dE/dx (central differences on a few coordinates).  The step is not smaller because
    # EMT's neighbour-list cutoff makes the energy jump by ~1e-9 eV when a pair crosses it.
    h = 1e-4
    for atom, axis in ((0, 0), (7, 1), (31, 2)):
        p = atoms.get_positions()
        energies = []
        for sign in (1, -1):
            q = p.copy()
            q[atom, axis] += sign * h
            atoms.set_positions(q)
            energies.append(atoms.get_potential_energy())
        atoms.set_positions(p)
        assert abs(-(energies[0] - energies[1]) / (2 * h) - float(g.forces[atom, axis])) < 1e-6
    # stress = (1/V) dE/d(strain) with ASE's sign (positive under tension); a symmetric strain
    # with eps[a, b] = eps[b, a] = h / 2 changes E by V (s_ab + s_ba) h / 2 = V s_ab h
    cell0, pos0, vol = atoms.get_cell()[:], atoms.get_positions(), atoms.get_volume()
    for a, b in ((0, 0), (1, 2)):
        energies = []
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = sign * h / (1 if a == b else 2)
            atoms.set_cell(cell0 @ (np.eye(3) + eps), scale_atoms=False)
            atoms.set_positions(pos0 @ (np.eye(3) + eps))
            energies.append(atoms.get_potential_energy())
        deriv = (energies[0] - energies[1]) / (2 * h)
        expected = float(g.stress[a, b]) * vol
        assert abs(deriv - expected) < 1e-6 * max(1.0, abs(expected)), (a, b, deriv, expected)


def test_emt_stress_sign_convention():
    pytest.importorskip("ase")
    from escn.datasets import emt

    atoms = emt._supercell(1)
    from ase.calculators.emt import EMT

    atoms.calc = EMT()
    atoms.set_cell(atoms.get_cell()[:] * 0.98, scale_atoms=True)  # compressed: pushes outwards
    compressed = atoms.get_stress(voigt=False)
    atoms.set_cell(atoms.get_cell()[:] / 0.98 * 1.02, scale_atoms=True)  # stretched
    stretched = atoms.get_stress(voigt=False)
    assert np.trace(compressed) < 0 < np.trace(stretched)
    voigt = atoms.get_stress()  # (xx, yy, zz, yz, xz, xy)
    assert np.allclose(voigt, stretched[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]])


def test_emt_cache_and_load(tmp_path):
    pytest.importorskip("ase")
    from escn.datasets import emt

    kw = dict(_EMT_SMALL, frames_per_traj=1, seed=2)
    train = emt.load_emt("train", cache_dir=tmp_path, dtype=torch.float32, **kw)
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].startswith("emt_cu") and "seed=2" in files[0] and "frames=1" in files[0]
    again = emt.load_emt("train", cache_dir=tmp_path, dtype=torch.float32, **kw)
    assert all(torch.equal(a.forces, b.forces) for a, b in zip(train, again))
    assert train[0].pos.dtype == torch.float32
    with pytest.raises(ValueError, match="split"):
        emt.load_emt("training", cache_dir=tmp_path, **kw)
    with pytest.raises(ValueError, match="num_traj_per_kind"):
        emt.generate_emt(num_traj_per_kind=2, use_cache=False)
    with pytest.raises(ValueError, match="kinds"):
        emt.emt_graphs(emt.generate_emt(cache_dir=tmp_path, **kw), kinds=("md500",))


def test_emt_baseline(emt_data):
    from escn.datasets import emt

    train = emt.emt_graphs(emt_data, split="train", dtype=torch.float64)
    test = emt.emt_graphs(emt_data, split="test", dtype=torch.float64)
    out = emt.emt_baseline(train, test)
    forces = np.concatenate([g.forces.numpy() for g in test])
    assert np.isclose(out["force_mae"], 1000 * np.abs(forces).mean())
    e_atom = sum(float(g.energy) for g in train) / sum(g.num_nodes for g in train)
    assert np.isclose(out["energy_per_atom"], e_atom)
    assert {f"force_mae_{k}" for k in emt.KINDS} <= set(out)
    # hotter MD has larger forces
    assert out["force_mae_md1000"] > out["force_mae_md300"] > 50


def test_emt_without_ase_says_how_to_install(monkeypatch):
    from escn.datasets import emt

    monkeypatch.setitem(sys.modules, "ase", None)
    with pytest.raises(ImportError, match=r"pip install escn\[ase\]"):
        emt.generate_emt(use_cache=False)


def test_nbody_speed_and_centroid_inputs_are_e3_equivariant_and_predict(tmp_path):
    from escn.models import ESCN
    from escn.testing import equivariance_error

    plain = nbody.nbody_task_graphs("train", num_traj=3, cache_dir=tmp_path, dtype=torch.float64)
    cent = nbody.nbody_task_graphs(
        "train", num_traj=3, cache_dir=tmp_path, dtype=torch.float64, inputs="velocity_centroid"
    )
    speed = nbody.nbody_task_graphs(
        "train", num_traj=3, cache_dir=tmp_path, dtype=torch.float64, inputs="speed_velocity"
    )
    for g, h, v in zip(plain, cent, speed):
        assert torch.equal(v.node_features, h.node_features[:, :4])  # speed, velocity
        assert h.node_features.shape == (5, 7)
        assert torch.equal(h.node_features[:, 1:4], g.node_features)
        assert torch.allclose(h.node_features[:, 0], g.node_features.norm(dim=1), rtol=0, atol=1e-15)
        assert torch.allclose(h.node_features[:, 4:] + g.pos.mean(dim=0), g.pos, rtol=0, atol=1e-14)

    g0 = cent[0]
    for name in ("speed_velocity", "velocity_centroid"):

        def inputs(pos, vel, name=name):
            g = nbody.nbody_graphs(
                {"pos": pos[None], "vel": vel[None], "charges": torch.ones(1, 5), "target": pos[None]},
                dtype=torch.float64,
            )
            return nbody._node_inputs(g, name)[0].node_features

        errs = equivariance_error(
            inputs, [g0.pos, g0.node_attrs["vel"]], ["cartesian_points", "1o"], nbody.NODE_INPUTS[name]
        )
        assert max(errs.values()) < 1e-12, (name, errs)

    # a model taking these inputs predicts through the documented call, E(3)-equivariantly
    torch.manual_seed(0)
    model = ESCN(
        num_atom_types=2,
        lmax=1,
        mmax=1,
        channels=4,
        num_layers=1,
        cutoff=20.0,
        node_input_irreps="1x0e + 2x1o",
        outputs=["node_vectors"],
    ).double()
    d = nbody.load_nbody("train", 3, cache_dir=tmp_path)
    q = torch.from_numpy(d["charges"])

    def predict(pos, vel):
        return torch.from_numpy(nbody.predict_positions(model, pos.numpy(), vel.numpy(), q.numpy()))

    errs = equivariance_error(
        predict,
        [torch.from_numpy(d["pos"]), torch.from_numpy(d["vel"])],
        ["cartesian_points", "1o"],
        "cartesian_points",
    )
    assert max(errs.values()) < 1e-10, errs
    with pytest.raises(ValueError, match="inputs"):
        nbody.nbody_task_graphs("train", num_traj=3, cache_dir=tmp_path, inputs="centroid")
    other = ESCN(
        num_atom_types=2, lmax=1, channels=4, num_layers=1, node_input_irreps="2x0e", outputs=["node_vectors"]
    ).double()
    with pytest.raises(ValueError, match="node inputs"):
        nbody.predict_positions(other, d["pos"], d["vel"], d["charges"])
