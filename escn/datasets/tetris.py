"""The 3D tetris toy problem of Tensor Field Networks (Thomas et al. 2018), as in e3nn's example.

Eight shapes of four points on the unit grid, one class each.  Two of them (``chiral_a``,
``chiral_b``) are mirror images of each other and cannot be superposed by a rotation: they have
the same pairwise distances, so only a network that sees parity (e.g. l = 1 features combined
into a pseudo-scalar) can tell them apart.  The training set is the 8 shapes in their canonical
orientation; the test set is randomly rotated copies (:func:`random_rotation_test_set`).

Nothing here is random except the test-set rotations, drawn with ``escn.o3.rand_matrix`` from a
seeded ``torch.Generator`` in float64, so no disk cache is needed.
"""

from __future__ import annotations

import itertools
from numbers import Integral
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..data.batch import AtomsGraph
from ..o3 import rand_matrix

__all__ = [
    "TETRIS_NAMES",
    "tetris_shapes",
    "tetris_graphs",
    "random_rotation_test_set",
    "rigid_rmsd",
    "mirror_partners",
    "distance_signature",
]

TETRIS_NAMES: Tuple[str, ...] = ("chiral_a", "chiral_b", "square", "line", "corner", "L", "T", "zigzag")

_SHAPES = (
    ((0, 0, 0), (0, 0, 1), (1, 0, 0), (1, 1, 0)),  # chiral_a
    ((0, 0, 0), (0, 0, 1), (1, 0, 0), (1, -1, 0)),  # chiral_b: chiral_a with y -> -y
    ((0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)),  # square
    ((0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 3)),  # line
    ((0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0)),  # corner (three orthogonal arms)
    ((0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0)),  # L
    ((0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 1)),  # T
    ((0, 0, 0), (1, 0, 0), (1, 1, 0), (2, 1, 0)),  # zigzag
)


def _check_dtype(dtype: Optional[torch.dtype]) -> torch.dtype:
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return dtype


def tetris_shapes(dtype: Optional[torch.dtype] = None) -> Tuple[Tensor, Tensor]:
    """The 8 shapes on the unit grid and their labels.

    Args:
        dtype: floating dtype of the positions (default ``torch.get_default_dtype()``).

    Returns:
        ``pos`` (8, 4, 3) and ``labels`` (8,) long (= ``arange(8)``; names in :data:`TETRIS_NAMES`).
    """
    return torch.tensor(_SHAPES, dtype=_check_dtype(dtype)), torch.arange(len(_SHAPES))


def _full_graph(n: int) -> Tuple[Tensor, Tensor]:
    """All directed pairs ``i -> j`` with ``i != j`` (self-edges excluded by index)."""
    src, dst = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = src != dst
    return src[keep], dst[keep]


