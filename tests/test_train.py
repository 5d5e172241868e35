"""The training engine: configs and their errors, the loop, exact resume (in process and after SIGKILL),
checkpoints, ``escn evaluate`` and ``escn.models.load``.

The models here are small stand-ins satisfying the model protocol (a learnable pair potential with
forces by autograd, float64); the same checks run with the eSCN model when ``escn.models.ESCN`` exists.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
from torch import nn

from escn.checkpoint import load_checkpoint
from escn.data import AtomsGraph, Batch, edge_vectors
from escn.models.registry import build_model, get_model_class, register_model, registered_models
from escn.train import ConfigError, Trainer, load_config, train
from escn.train.toy import lj_clusters

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


# --------------------------------------------------------------------------- stand-in models and data
class PairPotential(nn.Module):
    """E = sum over edges of MLP(RBF(r)) * (1 - r / cutoff)^2 / 2 + per-type atomic energies.

    Optional heads: ``node_vectors`` (N, 3) = sum over incoming edges of w(r) * edge_vec, and
    ``logits`` (B, num_classes) from pooled radial features. ``dropout`` > 0 draws from the global torch
    generator in every training step (as any stochastic model does).

    With ``ESCN_TEST_KILL_AT_STEP=k`` in the environment the process SIGKILLs itself in its k-th training
    forward pass (1-based), i.e. during global step k: a crash at an exact, load-independent point.
    """

    def __init__(
        self,
        cutoff: float = 2.5,
        num_basis: int = 6,
        hidden: int = 8,
        num_types: int = 2,
        vector_head: bool = False,
        num_classes: int = 0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.config = dict(
            cutoff=cutoff,
            num_basis=num_basis,
            hidden=hidden,
            num_types=num_types,
            vector_head=vector_head,
            num_classes=num_classes,
            dropout=dropout,
        )
        self.cutoff = cutoff
        self.register_buffer("centers", torch.linspace(0.8, cutoff, num_basis))
        self.width = (cutoff - 0.8) / num_basis
        self.mlp = nn.Sequential(nn.Linear(num_basis, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
        self.training_calls = 0
        self.atom_energy = nn.Embedding(num_types, 1)
        self.vec = nn.Linear(num_basis, 1) if vector_head else None
        self.cls = nn.Linear(num_basis, num_classes) if num_classes else None

    def forward(
        self, batch: Batch, compute_forces: bool = True, compute_stress: bool = False
    ) -> Dict[str, torch.Tensor]:
        if self.training:
            self.training_calls += 1
            if self.training_calls == int(os.environ.get("ESCN_TEST_KILL_AT_STEP", "0")):
                os.kill(os.getpid(), signal.SIGKILL)
        pos = batch.pos.detach().requires_grad_(compute_forces)
        vec = edge_vectors(pos, batch.edge_src, batch.edge_dst, batch.shift, batch.cell, batch.batch)
        r = vec.norm(dim=-1)
        rbf = torch.exp(-(((r[:, None] - self.centers) / self.width) ** 2))
        env = (1 - r / self.cutoff).clamp(min=0) ** 2
        e_edge = 0.5 * self.mlp(rbf).squeeze(-1) * env
        B = batch.num_graphs
        graph_of_edge = batch.batch[batch.edge_src]
        energy = pos.new_zeros(B).index_add(0, graph_of_edge, e_edge)
        energy = energy.index_add(0, batch.batch, self.atom_energy(batch.atom_types).squeeze(-1))
        out = {"energy": energy}
        if compute_forces:
            (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=self.training, allow_unused=True)
            out["forces"] = -grad if grad is not None else torch.zeros_like(pos)
        if self.vec is not None:
            w = self.vec(rbf) * env[:, None]
            out["node_vectors"] = pos.new_zeros(pos.shape).index_add(0, batch.edge_dst, w * vec)
        if self.cls is not None:
            pooled = pos.new_zeros(B, rbf.shape[1]).index_add(0, graph_of_edge, rbf * env[:, None])
            out["logits"] = self.cls(pooled)
        return out


register_model("pair", PairPotential)


def make_data(n: int = 16, seed: int = 0, tasks: bool = False) -> List[AtomsGraph]:
    """LJ clusters of 3..8 atoms with two atom types; with ``tasks``: node_vectors and a size class."""
    graphs = lj_clusters(n=n, min_atoms=3, max_atoms=8, num_types=2, seed=seed)
    if tasks:
        for g in graphs:
            g.node_attrs["node_vectors"] = g.forces / 10
            g.graph_attrs["logits"] = torch.tensor(int(g.num_nodes > 5))
    return graphs


PAIR = "test_train:PairPotential"  # importable name for subprocesses (PYTHONPATH=tests)


def base_config(tmp_path: Path, **over: Any) -> Dict[str, Any]:
    cfg: Dict[str, Any] = {
        "model": {"name": "pair", "hidden": 8},
        "data": {
            "train": {"source": "test_train:make_data", "kwargs": {"n": 22, "seed": 0}},
            "valid": {"source": "test_train:make_data", "kwargs": {"n": 6, "seed": 1}},
        },
        "cutoff": 2.5,
        "batch_size": 4,
        "epochs": 3,
        "dtype": "float64",
        "seed": 3,
        "optimizer": {"lr": 5e-3, "weight_decay": 1e-4},
        "schedule": {"name": "warmup_cosine", "warmup_steps": 3, "min_lr_ratio": 0.1},
        "loss": {"energy": {"weight": 1.0, "per_atom": True}, "forces": 0.1},
        "ema_decay": 0.9,
        "grad_clip": 5.0,
        "checkpoint_every": 4,
        "output_dir": str(tmp_path / "run"),
        "progress": False,
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict) and k != "loss" and not (k == "model" and "name" in v):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


def read_log(path: Path) -> List[Dict[str, Any]]:
    """metrics.jsonl without the wall-clock field."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r.pop("time", None)
    return rows


def params_of(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], tol: float = 1e-12) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=tol), (k, (a[k] - b[k]).abs().max())


# --------------------------------------------------------------------------- eSCN model (when it exists)
def _escn_kwargs() -> Dict[str, Any]:
    """Small settings for whichever of these parameters the eSCN model takes."""
    import escn.models as models

    small = {
        "num_atom_types": 2,
        "lmax": 2,
        "mmax": 1,
        "channels": 4,
        "num_layers": 1,
        "cutoff": 2.5,
        "num_radial": 4,
        "radial_hidden": 8,
        "type_embedding_dim": 2,
        "avg_num_neighbors": 4.0,
    }
    params = inspect.signature(models.ESCN).parameters
    return {k: v for k, v in small.items() if k in params}


