"""Evaluating a trained model on its dataset: property MAEs, reconstruction, generation.

``evaluate_model`` is what ``atomarch evaluate`` runs. For a property-only checkpoint it
reports the heads' MAE on a split; for a VAE it adds reconstruction metrics on ``n`` molecules
of the split and EDM generation metrics on ``n`` prior samples, with the dataset itself as a
reference row.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from atomarch.config import Config
from atomarch.models.api import AtomarchModel
from atomarch.nn.decoders import DecodeOptions


def units(cfg: Config) -> dict[str, str]:
    if cfg.data.dataset == "qm9":
        from atomarch.data.qm9 import UNITS

        return UNITS
    return {}


def property_mae(model: AtomarchModel, dm, split: str = "test", progress: bool = True) -> dict[str, Any]:
    """MAE of every property head (physical units) on a split of data module ``dm``."""
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
    model.eval()
    errors: dict[str, list[torch.Tensor]] = {p: [] for p in model.properties}
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"properties ({split})", disable=not progress):
            batch = batch.to(model.device)
            for p, err in model._mae(batch, model(batch)).items():
                errors[p].append(err.cpu())
    u = units(model.cfg)
    return {
        "split": split,
        "n": len(dm.dataset(split)),
        "mae": {p: float(torch.cat(e).mean()) for p, e in errors.items() if e},
        "units": {p: u.get(p, "") for p in model.properties},
    }


def train_smiles(dm) -> set[str]:
    """Canonical SMILES (EDM bond perception, largest fragment) of ``dm``'s training split,
    cached per dataset, split and evaluator version."""
    import hashlib

    from atomarch.chem.bonds import mol_smiles, to_rdkit
    from atomarch.metrics import EVALUATOR_VERSION

    cfg = dm.cfg
    key = hashlib.sha1(json.dumps([cfg.dataset, cfg.paths, cfg.split_seed, cfg.train_subset, EVALUATOR_VERSION]).encode()).hexdigest()[:10]
    path = Path(cfg.cache_dir).expanduser() / f"train-smiles-{cfg.dataset}-{key}.json"
    if path.is_file():
        return set(json.loads(path.read_text()))
    out = set()
    for k in tqdm(dm.split["train"], desc="training-set SMILES"):
        s = mol_smiles(to_rdkit(dm.packed.atoms(int(k))))
        if s:
            out.add(s)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sorted(out)))
    return out


def evaluate_model(model: AtomarchModel, split: str = "test", n: int = 1000, seed: int = 0,
                   property_subset: int | None = None, progress: bool = True, relax: str | None = None,
                   conformers: int | None = None, beams: int | None = None,
                   options: DecodeOptions | None = None) -> dict[str, Any]:
    """Everything ``atomarch evaluate`` reports (see module docstring); ``options`` (or ``relax``,
    ``conformers``, ``beams``) override the graph decoder's detail and skeleton search."""
    from atomarch.metrics import EDM_QM9_DATA, EVALUATOR_VERSION, evaluate_generated, evaluate_reconstruction

    result: dict[str, Any] = {"checkpoint": getattr(model, "checkpoint_path", None), "evaluator_version": EVALUATOR_VERSION}
    opts = model.decode_options(options, seed=seed, relax=relax, conformers=conformers, beams=beams, progress=progress)
    dm = model.datamodule(**({f"{split}_subset": property_subset} if property_subset else {}))
    result["properties"] = property_mae(model, dm, split, progress)
    if model.decoder is None:
        return result
    idx = dm.split[split][:n]
    originals = [dm.packed.atoms(int(k)) for k in idx]
    t0 = time.perf_counter()
    decoded = model.reconstruct(originals, seed=opts.seed, options=opts)
    t_rec = time.perf_counter() - t0
    rec = evaluate_reconstruction(originals, decoded, progress=progress)
    result["reconstruction"] = {k: v for k, v in rec.items() if not isinstance(v, list)}
    result["reconstruction"]["seconds_per_molecule"] = t_rec / max(1, len(originals))
    t0 = time.perf_counter()
    samples = model.sample(n, seed=opts.seed, options=opts)
    t_gen = time.perf_counter() - t0
    gen = evaluate_generated(samples, train_smiles(dm), progress=progress)
    result["generation"] = {k: v for k, v in gen.items() if not isinstance(v, list)}
    result["generation"]["seconds_per_molecule"] = t_gen / max(1, n)
    ref = evaluate_generated(originals, None)
    result["data_reference"] = {k: v for k, v in ref.items() if not isinstance(v, list)}
    if model.cfg.data.dataset == "qm9":
        result["edm_published_data_row"] = EDM_QM9_DATA
    dc = model.cfg.model.decoder
    if dc.kind == "flow":
        result["decoder_steps"] = {"coarse": dc.coarse_steps, "fine": dc.fine_steps}
    else:
        result["decoder_steps"] = {"skeleton": "SELFIES beam search + encoder verification",
                                   "relax": opts.relax or dc.relax, "conformers": opts.conformers or dc.conformers,
                                   "beams": opts.beams or dc.beams}
        result["reconstruction"]["embeddings"] = _count([a.info.get("embedding") for a in decoded])
        result["generation"]["embeddings"] = _count([a.info.get("embedding") for a in samples])
    return result


def _count(values: list) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def format_report(result: dict[str, Any]) -> str:
    """Human-readable tables of :func:`evaluate_model`'s result."""
    props = result["properties"]
    lines = [f"properties: split={props['split']} n={props['n']}", f"  {'property':<10} {'MAE':>10}  unit"]
    for p, v in props["mae"].items():
        lines.append(f"  {p:<10} {v:>10.4f}  {props['units'].get(p, '')}")
    if "reconstruction" in result:
        r = result["reconstruction"]

        def f(v, pct=False):
            return "-" if v is None else (f"{100 * v:.1f} %" if pct else f"{v:.3f}")

        lines += [
            f"reconstruction: n={r['n']} (evaluator {r['evaluator_version']})",
            f"  SMILES match           {f(r['smiles_match'], True)}",
            f"  heavy-graph match      {f(r['graph_match'], True)}",
            f"  composition match      {f(r.get('composition_match'), True)}",
            f"  heavy RMSD matched     {f(r['rmsd_matched_median'])} Å median, {f(r['rmsd_matched_mean'])} Å mean",
            f"  heavy RMSD same comp.  {f(r['rmsd_all_median'])} Å median",
        ]
        g, d = result["generation"], result["data_reference"]
        pub = result.get("edm_published_data_row", {})
        lines.append(f"generation: n={g['n']} prior samples        {'samples':>9} {'data':>8} {'EDM data':>9}")
        for key, label in [("atom_stability", "atom stability"), ("molecule_stability", "molecule stability"),
                           ("validity", "RDKit validity"), ("uniqueness", "uniqueness (of valid)"),
                           ("novelty", "novelty (of unique)"), ("valid_unique_novel", "valid x unique x novel")]:
            lines.append(f"  {label:<36} {f(g.get(key), True):>9} {f(d.get(key), True):>8} {f(pub.get(key), True):>9}")
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)))
