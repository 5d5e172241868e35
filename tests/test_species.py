"""Chemical species of force-field models: atomic numbers in the data, ``atomic_numbers`` in the model config and
checkpoint, the mapping to type indices where batches are made (training pipeline, ASE calculator), and the
identity mapping of checkpoints written before models stored species."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Dict

import pytest
import torch
from torch import nn

from escn.checkpoint import FORMAT, VERSION, atomic_save, load_checkpoint
from escn.data import AtomsGraph, collate
from escn.data.species import SpeciesMap, check_atomic_numbers, element_name, species_of
from escn.models import ESCN, load
from escn.models.registry import accepts_argument, register_model
from escn.train import ConfigError, LossTerm, Trainer, evaluate_model, train
from escn.train.data import PreparedDataset, SpeciesMapped, training_species
from escn.train.toy import lj_clusters

SMALL = dict(
    lmax=1,
    mmax=1,
    channels=4,
    num_layers=1,
    cutoff=2.5,
    num_radial=4,
    radial_hidden=8,
    type_embedding_dim=2,
    avg_num_neighbors=4.0,
)


@pytest.fixture(autouse=True)
def _float64_one_thread():
    old_dtype, old_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_default_dtype(old_dtype)
        torch.set_num_threads(old_threads)


def _model(**kw: Any) -> ESCN:
    torch.manual_seed(0)
    return ESCN(**{**SMALL, **kw}).double().eval()


def _energy(model: nn.Module, graph: AtomsGraph, types: list) -> float:
    g = AtomsGraph(pos=graph.pos.double(), atom_types=torch.tensor(types), cell=graph.cell, pbc=graph.pbc)
    return float(model(collate([g]).with_radius_graph(model.cutoff))["energy"].detach()[0])


# --------------------------------------------------------------------------- helpers of escn.data.species
def test_atomic_number_lists_are_checked():
    assert check_atomic_numbers([8, 1]) == [8, 1]  # the order is kept: it is the type order
    assert check_atomic_numbers(torch.tensor([29])) == [29]
    assert check_atomic_numbers((0, 118)) == [0, 118]
    with pytest.raises(TypeError, match="atomic_numbers"):
        check_atomic_numbers("Cu")
    with pytest.raises(TypeError, match="ints"):
        check_atomic_numbers([29.0])
    with pytest.raises(TypeError, match="ints"):
        check_atomic_numbers([True])
    with pytest.raises(ValueError, match="at least one"):
        check_atomic_numbers([])
    with pytest.raises(ValueError, match=r"\[0, 118\], got 119"):
        check_atomic_numbers([1, 119])
    with pytest.raises(ValueError, match=r"H \(Z=1\) more than once"):
        check_atomic_numbers([1, 8, 1])
    assert element_name(29) == "Cu (Z=29)" and element_name(0) == "X (Z=0)" and element_name(200) == "Z=200"


def test_species_of_data_are_the_sorted_distinct_atomic_numbers():
    assert species_of([torch.tensor([8, 1, 1]), None, torch.tensor([6, 8])]) == [1, 6, 8]
    assert species_of([None, None]) is None
    with pytest.raises(ValueError, match="not atomic numbers"):
        species_of([torch.tensor([1, 300])])


def test_species_map_gives_positions_and_names_unknown_elements():
    m = SpeciesMap([8, 1])  # O -> 0, H -> 1
    assert m(torch.tensor([1, 8, 1])).tolist() == [1, 0, 1]
    assert m(torch.tensor([], dtype=torch.long)).shape == (0,)
    with pytest.raises(ValueError) as err:
        m(torch.tensor([1, 47, 8, 79, 47]), "atoms")
    msg = str(err.value)
    assert "atoms contains Ag (Z=47), Au (Z=79)" in msg and "knows O (Z=8), H (Z=1)" in msg
    with pytest.raises(ValueError, match=r"Z=500"):
        m(torch.tensor([500]))
    with pytest.raises(ValueError, match=r"Z=-1"):
        m(torch.tensor([-1]))
    with pytest.raises(TypeError, match="integer tensor"):
        m(torch.tensor([1.0]))


# --------------------------------------------------------------------------- the model config
def test_escn_stores_its_species_in_the_config():
    model = _model(atomic_numbers=[29, 8])
    assert model.atomic_numbers == (29, 8) and model.num_atom_types == 2
    assert model.config["atomic_numbers"] == [29, 8] and model.config["num_atom_types"] == 2
    again = ESCN(**model.config)
    assert again.atomic_numbers == (29, 8) and again.backbone.type_embedding.num_embeddings == 2
    plain = ESCN(**SMALL)
    assert plain.atomic_numbers is None and plain.config["atomic_numbers"] is None and plain.num_atom_types == 100
    assert ESCN(**SMALL, num_atom_types=3).num_atom_types == 3
    with pytest.raises(ValueError, match=r"num_atom_types=30 disagrees with atomic_numbers=\[29\]"):
        ESCN(**SMALL, num_atom_types=30, atomic_numbers=[29])
    with pytest.raises(ValueError, match="more than once"):
        ESCN(**SMALL, atomic_numbers=[29, 29])
    assert accepts_argument("escn", "atomic_numbers") and not accepts_argument(nn.Linear, "atomic_numbers")


# --------------------------------------------------------------------------- ASE calculator
ase = pytest.importorskip("ase")
from ase import Atoms  # noqa: E402
from ase.build import bulk, molecule  # noqa: E402

from escn.ase import Calculator  # noqa: E402


def test_calculator_maps_atomic_numbers_through_the_model_species():
    model = _model(atomic_numbers=[8, 1], cutoff=3.0)  # O -> 0, H -> 1
    water = molecule("H2O")  # numbers [8, 1, 1]
    water.calc = Calculator(model)
    ref = _energy(model, AtomsGraph.from_ase(water), [0, 1, 1])
    assert abs(water.get_potential_energy() - ref) <= 1e-12
    swapped = _energy(model, AtomsGraph.from_ase(water), [1, 0, 0])  # what raw order would have given
    assert abs(ref - swapped) > 1e-6
    # an element the model does not know: a clear error naming it and the known ones
    water.set_atomic_numbers([8, 1, 6])
    with pytest.raises(ValueError) as err:
        water.get_potential_energy()
    assert "atoms contains C (Z=6)" in str(err.value) and "it knows O (Z=8), H (Z=1)" in str(err.value)


def test_argon_lj_model_runs_on_argon_atoms():
    model = _model(atomic_numbers=[18])
    g = lj_clusters(n=1, min_atoms=5, max_atoms=5, seed=3)[0]
    atoms = Atoms("Ar5", positions=g.pos.numpy())
    atoms.calc = Calculator(model)
    assert abs(atoms.get_potential_energy() - _energy(model, g, [0] * 5)) <= 1e-12
    with pytest.raises(ValueError, match=r"contains X \(Z=0\).*knows Ar \(Z=18\)"):
        Atoms(numbers=[0] * 5, positions=g.pos.numpy(), calculator=Calculator(model)).get_potential_energy()


def test_calculator_needs_species_for_a_model_without_them():
    plain = _model(num_atom_types=30, cutoff=3.0)
    with pytest.raises(ValueError, match=r"stores no chemical species.*Calculator\(model, atomic_numbers="):
        Calculator(plain)
    cu = bulk("Cu", "fcc", a=3.59, cubic=True)
    cu.calc = Calculator(plain, atomic_numbers=list(range(30)))  # explicit identity: type = atomic number
    assert abs(cu.get_potential_energy() - _energy(plain, AtomsGraph.from_ase(cu), [29] * 4)) <= 1e-12
    with pytest.raises(ValueError, match=r"differs from the model's atomic_numbers=\[8, 1\]"):
        Calculator(_model(atomic_numbers=[8, 1]), atomic_numbers=[1, 8])
    assert Calculator(_model(atomic_numbers=[8, 1]), atomic_numbers=[8, 1]).species.atomic_numbers == (8, 1)


# --------------------------------------------------------------------------- checkpoints
def _save(path: Path, model: ESCN, config: Dict[str, Any]) -> Path:
    atomic_save(
        {
            "format": FORMAT,
            "version": VERSION,
            "model_name": "escn",
            "model_config": config,
            "dtype": "float64",
            "model_state": model.state_dict(),
            "ema_state": None,
        },
        path,
    )
    return path


def test_new_checkpoints_restore_the_species_without_warning(tmp_path):
    model = _model(atomic_numbers=[29, 47], cutoff=3.0)
    path = _save(tmp_path / "new.pt", model, model.config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load(path)
    assert loaded.atomic_numbers == (29, 47) and loaded.config == model.config


def test_old_checkpoints_load_with_the_identity_mapping_and_a_warning(tmp_path):
    """A config without the atomic_numbers key (written before species were stored): type index = atomic
    number, as the model was fed then, so the calculator gives the old energies."""
    old_model = _model(num_atom_types=30, cutoff=3.0)
    old_config = {k: v for k, v in old_model.config.items() if k != "atomic_numbers"}
    path = _save(tmp_path / "old.pt", old_model, old_config)
    with pytest.warns(
        UserWarning, match=r"stores no atomic_numbers.*identity mapping atomic_numbers = \[0, \.\.\., 29\]"
    ):
        loaded = load(path)
    assert loaded.atomic_numbers == tuple(range(30))
    cu = bulk("Cu", "fcc", a=3.59, cubic=True).repeat((1, 1, 2))
    cu.rattle(0.05, seed=1)
    cu.calc = Calculator(loaded)
    assert abs(cu.get_potential_energy() - _energy(old_model, AtomsGraph.from_ase(cu), [29] * 8)) <= 1e-12
    # an old two-type model knows "elements" 0 and 1 only: copper is refused by name
    small = _model(num_atom_types=2, cutoff=3.0)
    path2 = _save(tmp_path / "old2.pt", small, {k: v for k, v in small.config.items() if k != "atomic_numbers"})
    with pytest.warns(UserWarning, match="identity"):
        calc = Calculator(str(path2))
    cu.calc = calc
    with pytest.raises(ValueError, match=r"Cu \(Z=29\).*knows X \(Z=0\), H \(Z=1\)"):
        cu.get_potential_energy()


# --------------------------------------------------------------------------- the training pipeline
def test_lj_toy_atoms_are_argon_by_default():
    argon = lj_clusters(n=4, seed=5)
    labels = lj_clusters(n=4, seed=5, num_types=1)  # the old default: plain label 0, same draws
    for a, b in zip(argon, labels):
        assert a.atom_types.tolist() == [18] * a.num_nodes and b.atom_types.tolist() == [0] * b.num_nodes
        assert torch.equal(a.pos, b.pos) and torch.equal(a.energy, b.energy)
    mixed = lj_clusters(n=6, seed=0, atomic_numbers=[36, 18])
    assert species_of(g.atom_types for g in mixed) == [18, 36]
    with pytest.raises(ValueError, match="not both"):
        lj_clusters(n=1, num_types=2, atomic_numbers=[18])
    with pytest.raises(ValueError, match="atomic_numbers"):
        lj_clusters(n=1, atomic_numbers=[18, 18])


class _NoSpecies(nn.Module):
    def __init__(self, num_types: int = 2):
        super().__init__()


register_model("species_test_plain", _NoSpecies)


def test_training_species_rules():
    items = lj_clusters(n=5, seed=0, atomic_numbers=[36, 18])
    energy = {"energy": LossTerm(), "forces": LossTerm()}
    assert training_species("escn", {}, energy, items) == [18, 36]  # from the data, sorted
    assert training_species("escn", {"atomic_numbers": [36, 18, 54]}, energy, items) == [36, 18, 54]  # given
    assert training_species("escn", {"atomic_numbers": None}, energy, items) is None  # explicitly plain labels
    assert training_species("escn", {}, {"class_logits": LossTerm()}, items) is None  # not a force field
    assert training_species("escn", {}, {"e": LossTerm(target="energy")}, items) == [18, 36]
    assert training_species("species_test_plain", {}, energy, items) is None  # the class takes no species
    with pytest.raises(ConfigError, match="model.atomic_numbers"):
        training_species("escn", {"atomic_numbers": [18, 18]}, energy, items)
    bad = [AtomsGraph(pos=torch.zeros(1, 3), atom_types=torch.tensor([150]))]
    with pytest.raises(ConfigError, match="not atomic numbers"):
        training_species("escn", {}, energy, bad)
    with pytest.raises(ConfigError, match=r"data.train item 0 contains Kr \(Z=36\)"):
        training_species("escn", {"atomic_numbers": [18]}, energy, lj_clusters(n=1, atomic_numbers=[36]))
    neon = lj_clusters(n=2, seed=1, atomic_numbers=[10])
    with pytest.raises(ConfigError, match=r"data.valid item 0 contains Ne \(Z=10\)"):
        training_species("escn", {}, energy, items, neon)
    assert training_species("escn", {}, energy, items, lj_clusters(n=2, atomic_numbers=[18])) == [18, 36]
    # a config written for atomic numbers used as types (num_atom_types = 30 for copper) is pointed at the fix
    with pytest.raises(
        ConfigError,
        match=r"num_atom_types = 30, but the training data hold 2 element\(s\), "
        r"Ar \(Z=18\), Kr \(Z=36\)",
    ):
        training_species("escn", {"num_atom_types": 30}, energy, items)
    assert training_species("escn", {"num_atom_types": 2}, energy, items) == [18, 36]


def test_prepared_items_carry_type_indices_and_unknown_elements_fail_by_item():
    items = lj_clusters(n=3, seed=1, atomic_numbers=[36, 18])
    ds = PreparedDataset(items, torch.float64, 2.5, [18, 36])
    for i, g in enumerate(items):
        assert ds[i].atom_types.tolist() == [[18, 36].index(z) for z in g.atom_types.tolist()]
        assert SpeciesMapped(items, [18, 36])[i].atom_types.tolist() == ds[i].atom_types.tolist()
    assert torch.equal(PreparedDataset(items, torch.float64, 2.5)[0].atom_types, items[0].atom_types)
    krypton = AtomsGraph(pos=items[0].pos, atom_types=torch.full_like(items[0].atom_types, 36))
    with pytest.raises(ValueError, match=r"data item 1 contains Kr \(Z=36\).*knows Ar \(Z=18\)"):
        PreparedDataset([items[0], krypton], torch.float64, 2.5, [18, 54])[1]
    with pytest.raises(ValueError, match="data item 0 has no atom_types"):
        PreparedDataset([AtomsGraph(pos=items[0].pos)], torch.float64, 2.5, [18])[0]


def _config(tmp_path: Path, train_source: Any, valid_kwargs: Any = None, **over: Any) -> Dict[str, Any]:
    """A two-step float64 run of a tiny eSCN force field; validation on argon LJ clusters unless told."""
    valid = {"source": "escn.train.toy:lj_clusters", "kwargs": {"n": 3, "seed": 1, **(valid_kwargs or {})}}
    cfg: Dict[str, Any] = {
        "model": {"name": "escn", **SMALL},
        "data": {"train": train_source, "valid": valid},
        "cutoff": 2.5,
        "batch_size": 4,
        "max_steps": 2,
        "dtype": "float64",
        "seed": 0,
        "loss": {"energy": {"weight": 1.0, "per_atom": True}, "forces": 1.0},
        "output_dir": str(tmp_path / "run"),
        "progress": False,
        "threads": 1,
    }
    cfg.update(over)
    return cfg


def test_a_run_on_argon_stores_its_species_and_the_checkpoint_drives_ase(tmp_path):
    cfg = _config(tmp_path, {"source": "escn.train.toy:lj_clusters", "kwargs": {"n": 8, "seed": 0}})
    items = lj_clusters(n=8, seed=0)
    trainer = Trainer(cfg, stream=io.StringIO())
    try:
        # the per-type energy offset starts at the least-squares fit E_g ~ n_g e over the argon clusters (type 0)
        n = torch.tensor([float(g.num_nodes) for g in items])
        e = torch.stack([g.energy for g in items])
        assert (
            abs(float(trainer.model.atom_energy.weight[0, 0].detach()) - float((n * e).sum() / (n * n).sum())) <= 1e-12
        )
        result = trainer.fit()
    finally:
        trainer.close()
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["model_config"]["atomic_numbers"] == [18] and ckpt["model_config"]["num_atom_types"] == 1
    model = load(result.checkpoint)
    assert model.atomic_numbers == (18,)
    assert model.atom_energy.weight.shape == (1, 1)
    # evaluation maps the data's atomic numbers through the model's species
    m = evaluate_model(model, lj_clusters(n=3, seed=2), {"energy": LossTerm()}, cutoff=2.5)
    mapped = [
        AtomsGraph(pos=g.pos, atom_types=torch.zeros_like(g.atom_types), energy=g.energy)
        for g in lj_clusters(n=3, seed=2)
    ]
    plain = ESCN(**{**model.config, "atomic_numbers": None}).double().eval()
    plain.load_state_dict(model.state_dict())
    assert (
        abs(m["mae_energy"] - evaluate_model(plain, mapped, {"energy": LossTerm()}, cutoff=2.5)["mae_energy"]) <= 1e-12
    )
    # and ASE runs it on argon atoms
    atoms = Atoms(symbols=["Ar"] * items[0].num_nodes, positions=items[0].pos.numpy())
    atoms.calc = Calculator(str(result.checkpoint))
    assert abs(atoms.get_potential_energy() - _energy(model, items[0], [0] * items[0].num_nodes)) <= 1e-12
    atoms.set_atomic_numbers([29] + [18] * (len(atoms) - 1))
    with pytest.raises(ValueError, match=r"Cu \(Z=29\).*knows Ar \(Z=18\)"):
        atoms.get_forces()


def test_a_two_element_run_and_a_resume_on_other_elements(tmp_path):
    data = tmp_path / "train.pt"
    torch.save(lj_clusters(n=8, seed=0, atomic_numbers=[36, 18]), data)
    cfg = _config(tmp_path, str(data), max_steps=1)
    first = train(cfg, stream=io.StringIO())
    assert load_checkpoint(first.checkpoint)["model_config"]["atomic_numbers"] == [18, 36]
    # the same file now holds argon and xenon: resuming would read the weights with other elements
    torch.save(lj_clusters(n=8, seed=0, atomic_numbers=[54, 18]), data)
    cfg["max_steps"] = 2
    with pytest.raises(ConfigError, match=r"model.atomic_numbers \(checkpoint: \[18, 36\], now: \[18, 54\]\)"):
        train(cfg, resume=True, stream=io.StringIO())
    # a config naming the species uses them as given; validation data with another element fail by name
    cfg2 = _config(
        tmp_path / "b",
        str(data),
        valid_kwargs={"atomic_numbers": [10]},
        model={"name": "escn", **SMALL, "atomic_numbers": [18, 54, 36]},
    )
    with pytest.raises(
        ConfigError,
        match=r"data.valid item 0 contains Ne \(Z=10\).*knows Ar \(Z=18\), Xe \(Z=54\), "
        r"Kr \(Z=36\)",
    ):
        Trainer(cfg2, stream=io.StringIO())


def test_raw_atomic_numbers_into_a_species_model_name_the_mapping():
    from escn.data import AtomsGraph, collate
    from escn.models import ESCN

    model = ESCN(lmax=1, channels=2, num_layers=1, cutoff=3.0, atomic_numbers=[29])
    batch = collate([AtomsGraph(pos=torch.tensor([[0.0, 0, 0], [1.5, 0, 0]]), atom_types=torch.tensor([29, 29]))])
    with pytest.raises(ValueError, match=r"unknown atom types \[29\].*atomic_numbers=\[29\].*SpeciesMap"):
        model.check_batch(batch.with_radius_graph(3.0))
