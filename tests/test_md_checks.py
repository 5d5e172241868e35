"""Langevin runs, molecule-integrity checks (escn.md), the MD step benchmark (escn.bench.md) and the aspirin MD
example on a tiny model."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

pytest.importorskip("ase")
import ase.io  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402

from escn.ase import Calculator  # noqa: E402
from escn.bench.md import _grid, molecule_box  # noqa: E402
from escn.bench.md import run as bench_run
from escn.md import bonded_pairs, molecule_integrity, run_langevin  # noqa: E402
from escn.models import ESCN  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _example(name: str) -> ModuleType:
    """The example script ``examples/<name>.py`` imported as a module."""
    sys.path.insert(0, str(REPO / "examples"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def _methanol() -> Atoms:
    return Atoms(
        "COHHHH",
        positions=[
            [0.0, 0.0, 0.0],
            [1.43, 0.0, 0.0],
            [-0.36, 1.03, 0.0],
            [-0.36, -0.51, 0.89],
            [-0.36, -0.51, -0.89],
            [1.75, -0.9, 0.0],
        ],
    )


def _model(seed: int = 0) -> ESCN:
    torch.manual_seed(seed)
    return ESCN(
        lmax=1, mmax=1, channels=4, num_layers=1, cutoff=3.0, atomic_numbers=[1, 6, 8], avg_num_neighbors=4.0
    ).double()


def test_bonded_pairs_and_integrity_report():
    m = _methanol()
    bonds = bonded_pairs(m.numbers, m.positions)
    assert bonds == [(0, 1), (0, 2), (0, 3), (0, 4), (1, 5)]
    frames = np.repeat(m.positions[None], 4, axis=0)
    frames[2, 5] = m.positions[1] + 1.6 * (m.positions[5] - m.positions[1])  # O-H at 1.6 x its length
    frames[3, 2] += [0.0, 20.0, 0.0]  # an H far away
    r = molecule_integrity(frames[:2], m.positions, bonds)
    assert r["ok"] and r["broken_bonds"] == [] and r["max_bond_ratio"] == pytest.approx(1.0, abs=1e-15)
    r = molecule_integrity(frames[:3], m.positions, bonds)
    assert not r["ok"] and r["broken_bonds"] == [(1, 5)] and r["first_broken_frame"] == 2
    assert r["max_bond_ratio"] == pytest.approx(1.6, abs=1e-12) and r["max_bond_ratio_pair"] == (1, 5)
    assert r["left_atoms"] == []
    r = molecule_integrity(frames, m.positions, bonds, masses=m.get_masses())
    assert r["left_atoms"] == [2] and sorted(r["broken_bonds"]) == [(0, 2), (1, 5)]
    with pytest.raises(ValueError, match=r"positions_frames must have shape \(F, N, 3\)"):
        molecule_integrity(frames[:, :3], m.positions, bonds)
    with pytest.raises(ValueError, match="max_stretch must be a finite number > 0"):
        molecule_integrity(frames, m.positions, bonds, max_stretch=0)


def test_langevin_is_seeded_and_thermostatted():
    model = _model()
    runs = []
    for _ in range(2):
        atoms = _methanol()
        runs.append(
            run_langevin(
                atoms,
                Calculator(model),
                0.5,
                20,
                300.0,
                friction_per_fs=0.02,
                log_every=5,
                seed=7,
                record_positions=True,
            )
        )
    a, b = runs
    assert a["time_fs"].tolist() == [0.0, 2.5, 5.0, 7.5, 10.0]
    assert np.array_equal(a["positions"], b["positions"]) and np.array_equal(a["total_energy"], b["total_energy"])
    assert a["positions"].shape == (5, 6, 3) and a["num_atoms"] == 6
    # the first frame's kinetic energy is that of the drawn momenta: 3/2 N k T within sampling noise
    assert 0.0 < a["kinetic_energy"][0] < 10 * 1.5 * 6 * 8.617e-5 * 300
    other = run_langevin(_methanol(), Calculator(model), 0.5, 20, 300.0, log_every=5, seed=8)
    assert not np.array_equal(other["total_energy"], a["total_energy"])
    with pytest.raises(ValueError, match="temperature_K must be a finite number > 0"):
        run_langevin(_methanol(), Calculator(model), 0.5, 2, 0.0)


def test_molecule_box_geometry():
    assert _grid(32) == (4, 4, 2) and _grid(8) == (2, 2, 2) and _grid(7) == (7, 1, 1)
    m = _methanol()
    box = molecule_box(m, 8, 5.0, seed=1)
    assert len(box) == 48 and bool(box.pbc.all()) and np.allclose(box.cell.lengths(), [10.0, 10.0, 10.0])
    d = box.get_all_distances(mic=True)
    same = np.kron(np.eye(8), np.ones((6, 6))).astype(bool)
    assert d[~same].min() >= 2.0
    # every copy is the molecule rotated: the same internal distances
    ref = m.get_all_distances()
    for k in range(8):
        assert np.allclose(box[k * 6 : (k + 1) * 6].get_all_distances(), ref, atol=1e-12)
    with pytest.raises(ValueError, match="increase spacing"):
        molecule_box(m, 8, 1.0)


def test_bench_reports_both_systems():
    rows = bench_run(_model(), _methanol(), copies=8, steps=2, box_steps=1, spacing=5.0)
    assert [r.name for r in rows] == ["1 molecule", "8 molecules, periodic"]
    assert [r.atoms for r in rows] == [6, 48] and [r.steps for r in rows] == [2, 1]
    masses = _methanol().get_masses().sum() * 8
    assert rows[1].density_g_cm3 == pytest.approx(masses * 1.66053906660 / 1000.0, rel=1e-12)
    assert rows[0].edges == 30  # all 6 x 5 ordered pairs of methanol lie within 3 A
    assert rows[1].density_g_cm3 is not None and rows[0].density_g_cm3 is None


def _noisy_frames(tmp_path: Path) -> tuple[Path, Path]:
    """Eight perturbed methanol frames with random energies and forces, and the unperturbed geometry."""
    m = _methanol()
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(8):
        a = m.copy()
        a.positions += 0.05 * rng.standard_normal(a.positions.shape)
        a.calc = SinglePointCalculator(a, energy=float(rng.normal()), forces=0.1 * rng.standard_normal((6, 3)))
        frames.append(a)
    data = tmp_path / "m.extxyz"
    ase.io.write(str(data), frames, format="extxyz")
    relaxed = tmp_path / "relaxed.extxyz"
    ase.io.write(str(relaxed), m, format="extxyz")
    return data, relaxed


def _tiny_config(tmp_path: Path, data: dict, **top) -> dict:
    """A training config of a 4-channel, one-block ESCN on ``data`` (the ``[data]`` table), with ``top`` keys."""
    return {
        "batch_size": 4,
        "progress": False,
        "output_dir": str(tmp_path / "run"),
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
        "loss": {"energy": 1.0, "forces": 1.0},
        **top,
    }


def test_aspirin_md_example_on_a_tiny_model(tmp_path):
    from escn.train import train

    data, relaxed = _noisy_frames(tmp_path)
    train(_tiny_config(tmp_path, {"train": str(data)}, dtype="float64", max_steps=1))
    aspirin_md = _example("aspirin_md")
    out = tmp_path / "md.json"
    code = aspirin_md.main(
        [
            str(tmp_path / "run" / "checkpoint.pt"),
            "--start",
            str(relaxed),
            "--nvt-ps",
            "0.005",
            "--nve-ps",
            "0.002",
            "--log-every",
            "2",
            "--bench-steps",
            "2",
            "--copies",
            "8",
            "--temperature",
            "100",
            "--drift-target",
            "1e9",
            "--json",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    assert report["bonds"] == 5 and report["nvt"]["steps"] == 10 and report["nve"]["steps"] == 4
    assert code == (0 if report["nvt"]["ok"] and report["nve"]["intact"] else 1)
    assert [r["atoms"] for r in report["bench"]] == [6, 48]


def test_aspirin_lmax_study_on_a_tiny_model(tmp_path):
    """The lmax study runs its trainings two at a time, evaluates each on the test split and times its MD step."""
    data, relaxed = _noisy_frames(tmp_path)
    config = tmp_path / "tiny.json"
    splits = {"train": str(data), "valid": str(data), "test": str(data)}
    config.write_text(json.dumps(_tiny_config(tmp_path, splits, dtype="float32", max_steps=2)))
    aspirin_lmax = _example("aspirin_lmax")
    out = tmp_path / "study"
    code = aspirin_lmax.main(
        ["--config", str(config), "--lmax", "1,2", "--minutes", "1", "--jobs", "2", "--md-steps", "2"]
        + ["--molecule", str(relaxed), "--out", str(out)]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert [(r["lmax"], r["mmax"]) for r in rows] == [(1, 1), (2, 2)]
    for r in rows:
        assert r["steps"] == 2 and r["test_frames"] == 8
        assert 0 < r["force_mae_meV_A"] < 1e4 and r["md_ms_per_step"] > 0
        ckpt = torch.load(out / f"lmax{r['lmax']}" / "best.pt", map_location="cpu", weights_only=True)
        assert ckpt["model_config"]["lmax"] == r["lmax"]
