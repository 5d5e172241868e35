"""Time per MD step (energy and forces through :class:`escn.ase.Calculator`) of one energy model run three
ways: eager PyTorch, ``torch.compile`` and an AOTInductor package (``escn deploy``), on fcc copper.

    python -m escn.bench.md_step [--sizes 3,6] [--steps 5] [--threads T] [--dtype float64]

``--sizes 3,6`` are cubic fcc supercells of 108 and 864 atoms. Each step moves the atoms (a small rattle), so
the calculator rebuilds the graph and calls the model, as in MD. Compile and package times are printed apart.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch


def _model(dtype: torch.dtype):
    from escn.models import ESCN

    torch.manual_seed(0)
    return ESCN(lmax=2, mmax=2, channels=16, num_layers=2, cutoff=4.0, atomic_numbers=[29]).to(dtype).eval()


def _step_time(calc, atoms, steps: int) -> float:
    atoms = atoms.copy()
    atoms.calc = calc
    atoms.get_forces()  # warm-up (and compilation for torch.compile)
    t = time.perf_counter()
    for k in range(steps):
        atoms.rattle(0.01, seed=k)
        atoms.get_forces()
    return (time.perf_counter() - t) / steps


def main(argv=None) -> int:
    from ase.build import bulk

    from escn.ase import Calculator
    from escn.models.export import INDUCTOR_WORKAROUNDS, deploy, example_batch

    p = argparse.ArgumentParser(prog="python -m escn.bench.md_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="3,6", help="fcc cubic supercell repeats (3: 108 atoms, 6: 864)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per size and way")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = _model(dtype)
    print(
        f"model: {model.extra_repr()}, cutoff {model.cutoff}; {args.dtype}; threads {torch.get_num_threads()}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = deploy(model, example_batch(model), os.path.join(tmp, "model.pt2"))  # as escn deploy does
        print(f"AOTInductor package built in {time.perf_counter() - t:.0f} s")
        aoti = Calculator(path)
        compiled = torch.compile(model, fullgraph=True, dynamic=True, options=INDUCTOR_WORKAROUNDS)
        print(f"{'atoms':>6} {'eager ms':>9} {'compile ms':>11} {'AOTI ms':>8}  (per step: energy + forces)")
        for n in (int(s) for s in args.sizes.split(",")):
            atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n, n, n))
            eager_t = _step_time(Calculator(model, dtype=dtype), atoms, args.steps)
            with torch._dynamo.config.patch(trace_autograd_ops=True):
                compiled_t = _step_time(Calculator(compiled, dtype=dtype), atoms, args.steps)
            aoti_t = _step_time(aoti, atoms, args.steps)
            print(f"{len(atoms):>6} {1e3 * eager_t:>9.1f} {1e3 * compiled_t:>11.1f} {1e3 * aoti_t:>8.1f}")
    return 0


if __name__ == "__main__":
    from escn.bench.allocator import enable_transparent_huge_pages

    enable_transparent_huge_pages()  # before the first tensor (docs/performance.md)
    raise SystemExit(main())
