"""Reporting for the scaling sweep: terminal table, progress bar, results.json / results.csv / scaling.png."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import platform
import sys
import time
from typing import IO, TYPE_CHECKING, Sequence

import torch
from tqdm import tqdm

from escn._util import is_terminal
from escn.bench.allocator import huge_pages_in_use
from escn.bench.scaling import METHODS, Row, SweepConfig, SweepResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Progress",
    "Series",
    "anchor_summary",
    "fit_exponent",
    "fit_exponents",
    "format_table",
    "plot_scaling",
    "plot_series",
    "skip_reason",
    "write_csv",
    "write_json",
    "write_png",
    "write_all",
]


class Progress:
    """Progress of the sweep on ``stream`` (stderr), called as ``progress(done, total, label)``.

    On a terminal, a tqdm bar redrawn in place (``12/48 [00:41<...] L=3 tfn``); elsewhere (a log file, a pipe)
    one plain line per update, ``[12/48] L=3 tfn (41 s)``."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self.tty = is_terminal(self.stream)
        self._bar: tqdm | None = None

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.tty:
            self.stream.write(f"[{done}/{total}] {label} ({time.perf_counter() - self.start:.0f} s)\n")
            self.stream.flush()
            return
        if self._bar is None:
            self._bar = tqdm(total=total, file=self.stream, dynamic_ncols=True, leave=True)
        self._bar.set_postfix_str(label, refresh=False)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self._bar.close()
            self._bar = None


