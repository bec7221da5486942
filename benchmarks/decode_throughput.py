"""Decoding speed and quality against the number of ODE steps.

Decodes the same prior latents with several (coarse, fine) step counts and prints molecules/s
on this machine plus the EDM metrics of the samples, so the speed/quality trade-off is measured
in one run (the default step count of the checkpoint is marked).

Usage: python benchmarks/decode_throughput.py [--ckpt checkpoints/qm9-vae] [-n 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import atomarch
from atomarch.metrics import evaluate_generated


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default="checkpoints/qm9-vae")
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", default="5:2,10:3,20:5,40:10,80:20", help="coarse:fine pairs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = atomarch.load_model(args.ckpt)
    dc = model.cfg.model.decoder
    z = torch.randn(args.n, model.cfg.model.latent_dim, generator=torch.Generator().manual_seed(0))
    print(f"{args.ckpt}: {args.n} prior samples, {torch.get_num_threads()} threads; default steps {dc.coarse_steps}:{dc.fine_steps}")
    print(f"{'coarse:fine':>12} {'mol/s':>8} {'atom stab':>10} {'mol stab':>9} {'valid':>7} {'unique':>7}")
    for pair in args.steps.split(","):
        cs, fs = (int(v) for v in pair.split(":"))
        t = time.perf_counter()
        mols = model.decode(z, seed=0, coarse_steps=cs, fine_steps=fs)
        dt = time.perf_counter() - t
        m = evaluate_generated(mols)
        mark = " (default)" if (cs, fs) == (dc.coarse_steps, dc.fine_steps) else ""
        print(f"{pair:>12} {args.n / dt:8.1f} {100 * m['atom_stability']:9.1f}% {100 * m['molecule_stability']:8.1f}% "
              f"{100 * m['validity']:6.1f}% {100 * m['uniqueness']:6.1f}%{mark}")


if __name__ == "__main__":
    main()
