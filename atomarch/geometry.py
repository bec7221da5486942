"""Point-cloud geometry shared by the decoder's training pairing and the RMSD metric."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def kabsch(p: np.ndarray, q: np.ndarray, allow_reflection: bool = False) -> np.ndarray:
    """Orthogonal matrix R [3, 3] minimising |p R^T - q| for centred p, q [n, 3]
    (a proper rotation unless ``allow_reflection``)."""
    u, _, vt = np.linalg.svd(p.T @ q)
    if allow_reflection:
        return vt.T @ u.T
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def principal_axes(x: np.ndarray) -> np.ndarray:
    """[3, 3] principal axes (columns, ascending variance) of a centred point cloud [n, 3]."""
    return np.linalg.eigh(x.T @ x)[1]


def axis_alignments(p: np.ndarray, q: np.ndarray, allow_reflection: bool = False) -> list[np.ndarray]:
    """Orthogonal matrices R mapping q's principal frame onto p's (``q @ R.T`` ≈ aligned with p),
    one per sign choice of the axes: 4 proper ones (8 with reflections)."""
    ea, eb = principal_axes(p), principal_axes(q)
    out = []
    for sx in (1.0, -1.0):
        for sy in (1.0, -1.0):
            for sz in (1.0, -1.0):
                r = ea @ np.diag([sx, sy, sz]) @ eb.T
                if allow_reflection or np.linalg.det(r) > 0:
                    out.append(r)
    return out


def assign_by_element(p: np.ndarray, q: np.ndarray, types_p: np.ndarray, types_q: np.ndarray) -> np.ndarray:
    """Optimal matching of equal-type points: ``perm`` [n] such that q[perm] is row-matched to p,
    minimising the summed squared distances within each type."""
    perm = np.empty(len(p), dtype=np.int64)
    for ty in np.unique(types_p):
        ia, ib = np.where(types_p == ty)[0], np.where(types_q == ty)[0]
        if len(ia) == 1:
            perm[ia] = ib
            continue
        cost = ((p[ia, None, :] - q[None, ib, :]) ** 2).sum(-1)
        rows, cols = linear_sum_assignment(cost)
        perm[ia[rows]] = ib[cols]
    return perm
