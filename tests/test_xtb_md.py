"""The GFN2-xTB MD generator (escn.datasets.xtb_md, ``escn data xtb-md``): geometry, autocorrelation, settings;
a few MD steps of water when tblite is installed."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

pytest.importorskip("ase")

from escn.datasets.xtb_md import (  # noqa: E402
    ASPIRIN_BONDS,
    XtbMDSettings,
    aspirin,
    autocorrelation,
    bonded_pairs,
    check_bonds,
    generate_xtb_md,
    statistical_inefficiency,
)


def test_aspirin_geometry_has_its_connectivity():
    atoms = aspirin()
    assert atoms.get_chemical_formula(mode="hill") == "C9H8O4" and len(atoms) == 21
    assert len(ASPIRIN_BONDS) == 21
    assert bonded_pairs(atoms) == list(ASPIRIN_BONDS)
    d = atoms.get_all_distances()
    assert abs(d[0, 1] - 1.40) < 1e-12 and abs(d[6, 7] - 1.22) < 1e-12 and abs(d[13, 14] - 1.09) < 1e-12
    assert abs(atoms.get_angle(0, 1, 2) - 120.0) < 1e-9 and abs(atoms.get_angle(10, 11, 12) - 123.0) < 1e-9
    assert abs(abs(atoms.get_dihedral(0, 1, 10, 11) - 180.0) - 90.0) < 1e-9  # acetoxy out of the ring plane
    assert np.abs(atoms.get_center_of_mass()).max() < 1e-12
    stretched = atoms.copy()
    stretched.positions[9] += [2.0, 0.0, 0.0]  # the acid H leaves its oxygen
    with pytest.raises(ValueError, match=r"stretched: .*missing \[\(8, 9\)\]"):
        check_bonds(stretched, ASPIRIN_BONDS, "stretched")


def test_autocorrelation_of_known_series():
    t = np.arange(4000)
    c = autocorrelation(np.cos(2 * np.pi * t / 40), 40)
    assert abs(c[0] - 1) < 1e-12 and abs(c[20] + 1) < 0.01 and abs(c[10]) < 0.01  # cos(2 pi k / 40) (1 - k / T)
    x = np.random.default_rng(0).standard_normal((20000, 3))
    c = autocorrelation(x, 5)
    assert abs(c[0] - 1) < 1e-12 and np.abs(c[1:]).max() < 0.02
    # AR(1) with coefficient 0.9: c[k] = 0.9^k, statistical inefficiency (1 + 0.9) / (1 - 0.9) = 19
    y = np.zeros(200000)
    noise = np.random.default_rng(1).standard_normal(200000)
    for i in range(1, len(y)):
        y[i] = 0.9 * y[i - 1] + noise[i]
    c = autocorrelation(y, 200)
    assert np.abs(c[:30] - 0.9 ** np.arange(30)).max() < 0.02
    assert abs(statistical_inefficiency(c) - 19.0) < 1.0
    # exact: c = 0.9^k for k <= 200; the window stops at the first M >= 5 g(M) / 2, g(M) = 1 + 2 sum_{k<=M} 0.9^k
    exact = 0.9 ** np.arange(201)
    g = 1 + 2 * np.cumsum(exact[1:])
    m = next(k for k in range(1, 201) if k >= 2.5 * g[k - 1])
    assert statistical_inefficiency(exact) == pytest.approx(g[m - 1], rel=1e-12) and m == 48
    assert statistical_inefficiency(np.ones(10)) is None  # never decorrelates within the lags given
    with pytest.raises(ValueError, match=r"T > max_lag = 10, got shape \(5,\)"):
        autocorrelation(np.zeros(5), 10)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="split: expected distinct .* summing to n_frames = 1500"):
        XtbMDSettings(split=(("train", 900), ("valid", 50), ("test", 500)))
    with pytest.raises(ValueError, match="molecule: expected one of aspirin, water, got 'benzene'"):
        XtbMDSettings(molecule="benzene")
    with pytest.raises(ValueError, match="pilot_fs: the measured interval needs a pilot of at least"):
        XtbMDSettings(pilot_fs=300.0)
    assert XtbMDSettings().steps(20.0) == 40 and XtbMDSettings().steps(20.2) == 41


def test_cli_without_tblite_names_the_extra(tmp_path, monkeypatch, capsys):
    from escn.cli import main

    monkeypatch.setitem(sys.modules, "tblite.ase", None)  # import fails as if tblite were missing
    with pytest.raises(SystemExit) as e:
        main(["data", "xtb-md", "--molecule", "water", "--out", str(tmp_path), "--frames", "3", "--interval", "1"])
    assert e.value.code == 2 and "pip install 'escn[xtb]'" in capsys.readouterr().err


def test_generator_runs_a_few_steps_of_water(tmp_path, capsys):
    pytest.importorskip("tblite")
    from escn.cli import main
    from escn.data.extxyz import read_frames
    from escn.datasets.xtb_md import xtb_calculator

    args = [
        "data",
        "xtb-md",
        "--molecule",
        "water",
        "--equilibration",
        "5",
        "--pilot",
        "20",
        "--frames",
        "6",
        "--split",
        "3,1,2",
        "--seed",
        "3",
    ]
    # an interval measured on a 20 fs pilot needs max_interval_fs <= 10 fs: give the interval instead
    assert main(args + ["--interval", "2", "--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--interval", "2", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "sampling every 2 fs (4 steps)" in out
    meta = json.loads((tmp_path / "a" / "water_meta.json").read_text())
    assert meta["interval_steps"] == 4 and meta["md_steps_total"] == 10 + 6 * 4
    parts = {
        n: read_frames(tmp_path / "a" / f"water_{n}.extxyz", require=("energy", "forces"))
        for n in ("train", "valid", "test")
    }
    assert [len(parts[n]) for n in ("train", "valid", "test")] == [3, 1, 2]
    # same seed, same frames
    for n in ("train", "valid", "test"):
        assert (tmp_path / "a" / f"water_{n}.extxyz").read_text() == (tmp_path / "b" / f"water_{n}.extxyz").read_text()
    # the frames' targets are GFN2-xTB's energy (eV) and forces (eV/A) at their positions
    from ase import Atoms

    g = parts["test"][0]
    atoms = Atoms(numbers=g.atom_types.numpy(), positions=g.pos.numpy())
    atoms.calc = xtb_calculator()
    # (the MD's self-consistent charges start from the previous step's, a fresh call from scratch: the two
    # agree to tblite's default convergence, 4e-5 eV/A here)
    assert abs(atoms.get_potential_energy() - float(g.energy)) < 1e-6
    assert np.abs(atoms.get_forces() - g.forces.numpy()).max() < 2e-4
    trajectory = read_frames(tmp_path / "a" / "water_trajectory.extxyz")
    assert len(trajectory) == 6
    assert sorted(float(t.energy) for t in trajectory) == sorted(float(x.energy) for p in parts.values() for x in p)
    # the measured interval: a 100 fs pilot with the interval bounded to [2, 10] fs
    s = XtbMDSettings(
        molecule="water",
        equilibration_fs=0.0,
        pilot_fs=100.0,
        min_interval_fs=2.0,
        max_interval_fs=10.0,
        n_frames=2,
        split=(("train", 1), ("test", 1)),
    )
    meta = generate_xtb_md(s, tmp_path / "c", log=None)
    assert 4 <= meta["interval_steps"] <= 20 and math.isclose(meta["interval_fs"], meta["interval_steps"] * 0.5)
    pilot = meta["pilot"]
    assert pilot["max_lag_steps"] == 80 and len(pilot["autocorrelation_energy"]) == 81
    assert pilot["autocorrelation_energy"][0] == 1.0
    measured = [v / 0.5 for v in (pilot["inefficiency_energy_fs"], pilot["inefficiency_forces_fs"]) if v is not None]
    expected = min(max(math.ceil(max(measured)) if len(measured) == 2 else 80, 4), 20)
    assert meta["interval_steps"] == expected
