"""``escn bench``: the anchor L runs every method whatever the time budget, skipped configurations are marked on
the plot, and the thread count is torch's. Tiny configurations; no timing is asserted."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import re
import sys

import pytest
import torch

from escn.bench import report
from escn.bench.scaling import Row, SweepConfig, SweepResult, default_methods, run_sweep

HAS_MPL = importlib.util.find_spec("matplotlib") is not None
REFERENCES = ("tfn", "e3nn")


def _tiny(**kw) -> SweepConfig:
    base = dict(ls=[2, 4], channels=2, nodes=12, radius=2.0, repeats=1)
    base.update(kw)
    return SweepConfig(**base)


@pytest.fixture(scope="module")
def starved():
    """A sweep at L = 2, 4 with a budget no configuration fits in, on 1 thread set through torch (not the config)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_sweep(_tiny(budget_seconds=1e-9))
    finally:
        torch.set_num_threads(before)
    return result


def test_anchor_runs_every_method_whatever_the_budget(starved):
    rows = {(r.method, r.L): r for r in starved.rows}
    methods = default_methods()
    assert {m for m, _ in rows} == set(methods)
    for m in methods:
        assert rows[m, 2].status == "skipped (time)", rows[m, 2]  # the budget still applies away from the anchor
        r = rows[m, 4]
        assert r.status == "ok" and r.repeats == 1 and r.fwd_bwd_ms > 0, r
    for m in methods:
        if m in REFERENCES:
            continue
        r = rows[m, 4]
        assert r.speedup_vs_tfn == pytest.approx(rows["tfn", 4].fwd_bwd_ms / r.fwd_bwd_ms, rel=1e-12)
        if "e3nn" in methods:
            assert r.speedup_vs_e3nn == pytest.approx(rows["e3nn", 4].fwd_bwd_ms / r.fwd_bwd_ms, rel=1e-12)
        else:
            assert r.speedup_vs_e3nn is None
    # the anchor rows are real measurements of the same function (float32)
    assert rows["so2_equal", 4].max_rel_diff_vs_tfn < 1e-4


def test_anchor_ratios_printed(starved):
    text = report.format_table(starved)
    line = next(ln for ln in text.splitlines() if ln.startswith("fwd+bwd speed-up at L = 4:"))
    ratio = starved.rows[[(r.method, r.L) for r in starved.rows].index(("so2_equal", 4))].speedup_vs_tfn
    assert f"so2_equal {ratio:.1f}x tfn" in line
    assert ("x e3nn" in line) == ("e3nn" in default_methods())
    assert "at L = 4 the memory budget only" in text
    # table column "x tfn" is filled on the anchor's SO(2) rows
    so2_l4 = [ln for ln in text.splitlines() if ln.startswith("so2_equal ") and ln.split()[1] == "4"]
    assert len(so2_l4) == 1 and so2_l4[0].split()[8] == f"{ratio:.1f}"


def test_threads_follow_torch(starved, tmp_path):
    assert starved.num_threads == 1
    report.write_json(starved, str(tmp_path / "results.json"))
    meta = json.loads((tmp_path / "results.json").read_text())["meta"]
    assert meta["threads"] == 1 and meta["threads_source"] == "torch.get_num_threads()" and meta["anchor_l"] == 4
    assert "float32, 1 threads (torch.get_num_threads())" in report.header_lines(starved)[0]


