"""Property optimisation in latent space, with every recorded step decoded back to 3D.

``model.optimize(start, objective, ...)`` (see :meth:`atomarch.models.module.AtomarchModel.optimize`)
moves latents toward better property-head predictions:

* ``method="gradient"``: Adam on ``-objective(heads(z)) + prior_weight * |z|² / 2`` (the second
  term is the negative log-density of the N(0, I) prior: it keeps ``z`` where the decoder was
  trained);
* ``method="random"``: a gradient-free (1 + λ) evolution strategy — λ Gaussian perturbations
  per step, the best by the objective (minus the same prior penalty) is kept. With a callable
  objective on decoded structures (e.g. an oracle) it optimises what no head models.

Objectives are written ``{"gap": "max"}``, ``{"gap": "min"}``, ``{"gap": ("target", 7.0)}``,
weighted sums ``{"gap": ("max", 1.0), "homo": ("min", 0.5)}``, or on the command line
``gap:max``, ``gap:target=7.0``, ``gap:max,homo:min*0.5``. Terms are in standardized units
(property / its training std), so weights are comparable across properties.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms

from atomarch.errors import AtomarchError

MODES = ("max", "min", "target")


@dataclass
class Term:
    prop: str
    mode: str
    target: float | None = None
    weight: float = 1.0


def parse_objective(objective: Any, properties: Sequence[str]) -> list[Term]:
    """Objective (dict or ``"gap:max,homo:target=-6*0.5"`` string) → terms; clear errors for
    unknown properties or modes."""
    terms: list[Term] = []
    if isinstance(objective, str):
        items = {}
        for part in filter(None, (p.strip() for p in objective.split(","))):
            if ":" not in part:
                raise AtomarchError(f"objective term {part!r} must look like 'gap:max', 'gap:min' or 'gap:target=7.0'")
            prop, spec = part.split(":", 1)
            weight = 1.0
            if "*" in spec:
                spec, w = spec.split("*", 1)
                weight = _float(w, part)
            if spec.startswith("target="):
                items[prop.strip()] = ("target", _float(spec[7:], part), weight)
            else:
                items[prop.strip()] = (spec.strip(), weight)
        objective = items
    if not isinstance(objective, dict) or not objective:
        raise AtomarchError("objective must be a non-empty dict such as {'gap': 'max'} or a string such as 'gap:max'")
    for prop, spec in objective.items():
        if prop not in properties:
            raise AtomarchError(f"objective: the model has no property head {prop!r} (heads: {', '.join(properties)})")
        spec = (spec,) if isinstance(spec, str) else tuple(spec)
        mode = spec[0]
        if mode not in MODES:
            raise AtomarchError(f"objective: mode for {prop!r} must be max, min or target, got {mode!r}")
        if mode == "target":
            if len(spec) < 2:
                raise AtomarchError(f"objective: target mode for {prop!r} needs a value, e.g. ('target', 7.0)")
            terms.append(Term(prop, mode, float(spec[1]), float(spec[2]) if len(spec) > 2 else 1.0))
        else:
            terms.append(Term(prop, mode, None, float(spec[1]) if len(spec) > 1 else 1.0))
    return terms


def _float(text: str, part: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise AtomarchError(f"objective term {part!r}: {text!r} is not a number") from None


def objective_value(terms: Sequence[Term], pred: dict[str, torch.Tensor], std: dict[str, float]) -> torch.Tensor:
    """Score to maximise [n] from physical-unit predictions ``{prop: [n]}``."""
    total = 0.0
    for t in terms:
        y = pred[t.prop] / std[t.prop]
        if t.mode == "max":
            total = total + t.weight * y
        elif t.mode == "min":
            total = total - t.weight * y
        else:
            total = total - t.weight * (y - t.target / std[t.prop]) ** 2
    return total


@dataclass
class Trajectory:
    """A latent optimisation run of S starts, recorded at R steps.

    Attributes:
        steps: [R] optimisation step of each record (0 = the start).
        latents: [S, R, d] latent vectors.
        structures: S lists of R decoded molecules (``ase.Atoms``).
        predicted: ``{prop: [S, R]}`` head predictions (physical units) of the latents.
        valid: [S, R] the decoded structure passes the validity check (RDKit sanitization of
            its perceived bonds); invalid steps are kept and flagged, never dropped.
        smiles: S lists of R canonical SMILES: the decoded graph's (graph decoder), else the one
            perceived from 3D (None where invalid).
        oracle: ``{prop: [S, R]}`` oracle values once :meth:`judge` ran.
        objective: the parsed objective terms.
    """

    steps: list[int]
    latents: np.ndarray
    structures: list[list[Atoms]]
    predicted: dict[str, np.ndarray]
    valid: np.ndarray
    smiles: list[list[str | None]]
    objective: list[Term]
    oracle: dict[str, np.ndarray] = field(default_factory=dict)

    def judge(self, oracle: Callable[[Sequence[Atoms]], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Evaluate every recorded structure with an independent oracle; fills ``self.oracle``."""
        S, R = self.valid.shape
        flat = [a for row in self.structures for a in row]
        values = oracle(flat)
        self.oracle = {k: np.asarray(v, dtype=float).reshape(S, R) for k, v in values.items()}
        return self.oracle

    def best_valid(self, values: np.ndarray, maximize: bool = True) -> np.ndarray:
        """Per start, the index of the best valid record by ``values`` [S, R] (-1 if none is valid)."""
        v = np.where(self.valid & np.isfinite(values), values, -np.inf if maximize else np.inf)
        idx = v.argmax(1) if maximize else v.argmin(1)
        return np.where(self.valid.any(1), idx, -1)

    def oracle_key(self, prop: str) -> str | None:
        """The oracle column that judges property ``prop`` (e.g. ``xtb_gap`` for ``gap``), if any."""
        return next((k for k in self.oracle if k == prop or k.endswith("_" + prop)), None)

    def scores(self) -> tuple[np.ndarray, str]:
        """The objective [S, R] (higher is better) and what judged it: the oracle's values when
        :meth:`judge` ran and it covers every term (``"oracle"``), else the heads' predictions
        (``"head"``). Terms are combined in physical units with their weights."""
        keys = [self.oracle_key(t.prop) for t in self.objective]
        by_oracle = bool(self.objective) and all(keys)
        total = np.zeros(self.valid.shape)
        for t, key in zip(self.objective, keys):
            y = self.oracle[key] if by_oracle else self.predicted[t.prop]
            if t.mode == "max":
                total = total + t.weight * y
            elif t.mode == "min":
                total = total - t.weight * y
            else:
                total = total - t.weight * np.abs(y - t.target)
        return total, "oracle" if by_oracle else "head"

    def write(self, directory: str | Path) -> list[Path]:
        """``trajectory.extxyz`` (every record, with its info) and ``trajectory.csv``."""
        from ase.io import write

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        rows, frames = [], []
        for s, row in enumerate(self.structures):
            for r, atoms in enumerate(row):
                rec = {"start": s, "step": self.steps[r], "valid": bool(self.valid[s, r]), "smiles": self.smiles[s][r] or "",
                       "formula": atoms.get_chemical_formula()}
                rec.update({f"pred_{p}": float(v[s, r]) for p, v in self.predicted.items()})
                rec.update({p: float(v[s, r]) for p, v in self.oracle.items()})
                rows.append(rec)
                a = atoms.copy()
                a.info.update({k: v for k, v in rec.items() if k != "smiles"})
                a.info["smiles"] = rec["smiles"] or "-"
                frames.append(a)
        xyz, table = out / "trajectory.extxyz", out / "trajectory.csv"
        write(xyz, [f for f in frames if len(f)], format="extxyz")
        with table.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        return [xyz, table]


def validity(frames: Sequence[Atoms]) -> tuple[np.ndarray, list[str | None]]:
    """The project's validity check for molecules: perceived bonds sanitize in RDKit.
    Returns (valid [n] bool, canonical SMILES of the largest fragment or None)."""
    from atomarch.chem.bonds import mol_smiles, to_rdkit

    smiles = [mol_smiles(to_rdkit(a)) if len(a) else None for a in frames]
    return np.array([s is not None for s in smiles], dtype=bool), smiles
