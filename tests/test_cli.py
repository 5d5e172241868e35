"""The ``escn`` command: a tiny ``bench`` sweep writes its table and files, ``demo`` reports small errors,
bad arguments fail with a message. Timings are never asserted."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from escn.bench.scaling import METHODS, default_methods
from escn.cli import main

# a budget no machine exhausts: every row runs (none is "skipped (budget)"), however loaded the machine is
TINY = [
    "bench",
    "--ls",
    "1,2",
    "--nodes",
    "12",
    "--radius",
    "2.0",
    "--repeats",
    "1",
    "--channels",
    "2",
    "--no-progress",
    "--budget-seconds",
    "1e9",
]
GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None
HAS_E3NN = importlib.util.find_spec("e3nn") is not None
HAS_MPL = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Run the tiny sweep once in-process; return (exit code, stdout, output dir)."""
    out = tmp_path_factory.mktemp("bench")
    capture = pytest.MonkeyPatch()
    buf = io.StringIO()
    capture.setattr(sys, "stdout", buf)
    try:
        code = main([*TINY, "--out", str(out)])
    finally:
        capture.undo()
    return code, buf.getvalue(), out


def test_bench_exit_code_and_files(tiny_run):
    code, _, out = tiny_run
    assert code == 0
    assert (out / "results.json").is_file()
    assert (out / "results.csv").is_file()
    if HAS_MPL:
        assert (out / "scaling.png").stat().st_size > 0


def test_bench_table_has_every_method(tiny_run):
    _, text, _ = tiny_run
    assert "median of 1 repeats" in text and "GFLOP/s" in text
    methods = default_methods()
    assert ("e3nn" in methods) == HAS_E3NN
    for method in METHODS:
        lines = [ln for ln in text.splitlines() if re.match(rf"{method}\s+[12]\s", ln)]
        if method in methods:
            assert len(lines) == 2, (method, text)  # one row per L, ran or marked skipped
        else:
            assert not lines, (method, text)


def test_bench_json_numeric(tiny_run):
    _, _, out = tiny_run
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["num_edges"] > 0 and data["meta"]["gemm_gflops_float32"] > 0
    rows = data["rows"]
    assert {r["method"] for r in rows} == set(default_methods())
    assert {r["L"] for r in rows} == {1, 2}
    for r in rows:
        assert isinstance(r["params_per_edge"], int) and r["params_per_edge"] > 0
        if r["status"] == "ok":
            for key in ("fwd_ms", "fwd_bwd_ms"):
                assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0
            assert r["repeats"] == 1
        else:
            assert r["status"].startswith("skipped")
    ran = [r for r in rows if r["status"] == "ok" and r["method"].startswith("so2")]
    assert ran and all(r["so2_gflops"] > 0 and r["so2_stage_gflop"] > 0 for r in ran)
    # per-edge weights are memory-bound: GB/s and the weight-traffic floor for them, not for shared weights
    assert data["meta"]["copy_bandwidth_gbs"] > 0
    assert data["meta"]["allocator"] == "system"
    from escn import native

    expected = "compiled kernels (escn.native)" if native.available() else "PyTorch ops"
    assert data["meta"]["so2_equal_weights"].startswith(expected)
    if os.path.exists("/proc/stat"):  # cores other processes kept busy, from CPU-time counters
        assert isinstance(data["meta"]["other_cores"], float) and data["meta"]["other_cores"] >= 0
    for r in ran:
        per_edge = r["method"].startswith("so2_equal")
        assert (r["so2_gbs"] is not None and r["so2_gbs"] > 0) == per_edge, r
        assert (r["weight_floor_ms"] is not None and r["weight_floor_ms"] > 0) == per_edge, r
    # the equal-function rows reproduce TFN wherever both ran (float32)
    assert all(r["max_rel_diff_vs_tfn"] < 1e-4 for r in rows if r["max_rel_diff_vs_tfn"] is not None)
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)


