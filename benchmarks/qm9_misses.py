"""Why QM9 reconstructions miss: every validation (or test) molecule's reconstruction sorted into
the first level of the hierarchy that went wrong.

The reconstruction metric (``atomarch evaluate``) compares canonical SMILES perceived with EDM's
distance rule from both 3D structures. A miss can come from:

* ``original unreadable``: EDM's rule gives no valid molecule for the DFT geometry itself
  (no decoder can match it);
* ``composition``: the decoded molecule has other heavy atoms;
* ``skeleton``: right composition, another heavy-atom graph (the GRU + verification chose wrong);
* ``bond orders``: same heavy-atom graph, the skeleton's SMILES differs from the original's
  (RDKit ``DetermineBonds`` of the DFT geometry), i.e. the skeleton level wrote other bond orders
  or charges;
* ``perception``: the skeleton is the original molecule (same RDKit SMILES), yet EDM's rule
  reads the decoded 3D geometry (MMFF) differently from the DFT one.

Usage: python benchmarks/qm9_misses.py [--ckpt checkpoints/qm9-vae] [--split val] [-n 200]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
import torch
from rdkit import Chem

import atomarch
from atomarch.chem.bonds import determine_bonds, mol_smiles
from atomarch.metrics import evaluate_reconstruction


def rdkit_smiles(atoms) -> str | None:
    """Canonical SMILES (no stereo, no H) from RDKit's DetermineBonds of a 3D structure."""
    mol = determine_bonds(atoms)
    return None if mol is None else mol_smiles(mol, largest_fragment=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default="checkpoints/qm9-vae")
    ap.add_argument("--split", default="val")
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--show", type=int, default=8, help="examples printed per category")
    ap.add_argument("--recheck", type=int, default=None,
                    help="candidates per molecule re-embedded with all conformers before the skeleton choice")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = atomarch.load_model(args.ckpt)
    dm = model.datamodule()
    idx = np.asarray(dm.split[args.split])
    pick = np.random.default_rng(args.seed).choice(len(idx), size=min(args.n, len(idx)), replace=False)
    originals = [dm.packed.atoms(int(idx[k])) for k in pick]
    t = time.perf_counter()
    decoded = model.reconstruct(originals, options=model.decode_options(recheck=args.recheck, progress=True))
    dt = time.perf_counter() - t
    rec = evaluate_reconstruction(originals, decoded)
    cats: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for k, (a, b) in enumerate(zip(originals, decoded)):
        s_orig, s_dec = rec["smiles_original"][k], rec["smiles_decoded"][k]
        if rec["smiles_matched"][k]:
            cat = "match"
        elif s_orig is None:
            cat = "original unreadable"
        elif rec["rmsd"][k] is None:
            cat = "composition"
        elif not rec["graph_matched"][k]:
            cat = "skeleton"
        else:
            true = rdkit_smiles(a)
            skel_mol = Chem.MolFromSmiles(b.info["smiles"]) if b.info.get("smiles") else None
            skel = mol_smiles(skel_mol) if skel_mol is not None else None
            cat = "perception" if true is not None and skel == true else "bond orders"
        cats[cat] += 1
        if cat != "match":
            examples.setdefault(cat, []).append(f"{s_orig} -> {s_dec} (skeleton {b.info.get('smiles')})")
    n = len(originals)
    print(f"{args.ckpt}: {n} {args.split} molecules, {dt / n:.2f} s per molecule")
    for cat in ("match", "original unreadable", "composition", "skeleton", "bond orders", "perception"):
        print(f"  {cat:<20} {cats[cat]:4d}  {100 * cats[cat] / n:5.1f} %")
    for cat, rows in examples.items():
        print(f"\n{cat}:")
        for row in rows[: args.show]:
            print("  " + row)


if __name__ == "__main__":
    main()
