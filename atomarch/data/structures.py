"""Reading and checking user structures (``ase.Atoms``).

Files go through :func:`ase.io.read` (xyz, extxyz, cif, traj, ...) or :mod:`ase.db`
(``.db``); SMILES strings are embedded to 3D with RDKit. Per-structure properties come
from ``atoms.info`` (extxyz comment line, db key-value pairs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from atomarch.data.formats import KNOWN_SUFFIXES, looks_like_path  # noqa: F401 (re-exported)
from atomarch.errors import ReadError, StructureError

MIN_DISTANCE = 0.1
"""Atoms closer than this (Å) are rejected as overlapping."""

MAX_ATOMS = 100_000
"""Largest structure (atoms, periodic or not) the models take. Input checks, neighbour search and
the encoder are linear in the number of atoms (a 50,000-atom liquid-density structure encodes
in ~40 s on one CPU core with a 1.3 GB peak RSS, see ``benchmarks/large_structures.py``);
larger ones are refused with a :class:`StructureError` that names the structure and the limit,
rather than risk exhausting the machine's memory."""

MAX_COORDINATE = 1e6
"""Largest accepted |coordinate| and |cell entry| (Å); beyond it distances lose all precision
(and overflow near 1e154), so such a structure is refused as corrupt."""


def read_structures(path: str | Path, index: str = ":") -> list[Atoms]:
    """Read every structure of a file.

    Args:
        path: any file :func:`ase.io.read` understands, or an ASE database (``.db``).
        index: ASE index string (default: all frames).

    Returns:
        list of ``ase.Atoms``; ``atoms.info`` carries the per-structure properties and
        ``atoms.info["source"] = "<file>:<frame>"``.

    Raises:
        ReadError: the file is missing, unreadable or holds no structure.
    """
    path = Path(path)
    if not path.exists():
        raise ReadError(f"file not found: {path}")
    if path.is_dir():
        raise ReadError(f"{path} is a directory, not a structure file")
    try:
        if path.suffix == ".db":
            frames = _read_db(path)
        else:
            import ase.io

            frames = ase.io.read(str(path), index=index)
            if isinstance(frames, Atoms):
                frames = [frames]
    except ReadError:
        raise
    except Exception as exc:  # ase raises many types for malformed files
        raise ReadError(f"cannot read {path}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc
    frames = list(frames)
    if not frames:
        raise ReadError(f"{path} holds no structure")
    for k, atoms in enumerate(frames):
        atoms.info.setdefault("source", f"{path}:{k}")
        if path.suffix.lower() == ".cif" and (not atoms.pbc.any() or atoms.cell.rank < 3):
            raise ReadError(f"{path}: block {k} has no unit cell (_cell_length_a/b/c and _cell_angle_*): a CIF "
                            "describes a crystal by its cell, without one its fractional coordinates mean nothing")
    return frames


def _read_db(path: Path) -> list[Atoms]:
    import ase.db

    frames = []
    with ase.db.connect(str(path)) as db:
        for row in db.select():
            atoms = row.toatoms()
            atoms.info.update(row.key_value_pairs)
            atoms.info.update(getattr(row, "data", {}) or {})
            frames.append(atoms)
    return frames


def from_smiles(smiles: str, seed: int = 0) -> Atoms:
    """Embed a SMILES string to a 3D molecule (RDKit ETKDG + MMFF), hydrogens included."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import AllChem

    with rdBase.BlockLogs():  # RDKit's parse messages would break the one-line error contract
        mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise StructureError(f"invalid SMILES: {smiles!r}")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise StructureError(f"RDKit could not embed SMILES {smiles!r} in 3D")
    AllChem.MMFFOptimizeMolecule(mol)
    pos = mol.GetConformer().GetPositions()
    atoms = Atoms([a.GetSymbol() for a in mol.GetAtoms()], positions=pos)
    with rdBase.BlockLogs():  # e.g. "not removing hydrogen atom without neighbors" for [H]
        typed = Chem.MolToSmiles(Chem.RemoveHs(mol))  # canonical form of the input as given
        Chem.AssignStereochemistryFrom3D(mol)  # the stereo this embedding has (unspecified centres get one)
        graph = Chem.MolToSmiles(Chem.RemoveHs(mol))
    atoms.info.update(smiles=typed, graph_smiles=graph, source=f"smiles:{smiles}")
    return atoms


def load_inputs(items: Iterable[str]) -> list[Atoms]:
    """Structures from a mix of file paths and SMILES strings (a non-existing path that
    parses as SMILES is treated as SMILES)."""
    out: list[Atoms] = []
    for item in items:
        if Path(item).exists():
            out.extend(read_structures(item))
            continue
        try:
            out.append(from_smiles(item))
        except StructureError as exc:
            if "embed" in str(exc):
                raise
            if looks_like_path(item):
                raise ReadError(f"file not found: {item}") from None
            raise ReadError(f"'{item}' is neither an existing file nor a valid SMILES string") from None
    return out



def write_structures(frames: Sequence[Atoms], path: str | Path) -> None:
    """Write structures with their ``info`` (extxyz/xyz/cif/traj via ASE, ``.sdf`` via RDKit
    with bonds perceived by the EDM distance rule). The format follows the extension."""
    path = check_output_path(path)
    if path.suffix == ".sdf":
        from rdkit import Chem

        from atomarch.chem.bonds import to_rdkit

        with Chem.SDWriter(str(path)) as w:
            for atoms in frames:
                mol = to_rdkit(atoms)
                mol.SetProp("_Name", str(atoms.info.get("smiles") or atoms.get_chemical_formula()))  # SDF title line
                for k, v in atoms.info.items():
                    if isinstance(v, (int, float, str)):
                        mol.SetProp(str(k), str(v))
                w.write(mol)
        return
    import ase.io

    fmt = "extxyz" if path.suffix in (".xyz", ".extxyz") else None
    frames = list(frames)
    if path.suffix.lower() == ".cif":  # a CIF block needs a cell and atoms: say which structures are left out
        empty = [k for k, a in enumerate(frames) if len(a) == 0]
        if empty:
            import warnings

            warnings.warn(f"{len(empty)} structure(s) without atoms (nothing decoded) are not written to {path}: "
                          f"{', '.join(map(str, empty[:10]))}{' ...' if len(empty) > 10 else ''}")
            frames = [a for a in frames if len(a)]
    ase.io.write(str(path), frames, format=fmt)


def check_output_path(path: str | Path) -> Path:
    """Validate an output structure file before expensive work: a format known by extension
    (``.sdf`` or any ASE-writable one) and a creatable folder. Returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".sdf":
        from ase.io.formats import filetype, ioformats

        try:
            fmt = "extxyz" if path.suffix.lower() in (".xyz", ".extxyz") else filetype(str(path), read=False)
        except Exception:
            fmt = None
        if fmt is None or fmt not in ioformats or not ioformats[fmt].can_write:
            raise ReadError(f"cannot write structures to '{path}': unknown format (use .xyz, .extxyz, .sdf, .cif, .traj)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReadError(f"cannot create the folder of '{path}': {exc}") from None
    return path


def describe(atoms: Atoms, index: int) -> str:
    """Where a structure came from, for error messages."""
    src = atoms.info.get("source")
    return f"structure {index} ({src})" if src else f"structure {index}"


def check_structures(frames: Sequence[Atoms], elements: Sequence[str] | None = None) -> None:
    """Reject structures the models cannot take, naming the structure and the problem.

    Checks: at least one atom and at most :data:`MAX_ATOMS` (100,000) atoms; finite positions
    (and cell for periodic structures) within :data:`MAX_COORDINATE` Å; a periodic cell of
    non-zero volume; no two atoms closer
    than :data:`MIN_DISTANCE` Å (periodic images included); elements among ``elements`` when
    given. Time and memory are linear in the number of atoms.
    """
    from atomarch.data.neighbors import neighbor_list

    allowed = set(elements) if elements is not None else None
    for k, atoms in enumerate(frames):
        if not isinstance(atoms, Atoms):
            raise StructureError(f"structure {k} is a {type(atoms).__name__}, not ase.Atoms")
        where = describe(atoms, k)
        if len(atoms) == 0:
            raise StructureError(f"{where} is empty (no atoms)")
        if len(atoms) > MAX_ATOMS:
            raise StructureError(f"{where} has {len(atoms):,} atoms, more than the limit of {MAX_ATOMS:,} "
                                 f"(atomarch.data.structures.MAX_ATOMS)")
        pos = atoms.get_positions()
        if not np.isfinite(pos).all():
            bad = int(np.where(~np.isfinite(pos).all(axis=1))[0][0])
            raise StructureError(f"{where} has non-finite (NaN/inf) coordinates at atom {bad}")
        if np.abs(pos).max() > MAX_COORDINATE:
            bad = int(np.abs(pos).max(axis=1).argmax())
            raise StructureError(f"{where} has a coordinate beyond ±{MAX_COORDINATE:g} Å at atom {bad} (corrupt file?)")
        pbc = np.asarray(atoms.get_pbc(), dtype=bool)
        cell = np.asarray(atoms.get_cell(), dtype=float)
        if pbc.any():
            if not np.isfinite(cell).all():
                raise StructureError(f"{where} has a non-finite cell")
            if np.abs(cell).max() > MAX_COORDINATE:
                raise StructureError(f"{where} has a cell vector beyond ±{MAX_COORDINATE:g} Å (corrupt file?)")
            if abs(np.linalg.det(cell)) < 1e-6:
                raise StructureError(f"{where} is periodic but its cell has zero volume")
        if allowed is not None:
            unknown = sorted(set(atoms.get_chemical_symbols()) - allowed)
            if unknown:
                raise StructureError(
                    f"{where} contains element {', '.join(unknown)} that the model was not trained on "
                    f"(supported: {', '.join(elements)})"
                )
        if len(atoms) > 1 or pbc.any():
            i, j, _, dist = neighbor_list(pos, cell, pbc, MIN_DISTANCE, return_distances=True)
            if len(i):
                raise StructureError(
                    f"{where} has overlapping atoms {int(i[0])} and {int(j[0])} "
                    f"({float(dist[0]):.3f} Å apart, minimum {MIN_DISTANCE} Å)"
                )
