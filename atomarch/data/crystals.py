"""Crystal datasets in CDVAE's CSV format (Perov-5, Carbon-24, MP-20) as periodic ``ase.Atoms``.

Each CSV row holds a ``cif`` string (pymatgen, P1 setting) and per-structure properties. Rows
are parsed with pymatgen, Niggli-reduced like CDVAE (``niggli: true, primitive: false``) and
packed into a :class:`~atomarch.data.datasets.PackedStructures` cached under
``data.cache_dir`` (keyed by the source files' sizes and modification times), so that a second
load takes about a second. ``packed.text`` holds the ``material_id`` of every structure.

Splits (the files that ship in ``data.root``, see its README; every figure on them is
*reduced-train*: CDVAE trained on about 3x more):

* ``perov5``, ``carbon24``: only CDVAE's val and test files are here → train on ``val.csv``
  (a seeded 10 % of it held out for validation), report on the whole ``test.csv``;
* ``mp20``: train = pilot_train ∪ biternary_val ∪ pilot_val, test = biternary_test ∪ pilot_test
  (deduplicated by ``material_id``; a test material also in train is dropped from test), 10 %
  of train held out for validation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atomarch.errors import ConfigError, ReadError
from atomarch.registry import CRYSTAL_PROPERTIES

CRYSTAL_CACHE_VERSION = "v1"


@dataclass(frozen=True)
class CrystalDataset:
    """Where a crystal dataset's files are (relative to ``data.root``) and what it holds."""

    folder: str
    trainval: tuple[str, ...]
    test: tuple[str, ...]
    properties: dict[str, str]
    """Property columns → units."""


CRYSTAL_DATASETS: dict[str, CrystalDataset] = {
    "perov5": CrystalDataset("perov_5", ("val.csv",), ("test.csv",), CRYSTAL_PROPERTIES["perov5"]),
    "carbon24": CrystalDataset("carbon_24", ("val.csv",), ("test.csv",), CRYSTAL_PROPERTIES["carbon24"]),
    "mp20": CrystalDataset("mp_20", ("pilot_train.csv.gz", "biternary_val.csv.gz", "pilot_val.csv.gz"),
                           ("biternary_test.csv.gz", "pilot_test.csv.gz"), CRYSTAL_PROPERTIES["mp20"]),
}
VAL_FRACTION = 0.1
"""Share of the training pool held out (seeded by ``data.split_seed``) for validation."""


def dataset_spec(name: str) -> CrystalDataset:
    if name not in CRYSTAL_DATASETS:
        raise ConfigError(f"unknown crystal dataset {name!r} (known: {', '.join(CRYSTAL_DATASETS)})")
    return CRYSTAL_DATASETS[name]


def parse_cif(cif: str, where: str, niggli: bool = True):
    """One CIF string → periodic ``ase.Atoms`` (Niggli-reduced cell, Å). Raises
    :class:`ReadError` naming ``where`` for an unparsable CIF or one without a proper cell."""
    import warnings

    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen warns about rounded occupancies etc.
            structure = Structure.from_str(cif, fmt="cif")
    except Exception as exc:  # pymatgen raises ValueError, KeyError, IndexError... for bad CIFs
        raise ReadError(f"{where}: cannot parse the CIF ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not np.isfinite(structure.lattice.matrix).all() or abs(structure.lattice.volume) < 1e-3:
        raise ReadError(f"{where}: the CIF's cell has zero volume")
    if not np.isfinite(structure.frac_coords).all():
        raise ReadError(f"{where}: the CIF has non-finite (NaN/inf) fractional coordinates")
    if niggli:
        try:
            structure = structure.get_reduced_structure("niggli")
        except Exception as exc:  # degenerate cells make the reduction fail
            raise ReadError(f"{where}: the CIF's cell cannot be Niggli-reduced ({str(exc)[:120]})") from None
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.pbc = True
    return atoms


def read_crystal_csv(path: Path, properties: Sequence[str], progress: bool = True) -> list:
    """Every row of a CDVAE-format CSV as ``ase.Atoms`` with ``info`` = properties,
    ``material_id`` and ``source`` (``file:row``)."""
    import pandas as pd
    from tqdm.auto import tqdm

    if not path.is_file():
        raise ReadError(f"crystal data file not found: {path}")
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise ReadError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    missing = [c for c in ("material_id", "cif", *properties) if c not in df.columns]
    if missing:
        raise ReadError(f"{path} has no column {missing[0]!r} (has: {', '.join(map(str, df.columns))})")
    frames = []
    for k, row in enumerate(tqdm(df.itertuples(index=False), total=len(df), desc=f"parsing {path.name}",
                                 disable=not progress or len(df) < 500, mininterval=2.0)):
        where = f"{path}:{k} ({row.material_id})"
        atoms = parse_cif(row.cif, where)
        atoms.info.update({p: float(getattr(row, p)) for p in properties})
        atoms.info.update(material_id=str(row.material_id), source=f"{path.name}:{k}")
        frames.append(atoms)
    return frames


def _cache_key(root: Path, spec: CrystalDataset) -> str:
    h = hashlib.sha1(CRYSTAL_CACHE_VERSION.encode())
    for name in spec.trainval + spec.test:
        p = root / spec.folder / name
        st = p.stat() if p.is_file() else None
        h.update(f"{name}:{st.st_size if st else -1}:{int(st.st_mtime) if st else -1}".encode())
    return h.hexdigest()[:10]


def load_crystals(name: str, root: str | Path, cache_dir: str | Path, split_seed: int = 0, progress: bool = True):
    """The whole dataset ``name`` (packed, cached) and its split ``{"train", "val", "test"}``
    (index arrays into the packed structures; see the module docstring)."""
    from atomarch.data.datasets import PackedStructures

    spec = dataset_spec(name)
    root = Path(root).expanduser()
    if not (root / spec.folder).is_dir():
        raise ReadError(f"crystal dataset {name!r}: folder {root / spec.folder} not found (set data.root to the "
                        "folder holding perov_5/, carbon_24/, mp_20/)")
    cache = Path(cache_dir).expanduser() / f"crystals-{name}-{_cache_key(root, spec)}.pt"
    meta = cache.with_suffix(".json")
    props = list(spec.properties)
    if cache.is_file() and meta.is_file():
        packed = PackedStructures.load(cache)
        parts = json.loads(meta.read_text())
    else:
        frames, parts, seen = [], {"trainval": [], "test": []}, set()
        for group, files in (("trainval", spec.trainval), ("test", spec.test)):
            for fname in files:
                for atoms in read_crystal_csv(root / spec.folder / fname, props, progress):
                    mid = atoms.info["material_id"]
                    if mid in seen:  # overlapping files: keep the first (train before test)
                        continue
                    seen.add(mid)
                    parts[group].append(len(frames))
                    frames.append(atoms)
        packed = PackedStructures.from_atoms(frames, props)
        packed.text = [a.info["material_id"] for a in frames]
        packed.save(cache)
        meta.write_text(json.dumps(parts))
    trainval = np.asarray(parts["trainval"], dtype=np.int64)
    perm = np.random.RandomState(split_seed).permutation(len(trainval))
    n_val = int(round(VAL_FRACTION * len(trainval)))
    split = {"train": trainval[perm[n_val:]], "val": trainval[perm[:n_val]],
             "test": np.asarray(parts["test"], dtype=np.int64)}
    return packed, split
