"""Large structures: encoding time and peak memory for 5,000 and 50,000 atoms.

Encodes, with the shipped property model (``checkpoints/qm9-property``, ``atomarch.load_model``),
a non-periodic cloud and a periodic cell of 5,000 and of 50,000 atoms: C/H on a jittered
simple-cubic grid at a liquid-like density (2.15 Å spacing, 0.10 atoms/Å³, minimum separation
> 1.5 Å; about 50 neighbours per atom within the 5 Å cutoff). Each case runs in a fresh
process, so its peak resident memory (``resource.getrusage``, ru_maxrss) is its own; the table
gives the wall time of the encoding (input checks + neighbour list + forward pass, also apart),
the peak RSS of the process, and that peak minus the RSS after loading the model. Time and the
memory above the baseline should grow ~10x from 5k to 50k atoms (linear scaling).

Usage: python benchmarks/large_structures.py [--ckpt checkpoints/qm9-property] [--threads 1]
       python benchmarks/large_structures.py --case 50000 --periodic   (one case, JSON line)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {5_000: (10, 20, 25), 50_000: (25, 40, 50)}
SPACING = 2.15  # Å: 0.1 atoms/Å^3


def rss_mb() -> float:
    """Current resident set size (MB), from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def structure(n: int, periodic: bool, seed: int = 0):
    import numpy as np
    from ase import Atoms

    shape = SHAPES[n]
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(k) for k in shape], indexing="ij"), -1).reshape(-1, 3)
    pos = grid * SPACING + rng.uniform(-0.3, 0.3, (len(grid), 3))
    numbers = np.where(rng.random(len(grid)) < 0.4, 6, 1)  # C/H
    if periodic:
        return Atoms(numbers=numbers, positions=pos, cell=np.diag(shape) * SPACING, pbc=True)
    return Atoms(numbers=numbers, positions=pos)


def run_case(ckpt: str, n: int, periodic: bool, threads: int) -> dict:
    """Encode one structure: the steps of ``model.encode`` (input checks, neighbour list and
    batch, encoder forward) timed apart. They are called directly so that the periodic cells
    run on the molecule-trained QM9 model, which ``encode`` may refuse by policy."""
    import torch

    import atomarch
    from atomarch.data.graph import batch_from_atoms
    from atomarch.data.structures import check_structures

    torch.set_num_threads(threads)
    atoms = structure(n, periodic)
    model = atomarch.load_model(ckpt)
    base = rss_mb()
    t0 = time.perf_counter()
    check_structures([atoms], model.elements)
    t1 = time.perf_counter()
    batch = batch_from_atoms([atoms], model.cutoff)
    t2 = time.perf_counter()
    with torch.no_grad():
        z = model.encoder(batch.to(model.device))[0]
    t3 = time.perf_counter()
    peak = peak_rss_mb()
    assert z.shape[0] == 1 and bool(torch.isfinite(z).all())
    return {"atoms": n, "periodic": periodic, "edges": int(batch.edge_index.shape[1]), "encode_s": round(t3 - t0, 2),
            "checks_s": round(t1 - t0, 2), "graph_s": round(t2 - t1, 2), "forward_s": round(t3 - t2, 2),
            "peak_rss_mb": round(peak), "baseline_rss_mb": round(base), "above_baseline_mb": round(peak - base)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default=str(ROOT / "checkpoints" / "qm9-property"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--case", type=int, choices=sorted(SHAPES), default=None)
    ap.add_argument("--periodic", action="store_true")
    args = ap.parse_args()
    if args.case is not None:
        print(json.dumps(run_case(args.ckpt, args.case, args.periodic, args.threads)))
        return
    rows = []
    for periodic in (False, True):
        for n in sorted(SHAPES):
            cmd = [sys.executable, __file__, "--ckpt", args.ckpt, "--threads", str(args.threads), "--case", str(n)]
            res = subprocess.run(cmd + (["--periodic"] if periodic else []), capture_output=True, text=True,
                                 env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
            if res.returncode != 0:
                sys.exit(f"case {n} periodic={periodic} failed:\n{res.stderr[-3000:]}")
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print(f"\n{'structure':<10} {'atoms':>7} {'edges':>10} {'encode s':>9} {'(checks':>8} {'graph':>6} {'forward)':>9} "
          f"{'peak RSS MB':>12} {'above load MB':>14}")
    for r in rows:
        kind = "periodic" if r["periodic"] else "molecule"
        print(f"{kind:<10} {r['atoms']:>7,} {r['edges']:>10,} {r['encode_s']:>9.2f} {r['checks_s']:>8.2f} {r['graph_s']:>6.2f} "
              f"{r['forward_s']:>9.2f} {r['peak_rss_mb']:>12,} {r['above_baseline_mb']:>14,}")
    for periodic in (False, True):
        a, b = [r for r in rows if r["periodic"] == periodic]
        print(f"{'periodic' if periodic else 'molecule'} 50k/5k: time x{b['encode_s'] / a['encode_s']:.1f}, "
              f"memory above load x{b['above_baseline_mb'] / max(a['above_baseline_mb'], 1):.1f}")


if __name__ == "__main__":
    main()