def test_demo_float64(capsys):
    assert main(["demo"]) == 0
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if ln.startswith(("per-edge", "shared", "from_tfn"))]
    assert len(lines) == 3, text
    for ln in lines:
        errors = [float(v) for v in re.findall(r"\d\.\de[-+]\d\d", ln)][:3]
        assert len(errors) == 3 and max(errors) < 1e-5, ln
    assert "l = 8" in text and "PASS" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "--lmax", "-1"], "--lmax"),
        (["bench", "--dtype", "float16"], "--dtype"),
        (["bench", "--ls", "1,x"], "--ls"),
        (["bench", "--methods", "tfn,foo"], "unknown method"),
        (["bench", "--radius", "0"], "--radius"),
        (["bench", "--lmax", "3", "--ls", "1,2"], "not allowed"),
    ],
)
def test_bad_arguments(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code != 0
    assert message in capsys.readouterr().err


def test_module_entry_point_help():
    proc = subprocess.run([sys.executable, "-m", "escn", "bench", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--budget-seconds" in proc.stdout


def test_bench_yardstick_formulas():
    """Byte and floor counts of the memory-bound rows, against hand-counted values."""
    from escn.bench.blocks import so2_stage_bytes, so2_stage_flops, so2_stage_shapes
    from escn.bench.scaling import weight_traffic_floor_ms
    from escn.nn import SO2Conv

    # 3 weights per edge read twice and their gradient written once: 3 * 100 edges * 1000 * 4 bytes at 1 GB/s
    assert weight_traffic_floor_ms(1000, 100, 4, 1.0) == pytest.approx(1.2)
    with pytest.raises(ValueError, match="bandwidth_gbs"):
        weight_traffic_floor_ms(1000, 100, 4, 0.0)
    layer = SO2Conv("2x0e + 1x1o", "1x0e + 1x1o", mmax=1)
    # m = 0: inputs (2 scalars, 1 vector's m = 0) -> outputs (1 scalar, 1 vector's m = 0); m = 1: vector -> vector
    assert so2_stage_shapes(layer) == [(0, 1, 3, 2), (1, 2, 1, 1)]
    E = 10
    assert so2_stage_flops(layer, E) == 2 * E * (1 * 3 * 2 + 2 * 1 * 1)
    assert so2_stage_bytes(layer, E, 4) == 4 * (E * 6 + E * 1 * (3 + 2) + E * 1 + E * 2 * (1 + 1))


def test_tfn_frame_map_yardsticks_and_stage():
    """so2_equal's stage is the edge-frame map of its TFN weights: hand-counted flops and bytes, and the timed
    callable is the layer's own map."""
    from escn.bench.blocks import make_tfn_frame_map, tfn_frame_map_bytes, tfn_frame_map_flops
    from escn.nn import SO2Conv, TFNConv

    layer = SO2Conv.from_tfn(TFNConv("2x0e + 1x1o", "1x0e", lmax_filter=1))
    # paths 0e x Y0 -> 0e (2 x 1 block) and 1o x Y1 -> 0e (1 x 1); in the edge frame each couples only m = 0
    assert layer.weight_numel == 3
    E = 10
    assert tfn_frame_map_flops(layer, E) == 2 * E * (2 * 1 + 1 * 1)
    assert tfn_frame_map_bytes(layer, E, 4) == 4 * E * (3 + (2 + 3) + 1)
    w = torch.randn(E, 3)
    run = make_tfn_frame_map(layer, w, generator=torch.Generator().manual_seed(0))
    out = run()
    assert out.shape == (E, layer.rot_out.rot_dim) and not out.requires_grad


def test_cpu_seconds_reads_the_counters(monkeypatch):
    """_cpu_seconds from injected counters (no dependence on this machine's load or speed): /proc/stat's busy
    columns (user, nice, system, irq, softirq, steal; not idle or iowait) in clock ticks, this process's user +
    system seconds, and the wall clock; None when /proc/stat is missing or malformed."""
    import types

    from escn.bench import scaling

    stat = {"text": "cpu  1000 20 300 5000 70 6 4 10 0 0\ncpu0 500 10 150 2500 35 3 2 5 0 0\n"}

    def fake_open(path, *args, **kwargs):
        assert path == "/proc/stat"
        if stat["text"] is None:
            raise FileNotFoundError(path)
        return io.StringIO(stat["text"])

    fake_os = types.SimpleNamespace(
        sysconf=lambda name: {"SC_CLK_TCK": 100}[name], times=lambda: types.SimpleNamespace(user=1.25, system=0.5)
    )
    monkeypatch.setattr(scaling, "open", fake_open, raising=False)
    monkeypatch.setattr(scaling, "os", fake_os)
    monkeypatch.setattr(scaling, "time", types.SimpleNamespace(perf_counter=lambda: 42.0))
    assert scaling._cpu_seconds() == ((1000 + 20 + 300 + 6 + 4 + 10) / 100, 1.75, 42.0)
    stat["text"] = "cpu  1000 20 300 5000 70 6 4\n"  # an old kernel without the steal column
    assert scaling._cpu_seconds() == ((1000 + 20 + 300 + 6 + 4) / 100, 1.75, 42.0)
    for text in (None, "", "intr 1 2 3 4 5 6 7 8\n", "cpu  1 2 3\n"):
        stat["text"] = text
        assert scaling._cpu_seconds() is None, text


def test_cpu_seconds_on_this_machine_are_counters():
    """Structural only (true under any load): None without /proc/stat, else three non-negative numbers, and a
    second reading is not below the first in this process's CPU time or in wall time."""
    from escn.bench.scaling import _cpu_seconds

    first, second = _cpu_seconds(), _cpu_seconds()
    if not os.path.exists("/proc/stat"):
        assert first is None and second is None
        return
    assert len(first) == 3 and all(isinstance(v, float) and v >= 0 for v in first)
    assert second[1] >= first[1] and second[2] >= first[2]


_RSS_AFTER_FREE = """
import sys, torch
from escn.bench.allocator import reuse_freed_memory
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
ok = reuse_freed_memory() if sys.argv[1] == "reuse" else None
base = rss()
x = torch.ones(50_000_000)  # 200 MB, touched
held = rss() - base
del x
print(ok, held, rss() - base)
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
@pytest.mark.parametrize("mode", ["reuse", "system"])
def test_reuse_freed_memory_keeps_freed_blocks(mode):
    """With reuse_freed_memory() a freed 200 MB tensor stays mapped to the process (the next one reuses its
    pages); with the C library's defaults it goes back to the system at once."""
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_AFTER_FREE, mode],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "THP_MEM_ALLOC_ENABLE": "0"},
    )
    assert proc.returncode == 0, proc.stderr
    ok, held, after = proc.stdout.split()
    held, after = int(held), int(after)
    assert held > 190e6
    if mode == "reuse":
        assert ok == "True" and after > 190e6
    else:
        assert after < 20e6


