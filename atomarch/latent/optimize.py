"""Property optimisation in latent space, with every recorded step decoded back to 3D.

``model.optimize(start, objective, ...)`` (see :meth:`atomarch.models.api.AtomarchModel.optimize`; the loop is :func:`optimize_latents`)
moves latents toward better property-head predictions:

* ``method="gradient"``: Adam on ``-objective(heads(z)) + prior_weight * |z|² / 2`` (the second
  term is the negative log-density of the N(0, I) prior: it keeps ``z`` where the decoder was
  trained). With ``prior="fitted"`` the search runs in the whitened coordinates ``u`` of the
  Gaussian fit of the aggregate posterior, ``z = mean + L u`` (:meth:`Domain.latent_gaussian
  <atomarch.latent.domain.Domain.latent_gaussian>`), and the penalty is ``|u|² / 2``: steps
  are measured in the spread of the training latents and the penalty is the Mahalanobis
  distance to them. For a VAE trained with a small KL weight (the crystal VAEs: latent spread
  ~0.15 per dimension) a step of 0.05 in ``z`` is a third of the whole data cloud, and 100
  steps leave it; in ``u`` it is 0.05 standard deviations;
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
    judges: dict[str, str] = field(default_factory=dict)
    """Property → the oracle column that judges it, when the oracle says (e.g. CHGNet's
    ``chgnet_formation_energy`` judges ``formation_energy_per_atom``)."""

    def judge(self, oracle: Callable[[Sequence[Atoms]], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Evaluate every recorded structure with an independent oracle; fills ``self.oracle``."""
        S, R = self.valid.shape
        flat = [a for row in self.structures for a in row]
        values = oracle(flat)
        self.oracle = {k: np.asarray(v, dtype=float).reshape(S, R) for k, v in values.items()}
        self.judges = dict(getattr(oracle, "judges", {}))
        return self.oracle

    def best_valid(self, values: np.ndarray, maximize: bool = True) -> np.ndarray:
        """Per start, the index of the best valid record by ``values`` [S, R] (-1 if none is valid)."""
        v = np.where(self.valid & np.isfinite(values), values, -np.inf if maximize else np.inf)
        idx = v.argmax(1) if maximize else v.argmin(1)
        return np.where(self.valid.any(1), idx, -1)

    def oracle_key(self, prop: str) -> str | None:
        """The oracle column that judges property ``prop`` (e.g. ``xtb_gap`` for ``gap``), if any."""
        if self.judges.get(prop) in self.oracle:  # the oracle names what it judges (CHGNet: formation energy)
            return self.judges[prop]
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
        """``trajectory.extxyz`` (every record, with its info), ``trajectory.cif`` (crystals) and
        ``trajectory.csv``."""
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
        written = [xyz, table]
        crystals = [f for f in frames if len(f) and np.asarray(f.pbc).all()]
        if crystals:  # crystals also as CIF blocks (info in the extxyz and the CSV)
            cif = out / "trajectory.cif"
            write(cif, crystals, format="cif")
            written.insert(1, cif)
        with table.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        return written


def validity(frames: Sequence[Atoms]) -> tuple[np.ndarray, list[str | None]]:
    """The project's validity check. Molecules: perceived bonds sanitize in RDKit; crystals
    (periodic structures): CDVAE's structural (all distances > 0.5 Å) and compositional (SMACT)
    validity. Returns (valid [n] bool, canonical SMILES of the largest fragment, None for crystals
    and invalid molecules)."""
    from atomarch.chem.bonds import mol_smiles, to_rdkit

    valid, smiles = np.zeros(len(frames), dtype=bool), [None] * len(frames)
    for k, a in enumerate(frames):
        if not len(a):
            continue
        if np.asarray(a.pbc).all():
            from atomarch.metrics.crystals import composition_valid, structure_valid

            valid[k] = structure_valid(a) and composition_valid(a)
        else:
            smiles[k] = mol_smiles(to_rdkit(a))
            valid[k] = smiles[k] is not None
    return valid, smiles


