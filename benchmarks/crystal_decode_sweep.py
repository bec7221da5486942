"""Reconstruction match of a crystal VAE on the first N validation crystals for a few decode
settings (compositions × beams [× skeletons verified per composition] [c: charge-balanced
compositions only]): choose the setting on validation, report on test.

A crystal counts as matched when StructureMatcher (CDVAE tolerances) matches the decode and the
decode is valid (structurally and compositionally); "formula" is the share decoded with the
right reduced formula.

    python benchmarks/crystal_decode_sweep.py --ckpt checkpoints/mp20-vae -n 100 --settings 10x40,20x40,20x40x8,10x40c
"""

from __future__ import annotations

import argparse
import json
import time
import warnings


def decode_options(setting: str):
    """``COMPOSITIONSxBEAMS`` or ``COMPOSITIONSxBEAMSxSKELETONS`` → DecodeOptions; a trailing
    ``c`` (``10x40c``) proposes only charge-balanced compositions (``--charge-balanced``)."""
    from atomarch.nn.decoders import DecodeOptions

    balanced = setting.endswith("c")
    comp, beams, *per = (int(x) for x in setting.rstrip("c").split("x"))
    return DecodeOptions(compositions=comp, beams=beams, skeletons=per[0] if per else None,
                         charge_balanced=balanced)


def matched(original, decoded) -> bool:
    """CDVAE's reconstruction criterion: StructureMatcher matches and the decode is valid."""
    from atomarch.metrics.crystals import composition_valid, structure_match, structure_valid

    return bool(len(decoded) and structure_match(original, decoded)[0] and structure_valid(decoded)
                and composition_valid(decoded))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("-n", type=int, default=100, help="first N crystals of the split")
    ap.add_argument("--split", default="val")
    ap.add_argument("--settings", default="10x40,20x40", help="comma-separated COMPOSITIONSxBEAMS or COMPOSITIONSxBEAMSxSKELETONS, "
                         "a trailing c for charge-balanced compositions only")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSON output")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import torch

    from atomarch.models.loading import load_model

    torch.set_num_threads(args.threads)
    model = load_model(args.ckpt)
    dm = model.datamodule()
    frames = [dm.packed.atoms(int(k)) for k in dm.split[args.split][: args.n]]
    out = {}
    print(f"{'setting':>8} {'match':>7} {'formula':>8} {'s/crystal':>10}")
    for setting in args.settings.split(","):
        t = time.perf_counter()
        dec = model.reconstruct(frames, seed=0, options=decode_options(setting))
        dt = (time.perf_counter() - t) / len(frames)
        ok = [matched(a, b) for a, b in zip(frames, dec)]
        form = [a.get_chemical_formula(empirical=True) == b.get_chemical_formula(empirical=True) for a, b in zip(frames, dec)]
        out[setting] = {"match": sum(ok) / len(ok), "formula": sum(form) / len(form), "s_per_crystal": dt}
        print(f"{setting:>8} {100 * out[setting]['match']:>6.1f}% {100 * out[setting]['formula']:>7.1f}% {dt:>10.2f}", flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"ckpt": args.ckpt, "split": args.split, "n": len(frames), "settings": out}, fh, indent=1)


if __name__ == "__main__":
    main()
