"""Encoder throughput on this machine.

1. molecules/s of forward+backward (+ Adam step) on batches of 64 random QM9 molecules for the
   default e3nn encoder (l <= 2), the l <= 1 encoder of configs/qm9_property.yaml (the shipped QM9
   models') and the SchNet baseline, all measured in the same run, round-robin (ratios are what
   to compare; the machine is noisy); each e3nn encoder twice: with atomarch's fused evaluation
   of the tensor-product convolution (the default, atomarch.nn.tensor_product) and with e3nn's
   own o3.TensorProduct (the reference; the same function to float precision);
2. atoms/s of a forward pass of the default encoder on periodic cells of 100, 1,000 and
   10,000 atoms (density 0.1 atoms/Å^3, 5 Å cutoff), with the neighbour-list time apart.
   Cost per atom should stay flat (linear scaling).

Usage: python benchmarks/encoder_throughput.py [--threads N] [--repeats R]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from ase import Atoms

from atomarch.config import EncoderConfig, load_config
from atomarch.data.datasets import StructureDataset
from atomarch.data.graph import batch_from_atoms, collate
from atomarch.data.qm9 import load_qm9
from atomarch.nn.encoders import build_encoder

ELEMENTS = [1, 6, 7, 8, 9]


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t)
    return float(np.median(best))


def training_step(cfg: EncoderConfig, batches, fused: bool = True):
    """A closure running forward+backward+Adam over ``batches`` for a fresh encoder of ``cfg``
    (``fused``: atomarch's tensor-product evaluation, else e3nn's)."""
    torch.manual_seed(0)
    enc = build_encoder(cfg, 5.0, ELEMENTS, 128)
    for layer in getattr(enc, "layers", []):
        layer.use_fused = fused
    opt = torch.optim.Adam(enc.parameters(), lr=1e-4)

    def step():
        for b in batches:
            mu, logvar = enc(b)
            loss = mu.pow(2).mean() + logvar.pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    return step


def round_robin(steps: list, repeats: int) -> list[float]:
    """Median seconds of each closure, timed in turns (warm-up first) so load drifts hit all alike."""
    for step in steps:
        step()
    times = [[] for _ in steps]
    for _ in range(repeats):
        for k, step in enumerate(steps):
            t = time.perf_counter()
            step()
            times[k].append(time.perf_counter() - t)
    return [float(np.median(t)) for t in times]


def periodic_cell(n: int, rng: np.random.Generator) -> Atoms:
    """n atoms on a jittered cubic grid at 0.1 atoms/Å^3 (no overlaps), H/C/N/O/F mixed."""
    side = (n / 0.1) ** (1 / 3)
    m = int(np.ceil(n ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
    frac = (grid + 0.5 + rng.uniform(-0.2, 0.2, size=(n, 3))) / m
    return Atoms(numbers=rng.choice(ELEMENTS, n), scaled_positions=frac, cell=np.eye(3) * side, pbc=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    packed = load_qm9()
    idx = np.random.RandomState(0).permutation(len(packed))[: 64 * 4]
    ds = StructureDataset(packed, idx, [])
    batches = [collate([ds[k] for k in range(64 * i, 64 * i + 64)], 5.0) for i in range(4)]
    print(f"QM9 batches of 64: {batches[0].z.numel()} atoms, {batches[0].edge_index.shape[1]} edges (first batch)")

    prop = load_config("configs/qm9_property.yaml").model.encoder
    default = EncoderConfig()
    rows = [
        (f"e3nn default ({default.irreps_hidden}, l<={default.lmax}), fused", default, True),
        (f"e3nn default, e3nn's TensorProduct", default, False),
        (f"e3nn qm9_property ({prop.irreps_hidden}, l<={prop.lmax}), fused", prop, True),
        (f"e3nn qm9_property, e3nn's TensorProduct", prop, False),
        ("SchNet baseline (128 features, 3 interactions)", EncoderConfig(kind="schnet", hidden=128, num_layers=3), True),
    ]
    print("\nforward+backward+Adam, molecules/s (ratio to SchNet in this run; 3 layers each)")
    seconds = round_robin([training_step(cfg, batches, fused) for _, cfg, fused in rows], args.repeats)
    n_mol = sum(b.num_graphs for b in batches)
    rates = [n_mol / t for t in seconds]
    for (name, _, _), rate in zip(rows, rates):
        print(f"  {name:<55} {rate:8.1f} mol/s   x{rate / rates[-1]:.2f}")
    print(f"  fused vs e3nn's TensorProduct: default x{rates[0] / rates[1]:.2f}, qm9_property x{rates[2] / rates[3]:.2f}")

    print("\nforward only, periodic cells (default e3nn encoder)")
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(), 5.0, ELEMENTS, 128).eval()
    rng = np.random.default_rng(0)
    per_atom = []
    for n in (100, 1_000, 10_000):
        atoms = periodic_cell(n, rng)
        t_nl = timed(lambda: batch_from_atoms([atoms], 5.0), args.repeats)
        batch = batch_from_atoms([atoms], 5.0)
        with torch.no_grad():
            t_fw = timed(lambda: enc(batch), args.repeats)
        per_atom.append(t_fw / n)
        print(f"  {n:>6} atoms  {batch.edge_index.shape[1]:>8} edges  neighbour list {t_nl * 1e3:8.1f} ms  "
              f"forward {t_fw * 1e3:9.1f} ms  {n / t_fw:9.0f} atoms/s  {t_fw / n * 1e6:7.1f} µs/atom")
    print(f"  cost per atom, 10,000 vs 100 atoms: x{per_atom[-1] / per_atom[0]:.2f} (1.0 = linear)")


if __name__ == "__main__":
    main()
