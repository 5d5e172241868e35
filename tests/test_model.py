"""The eSCN model: symmetry of energy/forces/stress, conservative forces, batching, smoothness at the cutoff,
bad input."""

from __future__ import annotations

import pytest
import torch

from escn.data import AtomsGraph, collate
from escn.models.escn import ESCN
from escn.o3 import rand_matrix
from escn.testing import CARTESIAN_POINTS, equivariance_error

pytestmark = pytest.mark.usefixtures("float64_default", "single_thread")


def _molecule(n: int = 10, seed: int = 0, num_types: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(n, 3, generator=g) * 1.4
    types = torch.randint(0, num_types, (n,), generator=g)
    return pos, types


def _with_edges_of(batch, pos: torch.Tensor):
    """``batch`` with its positions replaced (its edges kept)."""
    import dataclasses

    return dataclasses.replace(batch, pos=pos)


def _model(**kw) -> ESCN:
    """ESCN, or the task model that takes the task's arguments (type relabellings: n-body; classes: Tetris)."""
    from escn.datasets.nbody_model import NBodyESCN
    from escn.datasets.tetris_model import TetrisESCN

    torch.manual_seed(0)
    args = dict(num_atom_types=3, lmax=6, mmax=2, channels=4, num_layers=2, cutoff=3.0, num_radial=6, radial_hidden=16)
    args.update(kw)
    cls = ESCN
    if "type_permutations" in kw or "type_average_in_training" in kw:
        cls = NBodyESCN
    elif "num_classes" in kw or "mirror_pairs" in kw:
        cls = TetrisESCN
    return cls(**args).eval()


def _energy_forces(model: ESCN):
    def fn(pos: torch.Tensor, types: torch.Tensor):
        out = model(collate([AtomsGraph(pos=pos, atom_types=types)]).with_radius_graph(model.cutoff))
        return out["energy"], out["forces"]

    return fn


@pytest.mark.parametrize("mmax,radial_basis", [(2, "bessel"), (6, "gaussian")])
def test_energy_invariant_forces_equivariant_gate_l6(mmax, radial_basis):
    model = _model(mmax=mmax, radial_basis=radial_basis)
    pos, types = _molecule()
    errors = equivariance_error(
        _energy_forces(model),
        [pos, types],
        [CARTESIAN_POINTS, None],
        ["0e", "1o"],
        trials=2,
        generator=torch.Generator().manual_seed(1),
    )
    assert max(errors.values()) <= 1e-12, errors
    e, f = _energy_forces(model)(pos, types)
    assert e.abs().item() > 1e-3 and f.abs().max().item() > 1e-3  # not trivially zero


def test_s2_activation_error_is_small_and_stated():
    # measured with this model (L = 6, mmax = 2, default grid 14 x 10) on molecules 0..3: rotation and reflection
    # errors 1.3e-7, 6.3e-6, 6.0e-7, 7.9e-6 (energies 1.6 to 9, forces up to 0.8); translations exact (~1e-15)
    model = _model(activation="s2")
    worst = 0.0
    for seed in (0, 3):
        pos, types = _molecule(seed=seed)
        errors = equivariance_error(
            _energy_forces(model),
            [pos, types],
            [CARTESIAN_POINTS, None],
            ["0e", "1o"],
            trials=2,
            generator=torch.Generator().manual_seed(1),
        )
        assert errors["rotation"] < 3e-5 and errors["reflection"] < 3e-5, errors
        assert errors["translation"] < 1e-12
        worst = max(worst, errors["rotation"])
    assert worst > 1e-9  # the grid activation is only approximately equivariant


def test_permutation_of_atoms():
    model = _model()
    pos, types = _molecule()
    perm = torch.randperm(pos.shape[0], generator=torch.Generator().manual_seed(3))
    e1, f1 = _energy_forces(model)(pos, types)
    e2, f2 = _energy_forces(model)(pos[perm], types[perm])
    assert (e1 - e2).abs().max() < 1e-10
    assert (f1[perm] - f2).abs().max() < 1e-10


def test_forces_equal_finite_differences():
    model = _model(mmax=3, lmax=4)
    pos, types = _molecule(8)
    fn = _energy_forces(model)
    _, forces = fn(pos, types)
    h = 1e-5
    for atom, axis in [(0, 0), (3, 1), (5, 2), (7, 1)]:
        dp = torch.zeros_like(pos)
        dp[atom, axis] = h
        fd = -(fn(pos + dp, types)[0] - fn(pos - dp, types)[0]) / (2 * h)
        assert abs(fd.item() - forces[atom, axis].item()) < 1e-6


def test_forces_finite_with_edges_on_the_y_axis():
    model = _model()
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.2, 0.0], [0.0, -1.1, 0.0], [1e-10, 2.3, -1e-10], [1.0, 0.3, 0.2]])
    types = torch.tensor([0, 1, 2, 0, 1])
    e, f = _energy_forces(model)(pos, types)
    assert torch.isfinite(f).all()
    h = 1e-5
    dp = torch.zeros_like(pos)
    dp[1, 1] = h
    fd = -(_energy_forces(model)(pos + dp, types)[0] - _energy_forces(model)(pos - dp, types)[0]) / (2 * h)
    assert abs(fd.item() - f[1, 1].item()) < 1e-6