def tetris_graphs(
    rotations: Optional[Tensor] = None, labels: Optional[Tensor] = None, dtype: Optional[torch.dtype] = None
) -> List[AtomsGraph]:
    """Tetris shapes as fully connected graphs, optionally rotated.

    Args:
        rotations: (M, 3, 3) rotation matrices; graph ``m`` has positions ``shape @ rotations[m].T``
            (rotation about the origin, a grid point of every shape).  ``None``: the 8 shapes unrotated.
        labels: (M,) long shape index of each graph (default ``arange(M) % 8``).
        dtype: floating dtype (default ``torch.get_default_dtype()``).

    Returns:
        M graphs with ``pos`` (4, 3), ``atom_types`` zeros (4,), the 12 edges ``i -> j``, ``i != j``
        (chosen by index, not distance), ``graph_attrs["label"]`` () long and
        ``graph_attrs["rotation"]`` (3, 3).
    """
    dtype = _check_dtype(dtype)
    shapes, _ = tetris_shapes(dtype)
    if rotations is None:
        num = len(_SHAPES) if labels is None else None
        rot = None
    else:
        if not isinstance(rotations, Tensor):
            raise TypeError(f"rotations must be a torch.Tensor of shape (M, 3, 3), got {type(rotations).__name__}")
        if rotations.dim() != 3 or rotations.shape[1:] != (3, 3):
            raise ValueError(f"rotations must have shape (M, 3, 3), got {tuple(rotations.shape)}")
        rot = rotations.to(dtype)
        num = rot.shape[0]
    if labels is None:
        labels = torch.arange(num) % len(_SHAPES)
    else:
        if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError("labels must be an integer torch.Tensor of shape (M,)")
        if labels.dim() != 1 or (num is not None and labels.shape[0] != num):
            raise ValueError(f"labels must have shape (M,) with M = {num}, got {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(_SHAPES)):
            raise ValueError(f"labels must lie in [0, {len(_SHAPES) - 1}]")
        labels = labels.long()
    if rot is None:
        rot = torch.eye(3, dtype=dtype).expand(labels.shape[0], 3, 3)
    pos = torch.einsum("mpj,mij->mpi", shapes[labels], rot)
    src, dst = _full_graph(4)
    types = torch.zeros(4, dtype=torch.long)
    return [
        AtomsGraph(
            pos=pos[m],
            atom_types=types,
            edge_src=src,
            edge_dst=dst,
            graph_attrs={"label": labels[m], "rotation": rot[m].clone()},
        )
        for m in range(labels.shape[0])
    ]


def random_rotation_test_set(n: int = 1000, seed: int = 0, dtype: Optional[torch.dtype] = None) -> List[AtomsGraph]:
    """``n`` Haar-randomly rotated shapes, labels ``arange(n) % 8`` (balanced classes).

    The rotations come from ``escn.o3.rand_matrix`` in float64 with
    ``torch.Generator().manual_seed(seed)``, so the set depends only on ``n`` and ``seed``
    (the first rotations do not depend on ``n``).
    """
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    generator = torch.Generator().manual_seed(int(seed))
    rotations = rand_matrix(int(n), dtype=torch.float64, generator=generator)
    return tetris_graphs(rotations, dtype=dtype)


def distance_signature(pos: Tensor, decimals: int = 6) -> Tuple[float, ...]:
    """Sorted pairwise distances of a (P, 3) point set, rounded: invariant under E(3) and relabelling."""
    if not isinstance(pos, Tensor) or pos.dim() != 2 or pos.shape[-1] != 3:
        raise ValueError("pos must be a torch.Tensor of shape (P, 3)")
    i, j = torch.triu_indices(pos.shape[0], pos.shape[0], 1)
    d = (pos[i] - pos[j]).double().norm(dim=-1).sort().values
    return tuple(round(float(x), decimals) for x in d)


def _kabsch_rmsd(a: Tensor, b: Tensor, allow_reflection: bool) -> float:
    """RMSD after the best rotation (orthogonal map if ``allow_reflection``) of centred ``a`` onto centred ``b``."""
    h = a.T @ b  # (3, 3) cross-covariance
    u, _, vt = torch.linalg.svd(h)
    d = torch.ones(3, dtype=a.dtype)
    if not allow_reflection and float(torch.det(u @ vt)) < 0:
        d[-1] = -1.0
    r = u @ torch.diag(d) @ vt  # a @ r ~ b
    return float(((a @ r - b) ** 2).sum(-1).mean().sqrt())


def rigid_rmsd(a: Tensor, b: Tensor, allow_reflection: bool = False) -> float:
    """Smallest RMSD between point sets ``a`` and ``b`` (P, 3) over translations, rotations and
    point orderings (and reflections if ``allow_reflection``).

    Brute force over the ``P!`` orderings, fine for P = 4; each ordering is aligned optimally
    with the Kabsch SVD (constrained to det = +1 unless reflections are allowed).
    """
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, Tensor) or t.dim() != 2 or t.shape[-1] != 3:
            raise ValueError(f"{name} must be a torch.Tensor of shape (P, 3)")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] > 8:
        raise ValueError(f"rigid_rmsd enumerates all orderings; P = {a.shape[0]} > 8 is too many")
    a = a.double() - a.double().mean(0)
    b = b.double() - b.double().mean(0)
    return min(_kabsch_rmsd(a[list(p)], b, allow_reflection) for p in itertools.permutations(range(a.shape[0])))


def mirror_partners(tol: float = 1e-6) -> Tensor:
    """For each shape, the index of the shape its mirror image equals up to rotation + translation.

    The mirror image is ``x -> -x`` (any reflection gives the same answer up to a rotation).
    Expected: ``[1, 0, 2, 3, 4, 5, 6, 7]`` -- the chiral pair swap, every other shape is achiral.

    Returns:
        (8,) long.  ValueError if a mirror image matches no shape or several.
    """
    shapes, _ = tetris_shapes(torch.float64)
    mirror = shapes * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    out = []
    for s in range(len(_SHAPES)):
        hits = [t for t in range(len(_SHAPES)) if rigid_rmsd(mirror[s], shapes[t]) < tol]
        if len(hits) != 1:
            raise ValueError(
                f"mirror image of shape {s} ({TETRIS_NAMES[s]}) matches shapes {hits}, expected exactly one"
            )
        out.append(hits[0])
    return torch.tensor(out, dtype=torch.long)
