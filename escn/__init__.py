"""escn: E(3)-equivariant graph networks with eSCN (SO(2)) convolutions.

Subpackages: :mod:`escn.o3` (math on tensors), :mod:`escn.nn` (layers), :mod:`escn.data` (graphs).

Importing escn (or any of its modules) changes no process state: no environment variable, no torch setting
(threads, default dtype, flags), no allocator setting, and nothing is compiled. Process-wide choices are
explicit calls, e.g. :func:`escn.bench.allocator.enable_transparent_huge_pages`.
"""

from escn import o3

__version__ = "0.1.0"
__all__ = ["o3", "__version__"]
