"""Where a crystal VAE's reconstructions go wrong, level by level, on validation crystals.

1. Skeleton rank: for each crystal, a grammar-constrained beam search of width ``--beams`` for
   its *true* composition (teacher-forced composition, z = its latent mean); the share whose
   true skeleton (space group + Wyckoff orbits) is among the top k beams.
2. Decode (``--decode N``): the first N crystals reconstructed with the given setting; the
   shares with the right reduced formula, the right space group (spglib via pymatgen,
   symprec 0.1, against the decoded skeleton's group), and the match rate (StructureMatcher,
   CDVAE tolerances, valid) within each group. ``--chgnet`` also relaxes every decode with the
   pretrained CHGNet and matches again.

    python benchmarks/crystal_misses.py --ckpt checkpoints/mp20-vae -n 200 --decode 60 --chgnet
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def skeleton_ranks(model, dm, idx: list[int], beams: int, batch: int = 16) -> np.ndarray:
    """Rank of the true skeleton in a ``beams``-wide beam for the true composition (beams when absent)."""
    import torch

    from atomarch.nn.decoders.symmetry import SkeletonGrammar

    dec = model.decoder
    eos = dec.vocab.EOS
    z = torch.as_tensor(model.encode([dm.packed.atoms(k) for k in idx]))
    counts = dm.targets["counts"][torch.tensor(idx)].float()
    ranks = []
    for s in range(0, len(idx), batch):
        zz, cc = z[s : s + batch], counts[s : s + batch]
        grammar = SkeletonGrammar(dec.vocab, dec.tables, cc.repeat_interleave(beams, 0).cpu(), dec.element_rank.cpu())
        rows = dec.skeleton.beam(zz, cc, dec.vocab.BOS, eos, dec.cfg.max_length, beams, grammar=grammar)
        for j, k in enumerate(idx[s : s + batch]):
            t = dm.tokens[k].tolist()
            t = t[: t.index(eos)] if eos in t else [x for x in t if x]
            ranks.append(next((i for i, row in enumerate(rows[j]) if row == t), beams))
    return np.array(ranks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("-n", type=int, default=200, help="first N validation crystals for the skeleton ranks")
    ap.add_argument("--beams", type=int, default=64)
    ap.add_argument("--decode", type=int, default=0, help="also decode the first N validation crystals")
    ap.add_argument("--setting", default="20x40", help="COMPOSITIONSxBEAMS[xSKELETONS] of the decode")
    ap.add_argument("--chgnet", action="store_true", help="relax each decode with CHGNet and match again")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import torch

    from atomarch.models.loading import load_model
    from atomarch.registry import DECODERS

    torch.set_num_threads(args.threads)
    model = load_model(args.ckpt)
    dm = model.datamodule()
    DECODERS.get(model.cfg.model.decoder.kind).attach_targets(dm, model.cfg.model)
    idx = [int(k) for k in dm.split["val"][: args.n] if int(dm.tokens[int(k)][0]) != 0]
    t = time.perf_counter()
    ranks = skeleton_ranks(model, dm, idx, args.beams)
    print(f"true skeleton in the beam of the true composition ({len(idx)} validation crystals, "
          f"{args.beams} beams, {time.perf_counter() - t:.0f} s):")
    for k in sorted({k for k in (1, 2, 4, 8, 16, 32) if k < args.beams} | {args.beams}):
        print(f"  top {k:>3}: {100 * np.mean(ranks < k):5.1f} %")
    if args.decode:
        decode(model, dm, args)


def decode(model, dm, args) -> None:
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from crystal_decode_sweep import decode_options, matched

    from atomarch.metrics.crystals import structure_match, structure_valid

    frames = [dm.packed.atoms(int(k)) for k in dm.split["val"][: args.decode]]
    t = time.perf_counter()
    dec = model.reconstruct(frames, seed=0, options=decode_options(args.setting))
    print(f"decode {args.setting}: {(time.perf_counter() - t) / len(frames):.2f} s per crystal")
    oracle = None
    if args.chgnet:
        from atomarch.chem.oracles import CHGNetOracle

        oracle = CHGNetOracle(progress=False)
    rows = []
    for a, b in zip(frames, dec):
        try:
            sg = SpacegroupAnalyzer(AseAtomsAdaptor.get_structure(a), symprec=0.1).get_space_group_number()
        except Exception:  # symmetry not perceived: counts as a wrong group
            sg = -1
        r = {"match": matched(a, b),
             "formula": a.get_chemical_formula(empirical=True) == b.get_chemical_formula(empirical=True),
             "sg": sg == b.info.get("space_group")}
        if oracle is not None:
            try:
                relaxed = oracle.relaxed(b)[0] if len(b) else None
            except Exception:  # CHGNet failure on a pathological cell: no relaxed match
                relaxed = None
            r["relaxed"] = bool(relaxed is not None and structure_match(a, relaxed)[0] and structure_valid(relaxed))
        rows.append(r)

    def share(key, where=lambda r: True):
        sel = [r for r in rows if where(r)]
        return f"{100 * np.mean([r[key] for r in sel]):5.1f} % of {len(sel)}" if sel else "-"

    print(f"  match                           {share('match')}")
    print(f"  formula right                   {share('formula')}")
    print(f"  space group right | formula     {share('sg', lambda r: r['formula'])}")
    print(f"  match | formula and group right {share('match', lambda r: r['formula'] and r['sg'])}")
    if oracle is not None:
        print(f"  match after CHGNet relaxation   {share('relaxed')}")


if __name__ == "__main__":
    main()