def _model_section(name: str) -> Dict[str, Any]:
    if name == "pair":
        return {"name": "pair", "hidden": 8}
    import escn.models as models

    if not hasattr(models, "ESCN"):
        pytest.skip("escn.models.ESCN is not available yet")
    if "escn" not in registered_models():  # until escn.models registers it itself
        register_model("escn", models.ESCN)
    return {"name": "escn", **_escn_kwargs()}


# --------------------------------------------------------------------------- registry
def test_registry_names_and_import_paths():
    assert get_model_class("pair") is PairPotential
    assert "pair" in registered_models()
    register_model("pair", PairPotential)  # same class again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_model("pair", nn.Linear)
    assert get_model_class(PAIR) is PairPotential
    model = build_model("pair", hidden=3)
    assert type(model)(**model.config).config == model.config
    with pytest.raises(ValueError, match=r"unknown model 'nope'.*'pair'"):
        get_model_class("nope")
    with pytest.raises(ValueError, match="rejected its config"):
        build_model("pair", wrong=1)
    with pytest.raises(ValueError, match="cannot import module"):
        get_model_class("no_such_module_xyz:Model")


# --------------------------------------------------------------------------- configs
def test_config_toml_yaml_and_dict_agree(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(
        'seed = 1\ndtype = "float64"\nepochs = 2\nbatch_size = 2\ncutoff = 2.5\n'
        '[model]\nname = "pair"\nhidden = 4\n'
        '[data]\ntrain = { source = "test_train:make_data", kwargs = { n = 4 } }\n'
        '[schedule]\nname = "cosine"\n'
        "[loss]\nenergy = { weight = 1.0, per_atom = true }\nforces = 10.0\n"
    )
    cfg = load_config(toml)
    assert cfg.model.kwargs == {"hidden": 4} and cfg.loss["forces"].weight == 10.0 and cfg.loss["energy"].per_atom
    assert load_config(cfg.to_dict()) == cfg
    yaml = pytest.importorskip("yaml")
    y = tmp_path / "c.yaml"
    y.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_config(y) == cfg


def test_yaml_without_pyyaml_is_a_clear_error(tmp_path, monkeypatch):
    y = tmp_path / "c.yaml"
    y.write_text("seed: 1\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ConfigError, match="pyyaml"):
        load_config(y)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"dtype": "flaot64"},
            r"'dtype': expected one of 'float32', 'float64', got 'flaot64' \(did you mean 'float64'\?\)",
        ),
        (
            {"batch_sise": 3},
            r"unknown config key 'batch_sise' \(did you mean 'batch_size'\?\); allowed keys: model, data",
        ),
        (
            {"optimizer": {"learning_rate": 1.0}},
            r"unknown config key 'optimizer.learning_rate'.*allowed keys in \[optimizer\]: name, lr",
        ),
        ({"batch_size": 0}, r"'batch_size': expected a value >= 1, got 0"),
        ({"batch_size": "4"}, r"'batch_size': expected an integer, got '4'"),
        (
            {"schedule": {"name": "cosin"}},
            r"'schedule.name': expected one of .*got 'cosin' \(did you mean 'cosine'\?\)",
        ),
        ({"loss": {"energy": {"wieght": 1.0}}}, r"unknown config key 'loss.energy.wieght'"),
        ({"loss": {"energy": "big"}}, r"'loss.energy': expected a weight"),
        ({"loss": {}}, r"\[loss\] is required|\[loss\] is empty"),
        ({"epochs": None}, r"needs 'epochs' or 'max_steps'"),
        ({"ema_decay": 1.5}, r"'ema_decay': expected a value in \[0, 1\)"),
    ],
)
def test_config_errors_name_the_key(tmp_path, change, message):
    cfg = base_config(tmp_path)
    for k, v in change.items():
        if v is None:
            cfg.pop(k)
        elif isinstance(v, dict) and v and isinstance(cfg.get(k), dict) and k != "loss":
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)


def test_setup_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file .*missing.toml.* not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match=r"unknown model 'transformer'; registered models: .*'pair'"):
        Trainer(base_config(tmp_path, model={"name": "transformer"}))
    with pytest.raises(
        ConfigError,
        match=r"'loss.dipole': the training data has no target for 'dipole'.*targets present: energy, forces",
    ):
        Trainer(base_config(tmp_path, loss={"dipole": 1.0}))
    with pytest.raises(ConfigError, match=r"'loss.forces.per_atom': 'forces' is a per-node target"):
        Trainer(base_config(tmp_path, loss={"forces": {"per_atom": True}}))
    with pytest.raises(ConfigError, match=r"data.train: data file 'nowhere.pt' not found"):
        Trainer(base_config(tmp_path, data={"train": "nowhere.pt"}))
    with pytest.raises(FileNotFoundError, match="cannot resume: checkpoint"):
        Trainer(base_config(tmp_path), resume=True)


# --------------------------------------------------------------------------- the loop
def test_training_learns_and_writes_outputs(tmp_path, capsys):
    cfg = base_config(tmp_path, epochs=6, checkpoint_every=100, schedule={"name": "cosine", "warmup_steps": 0})
    result = train(cfg)
    out = Path(cfg["output_dir"])
    assert {p.name for p in out.iterdir()} >= {"checkpoint.pt", "best.pt", "metrics.jsonl", "config.json"}
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    rows = read_log(out / "metrics.jsonl")
    train_rows = [r for r in rows if r["type"] == "train"]
    epochs = [r for r in rows if r["type"] == "epoch"]
    assert [r["step"] for r in train_rows] == list(range(1, 6 * 6 + 1))  # 22 items / 4 = 6 batches per epoch
    assert len(epochs) == 6 and [e["epoch"] for e in epochs] == list(range(1, 7))
    for key in ("train_mae_energy", "train_rmse_forces", "valid_mae_forces", "valid_mae_energy_per_atom", "lr"):
        assert key in epochs[0]
    assert epochs[-1]["valid_loss"] < epochs[0]["valid_loss"]
    assert train_rows[0]["lr"] > train_rows[-1]["lr"]  # cosine decay
    assert result.best is not None and result.best["valid_loss"] == min(e["valid_loss"] for e in epochs)
    text = capsys.readouterr().out
    assert "training finished: 36 steps" in text and "best epoch:" in text
    assert all(k in text for k in ("energy", "forces", "energy_per_atom", "train MAE", "valid MAE"))
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["progress"]["step"] == 36 and ckpt["progress"]["epoch"] == 6 and ckpt["ema_state"] is not None
    assert ckpt["model_name"] == "pair" and ckpt["model_config"]["hidden"] == 8
    # a fresh run does not silently overwrite a finished one
    with pytest.raises(ConfigError, match="already holds checkpoint.pt"):
        Trainer(cfg)


