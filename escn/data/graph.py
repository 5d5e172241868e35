"""Radius graphs (neighbour lists) for open and periodic point clouds.

Conventions
-----------
* A graph is a list of directed edges ``src -> dst``: messages flow from ``edge_src``
  to ``edge_dst`` (aggregate with ``index_add_(0, edge_dst, msg)``).
* ``edge_vec = pos[dst] - pos[src] + shift @ cell`` points from (the image of) the
  source atom to the destination atom.  ``shift`` holds integer counts of lattice
  vectors (rows of ``cell``); it is zero for open boundaries and along non-periodic axes.
  Equivalently, the source atom is taken at ``pos[src] - shift @ cell``.
* Within the cutoff both directions are present: if ``(src=i, dst=j, shift=S)`` is an
  edge, so is ``(src=j, dst=i, shift=-S)`` with the opposite vector (unless
  ``max_num_neighbors`` truncates the list of some destination).
* An edge is kept when ``|edge_vec|^2 < cutoff^2`` (strict), computed in the dtype of
  ``pos`` with the formula above.  The pair ``i -> i`` with zero shift is dropped unless
  ``self_interaction=True``; an atom's *other* periodic images are ordinary neighbours.
* Edges are sorted by ``dst``, then ``src``, then ``shift`` (lexicographic in x, y, z).
* The relation to ASE: ``ase.neighborlist.neighbor_list("ijDS", atoms, cutoff)`` returns
  the same set with ``i = src``, ``j = dst``, ``S = shift`` and ``D = edge_vec``.

Algorithm
---------
The search runs without autograd on a cell list (geometry and bins in float64):

1. For periodic graphs the atoms are wrapped into the home cell along periodic axes and
   "ghost" images are generated only where they can lie within the cutoff of the home
   cell.  The number of images per axis is ``ceil(cutoff / h_k)`` where ``h_k`` is the
   perpendicular height of the cell (``1 / |column k of cell^-1|``), so skewed cells and
   cutoffs larger than the cell are handled.
2. Points are binned in the cell's fractional frame (Cartesian frame for open graphs)
   with bins at least ``cutoff`` thick measured perpendicular to the bin faces, so every
   neighbour lies in one of the 27 surrounding bins.
3. Bin keys are sorted once; each atom looks up its 27 bins with ``searchsorted`` and the
   candidate pairs are expanded with ``repeat_interleave`` -- no Python loop over atoms
   and no ``N x N`` matrix.  Candidates are pre-filtered in float32 with a margin that
   makes the result a superset; the exact ``< cutoff`` test is then done in the dtype of
   ``pos`` with the same formula as ``edge_vec``.

With ``backend="vesin"`` (the default when the optional ``vesin`` package is installed and ``pos`` is on the
CPU) steps 1-3 are replaced by vesin's ``NeighborList`` (a compiled cell list), called once per graph on the
float64 positions with the same slightly enlarged search radius.  Either way the candidates then pass the
same exact test in the dtype of ``pos`` and the same sort, so both backends return the same edges
(``tests/test_graph.py`` checks it on open, periodic, mixed and small cells).

Finally ``edge_vec`` is recomputed from the original ``pos`` and ``cell`` with the edge
indices and shifts, so it carries gradients w.r.t. both (forces and stress).
"""

from __future__ import annotations

import importlib
import math
from numbers import Real
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["Graph", "radius_graph", "edge_vectors", "BACKENDS", "vesin_available"]

#: neighbour-search backends of :func:`radius_graph`
BACKENDS = ("auto", "torch", "vesin")

# Bins are never stored densely (only the keys of occupied bins are sorted), so the
# number of bins per axis only has to keep the int64 key (graph, x, y, z) from
# overflowing: B * (bins + 2)^3 < 2^62.  A coarser bin (wider than the cutoff) never
# loses neighbours, it only costs more candidate pairs.
_MAX_BINS_PER_AXIS = 2**20
# Relative volume below which a cell is rejected as degenerate: |det| / prod |a_i|.
_MIN_RELATIVE_VOLUME = 1e-8
# Upper bound on the number of periodic images of the home cell searched (cutoff / height).
_MAX_IMAGES = 10**6

