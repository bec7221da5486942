"""CDVAE's property-optimisation protocol, judged by CHGNet: SR5 / SR10 / SR15.

From ``--starts`` random test crystals (seeded), move each latent to minimise the formation-energy
head (gradient steps with the prior penalty, decoding every ``--decode-every`` steps), judge
every decoded crystal with the pretrained CHGNet (formation energy per atom against its own
elemental references; unrelaxed unless ``--relax``), and count the starts whose best *valid*
decoded crystal after step 0 (the start's own decode is reported apart, as ``start_SR``: the
share already there before optimising) reaches the 5th / 10th / 15th percentile of the CHGNet formation energies of the
whole test split (CDVAE judged with its own property predictor instead). Also prints the share of
valid crystals among the final steps.

    python benchmarks/crystal_optimization.py --ckpt checkpoints/mp20-vae --starts 100 --steps 100
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    from atomarch.registry import PRIORS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--property", default="formation_energy_per_atom")
    parser.add_argument("--starts", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--decode-every", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--prior", default="fitted", choices=list(PRIORS),
                        help="search space (see atomarch optimize --prior); fitted: whitened training-latent coordinates")
    parser.add_argument("--compositions", type=int, default=None, help="decode: compositions verified (default: the checkpoint's)")
    parser.add_argument("--charge-balanced", action="store_true",
                        help="decode: propose only compositions that pass SMACT (DecodeOptions.charge_balanced)")
    parser.add_argument("--relax", action="store_true", help="judge CHGNet-relaxed crystals (slow)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None,
                        help="JSON file of CHGNet results kept between runs (judging the 7,342 MP-20 test crystals takes ~12 min)")
    parser.add_argument("--out", default=None, help="folder for the trajectory and a JSON summary")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import atomarch
    from atomarch.chem.oracles import CHGNetOracle

    model = atomarch.load_model(args.ckpt)
    dm = model.datamodule()
    test = [dm.packed.atoms(int(k)) for k in dm.split["test"]]
    oracle = CHGNetOracle(relax=args.relax, cache=args.cache)
    key = oracle.judges.get(args.property, "chgnet_formation_energy")
    reference = oracle(test)[key]
    oracle.save()  # a no-op without --cache
    reference = reference[np.isfinite(reference)]
    pct = np.percentile(reference, [5, 10, 15])
    rng = np.random.default_rng(args.seed)
    starts = [test[int(k)] for k in rng.choice(len(test), size=args.starts, replace=False)]
    options = model.decode_options(compositions=args.compositions, charge_balanced=args.charge_balanced or None)
    traj = model.optimize(starts, f"{args.property}:min", steps=args.steps, lr=args.lr,
                          decode_every=args.decode_every, progress=True, prior=args.prior, options=options)
    traj.judge(oracle)
    values = np.where(traj.valid, traj.oracle[key], np.inf)
    best = values[:, 1:].min(axis=1)  # optimised steps only: the start's own decode does not count
    sr = {f"SR{p}": float(np.mean(best <= v)) for p, v in zip((5, 10, 15), pct)}
    sr.update({f"start_SR{p}": float(np.mean(values[:, 0] <= v)) for p, v in zip((5, 10, 15), pct)})
    summary = {"ckpt": str(args.ckpt), "property": args.property, "judge": key + (" (relaxed)" if args.relax else " (unrelaxed)"),
               "starts": args.starts, "steps": args.steps, "lr": args.lr, "prior": args.prior,
               "compositions": args.compositions, "charge_balanced": bool(args.charge_balanced), "percentiles_eV_per_atom": pct.tolist(),
               "test_crystals_judged": int(len(reference)), **sr,
               "valid_final_step": float(traj.valid[:, -1].mean()), "valid_all_steps": float(traj.valid.mean())}
    print(json.dumps(summary, indent=2))
    if args.out:
        out = Path(args.out)
        traj.write(out)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
