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
        self.cache_path = Path(cache) if cache else None
        self._cache: dict[str, dict[str, float]] = {}
        if self.cache_path is not None and self.cache_path.is_file():
            self._cache = json.loads(self.cache_path.read_text())

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
        if self.cache_path is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._cache))
        tmp.replace(self.cache_path)
