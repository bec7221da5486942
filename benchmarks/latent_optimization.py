"""Latent-space gap optimisation judged by an independent oracle (GFN2-xTB), CDVAE-style.

Starts from N random test molecules, maximises (and separately minimises) the HOMO-LUMO gap
with the property head, decodes every ``decode_every`` steps and judges every decoded structure
with GFN2-xTB single points (``tblite``) — never with the head that was optimised. Prints:

* share of final structures that are valid (RDKit sanitization of the perceived bonds);
* median xTB gap of the start molecules (their QM9 geometry), of their reconstructions, of the
  final structures and of each start's best valid decoded structure;
* success rates SR5/SR10/SR15: share of starts whose best valid decoded structure reaches the top
  5/10/15 % of the xTB-gap distribution of 1,000 QM9 training molecules (same oracle, their QM9
  geometries; "top" = highest gaps when maximising, lowest when minimising);
* time per gradient step (all starts at once, decoding excluded) and per decoded molecule.

Usage: python benchmarks/latent_optimization.py [--ckpt checkpoints/qm9-vae] [-n 100] [--steps 100]
       [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import atomarch
from atomarch.chem.oracles import XTBOracle

def gradient_step_seconds(model, z: np.ndarray, steps: int = 100) -> float:
    """Seconds per gradient step of ``model.optimize`` for all rows of ``z`` at once, without
    decoding (the decoder is replaced by a stub for this timing only)."""
    from ase import Atoms

    def stub(latents, **_):
        out = [Atoms() for _ in range(len(latents))]
        for a in out:
            a.info.update({p: 0.0 for p in model.properties})
        return out

    real, model.decode = model.decode, stub
    try:
        t = time.perf_counter()
        model.optimize(z, {"gap": "max"}, steps=steps, decode_every=steps)
        return (time.perf_counter() - t) / steps
    finally:
        model.decode = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default="checkpoints/qm9-vae")
    ap.add_argument("-n", type=int, default=100, help="start molecules (random, test split)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--reference", type=int, default=1000, help="training molecules for the xTB-gap distribution")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--prior-weight", type=float, default=0.1)
    ap.add_argument("--decode-every", type=int, default=10)
    ap.add_argument("--method", default="gradient", choices=["gradient", "random"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--timing-only", action="store_true", help="only time the gradient steps (no oracle, no decoding)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = atomarch.load_model(args.ckpt)
    z = np.random.default_rng(args.seed).normal(size=(args.n, model.cfg.model.latent_dim)).astype(np.float32)
    step = gradient_step_seconds(model, z, args.steps)
    print(f"gradient step for {args.n} latents at once (decoding excluded): {1000 * step:.2f} ms")
    if args.timing_only:
        return
    dm = model.datamodule()
    rng = np.random.default_rng(args.seed)
    oracle = XTBOracle()

    ref_idx = rng.choice(dm.split["train"], args.reference, replace=False)
    t = time.perf_counter()
    ref = oracle([dm.packed.atoms(int(k)) for k in ref_idx])["xtb_gap"]
    ref = ref[np.isfinite(ref)]
    print(f"reference: xTB gap of {len(ref)} training molecules in {time.perf_counter() - t:.1f} s; "
          f"median {np.median(ref):.2f} eV, 5/10/15 % quantiles {np.percentile(ref, [5, 10, 15]).round(2).tolist()}, "
          f"85/90/95 % {np.percentile(ref, [85, 90, 95]).round(2).tolist()}")

    starts_idx = rng.choice(dm.split[args.split], args.n, replace=False)
    starts = [dm.packed.atoms(int(k)) for k in starts_idx]
    start_gap = oracle(starts)["xtb_gap"]
    t = time.perf_counter()
    model.decode(model.encode(starts[:20]), seed=0)
    per_decode = (time.perf_counter() - t) / 20
    results = {"seconds_per_decode": per_decode, "seconds_per_gradient_step": step, "ckpt": args.ckpt, "n": args.n, "steps": args.steps, "lr": args.lr, "prior_weight": args.prior_weight,
               "method": args.method, "reference_n": int(len(ref)), "reference_median": float(np.median(ref))}
    for direction in ("max", "min"):
        t = time.perf_counter()
        traj = model.optimize(starts, {"gap": direction}, steps=args.steps, lr=args.lr, prior_weight=args.prior_weight,
                              decode_every=args.decode_every, method=args.method, seed=args.seed, progress=True)
        t_total = time.perf_counter() - t
        n_dec = traj.valid.size
        t = time.perf_counter()
        gaps = traj.judge(oracle)["xtb_gap"]
        t_oracle = time.perf_counter() - t
        sign = 1.0 if direction == "max" else -1.0
        best = traj.best_valid(sign * gaps)
        best_gap = np.array([gaps[s, b] if b >= 0 else np.nan for s, b in enumerate(best)])
        final_valid = traj.valid[:, -1]
        row = {
            "valid_final": float(final_valid.mean()),
            "valid_any_step": float(traj.valid.mean()),
            "median_xtb_gap_start": float(np.nanmedian(start_gap)),
            "median_xtb_gap_reconstruction": float(np.nanmedian(np.where(traj.valid[:, 0], gaps[:, 0], np.nan))),
            "median_xtb_gap_final_valid": float(np.nanmedian(np.where(final_valid, gaps[:, -1], np.nan))),
            "median_xtb_gap_best_valid": float(np.nanmedian(best_gap)),
            "median_pred_gap_start": float(np.median(traj.predicted["gap"][:, 0])),
            "median_pred_gap_final": float(np.median(traj.predicted["gap"][:, -1])),
            "changed_molecule": float(np.mean([traj.smiles[s][-1] != traj.smiles[s][0] for s in range(args.n)])),
            "seconds_total": t_total,
            "decoded_structures": int(n_dec),
            "seconds_per_decoded_structure": t_total / n_dec,
            "seconds_oracle_per_structure": t_oracle / n_dec,
        }
        for q in (5, 10, 15):
            thr = np.percentile(ref, 100 - q) if direction == "max" else np.percentile(ref, q)
            ok = best_gap >= thr if direction == "max" else best_gap <= thr
            row[f"SR{q}"] = float(np.nan_to_num(ok, nan=0.0).mean())
            row[f"SR{q}_threshold"] = float(thr)
        results[direction] = row
        print(f"\n== gap:{direction} ({args.method}, {args.steps} steps, lr {args.lr}, prior weight {args.prior_weight}) ==")
        for k, v in row.items():
            print(f"  {k:<32} {v:.4f}" if isinstance(v, float) else f"  {k:<32} {v}")
    print(f"\ntime per decoded molecule (encode+decode, 20 molecules): {per_decode:.3f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