def test_valid_every_validates_every_kth_and_the_last_epoch(tmp_path):
    cfg = base_config(tmp_path, epochs=5, valid_every=2, checkpoint_every=100)
    result = train(cfg)
    epochs = [r for r in read_log(Path(cfg["output_dir"]) / "metrics.jsonl") if r["type"] == "epoch"]
    validated = [e["epoch"] for e in epochs if "valid_loss" in e]
    assert validated == [2, 4, 5]
    assert result.best is not None and result.best["epoch"] + 1 in validated
    assert result.final_valid is not None
    with pytest.raises(ConfigError, match="valid_every"):
        load_config(base_config(tmp_path, valid_every=0))


@pytest.mark.parametrize("model_name", ["pair", "escn"])
def test_resume_mid_epoch_is_exact(tmp_path, model_name):
    """K steps straight == K/2 steps, stop, resume to K: same log lines and bitwise-equal weights."""
    K = 14 if model_name == "pair" else 4
    model = _model_section(model_name)
    common = dict(model=model, max_steps=K, epochs=None)
    full = train(base_config(tmp_path / "a", **common))
    cfg_b = base_config(tmp_path / "b", **common)
    part = train(cfg_b, until_step=K // 2)
    assert not part.completed and part.step == K // 2 and part.position not in (0,)
    ckpt = load_checkpoint(Path(cfg_b["output_dir"]) / "checkpoint.pt")
    assert ckpt["progress"]["step"] == K // 2 and ckpt["sampler"]["position"] == part.position
    resumed = train(cfg_b, resume=True)
    assert resumed.step == K
    log_a = read_log(Path(full.checkpoint).parent / "metrics.jsonl")
    log_b = read_log(Path(cfg_b["output_dir"]) / "metrics.jsonl")
    assert log_a == log_b  # identical loss curve, metrics and learning rates, line for line
    assert_same_state(params_of(full.model), params_of(resumed.model), tol=0.0)
    ea = load_checkpoint(full.checkpoint)["ema_state"]
    eb = load_checkpoint(resumed.checkpoint)["ema_state"]
    assert_same_state(ea, eb, tol=0.0)


def test_resume_plateau_schedule_from_an_end_of_epoch_checkpoint(tmp_path):
    """A periodic checkpoint taken on the last batch of an epoch (before that epoch's validation) replays
    validation, the plateau schedule and best-epoch bookkeeping exactly; the log is cut back and rewritten."""
    over = dict(
        epochs=5,
        checkpoint_every=6,
        optimizer={"lr": 0.05},
        schedule={"name": "plateau", "patience": 0, "factor": 0.5, "threshold": 0.3, "warmup_steps": 0},
    )
    cfg = base_config(tmp_path, **over)
    keep = tmp_path / "step12.pt"

    class KeepStep12(Trainer):
        def save_checkpoint(self, path=None):
            written = super().save_checkpoint(path)
            if path is None and self.state.step == 12:
                shutil.copy(written, keep)
            return written

    full = KeepStep12(cfg).fit()
    log = Path(cfg["output_dir"]) / "metrics.jsonl"
    full_log = read_log(log)
    saved = load_checkpoint(keep)
    assert saved["progress"]["step"] == 12 and saved["progress"]["position"] == 6 and saved["progress"]["epoch"] == 1
    resumed = train(cfg, resume=keep)
    assert read_log(log) == full_log
    assert resumed.history == full.history and resumed.best == full.best
    assert min(r["lr"] for r in resumed.history) < 0.05  # the plateau schedule did reduce the rate
    assert_same_state(params_of(full.model), params_of(resumed.model), tol=0.0)


def test_resume_with_a_different_config_is_refused(tmp_path):
    cfg = base_config(tmp_path, max_steps=4, epochs=None)
    train(cfg, until_step=2)
    changed = base_config(tmp_path, max_steps=8, epochs=None, optimizer={"lr": 1e-2}, model={"hidden": 9})
    with pytest.raises(
        ConfigError,
        match=r"differs from the checkpoint's in model.hidden \(checkpoint: 8, now: 9\); "
        r"optimizer.lr \(checkpoint: 0.005, now: 0.01\)",
    ):
        Trainer(changed, resume=True)
    # horizon and bookkeeping keys may change
    more = base_config(tmp_path, max_steps=6, epochs=None, checkpoint_every=2)
    assert train(more, resume=True).step == 6


def assert_bitwise_equal(a: Any, b: Any, where: str = "checkpoint") -> None:
    """Nested dicts / lists / tensors / arrays equal bit for bit (NaN-free)."""
    import numpy as np

    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, dict):
        assert a.keys() == b.keys(), (where, a.keys() ^ b.keys())
        for k in a:
            assert_bitwise_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    else:
        assert a == b, (where, a, b)


