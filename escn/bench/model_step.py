"""ESCN inference and force-training step, this checkout against a baseline commit, interleaved in one run.

The workload: 128-atom fcc Cu (``ase.build.bulk("Cu", "fcc", a=3.61, cubic=True)`` repeated 2 x 2 x 2, then
2 x 2 x 1; every coordinate displaced by N(0, 0.05^2) Angstrom from a fixed seed), periodic, 5 Angstrom cutoff
(5,466 edges), ``ESCN(lmax=6, mmax=2, channels=16, num_layers=2)`` in float32, timed for

* inference: energy + conservative forces (eval mode: forces by autograd, no graph of the gradient kept);
* training step: energy + forces loss, backward through the forces (train mode: the forces keep their graph,
  ``create_graph=True``, so the backward is a double backward), one Adam step, gradients dropped
  (``zero_grad(set_to_none=True)``).

Both implementations are packages named ``escn``, so each runs in its own long-lived worker process whose
``PYTHONPATH`` is its checkout (the worker checks where ``escn`` came from). The driver asks the two workers in
turn for one timed rep at a time (the order alternates every rep), so both see the same machine conditions.
The baseline checkout is made with ``git worktree add --detach`` under the cache directory
(``$ESCN_CACHE_DIR``, else ``~/.cache/escn``) unless ``--baseline-dir`` names one; the input structure is
built once by the driver and sent to both workers.

After the timed reps each worker profiles one more step of each kind with ``torch.profiler``
(``profile_memory=True``, ``record_shapes=True``):

* peak working memory: the largest rise, over the step, of the bytes held by tensors allocated on the CPU
  (the running sum of the profiler's allocation and free records, from 0 at the start of the step: the
  parameters, inputs and optimizer state already held are not counted; memory that C kernels allocate
  outside PyTorch is not seen);
* SO(2) matmuls: the self CPU time of the matmul kernels (``aten::mm``/``bmm``/``addmm``/``baddbmm``) whose
  operand dimensions are those of a matmul called inside an SO(2) map (each SO2Conv's ``frame_map`` is run
  inside a ``record_function`` scope by the benchmark, not by the library); the backward and double backward
  of a matmul multiply the same three dimensions in another order, so they are found by the same signature.
  A forward matmul outside the scope with such dimensions would be counted too; their number is printed
  ("ambiguous") when it is not 0. Next to it: all matmul-family ops of the step. Both are shares of the
  profiled step's wall time (the profiler's overhead included in it).

Run it (with 10 reps, some minutes per block; nothing else should be running)::

    python -m escn.bench.model_step [--reps 10] [--threads 1,2] [--activations gate,s2]
                                    [--baseline 52446bf] [--baseline-dir DIR] [--quick] [--json FILE]

``--quick`` is a plumbing check, not a measurement: lmax 2, mmax 1, 4 channels, 1 layer, 32 atoms, 3 Angstrom
cutoff, 1 rep. Output: one block per thread count and activation; times in ms, median [min - max] over the
reps; ``baseline/current`` is the ratio of the medians (above 1: the current checkout is faster or smaller),
``per rep`` the range of the ratios of the two runs of each rep. The first block of a run with ``--reps 3`` of
commit 52446bf against itself, on a 2-core machine loaded by other jobs (load average 4-8): the timings show
what such load does (ratios from 0.72 to 1.14 between identical code), the memory peaks are exact::

    ESCN step: lmax 6, mmax 2, 16 channels, 2 layers, 128 atoms, 5,466 edges, cutoff 5.0 A, float32, 255,460 parameters
    baseline: 52446bf7ecb8 at <the --baseline-dir given>
    current:  <this repository>
    3 reps each, interleaved (order alternating)

    threads 1, activation gate
      inference       baseline  1492.2 [1142.2 - 1517.4]  current  1500.9 [1497.4 - 1507.6]  baseline/current 0.99x (per rep 0.76 - 1.01)
      training step   baseline  5040.0 [4701.5 - 6065.7]  current  5737.8 [5300.0 - 7004.0]  baseline/current 0.88x (per rep 0.72 - 1.14)
      training peak   baseline  1033.7 MB                 current  1033.7 MB                 baseline/current 1.00x
      inference peak  baseline   627.3 MB                 current   627.3 MB                 baseline/current 1.00x
      SO(2) matmuls   baseline 7.2 % of training step, current 6.3 % (all matmul-family ops: 8.9 %, 7.8 %; profiled steps 6752, 8234 ms)
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BASELINE = "52446bf"

# lmax, mmax, channels, layers, cutoff; the structure: cubic 4-atom cell repeated 2 x 2 x 2 then `repeat`
FULL = dict(lmax=6, mmax=2, channels=16, num_layers=2, cutoff=5.0, repeat=[2, 2, 1], displacement=0.05, seed=0)
QUICK = dict(lmax=2, mmax=1, channels=4, num_layers=1, cutoff=3.0, repeat=[1, 1, 1], displacement=0.05, seed=0)
WARMUP = 2  # untimed steps of each kind after building (the first ones load kernels and grow the allocator)
GAP_S = 0.01  # pause before each timed rep, so the other worker's OpenMP threads have stopped spinning

#: Self time of these profiler events is "matmul-family" time; the first group are the kernels whose operand
#: dimensions identify an SO(2) matmul (operand positions in the recorded input shapes).
MM_KERNELS = {"aten::mm": (0, 1), "aten::bmm": (0, 1), "aten::addmm": (1, 2), "aten::baddbmm": (1, 2)}
MM_OTHERS = {
    "aten::matmul",
    "aten::linear",
    "aten::addbmm",
    "aten::addmv",
    "aten::mv",
    "aten::dot",
    "aten::_addmm_activation",
}
SO2_SCOPE = "so2_map"


# ---------------------------------------------------------------------------------------------------- structure
def make_structure(repeat: list[int], displacement: float, seed: int) -> dict[str, Any]:
    """fcc Cu (a = 3.61 A, cubic 4-atom cell) repeated 2 x 2 x 2 and then ``repeat``, every coordinate displaced
    by N(0, displacement^2) from ``numpy.random.default_rng(seed)``: ``pos`` (N, 3), ``cell`` (3, 3) rows,
    ``numbers`` (N,), as lists."""
    import numpy as np
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2)).repeat(tuple(repeat))
    pos = atoms.get_positions() + np.random.default_rng(seed).normal(0.0, displacement, (len(atoms), 3))
    return {"pos": pos.tolist(), "cell": atoms.cell[:].tolist(), "numbers": atoms.numbers.tolist()}


# ------------------------------------------------------------------------------------ implementations (worker)
@dataclasses.dataclass
class Workload:
    """What the worker times: ``forward()`` -> (energy (B,), forces (N, 3)) of ``model`` on the prepared batch,
    in whichever mode the model is in (eval: forces without a graph, train: with one); ``so2_maps`` the
    ``(object, method name)`` pairs that run an SO(2) map, wrapped in a profiler scope while profiling."""

    model: Any
    forward: Callable[[], tuple[Any, Any]]
    num_atoms: int
    num_edges: int
    so2_maps: list[tuple[Any, str]]


def _build_escn_52446bf(cfg: dict[str, Any], structure: dict[str, Any], activation: str) -> Workload:
    """The model as built and called at commit 52446bf: ``escn.data.collate`` of one ``AtomsGraph``, the
    radius graph once, ``ESCN(...)(batch)`` returning a dict with ``"energy"`` and ``"forces"``."""
    import torch

    from escn.data import AtomsGraph, collate
    from escn.models import ESCN
    from escn.nn import SO2Conv

    pos = torch.tensor(structure["pos"], dtype=torch.float32)
    cell = torch.tensor(structure["cell"], dtype=torch.float32)
    types = torch.tensor(structure["numbers"], dtype=torch.long)
    batch = collate([AtomsGraph(pos=pos, atom_types=types, cell=cell)]).with_radius_graph(cfg["cutoff"])
    E = int(batch.edge_src.shape[0])
    torch.manual_seed(cfg["seed"])
    model = ESCN(
        num_atom_types=100,
        lmax=cfg["lmax"],
        mmax=cfg["mmax"],
        channels=cfg["channels"],
        num_layers=cfg["num_layers"],
        cutoff=cfg["cutoff"],
        activation=activation,
        avg_num_neighbors=E / pos.shape[0],
    )

    def forward() -> tuple[Any, Any]:
        out = model(batch, compute_forces=True)
        return out["energy"], out["forces"]

    maps = [(m, "frame_map") for m in model.modules() if isinstance(m, SO2Conv)]
    return Workload(model, forward, pos.shape[0], E, maps)


def build_current(cfg: dict[str, Any], structure: dict[str, Any], activation: str) -> Workload:
    """This checkout's model: its blocks run the SO(2) maps through ``SO2Conv.stage_map`` (and, in the last
    block of an energy-only model, ``SO2Conv.first_stage_rows``) on the stage layout."""
    work = _build_escn_52446bf(cfg, structure, activation)
    maps = [(m, name) for m, _ in work.so2_maps for name in ("stage_map", "first_stage_rows")]
    return Workload(work.model, work.forward, work.num_atoms, work.num_edges, maps)


def build_baseline(cfg: dict[str, Any], structure: dict[str, Any], activation: str) -> Workload:
    """The baseline checkout's model (commit 52446bf's API; a checkout whose SO2Conv has the stage layout's
    methods is built as the current one)."""
    from escn.nn import SO2Conv

    if hasattr(SO2Conv, "stage_map"):
        return build_current(cfg, structure, activation)
    return _build_escn_52446bf(cfg, structure, activation)


BUILDERS = {"current": build_current, "baseline": build_baseline}


# ----------------------------------------------------------------------------------------------------- worker
class _Runner:
    """One implementation's model, batch, loss targets and optimizer, and the two kinds of step."""

    def __init__(
        self, side: str, cfg: dict[str, Any], structure: dict[str, Any], activation: str, threads: int
    ) -> None:
        import torch

        torch.set_num_threads(threads)
        self.work = BUILDERS[side](cfg, structure, activation)
        g = torch.Generator().manual_seed(cfg["seed"] + 1)
        n = self.work.num_atoms
        self.energy_ref = torch.full((1,), -3.5 * n)
        self.forces_ref = 0.1 * torch.randn(n, 3, generator=g)
        self.opt = torch.optim.Adam(self.work.model.parameters(), lr=1e-4)

    def infer(self) -> float:
        self.work.model.eval()
        energy, _ = self.work.forward()  # the forces are computed in the forward
        return energy.detach().sum().item()

    def train(self) -> float:
        model = self.work.model
        model.train()
        energy, forces = self.work.forward()
        n = self.work.num_atoms
        loss = ((energy - self.energy_ref) / n).square().mean() + (forces - self.forces_ref).square().mean()
        loss.backward()
        self.opt.step()
        # dropped here, not at the start of the next step: every block freed in a step was allocated in it
        self.opt.zero_grad(set_to_none=True)
        return loss.item()


