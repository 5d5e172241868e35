"""Pure math on tensors in e3nn's conventions: irreps, spherical harmonics, rotations,
Wigner-D matrices, Wigner 3j symbols and edge frames. No ``nn.Module`` lives here."""

from escn.o3.irreps import Irrep, Irreps
from escn.o3.rotation import (
    angles_to_matrix,
    angles_to_xyz,
    check_rotation,
    matrix_to_angles,
    matrix_x,
    matrix_y,
    matrix_z,
    quaternion_to_matrix,
    rand_angles,
    rand_matrix,
    xyz_to_angles,
)
from escn.o3.spherical_harmonics import spherical_harmonics, spherical_harmonics_blocks
from escn.o3.wigner import J_matrix, wigner_3j, wigner_D, wigner_D_from_matrix, wigner_D_y

__all__ = [
    "Irrep",
    "Irreps",
    "J_matrix",
    "angles_to_matrix",
    "angles_to_xyz",
    "check_rotation",
    "matrix_to_angles",
    "matrix_x",
    "matrix_y",
    "matrix_z",
    "quaternion_to_matrix",
    "rand_angles",
    "rand_matrix",
    "spherical_harmonics",
    "spherical_harmonics_blocks",
    "wigner_3j",
    "wigner_D",
    "wigner_D_from_matrix",
    "wigner_D_y",
    "xyz_to_angles",
]
