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

Generation metrics (CDVAE's ``scripts/compute_metrics.py`` and ``scripts/eval_utils.py``, read
at commit f857f59 of github.com/txie-93/cdvae; the code here is our own):

* **Fingerprints**: a crystal's structure fingerprint is the mean over its sites of matminer's
  ``CrystalNNFingerprint.from_preset("ops")`` (61 numbers); its composition fingerprint is
  matminer's ``ElementProperty.from_preset("magpie")`` (132 numbers), standardised with CDVAE's
  *fixed* means and standard deviations (``data/cdvae_composition_scaler.json``, statistics of
  MP-20) and NaN set to 0. A crystal whose CrystalNN fingerprint raises has no fingerprint and
  counts as invalid (as in CDVAE). Fingerprints are cached per structure (:class:`FingerprintCache`).
* **COV-R / COV-P** (:func:`coverage`): Euclidean distances between fingerprints; a reference
  crystal is *recalled* when some generated crystal lies within ``struc`` in structure *and* some
  (possibly another) within ``comp`` in composition; a generated crystal is *precise* likewise
  w.r.t. the reference set. Precision is divided by all generated crystals given, those without
  a fingerprint included. CDVAE's code passes *all* generated crystals (valid or not) here, not
  only the valid ones; :func:`atomarch.evaluation.evaluate_model` reports both.
* **Property statistics** (:func:`property_wasserstein`): 1D Wasserstein distances of the density
  (g/cm³) and of the number of distinct elements, valid generated crystals vs the reference split.
* **Uniqueness / novelty** (:func:`uniqueness`, :func:`novelty`; not part of CDVAE's table):
  StructureMatcher equality under the tolerances above, comparing only crystals of the same
  reduced formula and the same number of sites in the matcher's primitive cell (pairs that
  differ in either never match), each structure reduced once.

