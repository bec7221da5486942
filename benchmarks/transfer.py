"""Transfer learning when labels are few: a pretrained encoder against training from scratch.

For every label count (the first N of the task's seeded training order) and every mode

* ``scratch``   — the source checkpoint's network (same encoder, latent, head sizes), random init;
* ``frozen``    — the source's encoder (and readout) copied and frozen, only the property head trains;
* ``finetuned`` — the source's encoder copied and trained at ``--encoder-lr-scale`` × the head's LR;

train the task's property for the same number of optimiser steps (``--steps``; same seed, same
data order, same schedule), select the checkpoint by validation loss (validated ``--val-checks``
times per run on the task's validation split) and report the test-split MAE of that checkpoint.

Crystals (issue 15's experiment): AFLOW bulk modulus (GPa) on the MP-20 VAE's encoder::

    python benchmarks/transfer.py --source checkpoints/mp20-vae \\
        --config configs/aflow_bulk_modulus_transfer.yaml --sizes 100,300,1000,all --out docs/transfer_aflow

Molecules: the QM9 gap model's encoder → polarisability ``alpha`` (bohr³) with 1,000 labels::

    python benchmarks/transfer.py --source checkpoints/qm9-property --config configs/qm9_alpha_transfer.yaml \\
        --sizes 1000 --out docs/transfer_qm9_alpha

Writes ``<out>.json`` (rows + settings), ``<out>.txt`` (the table) and ``<out>.png`` (test MAE
against label count, one line per mode).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from curves import add_run_arguments, write_curves  # noqa: E402

MODES: dict[str, dict[str, Any]] = {
    "scratch": {"freeze": [], "init": False},
    "frozen": {"freeze": ["encoder"], "init": True},
    "finetuned": {"freeze": [], "init": True},
}
"""What each mode copies from the source and what it trains."""


def run_one(mode: str, size: str, args: argparse.Namespace, n_train_all: int) -> dict[str, Any]:
    """Train one (mode, label count) run; returns its row."""
    from atomarch.config import read_config_values
    from atomarch.evaluation import evaluate_model
    from atomarch.models.loading import load_model
    from atomarch.training import finetune_config, train

    n_train = n_train_all if size == "all" else min(int(size), n_train_all)
    values = read_config_values(args.config)
    batch = int((values.get("data") or {}).get("batch_size", 32))
    steps_per_epoch = max(1, math.ceil(n_train / batch))
    spec = MODES[mode]
    name = f"{mode}_{size}"
    overrides = [
        f"name={name}", f"train.out_dir={args.runs}", f"train.seed={args.seed}",
        f"train.max_steps={args.steps}", f"train.max_epochs={math.ceil(args.steps / steps_per_epoch) + 1}",
        "train.check_val_every_n_epoch=null", f"train.val_check_interval={max(1, args.steps // args.val_checks)}",
        f"train.checkpoint_every_n_steps={max(1, args.steps // args.val_checks)}", "train.progress_bar=false",
    ]
    if size != "all":
        overrides.append(f"data.train_subset={n_train}")
    if not spec["init"]:
        overrides.append("train.init_from=null")
    scale = args.encoder_lr_scale if mode == "finetuned" else 1.0
    cfg = finetune_config(args.source, values, freeze=spec["freeze"], encoder_lr_scale=scale,
                          overrides=overrides + list(args.overrides))
    t0 = time.perf_counter()
    run = train(cfg, resume=None)
    seconds = time.perf_counter() - t0
    prop = cfg.data.properties[0]
    model = load_model(run / "checkpoints" / "best.ckpt")
    res = evaluate_model(model, "test", n=0, property_subset=args.test_subset, progress=False)
    return {"mode": mode, "size": size, "n_train": n_train, "property": prop,
            "test_mae": float(res["properties"]["mae"][prop]), "seconds": round(seconds, 1), "run": str(run)}


def training_size(args: argparse.Namespace) -> int:
    """Number of structures in the task's training split (``all``)."""
    from atomarch.config import read_config_values
    from atomarch.data.datamodule import build_datamodule
    from atomarch.training import finetune_config

    cfg = finetune_config(args.source, read_config_values(args.config), overrides=list(args.overrides))
    dm = build_datamodule(cfg.data, cfg.model.elements)
    dm.setup("fit")
    return len(dm.split["train"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=str(ROOT / "checkpoints" / "mp20-vae"), help="pretrained checkpoint")
    ap.add_argument("--config", default=str(ROOT / "configs" / "aflow_bulk_modulus_transfer.yaml"),
                    help="the task (data, train) as for `atomarch finetune`")
    ap.add_argument("--sizes", default="100,300,1000,all", help="label counts (first N of the training order)")
    ap.add_argument("--modes", default="scratch,frozen,finetuned")
    ap.add_argument("--steps", type=int, default=400, help="optimiser steps per run (same for every run)")
    ap.add_argument("--val-checks", type=int, default=8, help="validations (checkpoint selections) per run")
    ap.add_argument("--encoder-lr-scale", type=float, default=0.1, help="encoder LR multiplier when fine-tuning")
    add_run_arguments(ap, "transfer", ROOT / "docs" / "transfer_aflow")
    args = ap.parse_args()

    n_all = training_size(args)
    sizes = [s.strip() for s in args.sizes.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    rows = []
    for size in sizes:
        for mode in modes:
            row = run_one(mode, size, args, n_all)
            print(f"{mode:>10} n_train={row['n_train']:>5}  test MAE {row['test_mae']:.4f}  ({row['seconds']:.0f} s)",
                  flush=True)
            rows.append(row)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("runs", "out")}
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "settings": settings}, indent=2))
    prop = rows[0]["property"] if rows else "?"
    table = write_curves(rows, "mode", modes, sizes, out,
                         f"test MAE ({prop}) by label count; {args.steps} steps per run, source {Path(args.source).name}",
                         f"test MAE ({prop})", x_label="training labels", digits=3)
    print(table)

if __name__ == "__main__":
    main()