def test_threads_set_for_the_sweep_then_restored(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_sweep(_tiny(ls=[1], methods=["so2_shared_mmax2"], threads=2))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert result.num_threads == 2
    report.write_json(result, str(tmp_path / "results.json"))
    meta = json.loads((tmp_path / "results.json").read_text())["meta"]
    assert meta["threads"] == 2 and meta["threads_source"] == "set for the sweep"


@pytest.mark.parametrize("field, value", [("threads", 0), ("threads", 1.5), ("anchor_l", 0), ("anchor_l", "4")])
def test_bad_sweep_config(field, value):
    with pytest.raises(ValueError, match=field):
        run_sweep(_tiny(**{field: value}))


def test_cli_passes_threads_and_anchor(monkeypatch):
    """Defaults: no thread count (torch's), anchor L = 4; --anchor-l 0 turns it off."""
    import escn.bench.scaling as scaling
    from escn.cli import main

    seen = []

    class Stop(Exception):
        pass

    def fake(cfg, progress=None):
        seen.append(cfg)
        raise Stop

    monkeypatch.setattr(scaling, "run_sweep", fake)
    for args in ([], ["--threads", "3", "--anchor-l", "0"], ["--anchor-l", "6"]):
        with pytest.raises(Stop):
            main(["bench", "--no-progress", *args])
    assert [(c.threads, c.anchor_l) for c in seen] == [(None, 4), (3, None), (None, 6)]


def _synthetic() -> SweepResult:
    """tfn measured at L = 1, 2, 4, skipped for time at 3 and memory at 5; so2_equal measured everywhere but 5
    (error)."""
    rows = []
    for L in range(1, 6):
        for method in ("so2_equal", "tfn"):
            r = Row(method, L, 2, 10, 50)
            if method == "tfn" and L == 3:
                r.status, r.estimate_fwd_bwd_ms = "skipped (time)", 900.0
            elif method == "tfn" and L == 5:
                r.status = "skipped (memory)"
            elif method == "so2_equal" and L == 5:
                r.status = "error: RuntimeError: x"
            else:
                r.fwd_bwd_ms = float(10 * L ** (2 if method == "so2_equal" else 4))
            rows.append(r)
    return SweepResult(SweepConfig(ls=[1, 2, 3, 4, 5], methods=["so2_equal", "tfn"]), rows, 50, 1.0, 1.0)


def test_plot_series_marks_skipped():
    series = {s.method: s for s in report.plot_series(_synthetic())}
    assert series["tfn"].measured == [(1, 10.0), (2, 160.0), (4, 2560.0)]
    assert series["tfn"].skipped == [(3, "time"), (5, "memory")]
    assert series["so2_equal"].skipped == [(5, "error")]
    assert len(series["so2_equal"].measured) == 4


def test_plot_series_of_a_starved_sweep(starved):
    for s in report.plot_series(starved):
        assert s.skipped == [(2, "time")] and [L for L, _ in s.measured] == [4], s


@pytest.mark.skipif(not HAS_MPL, reason="needs matplotlib")
def test_plot_draws_skipped_markers_and_labels():
    import matplotlib.pyplot as plt

    fig = report.plot_scaling(_synthetic())
    try:
        ax = fig.axes[0]
        gids = sorted(ln.get_gid() for ln in ax.lines if ln.get_gid())
        assert gids == ["skipped so2_equal L=5 error", "skipped tfn L=3 time", "skipped tfn L=5 memory"]
        for ln in ax.lines:
            if ln.get_gid():
                assert ln.get_marker() == "x" and list(ln.get_xdata()) == [int(ln.get_gid().split("L=")[1].split()[0])]
        tfn = next(ln for ln in ax.lines if ln.get_label().startswith("tfn"))
        x, y = list(tfn.get_xdata()), list(tfn.get_ydata())
        # the line is broken where L = 3 was not measured, and has no point at L = 5
        assert x[:2] == [1, 2] and math.isnan(x[2]) and x[3:] == [4] and y[3] == 2560.0
        skipped_marks = [ln for ln in ax.lines if (ln.get_gid() or "").startswith("skipped tfn")]
        assert all(m.get_color() == tfn.get_color() for m in skipped_marks)
        labels = {(t.get_position()[0], t.get_text()) for t in ax.texts}
        assert labels == {(3, "skipped (time)"), (5, "skipped (memory, error)")}
        # markers and labels sit in a shaded strip above every measured time (their height is not a time)
        top_point = ax.transAxes.inverted().transform(ax.transData.transform((4, 2560.0)))[1]
        (strip,) = ax.patches
        assert 0.5 < strip.get_y() < 1.0 and top_point < strip.get_y()
        assert all(ln.get_ydata()[0] > strip.get_y() for ln in skipped_marks)
        renderer = fig.canvas.get_renderer()
        for t in ax.texts:  # the whole rotated label, not only its anchor
            box = t.get_window_extent(renderer).transformed(ax.transAxes.inverted())
            assert strip.get_y() < box.y0 < box.y1 < 1.0, t.get_text()
    finally:
        plt.close(fig)


def test_skip_reason():
    assert report.skip_reason(Row("tfn", 2, 1, 1, 1, status="skipped (time)")) == "time"
    assert report.skip_reason(Row("tfn", 2, 1, 1, 1, status="skipped (memory)")) == "memory"
    assert report.skip_reason(Row("tfn", 2, 1, 1, 1, status="error: MemoryError: ")) == "error"
    assert report.skip_reason(Row("tfn", 2, 1, 1, 1)) is None


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_sweep_progress_plain_lines_off_a_terminal_and_a_tqdm_bar_on_one():
    from escn.bench.report import Progress

    log = io.StringIO()
    progress = Progress(log)
    for done, label in ((0, "L=1 tfn"), (1, "L=2 tfn"), (2, "done")):
        progress(done, 2, label)
    lines = log.getvalue().splitlines()
    assert [re.sub(r"\(\d+ s\)$", "(t)", line) for line in lines] == [
        "[0/2] L=1 tfn (t)",
        "[1/2] L=2 tfn (t)",
        "[2/2] done (t)",
    ]
    term = _Terminal()
    progress = Progress(term)
    for done, label in ((0, "L=1 tfn"), (1, "L=2 tfn"), (2, "done")):
        progress(done, 2, label)
    out = term.getvalue()
    assert "\r" in out and "2/2" in out and "done" in out and "[1/2]" not in out


RUNNABLE = [
    "aggregation",
    "allocator",
    "edge_rotation",
    "model_step",
    "o3",
    "radius_graph",
    "rotation",
    "so2_stage",
    "tfn_frame_map",
]


@pytest.mark.filterwarnings("ignore:'escn.bench.allocator' found in sys.modules:RuntimeWarning")  # in-process only
@pytest.mark.parametrize("name", RUNNABLE)
def test_building_block_benchmarks_run_as_modules_of_escn_bench(name, monkeypatch, capsys):
    """``python -m escn.bench.<name> --help`` parses its options and prints its usage (run in this process)."""
    import runpy

    monkeypatch.setattr(sys, "argv", [f"escn.bench.{name}", "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module(f"escn.bench.{name}", run_name="__main__", alter_sys=False)
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: ")


def test_a_bench_module_runs_without_being_imported_first():
    """Importing the package escn.bench loads none of its modules (its names load on first use): the allocator
    module, which the sweep imports, runs as __main__ without runpy's double-import warning."""
    import subprocess

    run = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "escn.bench.allocator", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and run.stdout.startswith("usage: "), run.stderr[-2000:]
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, escn.bench as b; loaded = [m for m in sys.modules "
            "if m.startswith('escn.bench.')]; b.run_sweep; print(loaded, 'escn.bench.scaling' in "
            "sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.stdout.split() == ["[]", "True"], check.stderr[-2000:]