@pytest.mark.parametrize("activation", ["gate", "s2"])
def test_equivariance_with_edges_on_the_poles(activation):
    # edges exactly along +y and -y (the frames' special axis) and within 1e-10 of it, in both charts
    model = _model(activation=activation, s2_resolution=(14, 13) if activation == "s2" else None)
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.2, 0.0], [0.0, -1.1, 0.0], [1e-10, 2.3, -1e-10], [1.0, 0.3, 0.2]])
    types = torch.tensor([0, 1, 2, 0, 1])
    errors = equivariance_error(
        _energy_forces(model),
        [pos, types],
        [CARTESIAN_POINTS, None],
        ["0e", "1o"],
        trials=2,
        generator=torch.Generator().manual_seed(3),
    )
    bar = 1e-12 if activation == "gate" else 1e-5  # the S2 grid is approximately equivariant (its stated error)
    assert max(errors.values()) <= bar, errors


def test_batch_equals_graphs_alone():
    model = _model()
    graphs = [AtomsGraph(pos=p, atom_types=t) for p, t in (_molecule(6, 1), _molecule(9, 2), _molecule(4, 5))]
    out = model(collate(graphs).with_radius_graph(model.cutoff))
    start = 0
    for b, g in enumerate(graphs):
        alone = model(collate([g]).with_radius_graph(model.cutoff))
        assert abs(out["energy"][b] - alone["energy"][0]) < 1e-12
        assert (out["forces"][start : start + g.num_nodes] - alone["forces"]).abs().max() < 1e-12
        start += g.num_nodes


def test_energy_continuous_across_the_cutoff():
    model = _model(cutoff=2.5)
    pos, types = _molecule(6, 7)
    pos = pos[pos.norm(dim=1).argsort()][:5] * 0.5  # a compact cluster ...
    far = torch.tensor([[0.0, 0.0, 0.0]])
    d0 = pos.norm(dim=1).max().item() + 2.5  # ... and an atom just at the cutoff of the outermost one
    direction = pos[pos.norm(dim=1).argmax()] / pos.norm(dim=1).max()
    energies, edges = [], []
    for delta in (-1e-7, -1e-9, 1e-9, 1e-7):
        p = torch.cat([pos, far + direction * (d0 + delta)])
        g = AtomsGraph(pos=p, atom_types=torch.tensor([0, 1, 2, 0, 1, 2])).with_radius_graph(2.5)
        edges.append(g.num_edges)
        energies.append(model(collate([g]).with_radius_graph(model.cutoff), compute_forces=False)["energy"].item())
    assert edges[1] == edges[2] + 2  # the pair (both directions) really crosses the cutoff in the middle
    # an edge appears between the two middle positions; the energy moves by O(delta^3), nowhere near 1e-8
    assert max(abs(a - b) for a, b in zip(energies, energies[1:])) < 1e-8