PbcLike = Union[Tensor, Sequence[bool], bool]


class Graph(NamedTuple):
    """Edges of a radius graph.

    Attributes:
        edge_src: (E,) long, index of the source atom (message sender).
        edge_dst: (E,) long, index of the destination atom (message receiver).
        edge_vec: (E, 3) ``pos[dst] - pos[src] + shift @ cell``, differentiable w.r.t.
            ``pos`` and ``cell``; same dtype as ``pos``.
        shift: (E, 3) long, integer lattice-vector counts (zero without a cell).
    """

    edge_src: Tensor
    edge_dst: Tensor
    edge_vec: Tensor
    shift: Tensor


# --------------------------------------------------------------------------- checks


def _check_pos(pos: Tensor) -> Tensor:
    """Validate positions: a finite floating tensor of shape (N, 3)."""
    if not isinstance(pos, Tensor):
        raise TypeError(f"pos must be a torch.Tensor of shape (N, 3), got {type(pos).__name__}")
    if not pos.is_floating_point():
        raise TypeError(f"pos must be a floating-point tensor, got dtype {pos.dtype}")
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos must have shape (N, 3), got {tuple(pos.shape)}")
    if not bool(torch.isfinite(pos).all()):
        raise ValueError("pos contains NaN or infinite values")
    return pos


def _check_cutoff(cutoff: Union[float, Tensor]) -> float:
    """Validate the cutoff and return it as a python float (> 0, finite)."""
    if isinstance(cutoff, Tensor):
        if cutoff.numel() != 1:
            raise ValueError(f"cutoff must be a scalar, got a tensor of shape {tuple(cutoff.shape)}")
        cutoff = cutoff.item()
    if isinstance(cutoff, bool) or not isinstance(cutoff, Real):
        raise TypeError(f"cutoff must be a real number, got {type(cutoff).__name__}")
    cutoff = float(cutoff)
    if not math.isfinite(cutoff) or cutoff <= 0.0:
        raise ValueError(f"cutoff must be a finite number > 0, got {cutoff}")
    return cutoff


def _check_batch(batch: Optional[Tensor], num_atoms: int, device: torch.device) -> Tuple[Tensor, int]:
    """Validate the graph-membership vector; returns (batch (N,) long, number of graphs)."""
    if batch is None:
        return torch.zeros(num_atoms, dtype=torch.long, device=device), 1
    if not isinstance(batch, Tensor):
        raise TypeError(f"batch must be a torch.Tensor of shape (N,), got {type(batch).__name__}")
    if batch.dtype.is_floating_point or batch.dtype.is_complex or batch.dtype == torch.bool:
        raise TypeError(f"batch must be an integer tensor, got dtype {batch.dtype}")
    if batch.shape != (num_atoms,):
        raise ValueError(f"batch must have shape (N,) = ({num_atoms},), got {tuple(batch.shape)}")
    batch = batch.to(device=device, dtype=torch.long)
    if num_atoms == 0:
        return batch, 1
    if int(batch.min()) < 0:
        raise ValueError("batch must contain non-negative graph indices")
    return batch, int(batch.max()) + 1


def _check_cell(cell: Tensor, num_graphs: int, pos: Tensor) -> Tensor:
    """Validate cell (3, 3) or (B, 3, 3); returns it broadcast to (B, 3, 3)."""
    if not isinstance(cell, Tensor):
        raise TypeError(f"cell must be a torch.Tensor of shape (3, 3) or (B, 3, 3), got {type(cell).__name__}")
    if not cell.is_floating_point():
        raise TypeError(f"cell must be a floating-point tensor, got dtype {cell.dtype}")
    if cell.dim() == 2 and cell.shape == (3, 3):
        cell = cell.unsqueeze(0).expand(num_graphs, 3, 3)
    elif cell.dim() == 3 and cell.shape[1:] == (3, 3):
        if cell.shape[0] < num_graphs:
            raise ValueError(
                f"cell has shape {tuple(cell.shape)} but batch refers to {num_graphs} graphs; "
                f"expected ({num_graphs}, 3, 3)"
            )
    else:
        raise ValueError(f"cell must have shape (3, 3) or (B, 3, 3) (rows = lattice vectors), got {tuple(cell.shape)}")
    if cell.dtype != pos.dtype or cell.device != pos.device:
        raise TypeError(
            f"cell must have the dtype and device of pos ({pos.dtype}, {pos.device}), got ({cell.dtype}, {cell.device})"
        )
    c = cell.detach().double()
    if not bool(torch.isfinite(c).all()):
        raise ValueError("cell contains NaN or infinite values")
    volume = torch.linalg.det(c).abs()
    scale = c.norm(dim=-1).prod(dim=-1)
    bad = (scale == 0) | (volume <= _MIN_RELATIVE_VOLUME * scale)
    if bool(bad.any()):
        idx = int(bad.nonzero()[0])
        raise ValueError(
            f"cell {idx} has zero or near-zero volume ({float(volume[idx]):.3e}); "
            "the three lattice vectors must be linearly independent"
        )
    return cell


