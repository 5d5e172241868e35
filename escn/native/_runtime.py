"""What the compiled kernels share: the executor argument of the layers, availability, dtype checks, argument
checks, the edge-range threads and the helpers that register them as PyTorch operators (namespace ``escn``, see
:data:`OPS_NAMESPACE`)."""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor

import torch

from escn.native import build

Tensor = torch.Tensor

I64 = ctypes.c_int64
PTR = ctypes.c_void_p


#: What runs the layers that have compiled kernels (``executor`` of :class:`escn.nn.SO2Conv`,
#: :class:`escn.nn.edge_rotation.EdgeRotation`, :class:`escn.models.ESCN`): "native", the kernels wherever they
#: apply (CPU, float32/float64; PyTorch ops elsewhere, and everywhere if they cannot be built: a warning then says
#: why, once), or "torch", PyTorch ops always. Both compute the same function; results differ by rounding.
EXECUTORS = ("native", "torch")


def check_executor(executor: object) -> str:
    """``executor`` if it is one of :data:`EXECUTORS`, else TypeError / ValueError naming the argument."""
    if not isinstance(executor, str):
        raise TypeError(f"executor must be a str, one of {EXECUTORS}, got {type(executor).__name__} {executor!r}")
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    return executor


def use_kernels(executor: str, *tensors: Tensor) -> bool:
    """True when a layer with this executor runs its compiled kernel on these operands: ``"native"``, operands
    the kernels take (:func:`supports`) and the kernels built (:func:`available`, which builds them on the first
    call; if that fails, its warning names the reason once and PyTorch ops run)."""
    return executor == "native" and supports(*tensors) and available()


class ReplacedAttribute:
    """A removed attribute of a layer: setting it raises AttributeError saying what replaced it (reading it
    raises AttributeError too), so an old ``layer.native = False`` is an error, not an ignored assignment."""

    def __init__(self, replacement: str) -> None:
        self.replacement = replacement
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = f"{owner.__name__}.{name}"

    def __get__(self, obj: object, owner: type | None = None) -> "ReplacedAttribute":
        if obj is None:
            return self
        raise AttributeError(f"{self.name} was removed; {self.replacement}")

    def __set__(self, obj: object, value: object) -> None:
        raise AttributeError(f"{self.name} was removed; {self.replacement}")


def available() -> bool:
    """True when the compiled kernels can be used (built, or buildable with the C compiler). Builds them on the
    first call. Under ``torch.compile`` it is evaluated once while tracing and its result is a constant of the
    graph (the library's lock is not traced)."""
    return build.load() is not None


# What torch.compiler.assume_constant_result does, set directly: that function imports torch._dynamo, which
# would add seconds to importing escn.
available._dynamo_marked_constant = True  # type: ignore[attr-defined]


def supports(*tensors: Tensor) -> bool:
    """True when the kernels apply to these tensors: on the CPU, float32 or float64, one dtype."""
    dt = tensors[0].dtype
    return dt in (torch.float32, torch.float64) and all(t.device.type == "cpu" and t.dtype == dt for t in tensors)


# ------------------------------------------------------------------ threads
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _workers() -> int:
    return max(1, torch.get_num_threads())


