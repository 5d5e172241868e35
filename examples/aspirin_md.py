"""MD with the aspirin force field (examples/configs/aspirin.toml) through escn.ase.Calculator.

    python examples/aspirin_md.py runs/aspirin/best.pt                     # 20 ps NVT + 5 ps NVE + timings
    python examples/aspirin_md.py runs/aspirin/best.pt --nvt-ps 2 --nve-ps 1 --bench-steps 50   # shorter

1. NVT: Langevin at 500 K (friction 0.01 / fs), time step 0.5 fs, for ``--nvt-ps`` (default 20 ps), starting from
   the GFN2-xTB relaxed geometry (examples/data/aspirin_relaxed.extxyz) with Maxwell-Boltzmann velocities.
   Every ``--log-every`` steps the bonds of the relaxed geometry (pairs within 1.2 x the covalent-radius sum)
   are checked: a bond is broken when it is longer than 1.5 x its relaxed length, and an atom has left when it
   is 2 A further from the centre of mass than any atom of the relaxed geometry (escn.md.molecule_integrity).
2. NVE: velocity Verlet from the last NVT state, same time step, for ``--nve-ps`` (default 5 ps); the drift is
   the slope of a least-squares line through the total energy per atom (escn.md.energy_drift_per_atom), in
   meV/atom/ps (target: |drift| <= 1).
3. Timings (escn.bench.md): ms per MD step for one molecule and for a periodic box of 32 molecules.

The model runs in float64 in the calculator (forces consistent with the energy to round-off).  Exit status 1
when a bond broke, an atom left or |drift| > the target, else 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    import ase.io

    from escn.ase import Calculator
    from escn.bench.md import format_timings
    from escn.bench.md import run as bench
    from escn.md import bonded_pairs, energy_drift_per_atom, molecule_integrity, run_langevin, run_nve

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="trained checkpoint (e.g. runs/aspirin/best.pt)")
    p.add_argument(
        "--start",
        default=str(ROOT / "examples" / "data" / "aspirin_relaxed.extxyz"),
        help="relaxed geometry: start of the MD and reference of the bonds",
    )
    p.add_argument("--temperature", type=float, default=500.0, help="K (default 500)")
    p.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    p.add_argument("--friction", type=float, default=0.01, help="1/fs (default 0.01)")
    p.add_argument("--nvt-ps", type=float, default=20.0, help="NVT length in ps (default 20)")
    p.add_argument("--nve-ps", type=float, default=5.0, help="NVE length in ps (default 5)")
    p.add_argument("--log-every", type=int, default=20, help="steps between recorded frames (default 20)")
    p.add_argument("--drift-target", type=float, default=1.0, help="meV/atom/ps (default 1)")
    p.add_argument("--bench-steps", type=int, default=200, help="timed MD steps of one molecule (default 200; 0: skip)")
    p.add_argument("--copies", type=int, default=32, help="molecules in the timed box (default 32)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    relaxed = ase.io.read(args.start, index=0)
    bonds = bonded_pairs(relaxed.numbers, relaxed.positions)
    calc = Calculator(args.checkpoint)
    report: dict = {
        "checkpoint": args.checkpoint,
        "atoms": len(relaxed),
        "bonds": len(bonds),
        "threads": torch.get_num_threads(),
    }

    atoms = relaxed.copy()
    n_nvt = round(1000 * args.nvt_ps / args.timestep)
    t0 = time.perf_counter()
    nvt = run_langevin(
        atoms,
        calc,
        args.timestep,
        n_nvt,
        args.temperature,
        args.friction,
        log_every=args.log_every,
        seed=args.seed,
        record_positions=True,
    )
    t_nvt = time.perf_counter() - t0
    check = molecule_integrity(nvt["positions"], relaxed.positions, bonds, masses=relaxed.get_masses())
    report["nvt"] = {
        "ps": args.nvt_ps,
        "steps": n_nvt,
        "wall_s": round(t_nvt, 1),
        "ms_per_step": round(1000 * t_nvt / n_nvt, 2),
        "mean_temperature_K": round(float(nvt["temperature_K"][len(nvt["temperature_K"]) // 5 :].mean()), 1),
        **{
            k: check[k]
            for k in (
                "ok",
                "broken_bonds",
                "first_broken_frame",
                "max_bond_ratio",
                "max_bond_ratio_pair",
                "min_bond_ratio",
                "left_atoms",
                "max_center_distance",
                "reference_max_center_distance",
            )
        },
    }
    print(
        f"NVT {args.nvt_ps:g} ps at {args.temperature:g} K ({n_nvt} steps of {args.timestep:g} fs, {t_nvt:.0f} s): "
        f"mean T {report['nvt']['mean_temperature_K']} K (last 80 %); {len(bonds)} bonds, longest "
        f"{check['max_bond_ratio']:.3f} x relaxed {check['max_bond_ratio_pair']}, shortest "
        f"{check['min_bond_ratio']:.3f} x; broken: {check['broken_bonds'] or 'none'}; atoms gone: "
        f"{check['left_atoms'] or 'none'} (max centre distance {check['max_center_distance']:.2f} A, relaxed "
        f"{check['reference_max_center_distance']:.2f} A)"
    )

    ok = bool(check["ok"])
    if ok:
        n_nve = round(1000 * args.nve_ps / args.timestep)
        t0 = time.perf_counter()
        nve = run_nve(atoms, calc, args.timestep, n_nve, log_every=args.log_every, record_positions=True)
        t_nve = time.perf_counter() - t0
        drift = energy_drift_per_atom(nve)
        check_nve = molecule_integrity(nve["positions"], relaxed.positions, bonds, masses=relaxed.get_masses())
        slope = 1000 * drift["slope_eV_per_atom_per_ps"]
        report["nve"] = {
            "ps": args.nve_ps,
            "steps": n_nve,
            "wall_s": round(t_nve, 1),
            "drift_meV_per_atom_per_ps": slope,
            "max_abs_deviation_meV_per_atom": 1000 * drift["max_abs_deviation_eV_per_atom"],
            "std_meV_per_atom": 1000 * drift["std_eV_per_atom"],
            "mean_temperature_K": round(float(nve["temperature_K"].mean()), 1),
            "intact": bool(check_nve["ok"]),
        }
        print(
            f"NVE {args.nve_ps:g} ps ({n_nve} steps, {t_nve:.0f} s): total-energy drift {slope:+.4f} meV/atom/ps "
            f"(target |drift| <= {args.drift_target:g}), max |E(t) - E(0)| "
            f"{report['nve']['max_abs_deviation_meV_per_atom']:.3f} meV/atom, std "
            f"{report['nve']['std_meV_per_atom']:.3f} meV/atom, mean T {report['nve']['mean_temperature_K']} K, "
            f"molecule {'intact' if check_nve['ok'] else 'NOT intact'}"
        )
        ok = ok and abs(slope) <= args.drift_target and bool(check_nve["ok"])

    if args.bench_steps > 0:
        rows = bench(args.checkpoint, relaxed, copies=args.copies, steps=args.bench_steps, threads=args.threads)
        report["bench"] = [r.__dict__ for r in rows]
        print(format_timings(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
