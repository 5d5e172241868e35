"""Accuracy of the aspirin force field against lmax at a fixed training-time budget (docs/aspirin.md).

    python examples/aspirin_lmax.py --lmax 1,2,4,6 --minutes 12 --threads 1 --jobs 2 --out runs/aspirin_lmax
    python examples/aspirin_lmax.py --out runs/aspirin_lmax --plot-only      # redraw from results.json

For every lmax the shipped config (examples/configs/aspirin.toml) is trained with ``model.lmax = L``,
``model.mmax = min(L, --mmax)`` and ``max_time`` set to the budget (the learning-rate schedule follows the
clock, ``lr_over_time``, so every run ends with its rate decayed), everything else unchanged.  ``--jobs 2`` runs
two trainings at once, each pinned to its own core with ``--threads 1`` (``taskset``, Linux), so both see the
same machine.  Then, one model at a time with nothing else running: the force and energy MAE on the 500 test
frames (EMA weights) and the milliseconds per MD step of one molecule through :class:`escn.ase.Calculator`
(float64, velocity Verlet, graph built every step, ``--md-threads`` threads).

Writes ``OUT/results.json`` and, with matplotlib (``pip install -e ".[bench]"``), ``OUT/aspirin_lmax.png``:
force MAE against lmax and against ms per MD step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "configs" / "aspirin.toml"


def _train_command(args: argparse.Namespace, lmax: int, out: Path) -> list[str]:
    extra = [item for kv in args.set for item in ("--set", kv)]
    return [
        sys.executable,
        "-m",
        "escn",
        "train",
        str(args.config),
        "--no-progress",
        "--overwrite",
        "--output-dir",
        str(out),
        "--set",
        f"model.lmax={lmax}",
        "--set",
        f"model.mmax={min(lmax, args.mmax)}",
        "--set",
        f"max_time={60 * args.minutes:g}",
        "--set",
        f"threads={args.threads}",
        "--set",
        f"seed={args.seed}",
        "--set",
        "checkpoint_every=1000000",
        *extra,
    ]


def train_all(args: argparse.Namespace, out: Path) -> dict[int, float]:
    """Run the trainings, ``args.jobs`` at a time; returns the wall time of each (s)."""
    pending = list(args.lmax)
    running: list[tuple[int, subprocess.Popen, float, IO[str], int]] = []  # lmax, process, start, log, slot
    num_cpus = os.cpu_count() or 1
    walls: dict[int, float] = {}
    free = list(range(args.jobs))
    while pending or running:
        while pending and free:
            lmax = pending.pop(0)
            slot = free.pop(0)
            cmd = _train_command(args, lmax, out / f"lmax{lmax}")
            if args.jobs > 1 and shutil.which("taskset"):
                cpus = ",".join(str((slot * args.threads + k) % num_cpus) for k in range(args.threads))
                cmd = ["taskset", "-c", cpus, *cmd]
            log = open(out / f"lmax{lmax}.log", "w")
            print(f"lmax {lmax}: {' '.join(cmd)}", flush=True)
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            running.append((lmax, proc, time.perf_counter(), log, slot))
        time.sleep(2)
        for item in list(running):
            lmax, proc, t0, log, slot = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                free.append(slot)
                walls[lmax] = time.perf_counter() - t0
                if proc.returncode:
                    raise SystemExit(f"training lmax {lmax} failed (exit {proc.returncode}); see {out}/lmax{lmax}.log")
                print(f"lmax {lmax}: trained in {walls[lmax]:.0f} s", flush=True)
    return walls


def measure(args: argparse.Namespace, out: Path, walls: dict[int, float]) -> list[dict]:
    import ase.io
    import torch

    from escn.bench.md import run as bench_md
    from escn.train.evaluate import evaluate_checkpoint

    torch.set_num_threads(args.md_threads)
    molecule = ase.io.read(args.molecule, index=0)
    rows = []
    for lmax in args.lmax:
        run_dir = out / f"lmax{lmax}"
        best = run_dir / "best.pt"  # the best validation epoch; the last checkpoint when there is no validation
        checkpoint = best if best.exists() else run_dir / "checkpoint.pt"
        metrics, n = evaluate_checkpoint(checkpoint, split="test")
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        steps = max((r.get("step", 0) for r in records), default=0)
        timing = bench_md(checkpoint, molecule, copies=1, steps=args.md_steps, threads=args.md_threads)[0]
        rows.append(
            {
                "lmax": lmax,
                "mmax": min(lmax, args.mmax),
                "test_frames": n,
                "force_mae_meV_A": 1000 * metrics["mae_forces"],
                "energy_mae_meV": 1000 * metrics["mae_energy"],
                "steps": steps,
                "train_wall_s": round(walls.get(lmax, float("nan")), 1),
                "md_ms_per_step": round(timing.ms_per_step, 2),
                "md_threads": timing.threads,
            }
        )
        print(
            f"lmax {lmax}: {rows[-1]['force_mae_meV_A']:.1f} meV/A, {rows[-1]['energy_mae_meV']:.1f} meV, "
            f"{steps} steps, {timing.ms_per_step:.1f} ms per MD step",
            flush=True,
        )
    return rows


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install -e '.[bench]')")
        return False
    rows = results["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    lm = [r["lmax"] for r in rows]
    f = [r["force_mae_meV_A"] for r in rows]
    ms = [r["md_ms_per_step"] for r in rows]
    axes[0].plot(lm, f, "o-")
    axes[0].set_xlabel("lmax")
    axes[0].set_ylabel("test force MAE (meV/Å)")
    axes[0].set_xticks(lm)
    axes[1].plot(ms, f, "o-")
    for x, y, label in zip(ms, f, lm):
        axes[1].annotate(f"lmax {label}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes[1].set_xscale("log")
    axes[1].set_xlabel(f"ms per MD step, one molecule ({rows[0]['md_threads']} thread(s))")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"aspirin, GFN2-xTB 500 K: {results['minutes']:g} min of training per model, {results['threads']} thread(s)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(CONFIG), help="training config (default: the shipped aspirin one)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides for escn train")
    p.add_argument(
        "--molecule",
        default=str(ROOT / "examples" / "data" / "aspirin_relaxed.extxyz"),
        help="structure of the MD timing (default: the relaxed aspirin)",
    )
    p.add_argument("--lmax", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 4, 6])
    p.add_argument("--mmax", type=int, default=2, help="mmax = min(lmax, this) (default 2)")
    p.add_argument("--minutes", type=float, default=12.0, help="training budget per model (default 12)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training (default 1)")
    p.add_argument("--jobs", type=int, default=2, help="trainings at once (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--md-steps", type=int, default=200, help="timed MD steps per model (default 200)")
    p.add_argument("--md-threads", type=int, default=1, help="threads of the MD timing (default 1)")
    p.add_argument("--out", default="runs/aspirin_lmax")
    p.add_argument("--plot-only", action="store_true", help="redraw the plot from OUT/results.json")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.plot_only:
        plot(json.loads((out / "results.json").read_text()), out / "aspirin_lmax.png")
        return 0
    if args.minutes <= 0 or args.jobs < 1 or args.threads < 1:
        p.error("--minutes, --jobs and --threads must be positive")
    out.mkdir(parents=True, exist_ok=True)
    walls = train_all(args, out)
    results = {
        "minutes": args.minutes,
        "threads": args.threads,
        "jobs": args.jobs,
        "seed": args.seed,
        "rows": measure(args, out, walls),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out / 'results.json'}")
    plot(results, out / "aspirin_lmax.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
