"""Cutoff neighbour lists, periodic-aware.

Edge convention used everywhere in atomarch: ``edge_index[0]`` is the *source* (neighbour
``j``), ``edge_index[1]`` the *target* (centre ``i``) and the edge vector is

    vec = pos[j] - pos[i] + edge_shift @ cell        (Å)

so that messages flow ``j -> i`` and are summed at ``i``. ``edge_shift`` holds the integer
periodic image offsets (zeros for molecules). Self-edges exist only between an atom and its
own periodic images.

Two paths compute the same list: a dense, vectorised torch path for batches of small
non-periodic molecules (at most :data:`DENSE_MAX_ATOMS` atoms each; QM9: ~1 ms for 64
molecules) and :func:`neighbor_list`, a k-d tree search (:class:`scipy.spatial.cKDTree`) whose
memory is linear in atoms + edges for every input: molecules of any size, and periodic cells of
any shape, size and emptiness (the cell is Minkowski-reduced, the periodic images within the
cutoff of the cell are added as ghost atoms, so unlike a cell list there is no per-bin padding
that a crowded bin or a huge, sparse cell could blow up, and a skewed cell costs no more
images than its reduced form).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

DENSE_MAX_ATOMS = 256
"""Non-periodic structures up to this size use the dense torch path."""


def neighbor_list(
    pos: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    cutoff: float,
    return_distances: bool = False,
):
    """Neighbour pairs of one structure closer than ``cutoff`` Å (periodic images included).

    Memory and time are linear in the number of atoms plus pairs (a k-d tree; periodic images
    near the cell faces are added as ghost atoms), for molecules and periodic cells alike.

    Args:
        pos: [n, 3] Cartesian positions in Å.
        cell: [3, 3] lattice vectors as rows in Å (ignored along non-periodic directions).
        pbc: [3] periodic flags.
        cutoff: radius in Å (pairs with distance strictly below it).

    Returns:
        ``(i, j, shift)`` (and ``dist`` [E] if asked): centres ``i`` [E], neighbours ``j`` [E],
        integer image offsets ``shift`` [E, 3], with ``|pos[j] - pos[i] + shift @ cell| <
        cutoff``; sorted by ``i``, then ``j``, then ``shift``.
    """
    from scipy.spatial import cKDTree

    pos = np.asarray(pos, dtype=float).reshape(-1, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=float).reshape(3, 3)
    cutoff = float(cutoff)
    n = len(pos)
    # query a hair wider than the cutoff, then keep d < cutoff by our own float64 distances
    radius = cutoff * (1 + 1e-9) + 1e-12
    if n == 0 or cutoff <= 0:
        i = j = np.zeros(0, dtype=np.int64)
        S = np.zeros((0, 3), dtype=np.int64)
    elif not pbc.any():
        pairs = cKDTree(pos).query_pairs(radius, output_type="ndarray").astype(np.int64).reshape(-1, 2)
        i = np.concatenate([pairs[:, 0], pairs[:, 1]])
        j = np.concatenate([pairs[:, 1], pairs[:, 0]])
        S = np.zeros((len(i), 3), dtype=np.int64)
    else:
        i, j, S = _periodic_pairs(pos, cell, pbc, cutoff, radius)
    vec = pos[j] - pos[i] + (S @ cell if pbc.any() else 0.0)
    dist = np.sqrt((vec * vec).sum(axis=1))
    keep = dist < cutoff
    i, j, S, dist = i[keep], j[keep], S[keep], dist[keep]
    order = np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i))
    out = (i[order], j[order], S[order])
    return out + (dist[order],) if return_distances else out


def _complete_basis(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """The cell with its non-periodic rows replaced by unit vectors orthogonal to the periodic
    ones (a full-rank basis; shifts along non-periodic directions are always zero)."""
    basis = cell.copy()
    periodic = [k for k in range(3) if pbc[k]]
    free = [k for k in range(3) if not pbc[k]]
    if not free:
        return basis
    span = cell[periodic]
    # orthonormal complement of the periodic vectors' span (SVD: the last right-singular vectors)
    _, _, vt = np.linalg.svd(np.vstack([span, np.zeros((3 - len(span), 3))]))
    for k, v in zip(free, vt[len(periodic):]):
        basis[k] = v
    return basis


def _reduced_cell(cell: np.ndarray, pbc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minkowski-reduced periodic vectors (:func:`ase.geometry.minkowski_reduce`): ``(rcell,
    op)`` with ``rcell = op @ cell``. A skewed cell then needs only the few images its true
    plane spacings ask for. Falls back to the cell itself when reduction is not possible."""
    eye = np.eye(3, dtype=np.int64)
    try:
        from ase.geometry import minkowski_reduce

        rcell, op = minkowski_reduce(cell, pbc)
        rcell, op = np.asarray(rcell, dtype=float), np.rint(np.asarray(op)).astype(np.int64)
    except Exception:
        return cell, eye
    free = ~pbc
    if (not np.array_equal(op[free], eye[free]) or not np.array_equal(op[:, free], eye[:, free])
            or round(abs(np.linalg.det(op))) != 1 or not np.allclose(op @ cell, rcell)):
        return cell, eye
    return rcell, op