def _periodic(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cell = torch.eye(3) * 3.2 + torch.randn(3, 3, generator=g) * 0.2
    pos = torch.rand(5, 3, generator=g, dtype=torch.float64) @ cell
    types = torch.randint(0, 3, (5,), generator=g)
    return pos, types, cell


def test_stress_equals_strain_derivative_and_is_equivariant():
    model = _model(lmax=3, mmax=2, cutoff=2.5)
    pos, types, cell = _periodic()

    def energy_at(strain: torch.Tensor) -> float:
        m = torch.eye(3) + strain
        g = AtomsGraph(pos=pos @ m, atom_types=types, cell=cell @ m)
        return model(collate([g]).with_radius_graph(model.cutoff), compute_forces=False)["energy"].item()

    out = model(
        collate([AtomsGraph(pos=pos, atom_types=types, cell=cell)]).with_radius_graph(model.cutoff), compute_stress=True
    )
    vol = torch.linalg.det(cell).abs().item()
    h = 1e-6
    for i, j in [(0, 0), (1, 2), (2, 1), (2, 2)]:
        s = torch.zeros(3, 3)
        s[i, j] = s[j, i] = h / 2 if i != j else h
        fd = (energy_at(s) - energy_at(-s)) / (2 * h) / vol
        assert abs(fd - out["stress"][0, i, j].item()) < 1e-6
    assert (out["stress"][0] - out["stress"][0].T).abs().max() < 1e-12

    def fn(p: torch.Tensor, c: torch.Tensor):
        o = model(
            collate([AtomsGraph(pos=p, atom_types=types, cell=c)]).with_radius_graph(model.cutoff), compute_stress=True
        )
        return o["energy"], o["forces"], o["stress"].reshape(1, 9)

    # cell rows are vectors ("1o"); stress is a symmetric Cartesian 2-tensor = 1o x 1o, checked by hand below
    R = rand_matrix(dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    e2, f2, s2 = fn(pos @ R.T, cell @ R.T)
    assert abs(e2 - out["energy"]).max() < 1e-10
    assert (f2 - out["forces"] @ R.T).abs().max() < 1e-10
    assert (s2.reshape(3, 3) - R @ out["stress"][0] @ R.T).abs().max() < 1e-10


def test_node_vector_head_with_velocity_inputs_is_equivariant():
    model = _model(outputs=["node_vectors"], node_input_irreps="1x0e+1x1o", num_atom_types=1)
    g = torch.Generator().manual_seed(2)
    pos = torch.randn(5, 3, generator=g)
    feats = torch.randn(5, 4, generator=g)  # charge (0e) then velocity (1o)

    def fn(p: torch.Tensor, f: torch.Tensor):
        return model(collate([AtomsGraph(pos=p, node_features=f)]).with_radius_graph(model.cutoff))["node_vectors"]

    errors = equivariance_error(fn, [pos, feats], [CARTESIAN_POINTS, "1x0e+1x1o"], "1o", trials=2, generator=g)
    assert max(errors.values()) <= 1e-12, errors
    assert fn(pos, feats).abs().max() > 1e-3


def test_inverse_distance_features():
    model = _model(
        outputs=["node_vectors"],
        node_input_irreps="1x1o",
        num_atom_types=2,
        lmax=1,
        mmax=1,
        inverse_distance_powers=2,
        inverse_distance_scale=0.5,
    )
    r = torch.tensor([0.5, 2.0])
    feats = model.backbone.radial_features(r)
    assert feats.shape == (2, 6 + 2)
    assert torch.equal(feats[:, :6], model.backbone.radial_basis(r))
    assert torch.allclose(
        feats[:, 6:], torch.tensor([[0.5, 0.25], [0.2, 0.04]]), rtol=1e-15, atol=0
    )  # a/(r+a), squared
    assert model.backbone.blocks[0].radial.dims[0] == 6 + 2 + 2 * 8  # radial basis, two powers, both type embeddings
    g = torch.Generator().manual_seed(3)
    pos, vel, types = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g), torch.tensor([0, 1, 1, 0, 1])

    def fn(p: torch.Tensor, v: torch.Tensor, t: torch.Tensor):
        return model(collate([AtomsGraph(pos=p, atom_types=t, node_features=v)]).with_radius_graph(model.cutoff))[
            "node_vectors"
        ]

    errors = equivariance_error(fn, [pos, vel, types], [CARTESIAN_POINTS, "1x1o", None], "1o", trials=2, generator=g)
    assert max(errors.values()) <= 1e-12, errors
    # the features change the function (the extra MLP inputs are used)
    plain = _model(outputs=["node_vectors"], node_input_irreps="1x1o", num_atom_types=2, lmax=1, mmax=1)
    assert (
        fn(pos, vel, types)
        - plain(collate([AtomsGraph(pos=pos, atom_types=types, node_features=vel)]).with_radius_graph(plain.cutoff))[
            "node_vectors"
        ]
    ).abs().max() > 1e-6
    with pytest.raises(ValueError, match="inverse_distance_powers"):
        ESCN(inverse_distance_powers=-1)
    with pytest.raises(ValueError, match="inverse_distance_scale"):
        ESCN(inverse_distance_scale=0.0)


def test_pseudo_features_keep_reflection_symmetry():
    model = _model(pseudo=True, lmax=3, mmax=2)
    pos, types = _molecule(7)
    errors = equivariance_error(_energy_forces(model), [pos, types], [CARTESIAN_POINTS, None], ["0e", "1o"], trials=1)
    assert max(errors.values()) <= 1e-12, errors


def test_float32_energy_close_to_float64():
    model64 = _model()
    model32 = _model().float()
    pos, types = _molecule()
    e64, f64 = _energy_forces(model64)(pos, types)
    e32, f32 = _energy_forces(model32)(pos.float(), types)
    # measured: energy 1e-6, forces 2e-6 absolute
    assert abs(e32.double() - e64).max() < 2e-5
    assert (f32.double() - f64).abs().max() < 2e-5


def test_model_config_rebuilds_the_architecture():
    model = _model(activation="s2", mmax=3)
    clone = ESCN(**model.config).eval()
    clone.load_state_dict(model.state_dict())
    pos, types = _molecule()
    assert abs(_energy_forces(model)(pos, types)[0] - _energy_forces(clone)(pos, types)[0]).max() < 1e-12


def test_bad_input():
    model = _model()
    pos, types = _molecule(4)
    # value checks happen where the batch is made (collate, the model's check_batch), not in forward
    with pytest.raises(ValueError, match=r"unknown atom types \[5\] in batch.atom_types: this model knows types 0..2"):
        model.check_batch(
            collate([AtomsGraph(pos=pos, atom_types=torch.tensor([0, 1, 5, 0]))]).with_radius_graph(model.cutoff)
        )
    with pytest.raises(ValueError, match=r"unknown atom types \[-1\] in batch.atom_types: types must be >= 0"):
        collate([AtomsGraph(pos=pos, atom_types=torch.tensor([0, 1, -1, 0]))])
    bad = pos.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"batch.pos has NaN or infinite values \(first at atom 2\)"):
        collate([AtomsGraph(pos=bad, atom_types=types)])
    with pytest.raises(ValueError, match=r"batch.pos has NaN or infinite values \(first at atom 2\)"):
        model.check_batch(
            _with_edges_of(collate([AtomsGraph(pos=pos, atom_types=types)]).with_radius_graph(model.cutoff), bad)
        )
    flat = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0]])
    with pytest.raises(ValueError, match="zero volume"):
        collate([AtomsGraph(pos=pos, atom_types=types, cell=flat)])
    with pytest.raises(ValueError, match="shape"):
        AtomsGraph(pos=torch.zeros(4, 2))
    with pytest.raises(TypeError, match="Batch"):
        model(pos)
    with pytest.raises(ValueError, match="node_features"):
        _model(node_input_irreps="1x1o", num_atom_types=1)(collate([AtomsGraph(pos=pos)]).with_radius_graph(3.0))
    with pytest.raises(ValueError, match="activation"):
        ESCN(activation="relu")
    with pytest.raises(ValueError, match="lmax"):
        ESCN(lmax=-1)
    with pytest.raises(ValueError, match="radial_basis"):
        ESCN(radial_basis="chebyshev")
    with pytest.raises(ValueError, match="s2"):
        ESCN(activation="s2", pseudo=True)
    with pytest.raises(ValueError, match="periodic"):
        model(collate([AtomsGraph(pos=pos, atom_types=types)]).with_radius_graph(model.cutoff), compute_stress=True)