def _comparable(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """A checkpoint without what legitimately differs between two runs: wall-clock seconds, the metrics log's
    byte length (its lines carry wall-clock times) and the output directory."""
    ckpt = dict(ckpt, progress=dict(ckpt["progress"]), config=dict(ckpt["config"]))
    for key in ("elapsed", "log_bytes"):
        ckpt["progress"].pop(key)
    ckpt["config"].pop("output_dir")
    return ckpt


def test_chained_resume_is_bitwise_equal(tmp_path, capsys):
    """Stopped at step 5 (mid-epoch 1) and 11 (mid-epoch 2) and resumed each time == 16 steps straight, bit for
    bit: weights, EMA, optimizer, schedule, RNG states, progress and the metrics log. The model draws from the
    global generator (dropout), so any extra draw after a resume would change the weights."""
    over = dict(
        model={"name": "pair", "hidden": 8, "dropout": 0.2},
        max_steps=16,
        epochs=None,
        schedule={"name": "plateau", "patience": 0, "warmup_steps": 0},
    )
    full = train(base_config(tmp_path / "a", **over))
    cfg = base_config(tmp_path / "b", **over)
    assert train(cfg, until_step=5).step == 5
    capsys.readouterr()
    assert train(cfg, resume=True, until_step=11).step == 11
    out = Path(cfg["output_dir"])
    assert (
        f"resuming from {out / 'checkpoint.pt'}: step 5, epoch 1 (5 of its 6 batches done)" in capsys.readouterr().out
    )
    resumed = train(cfg, resume=True)
    assert (
        f"resuming from {out / 'checkpoint.pt'}: step 11, epoch 2 (5 of its 6 batches done)" in capsys.readouterr().out
    )
    assert resumed.step == 16 and resumed.history == full.history and resumed.best == full.best
    a_dir = Path(full.checkpoint).parent
    for name in ("checkpoint.pt", "best.pt"):
        assert_bitwise_equal(_comparable(load_checkpoint(a_dir / name)), _comparable(load_checkpoint(out / name)))
    assert read_log(a_dir / "metrics.jsonl") == read_log(out / "metrics.jsonl")
    # the dropout really draws from the generator the checkpoint restores: another torch state changes the run
    assert load_checkpoint(out / "checkpoint.pt")["rng"][0]["torch"].shape[0] > 0
    other = base_config(tmp_path / "c", **over)
    train(other, until_step=11)
    ckpt = load_checkpoint(Path(other["output_dir"]) / "checkpoint.pt")
    ckpt["rng"][0]["torch"] = torch.manual_seed(12345).get_state()
    torch.save(ckpt, Path(other["output_dir"]) / "checkpoint.pt")
    changed = train(other, resume=True)
    assert not torch.equal(params_of(changed.model)["mlp.0.weight"], params_of(full.model)["mlp.0.weight"])


def _one_line_error(args: List[str], capsys) -> str:
    """Run ``escn`` in this process; it must exit with status 2 and one stderr line; return that line."""
    from escn.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("escn train: error: "), err
    return lines[0]


@pytest.fixture
def stopped_run(tmp_path):
    """A pair-potential run stopped at step 2 and its TOML config; returns (config path, checkpoint path)."""
    cfg = base_config(tmp_path, max_steps=4, epochs=None)
    train(cfg, until_step=2)
    path = tmp_path / "cfg.toml"
    path.write_text(_to_toml(cfg))
    return path, Path(cfg["output_dir"]) / "checkpoint.pt"


@pytest.mark.parametrize(
    "damage, expected",
    [
        (
            "truncate",
            r"escn train: error: checkpoint '.*checkpoint.pt' \(\d+ bytes\) is truncated or corrupt: "
            r"torch.load failed \(.+\); expected a complete file written by escn train",
        ),
        ("garbage", r"is truncated or corrupt: torch.load failed \(.+\); expected a complete file"),
        (
            "foreign",
            r"is not an escn training checkpoint: expected a dict with format 'escn-train-checkpoint', "
            r"got a dict with format None",
        ),
        ("incomplete", r"lacks the entries optimizer_state, rng \(expected every entry"),
        (
            "weights",
            r"the checkpoint's weights do not fit the model built from the config: shapes differ: "
            r"atom_energy.weight \(3, 1\) in the checkpoint, \(2, 1\) in the model",
        ),
        (
            "model_config",
            r"the config differs from the checkpoint's in model.num_types \(checkpoint: 3, now: 2\)\. "
            r"Only epochs, .* may change\.",
        ),
    ],
)
def test_resume_from_an_unusable_checkpoint_is_one_line(stopped_run, capsys, damage, expected):
    path, ckpt_path = stopped_run
    data = ckpt_path.read_bytes()
    if damage == "truncate":
        ckpt_path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        ckpt_path.write_bytes(bytes(range(256)) * 8)
    else:
        ckpt = load_checkpoint(ckpt_path)
        if damage == "foreign":
            ckpt = {"state_dict": ckpt["model_state"]}
        elif damage == "incomplete":
            del ckpt["optimizer_state"], ckpt["rng"]
        elif damage == "weights":  # the weights of a model with three atom types (species) in a 2-type run
            ckpt["model_state"]["atom_energy.weight"] = torch.zeros(3, 1, dtype=torch.float64)
        else:
            ckpt["model_config"]["num_types"] = 3
        torch.save(ckpt, ckpt_path)
    line = _one_line_error(["train", str(path), "--resume"], capsys)
    assert re.search(expected, line), line
    if damage in ("truncate", "garbage"):  # a damaged file is never loaded: the error says so, nothing ran
        assert ckpt_path.read_bytes() != data


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            ["--set", "model.hidden=9"],
            r"differs from the checkpoint's in model.hidden \(checkpoint: 8, now: 9\)\. "
            r"Only epochs, max_steps, .* may change\.",
        ),
        (["--set", "model.num_types=3"], r"differs from the checkpoint's in model.num_types \(checkpoint: 2, now: 3\)"),
        (
            ["--set", "model.hiden=9"],
            r"unknown config key 'model.hiden' \(did you mean 'hidden'\?\); model 'pair' "
            r"\(PairPotential\) takes: cutoff, num_basis, hidden, num_types",
        ),
    ],
)
def test_resume_with_another_model_is_one_line(stopped_run, capsys, change, expected):
    path, _ = stopped_run
    line = _one_line_error(["train", str(path), "--resume", *change], capsys)
    assert re.search(expected, line), line


def test_escn_resume_with_other_lmax_channels_or_species_is_one_line(tmp_path, capsys):
    model = _model_section("escn")
    cfg = base_config(tmp_path, model=model, max_steps=2, epochs=None)
    train(cfg, until_step=1)
    path = tmp_path / "cfg.toml"
    path.write_text(_to_toml(cfg))
    lmax, channels = model["lmax"], model["channels"]
    line = _one_line_error(
        ["train", str(path), "--resume", "--set", f"model.lmax={lmax + 1}", "--set", f"model.channels={channels * 2}"],
        capsys,
    )
    assert (
        f"model.channels (checkpoint: {channels}, now: {channels * 2}); model.lmax (checkpoint: {lmax}, now: "
        f"{lmax + 1})"
    ) in line, line
    line = _one_line_error(["train", str(path), "--overwrite", "--set", "model.lmx=3"], capsys)
    assert "unknown config key 'model.lmx' (did you mean 'lmax'?)" in line
    # (other species: tests/test_species.py) the same weights under a config of another width: the differing
    # tensors are named with their shapes
    ckpt_path = Path(cfg["output_dir"]) / "checkpoint.pt"
    ckpt = load_checkpoint(ckpt_path)
    ckpt["config"]["model"]["channels"] = ckpt["model_config"]["channels"] = channels * 2
    torch.save(ckpt, ckpt_path)
    line = _one_line_error(["train", str(path), "--resume", "--set", f"model.channels={channels * 2}"], capsys)
    assert re.search(
        r"weights do not fit the model built from the config: shapes differ: \S+ \(.*\) in the checkpoint, "
        r"\(.*\) in the model",
        line,
    ), line