def _check_pbc(pbc: Optional[PbcLike], has_cell: bool, num_graphs: int, device: torch.device) -> Tensor:
    """Validate periodic flags (3,) or (B, 3); returns a (B, 3) bool tensor.

    ``None`` means periodic along all axes when a cell is given, open otherwise.
    """
    if pbc is None:
        return torch.full((num_graphs, 3), has_cell, dtype=torch.bool, device=device)
    if isinstance(pbc, bool):
        flags = torch.full((3,), pbc, dtype=torch.bool, device=device)
    else:
        flags = torch.as_tensor(pbc, device=device)
        if flags.dtype.is_floating_point or flags.dtype.is_complex:
            raise TypeError(f"pbc must hold booleans, got dtype {flags.dtype}")
        flags = flags.to(torch.bool)
    if flags.dim() == 1 and flags.shape[0] == 3:
        flags = flags.unsqueeze(0).expand(num_graphs, 3)
    elif not (flags.dim() == 2 and flags.shape[1] == 3 and flags.shape[0] >= num_graphs):
        raise ValueError(
            f"pbc must have length 3 (or shape (B, 3) = ({num_graphs}, 3)), got shape {tuple(flags.shape)}"
        )
    flags = flags[:num_graphs]
    if bool(flags.any()) and not has_cell:
        raise ValueError("pbc has a periodic axis but no cell was given")
    return flags


# --------------------------------------------------------------------------- geometry


def edge_vectors(
    pos: Tensor,
    edge_src: Tensor,
    edge_dst: Tensor,
    shift: Optional[Tensor] = None,
    cell: Optional[Tensor] = None,
    batch: Optional[Tensor] = None,
) -> Tensor:
    """Differentiable edge vectors ``pos[dst] - pos[src] + shift @ cell``.

    Args:
        pos: (N, 3) positions.
        edge_src, edge_dst: (E,) long edge indices.
        shift: (E, 3) integer lattice shifts, or None for open boundaries.
        cell: (3, 3) or (B, 3, 3) lattice vectors as rows; with (B, 3, 3) the cell of
            each edge is ``cell[batch[edge_src]]``.
        batch: (N,) graph index of each atom (needed only for a (B, 3, 3) cell with B > 1).

    Returns:
        (E, 3) edge vectors, with gradients w.r.t. ``pos`` and ``cell``.
    """
    vec = pos.index_select(0, edge_dst) - pos.index_select(0, edge_src)
    if shift is None or cell is None:
        return vec
    shift_f = shift.to(pos.dtype)
    if cell.dim() == 2:
        return vec + shift_f @ cell
    if cell.shape[0] == 1:
        return vec + shift_f @ cell[0]
    if batch is None:
        raise ValueError(f"a batched cell of shape {tuple(cell.shape)} needs the batch vector")
    edge_cell = cell.index_select(0, batch.index_select(0, edge_src))  # (E, 3, 3)
    return vec + torch.einsum("ei,eij->ej", shift_f, edge_cell)