def test_graph_outputs_with_a_pseudo_scalar_flip_under_reflection():
    # a pseudo-scalar needs three layers: layer 1 makes natural features, layer 2 pseudo ones at m != 0 in each
    # edge frame, layer 3 sees them from other frames (m = 0 parts) and can reach 0o
    model = _model(
        pseudo=True, lmax=2, mmax=2, num_layers=3, outputs=["graph_outputs"], graph_output_irreps="3x0e+1x0o"
    )
    pos, types = _molecule(6, 11)
    pos = pos * 0.6  # dense enough that every atom sees the others: a chiral cluster

    def fn(p: torch.Tensor, t: torch.Tensor):
        return model(collate([AtomsGraph(pos=p, atom_types=t)]).with_radius_graph(model.cutoff))["graph_outputs"]

    errors = equivariance_error(fn, [pos, types], [CARTESIAN_POINTS, None], "3x0e+1x0o", trials=2)
    assert max(errors.values()) <= 1e-10, errors
    y, y_mirror = fn(pos, types), fn(-pos, types)
    assert abs(y[0, 3].item()) > 1e-4  # a chiral cloud has a nonzero pseudo-scalar ...
    assert (y_mirror[0, 3] + y[0, 3]).abs() < 1e-12  # ... which changes sign in the mirror
    with pytest.raises(ValueError, match="pseudo=True"):
        _model(outputs=["graph_outputs"], graph_output_irreps="1x0o")


