"""2D-image CNN baseline vs atomarch's E(3) encoder on U0 of planar QM9 molecules.

Planar subset: every atom (hydrogens included) within ``--tol`` Å of the molecule's best-fit
plane (0.285 Å keeps ~4,237 molecules, the size of the source report's planar set). Each
molecule is aligned to the xy plane by PCA and drawn as a 5-channel (H, C, N, O, F) image of
normalised Gaussians (γ = 0.2 Å, z ignored). Same seeded 80/10/10 split for:

* ``mean``: predict the training mean (the target's spread);
* ``composition``: least-squares fit of U0 on the element counts (a linear reference);
* ``CNN``: small CNN on the images, trained on standardised U0 (as in the source report);
* ``e3nn``: atomarch E3Encoder per-atom invariants → MLP → sum + the composition reference.

RMSE in Hartree (package energies are eV; 1 Ha = 27.211386 eV) on the test part.

Usage: python benchmarks/image_baseline.py [--tol 0.285] [--cnn-epochs 60] [--e3-epochs 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

from atomarch.config import EncoderConfig
from atomarch.data.qm9 import HARTREE_TO_EV, load_qm9
from atomarch.experiments.completion import make_batch
from atomarch.experiments.image_baseline import (
    ELEMENTS,
    AtomwiseE3Regressor,
    ImageCNN,
    element_counts,
    molecule_images,
    plane_deviation,
)

PUBLISHED_CNN_RMSE_HA = "5-8"


def rmse_ha(pred: np.ndarray, true: np.ndarray) -> float:
    """RMSE of eV arrays, in Hartree."""
    return float(np.sqrt(np.mean((pred - true) ** 2)) / HARTREE_TO_EV)


def train_cnn(img, y, split, epochs, lr, seed, batch_size=64):
    torch.manual_seed(seed)
    mu, sd = float(y[split["train"]].mean()), float(y[split["train"]].std())
    model = ImageCNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    tr = torch.as_tensor(split["train"])
    steps = epochs * ((len(tr) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    yt = torch.as_tensor((y - mu) / sd, dtype=torch.float32)
    best, best_state = np.inf, None
    for _ in range(epochs):
        model.train()
        perm = tr[torch.randperm(len(tr))]
        for s in range(0, len(perm), batch_size):
            b = perm[s : s + batch_size]
            loss = nn.functional.mse_loss(model(img[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        val = rmse_ha(predict_cnn(model, img, split["val"]) * sd + mu, y[split["val"]])
        if val < best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return lambda idx: predict_cnn(model, img, idx) * sd + mu


@torch.no_grad()
def predict_cnn(model, img, idx):
    model.eval()
    return np.concatenate([model(img[torch.as_tensor(idx[s : s + 256])]).numpy() for s in range(0, len(idx), 256)])


def train_e3(zs, ps, y, ref, split, epochs, lr, seed, batch_size=32, cutoff=5.0):
    torch.manual_seed(seed)
    cfg = EncoderConfig(kind="e3nn", irreps_hidden="32x0e + 16x1o + 8x2e", lmax=2, num_layers=3, hidden=64,
                        avg_num_neighbors=10.0)
    model = AtomwiseE3Regressor(cfg, cutoff, ref, scale=1.0)
    yt = torch.as_tensor(y, dtype=torch.float32)

    def batch_of(idx):
        z = torch.cat([zs[k] for k in idx])
        pos = torch.cat([ps[k] for k in idx])
        b = torch.repeat_interleave(torch.arange(len(idx)), torch.tensor([len(zs[k]) for k in idx]))
        return make_batch(z, pos, b, cutoff)

    @torch.no_grad()
    def predict(idx):
        model.eval()
        return np.concatenate([model(batch_of(idx[s : s + 128])).numpy() for s in range(0, len(idx), 128)])

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    tr = split["train"]
    steps = epochs * ((len(tr) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    rng = np.random.default_rng(seed)
    best, best_state = np.inf, None
    for ep in range(epochs):
        model.train()
        perm = rng.permutation(tr)
        for s in range(0, len(perm), batch_size):
            b = perm[s : s + batch_size]
            loss = nn.functional.mse_loss(model(batch_of(b)), yt[b])  # eV²
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if ep % 5 == 4 or ep == epochs - 1:
            val = rmse_ha(predict(split["val"]), y[split["val"]])
            if val < best:
                best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return predict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tol", type=float, default=0.285, help="planarity tolerance, Å (all atoms)")
    ap.add_argument("--cnn-epochs", type=int, default=60)
    ap.add_argument("--e3-epochs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    packed = load_qm9(verbose=False)
    dev = plane_deviation(packed)
    mols = np.flatnonzero(dev < args.tol)
    n = len(mols)
    col = packed.properties.index("U0")
    y = packed.y[mols, col].double().numpy()  # eV
    perm = np.random.default_rng(args.seed).permutation(n)
    n_tr, n_va = int(0.8 * n), int(0.1 * n)
    split = {"train": perm[:n_tr], "val": perm[n_tr : n_tr + n_va], "test": perm[n_tr + n_va :]}
    print(f"planar subset: {n} molecules with every atom within {args.tol} Å of the best-fit plane "
          f"({int((dev < 0.01).sum())} within 0.01 Å); split {n_tr}/{n_va}/{n - n_tr - n_va}", flush=True)
    te = split["test"]
    rows = {"mean": rmse_ha(np.full(len(te), y[split["train"]].mean()), y[te])}

    counts = element_counts(packed, mols)
    coef, *_ = np.linalg.lstsq(counts[split["train"]], y[split["train"]], rcond=None)
    rows["composition"] = rmse_ha(counts[te] @ coef, y[te])

    t = time.time()
    img = molecule_images(packed, mols)
    t_img = time.time() - t
    t = time.time()
    cnn = train_cnn(img, y, split, args.cnn_epochs, 1e-3, args.seed)
    rows["CNN"] = rmse_ha(cnn(te), y[te])
    times = {"images": t_img, "CNN": time.time() - t}
    print(f"CNN: {rows['CNN']:.3f} Ha ({times['CNN']:.0f} s)", flush=True)

    zs = [packed.z[int(packed.ptr[k]) : int(packed.ptr[k + 1])].long() for k in mols]
    ps = [packed.pos[int(packed.ptr[k]) : int(packed.ptr[k + 1])].float() for k in mols]
    t = time.time()
    e3 = train_e3(zs, ps, y, torch.as_tensor(coef), split, args.e3_epochs, 3e-3, args.seed)  # ref = composition fit
    pred = e3(te)  # includes the composition reference
    rows["e3nn"] = rmse_ha(pred, y[te])
    times["e3nn"] = time.time() - t

    print()
    print(f"{'model':12s} {'test RMSE (Ha)':>15s} {'test RMSE (eV)':>15s} {'published (Ha)':>15s} {'train time':>11s}")
    for name, r in rows.items():
        pub = PUBLISHED_CNN_RMSE_HA if name == "CNN" else "-"
        tt = f"{times[name]:.0f} s" if name in times else "-"
        print(f"{name:12s} {r:15.4f} {r * HARTREE_TO_EV:15.4f} {pub:>15s} {tt:>11s}")
    print(f"U0 test std {y[te].std() / HARTREE_TO_EV:.2f} Ha; {n} planar molecules (tol {args.tol} Å); "
          f"images {img.shape[1]}x{img.shape[2]}x{img.shape[3]}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "n_planar": n, "rmse_hartree": rows, "seconds": times,
                       "published_cnn_rmse_hartree": PUBLISHED_CNN_RMSE_HA, "elements": ELEMENTS}, fh, indent=2)


if __name__ == "__main__":
    main()