def _wrap_into_cell(
    pos: Tensor, cells: Optional[Tensor], pbc: Tensor, batch: Tensor
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fractional coordinates and wrapping of atoms into the home cell.

    Args:
        pos: (N, 3) float64 positions; cells: (B, 3, 3) float64 or None; pbc: (B, 3);
        batch: (N,).

    Returns:
        frac: (N, 3) frame coordinates (fractional for cells, Cartesian without) after
            wrapping into [0, 1) along periodic axes.
        pos_wrapped: (N, 3) Cartesian positions of the wrapped atoms.
        wrap: (N, 3) long, lattice vectors subtracted (``pos_wrapped = pos - wrap @ cell``).
        dual_norm: (B, 3) norms of the dual vectors = 1 / perpendicular cell heights
            (ones for open graphs).
    """
    num_graphs = pbc.shape[0]
    if cells is None:
        ones = torch.ones(num_graphs, 3, dtype=pos.dtype, device=pos.device)
        return pos, pos, torch.zeros_like(pos, dtype=torch.long), ones
    inv = torch.linalg.inv(cells)  # (B, 3, 3); frac = pos @ inv
    atom_cell = cells.index_select(0, batch)
    frac = torch.einsum("ni,nij->nj", pos, inv.index_select(0, batch))
    wrap_f = torch.where(pbc.index_select(0, batch), torch.floor(frac), torch.zeros_like(frac))
    frac = frac - wrap_f
    pos_wrapped = pos - torch.einsum("ni,nij->nj", wrap_f, atom_cell)
    dual_norm = inv.norm(dim=1)  # column k of inv is the k-th dual vector
    return frac, pos_wrapped, wrap_f.long(), dual_norm


def _image_counts(pbc: Tensor, reach: Tensor) -> Tensor:
    """(3,) long: periodic images searched on each side of the home cell per axis (``reach``: (B, 3) search radius
    in fractional units); ValueError when the search would visit more than ``_MAX_IMAGES`` copies of the cell."""
    n_img_f = torch.where(pbc, torch.ceil(reach), torch.zeros_like(reach)).amax(dim=0)  # (3,)
    if float((2 * n_img_f + 1).prod()) > _MAX_IMAGES:
        raise ValueError(
            f"cell has near-zero volume relative to the cutoff: the search would need "
            f"{(2 * n_img_f + 1).long().tolist()} periodic images per axis"
        )
    return n_img_f.long()


def _ghost_images(
    frac: Tensor, pos_wrapped: Tensor, cells: Optional[Tensor], pbc: Tensor, batch: Tensor, reach: Tensor
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Periodic images that can lie within the search radius of the home cell.

    Args:
        frac: (N, 3) wrapped frame coordinates; pos_wrapped: (N, 3); cells: (B, 3, 3) or None;
        pbc: (B, 3) bool; batch: (N,); reach: (B, 3) search radius in frame units per axis.

    Returns:
        atom: (G,) atom index of each image; image_shift: (G, 3) long lattice shift of the
        image; image_frac: (G, 3) frame coordinates; image_pos: (G, 3) Cartesian positions.
        Every atom appears with a zero shift.
    """
    num_atoms = frac.shape[0]
    device = frac.device
    if cells is None or not bool(pbc.any()):
        atom = torch.arange(num_atoms, device=device)
        return atom, torch.zeros(num_atoms, 3, dtype=torch.long, device=device), frac, pos_wrapped
    # images needed per axis: the fractional reach rounded up (0 along open axes)
    n_img = _image_counts(pbc, reach)
    atom_reach = reach.index_select(0, batch)  # (N, 3)
    atom_pbc = pbc.index_select(0, batch)  # (N, 3)
    masks = []
    for k in range(3):  # loop over the three axes, vectorised over atoms and shifts
        s = torch.arange(-int(n_img[k]), int(n_img[k]) + 1, device=device, dtype=frac.dtype)
        moved = frac[:, k : k + 1] + s  # (N, S_k)
        r = atom_reach[:, k : k + 1]
        inside = (moved > -r) & (moved < 1.0 + r)
        masks.append(torch.where(atom_pbc[:, k : k + 1], inside, (s == 0).unsqueeze(0)))
    keep = masks[0][:, :, None, None] & masks[1][:, None, :, None] & masks[2][:, None, None, :]
    idx = keep.nonzero()  # (G, 4): atom, sx, sy, sz (offset by n_img)
    atom = idx[:, 0]
    image_shift = idx[:, 1:] - n_img
    shift_f = image_shift.to(frac.dtype)
    image_frac = frac.index_select(0, atom) + shift_f
    image_cell = cells.index_select(0, batch.index_select(0, atom))
    image_pos = pos_wrapped.index_select(0, atom) + torch.einsum("gi,gij->gj", shift_f, image_cell)
    return atom, image_shift, image_frac, image_pos


def _bin_keys(
    query_frac: Tensor, query_graph: Tensor, image_frac: Tensor, image_graph: Tensor, width_min: Tensor
) -> Tuple[Tensor, Tensor, Tensor]:
    """Integer bin keys for queries and images, and the key offsets of the 27 neighbour bins.

    Bins of graph ``g`` along axis ``k`` are ``>= width_min[g, k]`` wide in frame units.
    Keys encode (graph, bin x, bin y, bin z) with one empty bin of padding on every side,
    so neighbour offsets never alias into another graph.

    Returns: query_key (Q,), image_key (G,), neighbour offsets (27,).
    """
    num_graphs = width_min.shape[0]
    index = image_graph.unsqueeze(1).expand(-1, 3)
    inf = torch.full((num_graphs, 3), math.inf, dtype=image_frac.dtype, device=image_frac.device)
    lo = inf.scatter_reduce(0, index, image_frac, reduce="amin")
    hi = (-inf).scatter_reduce(0, index, image_frac, reduce="amax")
    lo = torch.where(torch.isfinite(lo), lo, torch.zeros_like(lo))  # graphs without atoms
    extent = torch.where(torch.isfinite(hi), hi - lo, torch.zeros_like(lo)).clamp_min(0.0)
    max_bins = min(_MAX_BINS_PER_AXIS, int((2.0**60 / num_graphs) ** (1.0 / 3.0)) - 2)
    width = torch.maximum(width_min, extent / max(max_bins, 1))
    num_bins = torch.floor(extent / width).long() + 1  # (B, 3)
    dims = (num_bins.amax(dim=0) + 2).tolist()  # padded key dimensions

    def key_of(frac: Tensor, graph: Tensor) -> Tensor:
        cell_idx = torch.floor((frac - lo.index_select(0, graph)) / width.index_select(0, graph)).long()
        cell_idx = torch.minimum(cell_idx.clamp_min(0), num_bins.index_select(0, graph) - 1) + 1
        return ((graph * dims[0] + cell_idx[:, 0]) * dims[1] + cell_idx[:, 1]) * dims[2] + cell_idx[:, 2]

    d = torch.tensor([-1, 0, 1], device=image_frac.device)
    offsets = ((d[:, None, None] * dims[1] + d[None, :, None]) * dims[2] + d[None, None, :]).reshape(-1)
    return key_of(query_frac, query_graph), key_of(image_frac, image_graph), offsets


def _candidate_pairs(
    pos: Tensor, radius: float, cells: Optional[Tensor], pbc: Tensor, batch: Tensor
) -> Tuple[Tensor, Tensor, Tensor]:
    """Cell-list search for all pairs closer than ``radius`` (no autograd).

    Args:
        pos: (N, 3) float64; radius: search radius; cells: (B, 3, 3) float64 or None;
        pbc: (B, 3) bool; batch: (N,) long.

    Returns:
        dst (C,), src (C,), shift (C, 3) long: a superset of the pairs with
        ``|pos[dst] - pos[src] + shift @ cell| < radius``, self pairs included, grouped by dst.
    """
    num_atoms = pos.shape[0]
    device = pos.device
    frac, pos_wrapped, wrap, dual_norm = _wrap_into_cell(pos, cells, pbc, batch)
    reach = radius * dual_norm  # (B, 3) search radius in frame units
    atom, image_shift, image_frac, image_pos = _ghost_images(frac, pos_wrapped, cells, pbc, batch, reach)
    image_graph = batch.index_select(0, atom)
    query_key, image_key, offsets = _bin_keys(frac, batch, image_frac, image_graph, reach)

    # The distance filter over all candidates is the hot loop: it runs in float32 on
    # coordinates relative to each graph's corner, with a margin that makes it a superset.
    num_graphs = pbc.shape[0]
    index = image_graph.unsqueeze(1).expand(-1, 3)
    corner = torch.full((num_graphs, 3), math.inf, dtype=pos.dtype, device=device)
    corner = corner.scatter_reduce(0, index, image_pos, reduce="amin")
    image_rel = image_pos - corner.index_select(0, image_graph)
    query_rel = (pos_wrapped - corner.index_select(0, batch)).float()
    scale = float(image_rel.abs().max()) if image_rel.numel() else 0.0
    eps32 = torch.finfo(torch.float32).eps
    radius32 = radius + 16.0 * eps32 * (scale + radius)

    sorted_key, order = torch.sort(image_key)
    image_rel = image_rel.index_select(0, order).float()  # in key order
    wanted = (query_key.unsqueeze(1) + offsets).reshape(-1)  # (27 N,) bins to visit
    start = torch.searchsorted(sorted_key, wanted)
    count = torch.searchsorted(sorted_key, wanted, right=True) - start
    slot = torch.repeat_interleave(count)  # candidate -> (query, bin) slot
    jump = start - (torch.cumsum(count, 0) - count)  # position in key order minus candidate index
    cand_image = torch.arange(slot.shape[0], device=device) + jump.index_select(0, slot)
    query = torch.repeat_interleave(count.view(num_atoms, offsets.shape[0]).sum(dim=1))

    diff = query_rel.index_select(0, query) - image_rel.index_select(0, cand_image)
    close = torch.nonzero((diff * diff).sum(dim=1) < radius32 * radius32).squeeze(1)
    dst = query.index_select(0, close)
    image = order.index_select(0, cand_image.index_select(0, close))
    src = atom.index_select(0, image)
    # query = destination, image = shifted source:
    # pw[dst] - (pw[src] + s @ cell) = pos[dst] - pos[src] + (wrap[src] - wrap[dst] - s) @ cell
    shift = wrap.index_select(0, src) - wrap.index_select(0, dst) - image_shift.index_select(0, image)
    return dst, src, shift


def vesin_available() -> bool:
    """True when the optional ``vesin`` package can be imported (``pip install 'escn[vesin]'``)."""
    return _vesin() is not None


def _vesin() -> Optional[object]:
    try:
        return importlib.import_module("vesin")
    except ImportError:
        return None


def _vesin_pairs(
    pos: Tensor, radius: float, cells: Optional[Tensor], pbc: Tensor, batch: Tensor, self_pairs: bool
) -> Tuple[Tensor, Tensor, Tensor]:
    """The pairs within ``radius`` from vesin's ``NeighborList``, one call per graph (no autograd).

    Args:
        pos: (N, 3) float64; radius: search radius; cells: (B, 3, 3) float64 or None; pbc: (B, 3) bool;
        batch: (N,) long; self_pairs: add the ``i -> i`` pairs with zero shift (vesin never returns them).

    Returns:
        dst (C,), src (C,), shift (C, 3) long on ``pos``'s device, as :func:`_candidate_pairs`.
    """
    vesin = _vesin()
    if vesin is None:
        raise ValueError(
            "backend='vesin' needs the vesin package, which is not installed "
            "(pip install 'escn[vesin]'); use backend='torch' or 'auto'"
        )
    device = pos.device
    if cells is not None and bool(pbc.any()):
        _image_counts(pbc, radius * torch.linalg.inv(cells).norm(dim=1))  # same refusal as the torch search
    pos_np = pos.cpu().numpy()
    batch_cpu = batch.cpu()
    num_graphs = pbc.shape[0]
    order = torch.argsort(batch_cpu, stable=True)
    counts = torch.bincount(batch_cpu, minlength=num_graphs).tolist()
    search = vesin.NeighborList(cutoff=radius, full_list=True, n_threads=torch.get_num_threads())
    srcs, dsts, shifts = [], [], []
    start = 0
    for g in range(num_graphs):
        atoms = order[start : start + counts[g]]
        start += counts[g]
        if atoms.numel() == 0:
            continue
        periodic = pbc[g].tolist()
        box = cells[g].cpu().numpy() if cells is not None else torch.zeros(3, 3, dtype=torch.float64).numpy()
        i, j, S = search.compute(points=pos_np[atoms.numpy()], box=box, periodic=periodic, quantities="ijS")
        srcs.append(atoms.index_select(0, torch.from_numpy(i.astype("int64"))))
        dsts.append(atoms.index_select(0, torch.from_numpy(j.astype("int64"))))
        shifts.append(torch.from_numpy(S.astype("int64")).reshape(-1, 3))
        if self_pairs:
            srcs.append(atoms)
            dsts.append(atoms)
            shifts.append(torch.zeros(atoms.numel(), 3, dtype=torch.long))
    if not srcs:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, torch.zeros(0, 3, dtype=torch.long, device=device)
    src, dst, shift = torch.cat(srcs), torch.cat(dsts), torch.cat(shifts)
    return dst.to(device), src.to(device), shift.to(device)


def _lexsort_edges(dst: Tensor, src: Tensor, shift: Tensor, num_atoms: int) -> Tensor:
    """Permutation sorting edges by (dst, src, shift x, shift y, shift z)."""
    if dst.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=dst.device)
    s_min = shift.amin(dim=0)
    s_range = (shift.amax(dim=0) - s_min + 1).tolist()
    total = float(num_atoms) ** 2 * s_range[0] * s_range[1] * s_range[2]
    if total < 2.0**62:  # one composite int64 key
        code = ((shift[:, 0] - s_min[0]) * s_range[1] + (shift[:, 1] - s_min[1])) * s_range[2] + (
            shift[:, 2] - s_min[2]
        )
        key = (dst * num_atoms + src) * (s_range[0] * s_range[1] * s_range[2]) + code
        return torch.sort(key).indices
    perm = torch.arange(dst.shape[0], device=dst.device)
    for column in (shift[:, 2], shift[:, 1], shift[:, 0], src, dst):  # least significant first
        perm = perm.index_select(0, torch.sort(column.index_select(0, perm), stable=True).indices)
    return perm


