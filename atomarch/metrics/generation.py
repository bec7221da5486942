"""Metrics of generated molecules: stability, validity, uniqueness, novelty (EDM protocol).

Bonds are perceived from distances with :func:`atomarch.chem.bonds.bond_orders` (EDM rule).

* **atom stability**: fraction of all atoms whose sum of bond orders equals the allowed valence
  (H 1, C 4, N 3, O 2, F 1); **molecule stability**: fraction of molecules whose atoms are all
  stable. Charged groups (zwitterions, nitro groups) and aromatic rings (C-C ~1.39-1.40 Å,
  perceived as single bonds) are therefore unstable even in real QM9 data.
* **validity**: fraction of molecules that RDKit sanitizes as a whole (under-valent atoms get
  implicit hydrogens, over-valent ones fail).
* **uniqueness**: distinct canonical SMILES of the largest fragment among valid molecules /
  number of valid molecules; **novelty**: distinct valid SMILES absent from ``train_smiles`` /
  number of distinct valid SMILES.

Every result carries :data:`EVALUATOR_VERSION`; change it whenever a rule above changes so
that numbers computed by different evaluators are never compared silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from ase import Atoms

from atomarch.chem.bonds import ALLOWED_VALENCE, bond_orders, mol_smiles, to_rdkit

EVALUATOR_VERSION = "edm-1"

#: EDM (Hoogeboom et al. 2022) Table 2, QM9 with hydrogens, row "Data" (fractions)
EDM_QM9_DATA: dict[str, float] = {"atom_stability": 0.990, "molecule_stability": 0.952, "validity": 0.977}

_ROWS = (
    ("atom_stability", "atom stability"),
    ("molecule_stability", "molecule stability"),
    ("validity", "validity"),
    ("uniqueness", "uniqueness"),
    ("valid_and_unique", "valid & unique"),
    ("novelty", "novelty"),
)


def _stability_from_orders(numbers: np.ndarray, orders: np.ndarray) -> tuple[int, int, bool]:
    valence = orders.sum(axis=1)
    allowed = np.array([ALLOWED_VALENCE.get(int(z), -1) for z in numbers], dtype=np.int64)
    n_stable = int((valence == allowed).sum())
    n = len(numbers)
    return n_stable, n, bool(n > 0 and n_stable == n)


def stability(atoms: Atoms) -> tuple[int, int, bool]:
    """EDM stability of one molecule.

    Args:
        atoms: molecule (positions in Å).

    Returns:
        ``(n_stable_atoms, n_atoms, molecule_stable)``; an atom is stable iff the sum of its
        bond orders equals its allowed valence (elements outside H, C, N, O, F never are); the
        molecule is stable iff it has atoms and all are stable.
    """
    numbers = atoms.get_atomic_numbers()
    return _stability_from_orders(numbers, bond_orders(numbers, atoms.get_positions()))


def _progress(frames: Sequence[Atoms], progress: bool, desc: str) -> Iterable[Atoms]:
    if not progress:
        return frames
    from tqdm.auto import tqdm

    return tqdm(frames, desc=desc, unit="mol")


def evaluate_generated(
    frames: Sequence[Atoms], train_smiles: set[str] | None = None, progress: bool = False
) -> dict:
    """Evaluate generated molecules with the EDM protocol.

    Args:
        frames: molecules as ``ase.Atoms`` (positions in Å, ``pbc`` False).
        train_smiles: canonical SMILES of the training set, written the same way as here
            (:func:`atomarch.chem.bonds.mol_smiles`, no explicit H, no stereo); None skips novelty.
        progress: show a tqdm progress bar.

    Returns:
        dict with ``evaluator_version``, ``n``, ``n_atoms``, ``n_valid``, ``n_unique``,
        fractions in [0, 1]: ``atom_stability`` (over all atoms), ``molecule_stability``,
        ``validity``, ``uniqueness`` (0.0 when nothing is valid), ``valid_and_unique``
        (distinct valid SMILES / n), ``novelty`` (None without ``train_smiles``; 0.0 when
        nothing is valid), ``valid_unique_novel`` (distinct valid SMILES not in the training set
        / n — the V×U×N of the EDM/GeoLDM literature), and per-structure lists ``smiles`` (largest fragment, None if
        invalid) and ``stable`` (molecule stability flags).
    """
    frames = list(frames)
    n_stable_atoms = n_atoms = 0
    smiles: list[str | None] = []
    stable: list[bool] = []
    for atoms in _progress(frames, progress, "evaluating"):
        numbers, positions = atoms.get_atomic_numbers(), atoms.get_positions()
        orders = bond_orders(numbers, positions)
        ns, na, ok = _stability_from_orders(numbers, orders)
        n_stable_atoms += ns
        n_atoms += na
        stable.append(ok)
        smiles.append(mol_smiles(to_rdkit(numbers, positions, orders), largest_fragment=True))
    n = len(frames)
    valid = [s for s in smiles if s is not None]
    unique = set(valid)
    novelty = None
    if train_smiles is not None:
        novelty = len(unique - set(train_smiles)) / len(unique) if unique else 0.0
    return {
        "evaluator_version": EVALUATOR_VERSION,
        "n": n,
        "n_atoms": n_atoms,
        "n_valid": len(valid),
        "n_unique": len(unique),
        "atom_stability": n_stable_atoms / n_atoms if n_atoms else 0.0,
        "molecule_stability": sum(stable) / n if n else 0.0,
        "validity": len(valid) / n if n else 0.0,
        "uniqueness": len(unique) / len(valid) if valid else 0.0,
        "valid_and_unique": len(unique) / n if n else 0.0,
        "novelty": novelty,
        "valid_unique_novel": None if novelty is None else len(unique - set(train_smiles)) / n if n else 0.0,
        "smiles": smiles,
        "stable": stable,
    }


def format_generation_table(result: dict, reference: dict | None = None, reference_name: str = "reference") -> str:
    """A plain-text table of the metrics in percent, one row per metric.

    Args:
        result: output of :func:`evaluate_generated`.
        reference: optional fractions to show next to it, e.g. :data:`EDM_QM9_DATA`;
            metrics missing from it are left blank.
        reference_name: header of the reference column.
    """

    def pct(v) -> str:
        return "" if v is None else f"{100.0 * float(v):.1f}"

    head = f"{'metric':<20}{'value (%)':>10}"
    if reference is not None:
        head += f"{reference_name[:14]:>16}"
    lines = [f"n = {result['n']}, evaluator {result.get('evaluator_version', '?')}", head, "-" * len(head)]
    for key, label in _ROWS:
        if key not in result or (key == "novelty" and result[key] is None):
            continue
        line = f"{label:<20}{pct(result[key]):>10}"
        if reference is not None:
            line += f"{pct(reference.get(key)):>16}"
        lines.append(line)
    return "\n".join(lines)
