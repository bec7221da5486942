"""3D coordinates for a molecular graph: RDKit ETKDG embedding, then a force-field relaxation.

This is the detail level of the graph decoder: the skeleton (a SMILES with stereo) gets its
hydrogens from valence rules and all atoms get positions from distance geometry (ETKDGv3,
seeded), relaxed with MMFF94 (default, ~15 ms per QM9 molecule) or with MMFF94 then GFN2-xTB
through ``tblite`` (closer to QM9's DFT geometries, ~0.25 s per molecule and conformer).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from rdkit import Chem, rdBase
from rdkit.Chem import AllChem

from atomarch.errors import AtomarchError
from atomarch.registry import RELAX_METHODS  # defined once, with the other names a config uses


def embed_smiles(smiles: str, seed: int = 0, relax: str = "mmff", max_iters: int = 500,
                 max_attempts: int = 0) -> tuple[Atoms, str]:
    """All-atom 3D structure of a SMILES string (Å, centre of mass at the origin).

    Args:
        smiles: the molecule; stereo marks are honoured, unspecified centres are chosen by the seed.
        seed: ETKDG random seed (same seed → same coordinates).
        relax: ``"mmff"``, ``"xtb"`` (GFN2-xTB, needs ``tblite``) or ``"none"``.
        max_iters: force-field / optimiser iterations.
        max_attempts: ETKDG embedding attempts per step of the fallback ladder (0: RDKit's
            default, 10 x atoms); a small value makes hopeless graphs (anti-Bredt bridgeheads,
            impossible stereo) fail fast.

    Returns:
        (atoms, method): ``method`` says how the coordinates were made — ``"etkdg+mmff"``,
        ``"etkdg+xtb"``, ``"etkdg"``, ``"random+..."`` when ETKDG needed random starting
        coordinates, ``"etkdg-nostereo+..."`` when the stereo marks could not be embedded and
        were dropped, or ``"2d"`` when no 3D embedding succeeded (flat coordinates). An empty or
        unparsable SMILES gives an empty ``Atoms`` and method ``"empty"``.
    """
    if relax not in RELAX_METHODS:
        raise AtomarchError(f"unknown relaxation {relax!r} (choose from {', '.join(RELAX_METHODS)})")
    blocker = rdBase.BlockLogs()
    try:
        mol = Chem.MolFromSmiles(smiles) if smiles else None
        if mol is None or mol.GetNumAtoms() == 0:
            return Atoms(), "empty"
        mol, method = _embed(mol, seed, max_attempts)
        if method == "2d":
            return _atoms(mol), method
        if relax in ("mmff", "xtb") and AllChem.MMFFHasAllMoleculeParams(mol):  # xtb starts from MMFF
            AllChem.MMFFOptimizeMolecule(mol, maxIters=max_iters)
            method += "+mmff"
        elif relax in ("mmff", "xtb"):
            AllChem.UFFOptimizeMolecule(mol, maxIters=max_iters)
            method += "+uff"
    finally:
        del blocker
    atoms = _atoms(mol)
    if relax == "xtb":
        atoms = xtb_relax(atoms)
        method += "+xtb"
    return atoms, method


def embed_conformers(smiles: str, seed: int = 0, n: int = 8, relax: str = "mmff",
                     max_iters: int = 500, max_attempts: int = 0) -> list[tuple[Atoms, str]]:
    """``n`` seeded conformers of a SMILES string in one ETKDGv3 call (multi-threaded over all
    cores, deterministic for a given seed), each relaxed like :func:`embed_smiles`.

    Falls back to one :func:`embed_smiles` structure when the multi-conformer embedding
    fails (e.g. unembeddable stereo marks). ``max_attempts`` as in :func:`embed_smiles`.
    Returns a list of (atoms, method).
    """
    if n <= 1 or not smiles:
        return [embed_smiles(smiles, seed=seed, relax=relax, max_iters=max_iters, max_attempts=max_attempts)]
    if relax not in RELAX_METHODS:
        raise AtomarchError(f"unknown relaxation {relax!r} (choose from {', '.join(RELAX_METHODS)})")
    blocker = rdBase.BlockLogs()
    try:
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            return [(Atoms(), "empty")]
        work = Chem.AddHs(mol)
        params = AllChem.ETKDGv3()
        params.randomSeed = conformer_seed(seed, n)
        params.numThreads = 0
        params.maxIterations = int(max_attempts)
        ids = list(AllChem.EmbedMultipleConfs(work, int(n), params))
        if not ids:
            return [embed_smiles(smiles, seed=seed, relax=relax, max_iters=max_iters, max_attempts=max_attempts)]
        method = "etkdg"
        if relax in ("mmff", "xtb") and AllChem.MMFFHasAllMoleculeParams(work):
            AllChem.MMFFOptimizeMoleculeConfs(work, numThreads=0, maxIters=max_iters)
            method += "+mmff"
        elif relax in ("mmff", "xtb"):
            AllChem.UFFOptimizeMoleculeConfs(work, numThreads=0, maxIters=max_iters)
            method += "+uff"
    finally:
        del blocker
    out = []
    for cid in ids:
        atoms = Atoms(numbers=[a.GetAtomicNum() for a in work.GetAtoms()], positions=work.GetConformer(cid).GetPositions())
        atoms.positions -= atoms.get_center_of_mass()
        out.append((xtb_relax(atoms), method + "+xtb") if relax == "xtb" else (atoms, method))
    return out


def embed_many(smiles: list[str], seed: int = 0, relax: str = "mmff", max_attempts: int = 0,
               conformers: int = 1, workers: int | None = None) -> list[list[tuple[Atoms, str]]]:
    """:func:`embed_conformers` (``conformers`` = 1: :func:`embed_smiles`) of every SMILES,
    on ``workers`` threads (default: the usable cores; RDKit releases the GIL while it embeds
    and relaxes, so the threads run in parallel). Each molecule is seeded on its own, so the
    result does not depend on the number of threads. Returns, per SMILES, a list of (atoms, method).

    Multi-conformer embeddings are already multithreaded inside RDKit; they run one molecule at
    a time here.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    if conformers > 1:
        return [embed_conformers(s, seed=seed, n=conformers, relax=relax, max_attempts=max_attempts) for s in smiles]

    def one(smi: str) -> list[tuple[Atoms, str]]:
        return [embed_smiles(smi, seed=seed, relax=relax, max_attempts=max_attempts)]

    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n_workers = int(workers)
    if n_workers <= 1 or len(smiles) <= 1:
        return [one(s) for s in smiles]
    blocker = rdBase.BlockLogs()  # block once for all threads (per-thread blocks would race)
    try:
        with ThreadPoolExecutor(n_workers) as pool:
            return list(pool.map(one, smiles))
    finally:
        del blocker


