"""Crystal decoding throughput: crystals per second from prior latents, at the checkpoint's
decode settings and at cheaper ones, in the same run (ratios are what to quote: this machine is
shared and noisy).

    python benchmarks/crystal_decode_throughput.py --ckpt checkpoints/perov5-vae -n 64 --threads 2

Prints, per setting (compositions x beams), crystals/s, the share of structurally valid crystals,
and the time per crystal split into the skeleton beam search, the detail level + pyxtal build, and
the encoder's verification.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("-n", type=int, default=64, help="prior latents decoded per setting")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", default="default,3x16,1x1", help="comma list of CxB (compositions x beams) or 'default'")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    import atomarch
    from atomarch.nn.decoders import DecodeOptions

    model = atomarch.load_model(args.ckpt)
    dec = model.decoder
    z = model.prior_latents(args.n, seed=0)
    model.decode(z[:1])  # warm-up: the grammar's space-group tables are built on first use
    print(f"{args.ckpt}: {args.n} prior latents, {args.threads} threads")
    print(f"{'setting':<12} {'crystals/s':>10} {'valid':>7} {'beam s':>8} {'build s':>8} {'verify s':>9}")
    for setting in args.settings.split(","):
        if setting == "default":
            opts, label = DecodeOptions(), f"{dec.cfg.compositions}x{dec.cfg.beams}"
        else:
            c, b = (int(v) for v in setting.split("x"))
            opts, label = DecodeOptions(compositions=c, beams=b), setting
        timing = {"beam": 0.0, "build": 0.0, "verify": 0.0}
        cand, real, enc = dec.candidates, dec.realize, model._encode_unchecked

        def timed(name, fn):
            def wrapper(*a, **k):
                t = time.perf_counter()
                out = fn(*a, **k)
                timing[name] += time.perf_counter() - t
                return out
            return wrapper

        dec.candidates, dec.realize, model._encode_unchecked = timed("beam", cand), timed("build", real), timed("verify", enc)
        try:
            t0 = time.perf_counter()
            frames = model.decode(z, options=opts)
            dt = time.perf_counter() - t0
        finally:
            dec.candidates, dec.realize, model._encode_unchecked = cand, real, enc
        valid = np.mean([bool(a.info.get("structure_valid")) for a in frames])
        n = len(frames)
        print(f"{label:<12} {n / dt:10.2f} {100 * valid:6.1f}% {timing['beam'] / n:8.3f} {timing['build'] / n:8.3f} "
              f"{timing['verify'] / n:9.3f}")


if __name__ == "__main__":
    main()
