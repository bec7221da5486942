"""Metrics of autoencoder reconstructions: same molecule (SMILES, heavy-atom graph) and RMSD.

The atomarch encoder is O(3)-invariant: a molecule and its mirror image have the same latent
vector, so a decoder can only be asked to return the molecule *up to reflection*. The RMSD
below therefore takes the best of proper and improper superposition by default
(``allow_reflection=True``), and the SMILES carry no stereochemistry.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from atomarch.geometry import assign_by_element, axis_alignments, kabsch
from atomarch.chem.bonds import bond_orders, heavy_graph_key, mol_smiles, to_rdkit
from atomarch.metrics.generation import EVALUATOR_VERSION

_N_RANDOM_STARTS = 8
_RANDOM_STARTS = None  # [k, 3, 3] proper rotations, built lazily with a fixed seed


def _random_rotations() -> np.ndarray:
    global _RANDOM_STARTS
    if _RANDOM_STARTS is None:
        rng = np.random.default_rng(12345)
        rots = []
        for _ in range(_N_RANDOM_STARTS):
            q, r = np.linalg.qr(rng.normal(size=(3, 3)))
            q = q * np.sign(np.diag(r))
            if np.linalg.det(q) < 0:
                q[:, 0] = -q[:, 0]
            rots.append(q)
        _RANDOM_STARTS = np.stack(rots)
    return _RANDOM_STARTS


def _start_rotations(p: np.ndarray, q: np.ndarray) -> list[np.ndarray]:
    """Initial proper rotations for q -> p: identity, principal-frame matches, fixed random ones."""
    return [np.eye(3), *axis_alignments(p, q), *_random_rotations()]


def _refine(p: np.ndarray, q: np.ndarray, zp: np.ndarray, zq: np.ndarray, rot: np.ndarray, n_iter: int) -> float:
    """Alternate assignment and Kabsch from ``rot``; returns the best RMSD seen (Å)."""
    best = np.inf
    perm_prev = None
    for _ in range(n_iter):
        perm = assign_by_element(p, q @ rot.T, zp, zq)
        if perm_prev is not None and np.array_equal(perm, perm_prev):
            break
        rot = kabsch(q[perm], p)
        rmsd = float(np.sqrt(((p - q[perm] @ rot.T) ** 2).sum(-1).mean()))
        best = min(best, rmsd)
        perm_prev = perm
    return best


def heavy_atom_rmsd(a: Atoms, b: Atoms, allow_reflection: bool = True, n_iter: int = 10) -> float | None:
    """RMSD (Å) between the heavy atoms of two molecules, over atom matchings and superpositions.

    Both heavy-atom sets are centred; then, from several initial orientations (identity, the
    principal-axes frames of ``b`` mapped onto those of ``a`` with sign flips, and 8 fixed random
    rotations) atoms are assigned element by element (Hungarian algorithm on squared distances)
    and ``b`` is superposed on ``a`` (Kabsch), alternating up to ``n_iter`` times. The smallest
    RMSD found is returned (a local search: exact for near-identical structures, an upper bound
    on the true optimum otherwise).

    Args:
        a, b: molecules (positions in Å); hydrogens are ignored.
        allow_reflection: also try improper superpositions (b mirrored) and keep the best. Use it
            for O(3)-invariant encoders, where a mirror image is an exact reconstruction.
        n_iter: maximum assignment/alignment alternations per start.

    Returns:
        the RMSD in Å, or None when the heavy-atom compositions differ or there are no heavy atoms.
    """
    za, zb = a.get_atomic_numbers(), b.get_atomic_numbers()
    ha, hb = za > 1, zb > 1
    za, zb = za[ha], zb[hb]
    if len(za) == 0 or not np.array_equal(np.sort(za), np.sort(zb)):
        return None
    p = a.get_positions()[ha]
    q = b.get_positions()[hb]
    p = p - p.mean(0)
    q = q - q.mean(0)
    if len(p) == 1:
        return 0.0
    best = np.inf
    for qq in (q, -q) if allow_reflection else (q,):  # -q: inversion, i.e. improper superposition
        for rot in _start_rotations(p, qq):
            best = min(best, _refine(p, qq, za, zb, rot, n_iter))
    return float(best)


def _smiles_whole(atoms: Atoms) -> tuple[str | None, str]:
    numbers, positions = atoms.get_atomic_numbers(), atoms.get_positions()
    orders = bond_orders(numbers, positions)
    smiles = mol_smiles(to_rdkit(numbers, positions, orders), largest_fragment=False)
    return smiles, heavy_graph_key(atoms, orders)


def evaluate_reconstruction(originals: Sequence[Atoms], decoded: Sequence[Atoms], progress: bool = False) -> dict:
    """Compare decoded molecules with their originals, pair by pair.

    Args:
        originals: the input molecules (positions in Å).
        decoded: the reconstructions, same length and order.
        progress: show a tqdm progress bar.

    Returns:
        dict with ``evaluator_version``, ``n`` and

        * ``smiles_match``: fraction of pairs whose canonical SMILES (EDM bond perception, whole
          molecule, sanitized, no stereo) are equal strings; a pair where either is invalid
          (None) never matches;
        * ``graph_match``: fraction with the same heavy-atom graph key (bond orders ignored);
        * ``composition_match``: fraction with the same heavy-atom composition;
        * ``rmsd_matched_mean`` / ``rmsd_matched_median``: heavy-atom RMSD (Å, reflection
          allowed) over SMILES-matched pairs; ``rmsd_all_median`` over pairs with the same heavy
          composition (None where no pair qualifies);
        * per-pair lists ``smiles_original``, ``smiles_decoded``, ``smiles_matched``,
          ``graph_matched`` and ``rmsd`` (None where compositions differ).

    Raises:
        ValueError: the two lists differ in length.
    """
    originals, decoded = list(originals), list(decoded)
    if len(originals) != len(decoded):
        raise ValueError(f"{len(originals)} originals but {len(decoded)} decoded structures")
    pairs = list(zip(originals, decoded))
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="reconstruction", unit="pair")
    s_orig, s_dec, s_ok, g_ok, rmsd = [], [], [], [], []
    for a, b in pairs:
        sa, ga = _smiles_whole(a)
        sb, gb = _smiles_whole(b)
        s_orig.append(sa)
        s_dec.append(sb)
        s_ok.append(sa is not None and sa == sb)
        g_ok.append(ga == gb)
        rmsd.append(heavy_atom_rmsd(a, b, allow_reflection=True))
    n = len(originals)
    matched = [r for r, ok in zip(rmsd, s_ok) if ok and r is not None]
    comparable = [r for r in rmsd if r is not None]
    return {
        "evaluator_version": EVALUATOR_VERSION,
        "n": n,
        "smiles_match": sum(s_ok) / n if n else 0.0,
        "graph_match": sum(g_ok) / n if n else 0.0,
        "composition_match": len(comparable) / n if n else 0.0,
        "rmsd_matched_mean": float(np.mean(matched)) if matched else None,
        "rmsd_matched_median": float(np.median(matched)) if matched else None,
        "rmsd_all_median": float(np.median(comparable)) if comparable else None,
        "smiles_original": s_orig,
        "smiles_decoded": s_dec,
        "smiles_matched": s_ok,
        "graph_matched": g_ok,
        "rmsd": rmsd,
    }
