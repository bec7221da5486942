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
  of train held out for validation;
* ``aflow_<property>`` (bulk_modulus, shear_modulus, debye_temperature, thermal_conductivity,
  thermal_expansion): the published train / val / test files as they are;
* ``mpts52`` (MPTS-52's val split), ``wbm`` (10,000 WBM structures): for maps and transfer,
  every structure in "train" after the seeded 10 % validation hold-out; no test split;
* ``formation_energy``: formation energy per atom from MP-20's training pool, MPTS-52 val and
  WBM (deduplicated by material id) for training, MP-20's test files for test.
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
    val: tuple[str, ...] = ()
    """Files of a published validation split (used as is); without them a seeded
    :data:`VAL_FRACTION` of ``trainval`` is held out."""


CRYSTAL_DATASETS: dict[str, CrystalDataset] = {
    "perov5": CrystalDataset("perov_5", ("val.csv",), ("test.csv",), CRYSTAL_PROPERTIES["perov5"]),
    "carbon24": CrystalDataset("carbon_24", ("val.csv",), ("test.csv",), CRYSTAL_PROPERTIES["carbon24"]),
    "mp20": CrystalDataset("mp_20", ("pilot_train.csv.gz", "biternary_val.csv.gz", "pilot_val.csv.gz"),
                           ("biternary_test.csv.gz", "pilot_test.csv.gz"), CRYSTAL_PROPERTIES["mp20"]),
    # map/transfer sets: MPTS-52's val split and the WBM sample are held whole in "train"
    "mpts52": CrystalDataset("mpts_52", ("val.csv.gz",), (), CRYSTAL_PROPERTIES["mpts52"]),
    "wbm": CrystalDataset("wbm", ("wbm_10k.csv.gz",), (), CRYSTAL_PROPERTIES["wbm"]),
    # formation energy from every labelled source here (learning curves): train = MP-20's training
    # pool + MPTS-52 val + WBM (deduplicated by material id, first kept), test = MP-20's test files
    # (a test material already in train is dropped from test)
    "formation_energy": CrystalDataset(".", ("mp_20/pilot_train.csv.gz", "mp_20/biternary_val.csv.gz",
                                             "mp_20/pilot_val.csv.gz", "mpts_52/val.csv.gz", "wbm/wbm_10k.csv.gz"),
                                       ("mp_20/biternary_test.csv.gz", "mp_20/pilot_test.csv.gz"),
                                       CRYSTAL_PROPERTIES["formation_energy"]),
    **{f"aflow_{p}": CrystalDataset(f"aflow/{p}", ("train.csv.gz",), ("test.csv.gz",),
                                    CRYSTAL_PROPERTIES[f"aflow_{p}"], val=("val.csv.gz",))
       for p in ("bulk_modulus", "shear_modulus", "debye_temperature", "thermal_conductivity", "thermal_expansion")},
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
    missing = [c for c in ("cif", *properties) if c not in df.columns]
    if missing:
        raise ReadError(f"{path} has no column {missing[0]!r} (has: {', '.join(map(str, df.columns))})")
    if "material_id" not in df.columns:  # AFLOW, WBM files: an id from the file and row
        stem = f"{path.parent.name}/{path.name.split('.')[0]}"
        df["material_id"] = [f"{stem}:{k}" for k in range(len(df))]
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
    """Hash of the cache version and the source files' names and contents (so a copy of the data
    on another machine, with other modification times, finds the same cache)."""
    h = hashlib.sha1(CRYSTAL_CACHE_VERSION.encode())
    for name in spec.trainval + spec.val + spec.test:
        p = root / spec.folder / name
        h.update(name.encode())
        h.update(hashlib.sha1(p.read_bytes()).digest() if p.is_file() else b"-")
    return h.hexdigest()[:10]


def dataset_cache(name: str, root: str | Path, cache_dir: str | Path) -> Path:
    """The packed-structures cache file of crystal dataset ``name``."""
    spec = dataset_spec(name)
    return Path(cache_dir).expanduser() / f"crystals-{name}-{_cache_key(Path(root).expanduser(), spec)}.pt"


def load_crystals(name: str, root: str | Path, cache_dir: str | Path, split_seed: int = 0, progress: bool = True):
    """The whole dataset ``name`` (packed, cached) and its split ``{"train", "val", "test"}``
    (index arrays into the packed structures; see the module docstring)."""
    from atomarch.data.datasets import PackedStructures

    spec = dataset_spec(name)
    root = Path(root).expanduser()
    if not (root / spec.folder).is_dir():
        raise ReadError(f"crystal dataset {name!r}: folder {root / spec.folder} not found (set data.root to the "
                        "folder holding perov_5/, carbon_24/, mp_20/)")
    cache = dataset_cache(name, root, cache_dir)
    meta = cache.with_suffix(".json")
    props = list(spec.properties)
    if cache.is_file() and meta.is_file():
        packed = PackedStructures.load(cache)
        parts = json.loads(meta.read_text())
    else:
        frames, parts, seen = [], {"trainval": [], "val": [], "test": []}, set()
        for group, files in (("trainval", spec.trainval), ("val", spec.val), ("test", spec.test)):
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
    test = np.asarray(parts["test"], dtype=np.int64)
    if parts.get("val"):  # a published validation split
        return packed, {"train": trainval, "val": np.asarray(parts["val"], dtype=np.int64), "test": test}
    perm = np.random.RandomState(split_seed).permutation(len(trainval))
    n_val = int(round(VAL_FRACTION * len(trainval)))
    split = {"train": trainval[perm[n_val:]], "val": trainval[perm[:n_val]], "test": test}
    return packed, split


# ---------------------------------------------------------------- symmetry-decoder targets
SKELETON_VERSION = "v2"
MAX_REPRESENTATIVES = 8
"""Equivalent representatives kept per orbit for the coordinate loss (the canonical one first)."""


def _perceive_row(atoms) -> dict | None:
    from atomarch.chem.symmetry import perceive
    from atomarch.errors import StructureError

    try:
        sk = perceive(atoms)
    except StructureError:
        return None
    return {"sg": sk.space_group, "orbits": [list(o) for o in sk.orbits], "lattice": list(sk.lattice),
            "free_sets": [[list(f) for f in reps[:MAX_REPRESENTATIVES]] for reps in sk.free_sets]}


def perception_workers(n_todo: int) -> int:
    """Processes for symmetry perception: one per CPU this process may use (at most 8), or the
    ``ATOMARCH_WORKERS`` environment variable; a single one for fewer than 400 structures
    (starting the workers costs more than they save)."""
    import os

    if n_todo < 400:
        return 1
    env = os.environ.get("ATOMARCH_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ConfigError(f"ATOMARCH_WORKERS must be a whole number, not {env!r}") from None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus))


def crystal_skeletons(packed, indices: Sequence[int], cache: Path | None = None, progress: bool = True,
                      workers: int | None = None) -> list[dict | None]:
    """The symmetry skeletons (:func:`atomarch.chem.symmetry.perceive`) of the structures
    ``indices`` of ``packed``, as JSON-able dicts (``sg``, ``orbits``, ``lattice``,
    ``free_sets``), indexed like ``packed`` (None where not perceived or not asked for).

    Perception takes 0.05–0.2 s a structure, so it runs in :func:`perception_workers`
    processes (``workers`` overrides) and the result is cached at ``cache`` (JSON), extended
    when later calls ask for structures it lacks."""
    from concurrent.futures import ProcessPoolExecutor
    from contextlib import nullcontext

    from tqdm.auto import tqdm

    rows: list[dict | None] = [None] * len(packed)
    done: set[int] = set()
    if cache is not None and cache.is_file():
        stored = json.loads(cache.read_text())
        if len(stored["rows"]) == len(packed):
            rows, done = stored["rows"], set(stored["done"])
    todo = sorted(set(int(k) for k in indices) - done)
    if todo:
        workers = perception_workers(len(todo)) if workers is None else max(1, int(workers))
        bar = tqdm(total=len(todo), desc=f"perceiving crystal symmetry ({workers} process{'es' * (workers > 1)})",
                   disable=not progress or len(todo) < 200, mininterval=2.0)
        frames = (packed.atoms(k) for k in todo)
        with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
            results = pool.map(_perceive_row, frames, chunksize=32) if pool else map(_perceive_row, frames)
            for k, row in zip(todo, results):
                rows[k] = row
                done.add(k)
                bar.update()
        bar.close()
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            tmp.write_text(json.dumps({"rows": rows, "done": sorted(done)}))
            tmp.replace(cache)
    return rows


def skeleton_targets(rows: Sequence[dict | None], elements: Sequence[str], max_length: int, max_count: int
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Token and continuous targets of the symmetry decoder for every structure.

    Returns:
        tokens [M, max_length] int16 (all zero: no target), and ``lattice`` [M, 6] (ln Å,
        radians; :func:`~atomarch.chem.symmetry.lattice_features`), ``free`` [M, O, R, 3]
        (fractional, each orbit's equivalent representatives), ``free_mask`` [M, O, R] bool,
        ``dof`` [M, O] (free parameters of each orbit) and ``counts`` [M, T] (atoms per element
        in the primitive cell), with O = (max_length - 2) // 2 orbits and R representatives.
    """
    from atomarch.chem.symmetry import SkeletonTokens, group_info, lattice_features, primitive_counts

    vocab = SkeletonTokens(elements)
    M, O, R = len(rows), (max_length - 2) // 2, MAX_REPRESENTATIVES
    tokens = np.zeros((M, max_length), dtype=np.int16)
    lattice = np.zeros((M, 6), dtype=np.float32)
    free = np.zeros((M, O, R, 3), dtype=np.float32)
    free_mask = np.zeros((M, O, R), dtype=bool)
    dof = np.zeros((M, O), dtype=np.int8)
    counts = np.zeros((M, len(elements)), dtype=np.int16)
    col = {el: k for k, el in enumerate(elements)}
    for m, row in enumerate(rows):
        if row is None:
            continue
        orbits = [tuple(o) for o in row["orbits"]]
        ids = vocab.encode(row["sg"], orbits, max_length)
        prim = primitive_counts(row["sg"], orbits)
        if ids is None or any(n > max_count for n in prim.values()):
            continue
        tokens[m, : len(ids)] = ids
        lattice[m] = lattice_features(row["lattice"])
        info = group_info(row["sg"])
        for j, ((_, letter), reps) in enumerate(zip(orbits, row["free_sets"])):
            dof[m, j] = info.positions[letter][1]
            for r, f in enumerate(reps[:R]):
                free[m, j, r, : len(f)] = f
                free_mask[m, j, r] = True
        for el, n in prim.items():
            counts[m, col[el]] = n
    return tokens, {"lattice": lattice, "free": free, "free_mask": free_mask, "dof": dof, "counts": counts}
