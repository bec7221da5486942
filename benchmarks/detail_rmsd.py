"""How close is the detail level's 3D geometry to QM9's DFT geometry?

Reconstructs ``-n`` test molecules with each detail level (MMFF, GFN2-xTB) and reports, over the
molecules whose SMILES match (EDM bond perception, as ``atomarch evaluate``), the heavy-atom RMSD
to the DFT geometry (mean, median, share under 0.5 Å) and the time per molecule.

    python benchmarks/detail_rmsd.py --ckpt checkpoints/qm9-vae -n 200
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="checkpoints/qm9-vae")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--relax", nargs="+", default=["mmff", "xtb"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import atomarch
    from atomarch.evaluation import datamodule_for
    from atomarch.metrics import evaluate_reconstruction

    model = atomarch.load_model(args.ckpt)
    dm = datamodule_for(model)
    originals = [dm.packed.atoms(int(k)) for k in dm.split["test"][: args.n]]
    print(f"{'detail level':<12} {'matched':>8} {'RMSD mean':>10} {'median':>8} {'< 0.5 Å':>8} {'s/molecule':>11}")
    for relax in args.relax:
        t0 = time.perf_counter()
        decoded = model.reconstruct(originals, seed=0, relax=relax)
        dt = (time.perf_counter() - t0) / len(originals)
        rec = evaluate_reconstruction(originals, decoded)
        rmsd = np.array([r for r, m in zip(rec["rmsd"], rec["smiles_matched"]) if m and r is not None])
        print(f"{relax:<12} {100 * rec['smiles_match']:>7.1f}% {rmsd.mean():>9.3f}Å {np.median(rmsd):>7.3f}Å "
              f"{100 * (rmsd < 0.5).mean():>7.1f}% {dt:>11.2f}")


if __name__ == "__main__":
    main()
