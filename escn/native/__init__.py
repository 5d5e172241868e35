"""Optional compiled kernels, built with the system C compiler on first use (pure-PyTorch fallbacks exist).

Set ``ESCN_NATIVE=0`` to disable them; :func:`available` says whether they are in use and
:func:`unavailable_reason` why not.
"""

from escn.native.build import enabled
from escn.native.build import error as unavailable_reason
from escn.native._runtime import available, supports
from escn.native.tfn_kernel import TFNFramePlan, make_plan, tfn_frame_map

__all__ = ["TFNFramePlan", "available", "enabled", "make_plan", "supports", "tfn_frame_map", "unavailable_reason"]
