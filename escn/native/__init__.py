"""Optional compiled kernels, built with the system C compiler on first use (PyTorch-op fallbacks exist).

- :mod:`escn.native.tfn_kernel`: the edge-frame map of TFN-layout per-edge weights (``SO2Conv.from_tfn``).
- :mod:`escn.native.rotation_kernel`: the rotation into and out of the edge frame (every ``SO2Conv``).
- :mod:`escn.native.silu_kernel`: SiLU and its first and second derivatives, elementwise
  (``escn.nn.functional.silu``).
- :mod:`escn.native.bilinear`: backward formulas of every order for a bilinear map's operators.

The kernels are PyTorch custom operators (``torch.ops.escn.*``, registered on import, the C library built at the
first call), so ``torch.compile``, ``torch.export`` and FakeTensor tracing see each as one op; see
``docs/native_ops.md``. Set ``ESCN_NATIVE=0`` to disable them; :func:`available` says whether they are in use and
:func:`unavailable_reason` why not. Layers use them only on the CPU, in float32 or float64.
"""

from escn.native.build import enabled
from escn.native.build import error as unavailable_reason
from escn.native._runtime import available, supports
from escn.native.tfn_kernel import TFNFramePlan, make_plan, tfn_frame_map

__all__ = ["TFNFramePlan", "available", "enabled", "make_plan", "supports", "tfn_frame_map", "unavailable_reason"]