def mm_signature(name: str, shapes: list[list[int]]) -> tuple[int, ...] | None:
    """Operand dimensions of a matmul kernel event, in an order-free form: ``(M, K, N)`` sorted for 2-d
    operands, ``(batch, *sorted(M, K, N))`` for batched ones; None for other events or unrecorded shapes."""
    pos = MM_KERNELS.get(name)
    if pos is None or len(shapes) <= max(pos):
        return None
    a, b = shapes[pos[0]], shapes[pos[1]]
    if len(a) == 2 and len(b) == 2:
        return tuple(sorted((a[0], a[1], b[1])))
    if len(a) == 3 and len(b) == 3:
        return (a[0], *sorted((a[1], a[2], b[2])))
    return None


def peak_rise(records: list[tuple[int, int]]) -> int:
    """Largest value of the running sum of ``(time, bytes)`` allocation (+) and free (-) records taken in time
    order, starting from 0 (0 if it never rises)."""
    peak = held = 0
    for _, nbytes in sorted(records):
        held += nbytes
        peak = max(peak, held)
    return peak


def _profile_step(runner: _Runner, kind: str) -> dict[str, Any]:
    """One step of ``kind`` under torch.profiler: wall time, matmul self times, peak tensor memory rise."""
    from torch.profiler import ProfilerActivity, profile, record_function

    step = runner.train if kind == "train" else runner.infer
    wrapped = []
    for obj, attr in runner.work.so2_maps:
        fn = getattr(obj, attr)

        def scoped(*args: Any, _fn: Callable[..., Any] = fn, **kwargs: Any) -> Any:
            with record_function(SO2_SCOPE):
                return _fn(*args, **kwargs)

        object.__setattr__(obj, attr, scoped)  # instance attribute shadows the method
        wrapped.append((obj, attr))
    gc.collect()
    try:
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True, profile_memory=True) as prof:
            with record_function("model_step"):
                step()
    finally:
        for obj, attr in wrapped:
            del obj.__dict__[attr]
    events = prof.events()
    total_us = max(e.cpu_time_total for e in events if e.name == "model_step")

    def under(e: Any, pred: Callable[[str], bool]) -> bool:
        p = e.cpu_parent
        while p is not None:
            if pred(p.name):
                return True
            p = p.cpu_parent
        return False

    kernels = [(e, mm_signature(e.name, e.input_shapes)) for e in events if e.name in MM_KERNELS]
    in_scope = {sig for e, sig in kernels if sig is not None and under(e, lambda n: n == SO2_SCOPE)}
    so2_us = sum(e.self_cpu_time_total for e, sig in kernels if sig in in_scope)
    ambiguous = sum(
        1
        for e, sig in kernels
        if sig in in_scope
        and not under(e, lambda n: n == SO2_SCOPE or n.startswith("autograd::engine::evaluate_function"))
    )
    all_us = sum(e.self_cpu_time_total for e in events if e.name in MM_KERNELS or e.name in MM_OTHERS)
    records = [(r.start_ns(), r.nbytes()) for r in prof.profiler.kineto_results.events() if r.name() == "[memory]"]
    return {
        "step_ms": total_us / 1e3,
        "so2_mm_ms": so2_us / 1e3,
        "all_mm_ms": all_us / 1e3,
        "so2_found": bool(in_scope),
        "ambiguous": ambiguous,
        "peak_bytes": peak_rise(records),
    }


