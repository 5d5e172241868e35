"""``escn bench``: the anchor L runs every method whatever the time budget, and the thread count is torch's.
Tiny configurations; no timing is asserted."""

from __future__ import annotations

import json

import pytest
import torch

from escn.bench import report
from escn.bench.scaling import SweepConfig, SweepResult, default_methods, run_sweep

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