def parallel(fn, n: int, grain: int = 64) -> None:
    """Run ``fn(e0, e1)`` over [0, n) split into one chunk per torch thread (at most one per ``grain`` items).
    The kernels release the GIL (ctypes foreign calls do), so chunks run in parallel; the calling thread takes
    the first chunk."""
    global _pool, _pool_size
    k = min(_workers(), max(1, n // grain))
    bounds = [n * i // k for i in range(k + 1)]
    if k == 1:
        _check(fn(0, n))
        return
    if _pool is None or _pool_size < k - 1:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool, _pool_size = ThreadPoolExecutor(max_workers=k - 1, thread_name_prefix="escn-native"), k - 1
    futures = [_pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, k)]
    results = [fn(bounds[0], bounds[1])] + [f.result() for f in futures]
    for r in results:
        _check(r)


def uses_openmp() -> bool:
    """True when the kernels were built with OpenMP and split their edge ranges themselves."""
    lib = build.load()
    if lib is None:
        return False
    if not hasattr(lib, "_escn_openmp"):
        fn = lib.escn_openmp
        fn.argtypes, fn.restype = [], ctypes.c_int
        lib._escn_openmp = bool(fn())
    return lib._escn_openmp


def run_over_edges(fn, n: int, *args, grain: int = 64) -> None:
    """Call the kernel ``fn(e0, e1, *args, nthreads)`` over the edges [0, n) with one thread per torch thread
    (at most one per ``grain`` edges). Built with OpenMP, the kernel splits the range on PyTorch's own OpenMP
    threads; otherwise :func:`parallel` splits it over Python threads, one kernel call each. Measured (L = 6,
    C = 16, 3,740 edges): a 1.5 ms rotation took 2.8 ms on Python threads right after a PyTorch op, whose
    OpenMP threads were still spinning on the same cores; on the shared threads it takes 1.5 ms either way."""
    k = min(_workers(), max(1, n // grain))
    if k == 1 or uses_openmp():
        _check(fn(0, n, *args, k))
    else:
        parallel(lambda e0, e1: fn(e0, e1, *args, 1), n, grain)


def _check(rc: int | None) -> None:
    if rc is not None and rc != 0:
        raise MemoryError("escn native kernel: could not allocate its per-thread buffer")


def _after_fork() -> None:
    global _pool, _pool_size
    _pool, _pool_size = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


# ------------------------------------------------------------------ operator helpers
OPS_NAMESPACE = "escn"
FLOAT_DTYPES = (torch.float32, torch.float64)


def check_float_operands(op: str, **tensors: Tensor) -> torch.dtype:
    """The common dtype of ``tensors`` (float32 or float64); TypeError naming the operand otherwise. Metadata
    only, so it runs on FakeTensors and meta tensors too."""
    dtype = None
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a tensor, got {type(t).__name__}")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: {name} must be float32 or float64, got {t.dtype}")
        if dtype is None:
            dtype = t.dtype
        elif t.dtype != dtype:
            first = next(iter(tensors))
            raise TypeError(f"{op}: {name} must have the dtype of {first} ({dtype}), got {t.dtype}")
    assert dtype is not None
    return dtype


def check_table(op: str, name: str, t: Tensor, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    """A plan table: ``dtype`` and ``shape`` (-1: any size), else TypeError / ValueError naming it."""
    if t.dtype != dtype:
        raise TypeError(f"{op}: {name} must be {dtype}, got {t.dtype}")
    if t.dim() != len(shape) or any(s != -1 and n != s for n, s in zip(t.shape, shape)):
        want = ", ".join("n" if s == -1 else str(s) for s in shape)
        raise ValueError(f"{op}: {name} must have shape ({want}{',' if len(shape) == 1 else ''}), got {tuple(t.shape)}")


def check_rows(name: str, t: Tensor, width: int, num_rows: int | None = None) -> None:
    """ValueError unless ``t`` is 2-D with ``width`` columns (and ``num_rows`` rows if given)."""
    if t.dim() != 2 or t.shape[1] != width or (num_rows is not None and t.shape[0] != num_rows):
        rows_text = "E" if num_rows is None else str(num_rows)
        raise ValueError(f"{name} must have shape ({rows_text}, {width}), got {tuple(t.shape)}")


def saved_args(ctx, args: tuple) -> None:
    """Keep an operator's arguments for its backward: tensors by ``ctx.save_for_backward``, the rest as is."""
    ctx.save_for_backward(*(a for a in args if isinstance(a, torch.Tensor)))
    ctx.arg_kinds = tuple(None if isinstance(a, torch.Tensor) else a for a in args)


def restored_args(ctx) -> tuple:
    """The arguments kept by :func:`saved_args`."""
    it = iter(ctx.saved_tensors)
    return tuple(next(it) if kind is None else kind for kind in ctx.arg_kinds)


def add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """``a + b`` where None stands for zero."""
    return b if a is None else a if b is None else a + b


def suffix(dtype: torch.dtype) -> str:
    return "_f32" if dtype == torch.float32 else "_f64"


def ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def rows(t: Tensor, name: str, width: int, num_rows: int | None = None) -> Tensor:
    """``t`` as a 2-D CPU tensor with unit column stride and ``width`` columns (and ``num_rows`` rows if given:
    the kernels index every operand by the same edge range)."""
    check_rows(name, t, width, num_rows)
    return t if t.stride(1) == 1 and t.stride(0) >= width else t.contiguous()


def function(name: str, argtypes: list, restype=ctypes.c_int):
    lib = build.load()
    if lib is None:
        raise RuntimeError(f"escn native kernels unavailable: {build.error()}")
    fn = getattr(lib, name)
    if fn.argtypes is None:
        fn.argtypes, fn.restype = argtypes, restype
    return fn
