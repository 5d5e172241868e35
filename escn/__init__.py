"""escn: E(3)-equivariant graph networks with eSCN (SO(2)) convolutions.

Subpackages: :mod:`escn.o3` (math on tensors), :mod:`escn.nn` (layers), :mod:`escn.data` (graphs).
"""

import os as _os
import sys as _sys

if "torch" not in _sys.modules and _sys.platform.startswith("linux"):
    # Back large CPU tensors with transparent huge pages (PyTorch's THP_MEM_ALLOC_ENABLE, read once at the
    # first allocation). Per-edge tensors of hundreds of MB are allocated afresh in every forward and
    # backward; with 4 KiB pages the kernel's page faults cost 3-4x the copy itself (measured: 210 MB
    # allocated and filled in 98 ms without, 18 ms with). Set THP_MEM_ALLOC_ENABLE=0 to opt out; importing
    # torch before escn leaves the setting to the caller.
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from escn import o3  # noqa: E402

__version__ = "0.1.0"
__all__ = ["o3", "__version__"]