def _nearest_per_dst(dst: Tensor, dist2: Tensor, k: int, num_atoms: int) -> Tensor:
    """Boolean mask keeping, for each destination, its ``k`` nearest sources.

    Ties are broken by the current edge order, so the result is deterministic.
    """
    by_dist = torch.sort(dist2, stable=True).indices
    perm = by_dist.index_select(0, torch.sort(dst.index_select(0, by_dist), stable=True).indices)
    counts = torch.bincount(dst, minlength=num_atoms)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(dst.shape[0], device=dst.device) - first.index_select(0, dst.index_select(0, perm))
    keep = torch.zeros(dst.shape[0], dtype=torch.bool, device=dst.device)
    keep[perm[rank < k]] = True
    return keep


def _search_radius(pos: Tensor, cutoff: float, cells: Optional[Tensor], dtype: torch.dtype) -> float:
    """Search radius slightly above ``cutoff``.

    The float64 search must not miss a pair that the final test, done in ``dtype`` with
    ``pos[dst] - pos[src] + shift @ cell``, accepts; the margin covers the rounding of
    that formula for the magnitudes involved (positions and the largest image shift).
    """
    scale = float(pos.abs().max()) if pos.shape[0] else 0.0
    if cells is not None:
        max_images = 1.0 + cutoff * float(torch.linalg.inv(cells).norm(dim=1).max())
        scale += float(cells.norm(dim=-1).sum(dim=-1).max()) * max_images
    return cutoff * (1.0 + 1e-6) + 64.0 * torch.finfo(dtype).eps * (cutoff + scale)


