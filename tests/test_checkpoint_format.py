"""Checkpoints hold only tensors and plain values: ``torch.load(..., weights_only=True)`` reads every file
``escn train`` writes, the configs are JSON-compatible, and a file of the earlier format (pickled numpy / python
RNG objects) is refused with one line naming it and the conversion, which gives a checkpoint that resumes bit
for bit."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import torch
from test_train import _comparable, _model_section, assert_bitwise_equal, base_config

from escn.checkpoint import VERSION, CheckpointError, load_checkpoint, rng_state, set_rng_state, upgrade_checkpoint
from escn.models.io import load
from escn.train import train


def _plain(obj: Any, where: str = "checkpoint") -> None:
    """obj holds only tensors and the values weights_only=True rebuilds (dict, list, tuple, str, int, float,
    bool, None)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert type(k) in (str, int), (where, k)
            _plain(v, f"{where}.{k}")
    elif type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            _plain(v, f"{where}[{i}]")
    else:
        assert obj is None or type(obj) in (str, int, float, bool, torch.Tensor), (where, type(obj))


def _json_equal(obj: Any) -> bool:
    return json.loads(json.dumps(obj)) == obj


def _as_version_1(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """The checkpoint as escn wrote it before version 2: numpy's and python's RNG states pickled as the tuples
    ``np.random.get_state()`` / ``random.getstate()`` return (numpy arrays inside)."""
    rngs = []
    for r in ckpt["rng"]:
        n, p = r["numpy"], r["python"]
        rngs.append(
            {
                **r,
                "numpy": (
                    n["bit_generator"],
                    n["key"].numpy().astype(np.uint32),
                    n["pos"],
                    n["has_gauss"],
                    n["cached_gaussian"],
                ),
                "python": (p["version"], tuple(p["state"].tolist()), p["gauss_next"]),
            }
        )
    return {**ckpt, "rng": rngs, "version": 1}


@pytest.fixture(scope="module")
def escn_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("escn_run")
    cfg = base_config(tmp, model=_model_section("escn"), max_steps=2, epochs=None)
    train(cfg)
    return Path(cfg["output_dir"])


@pytest.mark.parametrize("name", ["checkpoint.pt", "best.pt"])
def test_written_checkpoints_load_weights_only_with_json_configs(escn_run, name):
    ckpt = torch.load(escn_run / name, weights_only=True)
    assert ckpt["version"] == VERSION == 2
    _plain(ckpt)
    assert _json_equal(ckpt["model_config"]) and _json_equal(ckpt["config"])
    assert isinstance(ckpt["rng"][0]["numpy"]["key"], torch.Tensor) and ckpt["rng"][0]["numpy"]["key"].shape == (624,)
    assert ckpt["rng"][0]["python"]["state"].shape == (625,)
    model = load(escn_run / name)  # escn.models.load reads it through the weights-only path
    assert type(model).__name__ == "ESCN"


def test_rng_state_round_trip_is_exact():
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.standard_normal(3)  # an odd count: numpy's legacy generator now holds a cached gaussian
    random.gauss(0.0, 1.0)  # and python's holds its gauss_next
    state = rng_state()
    assert state["numpy"]["has_gauss"] == 1 and isinstance(state["python"]["gauss_next"], float)
    draws = (
        torch.rand(5),
        np.random.standard_normal(5),
        np.random.rand(3),
        [random.random() for _ in range(3)],
        random.gauss(0.0, 1.0),
    )
    set_rng_state(state)
    again = (
        torch.rand(5),
        np.random.standard_normal(5),
        np.random.rand(3),
        [random.random() for _ in range(3)],
        random.gauss(0.0, 1.0),
    )
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and np.array_equal(draws[2], again[2])
    assert draws[3] == again[3] and draws[4] == again[4]


def test_version_1_checkpoint_is_refused_in_one_line_and_converts(escn_run, tmp_path, capsys):
    from escn.cli import main

    old = tmp_path / "old.pt"
    torch.save(_as_version_1(load_checkpoint(escn_run / "checkpoint.pt")), old)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(old)
    msg = str(info.value)
    assert "\n" not in msg and repr(str(old)) in msg and "numpy" in msg
    assert f"escn upgrade-checkpoint {old}" in msg and "load_checkpoint(path, trusted=True)" in msg
    with pytest.raises(CheckpointError, match="holds pickled Python objects"):
        load(old)
    # the command line: one line on stderr, status 2
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(old)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "escn upgrade-checkpoint" in err[0]
    # explicit opt-in for a trusted file, then the conversion
    assert load_checkpoint(old, trusted=True)["version"] == 1
    new = tmp_path / "new.pt"
    assert main(["upgrade-checkpoint", str(old), "--output", str(new)]) == 0
    assert f"wrote {new}" in capsys.readouterr().out
    converted = torch.load(new, weights_only=True)
    _plain(converted)
    assert converted["version"] == VERSION
    assert_bitwise_equal(_comparable(converted), _comparable(load_checkpoint(escn_run / "checkpoint.pt")))
    a, b = load(new), load(escn_run / "checkpoint.pt")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_garbage_is_still_reported_as_corrupt_not_as_an_old_format(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match="is truncated or corrupt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="is truncated or corrupt"):
        load_checkpoint(bad, trusted=True)


def test_resume_from_a_converted_version_1_checkpoint_is_bitwise_equal(tmp_path):
    """A run stopped at step 5, its checkpoint rewritten in the old format and converted back, then resumed ==
    the uninterrupted run, bit for bit (the numpy and python RNG states survive both conversions exactly)."""
    over = dict(model={"name": "pair", "hidden": 8, "dropout": 0.2}, max_steps=9, epochs=None)
    full = train(base_config(tmp_path / "a", **over))
    cfg = base_config(tmp_path / "b", **over)
    train(cfg, until_step=5)
    path = Path(cfg["output_dir"]) / "checkpoint.pt"
    torch.save(_as_version_1(load_checkpoint(path)), path)
    with pytest.raises(CheckpointError, match="escn upgrade-checkpoint"):
        train(cfg, resume=True)
    upgrade_checkpoint(path)
    resumed = train(cfg, resume=True)
    assert resumed.step == 9 and resumed.history == full.history
    assert_bitwise_equal(_comparable(load_checkpoint(Path(full.checkpoint))), _comparable(load_checkpoint(path)))