def _coordinates(model, prior: str, dim: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Mean [d] and Cholesky factor [d, d] (float32) of the search coordinates: ``(None, None)``
    for ``prior="standard"`` (z itself), the fitted Gaussian of the model's training domain for
    ``"fitted"`` (:meth:`~atomarch.models.api.AtomarchModel.prior_domain`)."""
    domain = model.prior_domain(prior)
    if domain is None:
        return None, None
    mean, chol = domain.latent_gaussian()
    if len(mean) != dim:
        raise AtomarchError(f"prior 'fitted': the stored latent statistics have {len(mean)} dimensions, the latents {dim}")
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(chol, dtype=torch.float32)


def optimize_latents(model, start: Sequence[Atoms] | np.ndarray, objective: Any, steps: int = 100, lr: float = 0.05,
                     prior_weight: float = 0.1, decode_every: int = 10, method: str = "gradient", population: int = 16,
                     sigma: float = 0.1, seed: int = 0, progress: bool = False, options: Any = None,
                     prior: str = "standard") -> Trajectory:
    """The optimisation loop behind ``model.optimize`` (see there for the arguments).

    ``model`` is the user-facing model object (:class:`atomarch.models.api.AtomarchModel`): its
    ``encode``, ``decode(z, options=...)``, ``head_predictions``, ``to_physical``, ``properties``,
    ``y_std``, ``device`` and latent size are all this loop uses. ``options`` (a
    :class:`~atomarch.nn.decoders.DecodeOptions`) decodes every record; its ``seed`` is
    replaced by ``seed``.
    """
    from tqdm.auto import tqdm

    if method not in ("gradient", "random"):
        raise AtomarchError(f"method must be 'gradient' or 'random', got {method!r}")
    if steps < 0 or decode_every < 1:
        raise AtomarchError("steps must be >= 0 and decode_every >= 1")
    on_structures = callable(objective)
    if on_structures and method != "random":
        raise AtomarchError("a callable objective on decoded structures needs method='random' (it has no gradient)")
    properties = model.properties
    terms = [] if on_structures else parse_objective(objective, properties)
    if isinstance(start, np.ndarray) or torch.is_tensor(start):
        z0 = np.asarray(start, dtype=np.float32).reshape(-1, model.cfg.model.latent_dim)
    else:
        z0 = model.encode(list(start))
    if len(z0) == 0:
        raise AtomarchError("optimize needs at least one start structure or latent")
    std = {p: float(model.y_std[k]) for k, p in enumerate(properties)}
    options = options.replace(seed=seed)
    mean, chol = _coordinates(model, prior, z0.shape[1])
    to_z = (lambda u: u) if chol is None else (lambda u: mean + u @ chol.T)

    def head_score(u: torch.Tensor) -> torch.Tensor:
        phys = model.to_physical(model.head_predictions(to_z(u)))
        return objective_value(terms, {p: phys[..., k] for k, p in enumerate(properties)}, std)

    def penalised(z: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        return score - prior_weight * 0.5 * z.pow(2).sum(-1)

    def structure_scores(u: torch.Tensor) -> torch.Tensor:
        frames = model.decode(to_z(u).detach().cpu().numpy(), options=options.replace(progress=False))
        scores = np.asarray(objective(frames), dtype=np.float64).reshape(-1)
        return torch.as_tensor(np.nan_to_num(scores, nan=-np.inf), dtype=torch.float32, device=z.device)

    model.eval()
    z = torch.tensor(z0, device=model.device)
    if chol is not None:  # whitened coordinates u of the fitted Gaussian (the loop's variable z is u)
        mean, chol = mean.to(z.device), chol.to(z.device)
        z = torch.linalg.solve_triangular(chol, (z - mean).T, upper=False).T.contiguous()
    records, record_steps = [to_z(z).detach().cpu().numpy().copy()], [0]
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam([z.requires_grad_(True)], lr=lr) if method == "gradient" else None
    current = None
    for it in tqdm(range(1, steps + 1), desc=f"optimize ({method})", disable=not progress):
        if opt is not None:
            with torch.enable_grad():
                opt.zero_grad()
                loss = -penalised(z, head_score(z)).sum()
                loss.backward()
                opt.step()
        else:
            with torch.no_grad():
                S, d = z.shape
                cand = z.unsqueeze(1) + sigma * torch.randn(S, population, d, generator=gen).to(z)
                cand = torch.cat([z.unsqueeze(1), cand], dim=1)  # elitist: the current point competes
                if on_structures:
                    if current is None:
                        current = structure_scores(z)
                    new = structure_scores(cand[:, 1:].reshape(-1, d)).view(S, population)
                    score = torch.cat([current.unsqueeze(1), new], dim=1)
                else:
                    score = head_score(cand)
                best = penalised(cand, score).argmax(1)
                z = cand[torch.arange(S), best].clone()
                if on_structures:
                    current = score[torch.arange(S), best]
        if it % decode_every == 0 or it == steps:
            records.append(to_z(z).detach().cpu().numpy().copy())
            record_steps.append(it)
    lat = np.stack(records, axis=1)  # [S, R, d]
    S, R, d = lat.shape
    frames = model.decode(lat.reshape(-1, d), options=options.replace(progress=progress))
    valid, perceived = validity(frames)
    smiles = [a.info.get("smiles") or p for a, p in zip(frames, perceived)]  # the decoded graph, if known
    pred = {p: np.array([a.info[p] for a in frames]).reshape(S, R) for p in properties}
    return Trajectory(
        steps=record_steps, latents=lat,
        structures=[frames[s * R : (s + 1) * R] for s in range(S)],
        predicted=pred, valid=valid.reshape(S, R),
        smiles=[smiles[s * R : (s + 1) * R] for s in range(S)], objective=terms,
    )
