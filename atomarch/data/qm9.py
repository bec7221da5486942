"""QM9 (130,831 molecules, B3LYP/6-31G(2df,p)) from the ``qm9pack`` package.

``import qm9pack`` needs ``pkg_resources`` (gone in setuptools >= 81), so the package's data
folder is located with :func:`importlib.util.find_spec` and its CSVs are read with pandas.
Energies are converted to eV; the dipole stays in Debye, the polarizability in bohr^3 and the
heat capacity in cal/(mol K). The parsed dataset is cached as packed tensors.

The split is the one of EDM / Cormorant: the 3,054 uncharacterized molecules are absent,
the remaining 130,831 (sorted by QM9 index) are permuted with ``np.random.seed(seed)`` and cut
into 100,000 train / 17,748 val / 13,083 test. The split's indices (positions in the packed
dataset and QM9 ids) are written next to the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch

from atomarch.data.datasets import PackedStructures
from atomarch.errors import ReadError

HARTREE_TO_EV = 27.211386245988
CACHE_VERSION = 1
N_MOLECULES = 130_831

#: atomarch name -> (qm9pack column, factor to physical units)
COLUMNS = {
    "gap": ("HOMO_LUMO_gap_au", HARTREE_TO_EV),
    "homo": ("HOMO_au", HARTREE_TO_EV),
    "lumo": ("LUMO_au", HARTREE_TO_EV),
    "U0": ("InternalEnergy_0K_au", HARTREE_TO_EV),
    "mu": ("Dipole_debye", 1.0),
    "alpha": ("Polarizability_bohr3", 1.0),
    "Cv": ("Heatcapacity_Cv_cal_mol_K", 1.0),
}
UNITS = {"gap": "eV", "homo": "eV", "lumo": "eV", "U0": "eV", "mu": "D", "alpha": "bohr^3", "Cv": "cal/mol/K"}
SYMBOL_TO_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}


def qm9pack_data_dir() -> Path:
    """The folder holding qm9pack's CSVs (without importing qm9pack)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ReadError("the 'qm9pack' package is not installed (pip install qm9pack)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (path / "qm9_part1.csv").is_file():
        raise ReadError(f"qm9pack is installed but its data files are missing under {path}")
    return path


def _parse_xyz(cell: str) -> np.ndarray:
    # cells look like "[[-0.01,1.08,0.],[...]]"; tokens such as "0." are not strict JSON
    flat = cell.replace("[", "").replace("]", "").split(",")
    return np.asarray(flat, dtype=np.float64).reshape(-1, 3)


def _parse_elements(cell: str) -> list[int]:
    return [SYMBOL_TO_Z[s.strip().strip("'\"")] for s in cell.strip("[]").split(",")]


def parse_qm9(verbose: bool = True) -> PackedStructures:
    """Parse the qm9pack CSVs into :class:`PackedStructures` (sorted by QM9 index)."""
    import pandas as pd

    folder = qm9pack_data_dir()
    t0 = time.time()
    usecols = ["Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang"] + [c for c, _ in COLUMNS.values()]
    frames = [pd.read_csv(folder / f"qm9_part{k}.csv", usecols=usecols) for k in (1, 2, 3)]
    df = pd.concat(frames, ignore_index=True).sort_values("Index").reset_index(drop=True)
    if verbose:
        print(f"[atomarch] read {len(df)} QM9 rows from {folder} in {time.time() - t0:.1f} s", flush=True)
    z, pos = [], []
    for k, (el, xyz, n) in enumerate(zip(df["Elements"], df["XYZ_Ang"], df["N_atoms"])):
        zz = _parse_elements(el)
        xx = _parse_xyz(xyz)
        if len(zz) != n or xx.shape[0] != n:
            raise ReadError(f"QM9 molecule {df['Index'][k]}: {n} atoms but {len(zz)} elements / {xx.shape[0]} positions")
        z.append(zz)
        pos.append(xx)
    natoms = torch.tensor(df["N_atoms"].to_numpy(), dtype=torch.long)
    ptr = torch.zeros(len(df) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(natoms, 0)
    y = np.stack([df[col].to_numpy(dtype=np.float64) * f for col, f in COLUMNS.values()], axis=1)
    packed = PackedStructures(
        z=torch.as_tensor(np.concatenate(z), dtype=torch.uint8),
        pos=torch.as_tensor(np.concatenate(pos), dtype=torch.float32),
        ptr=ptr,
        cell=torch.zeros(len(df), 3, 3),
        pbc=torch.zeros(len(df), 3, dtype=torch.bool),
        y=torch.as_tensor(y, dtype=torch.float32),
        properties=list(COLUMNS),
        ids=torch.as_tensor(df["Index"].to_numpy().copy(), dtype=torch.long),
        text=df["SMILES"].astype(str).tolist(),
    )
    if verbose:
        print(f"[atomarch] parsed {len(packed)} molecules in {time.time() - t0:.1f} s", flush=True)
    return packed


def cache_key() -> str:
    """Hash of the settings the cache depends on (cache version, source file sizes)."""
    folder = qm9pack_data_dir()
    sizes = [(p.name, p.stat().st_size) for p in sorted(folder.glob("qm9_part*.csv"))]
    blob = json.dumps({"v": CACHE_VERSION, "files": sizes, "columns": list(COLUMNS)})
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def load_qm9(cache_dir: str | Path = "~/.cache/atomarch", verbose: bool = True) -> PackedStructures:
    """All 130,831 QM9 molecules, parsed once and then loaded from ``cache_dir``."""
    cache_dir = Path(cache_dir).expanduser()
    path = cache_dir / f"qm9-{cache_key()}.pt"
    if path.is_file():
        return PackedStructures.load(path)
    packed = parse_qm9(verbose=verbose)
    packed.save(path)
    if verbose:
        print(f"[atomarch] cached QM9 at {path}", flush=True)
    return packed


def qm9_split(packed: PackedStructures, seed: int = 0, cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """EDM/Cormorant split: positions into ``packed`` for train (100,000) / val / test (10 %).

    The positions and the QM9 ids of each split are written to
    ``<cache_dir>/qm9-split-seed<seed>.npz`` so later models use the same test molecules.
    """
    n = len(packed)
    n_train, n_test = 100_000, int(0.1 * n)
    n_val = n - n_train - n_test
    if n_val <= 0:
        raise ReadError(f"QM9 has {n} molecules; the EDM split needs more than {n_train + n_test}")
    perm = np.random.RandomState(seed).permutation(n)
    split = {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}
    if cache_dir is not None:
        path = Path(cache_dir).expanduser() / f"qm9-split-seed{seed}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        ids = packed.ids.numpy()
        np.savez(path, **split, **{f"{k}_qm9_index": ids[v] for k, v in split.items()})
    return split
