"""How faithful is the crystal symmetry skeleton? perceive → build → StructureMatcher.

For each crystal dataset: the share of test structures rebuilt exactly from their (space group,
Wyckoff orbits, lattice, free coordinates) skeleton, the skeleton statistics (space groups,
orbits per structure, token vocabulary) and the time per structure.

    python benchmarks/symmetry_round_trip.py -n 300
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="test structures per dataset")
    parser.add_argument("--root", default="../shared/data/crystals")
    parser.add_argument("--datasets", nargs="+", default=["perov5", "carbon24", "mp20"])
    args = parser.parse_args()

    from atomarch.chem.symmetry import build, perceive
    from atomarch.data.crystals import load_crystals
    from atomarch.errors import StructureError
    from atomarch.metrics.crystals import structure_match

    print(f"{'dataset':<10} {'n':>5} {'round trip':>10} {'failed':>6} {'groups':>6} {'orbits mean/max':>15} "
          f"{'vocab':>6} {'ms/structure':>12}")
    for name in args.datasets:
        packed, split = load_crystals(name, args.root, "~/.cache/atomarch")
        idx = split["test"][: args.n]
        ok = failed = 0
        groups, lengths, vocab = Counter(), [], set()
        t0 = time.perf_counter()
        for k in idx:
            atoms = packed.atoms(int(k))
            try:
                skel = perceive(atoms)
                rebuilt = build(skel)
            except StructureError:
                failed += 1
                continue
            groups[skel.space_group] += 1
            lengths.append(len(skel.orbits))
            vocab.update(skel.tokens[1:])
            ok += structure_match(atoms, rebuilt)[0]
        dt = (time.perf_counter() - t0) / max(1, len(idx)) * 1000
        print(f"{name:<10} {len(idx):>5} {100 * ok / len(idx):>9.1f}% {failed:>6} {len(groups):>6} "
              f"{np.mean(lengths):>7.1f} / {max(lengths):<5} {len(vocab):>6} {dt:>12.1f}")


if __name__ == "__main__":
    main()
