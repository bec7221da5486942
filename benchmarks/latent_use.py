"""How much each decoder level reads the latent: teacher-forced losses on validation structures
with z = the latent mean, z = 0 and z taken from another structure of the batch (shuffled).

A level whose loss hardly changes when z is zeroed or shuffled decodes from what the level above
gives it (the composition, the tokens so far), not from z: it cannot reconstruct beyond what is
typical for that composition, however well it fits. Nats per structure for the token levels
(``global``: composition, ``coarse``: skeleton); scaled squared errors for ``lattice`` /
``coords`` (see :mod:`atomarch.nn.decoders.symmetry`).

    python benchmarks/latent_use.py --ckpt checkpoints/mp20-vae --batches 8
"""

from __future__ import annotations

import argparse
import json
import warnings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--batches", type=int, default=8, help="validation batches (of the config's batch size)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON output")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import torch

    from atomarch.models.loading import load_model
    from atomarch.registry import DECODERS

    torch.set_num_threads(args.threads)
    model = load_model(args.ckpt)
    if model.decoder is None:
        raise SystemExit(f"{args.ckpt} has no decoder")
    dm = model.datamodule()
    vocab = getattr(model.decoder, "vocab", None)  # the graph decoder's SELFIES tokens (crystals: not needed)
    DECODERS.get(model.cfg.model.decoder.kind).attach_targets(dm, model.cfg.model, getattr(vocab, "tokens", None))
    gen = torch.Generator().manual_seed(args.seed)
    sums: dict[str, dict[str, float]] = {}
    n_total, sigma, spread = 0, [], []
    with torch.no_grad():
        for k, batch in enumerate(dm._loader(args.split, shuffle=False)):
            if k >= args.batches:
                break
            out = model.net(batch)
            mu, logvar = out["mu"], out["logvar"]
            sigma.append(float((0.5 * logvar).exp().mean()))
            spread.append(float(mu.std(0).mean()))
            perm = torch.randperm(len(mu), generator=gen)
            for name, z in (("z = mu", mu), ("z = 0", torch.zeros_like(mu)), ("z shuffled", mu[perm])):
                losses = model.decoder.losses(batch, z)
                row = sums.setdefault(name, {})
                for key, value in losses.items():
                    if key in ("global", "coarse", "hcount", "lattice", "coords", "fine"):
                        row[key] = row.get(key, 0.0) + float(value) * len(mu)
            n_total += len(mu)
    table = {name: {key: v / n_total for key, v in row.items()} for name, row in sums.items()}
    keys = list(next(iter(table.values())))
    print(f"{args.ckpt}: {n_total} {args.split} structures; posterior sigma {sum(sigma) / len(sigma):.3f} "
          f"(mean over dimensions), spread of the latent means {sum(spread) / len(spread):.3f}")
    print(f"{'':>12} " + " ".join(f"{k:>9}" for k in keys))
    for name, row in table.items():
        print(f"{name:>12} " + " ".join(f"{row[k]:9.2f}" for k in keys))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"ckpt": args.ckpt, "n": n_total, "split": args.split, "losses": table,
                       "posterior_sigma": sum(sigma) / len(sigma), "latent_spread": sum(spread) / len(spread)}, fh, indent=1)


if __name__ == "__main__":
    main()