def test_load_and_evaluate_name_the_weights_that_do_not_fit(stopped_run, capsys):
    from escn.checkpoint import CheckpointError
    from escn.cli import main
    from escn.models.io import load

    _, ckpt_path = stopped_run
    ckpt = load_checkpoint(ckpt_path)
    ckpt["ema_state"]["atom_energy.weight"] = torch.zeros(3, 1, dtype=torch.float64)
    del ckpt["ema_state"]["mlp.0.bias"]
    torch.save(ckpt, ckpt_path)
    expected = (
        f"checkpoint {str(ckpt_path)!r}: its EMA weights do not fit the 'pair' model its model_config builds: "
        "shapes differ: atom_energy.weight (3, 1) in the checkpoint, (2, 1) in the model; missing from the "
        "checkpoint: mlp.0.bias"
    )
    with pytest.raises(CheckpointError) as e:
        load(ckpt_path)
    assert str(e.value) == expected
    assert_same_state(params_of(load(ckpt_path, ema=False)), ckpt["model_state"], tol=0.0)  # the raw weights fit
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(ckpt_path), "test_train:make_data", "--kwargs", '{"n": 3}'])
    assert e.value.code == 2 and capsys.readouterr().err == f"escn evaluate: error: {expected}\n"


def test_debug_flag_shows_the_traceback_and_the_default_does_not(stopped_run):
    path, ckpt_path = stopped_run
    ckpt_path.write_bytes(ckpt_path.read_bytes()[:1000])
    path.write_text(path.read_text().replace('name = "pair"', f'name = "{PAIR}"'))  # importable in a subprocess
    proc = subprocess.run(
        [sys.executable, "-m", "escn", "train", str(path), "--resume"], capture_output=True, text=True, env=_env()
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("escn train: error: checkpoint ") and "is truncated or corrupt" in proc.stderr
    from escn.checkpoint import CheckpointError
    from escn.cli import main

    with pytest.raises(CheckpointError, match="is truncated or corrupt"):
        main(["train", str(path), "--resume", "--debug"])


_DIE_WHILE_SAVING = """
import os, signal, sys
import torch

def save_half_then_die(obj, f):
    f.write(b"PK\\x03\\x04 the first bytes of a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = save_half_then_die
from escn.cli import main
main(["train", sys.argv[1]])
"""


def test_killed_while_writing_the_first_checkpoint(tmp_path, capsys):
    """SIGKILL inside the first checkpoint write leaves only a temporary file; the next run removes it, says so,
    never reads it (--resume finds no checkpoint) and a fresh run trains normally."""
    cfg = base_config(tmp_path, model={"name": PAIR, "hidden": 8}, max_steps=6, epochs=None)
    path = tmp_path / "cfg.toml"
    path.write_text(_to_toml(cfg))
    out = Path(cfg["output_dir"])
    proc = subprocess.run(
        [sys.executable, "-c", _DIE_WHILE_SAVING, str(path)], capture_output=True, text=True, env=_env(), cwd=tmp_path
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    partial = list(out.glob(".checkpoint.pt.*.tmp"))
    assert len(partial) == 1 and not (out / "checkpoint.pt").exists()

    line = _one_line_error(["train", str(path), "--resume"], capsys)
    assert line == (
        f"escn train: error: cannot resume: checkpoint {str(out / 'checkpoint.pt')!r} not found: the run "
        "was killed while writing its first checkpoint (the partial file was removed); start it afresh "
        "without --resume"
    )
    assert not partial[0].exists()

    (out / partial[0].name).write_bytes(b"PK\x03\x04 partial")  # as if killed again
    (out / ".best.pt.abc123.tmp").write_bytes(b"PK\x03\x04 partial")
    from escn.cli import main

    assert main(["train", str(path)]) == 0
    printed = capsys.readouterr().out
    assert f"removed {out / partial[0].name}: a partial checkpoint" in printed
    assert f"removed {out / '.best.pt.abc123.tmp'}: a partial checkpoint" in printed
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "checkpoint.pt", "config.json", "metrics.jsonl"]
    assert load_checkpoint(out / "checkpoint.pt")["progress"]["step"] == 6


def test_task_keys_from_node_and_graph_attrs(tmp_path):
    cfg = base_config(
        tmp_path,
        model={"name": "pair", "vector_head": True, "num_classes": 2},
        data={
            "train": {"source": "test_train:make_data", "kwargs": {"n": 12, "tasks": True}},
            "valid": {"source": "test_train:make_data", "kwargs": {"n": 4, "seed": 1, "tasks": True}},
        },
        loss={"node_vectors": {"weight": 1.0, "type": "huber", "delta": 0.5}, "logits": {"type": "cross_entropy"}},
        epochs=2,
    )
    result = train(cfg)
    last = result.history[-1]
    assert 0.0 <= last["valid_acc_logits"] <= 1.0 and last["valid_mae_node_vectors"] > 0
    assert "valid_mae_energy" not in last  # only the loss keys are tracked
    bad = base_config(
        tmp_path / "x",
        model={"name": "pair"},
        loss={"node_vectors": 1.0},
        data={
            "train": {"source": "test_train:make_data", "kwargs": {"n": 4, "tasks": True}},
            "valid": {"source": "test_train:make_data", "kwargs": {"n": 2, "tasks": True}},
        },
        epochs=1,
    )
    with pytest.raises(
        ValueError,
        match=r"loss key 'node_vectors': the model returned no 'node_vectors' output "
        r"\(it returned energy\)",
    ):
        train(bad)


def test_torch_file_source_and_valid_fraction(tmp_path):
    path = tmp_path / "train.pt"
    torch.save(make_data(12), path)
    cfg = base_config(tmp_path, data={"train": str(path), "valid": None, "valid_fraction": 0.25}, epochs=1)
    cfg["data"].pop("valid")
    trainer = Trainer(cfg)
    assert len(trainer.train_set) == 9 and len(trainer.valid_set) == 3
    assert trainer.train_set[0].edge_src is not None and trainer.train_set[0].pos.dtype == torch.float64


def test_extxyz_source(tmp_path):
    ase_io = pytest.importorskip("ase.io")
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for g in make_data(5):
        atoms = Atoms(numbers=(g.atom_types + 1).tolist(), positions=g.pos.numpy())
        atoms.calc = SinglePointCalculator(atoms, energy=float(g.energy), forces=g.forces.numpy())
        frames.append(atoms)
    path = tmp_path / "data.extxyz"
    ase_io.write(str(path), frames)
    cfg = base_config(
        tmp_path, model={"name": "pair", "num_types": 3}, data={"train": str(path), "valid": str(path)}, epochs=1
    )
    trainer = Trainer(cfg)
    g = trainer.train_set[2]
    assert torch.allclose(g.energy, make_data(5)[2].energy) and g.forces.shape == (g.num_nodes, 3)
    trainer.fit()


# --------------------------------------------------------------------------- CLI, evaluate, load
def test_cli_train_evaluate_and_load(tmp_path, capsys):
    from escn.cli import main
    from escn.models.io import load

    cfg = base_config(tmp_path, epochs=2)
    path = tmp_path / "cfg.toml"
    path.write_text(_to_toml(cfg))
    assert main(["train", str(path), "--set", "seed=4"]) == 0
    out = Path(cfg["output_dir"])
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["config"]["seed"] == 4
    capsys.readouterr()

    data = tmp_path / "test.pt"
    torch.save(make_data(5, seed=9), data)
    assert main(["evaluate", str(out / "checkpoint.pt"), str(data)]) == 0
    text = capsys.readouterr().out
    rows = {ln.split()[0]: ln.split()[1:] for ln in text.splitlines()[2:]}
    assert {"energy", "forces", "energy_per_atom", "loss"} <= set(rows), text
    assert (
        main(
            [
                "evaluate",
                str(out / "checkpoint.pt"),
                "test_train:make_data",
                "--kwargs",
                '{"n": 5, "seed": 9}',
                "--json",
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_items"] == 5 and float(rows["energy"][0]) == pytest.approx(metrics["mae_energy"], rel=1e-3)
    # without DATA: the config's validation source (n = 6, seed = 1), its kwargs updated by --kwargs
    assert main(["evaluate", str(out / "checkpoint.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_items"] == 6
    assert main(["evaluate", str(out / "checkpoint.pt"), "--kwargs", '{"seed": 9, "n": 5}', "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == metrics  # the same 5 items as the explicit source above

    model = load(out / "checkpoint.pt")
    assert not model.training and isinstance(model, PairPotential)
    assert_same_state(params_of(model), ckpt["ema_state"], tol=0.0)
    raw = load(out / "checkpoint.pt", ema=False)
    assert_same_state(params_of(raw), ckpt["model_state"], tol=0.0)
    assert next(model.parameters()).dtype == torch.float64


def test_cli_errors(tmp_path, capsys):
    from escn.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", str(tmp_path / "none.toml")])
    assert e.value.code == 2 and "config file" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text(_to_toml(base_config(tmp_path, dtype="f64")))
    with pytest.raises(SystemExit) as e:
        main(["train", str(bad)])
    assert e.value.code == 2 and "'dtype': expected one of 'float32', 'float64', got 'f64'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(tmp_path / "none.pt"), "x.pt"])
    assert e.value.code == 2 and "checkpoint" in capsys.readouterr().err
    no_valid = base_config(tmp_path, epochs=1, output_dir=str(tmp_path / "nv"))
    del no_valid["data"]["valid"]
    (tmp_path / "nv.toml").write_text(_to_toml(no_valid))
    assert main(["train", str(tmp_path / "nv.toml")]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(tmp_path / "nv" / "checkpoint.pt")])
    assert e.value.code == 2 and "no data.valid source" in capsys.readouterr().err
    assert main(["demo", "--lmax", "1"]) == 0  # the older subcommands still work


def _to_toml(d: Dict[str, Any], prefix: str = "") -> str:
    """A minimal TOML writer for the test configs (tables, inline tables, scalars)."""

    def lit(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(lit(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {lit(x)}" for k, x in v.items() if x is not None) + " }"
        raise TypeError(v)

    scalars = [f"{k} = {lit(v)}" for k, v in d.items() if not isinstance(v, dict) and v is not None]
    tables = [
        f"\n[{prefix}{k}]\n" + "\n".join(f"{kk} = {lit(vv)}" for kk, vv in v.items() if vv is not None)
        for k, v in d.items()
        if isinstance(v, dict)
    ]
    return "\n".join(scalars) + "\n" + "\n".join(tables) + "\n"


def test_example_configs_are_valid():
    configs = sorted((REPO / "examples" / "configs").glob("*.*"))
    assert configs
    for path in configs:
        if path.suffix in (".yaml", ".yml"):
            pytest.importorskip("yaml")
        cfg = load_config(path)
        if cfg.model.name == "escn":
            _model_section("escn")  # skips until the eSCN model exists
        build_model(cfg.model.name, **cfg.model.kwargs)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_off_a_terminal_is_plain_lines():
    """In a log file or pipe no bar is drawn: one plain line per interval and after the epoch's last batch."""
    from escn.train.progress import EpochProgress

    log = io.StringIO()
    bar = EpochProgress(epoch=0, total=3, initial=1, interval=0.0, stream=log)
    bar.update({"loss": 0.5, "lr": 1e-3})
    bar.update({"loss": 0.25, "lr": 1e-3})
    bar.close()
    assert log.getvalue().splitlines() == [
        "epoch 1 [2/3] loss 0.5000 lr 1.000e-03",
        "epoch 1 [3/3] loss 0.2500 lr 1.000e-03",
    ]
    quiet = io.StringIO()
    bar = EpochProgress(epoch=0, total=2, interval=0.0, stream=quiet, enabled=False)
    bar.update({"loss": 0.5})
    bar.close()
    assert quiet.getvalue() == ""


def test_progress_on_a_terminal_is_a_tqdm_bar():
    from escn.train.progress import EpochProgress

    term = _Terminal()
    bar = EpochProgress(epoch=1, total=4, initial=1, interval=0.0, stream=term)
    for loss in (0.5, 0.25, 0.125):
        bar.update({"loss": loss})
    bar.close()
    out = term.getvalue()
    assert "\r" in out  # redrawn in place
    assert "epoch 2" in out and "4/4" in out and "loss 0.1250" in out
    assert "epoch 2 [" not in out  # no plain lines


# --------------------------------------------------------------------------- SIGKILL and resume
def _env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, monkeypatch, capsys):
    """SIGKILL during step 23 (checkpoints every 5 steps, 15 batches per epoch): the checkpoint of step 20,
    mid-epoch 2, is intact, and resuming it from the command line ends where the uninterrupted run does."""
    steps, every, kill_at = 40, 5, 23
    cfg = base_config(
        tmp_path / "killed",
        model={"name": PAIR, "hidden": 8},
        max_steps=steps,
        epochs=None,
        checkpoint_every=every,
        data={"train": {"source": "test_train:make_data", "kwargs": {"n": 60}}},
    )
    path = tmp_path / "cfg.toml"
    path.write_text(_to_toml(cfg))
    out = Path(cfg["output_dir"])
    proc = subprocess.run(
        [sys.executable, "-m", "escn", "train", str(path)],
        cwd=tmp_path,
        env=_env(ESCN_TEST_KILL_AT_STEP=str(kill_at)),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    log = out / "metrics.jsonl"
    logged = [json.loads(r) for r in log.read_text().splitlines() if r.endswith("}")]
    assert max(r["step"] for r in logged) == kill_at - 1
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["progress"]["step"] == 20 and ckpt["progress"]["epoch"] == 1 and ckpt["sampler"]["position"] == 5

    from escn.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", str(path), "--resume"]) == 0  # in this process: saves a second interpreter start-up
    printed = capsys.readouterr().out
    assert f"resuming from {out / 'checkpoint.pt'}: step 20, epoch 2 (5 of its 15 batches done)" in printed
    assert "training finished: 40 steps" in printed

    straight = train(
        base_config(
            tmp_path / "straight",
            model={"name": PAIR, "hidden": 8},
            max_steps=steps,
            epochs=None,
            checkpoint_every=every,
            data={"train": {"source": "test_train:make_data", "kwargs": {"n": 60}}},
        )
    )
    final = load_checkpoint(out / "checkpoint.pt")
    assert final["progress"]["step"] == steps
    assert_same_state(final["model_state"], params_of(straight.model), tol=0.0)
    assert read_log(log) == read_log(Path(straight.checkpoint).parent / "metrics.jsonl")


def test_ema_warm_up_forgets_the_initial_weights():
    from escn.train.ema import EMA

    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    holder = torch.nn.Module()
    holder.p = p
    ema = EMA(holder, 0.999)
    with torch.no_grad():
        p.fill_(1.0)
    ema.update(holder)  # d = min(0.999, 1/10) = 0.1
    assert torch.allclose(ema.state_dict()["p"], torch.full((3,), 0.9, dtype=torch.float64), atol=1e-15)
    for _ in range(2000):
        ema.update(holder)
    # a plain 0.999 average would still hold 0.999^2001 = 13.5 % of the initial zeros
    assert (1 - ema.state_dict()["p"]).abs().max() < 1e-3


def test_ema_is_an_averaged_model_with_exact_warm_up_values():
    """EMA update n: ema <- d ema + (1 - d) w with d = min(decay, (1 + n) / (10 + n)), bit for bit; buffers follow
    the model; state and update count survive a round trip."""
    from torch.optim.swa_utils import AveragedModel

    from escn.train.ema import EMA

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    model.register_buffer("scale", torch.tensor(2.0, dtype=torch.float64))
    ema = EMA(model, 0.95)
    assert isinstance(ema.averaged, AveragedModel) and ema.updates == 0
    expected = {k: v.detach().clone() for k, v in model.named_parameters()}
    for n in range(40):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model.scale.fill_(3.0 + n)
        ema.update(model)
        d = min(0.95, (1.0 + n) / (10.0 + n))
        for k, p in model.named_parameters():
            expected[k] = expected[k].mul(d).add(p.detach(), alpha=1.0 - d)
    state = ema.state_dict()
    for k, v in expected.items():
        assert torch.equal(state[k], v), k
    assert float(state["scale"]) == 42.0 and ema.updates == 40
    other = EMA(model, 0.95)
    other.load_state_dict(state, updates=ema.updates)
    model_out = model(torch.ones(1, 3, dtype=torch.float64))
    assert other.updates == 40 and torch.equal(
        other.module(torch.ones(1, 3, dtype=torch.float64)), ema.module(torch.ones(1, 3, dtype=torch.float64))
    )
    assert not torch.equal(model_out, ema.module(torch.ones(1, 3, dtype=torch.float64)))


@pytest.mark.parametrize("name", ["constant", "cosine", "warmup_cosine", "linear"])
def test_step_schedules_are_lambda_lr_with_exact_values(name):
    """The optimizer runs step k at the closed-form rate, bit for bit, under torch's LambdaLR."""
    from torch.optim.lr_scheduler import LambdaLR

    from escn.train.config import ScheduleConfig
    from escn.train.schedule import LRSchedule

    base, total, warm, floor = 0.003, 25, 4, 0.1
    config = ScheduleConfig(name=name, warmup_steps=warm, min_lr_ratio=floor)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    schedule = LRSchedule(config, opt, total)
    assert isinstance(schedule.scheduler, LambdaLR)
    seen = []
    for step in range(total + 5):
        seen.append(opt.param_groups[0]["lr"])
        assert schedule.lr(step) == seen[-1]
        opt.step()
        schedule.step()

    def expected(k: int) -> float:
        w = warm if name in ("warmup_cosine", "linear") else 0
        if name == "constant":
            return base * 1.0
        if k < w:
            return base * ((k + 1) / w)
        p = min(1.0, (k - w) / max(1, total - w))
        shape = 1.0 - p if name == "linear" else 0.5 * (1.0 + math.cos(math.pi * p))
        return base * (floor + (1.0 - floor) * shape)

    assert seen == [expected(k) for k in range(total + 5)]
    if name != "constant":
        assert seen[-1] == pytest.approx(base * floor, rel=1e-15)


def test_plateau_schedule_is_reduce_lr_on_plateau():
    """Reduced by factor after more than `patience` validations without a relative improvement of `threshold`,
    never below min_lr_ratio * lr; non-finite losses are ignored."""
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    from escn.train.config import ScheduleConfig
    from escn.train.schedule import LRSchedule

    config = ScheduleConfig(name="plateau", factor=0.5, patience=1, threshold=0.1, min_lr_ratio=0.2)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = LRSchedule(config, opt, 100)
    assert isinstance(schedule.scheduler, ReduceLROnPlateau)
    rates = []
    for loss in (1.0, 0.95, 0.93, 0.5, float("nan"), 0.49, 0.48, 0.47, 0.46, 0.45, 0.44, 0.43):
        schedule.observe(loss)
        rates.append(schedule.lr(0))
    # 0.95 and 0.93 are within 10 % of 1.0: the second bad one reduces; 0.5 improves; then two bad per reduction
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2]


def test_resume_reads_the_schedule_state_of_earlier_checkpoints(tmp_path):
    """A checkpoint whose schedule_state has the earlier layout (scale, best, bad_epochs, total_steps) and whose
    optimizer groups lack the scheduler's initial_lr resumes to the same weights, bit for bit."""
    over = dict(max_steps=10, epochs=None)
    full = train(base_config(tmp_path / "a", **over))
    cfg = base_config(tmp_path / "b", **over)
    train(cfg, until_step=4)
    path = Path(cfg["output_dir"]) / "checkpoint.pt"
    ckpt = load_checkpoint(path)
    ckpt["schedule_state"] = {
        "scale": 1.0,
        "best": None,
        "bad_epochs": 0,
        "total_steps": ckpt["schedule_state"]["total_steps"],
    }
    for group in ckpt["optimizer_state"]["param_groups"]:
        group.pop("initial_lr")
        group["lr"] = 123.0  # the earlier loop set the rate at the start of each step
    torch.save(ckpt, path)
    resumed = train(cfg, resume=True)
    assert_same_state(params_of(full.model), params_of(resumed.model), tol=0.0)
    assert read_log(Path(full.checkpoint).parent / "metrics.jsonl") == read_log(
        Path(cfg["output_dir"]) / "metrics.jsonl"
    )


# --------------------------------------------------------------------------- fitted per-type energies
def test_fit_atom_energies_recovers_exact_references():
    from escn.train.atom_energies import fit_atom_energies

    ref = torch.tensor([-3.25, 1.5, 0.0, 7.0], dtype=torch.float64)  # type 2 never occurs
    gen = torch.Generator().manual_seed(0)
    graphs = []
    for n in (3, 5, 4, 7, 6):
        types = torch.tensor([0, 1, 3] * 3)[:n][torch.randperm(n, generator=gen)]
        graphs.append(
            AtomsGraph(
                pos=torch.randn(n, 3, generator=gen, dtype=torch.float64), atom_types=types, energy=ref[types].sum()
            )
        )
    graphs.append(AtomsGraph(pos=torch.zeros(2, 3), atom_types=torch.tensor([0, 1])))  # no energy: skipped
    fit = fit_atom_energies(graphs, 4)
    assert fit.shape == (4,)
    assert (fit - ref).abs().max() <= 1e-10
    with pytest.raises(ValueError, match="atom type outside"):
        fit_atom_energies(graphs, 3)
    with pytest.raises(ValueError, match="no training item has an energy"):
        fit_atom_energies(graphs[-1:], 4)
    with pytest.raises(ValueError, match="num_types"):
        fit_atom_energies(graphs, 0)


@pytest.mark.parametrize("fit", [True, False])
def test_trainer_starts_from_fitted_atom_energies(tmp_path, fit):
    """A fresh eSCN run starts with per-type offsets that fit the training energies (mean per-atom error of the
    offsets alone well below that of zero offsets); fit_atom_energies = false leaves them at zero."""
    from escn.train.atom_energies import fit_atom_energies

    cfg = base_config(tmp_path, model=_model_section("escn"), max_steps=1, epochs=None, fit_atom_energies=fit)
    trainer = Trainer(cfg)
    try:
        offsets = trainer.model.atom_energy.weight[:, 0].detach()
        items = make_data(22, 0)
        expected = fit_atom_energies(items, 2) if fit else torch.zeros(2, dtype=torch.float64)
        assert (offsets - expected).abs().max() <= 1e-12
        if fit:
            per_atom_err = [abs(float(g.energy) - float(expected[g.atom_types].sum())) / g.num_nodes for g in items]
            mean_abs = sum(abs(float(g.energy)) / g.num_nodes for g in items) / len(items)
            assert sum(per_atom_err) / len(items) < 0.5 * mean_abs
    finally:
        trainer.close()


def test_checkpoint_with_the_earlier_key_names_loads_with_identical_outputs(tmp_path):
    # checkpoints written before the backbone was its own module name its children at the top level
    from escn.data import AtomsGraph, collate
    from escn.models.io import load

    cfg = base_config(tmp_path, model=_model_section("escn"), max_steps=1, epochs=None)
    train(cfg)
    ckpt_path = Path(cfg["output_dir"]) / "checkpoint.pt"
    ckpt = load_checkpoint(ckpt_path)
    for key in ("model_state", "ema_state"):
        if ckpt.get(key) is not None:
            assert any(k.startswith("backbone.") for k in ckpt[key])
            ckpt[key] = {
                k.replace("backbone.", "", 1)
                .replace("energy_head.mlp.", "energy_head.", 1)
                .replace("energy_head.atom_energy.", "atom_energy.", 1): v
                for k, v in ckpt[key].items()
            }
            assert "atom_energy.weight" in ckpt[key]
    old_path = tmp_path / "old.pt"
    torch.save(ckpt, old_path)
    new, old = load(ckpt_path), load(old_path)
    g = torch.Generator().manual_seed(0)
    batch = collate(
        [
            AtomsGraph(
                pos=torch.randn(6, 3, generator=g, dtype=torch.float64) * 1.3,
                atom_types=torch.tensor([0, 1, 0, 1, 1, 0]),
            )
        ]
    ).with_radius_graph(new.cutoff)
    batch = batch.to(dtype=next(new.parameters()).dtype)
    a, b = new(batch), old(batch)
    assert torch.equal(a["energy"], b["energy"]) and torch.equal(a["forces"], b["forces"])


def test_ema_of_float32_weights_is_kept_in_float64():
    """A float32 weight far from zero (an atom-type energy offset) is averaged without drift: the average equals
    the float64 average of the same float32 weights (in the module: rounded to float32), over 16,000 updates;
    the float64 masters survive a state round trip, so a resumed average continues bit for bit."""
    from escn.train.ema import EMA

    holder = torch.nn.Module()
    holder.offset = torch.nn.Parameter(torch.full((3,), -53.5, dtype=torch.float32))
    ema = EMA(holder, 0.999)
    g = torch.Generator().manual_seed(0)
    reference = holder.offset.detach().to(torch.float64).clone()
    for n in range(16000):
        with torch.no_grad():
            holder.offset.copy_(-53.5 + 1e-3 * torch.randn(3, generator=g, dtype=torch.float64))
        ema.update(holder)
        d = min(0.999, (1.0 + n) / (10.0 + n))
        reference = reference * d + holder.offset.detach().to(torch.float64) * (1.0 - d)
        if n == 7999:
            state, updates = ema.state_dict(), ema.updates
    assert ema.state_dict()["offset"].dtype == torch.float64
    assert (ema.state_dict()["offset"] - reference).abs().max().item() < 1e-10
    assert torch.equal(ema.module.offset.detach(), reference.to(torch.float32))
    # a float32 average drifts here by several meV: 1e-3 x the ulp of 53.5 is below its rounding error
    plain = torch.full((3,), -53.5, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    for n in range(16000):
        w = (-53.5 + 1e-3 * torch.randn(3, generator=g, dtype=torch.float64)).to(torch.float32)
        d = min(0.999, (1.0 + n) / (10.0 + n))
        plain = plain * d + w * (1.0 - d)
    assert (plain.to(torch.float64) - reference).abs().max().item() > 1e-4

    resumed = EMA(holder, 0.999)
    resumed.load_state_dict(state, updates=updates)
    g = torch.Generator().manual_seed(0)
    weights = [-53.5 + 1e-3 * torch.randn(3, generator=g, dtype=torch.float64) for _ in range(16000)]
    for w in weights[8000:]:
        with torch.no_grad():
            holder.offset.copy_(w)
        resumed.update(holder)
    assert torch.equal(resumed.state_dict()["offset"], ema.state_dict()["offset"])
