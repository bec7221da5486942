"""Independent property oracles: physics codes that judge structures the model proposes.

An optimisation is never judged by the head it optimised. An *oracle* is any callable
``oracle(list_of_atoms) -> {property: np.ndarray [n]}`` (NaN where a structure could not be
computed); :class:`XTBOracle` is the molecular one (GFN2-xTB through ``tblite``). Results are
cached by a hash of the structure (atomic numbers + positions rounded to 10⁻⁵ Å), in memory and
optionally in a JSON file, so re-judging the same structures is free.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree

from atomarch.errors import AtomarchError


class Oracle(Protocol):
    """What every oracle provides (molecules: xTB; crystals: a universal potential)."""

    name: str
    properties: tuple[str, ...]

    def __call__(self, frames: Sequence[Atoms]) -> dict[str, np.ndarray]: ...


def structure_hash(atoms: Atoms) -> str:
    """Stable key of a structure: atomic numbers, positions (10⁻⁵ Å), cell and pbc."""
    h = hashlib.sha1()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.round(atoms.positions, 5).astype(np.float64).tobytes() + b"|")
    h.update(np.round(np.asarray(atoms.cell), 5).tobytes() + np.asarray(atoms.pbc, dtype=bool).tobytes())
    return h.hexdigest()


class ResultCache(dict):
    """Oracle results by structure key (``"sp:<hash>"`` / ``"relax:<hash>"`` → {property: value}),
    in memory and optionally in a JSON file: read at construction, written by :meth:`save`.

    Args:
        path: the JSON file (``~`` expanded); None keeps the results in memory only.

    Raises:
        AtomarchError: the file exists but is not a JSON object of results (it is left untouched).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__()
        self.path = Path(path).expanduser() if path else None
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise AtomarchError(f"oracle cache {self.path} is not valid JSON ({exc}); move it away to start afresh") from exc
            if not isinstance(data, dict):
                raise AtomarchError(f"oracle cache {self.path} holds a {type(data).__name__}, not a JSON object of results")
            self.update(data)

    def save(self) -> None:
        """Write the file atomically (a temporary file, then a rename), if a path was given."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self))
        tmp.replace(self.path)


class XTBOracle:
    """GFN2-xTB single points (optionally after a relaxation) of neutral molecules via ``tblite``.

    Properties (eV): ``xtb_gap`` (HOMO–LUMO gap), ``xtb_energy`` (total energy). Molecules with an
    odd electron count are computed as doublets. A failed SCF gives NaN.

    Args:
        relax: relax each structure with GFN2-xTB (ASE BFGS, ``fmax`` eV/Å) before the single point.
        cache: optional JSON file holding earlier results (read at start, written by :meth:`save`).
    """

    name = "GFN2-xTB"
    properties = ("xtb_gap", "xtb_energy")

    def __init__(self, relax: bool = False, fmax: float = 0.05, cache: str | Path | None = None) -> None:
        try:
            import tblite.interface  # noqa: F401
        except ImportError as exc:
            raise AtomarchError("the xTB oracle needs the tblite package: pip install tblite (or atomarch[xtb])") from exc
        self.relax, self.fmax = relax, fmax
        self._cache = ResultCache(cache)

    def _key(self, atoms: Atoms) -> str:
        return f"{'relax' if self.relax else 'sp'}:{structure_hash(atoms)}"

    def single_point(self, atoms: Atoms) -> dict[str, float]:
        """``{"xtb_gap": eV, "xtb_energy": eV}`` of one structure (NaN on failure)."""
        from tblite.interface import Calculator

        nan = {"xtb_gap": float("nan"), "xtb_energy": float("nan")}
        if len(atoms) == 0:
            return nan
        work = atoms
        if self.relax:
            from atomarch.chem.embed import xtb_relax

            work = xtb_relax(atoms, fmax=self.fmax)
        electrons = int(np.sum(work.numbers))
        try:
            calc = Calculator("GFN2-xTB", work.numbers, work.positions / Bohr, uhf=electrons % 2)
            calc.set("verbosity", 0)
            res = calc.singlepoint()
        except Exception:  # SCF not converged, overlapping atoms, ...
            return nan
        eps = np.asarray(res.get("orbital-energies")) * Hartree
        occ = np.asarray(res.get("orbital-occupations"))
        filled, empty = eps[occ > 1e-3], eps[occ < 1e-3]
        gap = float(empty.min() - filled.max()) if len(filled) and len(empty) else float("nan")
        return {"xtb_gap": gap, "xtb_energy": float(res.get("energy")) * Hartree}

    def __call__(self, frames: Sequence[Atoms]) -> dict[str, np.ndarray]:
        out = {p: np.full(len(frames), np.nan) for p in self.properties}
        for k, atoms in enumerate(frames):
            key = self._key(atoms)
            if key not in self._cache:
                self._cache[key] = self.single_point(atoms)
            for p in self.properties:
                out[p][k] = self._cache[key][p]
        return out

    def save(self) -> None:
        """Write the cache file (atomically), if one was given."""
        self._cache.save()


CHGNET_REFERENCES = Path(__file__).with_name("data") / "chgnet_elemental_references.json"
"""Energy per atom (eV) of every element's lowest-energy reference structure under the
pretrained CHGNet, written by ``python benchmarks/chgnet_references.py`` (see there and
:func:`elemental_reference_candidates` for how the candidates are built)."""


class CHGNetOracle:
    """The pretrained CHGNet universal potential (shipped inside the ``chgnet`` wheel; no
    download at run time) as an independent judge of crystals.

    Properties (eV/atom): ``chgnet_energy`` (energy per atom) and ``chgnet_formation_energy``
    (energy per atom minus the composition-weighted elemental reference energies of
    :data:`CHGNET_REFERENCES`, computed with the same model; NaN for an element without a
    reference). Structures are cached by hash, predicted in batches, with a progress bar.

    Args:
        relax: relax positions and cell with CHGNet (FIRE, ``fmax`` eV/Å, at most ``steps``)
            before predicting; each result then also carries ``chgnet_relax_delta`` (relaxed −
            unrelaxed energy per atom).
        references: element → reference energy per atom (default: the shipped table).
        batch_size: structures per CHGNet batch.
        cache: optional JSON file holding earlier results (read at start, written by :meth:`save`).
    """

    name = "CHGNet"
    judges = {"formation_energy_per_atom": "chgnet_formation_energy", "energy_per_atom": "chgnet_energy"}
    """Dataset properties (MP-20, Carbon-24) → the column of this oracle that judges them."""

    def __init__(self, relax: bool = False, fmax: float = 0.1, steps: int = 100,
                 references: dict[str, float] | None = None, batch_size: int = 16, progress: bool = True,
                 cache: str | Path | None = None) -> None:
        try:
            from chgnet.model import CHGNet
        except ImportError as exc:
            raise AtomarchError("the CHGNet oracle needs the chgnet package: pip install chgnet (or atomarch[crystal])") from exc
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = CHGNet.load(verbose=False)
        self.relax, self.fmax, self.steps = relax, fmax, steps
        self.batch_size, self.progress = batch_size, progress
        if references is None and CHGNET_REFERENCES.is_file():
            references = {k: float(v) for k, v in json.loads(CHGNET_REFERENCES.read_text())["energy_per_atom"].items()}
        self.references = references or {}
        self.properties = ("chgnet_energy", "chgnet_formation_energy") + (("chgnet_relax_delta",) if relax else ())
        self._cache = ResultCache(cache)

    def energies(self, frames: Sequence[Atoms]) -> np.ndarray:
        """CHGNet energy per atom [n] (eV/atom) of periodic structures (NaN where it fails)."""
        import warnings

        from pymatgen.io.ase import AseAtomsAdaptor
        from tqdm.auto import tqdm

        out = np.full(len(frames), np.nan)
        idx = [k for k, a in enumerate(frames) if len(a) and np.asarray(a.pbc).all()]
        bar = tqdm(total=len(idx), desc="CHGNet", unit="structure", disable=not self.progress or len(idx) < 32)
        for start in range(0, len(idx), self.batch_size):
            chunk = idx[start : start + self.batch_size]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    structures = [AseAtomsAdaptor.get_structure(frames[k]) for k in chunk]
                    preds = self.model.predict_structure(structures, task="e", batch_size=self.batch_size)
                for k, p in zip(chunk, preds if isinstance(preds, list) else [preds]):
                    out[k] = float(p["e"])
            except Exception:  # one bad structure (e.g. no neighbours in the cutoff): retry one by one
                for k in chunk:
                    try:
                        out[k] = float(self.model.predict_structure(AseAtomsAdaptor.get_structure(frames[k]), task="e")["e"])
                    except Exception:
                        pass
            bar.update(len(chunk))
        bar.close()
        return out

    def relaxed(self, atoms: Atoms) -> tuple[Atoms, float, float]:
        """(relaxed structure, energy per atom before, after) with CHGNet (positions + cell)."""
        import warnings

        from chgnet.model import StructOptimizer
        from pymatgen.io.ase import AseAtomsAdaptor

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = StructOptimizer(model=self.model)
            res = opt.relax(AseAtomsAdaptor.get_structure(atoms), fmax=self.fmax, steps=self.steps, verbose=False)
        traj = res["trajectory"]
        n = len(atoms)
        relaxed = AseAtomsAdaptor.get_atoms(res["final_structure"])
        relaxed.pbc = True
        return relaxed, float(traj.energies[0]) / n, float(traj.energies[-1]) / n

    def formation_energy(self, atoms: Atoms, energy_per_atom: float) -> float:
        """Energy per atom minus the composition-weighted elemental references (eV/atom)."""
        symbols = atoms.get_chemical_symbols()
        if any(s not in self.references for s in symbols):
            return float("nan")
        return float(energy_per_atom - np.mean([self.references[s] for s in symbols]))

    def __call__(self, frames: Sequence[Atoms]) -> dict[str, np.ndarray]:
        keys = [f"{'relax' if self.relax else 'sp'}:{structure_hash(a)}" for a in frames]
        todo = [k for k, key in enumerate(keys) if key not in self._cache]
        if todo:
            work = [frames[k] for k in todo]
            delta = np.zeros(len(work))
            if self.relax:
                relaxed = []
                for j, atoms in enumerate(work):
                    try:
                        r, before, after = self.relaxed(atoms)
                        relaxed.append(r)
                        delta[j] = after - before
                    except Exception:
                        relaxed.append(Atoms())
                        delta[j] = np.nan
                work = relaxed
            energy = self.energies(work)
            for j, k in enumerate(todo):
                rec = {"chgnet_energy": float(energy[j]), "chgnet_formation_energy": self.formation_energy(work[j], energy[j])
                       if np.isfinite(energy[j]) else float("nan")}
                if self.relax:
                    rec["chgnet_relax_delta"] = float(delta[j])
                self._cache[keys[k]] = rec
        return {p: np.array([self._cache[key][p] for key in keys]) for p in self.properties}

    def save(self) -> None:
        """Write the cache file (atomically), if one was given."""
        self._cache.save()


def elemental_reference_candidates(symbol: str) -> list[Atoms]:
    """Candidate elemental structures for a reference energy: ASE's reference state of the
    element where it is a simple lattice, fcc / bcc / hcp / simple-cubic / diamond prototypes at
    a volume from covalent radii, and for H, N, O, F, Cl, Br, I the diatomic molecule in a 12 Å
    periodic box. The reference energy is the lowest CHGNet energy per atom over the relaxed
    candidates (and over the element's own crystals in a dataset, if given to the builder)."""
    from ase.build import bulk
    from ase.data import atomic_numbers, covalent_radii, reference_states

    z = atomic_numbers[symbol]
    d = max(2.2, 2.0 * covalent_radii[z])  # nearest-neighbour distance (Å)
    if symbol in ("H", "N", "O", "F", "Cl", "Br", "I"):  # molecular elements: the diatomic in a box
        return [Atoms(symbol * 2, positions=[[0, 0, 0], [2.0 * covalent_radii[z], 0, 0]], cell=np.eye(3) * 12.0, pbc=True)]
    out: list[Atoms] = []
    ref = reference_states[z] or {}
    if ref.get("symmetry") in ("fcc", "bcc", "hcp", "diamond", "sc"):
        try:
            out.append(bulk(symbol, ref["symmetry"], a=ref["a"], **({"covera": ref["c/a"]} if "c/a" in ref else {})))
        except Exception:
            pass
    for kind, a in (("fcc", d * 2**0.5), ("bcc", d * 2 / 3**0.5), ("hcp", d), ("sc", d), ("diamond", d * 4 / 3**0.5)):
        try:
            out.append(bulk(symbol, kind, a=a))
        except Exception:
            pass
    return [a for a in out if a.get_volume() / len(a) >= 5.0]  # no absurdly dense cells (huge CHGNet graphs)
