"""Optional compiled kernels, built with the system C compiler on first use (PyTorch-op fallbacks exist).

- :mod:`escn.native.tfn_kernel`: the edge-frame map of TFN-layout per-edge weights (``SO2Conv.from_tfn``).
- :mod:`escn.native.rotation_kernel`: the rotation into and out of the edge frame (every ``SO2Conv``).
- :mod:`escn.native.silu_kernel`: SiLU and its first and second derivatives, elementwise
  (``escn.nn.functional.silu``).
- :mod:`escn.native.s2_grid_kernel`: the S2 activation's grid pass (to the grid, SiLU or a derivative, back),
  fused per edge (``escn.nn.S2Grid.silu_stages``).
- :mod:`escn.native.bilinear`: backward formulas of every order for a bilinear map's operators.
- :mod:`escn.native.transforms`: ``torch.func`` transforms over the operators (:class:`TransformableOp`,
  :func:`register_rowwise_vmap`).

The kernels are PyTorch custom operators (``torch.ops.escn.*``, registered on import, the C library built at the
first call), so ``torch.compile``, ``torch.export`` and FakeTensor tracing see each as one op; see
``docs/native_ops.md``. Which layers use them is each layer's ``executor`` argument (:data:`EXECUTORS`:
``"native"``, the default, uses them on the CPU in float32 or float64; ``"torch"`` never); no environment variable
changes it. :func:`available` says whether they can be built, :func:`unavailable_reason` why not.
"""

from escn.native._runtime import EXECUTORS, available, check_executor, supports, use_kernels
from escn.native.build import error as unavailable_reason
from escn.native.tfn_kernel import TFNFramePlan, make_plan, tfn_frame_map
from escn.native.transforms import TransformableOp, register_rowwise_vmap, transformable

__all__ = [
    "EXECUTORS",
    "TFNFramePlan",
    "TransformableOp",
    "available",
    "check_executor",
    "make_plan",
    "register_rowwise_vmap",
    "supports",
    "tfn_frame_map",
    "transformable",
    "unavailable_reason",
    "use_kernels",
]