def _periodic_pairs(pos, cell, pbc, cutoff, radius):
    """Pairs (i, j, shift) of a periodic structure: atoms wrapped into the (Minkowski-reduced)
    cell, ghost copies of the images within ``cutoff`` of the cell (in fractional distance along
    each periodic axis), one k-d tree query of the wrapped atoms against the ghosts."""
    from scipy.spatial import cKDTree

    cell, op = _reduced_cell(cell, pbc)
    basis = _complete_basis(cell, pbc)
    frac = np.linalg.solve(basis.T, pos.T).T
    wrap = np.where(pbc, np.floor(frac), 0.0)
    frac -= wrap  # in [0, 1) along periodic axes
    wrap = wrap.astype(np.int64)
    inside = frac @ basis
    # |b_k| = 1 / (distance between lattice planes k): the fractional reach of the cutoff
    reach = radius * np.linalg.norm(np.linalg.inv(basis).T, axis=1)
    nimg = np.where(pbc, np.ceil(reach), 0).astype(np.int64)
    ghost_idx, ghost_shift = [], []
    for shift in itertools.product(*(range(-m, m + 1) for m in nimg)):
        shift = np.asarray(shift, dtype=np.int64)
        f = frac + shift
        ok = np.ones(len(pos), dtype=bool)
        for k in np.flatnonzero(pbc):
            ok &= (f[:, k] > -reach[k]) & (f[:, k] < 1 + reach[k])
        idx = np.flatnonzero(ok)
        ghost_idx.append(idx)
        ghost_shift.append(np.broadcast_to(shift, (len(idx), 3)))
    ghost_idx = np.concatenate(ghost_idx)
    ghost_shift = np.concatenate(ghost_shift)
    ghosts = inside[ghost_idx] + ghost_shift @ cell
    found = cKDTree(inside).sparse_distance_matrix(cKDTree(ghosts), radius, output_type="ndarray")
    i = found["i"].astype(np.int64)
    g = found["j"].astype(np.int64)
    j = ghost_idx[g]
    # ghost = pos[j] - wrap[j] @ cell + s @ cell, centre = pos[i] - wrap[i] @ cell
    S = ghost_shift[g] - wrap[j] + wrap[i]
    self_pair = (i == j) & ~S.any(axis=1)
    return i[~self_pair], j[~self_pair], S[~self_pair] @ op  # shifts in the original cell's basis


def dense_radius_graph(
    pos: torch.Tensor, batch: torch.Tensor, cutoff: float
) -> torch.Tensor:
    """All pairs closer than ``cutoff`` within each graph of a non-periodic batch.

    Args:
        pos: [N, 3] positions (Å); batch: [N] graph index, sorted.

    Returns:
        edge_index [2, E] (row 0 = neighbour j, row 1 = centre i), no self-loops.
    """
    n = pos.shape[0]
    if n == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=pos.device)
    counts = torch.bincount(batch)
    starts = torch.cumsum(counts, 0) - counts
    per_atom = counts[batch]  # size of each atom's graph
    centre = torch.repeat_interleave(torch.arange(n, device=pos.device), per_atom)
    # position of each pair inside its centre's block, then the neighbour's global index
    block_start = torch.repeat_interleave(torch.cumsum(per_atom, 0) - per_atom, per_atom)
    offset = torch.arange(centre.numel(), device=pos.device) - block_start
    neigh = starts[batch][centre] + offset
    keep = centre != neigh
    centre, neigh = centre[keep], neigh[keep]
    d2 = (pos[neigh] - pos[centre]).pow(2).sum(-1)
    keep = d2 < cutoff * cutoff
    return torch.stack([neigh[keep], centre[keep]])
