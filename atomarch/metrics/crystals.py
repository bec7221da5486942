"""Crystal metrics of the CDVAE protocol (Xie et al. 2022), on periodic ``ase.Atoms``.

* **Reconstruction match**: pymatgen's ``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)``;
  the RMS displacement it reports (normalised by (V / N)^(1/3)) for matched pairs.
* **Structural validity**: every interatomic distance, periodic images included, is above
  0.5 Å, and the cell volume above 0.1 Å³.
* **Compositional validity** (SMACT): a composition is valid if it is a single element, an
  all-metal alloy, or if some assignment of the elements' oxidation states makes it charge
  neutral (at its reduced stoichiometry) and passes Pauling's electronegativity test (cations
  less electronegative than anions). This is the check CDVAE reports; the project's MP-20 data
  itself passes it ~89 % of the time, so 100 % is not the goal.

pymatgen and smact are imported on first use (``pip install atomarch[crystal]``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import lru_cache
from math import gcd

import numpy as np
from ase import Atoms

MATCHER_TOLERANCES = {"stol": 0.5, "angle_tol": 10.0, "ltol": 0.3}
"""CDVAE's StructureMatcher tolerances."""
MIN_DISTANCE = 0.5
"""Å: closer atoms make a crystal structurally invalid."""


def to_pymatgen(atoms: Atoms):
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(atoms)


def structure_match(a: Atoms, b: Atoms) -> tuple[bool, float | None]:
    """(matched, normalised RMS displacement or None) of two crystals under CDVAE's tolerances."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher(**MATCHER_TOLERANCES)
    try:
        rms = matcher.get_rms_dist(to_pymatgen(a), to_pymatgen(b))
    except Exception:  # degenerate decoded cells can make the matcher fail: no match
        return False, None
    return (rms is not None), (None if rms is None else float(rms[0]))


def structure_valid(atoms: Atoms, min_distance: float = MIN_DISTANCE) -> bool:
    """No two atoms (periodic images included) closer than ``min_distance`` Å, volume > 0.1 Å³."""
    from ase.neighborlist import neighbor_list

    if len(atoms) == 0 or abs(float(np.linalg.det(np.asarray(atoms.get_cell(), dtype=float)))) < 0.1:
        return False
    i, _ = neighbor_list("ij", atoms, min_distance, self_interaction=False)
    return len(i) == 0


@lru_cache(maxsize=4096)
def _composition_valid(symbols: tuple[str, ...], counts: tuple[int, ...]) -> bool:
    import smact
    from smact.screening import pauling_test

    if len(symbols) == 1:
        return True
    if all(s in smact.metals for s in symbols):
        return True
    elements = [smact.Element(s) for s in symbols]
    electronegativity = [e.pauling_eneg for e in elements]
    g = 0
    for c in counts:
        g = gcd(g, c)
    reduced = [c // g for c in counts]
    for states in itertools.product(*[e.oxidation_states or [0] for e in elements]):
        if sum(q * n for q, n in zip(states, reduced)) != 0:
            continue
        if any(x is None for x in electronegativity):  # no electronegativity data: not judged
            return True
        if pauling_test(states, electronegativity):
            return True
    return False


def composition_valid(atoms: Atoms) -> bool:
    """SMACT charge neutrality + Pauling electronegativity test (see the module docstring)."""
    symbols, counts = np.unique(atoms.get_chemical_symbols(), return_counts=True)
    if len(symbols) == 0:
        return False
    return _composition_valid(tuple(symbols.tolist()), tuple(int(c) for c in counts))


def evaluate_crystal_reconstruction(originals: Sequence[Atoms], decoded: Sequence[Atoms]) -> dict:
    """``{"n", "match_rate", "rms_mean"}`` (RMS over matched pairs, None if none matched) and the
    per-pair lists ``matched`` and ``rms``."""
    if len(originals) != len(decoded):
        raise ValueError(f"{len(originals)} originals but {len(decoded)} decoded structures")
    pairs = [structure_match(a, b) for a, b in zip(originals, decoded)]
    rms = [r for m, r in pairs if m]
    return {"n": len(pairs), "match_rate": float(np.mean([m for m, _ in pairs])) if pairs else None,
            "rms_mean": float(np.mean(rms)) if rms else None,
            "matched": [m for m, _ in pairs], "rms": [r for _, r in pairs]}


def evaluate_crystal_validity(frames: Sequence[Atoms]) -> dict:
    """Shares of structurally and compositionally valid crystals, and of both."""
    s = np.array([structure_valid(a) for a in frames], dtype=bool)
    c = np.array([composition_valid(a) for a in frames], dtype=bool)
    n = max(1, len(frames))
    return {"n": len(frames), "structural_validity": float(s.sum() / n), "compositional_validity": float(c.sum() / n),
            "validity": float((s & c).sum() / n)}
