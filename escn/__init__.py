"""escn: E(3)-equivariant graph networks with eSCN (SO(2)) convolutions.

Subpackages: :mod:`escn.o3` (math on tensors), :mod:`escn.nn` (layers), :mod:`escn.data` (graphs).
"""

from escn import o3

__version__ = "0.1.0"
__all__ = ["o3", "__version__"]
