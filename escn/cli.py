"""The ``escn`` command line.

``escn bench``  — high-l scaling benchmark: SO(2) convolutions vs full-CG TFN (and e3nn), table + JSON/CSV/PNG.
``escn demo``   — (alias ``escn check``) equivariance errors of SO2Conv at high l, with real numbers.
``escn train``  — train a model from a TOML/YAML config (exact resume, DDP under torchrun).
``escn evaluate`` — metrics (MAE/RMSE/MSE per key) of a training checkpoint on a data set.
``escn upgrade-checkpoint`` — rewrite a trusted checkpoint of an earlier version in the current (weights-only) format.
``escn data xtb-md`` — GFN2-xTB Langevin MD frames (energies, forces) as extended XYZ (needs tblite).

Bad arguments are reported by argparse (exit status 2) with the option, the value and what is expected.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, NoReturn, Sequence

import torch

__all__ = ["build_parser", "main"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_MAX_L = 64


# --------------------------------------------------------------------------- argument types
def _int_at_least(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            bound = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise argparse.ArgumentTypeError(f"expected an integer {bound}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


_positive_float.__name__ = "float"


def _l_list(text: str) -> list[int]:
    parse = _int_at_least(1, _MAX_L)
    items = [t for t in text.replace(" ", "").split(",") if t]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of orders such as 1,2,4,8, got {text!r}")
    return sorted({parse(t) for t in items})


_l_list.__name__ = "list of L"


def _method_list(text: str) -> list[str]:
    from escn.bench.scaling import METHODS

    items = [t for t in text.replace(" ", "").split(",") if t]
    unknown = [t for t in items if t not in METHODS]
    if unknown or not items:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {', '.join(unknown) or repr(text)}; choose from {', '.join(METHODS)}"
        )
    return [m for m in METHODS if m in items]


_method_list.__name__ = "list of methods"


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The ``escn`` parser with its ``bench``, ``demo``/``check``, ``train`` and ``evaluate`` subcommands."""
    from escn.bench.scaling import METHOD_HELP

    parser = argparse.ArgumentParser(
        prog="escn", description="E(3)-equivariant graph networks with eSCN (SO(2)) convolutions."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    methods_help = "; ".join(f"{k}: {v}" for k, v in METHOD_HELP.items())
    b = sub.add_parser(
        "bench",
        help="high-l scaling benchmark (SO(2) vs TFN vs e3nn)",
        description="Time SO(2) and full-CG convolutions as the order L of the node features grows. "
        "Node irreps C x 0e + C x 1o + ... + C x Lp, filters up to 2L. Methods -- " + methods_help,
    )
    ls = b.add_mutually_exclusive_group()
    ls.add_argument("--lmax", type=_int_at_least(1, _MAX_L), default=None, help="sweep L = 1..LMAX (default 8)")
    ls.add_argument("--ls", type=_l_list, default=None, help="explicit orders, e.g. 1,2,4,8")
    b.add_argument("--channels", type=_int_at_least(1), default=16, help="multiplicity C of every l (default 16)")
    b.add_argument("--nodes", type=_int_at_least(2), default=100, help="number of random nodes, N(0,1)^3 (default 100)")
    b.add_argument("--radius", type=_positive_float, default=1.8, help="radius-graph cutoff (default 1.8)")
    b.add_argument("--dtype", choices=sorted(_DTYPES), default="float32", help="floating dtype (default float32)")
    b.add_argument(
        "--threads",
        type=_int_at_least(1),
        default=None,
        help=f"torch.set_num_threads for the sweep (default: torch.get_num_threads(), {torch.get_num_threads()} here)",
    )
    b.add_argument(
        "--repeats", type=_int_at_least(1), default=3, help="timed repeats, median after 1 warm-up (default 3)"
    )
    b.add_argument(
        "--out", default="bench_out", help="output directory for results.json/.csv and scaling.png (default bench_out/)"
    )
    b.add_argument(
        "--budget-seconds", type=_positive_float, default=10.0, help="time budget per configuration (default 10)"
    )
    b.add_argument(
        "--anchor-l",
        type=_int_at_least(0, _MAX_L),
        default=4,
        help="order L at which every method runs whatever the time budget (at least 1 repeat), so the speed-ups "
        "over tfn and e3nn are always measured when this L is swept (default 4; 0: none)",
    )
    b.add_argument(
        "--max-memory-gb", type=_positive_float, default=4.0, help="memory budget per configuration (default 4)"
    )
    b.add_argument(
        "--methods",
        type=_method_list,
        default=None,
        help="comma-separated subset of the methods (default: all available)",
    )
    b.add_argument(
        "--seed", type=_int_at_least(0), default=0, help="random seed of graph, features and weights (default 0)"
    )
    b.add_argument(
        "--allocator",
        choices=["system", "reuse"],
        default="system",
        help="system (default): the C library's malloc settings, under which large blocks are returned on "
        "free and page-faulted in afresh every iteration; reuse: keep freed memory for reuse, as a "
        "caching allocator does (escn.bench.allocator.reuse_freed_memory, glibc only): every method "
        "runs faster, peak memory reads higher",
    )
    b.add_argument(
        "--executor",
        choices=["native", "torch"],
        default="native",
        help="what runs the SO2Conv layers: native (default): the compiled kernels of escn.native where "
        "they apply; torch: PyTorch ops only",
    )
    b.add_argument("--no-progress", action="store_true", help="do not draw the progress bar on stderr")
    b.set_defaults(func=_cmd_bench, subparser=b)

    for name in ("demo", "check"):
        d = sub.add_parser(
            name,
            help="equivariance check of SO2Conv at high l" + (" (alias of demo)" if name == "check" else ""),
            description="Rotate, reflect and translate every input of SO2Conv by its declared irreps "
            "and report max |f(g x) - g f(x)| (escn.testing.equivariance_error).",
        )
        d.add_argument(
            "--lmax", type=_int_at_least(0, _MAX_L), default=8, help="highest order of the node features (default 8)"
        )
        d.add_argument("--channels", type=_int_at_least(1), default=2, help="multiplicity of every l (default 2)")
        d.add_argument("--nodes", type=_int_at_least(2), default=16, help="number of random nodes (default 16)")
        d.add_argument("--dtype", choices=sorted(_DTYPES), default="float64", help="floating dtype (default float64)")
        d.add_argument("--seed", type=_int_at_least(0), default=0, help="random seed (default 0)")
        d.set_defaults(func=_cmd_demo, subparser=d)

    t = sub.add_parser(
        "train",
        help="train a model from a TOML/YAML config",
        description="Train a registered model from a TOML (or YAML, with pyyaml) config; "
        "checkpoints, metrics.jsonl and the best model go to output_dir. Under "
        "torchrun (WORLD_SIZE > 1) every rank takes its shard of each global batch.",
    )
    t.add_argument("config", help="config file (.toml, .yaml/.yml or .json)")
    t.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="continue from output_dir/checkpoint.pt, or from CHECKPOINT",
    )
    t.add_argument("--overwrite", action="store_true", help="start fresh even if output_dir holds a checkpoint")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (dotted, value as a TOML literal), e.g. --set optimizer.lr=1e-3",
    )
    t.add_argument("--output-dir", default=None, help="override output_dir")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument(
        "--debug",
        action="store_true",
        help="on an error (bad config, unusable checkpoint, ...) show the full traceback instead of one line",
    )
    t.set_defaults(func=_cmd_train, subparser=t)

    e = sub.add_parser(
        "evaluate",
        help="metrics of a training checkpoint on a data set",
        description="Print MAE / RMSE / MSE per output key (and energy per atom) of a checkpoint's model "
        "(EMA weights unless --raw) on DATA: a torch.save'd list of AtomsGraph, an "
        "ASE-readable file or 'package.module:function'. Without DATA: the training "
        "config's validation source, its kwargs updated by --kwargs (e.g. --kwargs "
        '\'{"split": "test"}\').',
    )
    e.add_argument("checkpoint", help="checkpoint.pt / best.pt written by escn train")
    e.add_argument(
        "data",
        nargs="?",
        default=None,
        help="data file or 'package.module:function' (default: the training config's data.valid source)",
    )
    e.add_argument(
        "--kwargs",
        default=None,
        metavar="JSON",
        help="keyword arguments of a 'module:function' source (without DATA: updates data.valid's)",
    )
    e.add_argument(
        "--split",
        choices=["train", "valid", "test"],
        default=None,
        help="instead of DATA: that part of the training config's data (its own source, or the part "
        "held out by valid_fraction / test_fraction, split as in training)",
    )
    e.add_argument("--batch-size", type=_int_at_least(1), default=16, help="graphs per batch (default 16)")
    e.add_argument(
        "--cutoff", type=_positive_float, default=None, help="radius-graph cutoff (default: the training one)"
    )
    e.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    e.add_argument("--debug", action="store_true", help="on an error show the full traceback instead of one line")
    e.set_defaults(func=_cmd_evaluate, subparser=e)

    p = sub.add_parser(
        "deploy",
        help="compile an energy model ahead of time into an AOTInductor package (.pt2)",
        description="Export the energy model of a checkpoint (energy, forces, stress; any number of atoms "
        "and edges) and compile it with AOTInductor into one .pt2 file, which "
        "escn.ase.Calculator('model.pt2') runs (docs/deployment.md).",
    )
    p.add_argument("checkpoint", help="checkpoint.pt / best.pt written by escn train (EMA weights when kept)")
    p.add_argument("-o", "--output", required=True, help="the package to write, e.g. model.pt2")
    p.add_argument(
        "--dtype", choices=("float64", "float32"), default="float64", help="dtype of the package (default float64)"
    )
    p.add_argument(
        "--executor",
        choices=("native", "torch"),
        default="native",
        help="native: the escn C kernels as operators in the package (they need escn importable where it runs); "
        "torch: PyTorch ops only (default native)",
    )
    p.add_argument("--no-stress", action="store_true", help="energy and forces only")
    p.add_argument("--debug", action="store_true", help="on an error show the full traceback instead of one line")
    p.set_defaults(func=_cmd_deploy, subparser=p)

    u = sub.add_parser(
        "upgrade-checkpoint",
        help="convert a trusted checkpoint of an earlier escn to the current format",
        description="Read CHECKPOINT with a full unpickling (which can run code from the file: only for "
        "files from a trusted source) and write it in the current format, which "
        "torch.load(..., weights_only=True) reads: tensors and plain values only.",
    )
    u.add_argument("checkpoint", help="checkpoint.pt / best.pt written by an earlier escn train")
    u.add_argument("--output", default=None, help="where to write the converted file (default: over CHECKPOINT)")
    u.add_argument("--debug", action="store_true", help="on an error show the full traceback instead of one line")
    u.set_defaults(func=_cmd_upgrade_checkpoint, subparser=u)
    _add_data_parser(sub)
    return parser


