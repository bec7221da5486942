"""Can the decoder learn? Overfit the tiny VAE on a few QM9 molecules and diagnose each level.

Trains ``configs/tiny_flow.yaml`` (or --config) on the first N training molecules for S steps
(plain loop, one thread by default), then prints:

* the global level's composition accuracy and reconstruction metrics (SMILES / heavy-graph
  match, heavy-atom RMSD) of those same molecules;
* the skeleton denoiser's one-shot error sqrt(|x1_hat - x1|^2) at fixed flow times t
  (how well the network predicts the clean skeleton from a point on its training path);
* the skeleton ODE started from noise: heavy-atom RMSD of the running estimate x1_hat and of
  x_t along the trajectory for the first molecule (shows where sampling locks in);
* heavy-atom RMSD of the decoded skeletons against the number of ODE steps.

Usage: python benchmarks/decoder_overfit.py [-n 64] [--steps 3000] [--config configs/tiny_flow.yaml] [KEY=VALUE ...]
Measured 2026-11-22 (tiny_flow, 8 molecules, 1,500 steps): one-shot error 0.03 Å at t = 1,
0.3 Å at t = 0.6, yet decoding from noise ends ~1 Å away (x1_hat locks in near 0.7 Å by t ≈ 0.4).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pytorch_lightning as pl
import torch
from ase import Atoms

from atomarch.config import load_config
from atomarch.data.datamodule import build_datamodule
from atomarch.metrics import evaluate_reconstruction, heavy_atom_rmsd
from atomarch.models.api import AtomarchModel
from atomarch.models.task import AtomarchTask
from atomarch.nn.flows import center


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=64, help="training molecules to overfit")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--config", default="configs/tiny_flow.yaml")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [f"data.train_subset={args.n}", f"data.batch_size={min(32, args.n)}", *args.overrides])
    dm = build_datamodule(cfg.data)
    dm.setup()
    pl.seed_everything(0, verbose=False)
    task = AtomarchTask(cfg.to_dict(), dm.target_stats())
    model = AtomarchModel(net=task.model)
    opt = torch.optim.Adam(task.parameters(), lr=cfg.train.lr)
    batches = list(dm._loader("train", shuffle=False))
    t0, step = time.time(), 0
    while step < args.steps:
        for b in batches:
            task.train()
            losses = task.losses(b, task(b), sample_z=True)
            for g in opt.param_groups:
                g["lr"] = cfg.train.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + np.cos(np.pi * step / args.steps))
            opt.zero_grad()
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(task.parameters(), cfg.train.grad_clip)
            opt.step()
            step += 1
            if step % 250 == 0:
                print(f"step {step} ({time.time() - t0:.0f} s): "
                      + ", ".join(f"{k} {float(v):.3f}" for k, v in losses.items()), flush=True)
    model.eval()
    frames = [dm.packed.atoms(int(k)) for k in dm.split["train"]]
    rec = evaluate_reconstruction(frames, model.reconstruct(frames, seed=0))
    print({k: v for k, v in rec.items() if not isinstance(v, list)})

    dec = model.decoder
    print("one-shot skeleton error at fixed t (Å, RMS over atoms):")
    with torch.no_grad():
        for t in (0.0, 0.3, 0.6, 0.8, 0.9, 1.0):
            errs = [float(dec.losses(b, model(b)["mu"], t_fixed=t)["coarse"]) for b in batches]
            print(f"  t={t:.1f}  {np.sqrt(np.mean(errs)):.3f}")

    a = frames[0]
    heavy = a[a.numbers > 1]
    z = torch.tensor(model.encode([a]))
    types = dec.type_of_z[torch.tensor(heavy.numbers)]
    hb = torch.zeros(len(heavy), dtype=torch.long)
    x = center(dec._noise(hb, 0, 0, None, dec._noise_rows()) * cfg.model.decoder.noise_std, hb, 1)
    cs, sc = cfg.model.decoder.coarse_steps, None
    print(f"trajectory of molecule 0 ({heavy.get_chemical_formula()}), {cs} steps: RMSD of x1_hat / x_t (Å)")
    with torch.no_grad():
        for k in range(cs):
            d, _ = dec.coarse(x, types, hb, torch.full((1,), k / cs), z, self_cond=sc)
            d = center(d, hb, 1)
            sc = x + d if cfg.model.decoder.self_condition else None
            if k % max(1, cs // 8) == 0 or k == cs - 1:
                r_hat = heavy_atom_rmsd(heavy, Atoms(numbers=heavy.numbers, positions=(x + d).numpy()))
                r_t = heavy_atom_rmsd(heavy, Atoms(numbers=heavy.numbers, positions=x.numpy()))
                print(f"  t={k / cs:.3f}  {r_hat:.2f} / {r_t:.2f}")
            x = x + d / (cs - k)
    print("skeleton RMSD (median over molecules) vs coarse ODE steps:")
    for steps in (1, 5, 20, 100):
        out = model.reconstruct(frames, seed=0, coarse_steps=steps, fine_steps=0)
        r = [v for v in (heavy_atom_rmsd(p, q) for p, q in zip(frames, out)) if v is not None]
        text = f"{np.median(r):.3f} Å over {len(r)} molecules" if r else "no decoded composition matches"
        print(f"  {steps:>4} steps  {text}")


if __name__ == "__main__":
    main()