def _worker_main(side: str) -> int:
    """Serve JSON requests on stdin, one per line; answers go to the original stdout, everything else that
    would be printed (Python or C) to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj: dict[str, Any]) -> None:
        proto.write(json.dumps(obj) + "\n")

    import torch

    import escn

    send({"escn": str(Path(escn.__file__).resolve().parent), "torch": torch.__version__})
    runner: _Runner | None = None
    for line in sys.stdin:
        req = json.loads(line)
        try:
            cmd = req["cmd"]
            if cmd == "quit":
                send({})
                return 0
            if cmd == "setup":
                runner = None
                gc.collect()
                runner = _Runner(side, req["model"], req["structure"], req["activation"], req["threads"])
                energy = runner.infer()  # before any optimizer step: the initial model's energy
                for _ in range(WARMUP):
                    runner.infer()
                    runner.train()
                w = runner.work
                send(
                    {
                        "num_atoms": w.num_atoms,
                        "num_edges": w.num_edges,
                        "energy": energy,
                        "num_params": sum(p.numel() for p in w.model.parameters()),
                        "threads": torch.get_num_threads(),
                    }
                )
            elif cmd == "time":
                assert runner is not None, "setup first"
                step = runner.train if req["kind"] == "train" else runner.infer
                gc.collect()
                t0 = time.perf_counter()
                step()
                send({"seconds": time.perf_counter() - t0})
            elif cmd == "profile":
                assert runner is not None, "setup first"
                send({kind: _profile_step(runner, kind) for kind in ("train", "infer")})
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception:
            send({"error": traceback.format_exc()})
    return 0


# ----------------------------------------------------------------------------------------------------- driver
class Worker:
    """A worker process for one side (``"current"`` or ``"baseline"``) importing ``escn`` from ``checkout``."""

    def __init__(self, side: str, checkout: Path) -> None:
        self.side = side
        self.checkout = checkout.resolve()
        env = dict(os.environ, PYTHONPATH=str(self.checkout))
        self._log = tempfile.TemporaryFile(mode="w+")
        # run as a file, not with -m: sys.path[0] is then this file's folder, and escn comes from PYTHONPATH only
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", side],
            env=env,
            cwd=str(self.checkout),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        try:
            self.hello = self._receive()
            got = Path(self.hello["escn"])
            if got != self.checkout / "escn":
                raise RuntimeError(f"{side} worker imported escn from {got}, expected {self.checkout / 'escn'}")
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            self._log.close()
            raise

    def _receive(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            self._log.seek(0)
            raise RuntimeError(f"{self.side} worker exited (code {self.proc.poll()}):\n{self._log.read()[-4000:]}")
        ans = json.loads(line)
        if "error" in ans:
            raise RuntimeError(f"{self.side} worker failed:\n{ans['error']}")
        return ans

    def ask(self, **req: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._receive()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask(cmd="quit")
                self.proc.wait(timeout=30)
            except (RuntimeError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def ensure_baseline(rev: str, directory: str | None) -> tuple[Path, str]:
    """The baseline checkout and a description of it. An existing ``directory`` is used as it is; otherwise
    ``git worktree add --detach`` of ``rev`` into ``directory`` (default: ``bench-baseline-<sha>`` in the
    cache directory of :mod:`escn.native.build`)."""
    if directory is not None and (Path(directory) / "escn" / "__init__.py").is_file():
        d = Path(directory).resolve()
        try:
            head = _git("rev-parse", "HEAD", cwd=d)
        except (subprocess.CalledProcessError, OSError):
            head = "not a git checkout"
        return d, f"{d} (HEAD {head[:12]}, used as it is)"
    try:
        sha = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError as exc:
        raise ValueError(f"--baseline: {rev!r} is not a commit of {REPO}: {exc.stderr.strip()}") from None
    if directory is None:
        from escn.native.build import cache_dir

        d = cache_dir() / f"bench-baseline-{sha[:12]}"
    else:
        d = Path(directory)
    d = d.resolve()
    if (d / "escn" / "__init__.py").is_file():
        head = _git("rev-parse", "HEAD", cwd=d)
        if head != sha:
            raise ValueError(
                f"{d} holds commit {head[:12]}, not the baseline {sha[:12]}; remove it or pass --baseline-dir"
            )
    else:
        if d.exists() and any(d.iterdir()):
            raise ValueError(f"{d} exists but holds no escn checkout; remove it or pass another --baseline-dir")
        d.parent.mkdir(parents=True, exist_ok=True)
        _git("worktree", "add", "--detach", str(d), sha)
    return d, f"{sha[:12]} at {d}"


def _csv(kind: type, name: str, allowed: tuple[str, ...] | None = None) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        try:
            values = [kind(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name}: expected a comma-separated list of {kind.__name__}, got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError(f"{name}: empty list")
        if kind is int and min(values) < 1:
            raise argparse.ArgumentTypeError(f"{name}: values must be >= 1, got {text!r}")
        if allowed is not None and any(v not in allowed for v in values):
            raise argparse.ArgumentTypeError(f"{name}: values must be among {', '.join(allowed)}, got {text!r}")
        return values

    return parse


def _fmt_times(ts: list[float]) -> str:
    ms = [1e3 * t for t in ts]
    return f"{statistics.median(ms):7.1f} [{min(ms):6.1f} - {max(ms):6.1f}]"


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = dict(QUICK if args.quick else FULL)
    reps = args.reps if args.reps is not None else (1 if args.quick else 10)
    base_dir, base_desc = ensure_baseline(args.baseline, args.baseline_dir)
    structure = make_structure(cfg["repeat"], cfg["displacement"], cfg["seed"])
    workers = {}
    try:
        # started one after the other: two first imports of torch side by side on a loaded machine
        workers["baseline"] = Worker("baseline", base_dir)
        workers["current"] = Worker("current", REPO)
        results: dict[str, Any] = {"config": cfg, "reps": reps, "baseline": base_desc, "current": str(REPO), "runs": []}
        header_done = False
        for threads in args.threads:
            for activation in args.activations:
                info = {
                    s: w.ask(cmd="setup", model=cfg, structure=structure, activation=activation, threads=threads)
                    for s, w in workers.items()
                }
                if not header_done:
                    c, i = cfg, info["current"]
                    print(
                        f"ESCN step: lmax {c['lmax']}, mmax {c['mmax']}, {c['channels']} channels, {c['num_layers']} layers, "
                        f"{i['num_atoms']} atoms, {i['num_edges']:,} edges, cutoff {c['cutoff']} A, float32, "
                        f"{i['num_params']:,} parameters"
                        + (" (--quick: plumbing check, not a measurement)" if args.quick else "")
                    )
                    print(f"baseline: {base_desc}")
                    print(f"current:  {REPO}")
                    print(f"{reps} reps each, interleaved (order alternating)")
                    header_done = True
                times: dict[str, dict[str, list[float]]] = {s: {"infer": [], "train": []} for s in workers}
                for rep in range(reps):
                    order = ("baseline", "current") if rep % 2 == 0 else ("current", "baseline")
                    for kind in ("infer", "train"):
                        for s in order:
                            time.sleep(GAP_S)
                            times[s][kind].append(workers[s].ask(cmd="time", kind=kind)["seconds"])
                prof = {s: w.ask(cmd="profile") for s, w in workers.items()}
                entry = {"threads": threads, "activation": activation, "info": info, "times": times, "profile": prof}
                results["runs"].append(entry)
                _print_block(entry)
        return results
    finally:
        for w in workers.values():
            w.close()


def _print_block(entry: dict[str, Any]) -> None:
    times, prof = entry["times"], entry["profile"]
    b, c = times["baseline"], times["current"]
    print(f"\nthreads {entry['threads']}, activation {entry['activation']}")
    for kind, label in (("infer", "inference"), ("train", "training step")):
        ratio = statistics.median(b[kind]) / statistics.median(c[kind])
        paired = [tb / tc for tb, tc in zip(b[kind], c[kind])]  # the two runs of one rep, back to back
        print(
            f"  {label:<15} baseline {_fmt_times(b[kind])}  current {_fmt_times(c[kind])}  baseline/current {ratio:.2f}x"
            f" (per rep {min(paired):.2f} - {max(paired):.2f})"
        )
    for kind, label in (("train", "training peak"), ("infer", "inference peak")):
        pb, pc = prof["baseline"][kind]["peak_bytes"], prof["current"][kind]["peak_bytes"]
        ratio = f"{pb / pc:.2f}x" if pc else "n/a"
        print(
            f"  {label:<15} baseline {pb / 1e6:7.1f} MB{'':15}  current {pc / 1e6:7.1f} MB{'':15}  baseline/current {ratio}"
        )
    shares = []
    for s in ("baseline", "current"):
        p = prof[s]["train"]
        so2 = f"{100 * p['so2_mm_ms'] / p['step_ms']:.1f} %" if p["so2_found"] else "not found"
        if p["ambiguous"]:
            so2 += f" ({p['ambiguous']} ambiguous)"
        shares.append((so2, f"{100 * p['all_mm_ms'] / p['step_ms']:.1f} %", p["step_ms"]))
    print(
        f"  SO(2) matmuls   baseline {shares[0][0]} of training step, current {shares[1][0]} "
        f"(all matmul-family ops: {shares[0][1]}, {shares[1][1]}; profiled steps {shares[0][2]:.0f}, {shares[1][2]:.0f} ms)"
    )


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--worker":
        return _worker_main(sys.argv[2])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=None, help="timed reps of each step per side (default 10, --quick 1)")
    p.add_argument("--threads", type=_csv(int, "--threads"), default=[1, 2], help="comma-separated, default 1,2")
    p.add_argument(
        "--activations",
        type=_csv(str, "--activations", ("gate", "s2")),
        default=["gate", "s2"],
        help="comma-separated, default gate,s2",
    )
    p.add_argument("--baseline", default=DEFAULT_BASELINE, help=f"baseline commit (default {DEFAULT_BASELINE})")
    p.add_argument(
        "--baseline-dir",
        default=None,
        help="baseline checkout: used as it is if it holds escn, else the worktree is added there",
    )
    p.add_argument("--quick", action="store_true", help="tiny model and structure, 1 rep: checks the plumbing only")
    p.add_argument("--json", default=None, help="also write all numbers to this file")
    args = p.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        p.error(f"--reps must be >= 1, got {args.reps}")
    try:
        results = run(args)
    except ValueError as exc:
        p.error(str(exc))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    try:
        from escn.bench.allocator import enable_transparent_huge_pages
    except ImportError:  # a baseline worker: versions before the opt-in turned huge pages on at import
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    else:
        enable_transparent_huge_pages()  # before the first tensor (docs/performance.md)
    raise SystemExit(main())