def test_class_logits_mirror_pairs_swap_under_reflection():
    model = _model(
        pseudo=True, lmax=2, mmax=2, num_layers=3, outputs=["class_logits"], num_classes=5, mirror_pairs=[[3, 1]]
    )
    pos, types = _molecule(6, 11)
    pos = pos * 0.6

    def fn(p: torch.Tensor):
        return model(collate([AtomsGraph(pos=p, atom_types=types)]).with_radius_graph(model.cutoff))["class_logits"][0]

    y, y_mirror = fn(pos), fn(-pos)
    R = rand_matrix(dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    assert (fn(pos @ R.T) - y).abs().max() < 1e-10  # invariant under rotations
    assert abs(y[3] - y[1]) > 1e-4  # the pair differs for a chiral cluster ...
    swap = torch.tensor([0, 3, 2, 1, 4])
    assert (y_mirror - y[swap]).abs().max() < 1e-12  # ... and a reflection swaps exactly that pair
    with pytest.raises(ValueError, match="pseudo=True"):
        _model(outputs=["class_logits"], num_classes=3, mirror_pairs=[[0, 1]])
    with pytest.raises(ValueError, match="disjoint pairs"):
        _model(pseudo=True, outputs=["class_logits"], num_classes=3, mirror_pairs=[[0, 0]])


def test_set_atom_energies_adds_one_offset_per_atom():
    torch.set_default_dtype(torch.float64)
    try:
        model = _model(energy_shift=0.25)
        pos, types = _molecule(7, seed=4, num_types=3)
        batch = collate([AtomsGraph(pos=pos, atom_types=types)]).with_radius_graph(model.cutoff)
        before = model(batch, compute_forces=False)["energy"]
        offsets = torch.tensor([-1.5, 0.75, 2.0])
        model.set_atom_energies(offsets)
        after = model(batch, compute_forces=False)["energy"]
        # the offsets replace the zero-initialised per-type term; energy_shift stays accounted for once
        assert (after - before - offsets[types].sum() + 0.25 * len(types)).abs().max() <= 1e-12
        with pytest.raises(ValueError, match="per_type must have shape"):
            model.set_atom_energies(torch.zeros(2))
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("activation", ["gate", "s2"])
def test_graph_without_edges(activation):
    """A lone atom (no neighbour within the cutoff) has a finite energy, exactly zero force, and the same
    energy inside a batch with another graph."""
    model = _model(activation=activation, lmax=2)
    lone = AtomsGraph(pos=torch.zeros(1, 3), atom_types=torch.tensor([1]))
    out = model(collate([lone]).with_radius_graph(model.cutoff))
    assert torch.isfinite(out["energy"]).all()
    assert out["forces"].abs().max() == 0.0
    pos, types = _molecule(5, seed=2)
    both = model(collate([lone, AtomsGraph(pos=pos, atom_types=types)]).with_radius_graph(model.cutoff))
    assert (both["energy"][0] - out["energy"][0]).abs() <= 1e-5


def test_type_permutations_make_outputs_exactly_invariant():
    """The charged n-body system with all charges negated: swapping types 0 <-> 1 changes no output."""
    model = _model(
        outputs=["node_vectors"], node_input_irreps="1x1o", num_atom_types=2, lmax=2, mmax=1, type_permutations=[[1, 0]]
    )
    plain = _model(outputs=["node_vectors"], node_input_irreps="1x1o", num_atom_types=2, lmax=2, mmax=1)
    g = torch.Generator().manual_seed(5)
    pos, vel = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    types = torch.tensor([0, 1, 1, 0, 1])

    def run(m: ESCN, t: torch.Tensor) -> torch.Tensor:
        return m(collate([AtomsGraph(pos=pos, atom_types=t, node_features=vel)]).with_radius_graph(m.cutoff))[
            "node_vectors"
        ]

    out, swapped = run(model, types), run(model, 1 - types)
    assert (out - swapped).abs().max() <= 1e-12 and out.abs().max() > 1e-3
    # the same weights without the symmetry are not invariant; with it, the output is their group average
    assert (run(plain, types) - run(plain, 1 - types)).abs().max() > 1e-4
    assert (out - 0.5 * (run(plain, types) + run(plain, 1 - types))).abs().max() <= 1e-12

    def fn(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return model(collate([AtomsGraph(pos=p, atom_types=types, node_features=v)]).with_radius_graph(model.cutoff))[
            "node_vectors"
        ]

    errors = equivariance_error(fn, [pos, vel], [CARTESIAN_POINTS, "1x1o"], "1o", trials=2, generator=g)
    assert max(errors.values()) <= 1e-10, errors
    assert type(model)(**model.config).config["type_permutations"] == [[1, 0]]


def test_type_average_in_eval_mode_only():
    kw = dict(
        outputs=["node_vectors"], node_input_irreps="1x1o", num_atom_types=2, lmax=1, mmax=1, type_permutations=[[1, 0]]
    )
    model = _model(**kw, type_average_in_training=False)
    plain = _model(outputs=["node_vectors"], node_input_irreps="1x1o", num_atom_types=2, lmax=1, mmax=1)
    g = torch.Generator().manual_seed(6)
    batch = collate(
        [
            AtomsGraph(
                pos=torch.randn(5, 3, generator=g),
                atom_types=torch.tensor([0, 1, 1, 0, 1]),
                node_features=torch.randn(5, 3, generator=g),
            )
        ]
    ).with_radius_graph(3.0)
    flipped = collate(
        [AtomsGraph(pos=batch.pos, atom_types=1 - batch.atom_types, node_features=batch.node_features)]
    ).with_radius_graph(3.0)
    model.train(), plain.train()
    assert (model(batch)["node_vectors"] - plain(batch)["node_vectors"]).abs().max() <= 1e-12  # one pass
    model.eval()
    assert (model(batch)["node_vectors"] - model(flipped)["node_vectors"]).abs().max() <= 1e-12  # averaged
    with pytest.raises(TypeError, match="type_average_in_training"):
        _model(**kw, type_average_in_training=1)


def test_type_permutations_average_energy_offsets():
    model = _model(type_permutations=[[1, 0, 2]])
    model.set_atom_energies(torch.tensor([1.0, 3.0, -2.0]))
    pos, types = _molecule(6, seed=7, num_types=3)
    e = model(collate([AtomsGraph(pos=pos, atom_types=types)]).with_radius_graph(model.cutoff), compute_forces=False)[
        "energy"
    ]
    swapped = torch.tensor([1, 0, 2])[types]
    e_swapped = model(
        collate([AtomsGraph(pos=pos, atom_types=swapped)]).with_radius_graph(model.cutoff), compute_forces=False
    )["energy"]
    assert (e - e_swapped).abs().max() <= 1e-12


@pytest.mark.parametrize(
    "perms, error, message",
    [
        ([[0, 0, 1]], ValueError, "not a permutation"),
        ([[1, 2, 0]], ValueError, "form a group"),  # a 3-cycle without its square
        ("10", TypeError, "list of permutations"),
        ([[1.0, 0.0, 2.0]], TypeError, "lists of ints"),
    ],
)
def test_type_permutations_bad_input(perms, error, message):
    with pytest.raises(error, match=message):
        _model(type_permutations=perms)


def test_executor_follows_the_argument_and_gives_the_same_numbers():
    """The compiled kernels run by default, in eval and in training on forces; PyTorch ops with
    ``executor="torch"`` (the reference), set at construction or by ``set_executor``, never changed by forward.
    Both give the same energies, forces and force-loss gradients."""
    from escn import native
    from escn.nn import SO2Conv
    from escn.nn.edge_rotation import EdgeRotation

    if not native.available():
        pytest.skip(f"compiled kernels unavailable: {native.unavailable_reason()}")
    torch.manual_seed(0)
    reference = _model(channels=20, executor="torch")  # channels past one vector tile of the kernel
    torch.manual_seed(0)
    model = _model(channels=20)
    model.load_state_dict(reference.state_dict())
    layers = [m for m in model.modules() if isinstance(m, (EdgeRotation, SO2Conv))]
    assert layers and {m.executor for m in layers} == {"native"} == {model.executor}
    assert {m.executor for m in reference.modules() if isinstance(m, (EdgeRotation, SO2Conv))} == {"torch"}
    assert "executor" not in model.config and model.config == reference.config
    pos, types = _molecule(12, seed=3)
    batch = collate([AtomsGraph(pos=pos, atom_types=types)]).with_radius_graph(model.cutoff)
    rotation = next(m for m in model.modules() if isinstance(m, EdgeRotation))
    calls = []
    original = rotation._use_native
    rotation._use_native = lambda x, frame: calls.append(original(x, frame)) or calls[-1]

    def run(m, train: bool):
        m.train(train)
        m.zero_grad()
        before = dict(vars(m))
        out = m(batch)
        assert vars(m).keys() == before.keys()  # forward stores nothing on the model
        grads = []
        if train:  # training on forces differentiates the forces again
            (out["energy"].sum() + (out["forces"] ** 2).sum()).backward()
            grads = [p.grad.clone() for p in m.parameters() if p.grad is not None]
            assert grads
        return out["energy"].detach(), out["forces"].detach(), grads

    for train in (False, True):
        ref, got = run(reference, train), run(model, train)
        for a, b in [*zip(ref[:2], got[:2]), *zip(ref[2], got[2])]:
            assert (a - b).abs().max() <= 1e-10 * max(a.abs().max(), 1.0)
    assert calls and all(calls)
    calls.clear()
    assert model.set_executor("torch") is model and {m.executor for m in layers} == {"torch"} == {model.executor}
    for train in (False, True):
        run(model, train)
    assert calls and not any(calls)  # the setting survives forward (no per-forward reset)
    with pytest.raises(AttributeError, match=r"ESCN\.native_rotation was removed; pass executor="):
        model.native_rotation = False
    with pytest.raises(ValueError, match="executor must be one of"):
        model.set_executor("kernels")
    with pytest.raises(ValueError, match="executor must be one of"):
        _model(executor="gpu")


def test_state_dict_of_the_single_module_layout_loads_with_identical_outputs():
    # checkpoints written before the backbone was its own module name its children at the top level
    model = _model()

    def earlier(k: str) -> str:  # the key names before the backbone and the heads were modules of their own
        return (
            k.replace("backbone.", "", 1)
            .replace("energy_head.mlp.", "energy_head.", 1)
            .replace("energy_head.atom_energy.", "atom_energy.", 1)
        )

    old_style = {earlier(k): v for k, v in model.state_dict().items()}
    assert "atom_energy.weight" in old_style and "energy_head.weights.0" in old_style
    assert any(k.startswith("blocks.0.") for k in old_style) and not any(k.startswith("backbone.") for k in old_style)
    clone = _model()
    for p in clone.parameters():
        torch.nn.init.normal_(p)
    clone.load_state_dict(old_style)
    pos, types = _molecule()
    e0, f0 = _energy_forces(model)(pos, types)
    e1, f1 = _energy_forces(clone)(pos, types)
    assert torch.equal(e0, e1) and torch.equal(f0, f1)


def test_task_arguments_moved_out_of_the_core_model():
    from escn.models import build_model

    # configs of earlier versions hold the moved arguments at their unused values: they still build
    model = build_model(
        "escn",
        num_atom_types=2,
        lmax=1,
        channels=2,
        num_layers=1,
        type_permutations=[],
        type_average_in_training=True,
        num_classes=None,
        mirror_pairs=[],
    )
    assert "type_permutations" not in model.config and "num_classes" not in model.config
    with pytest.raises(
        ValueError,
        match=r"type_permutations=\[\[1, 0\]\] moved to the task model "
        r"'escn.datasets.nbody_model:NBodyESCN'",
    ):
        build_model("escn", num_atom_types=2, lmax=1, channels=2, num_layers=1, type_permutations=[[1, 0]])
    with pytest.raises(
        ValueError, match="num_classes=8 moved to the task model 'escn.datasets.tetris_model:TetrisESCN'"
    ):
        build_model("escn", num_atom_types=1, lmax=1, channels=2, num_layers=1, num_classes=8)
    task = build_model(
        "escn.datasets.nbody_model:NBodyESCN",
        num_atom_types=2,
        lmax=1,
        channels=2,
        num_layers=1,
        type_permutations=[[1, 0]],
    )
    assert task.config["type_permutations"] == [[1, 0]]


@pytest.mark.parametrize("activation,pseudo", [("gate", False), ("s2", False), ("gate", True)])
def test_first_block_scalar_shortcut_equals_the_general_path(activation, pseudo):
    """The first block sees only l = 0 inputs and takes a shortcut (natural parity: only conv1's first stage,
    no rotation into the frame); the general path on the same zero-padded input gives the same numbers."""
    model = _model(activation=activation, pseudo=pseudo)
    first = model.backbone.blocks[0]
    assert first.scalar_input
    assert first._scalar_stage_input == (not pseudo)
    pos, types = _molecule()
    energy, forces = _energy_forces(model)(pos, types)
    first.scalar_input = False
    energy_general, forces_general = _energy_forces(model)(pos, types)
    assert (energy - energy_general).abs().max().item() <= 1e-12 * energy.abs().max().item()
    assert (forces - forces_general).abs().max().item() <= 1e-12 * forces.abs().max().item()
    assert forces.abs().max().item() > 1e-3