# --------------------------------------------------------------------------- fits
def fit_exponent(points: Sequence[tuple[int, float]], min_l: int = 2) -> float | None:
    """Least-squares slope of ``log t`` against ``log L`` over points with ``L >= min_l``; None if < 2 distinct L."""
    pts = [(math.log(L), math.log(t)) for L, t in points if L >= min_l and t and t > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


def fit_exponents(rows: Sequence[Row]) -> dict[str, float | None]:
    """Fitted fwd+bwd exponent of every method (rows that ran, L >= 2)."""
    methods = [m for m in METHODS if any(r.method == m for r in rows)]
    return {m: fit_exponent([(r.L, r.fwd_bwd_ms) for r in rows if r.method == m and r.ran]) for m in methods}


# --------------------------------------------------------------------------- table
def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _note(r: Row) -> str:
    """Free-text column: estimates, reduced repeats, cross-checks, scatter ratio."""
    parts = []
    if r.estimate_fwd_bwd_ms is not None:
        parts.append(f"~{r.estimate_fwd_bwd_ms:.0f} ms ({r.estimate_source})")
    elif r.estimate_source:
        parts.append(r.estimate_source)
    if r.weight_floor_ms is not None:
        floor = f"weight-traffic floor {r.weight_floor_ms:.0f} ms"
        if r.floor_speedup_vs_tfn is not None:
            floor += f" (= {r.floor_speedup_vs_tfn:.0f}x tfn at most)"
        parts.append(floor)
    if r.max_rel_diff_vs_tfn is not None:
        parts.append(f"rel.diff vs tfn {r.max_rel_diff_vs_tfn:.0e}")
    if r.index_add_over_scatter is not None:
        parts.append(f"index_add/scatter {r.index_add_over_scatter:.2f}")
    return "; ".join(parts)


_COLUMNS: list[tuple[str, int]] = [
    ("method", 18),
    ("L", 3),
    ("status", 16),
    ("n", 2),
    ("fwd ms", 9),
    ("fwd+bwd ms", 10),
    ("peak MB", 8),
    ("par/edge", 8),
    ("x tfn", 7),
    ("x e3nn", 7),
    ("SO2 GF/s", 8),
    ("%GEMM", 6),
    ("SO2 GB/s", 8),
    ("%copy", 5),
]


def _cells(r: Row) -> list[str]:
    pct = None if r.so2_gemm_fraction is None else 100 * r.so2_gemm_fraction
    pct_bw = None if r.so2_bandwidth_fraction is None else 100 * r.so2_bandwidth_fraction
    return [
        r.method,
        str(r.L),
        r.status if len(r.status) <= 16 else r.status[:15] + "~",
        str(r.repeats) if r.ran else "-",
        _num(r.fwd_ms, ".1f"),
        _num(r.fwd_bwd_ms, ".1f"),
        _num(r.peak_mem_mb, ".0f"),
        _num(r.params_per_edge, "d"),
        _num(r.speedup_vs_tfn, ".1f"),
        _num(r.speedup_vs_e3nn, ".1f"),
        _num(r.so2_gflops, ".2f"),
        _num(pct, ".1f"),
        _num(r.so2_gbs, ".2f"),
        _num(pct_bw, ".0f"),
    ]


def _line(cells: Sequence[str], note: str = "") -> str:
    out = []
    for (name, width), cell in zip(_COLUMNS, cells):
        out.append(cell.ljust(width) if name in ("method", "status") else cell.rjust(width))
    return "  ".join(out) + ("  " + note if note else "")


def _threads_source(c: SweepConfig) -> str:
    return "torch.get_num_threads()" if c.threads is None else "set for the sweep"


def _anchor_note(c: SweepConfig) -> str:
    if c.anchor_l is None or c.anchor_l not in c.ls:
        return ""
    return f" (at L = {c.anchor_l} the memory budget only: every method runs there, with at least 1 repeat)"


def anchor_summary(result: SweepResult) -> str | None:
    """One line with the fwd+bwd speed-ups over tfn / e3nn at the anchor L (``config.anchor_l``), where every
    method runs whatever the time budget; a reference that did not run there is named with its status.
    None if the anchor is not one of the swept L."""
    c = result.config
    if c.anchor_l is None or c.anchor_l not in c.ls:
        return None
    at = [r for r in result.rows if r.L == c.anchor_l]
    refs = [r for r in at if r.method in ("tfn", "e3nn")]
    parts = []
    for r in at:
        if r.method in ("tfn", "e3nn") or not r.ran:
            continue
        ratios = [
            f"{v:.1f}x {ref}" for ref, v in (("tfn", r.speedup_vs_tfn), ("e3nn", r.speedup_vs_e3nn)) if v is not None
        ]
        if ratios:
            parts.append(f"{r.method} " + ", ".join(ratios))
    missing = [f"{r.method} {r.status}" for r in refs if not r.ran]
    text = f"fwd+bwd speed-up at L = {c.anchor_l}: " + ("; ".join(parts) if parts else "-")
    return text + (f" ({'; '.join(missing)})" if missing else "")


def header_lines(result: SweepResult) -> list[str]:
    """Title lines: graph, dtype, threads, repeats, GEMM throughput."""
    c = result.config
    dt = str(c.dtype).replace("torch.", "")
    gemm = f"float32 GEMM {result.gemm_gflops_float32:.1f} GFLOP/s, copy bandwidth {result.copy_gbs:.1f} GB/s"
    if c.dtype != torch.float32:
        gemm += f", {dt} GEMM {result.gemm_gflops_dtype:.1f} GFLOP/s (the %GEMM reference)"
    lines = [
        f"escn bench: {c.nodes} nodes, {result.num_edges} edges (radius {c.radius}), C = {c.channels} channels per l, "
        f"{dt}, {result.num_threads} threads ({_threads_source(c)})",
        f"times: median of {c.repeats} repeats after 1 warm-up (n = repeats actually used); fwd under no_grad, "
        f"fwd+bwd w.r.t. x, edge_vec, weights; {gemm}",
        f"budget {c.budget_seconds:g} s and {c.max_memory_gb:g} GB per configuration{_anchor_note(c)}; "
        f"x tfn / x e3nn = fwd+bwd speed-up; "
        f"SO2 GF/s, GB/s = the SO(2) stage alone, forward, as the layer runs it (per-m matmuls; for so2_equal the "
        f"edge-frame map of its TFN weights) (%GEMM, %copy: of the yardsticks above; GB/s for per-edge weights, "
        f"which are memory-bound; above 100% the stage fits in cache)",
        "allocator, the same for every method: transparent huge pages for large CPU tensors "
        + ("on" if huge_pages_in_use() else "off")
        + " (as measured on a probe tensor); freed memory "
        + (
            "kept for reuse (--allocator reuse)"
            if result.allocator == "reuse"
            else "returned to the system (--allocator system)"
        )
        + (
            " -- reuse was asked for but is unavailable here (needs glibc)"
            if c.allocator == "reuse" and result.allocator != "reuse"
            else ""
        ),
    ]
    if result.native:
        lines.append(
            f"SO2Conv rows rotate (and so2_equal applies its TFN-layout weights) with: {result.native} (--executor torch: PyTorch ops)"
        )
    warning = "  -- WARNING: other processes were using the CPU; timings are unreliable"
    if result.other_cores is not None:
        lines.append(
            f"other processes kept {result.other_cores:.2f} cores busy on average during the sweep"
            + (warning if result.other_cores > 0.25 else "")
        )
    if result.load_avg is not None:
        start, end = result.load_avg
        # without the CPU-time measurement, fall back on the load average (it lags: it still counts a
        # program that exited up to a minute before the sweep)
        busy = result.other_cores is None and (start > 0.5 or end > result.num_threads + 0.5)
        lines.append(
            f"load average (1 min) at start/end: {result.load_avg[0]:.2f} / {result.load_avg[1]:.2f}"
            + (warning if busy else "")
        )
    return lines


def format_table(result: SweepResult) -> str:
    """The fixed-width table, grouped by L, followed by the fitted exponents."""
    lines = header_lines(result)
    head = _line([name for name, _ in _COLUMNS], "note")
    lines += ["", head, "-" * len(head)]
    last_l = None
    for r in result.rows:
        if last_l is not None and r.L != last_l:
            lines.append("")
        last_l = r.L
        lines.append(_line(_cells(r), _note(r)))
    fits = fit_exponents(result.rows)
    lines.append("")
    summary = anchor_summary(result)
    if summary is not None:
        lines.append(summary)
    lines.append(
        "fitted exponent of fwd+bwd time in L (L >= 2, rows that ran): "
        + ", ".join(f"{m} {'-' if k is None else f'{k:.2f}'}" for m, k in fits.items())
    )
    lines.append(f"wall time of the sweep: {result.wall_seconds:.1f} s")
    return "\n".join(lines)


# --------------------------------------------------------------------------- files
def _meta(result: SweepResult) -> dict:
    c = result.config
    return {
        "nodes": c.nodes,
        "num_edges": result.num_edges,
        "radius": c.radius,
        "channels": c.channels,
        "ls": list(c.ls),
        "dtype": str(c.dtype).replace("torch.", ""),
        "threads": result.num_threads,
        "threads_source": _threads_source(c),
        "repeats": c.repeats,
        "budget_seconds": c.budget_seconds,
        "anchor_l": c.anchor_l,
        "max_memory_gb": c.max_memory_gb,
        "methods": list(c.methods),
        "seed": c.seed,
        "gemm_gflops_float32": result.gemm_gflops_float32,
        "gemm_gflops_dtype": result.gemm_gflops_dtype,
        "copy_bandwidth_gbs": result.copy_gbs,
        "wall_seconds": result.wall_seconds,
        "torch": result.torch_version,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "load_avg_start_end": result.load_avg,
        "other_cores": result.other_cores,
        "allocator": result.allocator,
        "so2_equal_weights": result.native,
        "memory_method": "rise of VmHWM over VmRSS during the warm-up fwd+bwd (clear_refs reset, after malloc_trim)",
    }


def write_json(result: SweepResult, path: str) -> None:
    """``{"meta": ..., "fits": {method: exponent}, "rows": [...]}``."""
    data = {
        "meta": _meta(result),
        "fits": fit_exponents(result.rows),
        "rows": [dataclasses.asdict(r) for r in result.rows],
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


def write_csv(result: SweepResult, path: str) -> None:
    """One line per row, all fields of :class:`Row`."""
    names = [f.name for f in dataclasses.fields(Row)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for r in result.rows:
            writer.writerow({k: ("" if v is None else v) for k, v in dataclasses.asdict(r).items()})


@dataclasses.dataclass
class Series:
    """What the plot draws for one method: measured ``(L, fwd+bwd ms)`` points, and the L it did not measure
    with the reason (``"time"``, ``"memory"`` or ``"error"``)."""

    method: str
    exponent: float | None
    measured: list[tuple[int, float]]
    skipped: list[tuple[int, str]]


def skip_reason(row: Row) -> str | None:
    """``"time"`` / ``"memory"`` for a row skipped by that budget, ``"error"`` for a failed one, None if it ran."""
    if row.ran:
        return None
    if row.status.startswith("skipped (") and row.status.endswith(")"):
        return row.status[len("skipped (") : -1]
    return "error"


def plot_series(result: SweepResult) -> list[Series]:
    """One :class:`Series` per method present in the rows, in table order."""
    fits = fit_exponents(result.rows)
    out = []
    for method, k in fits.items():
        rows = sorted((r for r in result.rows if r.method == method), key=lambda r: r.L)
        measured = [(r.L, r.fwd_bwd_ms) for r in rows if r.ran and r.fwd_bwd_ms is not None]
        skipped = [(r.L, skip_reason(r) or "error") for r in rows if not r.ran or r.fwd_bwd_ms is None]
        out.append(Series(method, k, measured, skipped))
    return out


def _broken_at_gaps(s: Series) -> tuple[list[float], list[float]]:
    """The measured points with a NaN where an L was not measured, so the line is not drawn across it."""
    skipped = [L for L, _ in s.skipped]
    xs: list[float] = []
    ys: list[float] = []
    for L, t in s.measured:
        if xs and any(xs[-1] < k < L for k in skipped):
            xs.append(math.nan)
            ys.append(math.nan)
        xs.append(L)
        ys.append(t)
    return xs, ys


def _time_ticks(lo: float, hi: float) -> list[float]:
    """Ticks for a log time axis over [lo, hi]: the powers of ten, or 1-2-5 steps if fewer than three powers fit."""
    ks = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    decades = [10.0**k for k in ks if lo <= 10.0**k <= hi]
    if len(decades) >= 3:
        return decades
    return [m * 10.0**k for k in ks for m in (1, 2, 5) if lo <= m * 10.0**k <= hi]


# plot layout, in fractions of the axes height: one row of skip markers per method with skips, then the labels
_SKIP_TOP = 0.975
_SKIP_ROW = 0.035


def plot_scaling(result: SweepResult) -> "Figure":
    """The scaling plot as a matplotlib Figure: log-log fwd+bwd time vs L, one line per method (fitted
    exponents in the legend). Configurations that were not measured are drawn as an ``x`` in the method's
    colour at their L in a strip along the top, under which a label gives the reason, e.g. "skipped (time)".
    Those markers carry ``gid = "skipped <method> L=<L> <reason>"``. Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle
    from matplotlib.transforms import blended_transform_factory

    series = plot_series(result)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    strip = blended_transform_factory(ax.transData, ax.transAxes)
    with_skips = [s for s in series if s.skipped]
    label_top = _SKIP_TOP - _SKIP_ROW * len(with_skips)
    reasons: dict[int, list[str]] = {}
    row_of = {s.method: i for i, s in enumerate(with_skips)}
    for s in series:
        label = s.method + ("" if s.exponent is None else f"  (~L^{s.exponent:.2f})")
        xs, ys = _broken_at_gaps(s)
        (line,) = ax.plot(xs, ys, marker="o", label=label)
        for L, reason in s.skipped:
            ax.plot(
                [L],
                [_SKIP_TOP - _SKIP_ROW * row_of[s.method]],
                transform=strip,
                linestyle="none",
                marker="x",
                markersize=7,
                markeredgewidth=1.5,
                color=line.get_color(),
                gid=f"skipped {s.method} L={L} {reason}",
            )
            if reason not in reasons.setdefault(L, []):
                reasons[L].append(reason)
    order = {"time": 0, "memory": 1, "error": 2}
    for L, rs in sorted(reasons.items()):
        rs = sorted(rs, key=lambda r: order.get(r, len(order)))
        ax.text(
            L,
            label_top,
            f"skipped ({', '.join(rs)})",
            transform=strip,
            rotation=90,
            ha="center",
            va="top",
            fontsize=7,
            color="0.3",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ls = sorted(set(result.config.ls))
    ax.set_xticks(ls)
    ax.set_xticklabels([str(L) for L in ls])
    ax.minorticks_off()
    ax.set_xlabel("L (node irreps 0..L, filter 0..2L)")
    ax.set_ylabel("forward + backward time [ms]")
    c = result.config
    ax.set_title(
        f"{result.num_edges} edges, C = {c.channels}, {str(c.dtype).replace('torch.', '')}, {result.num_threads} threads"
    )
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if with_skips:
        handles.append(Line2D([], [], linestyle="none", marker="x", color="0.3", markeredgewidth=1.5))
        labels.append("not measured\n(reason below the marks)")
    ax.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    times = [t for s in series for _, t in s.measured if t > 0]
    if times:
        lo, hi = min(times) / 1.5, max(times) * 1.5
        # keep the measured points below the strip of skip markers and labels (as long as the labels come out)
        free = 1.0
        if with_skips:
            renderer = fig.canvas.get_renderer()
            bottoms = [t.get_window_extent(renderer).transformed(ax.transAxes.inverted()).y0 for t in ax.texts]
            free = max(0.3, min([label_top, *bottoms]) - 0.03)
        ax.set_ylim(lo, lo * (hi / lo) ** (1.0 / free))
        if with_skips:  # the strip has no time axis: shade it and keep the time ticks below it
            ax.add_patch(
                Rectangle((0.0, free), 1.0, 1.0 - free, transform=ax.transAxes, color="0.93", zorder=0, linewidth=0)
            )
        ticks = _time_ticks(lo, hi)
        ax.set_yticks(ticks)
        ax.set_yticklabels([f"{t:g}" for t in ticks])
        ax.minorticks_off()
        fig.tight_layout()
    return fig


def write_png(result: SweepResult, path: str) -> bool:
    """Save :func:`plot_scaling` to ``path``. False if matplotlib is not installed."""
    try:
        fig = plot_scaling(result)
    except ImportError:
        return False
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_all(result: SweepResult, out_dir: str) -> list[str]:
    """Write results.json, results.csv and (with matplotlib) scaling.png into ``out_dir``; return the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, "results.json"), os.path.join(out_dir, "results.csv")]
    write_json(result, paths[0])
    write_csv(result, paths[1])
    png = os.path.join(out_dir, "scaling.png")
    if write_png(result, png):
        paths.append(png)
    return paths
