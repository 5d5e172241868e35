"""Throughput of the math layer against e3nn 0.6.0, measured in the same process run.

What is timed (N random vectors, every lmax in the range, float32 and float64, eager CPU):

* ``sh``: spherical harmonics of all orders 0..lmax at once, ``normalize=True``,
  ``normalization="component"``: ``escn.o3.spherical_harmonics(range(lmax+1), x, ...)`` vs
  ``e3nn.o3.spherical_harmonics(range(lmax+1), x, ...)`` (same arguments, same output).
* ``sh f+b``: the same forward plus the backward of ``(Y * w).sum()`` to ``x`` (fixed random ``w``).
* ``D``: per-edge Wigner-D blocks of the rotation carrying the edge direction onto +y, for every
  ``l <= lmax``:
    - escn: ``edge_frame(v, lmax).wigner_blocks()`` (all rows, ``mmax = lmax``);
    - e3nn: ``alpha, beta = o3.xyz_to_angles(v)`` then, for each l,
      ``o3.wigner_D(l, alpha, beta, zeros).transpose(-1, -2)``
      (``D(alpha, beta, 0)`` carries +y onto v; its transpose carries v onto +y; the transpose is a view).
      e3nn builds ``wigner_D`` in torch's default dtype, so the default dtype is set to the
      benchmarked dtype around e3nn's calls.
  Both are the full (2l+1)x(2l+1) blocks for all N edges; the two rotations may differ by a roll
  about y (any such rotation serves an eSCN layer), so values are not compared here (the tests do that).

Each entry is the median of several timed repeats after one warm-up call, escn and e3nn called
alternately; the ratio column is
e3nn / escn (> 1 means escn is faster). Regime: many vectors, moderate l, 2 threads.

    python -m escn.bench.o3 [--n 10000] [--lmin 2] [--lmax 12] [--repeats 5] [--threads 2] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, List

import torch

from escn import o3 as escn_o3
from escn.o3.edge_frame import edge_frame


def median_ms_pair(
    ours: Callable[[], object], theirs: Callable[[], object], repeats: int, min_time: float = 0.2
) -> tuple[float, float]:
    """Median wall times in ms of ``ours`` and ``theirs`` after one warm-up call each.

    The two are called alternately, so that a change of machine load affects both alike; at least
    ``repeats`` pairs and ``min_time`` seconds (at most 50 pairs)."""
    ours()
    theirs()
    t_ours: List[float] = []
    t_theirs: List[float] = []
    start = time.perf_counter()
    while len(t_ours) < repeats or (time.perf_counter() - start < min_time and len(t_ours) < 50):
        for fn, times in ((ours, t_ours), (theirs, t_theirs)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(t_ours), 1e3 * statistics.median(t_theirs)


class _DefaultDtype:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __enter__(self) -> None:
        self.old = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc: object) -> None:
        torch.set_default_dtype(self.old)


def cases(e3nn_o3, x: torch.Tensor, lmax: int):
    """``{name: (escn_fn, e3nn_fn)}`` for one dtype and lmax."""
    ls = list(range(lmax + 1))
    dim = (lmax + 1) ** 2
    w = torch.randn(x.shape[0], dim, dtype=x.dtype, generator=torch.Generator().manual_seed(1))
    xg = x.detach().clone().requires_grad_(True)

    def sh_escn():
        return escn_o3.spherical_harmonics(ls, x, True, "component")

    def sh_e3nn():
        return e3nn_o3.spherical_harmonics(ls, x, True, "component")

    def fb_escn():
        xg.grad = None
        (escn_o3.spherical_harmonics(ls, xg, True, "component") * w).sum().backward()

    def fb_e3nn():
        xg.grad = None
        (e3nn_o3.spherical_harmonics(ls, xg, True, "component") * w).sum().backward()

    def d_escn():
        return edge_frame(x, lmax).wigner_blocks()

    def d_e3nn():
        with _DefaultDtype(x.dtype):
            alpha, beta = e3nn_o3.xyz_to_angles(x)
            gamma = torch.zeros_like(alpha)
            return [e3nn_o3.wigner_D(l, alpha, beta, gamma).transpose(-1, -2) for l in ls]

    return {"sh": (sh_escn, sh_e3nn), "sh f+b": (fb_escn, fb_e3nn), "D": (d_escn, d_e3nn)}


def profile(e3nn_o3, x: torch.Tensor, lmax: int, name: str) -> None:
    """Operator-level profile of escn's side of one case."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn = cases(e3nn_o3, x, lmax)[name][0]
    fn()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            fn()
    print(f"\n--- escn {name}, lmax={lmax}, {x.dtype} (5 calls) ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--lmin", type=int, default=2)
    parser.add_argument("--lmax", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--profile", action="store_true", help="profile escn where it is slower than e3nn")
    args = parser.parse_args(argv)

    try:
        from e3nn import o3 as e3nn_o3
    except ImportError as exc:  # the comparison is the point of this benchmark
        raise SystemExit("this benchmark needs e3nn (pip install 'escn[bench]')") from exc

    torch.set_num_threads(args.threads)
    print(
        f"N = {args.n} vectors, threads = {torch.get_num_threads()}, torch {torch.__version__}; "
        "times in ms (median), ratio = e3nn / escn (> 1: escn faster)"
    )
    header = f"{'dtype':8} {'lmax':>4} | " + " | ".join(f"{n:^26}" for n in ("sh", "sh f+b", "D"))
    sub = f"{'':8} {'':>4} | " + " | ".join(f"{'escn':>8} {'e3nn':>8} {'ratio':>7}" for _ in range(3))
    print(header)
    print(sub)
    slower = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        x = torch.randn(args.n, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
        for lmax in range(args.lmin, args.lmax + 1):
            row = []
            for name, (ours, theirs) in cases(e3nn_o3, x, lmax).items():
                t_ours, t_theirs = median_ms_pair(ours, theirs, args.repeats)
                row.append(f"{t_ours:8.2f} {t_theirs:8.2f} {t_theirs / t_ours:7.2f}")
                if t_theirs < t_ours:
                    slower.append((name, lmax, dtype_name))
            print(f"{dtype_name:8} {lmax:>4} | " + " | ".join(row), flush=True)
    if slower:
        print("\nescn slower than e3nn at: " + ", ".join(f"{n} lmax={l} {d}" for n, l, d in slower))
        if args.profile:
            for name, lmax, dtype_name in slower[:3]:
                x = torch.randn(args.n, 3, dtype=getattr(torch, dtype_name))
                profile(e3nn_o3, x, lmax, name)


if __name__ == "__main__":
    from escn.bench.allocator import enable_transparent_huge_pages

    enable_transparent_huge_pages()  # before the first tensor (docs/performance.md)
    main()
