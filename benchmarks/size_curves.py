"""Learning curves against training-set size: where does structure beat composition, and where
does a conventional model win at small data?

For every training size (the first N of the seeded training order) and every model — the
composition random forest (``model.baseline: random_forest``), the composition ElemNet-style
network (``encoder.kind: elemnet``) and the structure encoders (``schnet``, ``e3nn``, and any
other registered kind) — train on ``configs/formation_energy_property.yaml`` (formation energy per
atom; train = MP-20's training pool + MPTS-52 val + WBM, test = MP-20's test files) with the same
seed and the same wall-clock budget per network, and report the test MAE (eV/atom). Writes
``<out>.json``, ``<out>.txt`` and ``<out>.png``.

    python benchmarks/size_curves.py --sizes 500,2000,8000,all --models rf,elemnet,schnet,e3nn \\
        --steps 600 --out docs/size_curves

``--steps N`` gives every network the same N optimiser steps (best of 5 validations on
``--val-subset`` structures kept); ``--budget-minutes M`` a wall-clock budget instead (fair only on
an otherwise idle machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from curves import add_run_arguments, write_curves  # noqa: E402


def run_one(model: str, size: str, args, out_dir: Path) -> dict:
    import numpy as np

    from atomarch.config import load_config
    from atomarch.training import train

    name = f"{model}_{size}"
    overrides = [f"name={name}", f"train.out_dir={out_dir}", f"train.seed={args.seed}"]
    if args.steps:  # the same optimiser steps for every network, validated (and selected) every steps/5
        every = max(1, args.steps // 5)
        overrides += [f"train.max_steps={args.steps}", "train.max_epochs=100000", "train.max_time=null",
                      "train.check_val_every_n_epoch=null", f"train.val_check_interval={every}",
                      f"train.checkpoint_every_n_steps={every}", f"data.val_subset={args.val_subset}"]
    else:
        overrides.append(f"train.max_time=00:00:{int(args.budget_minutes):02d}:"
                         f"{int(round(60 * (args.budget_minutes % 1))):02d}")
    if size != "all":
        overrides.append(f"data.train_subset={int(size)}")
    if args.test_subset:
        overrides.append(f"data.test_subset={args.test_subset}")
    if model == "rf":
        overrides.append("model.baseline=random_forest")
    else:
        overrides.append(f"model.encoder.kind={model}")
        if model == "elemnet":
            overrides += ["model.encoder.hidden=512", "model.encoder.num_layers=12"]
    cfg = load_config(args.config, overrides + list(args.overrides))
    t0 = time.perf_counter()
    run = train(cfg, resume=None)
    seconds = time.perf_counter() - t0
    prop = cfg.data.properties[0]
    if model == "rf":
        mae = json.loads((run / "baseline.json").read_text())["mae"][prop]["test"]
    else:
        from atomarch.evaluation import evaluate_model
        from atomarch.models.loading import load_model

        m = load_model(run / "checkpoints" / "best.ckpt")
        res = evaluate_model(m, "test", n=0, property_subset=args.test_subset, progress=False)
        mae = float(res["properties"]["mae"][prop])
    return {"model": model, "size": size, "n_train": None if size == "all" else int(size), "test_mae": mae,
            "seconds": seconds, "run": str(run)}


def training_size(args) -> int:
    """Structures in the task's training split (the ``all`` size)."""
    from atomarch.config import load_config
    from atomarch.data.datamodule import build_datamodule

    cfg = load_config(args.config, list(args.overrides))
    dm = build_datamodule(cfg.data, cfg.model.elements)
    dm.setup()
    return len(dm.split["train"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "formation_energy_property.yaml"))
    ap.add_argument("--sizes", default="500,2000,8000,all")
    ap.add_argument("--models", default="rf,elemnet,schnet,e3nn")
    ap.add_argument("--budget-minutes", type=float, default=15.0, help="wall-clock budget per network run")
    ap.add_argument("--steps", type=int, default=None,
                    help="instead of the wall-clock budget: this many optimiser steps per network (other load on "
                         "the machine then cannot tilt the comparison), best of 5 validations kept")
    ap.add_argument("--val-subset", type=int, default=1000, help="with --steps: validation structures")
    add_run_arguments(ap, "size_curves", ROOT / "docs" / "size_curves")
    args = ap.parse_args()
    n_all = training_size(args)
    rows = []
    for size in args.sizes.split(","):
        for model in args.models.split(","):
            row = run_one(model, size.strip(), args, Path(args.runs))
            row["n_train"] = row["n_train"] or n_all
            print(f"{row['model']:>8} n_train={row['size']:>5}  test MAE {row['test_mae']:.4f}  ({row['seconds']:.0f} s)", flush=True)
            rows.append(row)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "budget_minutes": None if args.steps else args.budget_minutes,
                                                    "steps": args.steps, "val_subset": args.val_subset if args.steps else None,
                                                    "config": args.config, "seed": args.seed}, indent=2))
    models, sizes = args.models.split(","), [s.strip() for s in args.sizes.split(",")]
    budget = f"{args.steps} steps" if args.steps else f"{args.budget_minutes:g} min"
    print(write_curves(rows, "model", models, sizes, out,
                       f"test MAE (eV/atom) by training size; networks: {budget} each, same seed",
                       "test MAE (eV/atom)"))

if __name__ == "__main__":
    main()