def test_bench_says_when_the_weights_take_pytorch_ops(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "escn",
            *TINY,
            "--methods",
            "so2_equal,tfn",
            "--executor",
            "torch",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "so2_equal applies its TFN-layout weights) with: PyTorch ops (executor 'torch') (--executor torch"
        in proc.stdout
    )
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["meta"]["so2_equal_weights"] == "PyTorch ops (executor 'torch')"
    assert all(r["max_rel_diff_vs_tfn"] < 1e-4 for r in data["rows"] if r["max_rel_diff_vs_tfn"] is not None)


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_bench_allocator_reuse(tmp_path):
    # in a subprocess: the setting is process-wide
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "escn",
            *TINY,
            "--methods",
            "so2_shared_mmax2",
            "--allocator",
            "reuse",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["allocator"] == "reuse"
    assert "freed memory kept for reuse" in proc.stdout


def test_bench_header_says_when_reuse_was_unavailable():
    from escn.bench.report import header_lines
    from escn.bench.scaling import SweepConfig, SweepResult

    asked = SweepResult(SweepConfig(allocator="reuse"), [], 10, 1.0, 1.0, allocator="system")
    assert any("unavailable" in ln and "returned to the system" in ln for ln in header_lines(asked))
    got = SweepResult(SweepConfig(allocator="reuse"), [], 10, 1.0, 1.0, allocator="reuse")
    assert not any("unavailable" in ln for ln in header_lines(got))
    with pytest.raises(ValueError, match="allocator"):
        from escn.bench.scaling import run_sweep

        run_sweep(SweepConfig(allocator="jemalloc"))


def test_memory_lower_bound_counts_in_place_weights():
    """With the compiled kernel so2_equal holds the weights and their gradient; without it (and for TFN and
    e3nn) two more transients of the weights' size."""
    from escn import native
    from escn.bench.scaling import Problem, make_graph, memory_lower_bound

    p = Problem(make_graph(20, 1.8, torch.float32, 0), 2, 4, torch.float32, 0)
    E, w = p.graph.num_edges, 1000
    features = 4 * E * 8 * p.dim
    assert memory_lower_bound("tfn", p, w) == features + 4 * E * 4 * w
    if native.available():
        assert memory_lower_bound("so2_equal", p, w) == features + 4 * E * 2 * w
    assert memory_lower_bound("so2_equal", p, w, executor="torch") == features + 4 * E * 4 * w
    assert memory_lower_bound("so2_shared_mmaxL", p, w) == features + 4 * E * 2 * w


def test_bench_layers_take_the_executor_of_the_sweep():
    from escn.bench.scaling import Problem, build_case, make_graph

    p = Problem(make_graph(20, 1.8, torch.float32, 0), 2, 4, torch.float32, 0)
    for method in ("so2_equal", "so2_shared_mmax2"):
        for executor in ("native", "torch"):
            layer = build_case(method, p, executor).so2_layer
            assert layer.executor == layer.rot_in.executor == layer.rot_out.executor == executor