pymatgen and smact (and matminer for fingerprints) are imported on first use
(``pip install atomarch[crystal]``).
"""

from __future__ import annotations

import itertools
import json
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path

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


def counts_valid(symbols: Sequence[str], counts: Sequence[int]) -> bool:
    """:func:`composition_valid` of a composition given as element symbols and atom counts
    (elements with count 0 are ignored; an empty composition is not valid)."""
    kept = sorted((str(s), int(c)) for s, c in zip(symbols, counts) if int(c) > 0)
    if not kept:
        return False
    return _composition_valid(tuple(s for s, _ in kept), tuple(c for _, c in kept))


def composition_valid(atoms: Atoms) -> bool:
    """SMACT charge neutrality + Pauling electronegativity test (see the module docstring)."""
    symbols, counts = np.unique(atoms.get_chemical_symbols(), return_counts=True)
    return counts_valid(symbols.tolist(), counts.tolist())


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


# ----------------------------------------------------------------------------- generation
CRYSTAL_EVALUATOR_VERSION = "crystal-v1"
"""Version of the crystal evaluation (changes when a metric's definition changes)."""

COV_CUTOFFS: dict[str, dict[str, float]] = {
    # CDVAE's per-dataset COV thresholds: dict ``COV_Cutoffs`` in scripts/compute_metrics.py of
    # github.com/txie-93/cdvae (commit f857f59), keyed there 'perovskite', 'carbon', 'mp20'.
    # ``struc``: CrystalNN fingerprint distance; ``comp``: standardised Magpie distance.
    "perov5": {"struc": 0.2, "comp": 4.0},
    "carbon24": {"struc": 0.2, "comp": 4.0},
    "mp20": {"struc": 0.4, "comp": 10.0},
}

CDVAE_PUBLISHED: dict[str, dict[str, float | None]] = {
    # CDVAE's rows in Xie et al. 2022 (ICLR), Table 2 (reconstruction) and Table 3 (generation);
    # shares as fractions, None where the paper gives "-" (Carbon-24 is one element).
    "perov5": {"match_rate": 0.9752, "rms_mean": 0.0156, "structural_validity": 1.0, "compositional_validity": 0.9859,
               "cov_recall": 0.9945, "cov_precision": 0.9846, "wasserstein_density": 0.1258,
               "wasserstein_n_elements": 0.0628},
    "carbon24": {"match_rate": 0.5522, "rms_mean": 0.1251, "structural_validity": 1.0, "compositional_validity": None,
                 "cov_recall": 0.9980, "cov_precision": 0.8308, "wasserstein_density": 0.1407,
                 "wasserstein_n_elements": None},
    "mp20": {"match_rate": 0.4543, "rms_mean": 0.0356, "structural_validity": 1.0, "compositional_validity": 0.8670,
             "cov_recall": 0.9915, "cov_precision": 0.9949, "wasserstein_density": 0.6875,
             "wasserstein_n_elements": 1.432},
}

FINGERPRINT_VERSION = "v1"
"""Part of the fingerprint cache's file name: bump when the fingerprint definition changes."""
AMU_PER_A3_IN_G_PER_CM3 = 1.66053906660
"""1 u/Å³ in g/cm³."""


@lru_cache(maxsize=1)
def _crystalnn_fingerprint():
    from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

    return CrystalNNFingerprint.from_preset("ops")


@lru_cache(maxsize=1)
def _magpie():
    from matminer.featurizers.composition.composite import ElementProperty

    # no imputation: missing element data stays NaN and becomes 0 after scaling, as in CDVAE
    return ElementProperty.from_preset("magpie", impute_nan=False)


def structure_fingerprint(atoms: Atoms) -> np.ndarray | None:
    """Mean over sites of matminer's CrystalNN ``ops`` site fingerprint [61], or None when
    CrystalNN fails (raises, or gives a non-finite value) or the structure is empty."""
    if len(atoms) == 0:
        return None
    try:
        structure = to_pymatgen(atoms)
        featurizer = _crystalnn_fingerprint()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # CrystalNN warns about missing radii etc.
            sites = [featurizer.featurize(structure, i) for i in range(len(structure))]
    except Exception:  # CrystalNN raises on degenerate cells / isolated sites: a missing fingerprint
        return None
    fp = np.asarray(sites, dtype=float).mean(axis=0)
    return fp if np.isfinite(fp).all() else None


@lru_cache(maxsize=65536)
def _magpie_of(counts: tuple[tuple[str, int], ...]) -> np.ndarray:
    from pymatgen.core import Composition

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(_magpie().featurize(Composition(dict(counts))), dtype=float)


def composition_fingerprint(atoms: Atoms) -> np.ndarray | None:
    """matminer's Magpie composition features [132] (unscaled; NaN where element data is
    missing), or None for an empty structure."""
    if len(atoms) == 0:
        return None
    symbols, counts = np.unique(atoms.get_chemical_symbols(), return_counts=True)
    return _magpie_of(tuple((str(s), int(c)) for s, c in zip(symbols, counts))).copy()


@lru_cache(maxsize=1)
def composition_scaler() -> tuple[np.ndarray, np.ndarray]:
    """CDVAE's fixed means and standard deviations [132] of the Magpie features
    (``data/cdvae_composition_scaler.json``: source and licence inside)."""
    data = json.loads((Path(__file__).with_name("data") / "cdvae_composition_scaler.json").read_text())
    return np.asarray(data["means"], dtype=float), np.asarray(data["stds"], dtype=float)


def scale_composition(raw: np.ndarray) -> np.ndarray:
    """Magpie features [n, 132] → CDVAE's standardised composition fingerprints (NaN → 0)."""
    means, stds = composition_scaler()
    with np.errstate(invalid="ignore"):
        x = (np.asarray(raw, dtype=float) - means) / stds
    return np.where(np.isnan(x), 0.0, x)


class FingerprintCache:
    """CrystalNN structure fingerprints keyed by :func:`atomarch.chem.oracles.structure_hash`, in a
    JSON-lines file (one ``{"k": hash, "s": [61 floats] | null}`` a line, null = CrystalNN failed)
    that grows as structures are fingerprinted, so a killed run keeps what it had computed.
    ``path=None``: in memory only."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path).expanduser()
        self.data: dict[str, list[float] | None] = {}
        self._pending: list[str] = []
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                    self.data[str(row["k"])] = row["s"]
                except (ValueError, KeyError, TypeError):  # a line cut short by a killed run
                    continue

    @classmethod
    def in_dir(cls, cache_dir: str | Path) -> FingerprintCache:
        """The shared cache file under ``cache_dir`` (named by fingerprint and matminer version)."""
        import matminer

        version = ".".join(str(getattr(matminer, "__version__", "0")).split(".")[:2])
        return cls(Path(cache_dir).expanduser() / f"crystal-fingerprints-{FINGERPRINT_VERSION}-matminer{version}.jsonl")

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str) -> np.ndarray | None:
        value = self.data[key]
        return None if value is None else np.asarray(value, dtype=float)

    def put(self, key: str, fp: np.ndarray | None) -> None:
        self.data[key] = None if fp is None else [float(v) for v in fp]
        self._pending.append(key)
        if len(self._pending) >= 100:
            self.flush()

    def flush(self) -> None:
        if self.path is None or not self._pending:
            self._pending.clear()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lead = ""
        if self.path.is_file() and self.path.stat().st_size:
            with self.path.open("rb") as f:
                f.seek(-1, 2)
                lead = "" if f.read(1) == b"\n" else "\n"  # the last line was cut short
        with self.path.open("a") as f:
            f.write(lead + "".join(json.dumps({"k": k, "s": self.data[k]}) + "\n" for k in self._pending))
        self._pending.clear()


@dataclass
class CrystalFingerprints:
    """Fingerprints of ``n`` crystals: ``structure`` [n, 61] (NaN rows: missing), ``composition``
    [n, 132] raw Magpie features (NaN rows for empty structures), ``ok`` [n] (both present),
    ``seconds`` spent computing (cache hits cost nothing) and ``computed`` (structures that
    were not in the cache)."""

    structure: np.ndarray
    composition: np.ndarray
    ok: np.ndarray
    seconds: float = 0.0
    computed: int = 0

    def __len__(self) -> int:
        return len(self.ok)

    def subset(self, mask: np.ndarray) -> CrystalFingerprints:
        mask = np.asarray(mask, dtype=bool)
        return CrystalFingerprints(self.structure[mask], self.composition[mask], self.ok[mask])


def crystal_fingerprints(frames: Sequence[Atoms], cache: FingerprintCache | None = None, progress: bool = True,
                         desc: str = "CrystalNN fingerprints") -> CrystalFingerprints:
    """Structure and composition fingerprints of ``frames`` (see the module docstring); the
    CrystalNN ones (~0.1-1 s a crystal) are read from and written to ``cache``."""
    from tqdm.auto import tqdm

    from atomarch.chem.oracles import structure_hash

    cache = cache if cache is not None else FingerprintCache(None)
    n = len(frames)
    dim_s, dim_c = len(_crystalnn_fingerprint().feature_labels()), len(_magpie().feature_labels())
    struc = np.full((n, dim_s), np.nan)
    comp = np.full((n, dim_c), np.nan)
    ok = np.zeros(n, dtype=bool)
    t0, computed = time.perf_counter(), 0
    try:
        for i, atoms in enumerate(tqdm(frames, desc=desc, disable=not progress or n < 2, mininterval=2.0)):
            c = composition_fingerprint(atoms)
            if c is not None:
                comp[i] = c
            key = structure_hash(atoms)
            if key in cache:
                s = cache.get(key)
            else:
                s = structure_fingerprint(atoms)
                cache.put(key, s)
                computed += 1
            if s is not None and len(s) == dim_s:
                struc[i] = s
            ok[i] = s is not None and c is not None
    finally:
        cache.flush()
    return CrystalFingerprints(struc, comp, ok, time.perf_counter() - t0, computed)


def coverage(generated: CrystalFingerprints, reference: CrystalFingerprints, struc_cutoff: float, comp_cutoff: float,
             n_generated: int | None = None, chunk: int = 1024) -> dict:
    """CDVAE's COV-R / COV-P (see the module docstring) and the mean nearest-neighbour
    distances (``amsd_*`` structure, ``amcd_*`` composition).

    Generated crystals without a fingerprint are left out of the distances but still count in
    the precision's denominator ``n_generated`` (default: all of ``generated``); reference
    crystals without one are left out (``n_reference`` counts those used)."""
    from scipy.spatial.distance import cdist

    n_gen = len(generated) if n_generated is None else int(n_generated)
    gs, gc = generated.structure[generated.ok], scale_composition(generated.composition[generated.ok])
    rs, rc = reference.structure[reference.ok], scale_composition(reference.composition[reference.ok])
    out = {"n_generated": n_gen, "n_generated_fingerprinted": len(gs), "n_reference": len(rs),
           "n_reference_missing": int((~reference.ok).sum()), "struc_cutoff": struc_cutoff, "comp_cutoff": comp_cutoff}
    if len(gs) == 0 or len(rs) == 0:
        return {**out, "cov_recall": 0.0, "cov_precision": 0.0, "amsd_recall": None, "amsd_precision": None,
                "amcd_recall": None, "amcd_precision": None}
    rec_s, rec_c = np.full(len(rs), np.inf), np.full(len(rs), np.inf)
    prec_s, prec_c = np.empty(len(gs)), np.empty(len(gs))
    for a in range(0, len(gs), chunk):
        ds, dc = cdist(gs[a : a + chunk], rs), cdist(gc[a : a + chunk], rc)
        prec_s[a : a + chunk], prec_c[a : a + chunk] = ds.min(axis=1), dc.min(axis=1)
        rec_s, rec_c = np.minimum(rec_s, ds.min(axis=0)), np.minimum(rec_c, dc.min(axis=0))
    recalled = (rec_s <= struc_cutoff) & (rec_c <= comp_cutoff)
    precise = (prec_s <= struc_cutoff) & (prec_c <= comp_cutoff)
    return {**out, "cov_recall": float(recalled.mean()), "cov_precision": float(precise.sum() / max(1, n_gen)),
            "amsd_recall": float(rec_s.mean()), "amsd_precision": float(prec_s.mean()),
            "amcd_recall": float(rec_c.mean()), "amcd_precision": float(prec_c.mean())}


@lru_cache(maxsize=256)
def _atomic_mass(number: int) -> float:
    from pymatgen.core import Element

    return float(Element.from_Z(number).atomic_mass)


def crystal_density(atoms: Atoms) -> float:
    """Density in g/cm³ (pymatgen's atomic masses, as ``Structure.density``)."""
    volume = abs(float(np.linalg.det(np.asarray(atoms.get_cell(), dtype=float))))
    mass = sum(_atomic_mass(int(z)) for z in atoms.numbers)
    return mass / volume * AMU_PER_A3_IN_G_PER_CM3 if volume > 0 else float("nan")


def property_wasserstein(generated: Sequence[Atoms], reference: Sequence[Atoms]) -> dict:
    """1D Wasserstein distances between ``generated`` and ``reference`` crystals of the density
    (g/cm³) and of the number of distinct elements (None when either set is empty)."""
    from scipy.stats import wasserstein_distance

    if len(generated) == 0 or len(reference) == 0:
        return {"wasserstein_density": None, "wasserstein_n_elements": None}
    dens = [np.array([crystal_density(a) for a in frames]) for frames in (generated, reference)]
    dens = [d[np.isfinite(d)] for d in dens]
    nel = [np.array([len(set(a.numbers.tolist())) for a in frames], dtype=float) for frames in (generated, reference)]
    wd = float(wasserstein_distance(*dens)) if all(len(d) for d in dens) else None
    return {"wasserstein_density": wd, "wasserstein_n_elements": float(wasserstein_distance(*nel))}


def formula_key(atoms: Atoms) -> tuple[tuple[str, int], ...]:
    """The reduced formula as sorted (element, count) pairs: crystals of different keys never
    match under StructureMatcher's default species comparison."""
    symbols, counts = np.unique(atoms.get_chemical_symbols(), return_counts=True)
    g = 0
    for c in counts:
        g = gcd(g, int(c))
    return tuple((str(s), int(c) // max(g, 1)) for s, c in zip(symbols, counts))


@lru_cache(maxsize=1)
def _matcher():
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(**MATCHER_TOLERANCES)


def reduced_structure(atoms: Atoms):
    """The structure StructureMatcher compares (Niggli cell of the primitive cell, its own
    reduction), computed once so that many comparisons skip it; None if it fails."""
    if len(atoms) == 0:
        return None
    matcher = _matcher()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return matcher._get_reduced_structure(to_pymatgen(atoms), matcher._primitive_cell, True)
    except Exception:
        return None


def _same(a, b) -> bool:
    """StructureMatcher equality of two :func:`reduced_structure` results (sites counts that
    differ never match: the matcher makes no supercells)."""
    if a is None or b is None or len(a) != len(b):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(_matcher().fit(a, b, skip_structure_reduction=True))
    except Exception:
        return False


class CrystalIndex:
    """Known crystals indexed by reduced formula: :meth:`find` compares a crystal only with the
    known crystals of its formula (each reduced once, on first need)."""

    def __init__(self, frames: Sequence[Atoms]) -> None:
        self.frames = list(frames)
        self.groups: dict[tuple, list[int]] = defaultdict(list)
        for i, atoms in enumerate(self.frames):
            if len(atoms):
                self.groups[formula_key(atoms)].append(i)
        self._reduced: dict[int, object] = {}
        self.comparisons = 0

    def __len__(self) -> int:
        return len(self.frames)

    def reduced(self, i: int):
        if i not in self._reduced:
            self._reduced[i] = reduced_structure(self.frames[i])
        return self._reduced[i]

    def find(self, atoms: Atoms, reduced=None) -> int | None:
        """Index of the first known crystal StructureMatcher-equal to ``atoms``, or None."""
        candidates = self.groups.get(formula_key(atoms), ()) if len(atoms) else ()
        if not candidates:
            return None
        r = reduced if reduced is not None else reduced_structure(atoms)
        if r is None:
            return None
        for i in candidates:
            ri = self.reduced(i)
            if ri is not None and len(ri) == len(r):
                self.comparisons += 1
                if _same(r, ri):
                    return i
        return None


def uniqueness(frames: Sequence[Atoms], reduced: Sequence | None = None, progress: bool = True) -> dict:
    """Share of ``frames`` not StructureMatcher-equal to any earlier one: ``{"n", "n_unique",
    "uniqueness", "unique": [bool], "comparisons", "seconds"}`` (empty structures are not
    unique; ``reduced``: their :func:`reduced_structure` results, if already computed)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    reduced = list(reduced) if reduced is not None else [None] * len(frames)
    seen: dict[tuple, list] = defaultdict(list)
    flags, comparisons = [], 0
    for i, atoms in enumerate(tqdm(frames, desc="uniqueness", disable=not progress or len(frames) < 2, mininterval=2.0)):
        if len(atoms) == 0:
            flags.append(False)
            continue
        r = reduced[i] if reduced[i] is not None else reduced_structure(atoms)
        group = seen[formula_key(atoms)]
        same = False
        for other in group:
            if r is not None and other is not None and len(other) == len(r):
                comparisons += 1
                if _same(r, other):
                    same = True
                    break
        group.append(r)
        flags.append(not same)
    n = len(frames)
    return {"n": n, "n_unique": int(sum(flags)), "uniqueness": float(np.mean(flags)) if n else None,
            "unique": flags, "comparisons": comparisons, "seconds": time.perf_counter() - t0}


def novelty(frames: Sequence[Atoms], known: CrystalIndex | Sequence[Atoms], reduced: Sequence | None = None,
            progress: bool = True) -> dict:
    """Share of ``frames`` that match no crystal of ``known`` (the training set):
    ``{"n", "n_novel", "novelty", "novel": [bool], "comparisons", "seconds"}``."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    index = known if isinstance(known, CrystalIndex) else CrystalIndex(known)
    before = index.comparisons
    reduced = list(reduced) if reduced is not None else [None] * len(frames)
    flags = []
    for i, atoms in enumerate(tqdm(frames, desc="novelty", disable=not progress or len(frames) < 2, mininterval=2.0)):
        flags.append(len(atoms) > 0 and index.find(atoms, reduced[i]) is None)
    n = len(frames)
    return {"n": n, "n_novel": int(sum(flags)), "novelty": float(np.mean(flags)) if n else None, "novel": flags,
            "comparisons": index.comparisons - before, "seconds": time.perf_counter() - t0}


def evaluate_crystal_generation(samples: Sequence[Atoms], reference: Sequence[Atoms], train: Sequence[Atoms] | None = None,
                                cutoffs: dict[str, float] | None = None, cache: FingerprintCache | None = None,
                                reference_fingerprints: CrystalFingerprints | None = None,
                                progress: bool = True) -> dict:
    """CDVAE's generation metrics of ``samples`` against the ``reference`` split, plus
    uniqueness and novelty (against ``train``, when given). ``cutoffs``: ``{"struc", "comp"}``
    (:data:`COV_CUTOFFS` of the dataset; None skips COV).

    Valid = structurally valid, compositionally valid and fingerprinted (CDVAE's ``valid``).
    COV follows CDVAE's code (all generated crystals with a fingerprint, precision over all
    generated); ``cov_valid_only`` restricts both to the valid ones. Property distances,
    uniqueness and novelty are over the valid samples. Lists (per sample) are returned under
    ``per_sample``."""
    n = len(samples)
    struct_ok = np.array([structure_valid(a) for a in samples], dtype=bool)
    comp_ok = np.array([composition_valid(a) if len(a) else False for a in samples], dtype=bool)
    fps = crystal_fingerprints(samples, cache, progress, desc="fingerprints (samples)")
    ref_fps = reference_fingerprints or crystal_fingerprints(reference, cache, progress, desc="fingerprints (reference)")
    valid = struct_ok & comp_ok & fps.ok
    m = max(1, n)
    out: dict = {"n": n, "evaluator_version": CRYSTAL_EVALUATOR_VERSION,
                 "structural_validity": float(struct_ok.sum() / m), "compositional_validity": float(comp_ok.sum() / m),
                 "validity": float(valid.sum() / m), "n_valid": int(valid.sum()),
                 "fingerprint_failures": int((~fps.ok).sum()), "reference_n": len(reference),
                 "reference_fingerprint_failures": int((~ref_fps.ok).sum()),
                 "seconds_fingerprints": fps.seconds + ref_fps.seconds,
                 "fingerprints_computed": fps.computed + ref_fps.computed}
    if cutoffs is not None:
        cov = coverage(fps, ref_fps, cutoffs["struc"], cutoffs["comp"])
        out.update({k: cov[k] for k in ("cov_recall", "cov_precision", "amsd_recall", "amsd_precision",
                                        "amcd_recall", "amcd_precision")})
        out["cov_cutoffs"] = {"struc": cutoffs["struc"], "comp": cutoffs["comp"]}
        cv = coverage(fps.subset(valid), ref_fps, cutoffs["struc"], cutoffs["comp"])
        out["cov_valid_only"] = {"cov_recall": cv["cov_recall"], "cov_precision": cv["cov_precision"]}
    valid_frames = [a for a, v in zip(samples, valid) if v]
    out.update(property_wasserstein(valid_frames, reference))
    reduced = [reduced_structure(a) for a in valid_frames]
    uni = uniqueness(valid_frames, reduced, progress)
    out.update(uniqueness=uni["uniqueness"], seconds_uniqueness=uni["seconds"])
    per_sample = {"structure_valid": struct_ok.tolist(), "composition_valid": comp_ok.tolist(),
                  "fingerprinted": fps.ok.tolist(), "valid": valid.tolist()}
    if train is not None:
        nov = novelty(valid_frames, train, reduced, progress)
        out.update(novelty=nov["novelty"], seconds_novelty=nov["seconds"], novelty_comparisons=nov["comparisons"])
        unique_novel = [u and v for u, v in zip(uni["unique"], nov["novel"])]
        out["valid_unique_novel"] = float(sum(unique_novel) / m)
    out["per_sample"] = per_sample
    return out


def space_group(atoms: Atoms) -> tuple[str, int] | None:
    """(Hermann-Mauguin symbol, number) by spglib at the symmetry decoder's tolerances, or None."""
    import spglib

    from atomarch.chem.symmetry import ANGLE_TOLERANCE, SYMPREC

    if len(atoms) == 0:
        return None
    try:
        cell = (np.asarray(atoms.get_cell(), dtype=float), atoms.get_scaled_positions(wrap=True), atoms.numbers)
        data = spglib.get_symmetry_dataset(cell, symprec=SYMPREC, angle_tolerance=ANGLE_TOLERANCE)
    except Exception:
        return None
    if data is None:
        return None
    return str(data.international), int(data.number)
