"""Extended-XYZ data: target key names, per-frame checks with file and frame in the message, the config's
file sources and splits, ``escn evaluate`` on a file with errors in meV, and the ``max_time`` bound."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

ase_io = pytest.importorskip("ase.io")
from ase import Atoms  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402

from escn.data.extxyz import read_frames  # noqa: E402
from escn.train import ConfigError, Trainer, load_config, train  # noqa: E402
from escn.train.data import load_splits, split_items  # noqa: E402


def _molecules(n: int, seed: int = 0) -> list:
    """``n`` distorted 5-atom molecules (CH3OH without one H: C, O, 3 H) with a smooth pair energy and its forces."""
    rng = np.random.default_rng(seed)
    base = np.array([[0.0, 0.0, 0.0], [1.4, 0.0, 0.0], [-0.5, 0.9, 0.0], [-0.5, -0.5, 0.8], [1.8, 0.8, 0.3]])
    out = []
    for _ in range(n):
        pos = base + 0.08 * rng.standard_normal(base.shape)
        d = pos[:, None, :] - pos[None, :, :]
        r = np.linalg.norm(d, axis=-1) + np.eye(5)
        e_pair = np.exp(-r) * (1 - np.eye(5))
        energy = 0.5 * e_pair.sum() - 10.0
        forces = (e_pair / r)[:, :, None] * d  # -dE/dpos_i = sum_j exp(-r_ij) (pos_i - pos_j) / r_ij
        out.append((pos, float(energy), forces.sum(axis=1)))
    return out


def _write(path: Path, frames: list, *, energy_key: str = "energy", forces_key: str = "forces") -> Path:
    atoms_list = []
    for pos, energy, forces in frames:
        atoms = Atoms("COHHH", positions=pos)
        if energy_key == "energy" and forces_key == "forces":
            atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        else:
            atoms.info[energy_key] = energy
            atoms.arrays[forces_key] = np.asarray(forces)
        atoms_list.append(atoms)
    ase_io.write(str(path), atoms_list, format="extxyz")
    return path


def test_read_frames_default_and_custom_keys(tmp_path):
    frames = _molecules(4)
    plain = read_frames(_write(tmp_path / "a.extxyz", frames))
    custom = read_frames(
        _write(tmp_path / "b.extxyz", frames, energy_key="REF_energy", forces_key="REF_forces"),
        energy_key="REF_energy",
        forces_key="REF_forces",
    )
    for graphs in (plain, custom):
        assert len(graphs) == 4
        for g, (pos, energy, forces) in zip(graphs, frames):
            assert g.atom_types.tolist() == [6, 8, 1, 1, 1] and g.pos.dtype == torch.float64
            assert torch.allclose(g.pos, torch.tensor(pos), atol=1e-7)
            assert abs(float(g.energy) - energy) < 1e-7
            assert torch.allclose(g.forces, torch.tensor(forces), atol=1e-7)
            assert g.stress is None
    # the custom keys are not found under the default names
    with pytest.raises(ValueError, match=r"b\.extxyz, frame 0: no forces \(looked for 'forces'.*arrays: .*REF_forces"):
        read_frames(tmp_path / "b.extxyz", require=("forces",))


def test_read_frames_stress_voigt_and_index(tmp_path):
    frames = []
    for i, (pos, energy, forces) in enumerate(_molecules(3)):
        atoms = Atoms("COHHH", positions=pos, cell=np.eye(3) * 8.0, pbc=True)
        atoms.calc = SinglePointCalculator(
            atoms, energy=energy, forces=forces, stress=np.array([1.0, 2.0, 3.0, 0.4, 0.5, 0.6]) * (i + 1)
        )
        frames.append(atoms)
    ase_io.write(str(tmp_path / "s.extxyz"), frames, format="extxyz")
    graphs = read_frames(tmp_path / "s.extxyz", index="1:")
    assert len(graphs) == 2
    expected = 2 * torch.tensor([[1.0, 0.6, 0.5], [0.6, 2.0, 0.4], [0.5, 0.4, 3.0]], dtype=torch.float64)
    assert torch.allclose(graphs[0].stress, expected, atol=1e-12)
    assert graphs[0].cell is not None and bool(graphs[0].pbc.all())


def test_missing_forces_names_file_and_frame(tmp_path):
    frames = _molecules(4)
    atoms_list = []
    for i, (pos, energy, forces) in enumerate(frames):
        atoms = Atoms("COHHH", positions=pos)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, **({} if i == 2 else {"forces": forces}))
        atoms_list.append(atoms)
    path = tmp_path / "gap.extxyz"
    ase_io.write(str(path), atoms_list, format="extxyz")
    with pytest.raises(ValueError, match=r"gap\.extxyz: frame 2 has no forces \('forces'\) but frame 0 has"):
        read_frames(path)
    # a required target missing from every frame: the first frame is named
    no_forces = tmp_path / "none.extxyz"
    ase_io.write(str(no_forces), [a for a in atoms_list[2:3]], format="extxyz")
    with pytest.raises(ValueError, match=r"none\.extxyz, frame 0: no forces"):
        read_frames(no_forces, require=("energy", "forces"))


def test_nan_and_wrong_atom_counts_name_file_and_frame(tmp_path):
    frames = _molecules(3)
    pos, energy, forces = frames[1]
    bad_forces = forces.copy()
    bad_forces[3, 1] = np.nan
    path = _write(tmp_path / "nan.extxyz", [frames[0], (pos, energy, bad_forces), frames[2]])
    with pytest.raises(
        ValueError,
        match=r"nan\.extxyz, frame 1: the forces \('forces'\) contain NaN or infinite "
        r"values \(first at index \[3, 1\]\)",
    ):
        read_frames(path)
    path = _write(tmp_path / "nane.extxyz", [frames[0], frames[1], (pos, float("nan"), forces)])
    with pytest.raises(ValueError, match=r"nane\.extxyz, frame 2: the energy \('energy'\) contains NaN"):
        read_frames(path)
    # a frame whose atom lines disagree with its count line: ASE fails inside that frame
    lines = _write(tmp_path / "ok.extxyz", frames).read_text().splitlines()
    lines[2 * (5 + 2)] = "6"  # frame 2 claims 6 atoms and has 5 lines
    broken = tmp_path / "broken.extxyz"
    broken.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"broken\.extxyz, frame 2: ASE cannot read it"):
        read_frames(broken)
    # forces of 4 atoms beside 5 positions (an ASE trajectory stores them as given)
    atoms_list = []
    for i, (p, e, f) in enumerate(frames):
        a = Atoms("COHHH", positions=p)
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        if i == 1:
            a.calc.results["forces"] = f[:4]
        atoms_list.append(a)
    traj = tmp_path / "short.traj"
    ase_io.write(str(traj), atoms_list)
    with pytest.raises(
        ValueError,
        match=r"short\.traj, frame 1: the forces 'forces' have shape \(4, 3\) but the "
        r"frame has 5 atoms; expected \(5, 3\)",
    ):
        read_frames(traj)


def test_split_items_is_seeded_and_disjoint():
    items = list(range(40))
    train, valid, test = split_items(items, 0.1, 0.25, seed=3)
    assert (len(train), len(valid), len(test)) == (26, 4, 10)
    assert sorted(train + valid + test) == items
    assert split_items(items, 0.1, 0.25, seed=3) == (train, valid, test)
    assert split_items(items, 0.1, 0.25, seed=4) != (train, valid, test)
    # the validation part of a two-way split is unchanged by adding a test part
    assert split_items(items, 0.1, 0.0, seed=3)[1] == valid


def _config(tmp_path, data, **top):
    cfg = {
        "seed": 0,
        "dtype": "float64",
        "batch_size": 4,
        "epochs": 2,
        "cutoff": 3.0,
        "progress": False,
        "output_dir": str(tmp_path / "run"),
        "threads": 1,
        "model": {
            "name": "escn",
            "lmax": 1,
            "mmax": 1,
            "channels": 4,
            "num_layers": 1,
            "cutoff": 3.0,
            "avg_num_neighbors": 4.0,
        },
        "data": data,
        "loss": {"energy": {"weight": 1.0, "per_atom": True}, "forces": 10.0},
        "optimizer": {"lr": 3e-3},
    }
    cfg.update(top)
    return cfg


def test_training_on_extxyz_files_and_evaluate_in_mev(tmp_path, capsys):
    from escn.cli import main

    frames = _molecules(30)
    train_file = _write(tmp_path / "train.extxyz", frames[:20], energy_key="REF_energy", forces_key="REF_forces")
    valid_file = _write(tmp_path / "valid.extxyz", frames[20:24], energy_key="REF_energy", forces_key="REF_forces")
    test_file = _write(tmp_path / "test.extxyz", frames[24:], energy_key="REF_energy", forces_key="REF_forces")
    cfg = _config(
        tmp_path,
        {
            "train": str(train_file),
            "valid": str(valid_file),
            "test": str(test_file),
            "energy_key": "REF_energy",
            "forces_key": "REF_forces",
        },
    )
    result = train(cfg)
    assert result.completed and result.step == 10
    assert len(load_splits(load_config(cfg), ("test",))["test"]) == 6
    ckpt = tmp_path / "run" / "best.pt"
    capsys.readouterr()
    assert main(["evaluate", str(ckpt), str(test_file), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_items"] == 6
    assert main(["evaluate", str(ckpt), "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == metrics
    assert main(["evaluate", str(ckpt), str(test_file)]) == 0
    text = capsys.readouterr().out
    rows = {ln.split()[0]: ln.split()[1:] for ln in text.splitlines()}
    assert float(rows["E/structure"][0]) == pytest.approx(1000 * metrics["mae_energy"], abs=1e-3)
    assert float(rows["E/atom"][0]) == pytest.approx(1000 * metrics["mae_energy"] / 5, abs=1e-3)
    assert float(rows["F/component"][0]) == pytest.approx(1000 * metrics["mae_forces"], abs=1e-3)
    assert rows["E/structure"][2] == "meV" and rows["E/atom"][2] == "meV/atom" and rows["F/component"][2] == "meV/A"
    # the metrics are those of the model on the file's targets
    from escn.data.extxyz import read_frames as rf
    from escn.models.io import load
    from escn.train.evaluate import default_keys, evaluate_model

    items = rf(test_file, energy_key="REF_energy", forces_key="REF_forces")
    direct = evaluate_model(load(ckpt), items, default_keys(items[0]), dtype=torch.float64, cutoff=3.0)
    assert direct["mae_forces"] == pytest.approx(metrics["mae_forces"], rel=1e-12)


def test_plain_path_with_fractional_split(tmp_path):
    path = _write(tmp_path / "all.extxyz", _molecules(40))
    cfg = _config(
        tmp_path, {"train": str(path), "valid_fraction": 0.1, "test_fraction": 0.25, "split_seed": 5}, epochs=1
    )
    trainer = Trainer(cfg)
    assert (len(trainer.train_set), len(trainer.valid_set)) == (26, 4)
    parts = load_splits(load_config(cfg))
    test_energies = sorted(float(g.energy) for g in parts["test"])
    expected = sorted(float(g.energy) for g in split_items(read_frames(path), 0.1, 0.25, seed=5)[2])
    assert len(parts["test"]) == 10 and test_energies == expected
    train_energies = {float(g.energy) for g in parts["train"]}
    assert not train_energies & set(test_energies)


def test_config_errors_for_data_keys(tmp_path):
    path = _write(tmp_path / "d.extxyz", _molecules(4))
    with pytest.raises(ConfigError, match="'data.test' and 'data.test_fraction' exclude each other"):
        load_config(_config(tmp_path, {"train": str(path), "test": str(path), "test_fraction": 0.2}))
    with pytest.raises(ConfigError, match=r"valid_fraction' \+ 'data.test_fraction' = 1 leave no training items"):
        load_config(_config(tmp_path, {"train": str(path), "valid_fraction": 0.5, "test_fraction": 0.5}))
    with pytest.raises(ConfigError, match="unknown option 'energy' for the file .*takes energy_key, forces_key"):
        Trainer(_config(tmp_path, {"train": {"source": str(path), "kwargs": {"energy": "x"}}}))
    # a training file without the forces the loss needs: the file and frame are named
    no_f = tmp_path / "nof.extxyz"
    atoms = Atoms("COHHH", positions=_molecules(1)[0][0])
    atoms.calc = SinglePointCalculator(atoms, energy=1.0)
    ase_io.write(str(no_f), [atoms], format="extxyz")
    with pytest.raises(ConfigError, match=r"nof\.extxyz, frame 0: no forces"):
        Trainer(_config(tmp_path, {"train": str(no_f)}))


def test_cli_reports_bad_file_in_one_line(tmp_path, capsys):
    from escn.cli import main

    frames = _molecules(3)
    pos, energy, forces = frames[2]
    path = _write(tmp_path / "bad.extxyz", frames[:2] + [(pos, energy, forces * np.nan)])
    cfg_path = tmp_path / "c.json"
    cfg_path.write_text(json.dumps(_config(tmp_path, {"train": str(path)})))
    with pytest.raises(SystemExit) as e:
        main(["train", str(cfg_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(r"bad\.extxyz, frame 2: the forces \('forces'\) contain NaN", err), err


def test_max_time_stops_the_run(tmp_path, monkeypatch):
    path = _write(tmp_path / "all.extxyz", _molecules(16))
    cfg = _config(tmp_path, {"train": str(path), "valid_fraction": 0.25}, epochs=50, max_time=25.0)
    # a clock that advances 10 s per step taken: the run stops after the step that reaches 25 s
    monkeypatch.setattr(Trainer, "_elapsed", lambda self: 10.0 * self.state.step)
    result = train(cfg)
    assert result.step == 3 and result.completed
    assert result.final_valid is not None and math.isfinite(result.final_valid["valid_loss"])
    from escn.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["progress"]["step"] == 3
    with pytest.raises(ConfigError, match="'max_time': expected a value > 0"):
        load_config(_config(tmp_path, {"train": str(path)}, max_time=0))


def test_shipped_aspirin_config():
    """examples/configs/aspirin.toml parses and builds its model, bounded by a time budget within 35 minutes."""
    from escn.models.registry import build_model

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "examples" / "configs" / "aspirin.toml")
    assert cfg.max_time is not None and cfg.max_time <= 35 * 60 and cfg.lr_over_time
    assert set(cfg.loss) == {"energy", "forces"}
    model = build_model(cfg.model.name, **cfg.model.kwargs, atomic_numbers=[1, 6, 8])
    assert model.cutoff == cfg.cutoff
    assert [cfg.data.train.source, cfg.data.valid.source, cfg.data.test.source] == [
        f"examples/data/aspirin_{p}.extxyz" for p in ("train", "valid", "test")
    ]


def test_aspirin_data_files():
    """The data files of the aspirin config, when generated: the documented split of 21-atom C9H8O4 frames
    with energies and forces."""
    root = Path(__file__).resolve().parents[1]
    meta_path = root / "examples" / "data" / "aspirin_meta.json"
    if not meta_path.exists():
        pytest.skip("examples/data holds no aspirin data set (escn data xtb-md --out examples/data writes it)")
    meta = json.loads(meta_path.read_text())
    counts = {"train": 950, "valid": 50, "test": 500}
    energies = set()
    for part, count in counts.items():
        path = root / "examples" / "data" / meta["files"][part]
        frames = read_frames(path, require=("energy", "forces"))
        assert len(frames) == count
        assert all(sorted(g.atom_types.tolist()) == sorted([6] * 9 + [1] * 8 + [8] * 4) for g in frames)
        energies |= {float(g.energy) for g in frames}
    assert len(energies) == 1500  # no frame in two parts
    assert meta["settings"]["temperature_K"] == 500.0 and meta["settings"]["seed"] == 0


def test_lr_over_time_reaches_the_end_of_the_schedule_at_max_time(tmp_path, monkeypatch):
    path = _write(tmp_path / "all.extxyz", _molecules(16))
    cfg = _config(
        tmp_path,
        {"train": str(path), "valid_fraction": 0.25},
        epochs=50,
        max_time=100.0,
        lr_over_time=True,
        schedule={"name": "cosine", "min_lr_ratio": 0.0},
        log_every=1,
    )
    monkeypatch.setattr(Trainer, "_elapsed", lambda self: 10.0 * self.state.step)  # 10 s per step
    result = train(cfg)
    assert result.step == 10  # 12 training items, batch 4: 150 steps planned, the clock stops it at 100 s
    lrs = [
        json.loads(line)["lr"]
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["type"] == "train"
    ]
    # step k starts at 10 k seconds: schedule position max(k, 150 * 10 k / 100) = 15 k of 150
    expected = [3e-3 * 0.5 * (1 + math.cos(math.pi * 15 * k / 150)) for k in range(10)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)
    with pytest.raises(ConfigError, match="'lr_over_time' needs 'max_time'"):
        load_config(_config(tmp_path, {"train": str(path)}, lr_over_time=True))
