"""Missing-atom completion on QM9 (tensor field network experiment) with atomarch's encoder.

Train on ``--n-train`` molecules of 5–18 atoms (hydrogens count), each seen ``--epochs``
times with a different random atom removed; test on ``--n-test`` molecules of 19, of 23 and
of 25–29 atoms (one random atom removed per molecule, seeded), plus a randomly rotated and
translated copy of each test set. Prints accuracy (element right AND within 0.5 Å), element
accuracy and distance MAE beside the published tensor-field-network numbers.

Usage: python benchmarks/missing_atom.py [--epochs 200] [--n-train 1000] [--n-test 1000]
       [--max-minutes M] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from atomarch.data.qm9 import load_qm9
from atomarch.experiments.completion import CompletionModel, evaluate, molecules_by_size, remove_atoms, train_completion

#: published tensor field network results: set -> (accuracy %, distance MAE Å)
PUBLISHED = {
    "train (5-18)": (92.6, "0.14-0.17"),
    "test 19": (94.7, "0.14-0.17"),
    "test 23": (96.9, "0.14-0.17"),
    "test 25-29": (97.8, "0.14-0.17"),
}
SETS = {"train (5-18)": (5, 18), "test 19": (19, 19), "test 23": (23, 23), "test 25-29": (25, 29)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=200, help="passes over the training molecules (published: ~200)")
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=1000, help="molecules per test set")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--irreps", default="32x0e + 16x1o + 8x2e")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--cutoff", type=float, default=5.0, help="radius graph cutoff, Å")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop training after this wall time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    packed = load_qm9(verbose=False)
    torch.manual_seed(args.seed)
    model = CompletionModel(irreps_hidden=args.irreps, num_layers=args.layers, cutoff=args.cutoff)
    n_params = sum(p.numel() for p in model.parameters())
    train_mols = molecules_by_size(packed, 5, 18, args.n_train, args.seed)
    print(f"training on {len(train_mols)} molecules x {args.epochs} epochs ({n_params:,} parameters)", flush=True)
    info = train_completion(
        model, packed, train_mols, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        max_seconds=None if args.max_minutes is None else 60 * args.max_minutes, log_every=10,
    )
    print(f"trained {info['epochs']} epochs, {info['steps']} steps in {info['seconds']:.0f} s", flush=True)

    rng = np.random.default_rng(args.seed + 1)
    rot = torch.as_tensor(_rotation(np.random.default_rng(args.seed + 2)), dtype=torch.float32)
    shift = torch.tensor([3.0, -2.0, 1.5])
    rows = {}
    for name, (lo, hi) in SETS.items():
        mols = train_mols if name.startswith("train") else molecules_by_size(packed, lo, hi, args.n_test, args.seed + 7)
        ex = remove_atoms(packed, mols, rng)
        t = time.time()
        res = evaluate(model, ex)
        res["eval_seconds"] = time.time() - t
        res["rotated_accuracy"] = evaluate(model, ex.transformed(rot, shift))["accuracy"]
        rows[name] = res

    print()
    print(f"{'set':14s} {'n':>5s} {'acc % (published)':>18s} {'acc % (ours)':>12s} {'rotated':>8s} "
          f"{'element %':>9s} {'MAE Å (pub.)':>12s} {'MAE Å (ours)':>12s}")
    for name, r in rows.items():
        pa, pm = PUBLISHED[name]
        print(f"{name:14s} {r['n']:5d} {pa:18.1f} {100 * r['accuracy']:12.1f} {100 * r['rotated_accuracy']:8.1f} "
              f"{100 * r['element_accuracy']:9.1f} {pm:>12s} {r['distance_mae']:12.3f}")
    print(f"train time {info['seconds'] / 60:.1f} min ({info['epochs']} epochs, {info['steps']} steps, "
          f"batch {args.batch_size}, {args.threads} thread(s))")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "train": info, "parameters": n_params, "results": rows,
                       "published": PUBLISHED}, fh, indent=2)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


if __name__ == "__main__":
    main()
