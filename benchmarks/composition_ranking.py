"""Where a crystal VAE's global level ranks the true composition: top-1 / 5 / 10 / 20 / 100.

Encodes a split (latent means, as reconstruction does), asks the decoder's global level for its
``--k`` most likely cell compositions (:meth:`SymmetryDecoder.compositions`, the proposals that
decoding verifies) and counts how often the crystal's own primitive-cell composition is among
the first 1, 5, 10, 20, 100. Also the atom count and the element set of the first proposal.
Reconstruction cannot be right when the composition is not proposed, so this bounds it.

    python benchmarks/composition_ranking.py --ckpt checkpoints/mp20-vae --split val
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
import torch

TOPS = (1, 5, 10, 20, 100)


def ranks(ckpt: str, split: str, k: int = 100, batch_size: int = 128) -> dict:
    """Rank (0-based; k when not proposed) of each crystal's composition among the global level's
    ``k`` proposals, with the share of crystals in each top-n and the first proposal's atom-count
    and element-set accuracy."""
    from torch.utils.data import DataLoader

    from atomarch.data.graph import Collater
    from atomarch.models.loading import load_model

    model = load_model(ckpt)
    decoder = model.decoder
    if decoder is None or not hasattr(decoder, "compositions"):
        raise SystemExit(f"{ckpt}: not a crystal VAE with a symmetry decoder")
    dm = model.datamodule()
    type(decoder).attach_targets(dm, model.cfg.model)
    loader = DataLoader(dm.dataset(split), batch_size=batch_size, shuffle=False, collate_fn=Collater(model.cutoff))
    out: list[int] = []
    natoms_ok, elements_ok = [], []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            mu = model(batch)["mu"]
            true = decoder.counts(batch).long()
            if batch.tokens is not None:  # the primitive cell the skeleton describes
                has = batch.tokens[:, 0] != 0
                true = torch.where(has.unsqueeze(1), batch.targets["counts"].long(), true)
            cands, lp = decoder.compositions(mu, k)
            hit = (cands == true.unsqueeze(1)).all(-1) & torch.isfinite(lp)
            r = torch.where(hit.any(1), hit.float().argmax(1), torch.full((len(mu),), k))
            out += r.tolist()
            natoms_ok += (cands[:, 0].sum(-1) == true.sum(-1)).tolist()
            elements_ok += ((cands[:, 0] > 0) == (true > 0)).all(-1).tolist()
    r = np.asarray(out)
    return {"ckpt": ckpt, "split": split, "n": int(len(r)),
            "composition": model.cfg.model.decoder.composition,
            **{f"top{t}": float(np.mean(r < t)) for t in TOPS if t <= k},
            "first_natoms_right": float(np.mean(natoms_ok)), "first_elements_right": float(np.mean(elements_ok))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", nargs="+", required=True, help="one or more crystal VAE checkpoints")
    ap.add_argument("--split", default="val")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="JSON output")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [ranks(c, args.split, args.k) for c in args.ckpt]
    head = f"{'checkpoint':<44} {'level':<8} {'n':>5} " + " ".join(f"{'top' + str(t):>7}" for t in TOPS if t <= args.k)
    print(head + f" {'#atoms':>7} {'elements':>8}")
    for row in rows:
        print(f"{row['ckpt']:<44} {row['composition']:<8} {row['n']:>5} "
              + " ".join(f"{100 * row[f'top{t}']:>6.1f}%" for t in TOPS if t <= args.k)
              + f" {100 * row['first_natoms_right']:>6.1f}% {100 * row['first_elements_right']:>7.1f}%")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