# --------------------------------------------------------------------------- public


def radius_graph(
    pos: Tensor,
    cutoff: Union[float, Tensor],
    cell: Optional[Tensor] = None,
    pbc: Optional[PbcLike] = None,
    self_interaction: bool = False,
    max_num_neighbors: Optional[int] = None,
    batch: Optional[Tensor] = None,
    backend: str = "auto",
) -> Graph:
    """All directed edges ``src -> dst`` with ``|edge_vec| < cutoff``, open or periodic.

    Args:
        pos: (N, 3) floating positions; atoms may lie outside the cell.
        cutoff: radius (> 0); edges with ``|edge_vec|^2 < cutoff^2`` are kept.
        cell: None (open boundaries), (3, 3) or (B, 3, 3) lattice vectors as rows, same
            dtype as ``pos``.  Must have non-zero volume even along non-periodic axes.
        pbc: periodicity per axis, bool of length 3 or shape (B, 3).  Default: all True
            when ``cell`` is given, all False otherwise.
        self_interaction: keep the zero-length ``i -> i`` edge with zero shift.
        max_num_neighbors: if set, keep for every destination atom only its
            ``max_num_neighbors`` nearest sources (ties broken by the edge order).
        batch: (N,) long graph index of each atom; edges never connect different graphs.
        backend: the neighbour search: ``"torch"`` (this module's cell list), ``"vesin"`` (the optional vesin
            package's ``NeighborList``) or ``"auto"`` (vesin when it is installed and ``pos`` is on the CPU, else
            torch).  Both return the same edges; vesin is faster on large systems (docs/performance.md).

    Returns:
        :class:`Graph` with ``edge_src``, ``edge_dst`` (E,), ``edge_vec`` (E, 3) and
        ``shift`` (E, 3) long, sorted by dst, then src, then shift.  ``edge_vec`` equals
        ``pos[dst] - pos[src] + shift @ cell`` and is differentiable w.r.t. ``pos`` and ``cell``.

    Raises:
        TypeError / ValueError on malformed arguments (shapes, dtypes, NaN/inf positions,
        non-positive cutoff, degenerate cell, wrong pbc length, wrong batch shape, unknown backend, vesin
        asked for but not installed), and ValueError when two atoms are at the same position (their edge would
        have zero length).
    """
    pos = _check_pos(pos)
    cutoff = _check_cutoff(cutoff)
    num_atoms = pos.shape[0]
    batch, num_graphs = _check_batch(batch, num_atoms, pos.device)
    cells = _check_cell(cell, num_graphs, pos) if cell is not None else None
    if cells is not None:
        num_graphs = cells.shape[0]
    flags = _check_pbc(pbc, cells is not None, num_graphs, pos.device)
    if max_num_neighbors is not None:
        if isinstance(max_num_neighbors, bool) or not isinstance(max_num_neighbors, int) or max_num_neighbors < 1:
            raise ValueError(f"max_num_neighbors must be None or a positive int, got {max_num_neighbors!r}")
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "auto":
        backend = "vesin" if pos.device.type == "cpu" and vesin_available() else "torch"

    with torch.no_grad():
        pos64 = pos.detach().double()
        cells64 = cells.detach().double() if cells is not None else None
        radius = _search_radius(pos64, cutoff, cells64, pos.dtype)
        if backend == "vesin":
            dst, src, shift = _vesin_pairs(pos64, radius, cells64, flags, batch, self_interaction)
        else:
            dst, src, shift = _candidate_pairs(pos64, radius, cells64, flags, batch)

        vec = edge_vectors(pos.detach(), src, dst, shift, cells.detach() if cells is not None else None, batch)
        dist2 = (vec * vec).sum(dim=1)
        keep = dist2 < cutoff * cutoff
        if not self_interaction:
            keep &= (src != dst) | (shift != 0).any(dim=1)
        dst, src, shift, dist2 = dst[keep], src[keep], shift[keep], dist2[keep]
        perm = _lexsort_edges(dst, src, shift, num_atoms)
        dst, src, shift, dist2 = dst[perm], src[perm], shift[perm], dist2[perm]
        # two atoms at one position: their edge has no direction, and no edge frame (escn.o3.edge_frame)
        coincide = (dist2 == 0) & ((src != dst) | (shift != 0).any(dim=1))
        if bool(coincide.any()):
            k = int(coincide.nonzero()[0, 0])
            image = f" (its periodic image {shift[k].tolist()})" if bool((shift[k] != 0).any()) else ""
            raise ValueError(
                f"pos: atoms {int(dst[k])} and {int(src[k])}{image} are at the same position, so the "
                "edge between them has zero length; remove or move one of them"
            )
        if max_num_neighbors is not None:
            keep = _nearest_per_dst(dst, dist2, max_num_neighbors, num_atoms)
            dst, src, shift = dst[keep], src[keep], shift[keep]

    edge_vec = edge_vectors(pos, src, dst, shift, cells, batch)
    return Graph(edge_src=src, edge_dst=dst, edge_vec=edge_vec, shift=shift)
