"""Evaluating a trained model on its dataset: property MAEs, reconstruction, generation.

``evaluate_model`` is what ``atomarch evaluate`` runs. For a property-only checkpoint it
reports the heads' MAE on a split; for a VAE it adds reconstruction metrics on ``n`` molecules
of the split and EDM generation metrics on ``n`` prior samples, with the dataset itself as a
reference row. For a crystal VAE (a periodic decoder) it follows CDVAE's protocol instead
(:mod:`atomarch.metrics.crystals`): StructureMatcher reconstruction, validity, COV-R/COV-P,
Wasserstein distances of density and number of elements, uniqueness and novelty, beside CDVAE's
published row.
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
    from atomarch.registry import CRYSTAL_PROPERTIES

    return dict(CRYSTAL_PROPERTIES.get(cfg.data.dataset, {}))


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
                   options: DecodeOptions | None = None, reference_subset: int | None = None,
                   prior: str = "standard", reconstruct_n: int | None = None,
                   temperature: float = 1.0) -> dict[str, Any]:
    """Everything ``atomarch evaluate`` reports (see module docstring); ``options`` (or ``relax``,
    ``conformers``, ``beams``) override the graph decoder's detail and skeleton search; ``prior``
    is where the generation metrics' samples come from (``standard``: N(0, I); ``fitted``: the
    aggregate posterior's Gaussian fit, see :meth:`AtomarchModel.prior_latents`), ``temperature``
    their spread about the prior's mean (1: the prior itself); crystals:
    ``reconstruct_n`` reconstructs that many structures instead of ``n`` (0: none).
    ``reference_subset`` (crystals only): compare the samples with only the first N crystals of
    the split (default: all of it, as CDVAE)."""
    from atomarch.metrics import EDM_QM9_DATA, EVALUATOR_VERSION, evaluate_generated, evaluate_reconstruction

    result: dict[str, Any] = {"checkpoint": getattr(model, "checkpoint_path", None), "evaluator_version": EVALUATOR_VERSION}
    opts = model.decode_options(options, seed=seed, relax=relax, conformers=conformers, beams=beams, progress=progress)
    dm = model.datamodule(**({f"{split}_subset": property_subset} if property_subset else {}))
    result["properties"] = property_mae(model, dm, split, progress)
    if model.decoder is None:
        return result
    if model.decoder.periodic:
        result.update(evaluate_crystal_model(model, dm, split, n, opts, progress=progress,
                                             reference_subset=reference_subset, prior=prior,
                                             reconstruct_n=reconstruct_n, temperature=temperature))
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
    samples = model.sample(n, seed=opts.seed, options=opts, prior=prior, temperature=temperature)
    t_gen = time.perf_counter() - t0
    gen = evaluate_generated(samples, train_smiles(dm), progress=progress)
    result["generation"] = {k: v for k, v in gen.items() if not isinstance(v, list)}
    result["generation"]["prior"] = prior
    result["generation"]["temperature"] = float(temperature)
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
                                   "beams": opts.beams or dc.beams,
                                   "compositions": opts.compositions or dc.compositions,
                                   "recheck": dc.recheck if opts.recheck is None else opts.recheck}
        result["reconstruction"]["embeddings"] = _count([a.info.get("embedding") for a in decoded])
        result["generation"]["embeddings"] = _count([a.info.get("embedding") for a in samples])
    return result


CRYSTAL_ROW_LABEL = "atomarch (reduced-train)"
"""Our row beside CDVAE's: the crystal models train on about a third of CDVAE's data."""


def evaluate_crystal_model(model: AtomarchModel, dm, split: str, n: int, opts: DecodeOptions, progress: bool = True,
                           reference_subset: int | None = None, prior: str = "standard",
                           reconstruct_n: int | None = None, temperature: float = 1.0) -> dict[str, Any]:
    """The crystal part of :func:`evaluate_model` (CDVAE's protocol, see
    :mod:`atomarch.metrics.crystals`): ``reconstruction`` of the first ``n`` crystals of the
    split (``reconstruct_n`` instead, when given; 0 skips it), ``generation`` of ``n`` prior
    samples against the whole split (COV, Wasserstein) and the training split (novelty), and
    ``cdvae_published`` (the paper's row for this dataset)."""
    from atomarch.metrics.crystals import (
        CDVAE_PUBLISHED,
        COV_CUTOFFS,
        CRYSTAL_EVALUATOR_VERSION,
        MATCHER_TOLERANCES,
        FingerprintCache,
        evaluate_crystal_generation,
    )

    dataset = model.cfg.data.dataset
    dc = model.cfg.model.decoder
    out: dict[str, Any] = {"kind": "crystal", "dataset": dataset, "label": CRYSTAL_ROW_LABEL,
                           "evaluator_version": CRYSTAL_EVALUATOR_VERSION,
                           "decode": {"beams": opts.beams or dc.beams, "compositions": opts.compositions or dc.compositions,
                                      "skeletons": dc.skeletons if opts.skeletons is None else opts.skeletons,
                                      "relax": opts.relax or dc.relax, "seed": opts.seed,
                                      "charge_balanced": bool(dc.charge_balanced if opts.charge_balanced is None
                                                              else opts.charge_balanced)}}
    idx = dm.split[split][: n if reconstruct_n is None else reconstruct_n]
    originals = [dm.packed.atoms(int(k)) for k in idx]
    if not originals:
        out["reconstruction"] = {"n": 0, "split": split, "evaluator_version": CRYSTAL_EVALUATOR_VERSION,
                                 "matcher": dict(MATCHER_TOLERANCES)}
    else:
        out["reconstruction"] = _crystal_reconstruction(model, originals, split, opts)
    t0 = time.perf_counter()
    samples = model.sample(n, seed=opts.seed, options=opts, prior=prior, temperature=temperature)
    t_gen = time.perf_counter() - t0
    ref_idx = dm.split[split] if reference_subset is None else dm.split[split][:reference_subset]
    reference = [dm.packed.atoms(int(k)) for k in ref_idx]
    train = [dm.packed.atoms(int(k)) for k in dm.split["train"]] if split != "train" else None
    cache = FingerprintCache.in_dir(model.cfg.data.cache_dir)
    gen = evaluate_crystal_generation(samples, reference, train, COV_CUTOFFS.get(dataset), cache, progress=progress)
    gen.pop("per_sample")
    gen["seconds_per_crystal"] = t_gen / max(1, n)
    gen["reference_split"] = split
    gen["prior"] = prior
    gen["temperature"] = float(temperature)
    gen["empty"] = sum(len(a) == 0 for a in samples)
    out["generation"] = gen
    out["cdvae_published"] = CDVAE_PUBLISHED.get(dataset)
    return out


def _crystal_reconstruction(model: AtomarchModel, originals: list, split: str, opts: DecodeOptions) -> dict[str, Any]:
    """CDVAE's reconstruction metrics of ``originals`` through ``model`` (see
    :func:`evaluate_crystal_model`)."""
    from atomarch.metrics.crystals import (
        CRYSTAL_EVALUATOR_VERSION,
        MATCHER_TOLERANCES,
        composition_valid,
        evaluate_crystal_reconstruction,
        structure_valid,
    )

    t0 = time.perf_counter()
    decoded = model.reconstruct(originals, seed=opts.seed, options=opts)
    t_rec = time.perf_counter() - t0
    rec = evaluate_crystal_reconstruction(originals, decoded)
    # CDVAE counts a reconstruction as matched only when the decoded crystal is valid
    valid = [structure_valid(b) and composition_valid(b) for b in decoded]
    matched = [m and v for m, v in zip(rec["matched"], valid)]
    rms = [r for r, m in zip(rec["rms"], matched) if m]
    m_any = [r for r, m in zip(rec["rms"], rec["matched"]) if m]
    k = max(1, len(originals))
    return {
        "n": len(originals), "split": split, "evaluator_version": CRYSTAL_EVALUATOR_VERSION,
        "match_rate": sum(matched) / k, "rms_mean": float(np.mean(rms)) if rms else None,
        "match_rate_any": sum(rec["matched"]) / k, "rms_mean_any": float(np.mean(m_any)) if m_any else None,
        "decoded_validity": sum(valid) / k, "empty": sum(len(b) == 0 for b in decoded),
        "seconds_per_crystal": t_rec / k, "matcher": dict(MATCHER_TOLERANCES)}


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
    if result.get("kind") == "crystal":
        lines += format_crystal_report(result)
    elif "reconstruction" in result:
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
        lines.append(f"generation: n={g['n']} prior samples ({g.get('prior', 'standard')})  {'samples':>9} {'data':>8} "
                     f"{'EDM data':>9}")
        for key, label in [("atom_stability", "atom stability"), ("molecule_stability", "molecule stability"),
                           ("validity", "RDKit validity"), ("uniqueness", "uniqueness (of valid)"),
                           ("novelty", "novelty (of unique)"), ("valid_unique_novel", "valid x unique x novel")]:
            lines.append(f"  {label:<36} {f(g.get(key), True):>9} {f(d.get(key), True):>8} {f(pub.get(key), True):>9}")
    return "\n".join(lines)


def format_crystal_report(result: dict[str, Any]) -> list[str]:
    """The crystal tables of :func:`format_report`: our row beside CDVAE's published one."""
    r, g = result["reconstruction"], result["generation"]
    pub = result.get("cdvae_published") or {}
    label = result.get("label", CRYSTAL_ROW_LABEL)
    w = max(len(label), 9)

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f} %"

    def num(v, digits=4):
        return "-" if v is None else f"{v:.{digits}f}"

    def row(name, ours, paper):
        return f"  {name:<38} {ours:>{w}} {paper:>14}"

    tol = r.get("matcher", {})
    head = row("", label, "CDVAE (paper)")
    if not r["n"]:
        lines = [f"reconstruction: dataset={result['dataset']} skipped (--reconstruct 0)"]
    else:
        lines = [f"reconstruction: dataset={result['dataset']} split={r['split']} n={r['n']} "
                 f"(StructureMatcher stol={tol.get('stol')}, ltol={tol.get('ltol')}, angle_tol={tol.get('angle_tol')}; "
                 f"evaluator {r['evaluator_version']}"
                 + ("; charge-balanced compositions only" if result.get("decode", {}).get("charge_balanced") else "")
                 + ")", head,
                 row("match rate (valid decodes, as CDVAE)", pct(r["match_rate"]), pct(pub.get("match_rate"))),
                 row("RMSE (matched, normalised)", num(r["rms_mean"]), num(pub.get("rms_mean"))),
                 row("match rate (any decode)", pct(r["match_rate_any"]), "-"),
                 row("RMSE (any decode, matched)", num(r["rms_mean_any"]), "-"),
                 row("decoded crystals valid", pct(r["decoded_validity"]), "-"),
                 row("encode + decode time per crystal", f"{r['seconds_per_crystal']:.3f} s", "-")]
    cut = g.get("cov_cutoffs") or {}
    cov_note = f"struc {cut.get('struc')}, comp {cut.get('comp')}" if cut else "no CDVAE cutoffs for this dataset"
    prior = {"standard": "N(0, I)", "fitted": "fitted aggregate posterior"}.get(g.get("prior", "standard"), g.get("prior"))
    if g.get("temperature", 1.0) != 1.0:
        prior += f", temperature {g['temperature']:g}"
    if result.get("decode", {}).get("charge_balanced"):
        prior += "; decoded with charge-balanced compositions only"
    lines += [f"generation: n={g['n']} prior samples ({prior}), {g['n_valid']} valid; reference: {g['reference_split']} split "
              f"(n={g['reference_n']}); COV cutoffs {cov_note}", head,
              row("structural validity", pct(g["structural_validity"]), pct(pub.get("structural_validity"))),
              row("compositional validity", pct(g["compositional_validity"]), pct(pub.get("compositional_validity"))),
              row("valid (both, fingerprinted)", pct(g["validity"]), "-"),
              row("COV-R (all samples, as CDVAE's code)", pct(g.get("cov_recall")), pct(pub.get("cov_recall"))),
              row("COV-P (all samples, as CDVAE's code)", pct(g.get("cov_precision")), pct(pub.get("cov_precision")))]
    if g.get("cov_valid_only"):
        lines += [row("COV-R (valid samples only)", pct(g["cov_valid_only"]["cov_recall"]), "-"),
                  row("COV-P (valid samples only)", pct(g["cov_valid_only"]["cov_precision"]), "-")]
    lines += [row("Wasserstein density (g/cm3)", num(g["wasserstein_density"]), num(pub.get("wasserstein_density"))),
              row("Wasserstein #elements", num(g["wasserstein_n_elements"]), num(pub.get("wasserstein_n_elements"))),
              row("uniqueness (of valid)", pct(g.get("uniqueness")), "-"),
              row("novelty (of valid, vs train)", pct(g.get("novelty")), "-"),
              row("valid x unique x novel", pct(g.get("valid_unique_novel")), "-"),
              row("decode time per crystal", f"{g['seconds_per_crystal']:.3f} s", "-")]
    return lines


def write_json(result: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)))
