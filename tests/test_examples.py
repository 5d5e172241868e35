"""The task examples run end to end on their small defaults and reach their targets."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"escn_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_tetris_reaches_full_accuracy_on_rotations_and_mirrors(restore_threads, capsys):
    metrics = _load("tetris").main(["--test", "200"])
    assert metrics["train_accuracy"] == 1.0
    assert metrics["test_accuracy"] == 1.0
    assert metrics["mirror_accuracy"] == 1.0  # a reflection swaps the chiral pair's predictions
    out = capsys.readouterr().out
    assert "rotated test accuracy" in out and "100.0%" in out


def test_nbody_small_path_trains_and_evaluates_the_full_test_split(tmp_path, restore_threads, capsys):
    import json

    from escn.cli import main as cli
    from escn.datasets.nbody import SPLIT_SIZES

    run = tmp_path / "run"
    metrics = _load("nbody").main(
        ["--train", "200", "--epochs", "5", "--output-dir", str(run), "--no-progress", "--threads", "1"]
    )
    # 100 short steps (200 trajectories and their charge-flipped copies, batch 20) already beat standing still
    # (0.27); the example's docstring gives the small default's measured MSE
    assert metrics["test_mse"] < metrics["baseline_no_motion"]
    assert metrics["num_test"] == SPLIT_SIZES["test"] == 2000  # every test trajectory, not a subset
    assert (run / "best.pt").exists()
    out = capsys.readouterr().out
    assert "EGNN" in out and "escn (this run)" in out and "all 2000 test trajectories" in out
    assert torch.get_num_threads() == 1  # --threads reached the engine (restore_threads puts it back)

    # escn evaluate on the test split (the validation source's settings) sees the same 2,000 trajectories and
    # prints the protocol's MSE (mean over coordinates), the example's number up to float32 rounding
    assert cli(["evaluate", str(run / "best.pt"), "--kwargs", '{"split": "test"}', "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_items"] == 2000
    assert result["mse_node_vectors"] == pytest.approx(result["rmse_node_vectors"] ** 2, rel=1e-12)
    assert result["mse_node_vectors"] == pytest.approx(result["loss_node_vectors"], rel=1e-5)  # loss summed in float32
    assert result["mse_node_vectors"] == pytest.approx(metrics["test_mse"], rel=1e-4)
    assert cli(["evaluate", str(run / "best.pt"), "--kwargs", '{"split": "test"}']) == 0
    text = capsys.readouterr().out
    assert "2000 structures" in text.splitlines()[0]
    assert text.splitlines()[1].split() == ["key", "MAE", "RMSE", "MSE"]
    row = next(line.split() for line in text.splitlines() if line.startswith("node_vectors"))
    assert float(row[3]) == pytest.approx(result["mse_node_vectors"], rel=1e-5)


def test_emt_small_path_trains_tests_and_runs_md(tmp_path, restore_threads, capsys):
    pytest.importorskip("ase")
    pytest.importorskip("matplotlib")
    metrics = _load("emt").main(
        [
            "--traj-per-kind",
            "3",
            "--frames",
            "4",
            "--epochs",
            "6",
            "--lmax",
            "1",
            "--channels",
            "8",
            "--threads",
            "1",
            "--md-time",
            "0.05",
            "--md-size",
            "2",
            "--output-dir",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    # a few dozen steps already beat the zero-force baseline; the full default reaches far lower (module docstring)
    assert metrics["force_mae"] < metrics["baseline_force_mae"]
    for name in ("escn", "emt"):
        assert -float("inf") < metrics[f"md_drift_{name}"] < float("inf")
        assert 0.0 <= metrics[f"md_max_dev_{name}"] < float("inf")
    assert Path(metrics["rdf_path"]).is_file()
    out = capsys.readouterr().out
    assert "baseline" in out and "force MAE, 300 K frames" in out and "RDF plot" in out


def test_tetris_config_trains_through_the_engine(tmp_path, restore_threads):
    from escn.data import collate
    from escn.datasets.tetris import random_rotation_test_set
    from escn.models import load
    from escn.train import load_config, train

    cfg = load_config(EXAMPLES / "configs" / "tetris.toml").to_dict()
    cfg.update(output_dir=str(tmp_path / "run"), epochs=60, progress=False)
    cfg["data"]["valid"]["kwargs"]["n"] = 16
    train(cfg, overwrite=True)
    model = load(tmp_path / "run" / "checkpoint.pt")
    test = collate(random_rotation_test_set(200, seed=1, dtype=torch.float64))
    with torch.no_grad():
        pred = model(test)["class_logits"].argmax(dim=1)
    assert (pred == test.graph_attrs["label"]).all()