# --------------------------------------------------------------------------- train / evaluate
# errors of the input (config, data, checkpoint files) and of the run (a diverged loss): one line, no traceback
_USER_ERRORS = (ValueError, OSError, FloatingPointError)


def _fail(parser: argparse.ArgumentParser, exc: BaseException) -> NoReturn:
    """Exit with status 2 and ``<prog>: error: <message>`` as the only line on stderr."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    parser.exit(2, f"{parser.prog}: error: {message}\n")


def _cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from escn.train import load_config, train

    overrides = list(args.overrides)
    if args.output_dir is not None:
        overrides.append(f"output_dir={_toml_string(args.output_dir)}")
    if args.no_progress:
        overrides.append("progress=false")
    try:
        config = load_config(args.config, overrides)
        train(config, resume=args.resume, overwrite=args.overwrite)
    except _USER_ERRORS as exc:
        if args.debug:
            raise
        _fail(parser, exc)
    return 0


def _toml_string(text: str) -> str:
    import json

    return json.dumps(text)


def _cmd_evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import json

    from escn.train import evaluate_checkpoint
    from escn.train.evaluate import format_evaluation

    kwargs = None
    if args.kwargs is not None:
        try:
            kwargs = json.loads(args.kwargs)
        except json.JSONDecodeError as exc:
            parser.error(f"--kwargs: expected a JSON object, got {args.kwargs!r} ({exc})")
        if not isinstance(kwargs, dict):
            parser.error(f"--kwargs: expected a JSON object, got {args.kwargs!r}")
    try:
        if args.split is not None and args.data is not None:
            parser.error(f"--split {args.split} and DATA {args.data!r} exclude each other")
        metrics, n = evaluate_checkpoint(
            args.checkpoint,
            args.data,
            ema=not args.raw,
            batch_size=args.batch_size,
            kwargs=kwargs,
            cutoff=args.cutoff,
            split=args.split,
        )
    except _USER_ERRORS as exc:
        if args.debug:
            raise
        _fail(parser, exc)
    if args.json:
        print(json.dumps({"num_items": n, **metrics}, indent=2))
    else:
        weights = "raw" if args.raw else "EMA (when kept)"
        where = (
            args.data
            if args.data is not None
            else f"the training config's {args.split} data"
            if args.split
            else "the training config's validation source" + (f" with {args.kwargs}" if args.kwargs else "")
        )
        print(format_evaluation(metrics, f"{args.checkpoint} on {where}: {n} structures, {weights} weights"))
    return 0


# --------------------------------------------------------------------------- deploy
def _cmd_deploy(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    from escn.models import load
    from escn.models.export import deploy, example_batch

    try:
        model = load(args.checkpoint, map_location="cpu")
        model = model.to(getattr(torch, args.dtype)).eval()
        if hasattr(model, "set_executor"):
            model.set_executor(args.executor)
        path = deploy(model, example_batch(model), args.output, compute_stress=not args.no_stress)
    except _USER_ERRORS as exc:
        if args.debug:
            raise
        _fail(parser, exc)
    print(f"wrote {path} ({args.dtype}, {'energy, forces' if args.no_stress else 'energy, forces, stress'})")
    return 0


# --------------------------------------------------------------------------- upgrade-checkpoint
def _cmd_upgrade_checkpoint(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from escn.checkpoint import VERSION, upgrade_checkpoint

    try:
        out = upgrade_checkpoint(args.checkpoint, args.output)
    except _USER_ERRORS as exc:
        if args.debug:
            raise
        _fail(parser, exc)
    print(f"wrote {out} (checkpoint version {VERSION}, readable with torch.load(..., weights_only=True))")
    return 0


# --------------------------------------------------------------------------- bench
def _cmd_bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from escn.bench.allocator import enable_transparent_huge_pages

    enable_transparent_huge_pages()  # before the first tensor: large temporaries on huge pages (docs/performance.md)
    from escn.bench import report
    from escn.bench.scaling import SweepConfig, default_methods, method_available, run_sweep

    methods = args.methods if args.methods is not None else default_methods()
    missing = [m for m in methods if not method_available(m)]
    if missing:
        need = {
            "e3nn": "e3nn (pip install 'escn[bench]')",
            "so2_equal_scatter": "torch_scatter (pip install 'escn[scatter]')",
        }
        parser.error(f"--methods: {', '.join(missing)} cannot run here: needs {', '.join(need[m] for m in missing)}")
    ls = args.ls if args.ls is not None else list(range(1, (args.lmax or 8) + 1))
    cfg = SweepConfig(
        ls=ls,
        channels=args.channels,
        nodes=args.nodes,
        radius=args.radius,
        dtype=_DTYPES[args.dtype],
        threads=args.threads,
        repeats=args.repeats,
        budget_seconds=args.budget_seconds,
        anchor_l=args.anchor_l or None,
        max_memory_gb=args.max_memory_gb,
        methods=methods,
        seed=args.seed,
        allocator=args.allocator,
        executor=args.executor,
    )
    progress = None if args.no_progress else report.Progress()
    try:
        result = run_sweep(cfg, progress)
    except ValueError as exc:
        parser.error(str(exc))
    print(report.format_table(result))
    paths = report.write_all(result, args.out)
    if not any(p.endswith(".png") for p in paths):
        print("note: matplotlib is not installed, scaling.png skipped (pip install 'escn[bench]')")
    print("wrote " + ", ".join(paths))
    return 0


# --------------------------------------------------------------------------- demo / check
def _demo_layers(irreps_in: str, irreps_out: str, L: int) -> list[tuple[str, torch.nn.Module]]:
    from escn.nn import SO2Conv, TFNConv

    return [
        (f"per-edge weights, mmax={L}", SO2Conv(irreps_in, irreps_out)),
        ("shared weights, mmax=2", SO2Conv(irreps_in, irreps_out, mmax=min(2, L), shared_weights=True)),
        (f"from_tfn (lmax_filter={2 * L})", SO2Conv.from_tfn(TFNConv(irreps_in, irreps_out, lmax_filter=2 * L))),
    ]


def _cmd_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from escn.bench.scaling import default_dtype, node_irreps
    from escn.data import radius_graph
    from escn.testing import equivariance_error

    dtype = _DTYPES[args.dtype]
    L = args.lmax
    gen = torch.Generator().manual_seed(args.seed)
    pos = torch.randn(args.nodes, 3, generator=gen, dtype=torch.float64).to(dtype)
    graph = radius_graph(pos, 2.0)
    if graph.edge_src.numel() == 0:
        parser.error(f"--nodes {args.nodes}: the random graph has no edges; use more nodes")
    src, dst = graph.edge_src, graph.edge_dst
    # a pseudo-vector in and a pseudo-scalar out exercise the parity-switching (W2) blocks too
    irreps_in = node_irreps(L, args.channels) + " + 1x1e"
    irreps_out = node_irreps(L, args.channels) + " + 1x0o"
    with default_dtype(dtype):
        layers = _demo_layers(irreps_in, irreps_out, L)
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    print(f"escn demo: SO2Conv equivariance at l = {L} ({args.dtype}), {args.nodes} nodes, {src.numel()} edges")
    print(f"irreps in  {irreps_in}\nirreps out {irreps_out}")
    print(
        "errors: max |f(g x) - g f(x)| / max |f(x)| over 2 random group elements; every input transformed by its irreps"
    )
    print(f"{'layer':32s}{'rotation':>11s}{'reflection':>12s}{'translation':>13s}{'max|f(x)|':>11s}  {'time':>6s}")
    ok = True
    for name, layer in layers:
        layer = layer.to(dtype)
        w = torch.randn(src.numel(), layer.weight_numel, generator=gen, dtype=torch.float64).to(dtype)
        x = torch.randn(args.nodes, layer.irreps_in.dim, generator=gen, dtype=torch.float64).to(dtype)

        def fn(x: torch.Tensor, p: torch.Tensor, w: torch.Tensor, layer: torch.nn.Module = layer) -> torch.Tensor:
            return layer(x, src, dst, p[dst] - p[src], w)

        t0 = time.perf_counter()
        with torch.no_grad():
            scale = float(fn(x, pos, w).abs().max()) or 1.0
            err = equivariance_error(
                fn,
                [x, pos, w],
                [layer.irreps_in, "cartesian_points", None],
                layer.irreps_out,
                generator=torch.Generator().manual_seed(args.seed + 1),
            )
        rel = {k: v / scale for k, v in err.items()}
        ok &= all(v <= tol for v in rel.values())
        print(
            f"{name:32s}{rel['rotation']:11.1e}{rel['reflection']:12.1e}{rel['translation']:13.1e}{scale:11.2e}  "
            f"{time.perf_counter() - t0:5.2f}s"
        )
    print(("PASS" if ok else "FAIL") + f": all relative errors {'<=' if ok else 'should be <='} {tol:g}")
    return 0 if ok else 1


# --------------------------------------------------------------------------- data generators
def _split_counts(text: str) -> list[int]:
    parse = _int_at_least(0)
    items = [t for t in text.replace(" ", "").split(",") if t]
    if len(items) != 3:
        raise argparse.ArgumentTypeError(f"expected three counts TRAIN,VALID,TEST such as 950,50,500, got {text!r}")
    return [parse(t) for t in items]


_split_counts.__name__ = "split"


def _interval(text: str) -> float | None:
    return None if text == "auto" else _positive_float(text)


_interval.__name__ = "interval"


def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    from escn.datasets.xtb_md import MOLECULES, XtbMDSettings

    d = XtbMDSettings()
    data = sub.add_parser("data", help="generate training data", description="Generate training data sets.")
    kinds = data.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    x = kinds.add_parser(
        "xtb-md",
        help="GFN2-xTB Langevin MD of a molecule as extended XYZ (needs tblite)",
        description="Relax the molecule with GFN2-xTB (tblite), run Langevin MD, keep frames at a "
        "sampling interval measured from the autocorrelation of energies and forces "
        "(or --interval), and write OUT/<molecule>_{train,valid,test}.extxyz with energy "
        "(eV) and forces (eV/A), <molecule>_trajectory.extxyz (time order) and "
        "<molecule>_meta.json (settings, autocorrelations, wall time). "
        "Needs pip install 'escn[xtb]'.",
    )
    x.add_argument("--molecule", choices=sorted(MOLECULES), default=d.molecule, help=f"default {d.molecule}")
    x.add_argument("--out", default="examples/data", help="output directory (default examples/data)")
    x.add_argument(
        "--temperature", type=_positive_float, default=d.temperature_K, help=f"K (default {d.temperature_K:g})"
    )
    x.add_argument("--timestep", type=_positive_float, default=d.timestep_fs, help=f"fs (default {d.timestep_fs:g})")
    x.add_argument(
        "--friction",
        type=_positive_float,
        default=d.friction_per_fs,
        help=f"Langevin friction, 1/fs (default {d.friction_per_fs:g})",
    )
    x.add_argument(
        "--fmax", type=_positive_float, default=d.relax_fmax, help=f"BFGS convergence, eV/A (default {d.relax_fmax:g})"
    )
    x.add_argument(
        "--equilibration",
        type=float,
        default=d.equilibration_fs,
        help=f"fs of MD discarded first (default {d.equilibration_fs:g})",
    )
    x.add_argument(
        "--pilot",
        type=float,
        default=d.pilot_fs,
        help=f"fs of MD measuring the autocorrelation (default {d.pilot_fs:g})",
    )
    x.add_argument(
        "--interval",
        type=_interval,
        default=None,
        help=f"sampling interval in fs, or auto (default): the larger statistical inefficiency of energy and "
        f"forces in the pilot, within [{d.min_interval_fs:g}, {d.max_interval_fs:g}] fs",
    )
    x.add_argument("--frames", type=_int_at_least(1), default=d.n_frames, help=f"frames written (default {d.n_frames})")
    x.add_argument(
        "--split",
        type=_split_counts,
        default=None,
        help="TRAIN,VALID,TEST counts summing to --frames (default 950,50,500, or 2/3, 1/30, the rest)",
    )
    x.add_argument(
        "--seed", type=_int_at_least(0), default=d.seed, help=f"velocities, noise and split (default {d.seed})"
    )
    x.set_defaults(func=_cmd_data_xtb_md, subparser=x)


def _cmd_data_xtb_md(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from escn.datasets.xtb_md import XtbMDSettings, generate_xtb_md

    split = args.split
    if split is None:
        n = args.frames
        if n == 1500:
            split = [950, 50, 500]
        else:
            train, valid = (2 * n) // 3, max(1, n // 30) if n >= 3 else 0
            split = [train, valid, n - train - valid]
    try:
        settings = XtbMDSettings(
            molecule=args.molecule,
            temperature_K=args.temperature,
            timestep_fs=args.timestep,
            friction_per_fs=args.friction,
            relax_fmax=args.fmax,
            equilibration_fs=args.equilibration,
            pilot_fs=args.pilot,
            interval_fs=args.interval,
            n_frames=args.frames,
            split=tuple(zip(("train", "valid", "test"), split)),
            seed=args.seed,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        generate_xtb_md(settings, args.out)
    except ImportError as exc:
        _fail(parser, exc)
    return 0


# --------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``escn`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args, args.subparser))


def run() -> None:
    """Process entry point (the ``escn`` script and ``python -m escn``): :func:`main`, then exit.

    A rank of a multi-process run (``WORLD_SIZE`` > 1, under torchrun) that finished cleanly leaves with
    ``os._exit`` once its output is flushed: its process group is already destroyed, and skipping interpreter
    teardown keeps gloo's remaining threads from aborting the rank ("terminate called without an active
    exception") after the run has succeeded. Errors still propagate as exceptions."""
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
