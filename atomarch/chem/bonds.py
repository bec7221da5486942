"""Bond perception from interatomic distances (the EDM / G-SchNet rule) and RDKit conversion.

The rule, for a pair of elements at distance ``d`` (pm, = 100 x Å):

* bonded if ``d < single + 10``;
* then double if the pair has a double-bond length and ``d < double + 5``;
* then triple if the pair has a triple-bond length and ``d < triple + 3``.

Only H, C, N, O and F have table entries; pairs involving any other element are never bonded.
Allowed valences (for stability) are H 1, C 4, N 3, O 2, F 1.

Molecules are ``ase.Atoms`` with positions in Å (``pbc`` is ignored: no minimum image).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from rdkit import Chem, rdBase

#: typical bond lengths in pm (EDM / G-SchNet tables), restricted to H, C, N, O, F
SINGLE_BOND_PM: dict[str, dict[str, int]] = {
    "H": {"H": 74, "C": 109, "N": 101, "O": 96, "F": 92},
    "C": {"H": 109, "C": 154, "N": 147, "O": 143, "F": 135},
    "N": {"H": 101, "C": 147, "N": 145, "O": 140, "F": 136},
    "O": {"H": 96, "C": 143, "N": 140, "O": 148, "F": 142},
    "F": {"H": 92, "C": 135, "N": 136, "O": 142, "F": 142},
}
DOUBLE_BOND_PM: dict[str, dict[str, int]] = {
    "C": {"C": 134, "N": 129, "O": 120},
    "N": {"C": 129, "N": 125, "O": 121},
    "O": {"C": 120, "N": 121, "O": 121},
}
TRIPLE_BOND_PM: dict[str, dict[str, int]] = {
    "C": {"C": 120, "N": 116, "O": 113},
    "N": {"C": 116, "N": 110},
    "O": {"C": 113},
}
#: tolerances (pm) added to the single / double / triple lengths
MARGINS_PM: tuple[int, int, int] = (10, 5, 3)

#: allowed valence (sum of bond orders) of a stable atom, by atomic number
ALLOWED_VALENCE: dict[int, int] = {1: 1, 6: 4, 7: 3, 8: 2, 9: 1}

_ELEMENTS = ("H", "C", "N", "O", "F")
_Z_OF = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
_BOND_TYPES = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}


def _threshold_table(table: dict[str, dict[str, int]], margin: int) -> np.ndarray:
    """[5, 5] thresholds in pm over (H, C, N, O, F); -inf where the pair has no entry."""
    out = np.full((len(_ELEMENTS), len(_ELEMENTS)), -np.inf)
    for i, a in enumerate(_ELEMENTS):
        for j, b in enumerate(_ELEMENTS):
            if b in table.get(a, {}):
                out[i, j] = table[a][b] + margin
    return out


_THRESHOLDS = np.stack(
    [_threshold_table(t, m) for t, m in zip((SINGLE_BOND_PM, DOUBLE_BOND_PM, TRIPLE_BOND_PM), MARGINS_PM)]
)  # [3, 5, 5]
_Z_TO_INDEX = np.full(119, -1, dtype=np.int64)
for _k, _s in enumerate(_ELEMENTS):
    _Z_TO_INDEX[_Z_OF[_s]] = _k


def _numbers_positions(
    atoms_or_numbers: Atoms | np.ndarray, positions: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(atoms_or_numbers, Atoms):
        return atoms_or_numbers.get_atomic_numbers(), atoms_or_numbers.get_positions()
    if positions is None:
        raise ValueError("positions are required when atomic numbers are given")
    numbers = np.asarray(atoms_or_numbers, dtype=np.int64).reshape(-1)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(numbers) != len(positions):
        raise ValueError(f"{len(numbers)} atomic numbers but {len(positions)} positions")
    return numbers, positions


def bond_orders(numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Bond orders of all atom pairs by the EDM distance rule.

    Args:
        numbers: [n] atomic numbers.
        positions: [n, 3] Cartesian positions in Å.

    Returns:
        [n, n] int64 matrix of bond orders in {0, 1, 2, 3}: symmetric, zero diagonal.
        Atoms of elements other than H, C, N, O, F get no bonds.
    """
    numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = len(numbers)
    if n == 0:
        return np.zeros((0, 0), dtype=np.int64)
    idx = _Z_TO_INDEX[np.clip(numbers, 0, 118)]
    known = idx >= 0
    idx = np.where(known, idx, 0)
    d_pm = 100.0 * np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)  # [n, n]
    thr = _THRESHOLDS[:, idx[:, None], idx[None, :]]  # [3, n, n]
    single = d_pm < thr[0]
    double = single & (d_pm < thr[1])
    triple = double & (d_pm < thr[2])
    orders = single.astype(np.int64) + double + triple
    orders[~known, :] = 0
    orders[:, ~known] = 0
    np.fill_diagonal(orders, 0)
    return orders