def conformer_seed(seed: int, n: int) -> int:
    """The ETKDG ``randomSeed`` for ``n`` conformers from the user's ``seed``: in [1, (2^31 - 1) / n].

    RDKit seeds conformer ``i`` of ``EmbedMultipleConfs`` with ``(i + 1) * randomSeed`` (hashing
    only when that overflows an int), so ``randomSeed = 0`` gives every conformer seed 0 — ``n``
    identical copies — and seeds ``s`` and ``2s`` share half their conformers. Hashing the user's
    seed (numpy SeedSequence) into a positive range where the products never overflow gives
    ``n`` distinct conformer seeds for every seed, deterministically."""
    limit = (2**31 - 1) // max(1, int(n))
    return 1 + int(np.random.SeedSequence([int(seed) % 2**63, 17]).generate_state(1, dtype=np.uint64)[0] % (limit - 1))


def _embed(mol: Chem.Mol, seed: int, max_attempts: int = 0) -> tuple[Chem.Mol, str]:
    """Embed with hydrogens, trying in turn: ETKDGv3; ETKDGv3 from random coordinates; ETKDGv3
    without stereo marks (ETKDG cannot satisfy some stereo centres of small fused rings, which
    QM9 has many of); ETDG, i.e. without ETKDG's "basic knowledge" terms (since RDKit 2026.09
    those linearity terms make ETKDG fail on triple bonds in medium rings, even cyclooctyne);
    2D coordinates. Returns the molecule and the method that worked."""
    for method, factory, random_coords, keep_stereo in (
            ("etkdg", AllChem.ETKDGv3, False, True), ("random", AllChem.ETKDGv3, True, True),
            ("etkdg-nostereo", AllChem.ETKDGv3, False, False), ("etdg", AllChem.ETDG, False, True)):
        params = factory()
        params.randomSeed = int(seed) % (2**31)
        params.maxIterations = int(max_attempts)
        params.useRandomCoords = random_coords
        work = Chem.Mol(mol)
        if not keep_stereo:
            Chem.RemoveStereochemistry(work)
        work = Chem.AddHs(work)
        if AllChem.EmbedMolecule(work, params) == 0:
            return work, method
    work = Chem.AddHs(mol)
    AllChem.Compute2DCoords(work)
    return work, "2d"


def _atoms(mol: Chem.Mol) -> Atoms:
    atoms = Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=mol.GetConformer().GetPositions())
    atoms.positions -= atoms.get_center_of_mass()
    return atoms


def xtb_relax(atoms: Atoms, fmax: float = 0.05, steps: int = 200) -> Atoms:
    """GFN2-xTB geometry relaxation (``tblite`` + ASE BFGS) of a neutral closed-shell molecule."""
    try:
        from tblite.ase import TBLite
    except ImportError as exc:
        raise AtomarchError("relax='xtb' needs the tblite package: pip install tblite") from exc
    from ase.optimize import BFGS

    work = atoms.copy()
    work.calc = TBLite(method="GFN2-xTB", verbosity=0)
    try:
        BFGS(work, logfile=None).run(fmax=fmax, steps=steps)
    except Exception:  # SCF failure on a pathological geometry: keep the force-field structure
        return atoms.copy()
    out = Atoms(numbers=work.numbers, positions=work.positions)
    out.positions -= out.get_center_of_mass()
    return out


def orient_to_noise(positions: np.ndarray, masses: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Rotate a molecule about its centre of mass onto a noise draw (proper Kabsch rotation).

    This makes the decoder's output orientation a function of its random draw: rotating the
    noise [n, 3] rotates the returned positions [n, 3] (Å, centre of mass at the origin).
    """
    from atomarch.geometry import kabsch

    x = positions - (masses[:, None] * positions).sum(0) / masses.sum()
    if len(x) < 2:
        return x
    rot = kabsch(x, noise - noise.mean(0))
    return x @ rot.T
