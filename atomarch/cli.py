"""The ``atomarch`` command line.

Subcommands: ``train``, ``evaluate``, ``encode``, ``predict``, ``export``, ``sample``,
``reconstruct``, ``interpolate``. Bad input (files, structures,
configs, checkpoints) prints one line ``error: ...`` and exits with status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atomarch.errors import AtomarchError

EXIT_USAGE = 2


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")


def _add_prior(p: argparse.ArgumentParser) -> None:
    from atomarch.registry import PRIORS

    p.add_argument("--prior", default="standard", choices=list(PRIORS),
                   help="where samples' latents come from: standard = N(0, I) (the VAE prior, CDVAE/EDM protocols); "
                        "fitted = the Gaussian fit of the training structures' posteriors stored by `atomarch export` "
                        "(where the decoder was trained)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="spread of the prior draws about the prior's mean (1 = the prior itself; below 1 = more "
                        "typical, less diverse structures)")


def _add_relax(p: argparse.ArgumentParser) -> None:
    from atomarch.registry import RELAX_METHODS

    p.add_argument("--relax", default=None, choices=list(RELAX_METHODS),
                   help="graph decoder: relaxation of the decoded 3D structures (default: the checkpoint's; xtb needs tblite)")
    p.add_argument("--conformers", type=int, default=None,
                   help="graph decoder: conformers embedded per molecule, the one closest to z kept (default: the checkpoint's)")
    p.add_argument("--beams", type=int, default=None,
                   help="graph / symmetry decoder: beam-search skeletons per structure, the one closest to z kept "
                        "(1 = greedy)")
    p.add_argument("--compositions", type=int, default=None,
                   help="graph / symmetry decoder: most likely compositions of the global level tried, each "
                        "verified by re-encoding (default: the checkpoint's)")
    p.add_argument("--recheck", type=int, default=None,
                   help="graph decoder: candidates per molecule that probed closest to z, re-embedded with all "
                        "conformers before the skeleton choice (default: the checkpoint's; 0 = off)")
    p.add_argument("--skeletons", type=int, default=None,
                   help="symmetry decoder: skeletons verified per composition, the most likely of its beam "
                        "(default: the checkpoint's; 0 = beams / compositions)")
    p.add_argument("--charge-balanced", action=argparse.BooleanOptionalAction, default=None,
                   help="symmetry decoder: propose only compositions that pass SMACT's charge-neutrality and "
                        "electronegativity test (default: the checkpoint's, off)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atomarch", description="Generative design of atomic structures.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--debug", action="store_true", dest="debug_top", help="show tracebacks (also accepted after the subcommand)")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_epochs=3 data.batch_size=32")
    p.add_argument("--fresh", action="store_true", help="ignore an existing last.ckpt and start over")
    p.add_argument("--resume", default=None, help="resume from this checkpoint (default: the run's last.ckpt)")
    _add_common(p)

    p = sub.add_parser("finetune", help="train a new property head on a pretrained checkpoint's encoder "
                                        "(frozen, partly frozen or fine-tuned); resumes like train")
    p.add_argument("--from", dest="source", required=True, help="pretrained checkpoint (file or checkpoints/ folder)")
    p.add_argument("--config", required=True,
                   help="YAML config of the new task: data (dataset, properties) and train; the network comes "
                        "from --from (model keys in the config change it)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_epochs=30")
    p.add_argument("--freeze", default=None,
                   help="comma-separated parameter prefixes kept fixed: 'encoder' (default), 'none', or e.g. "
                        "'encoder.embed,encoder.layers.0' (partly frozen)")
    p.add_argument("--encoder-lr-scale", type=float, default=None,
                   help="learning-rate multiplier of the trainable encoder parameters (default: the config's, 1)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing last.ckpt and start over")
    _add_common(p)

    p = sub.add_parser("evaluate", help="property MAEs (+ reconstruction and generation metrics for a VAE); "
                                        "prints tables and writes JSON")
    p.add_argument("--ckpt", required=True, help="checkpoint file or directory")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--subset", type=int, default=None, help="property MAE on only the first N structures of the split")
    p.add_argument("-n", "--n", type=int, default=1000, help="VAE: molecules reconstructed and prior samples drawn")
    _add_prior(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference", type=int, default=None,
                   help="crystal VAE: compare the samples (COV, Wasserstein) with only the first N crystals of the "
                        "split (default: the whole split, as CDVAE)")
    p.add_argument("--reconstruct", type=int, default=None,
                   help="crystal VAE: reconstruct only the first N crystals (default: -n; 0 skips reconstruction)")
    p.add_argument("--out", default=None, help="JSON output (default: <ckpt dir>/eval_<split>.json); the printed "
                                               "tables also go to the same name with .txt")
    _add_relax(p)
    _add_common(p)

    p = sub.add_parser("export", help="strip a training checkpoint to a small inference checkpoint and store "
                                      "its 2D map (PCA of the training latents)")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--no-map", action="store_true", help="do not fit the map projection (keeps a stored one)")
    p.add_argument("--half", action="store_true", help="store the weights as float16 (half the size)")
    _add_common(p)

    p = sub.add_parser("pack-state", help="shrink a run's last.ckpt to a compact resumable state (float16 weights, "
                                          "8-bit Adam second moments) to commit; resume with train --resume")
    p.add_argument("--ckpt", required=True, help="a training checkpoint (a run's last.ckpt)")
    p.add_argument("--out", required=True)
    _add_common(p)

    p = sub.add_parser("map", help="encode a whole dataset and write the explorer's map table (parquet/csv)")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--dataset", default=None, help="must match the checkpoint's dataset (default: the checkpoint's)")
    p.add_argument("--out", required=True, help="output table: .parquet or .csv")
    p.add_argument("--model-subsets", action="store_true",
                   help="only the checkpoint's configured split subsets (data.*_subset), not the whole dataset")
    p.add_argument("--also", default=None,
                   help="crystal models: further datasets mapped beside the model's own, comma-separated "
                        "(e.g. mpts52,wbm,aflow_bulk_modulus); one map trace each")
    _add_common(p)

    p = sub.add_parser("optimize", help="latent-space property optimisation, judged by an independent oracle")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--start", nargs="+", required=True, help="start structures: files or SMILES")
    p.add_argument("--objective", required=True, help="e.g. gap:max, gap:min, gap:target=7.0, gap:max,homo:min*0.5")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--method", default="gradient", choices=["gradient", "random"])
    p.add_argument("--lr", type=float, default=0.05, help="gradient method: Adam step size")
    p.add_argument("--prior-weight", type=float, default=0.1, help="weight of |z|^2/2 (keeps z where the decoder is trained)")
    p.add_argument("--decode-every", type=int, default=10)
    from atomarch.registry import PRIORS

    p.add_argument("--prior", default="standard", choices=list(PRIORS),
                   help="search space: standard = z with the N(0, I) penalty; fitted = whitened coordinates of the "
                        "training latents' Gaussian fit, penalty = Mahalanobis distance (for the crystal VAEs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--oracle", default="auto", choices=["auto", "xtb", "chgnet", "none"],
                   help="independent judge of the decoded structures (auto: GFN2-xTB for molecules, CHGNet for crystals)")
    p.add_argument("--out", required=True, help="output directory (trajectory.extxyz, trajectory.csv)")
    _add_relax(p)
    _add_common(p)

    p = sub.add_parser("sample", help="decode prior samples to 3D structures")
    p.add_argument("--ckpt", required=True)
    p.add_argument("-n", "--n", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output file (extxyz, xyz, sdf via ASE/RDKit, cif by extension)")
    _add_prior(p)
    _add_relax(p)
    _add_common(p)

    p = sub.add_parser("reconstruct", help="encode and decode structures")
    p.add_argument("--ckpt", required=True)
    p.add_argument("inputs", nargs="+", help="structure files or SMILES")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    _add_relax(p)
    _add_common(p)

    p = sub.add_parser("interpolate", help="decoded path between two structures in latent space")
    p.add_argument("--ckpt", required=True)
    p.add_argument("a", help="start: structure file (first frame) or SMILES")
    p.add_argument("b", help="end: structure file (first frame) or SMILES")
    p.add_argument("--steps", type=int, default=10, help="structures on the path, both ends included")
    p.add_argument("--method", default="slerp", choices=["slerp", "linear"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    _add_relax(p)
    _add_common(p)

    p = sub.add_parser("decode", help="latent vectors (.npy [n, latent_dim], e.g. from encode) → structures")
    p.add_argument("--ckpt", required=True)
    p.add_argument("latents", help=".npy file of latents [n, latent_dim] (or [latent_dim])")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output file (extxyz, cif, sdf... by extension)")
    _add_relax(p)
    _add_common(p)

    p = sub.add_parser("project", help="2D map coordinates (the checkpoint's stored projection) of structures or latents → CSV")
    p.add_argument("--ckpt", required=True)
    p.add_argument("inputs", nargs="+", help="structure files or SMILES, or one .npy file of latents")
    p.add_argument("--out", default=None, help="CSV output (x, y per structure); printed when omitted")
    _add_common(p)

    p = sub.add_parser("encode", help="latent means of structures → .npy")
    p.add_argument("--ckpt", required=True)
    p.add_argument("inputs", nargs="+", help="structure files (xyz, extxyz, cif, traj, db, sdf) or SMILES")
    p.add_argument("--out", required=True, help="output .npy [n, latent_dim]")
    _add_common(p)

    p = sub.add_parser("predict", help="property predictions for structures (physical units)")
    p.add_argument("--ckpt", required=True)
    p.add_argument("inputs", nargs="+", help="structure files or SMILES")
    p.add_argument("--out", default=None, help="optional CSV output")
    _add_common(p)

    p = sub.add_parser("explore", help="the Explorer web app: latent map, structures, interpolation, "
                                       "optimisation, sampling, uploads")
    p.add_argument("--ckpt", default=None, help="VAE checkpoint with a stored map (default: checkpoints/qm9-vae)")
    p.add_argument("--map", default=None, help="map table from `atomarch map` (default: map.parquet beside the "
                                               "checkpoint; built and saved there when missing)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8050)
    _add_common(p)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from atomarch.config import load_config
    from atomarch.training import train

    cfg = load_config(args.config, args.overrides)
    resume = None if args.fresh else (args.resume or "auto")
    directory = train(cfg, resume=resume)
    print(f"[atomarch] run directory: {directory}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from atomarch.config import read_config_values
    from atomarch.training import finetune

    values = read_config_values(args.config)
    if args.freeze is None:
        freeze = None if "freeze" in (values.get("train") or {}) else ["encoder"]
    else:
        freeze = [] if args.freeze.strip().lower() == "none" else [f.strip() for f in args.freeze.split(",") if f.strip()]
    directory = finetune(args.source, values, freeze=freeze, encoder_lr_scale=args.encoder_lr_scale,
                         overrides=args.overrides, resume=None if args.fresh else "auto")
    print(f"[atomarch] run directory: {directory}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from atomarch.evaluation import evaluate_model, format_report, write_json
    from atomarch.models.loading import load_model

    model = load_model(args.ckpt)
    result = evaluate_model(model, args.split, n=args.n, seed=args.seed, property_subset=args.subset,
                            options=_decode_options(args), reference_subset=args.reference, prior=args.prior,
                            temperature=args.temperature,
                            reconstruct_n=args.reconstruct)
    report = format_report(result)
    print(report)
    out = args.out or str(Path(model.checkpoint_path).parent / f"eval_{args.split}.json")
    write_json(result, out)
    txt = Path(out).with_suffix(".txt")
    txt.write_text(report + "\n")  # the tables only (no progress-bar output)
    print(f"[atomarch] wrote {out} and {txt}")
    return 0


def _inputs(items: list[str]):
    from atomarch.data.structures import load_inputs

    return load_inputs(items)


def cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np

    from atomarch.models.loading import load_model

    model = load_model(args.ckpt)
    frames = _inputs(args.inputs)
    z = model.encode(frames)
    np.save(args.out, z)
    print(f"[atomarch] encoded {len(frames)} structures → {args.out} {tuple(z.shape)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from atomarch.evaluation import units
    from atomarch.models.loading import load_model

    model = load_model(args.ckpt)
    frames = _inputs(args.inputs)
    pred = model.predict(frames)
    u = units(model.cfg)
    cols = {f"{p} [{u[p]}]" if u.get(p) else p: v for p, v in pred.items()}
    df = pd.DataFrame({"source": [a.info.get("source", "") for a in frames],
                       "formula": [a.get_chemical_formula() for a in frames], **cols,
                       "in_domain": [bool(a.info.get("in_domain", True)) for a in frames]})
    print(df.to_string(index=False))
    if args.out:
        df.to_csv(args.out, index=False)
    return 0


def _out(path: str) -> str:
    from atomarch.data.structures import check_output_path

    check_output_path(path)
    return path


def _write(frames, path: str) -> None:
    from atomarch.data.structures import write_structures

    write_structures(frames, path)
    print(f"[atomarch] wrote {len(frames)} structures to {path}")


def cmd_export(args: argparse.Namespace) -> int:
    from atomarch.models.loading import export_checkpoint, load_model

    projection = domain = overrides = None
    if not args.no_map:
        from atomarch.latent.maps import fit_map
        from atomarch.training import calibrate_readout_norm

        model = load_model(args.ckpt)
        dm = model.datamodule()
        readout = getattr(model.net.encoder, "readout", None)
        norm = getattr(readout, "norm", None)
        if getattr(readout, "norm_mode", "none") == "batch" and norm is not None:
            calibrate_readout_norm(model.net, dm.dataset("train"), model.cutoff)  # precise statistics
            overrides = {f"encoder.readout.norm.{k}": v for k, v in norm.state_dict().items()}
            print("[atomarch] readout normalisation: statistics recomputed from 512 training structures")
        projection = fit_map(model, dm)
        domain = model.domain.to_dict()
        print(f"[atomarch] map: PCA of {projection['n_fit']} training latents, explained variance "
              f"{100 * projection['explained'][0]:.1f} % + {100 * projection['explained'][1]:.1f} %")
    out = export_checkpoint(args.ckpt, args.out, projection=projection, half=args.half, domain=domain,
                            state_overrides=overrides)
    print(f"[atomarch] wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def cmd_pack_state(args: argparse.Namespace) -> int:
    from atomarch.training import pack_state

    out = pack_state(args.ckpt, args.out)
    print(f"[atomarch] wrote {out} ({out.stat().st_size / 1e6:.1f} MB); resume with "
          f"atomarch train --config <its config> --resume {out}")
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    import time

    from atomarch.latent.maps import build_map
    from atomarch.models.loading import load_model

    out = Path(args.out)
    if out.suffix not in (".parquet", ".csv"):
        raise AtomarchError(f"map output must end in .parquet or .csv, got {args.out!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = load_model(args.ckpt)
    if args.dataset and args.dataset != model.cfg.data.dataset:
        raise AtomarchError(f"--dataset {args.dataset!r} does not match the checkpoint's dataset {model.cfg.data.dataset!r}")
    t0 = time.perf_counter()
    also = [a.strip() for a in (args.also or "").split(",") if a.strip()]
    table = build_map(model, whole=not args.model_subsets, also=also)
    table.to_parquet(out, index=False) if out.suffix == ".parquet" else table.to_csv(out, index=False)
    print(f"[atomarch] wrote {len(table)} rows to {out} in {time.perf_counter() - t0:.0f} s")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    from atomarch.models.loading import load_model

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise AtomarchError(f"--out must be a directory, {out} is a file")
    model = load_model(args.ckpt)
    starts = _inputs(args.start)
    oracle = None
    kind = args.oracle
    if kind == "auto":
        kind = "chgnet" if model.crystals_only else "xtb"
    if kind == "xtb":
        from atomarch.chem.oracles import XTBOracle

        oracle = XTBOracle()
    elif kind == "chgnet":
        from atomarch.chem.oracles import CHGNetOracle

        oracle = CHGNetOracle()
    traj = model.optimize(starts, args.objective, steps=args.steps, lr=args.lr, prior_weight=args.prior_weight,
                          decode_every=args.decode_every, method=args.method, seed=args.seed, progress=True,
                          options=_decode_options(args), prior=args.prior)
    if oracle is not None:
        traj.judge(oracle)
    print(format_trajectory(traj))
    for path in traj.write(out):
        print(f"[atomarch] wrote {path}")
    return 0


def format_trajectory(traj) -> str:
    """Per start: the head's prediction (and the oracle's value) at the start, at the last step
    and at the best valid step. The best step is chosen by the oracle when one judged the
    trajectory, else by the head (and the table says so)."""
    term = traj.objective[0]
    pred = traj.predicted[term.prop]
    score, judge = traj.scores()
    best = traj.best_valid(score)
    oracle_key = traj.oracle_key(term.prop) or next(iter(traj.oracle), None)
    objective = ", ".join(f"{t.prop}:{t.mode}" + (f"={t.target}" if t.target is not None else "") for t in traj.objective)
    chosen = ("the oracle (" + ", ".join(filter(None, (traj.oracle_key(t.prop) for t in traj.objective))) + ")"
              if judge == "oracle" else "the property head (no oracle judged these structures)")
    head = f"{'start':>5} {'step':>5} {'valid':>5} {'pred_' + term.prop:>12}"
    head += f" {oracle_key:>10}" if oracle_key else ""
    crystal = any(len(a) and a.pbc.all() for row in traj.structures for a in row)
    lines = [f"objective: {objective}; best valid step chosen by {chosen}", head + ("  formula" if crystal else "  smiles")]
    for s in range(len(traj.structures)):
        for label, r in (("start", 0), ("last", len(traj.steps) - 1), ("best", int(best[s]))):
            if r < 0:
                lines.append(f"{s:>5} {'best':>5}  no valid structure on this path")
                continue
            row = f"{s:>5} {traj.steps[r]:>5} {str(bool(traj.valid[s, r])):>5} {pred[s, r]:12.3f}"
            if oracle_key:
                row += f" {traj.oracle[oracle_key][s, r]:10.3f}"
            shown = traj.structures[s][r].get_chemical_formula() if crystal else traj.smiles[s][r]
            lines.append(row + f"  {shown or '-'}  ({label})")
    return "\n".join(lines)


def _decode_options(args: argparse.Namespace):
    """The decode options given on the command line (:class:`~atomarch.nn.decoders.DecodeOptions`;
    what is not given stays the checkpoint's)."""
    from atomarch.nn.decoders import DecodeOptions

    return DecodeOptions(seed=args.seed, relax=args.relax, conformers=args.conformers, beams=args.beams,
                         compositions=args.compositions, skeletons=args.skeletons, recheck=args.recheck,
                         charge_balanced=args.charge_balanced, progress=True)


def cmd_sample(args: argparse.Namespace) -> int:
    from atomarch.models.loading import load_model

    _out(args.out)
    model = load_model(args.ckpt)
    _write(model.sample(args.n, seed=args.seed, options=_decode_options(args), prior=args.prior,
                        temperature=args.temperature), args.out)
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from atomarch.models.loading import load_model

    _out(args.out)
    model = load_model(args.ckpt)
    frames = _inputs(args.inputs)
    decoded = model.reconstruct(frames, seed=args.seed, options=_decode_options(args))
    print(format_reconstruction(frames, decoded))
    _write(decoded, args.out)
    return 0


def format_reconstruction(inputs, decoded) -> str:
    """One line per structure — input → output SMILES (RDKit canonical), same molecule or not
    (mirror images count as the same: the encoder is O(3)-invariant), heavy-atom RMSD (Å) when it
    is — and a summary line with the share matched. Crystals (periodic inputs):
    :func:`format_crystal_reconstruction`."""
    if inputs and all(bool(a.pbc.all()) for a in inputs):
        return format_crystal_reconstruction(inputs, decoded)
    from atomarch.chem.strings import canonical_smiles, molecule_key
    from atomarch.metrics.reconstruction import heavy_atom_rmsd

    lines, matched = [], 0
    for k, (a, b) in enumerate(zip(inputs, decoded)):
        key_a, key_b = molecule_key(a), molecule_key(b)
        same = key_a is not None and key_a == key_b
        matched += same
        shown_a = a.info.get("smiles") if a.info.get("graph_smiles") else key_a
        line = (f"{k:>4}  {a.info.get('source', '')}  {canonical_smiles(shown_a or '') or '?'} -> "
                f"{b.info.get('smiles') or '?'}  same molecule: {'yes' if same else 'no'}")
        if same:
            rmsd = heavy_atom_rmsd(a, b)
            line += f"  heavy-atom RMSD {rmsd:.3f} Å" if rmsd is not None else ""
        if not a.info.get("in_domain", True):
            line += "  (outside the training domain)"
        lines.append(line)
    n = len(inputs)
    lines.append(f"same molecule: {matched} of {n} ({100 * matched / max(1, n):.1f} %)")
    return "\n".join(lines)


def format_crystal_reconstruction(inputs, decoded) -> str:
    """One line per crystal — input → output reduced formula and space group (spglib), the
    StructureMatcher verdict under CDVAE's tolerances and, when matched, its RMS displacement
    normalised by (V / N)^(1/3) as in CDVAE — and a summary line with the share matched."""
    from atomarch.metrics.crystals import MATCHER_TOLERANCES, space_group, structure_match

    def describe(atoms) -> str:
        if len(atoms) == 0:
            return "(nothing decoded)"
        from pymatgen.core import Composition

        formula = Composition(atoms.get_chemical_formula()).reduced_formula
        sg = space_group(atoms)
        return f"{formula} ({sg[0]}, {sg[1]})" if sg else f"{formula} (space group ?)"

    lines, matched = [], 0
    for k, (a, b) in enumerate(zip(inputs, decoded)):
        same, rms = structure_match(a, b) if len(b) else (False, None)
        matched += same
        line = f"{k:>4}  {a.info.get('source', '')}  {describe(a)} -> {describe(b)}  match: {'yes' if same else 'no'}"
        if same and rms is not None:
            line += f"  RMS {rms:.4f}"
        if not a.info.get("in_domain", True):
            line += "  (outside the training domain)"
        lines.append(line)
    n = len(inputs)
    tol = ", ".join(f"{key}={value:g}" for key, value in MATCHER_TOLERANCES.items())
    lines.append(f"matched (StructureMatcher {tol}; RMS normalised by (V/N)^(1/3)): {matched} of {n} "
                 f"({100 * matched / max(1, n):.1f} %)")
    return "\n".join(lines)


def _read_latents(path: str):
    import numpy as np

    try:
        z = np.load(path)
    except Exception as exc:  # not an .npy, truncated file...
        raise AtomarchError(f"cannot read latents from {path}: {type(exc).__name__}: {exc}") from None
    return z.reshape(1, -1) if z.ndim == 1 else z


def cmd_decode(args: argparse.Namespace) -> int:
    from atomarch.models.loading import load_model

    _out(args.out)
    model = load_model(args.ckpt)
    _write(model.decode(_read_latents(args.latents), seed=args.seed, options=_decode_options(args)), args.out)
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    import pandas as pd

    from atomarch.models.loading import load_model

    model = load_model(args.ckpt)
    if len(args.inputs) == 1 and args.inputs[0].endswith(".npy"):
        z, names = _read_latents(args.inputs[0]), None
    else:
        frames = _inputs(args.inputs)
        z, names = model.encode(frames), [a.info.get("source", "") for a in frames]
    xy = model.project(z)
    df = pd.DataFrame({"source": names if names is not None else [f"{args.inputs[0]}:{k}" for k in range(len(z))],
                       "x": xy[:, 0], "y": xy[:, 1]})
    print(df.to_string(index=False))
    if args.out:
        df.to_csv(args.out, index=False)
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from atomarch.models.loading import load_model

    _out(args.out)
    model = load_model(args.ckpt)
    a, b = _inputs([args.a])[0], _inputs([args.b])[0]
    _write(model.interpolate(a, b, steps=args.steps, method=args.method, seed=args.seed,
                             options=_decode_options(args)), args.out)
    return 0


APPS = {"explore": "apps.explorer"}
"""Applications the CLI launches, by module name: ``apps/`` sits above the package (it imports
atomarch, never the reverse), so the CLI names it instead of importing it."""


def cmd_explore(args: argparse.Namespace) -> int:
    import importlib

    run_explorer = importlib.import_module(APPS["explore"]).run_explorer
    run_explorer(args.ckpt, args.map, host=args.host, port=args.port, debug=args.debug or args.debug_top)
    return 0


COMMANDS = {
    "train": cmd_train,
    "finetune": cmd_finetune,
    "evaluate": cmd_evaluate,
    "encode": cmd_encode,
    "predict": cmd_predict,
    "export": cmd_export,
    "pack-state": cmd_pack_state,
    "map": cmd_map,
    "optimize": cmd_optimize,
    "sample": cmd_sample,
    "reconstruct": cmd_reconstruct,
    "interpolate": cmd_interpolate,
    "decode": cmd_decode,
    "project": cmd_project,
    "explore": cmd_explore,
}


def _precheck(args: argparse.Namespace) -> None:
    """Cheap checks of paths and arguments before torch/e3nn/RDKit are imported (~5 s), so that
    a typo answers at once: the checkpoint exists, no input argument is empty, an input that
    looks like a file path exists."""
    from atomarch.data.formats import looks_like_path
    from atomarch.errors import ReadError
    from atomarch.models.files import resolve_checkpoint

    if getattr(args, "ckpt", None) is not None:
        resolve_checkpoint(args.ckpt)
    if getattr(args, "source", None) is not None:
        resolve_checkpoint(args.source)
    items = list(getattr(args, "inputs", None) or []) + list(getattr(args, "start", None) or [])
    items += [getattr(args, k) for k in ("a", "b", "latents") if isinstance(getattr(args, k, None), str)]
    for k, item in enumerate(items):
        if not item.strip():
            raise ReadError(f"input argument {k + 1} is empty: give a structure file or a SMILES string")
        if looks_like_path(item) and not Path(item).exists():
            raise ReadError(f"file not found: {item}")
    if getattr(args, "config", None) is not None and not Path(args.config).is_file():
        raise ReadError(f"config file not found: {args.config}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """One line per warning on stderr (``warning: ...``) instead of Python's two-line format."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may follow options (train --fresh a.b=1): collect the stray key=value tokens
    if extra:
        stray = [t for t in extra if t.startswith("-") or "=" not in t or args.command not in ("train", "finetune")]
        if stray:
            parser.error(f"unrecognized arguments: {' '.join(stray)}")
        args.overrides = list(args.overrides) + extra
    if args.version:
        from atomarch._version import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    import warnings

    warnings.showwarning = _show_warning
    try:
        _precheck(args)
        return COMMANDS[args.command](args)
    except AtomarchError as exc:
        if args.debug or args.debug_top:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