def to_rdkit(
    atoms_or_numbers: Atoms | np.ndarray,
    positions: np.ndarray | None = None,
    orders: np.ndarray | None = None,
) -> Chem.Mol:
    """An RDKit molecule with perceived bonds and a 3D conformer; **not** sanitized.

    Args:
        atoms_or_numbers: an ``ase.Atoms``, or [n] atomic numbers (then ``positions`` is needed).
        positions: [n, 3] positions in Å when atomic numbers are given.
        orders: optional [n, n] bond-order matrix; default :func:`bond_orders` of the geometry.

    Returns:
        ``rdkit.Chem.Mol`` whose atom ``i`` is atom ``i`` of the input, with SINGLE / DOUBLE /
        TRIPLE bonds and one conformer holding the positions (Å). Hydrogens are explicit atoms;
        atoms keep RDKit's default implicit-hydrogen handling (as in EDM), so sanitizing fills
        under-valent atoms with implicit hydrogens and rejects over-valent ones.
    """
    numbers, pos = _numbers_positions(atoms_or_numbers, positions)
    if orders is None:
        orders = bond_orders(numbers, pos)
    mol = Chem.RWMol()
    for z in numbers:
        mol.AddAtom(Chem.Atom(int(z)))
    ii, jj = np.nonzero(np.triu(orders, 1))
    for i, j in zip(ii.tolist(), jj.tolist()):
        mol.AddBond(i, j, _BOND_TYPES[int(orders[i, j])])
    conf = Chem.Conformer(len(numbers))
    for k, p in enumerate(pos.tolist()):
        conf.SetAtomPosition(k, p)
    mol.AddConformer(conf, assignId=True)
    return mol.GetMol()


def determine_bonds(atoms: Atoms, charge: int = 0) -> Chem.Mol | None:
    """Bonds, bond orders and formal charges of a neutral molecule from its 3D geometry with
    RDKit's ``DetermineBonds`` (the xyz2mol algorithm: connectivity from covalent radii, then
    the bond orders that satisfy every atom's valence for total charge ``charge``). Unlike the
    EDM distance rule it reads aromatic rings (C–C 1.39 Å) as aromatic instead of filling them
    up with implicit hydrogens. Returns the sanitized molecule (explicit hydrogens, conformer =
    the positions) or None when no valence-consistent assignment exists."""
    from rdkit.Chem import rdDetermineBonds

    numbers = atoms.get_atomic_numbers()
    mol = Chem.RWMol(to_rdkit(numbers, atoms.get_positions(), np.zeros((len(numbers), len(numbers)), dtype=int)))
    for atom in mol.GetAtoms():
        atom.SetNoImplicit(True)
    blocker = rdBase.BlockLogs()
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=charge)
        Chem.SanitizeMol(mol)
        return mol.GetMol()
    except Exception:  # RDKit raises ValueError/RuntimeError kinds for impossible assignments
        return None
    finally:
        del blocker


def _heavy_count(mol: Chem.Mol) -> int:
    return sum(1 for a in mol.GetAtoms() if a.GetAtomicNum() > 1)


def mol_smiles(mol: Chem.Mol, largest_fragment: bool = True) -> str | None:
    """Canonical SMILES of a sanitized copy of ``mol``; None if sanitization fails.

    The whole molecule is sanitized first (so a molecule with any over-valent atom gives None,
    even if that atom is not in the largest fragment). With ``largest_fragment`` the SMILES is
    that of the fragment with the most heavy atoms (ties: most atoms; then first). Explicit
    hydrogens are removed before writing, and no stereochemistry is perceived, so the string is
    comparable with heavy-atom SMILES such as ``Chem.CanonSmiles("CC=O")``. An empty molecule
    gives None.
    """
    if mol.GetNumAtoms() == 0:
        return None
    work = Chem.Mol(mol)
    blocker = rdBase.BlockLogs()  # invalid generated molecules are expected; keep stderr quiet
    try:
        Chem.SanitizeMol(work)
        if largest_fragment:
            frags = Chem.GetMolFrags(work, asMols=True, sanitizeFrags=False)
            if len(frags) > 1:
                work = max(frags, key=lambda m: (_heavy_count(m), m.GetNumAtoms()))
        work = Chem.RemoveHs(work, sanitize=False)
        return Chem.MolToSmiles(work, canonical=True)
    except Exception:  # RDKit raises several types (AtomValenceException, KekulizeException, ...)
        return None
    finally:
        del blocker


def heavy_graph_key(atoms: Atoms, orders: np.ndarray | None = None) -> str:
    """Canonical key of the heavy-atom connectivity graph (bond orders and hydrogens ignored).

    Built as the canonical SMILES of the heavy atoms joined by single bonds, without
    sanitization and with no implicit hydrogens, so over-valent graphs (a carbon with five
    heavy neighbours, ...) still get a key. Two molecules have the same key iff their heavy-atom
    graphs (elements + connectivity from :func:`bond_orders`) are isomorphic.

    Args:
        atoms: the molecule (positions in Å).
        orders: optional precomputed [n, n] bond orders of ``atoms``.

    Returns:
        a string such as ``"[C][C][O]"``; ``""`` when there is no heavy atom.
    """
    numbers = atoms.get_atomic_numbers()
    if orders is None:
        orders = bond_orders(numbers, atoms.get_positions())
    heavy = np.nonzero(numbers > 1)[0]
    if len(heavy) == 0:
        return ""
    mol = Chem.RWMol()
    for z in numbers[heavy]:
        atom = Chem.Atom(int(z))
        atom.SetNoImplicit(True)
        atom.SetNumExplicitHs(0)
        mol.AddAtom(atom)
    sub = orders[np.ix_(heavy, heavy)]
    ii, jj = np.nonzero(np.triu(sub, 1))
    for i, j in zip(ii.tolist(), jj.tolist()):
        mol.AddBond(i, j, Chem.BondType.SINGLE)
    mol.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(mol)
    return Chem.MolToSmiles(mol, canonical=True)
