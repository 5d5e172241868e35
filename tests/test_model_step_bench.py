"""escn/bench/model_step.py (python -m escn.bench.model_step): the driver, its two worker processes and what they report, on a tiny model
(``--quick``, this checkout against itself). No timing is asserted; the checks are on the plumbing and on
numbers that do not depend on the machine (edge count, energies, memory peaks, profiler bookkeeping)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "escn" / "bench" / "model_step.py"


def _module():
    name = "escn_bench_model_step"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_quick_run_current_against_itself(tmp_path):
    pytest.importorskip("ase")
    out_json = tmp_path / "out.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "escn.bench.model_step",
            "--quick",
            "--baseline-dir",
            str(REPO),
            "--threads",
            "1",
            "--activations",
            "gate,s2",
            "--json",
            str(out_json),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ESCN step: lmax 2, mmax 1, 4 channels, 1 layers, 32 atoms, 384 edges")
    for label in ("inference", "training step", "training peak", "inference peak"):
        per_rep = r" \(per rep \d+\.\d\d - \d+\.\d\d\)" if label in ("inference", "training step") else ""
        rows = [ln for ln in lines if re.match(rf"\s+{label}\s+baseline .* baseline/current \d+\.\d\dx{per_rep}$", ln)]
        assert len(rows) == 2, (label, proc.stdout)  # one per activation
    assert sum(ln.strip().startswith("SO(2) matmuls") for ln in lines) == 2
    assert "ambiguous" not in proc.stdout and "not found" not in proc.stdout

    res = json.loads(out_json.read_text())
    assert res["reps"] == 1 and [r["activation"] for r in res["runs"]] == ["gate", "s2"]
    for run in res["runs"]:
        base, cur = run["info"]["baseline"], run["info"]["current"]
        # 32 fcc atoms, 3 A cutoff: the 12 nearest neighbours (2.55 A) only; the next shell is at 3.61 A
        assert base["num_atoms"] == cur["num_atoms"] == 32 and base["num_edges"] == cur["num_edges"] == 384
        assert base["threads"] == cur["threads"] == 1
        # same code, same seed, same input: the same model in both workers
        assert base["energy"] == cur["energy"] and base["num_params"] == cur["num_params"] > 0
        for side in ("baseline", "current"):
            assert len(run["times"][side]["infer"]) == len(run["times"][side]["train"]) == 1
            for kind in ("train", "infer"):
                p = run["profile"][side][kind]
                assert p["so2_found"] and p["ambiguous"] == 0
                assert 0 < p["so2_mm_ms"] <= p["all_mm_ms"] <= p["step_ms"]
                assert p["peak_bytes"] > 0
        for kind in ("train", "infer"):  # the allocation sequence of one step is the same in both
            assert run["profile"]["baseline"][kind]["peak_bytes"] == run["profile"]["current"][kind]["peak_bytes"]
        # a training step holds the graph of the forces' gradient: more memory than eval-mode forces
        assert run["profile"]["current"]["train"]["peak_bytes"] > run["profile"]["current"]["infer"]["peak_bytes"]


def test_peak_rise_is_the_running_sum_maximum_in_time_order():
    ms = _module()
    assert ms.peak_rise([]) == 0
    assert ms.peak_rise([(0, -5)]) == 0
    # out of order on purpose: sorted by time it is +4, +8, -4, +2, -10 -> running 4, 12, 8, 10, 0
    assert ms.peak_rise([(30, 2), (10, 8), (0, 4), (40, -10), (20, -4)]) == 12


def test_mm_signature_is_the_same_for_a_matmul_and_its_derivatives():
    ms = _module()
    fwd = ms.mm_signature("aten::mm", [[10932, 192], [192, 96]])  # (E', n_in) @ (n_in, n_out)
    assert fwd == (96, 192, 10932)
    assert ms.mm_signature("aten::mm", [[10932, 96], [96, 192]]) == fwd  # input gradient
    assert ms.mm_signature("aten::mm", [[96, 10932], [10932, 192]]) == fwd  # weight gradient
    assert ms.mm_signature("aten::addmm", [[96], [10932, 192], [192, 96], [], []]) == fwd
    assert ms.mm_signature("aten::bmm", [[128, 8, 8], [128, 8, 16]]) == (128, 8, 8, 16)
    assert ms.mm_signature("aten::mul", [[3, 3], [3, 3]]) is None
    assert ms.mm_signature("aten::mm", []) is None


def test_bad_arguments_are_named(capsys, tmp_path):
    ms = _module()
    for argv, word in (
        (["--threads", "0"], "--threads"),
        (["--threads", "one"], "--threads"),
        (["--activations", "relu"], "--activations"),
        (["--reps", "0"], "--reps"),
        (["--baseline", "no-such-commit-x", "--baseline-dir", str(tmp_path / "b")], "--baseline"),
    ):
        with pytest.raises(SystemExit) as exc:
            ms.main(argv)
        assert exc.value.code == 2
        assert word in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
