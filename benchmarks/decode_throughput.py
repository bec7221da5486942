"""Decoding speed and quality against the decoder's work per molecule.

Decodes the same prior latents several ways and prints molecules/s on this machine with the EDM
metrics of the samples, so the speed/quality trade-off is measured in one run (the checkpoint's
default is marked):

* graph decoder (``decoder.kind: graph``): the skeleton is one greedy pass of the GRU (one step
  per SELFIES token, at most ``max_length``); the detail level is compared without relaxation
  (ETKDG only), with MMFF94 and with GFN2-xTB (``tblite``; skipped if absent), and with 1 or K
  conformers (the one whose latent is closest to z is kept). The skeleton rate is printed too.
* flow decoder (``decoder.kind: flow``): (coarse, fine) ODE step counts.

Usage: python benchmarks/decode_throughput.py [--ckpt checkpoints/qm9-vae] [-n 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch

import atomarch
from atomarch.metrics import evaluate_generated


def _row(label: str, n: int, dt: float, mols, mark: str) -> None:
    m = evaluate_generated(mols)
    print(f"{label:>14} {n / dt:8.1f} {100 * m['atom_stability']:9.1f}% {100 * m['molecule_stability']:8.1f}% "
          f"{100 * m['validity']:6.1f}% {100 * m['uniqueness']:6.1f}%{mark}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default="checkpoints/qm9-vae")
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="none:1,mmff:1,mmff:8,xtb:1",
                    help="graph decoder: relax:conformers pairs to compare")
    ap.add_argument("--steps", default="5:2,10:3,20:5,40:10,80:20", help="flow decoder: coarse:fine pairs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = atomarch.load_model(args.ckpt)
    dc = model.cfg.model.decoder
    z = torch.randn(args.n, model.cfg.model.latent_dim, generator=torch.Generator().manual_seed(0))
    header = f"{'mol/s':>8} {'atom stab':>10} {'mol stab':>9} {'valid':>7} {'unique':>7}"
    if dc.kind == "graph":
        t = time.perf_counter()
        skeletons = model.decoder.skeletons(z)
        t_skel = time.perf_counter() - t
        print(f"{args.ckpt}: {args.n} prior samples, {torch.get_num_threads()} threads; one greedy GRU pass: "
              f"{args.n / t_skel:.0f} skeletons/s; decoding uses a {dc.beams}-beam search + encoder verification")
        print(f"{'relax:conf':>14} {header}")
        for variant in args.variants.split(","):
            relax, conf = variant.split(":")
            if relax == "xtb" and importlib.util.find_spec("tblite") is None:
                print(f"{variant:>14}  skipped (pip install tblite)")
                continue
            t = time.perf_counter()
            mols = model.decode(z, seed=0, relax=relax, conformers=int(conf))
            default = (relax, int(conf)) == (dc.relax, dc.conformers)
            _row(variant, args.n, time.perf_counter() - t, mols, " (default)" if default else "")
        return
    print(f"{args.ckpt}: {args.n} prior samples, {torch.get_num_threads()} threads; default steps {dc.coarse_steps}:{dc.fine_steps}")
    print(f"{'coarse:fine':>14} {header}")
    for pair in args.steps.split(","):
        cs, fs = (int(v) for v in pair.split(":"))
        t = time.perf_counter()
        mols = model.decode(z, seed=0, coarse_steps=cs, fine_steps=fs)
        _row(pair, args.n, time.perf_counter() - t, mols, " (default)" if (cs, fs) == (dc.coarse_steps, dc.fine_steps) else "")


if __name__ == "__main__":
    main()
