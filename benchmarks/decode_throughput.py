"""Decoding speed and quality against the decoder's work per molecule.

Decodes the same prior latents several ways and prints molecules/s on this machine with the EDM
metrics of the samples, so the speed/quality trade-off is measured in one run (the checkpoint's
default is marked):

* graph decoder (``decoder.kind: graph``): variants ``relax:conformers[:beams:compositions]``.
  ``beams`` = 1 with ``compositions`` = 1 is the greedy decoder (one GRU pass, one conformer, no
  encoder); more beams or compositions is the search the encoder verifies (the checkpoint's
  default: its ``decoder.beams`` x ``decoder.compositions``, ``decoder.conformers``). The detail
  level is compared without relaxation (ETKDG only), with MMFF94 and with GFN2-xTB (``tblite``;
  skipped if absent). Novelty (and V x U x N) is against the training split's SMILES. The
  skeleton rate of one greedy GRU pass is printed too.
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


def _row(label: str, n: int, dt: float, mols, mark: str, train: set[str] | None = None) -> None:
    m = evaluate_generated(mols, train)
    vun = f"{100 * m['valid_unique_novel']:6.1f}%" if m.get("valid_unique_novel") is not None else "      -"
    print(f"{label:>14} {n / dt:8.1f} {100 * m['atom_stability']:9.1f}% {100 * m['molecule_stability']:8.1f}% "
          f"{100 * m['validity']:6.1f}% {100 * m['uniqueness']:6.1f}% {vun}{mark}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default="checkpoints/qm9-vae")
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="none:1:1:1,mmff:1:1:1,mmff:8:1:1,mmff:1:8:1,mmff:8",
                    help="graph decoder: relax:conformers[:beams:compositions] to compare (default search when omitted)")
    ap.add_argument("--steps", default="5:2,10:3,20:5,40:10,80:20", help="flow decoder: coarse:fine pairs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = atomarch.load_model(args.ckpt)
    dc = model.cfg.model.decoder
    z = torch.randn(args.n, model.cfg.model.latent_dim, generator=torch.Generator().manual_seed(0))
    header = f"{'mol/s':>8} {'atom stab':>10} {'mol stab':>9} {'valid':>7} {'unique':>7} {'VxUxN':>7}"
    if dc.kind == "graph":
        from atomarch.evaluation import train_smiles

        train = train_smiles(model.datamodule())
        t = time.perf_counter()
        skeletons = model.decoder.skeletons(z)
        t_skel = time.perf_counter() - t
        print(f"{args.ckpt}: {args.n} prior samples, {torch.get_num_threads()} threads; one greedy GRU pass: "
              f"{args.n / t_skel:.0f} skeletons/s; default search: {dc.beams} beams x {dc.compositions} compositions, "
              f"{dc.conformers} conformers, verified by the encoder")
        print(f"{'relax:conf':>14} {header}")
        for variant in args.variants.split(","):
            relax, conf, *search = variant.split(":")
            beams, comps = (int(search[0]), int(search[1])) if search else (dc.beams, dc.compositions)
            if relax == "xtb" and importlib.util.find_spec("tblite") is None:
                print(f"{variant:>14}  skipped (pip install tblite)")
                continue
            t = time.perf_counter()
            opts = model.decode_options(seed=0, relax=relax, conformers=int(conf), beams=beams).replace(compositions=comps)
            mols = model.decode(z, options=opts)
            default = (relax, int(conf), beams, comps) == (dc.relax, dc.conformers, dc.beams, dc.compositions)
            _row(variant, args.n, time.perf_counter() - t, mols, " (default)" if default else "", train)
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
