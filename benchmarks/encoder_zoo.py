"""Encoder zoo: every encoder kind trained under the same compute budget, in one run.

For each dataset — QM9 ``gap`` (EDM split; test MAE in eV) and MP-20
``formation_energy_per_atom`` (the reduced-train split of :mod:`atomarch.data.crystals`; test MAE
in eV/atom) — and each encoder kind (e3nn, schnet, mpnn, cgcnn):

1. throughput: structures/s of a property model's training step (forward, loss, backward, AdamW
   step) on the same pre-collated training batches for every kind (neighbour lists built
   beforehand, so this is the network's cost alone);
2. a property model (decoder off) trained by :func:`atomarch.training.train` with the same
   seed, data order, optimiser, schedule (warm-up + cosine over the budget) and ``--budget``
   seconds of training, then the test-split MAE of its final weights (no validation, so the
   whole budget trains; the final weights are what the budget bought). ``--budget-mode steps``
   (default) turns the seconds into a step count per kind with the throughput of step 1
   (``budget × structures/s ÷ batch``): other load on a shared machine then cannot tilt the
   comparison, as it does with ``--budget-mode wall`` (``train.max_time``).

Each kind runs at its paper's or this repo's shipped size (see ``KINDS``; parameter counts are in
the table); the readout pooling is the dataset's (``sum_mean`` for molecules, intensive ``mean``
for crystals) except for the MPNN, whose attention readout is part of the model. ``--pooling``
forces one pooling for every kind. The machine is shared: the load average at the start and the
end is recorded; compare rows of one run, not across runs.

Full run (8 models x the budget, plus evaluation; ~90 min at the default 600 s):
    python benchmarks/encoder_zoo.py
Smoke test (a minute or two per model):
    python benchmarks/encoder_zoo.py --budget 20 --max-train 500 --max-test 200 --out /tmp/zoo

Writes ``<out>.txt`` (the table) and ``<out>.json`` (rows + settings); default ``docs/encoder_zoo``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoder_throughput import timed

ROOT = Path(__file__).resolve().parents[1]

DATASETS: dict[str, dict[str, Any]] = {
    "qm9": {"property": "gap", "unit": "eV", "pooling": "sum_mean", "avg_num_neighbors": 15.0,
            "data": {"dataset": "qm9", "properties": ["gap"], "cutoff": 5.0}},
    "mp20": {"property": "formation_energy_per_atom", "unit": "eV/atom", "pooling": "mean", "avg_num_neighbors": 40.0,
             "data": {"dataset": "mp20", "properties": ["formation_energy_per_atom"], "cutoff": 5.0}},
}
"""Per dataset: the target, its unit, the default readout pooling and the encoder's neighbour
normalisation (QM9 at 5 Å: ~15 neighbours, MP-20: ~40, as in configs/mp20_vae.yaml)."""

KINDS: dict[str, dict[str, Any]] = {
    "e3nn": {"irreps_hidden": "64x0e+32x1o", "lmax": 1, "num_layers": 3, "num_basis": 8, "radial_hidden": 64,
             "hidden": 128},                                        # configs/qm9_property.yaml
    "schnet": {"num_layers": 3, "hidden": 128},                     # configs/qm9_property_schnet.yaml
    "mpnn": {"num_layers": 3, "message_dim": 32, "radial_hidden": 64, "hidden": 128,
             "pooling": "attention"},                               # 3 steps, attention readout
    "cgcnn": {"num_layers": 3, "hidden": 64},                       # Xie & Grossman: 3 convolutions, 64 features
}
"""Encoder settings per kind (``model.encoder`` keys)."""


def config_values(dataset: str, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """The run's config as a mapping (what ``atomarch train`` reads from YAML + overrides)."""
    from atomarch.config import DataConfig, load_config

    spec = DATASETS[dataset]
    data = dict(spec["data"], batch_size=args.batch_size, train_subset=args.max_train, test_subset=args.max_test,
                val_subset=64)
    model: dict[str, Any] = {"latent_dim": 128, "head_hidden": 128, "head_layers": 2}
    if dataset == "mp20":
        data["root"] = str((ROOT / DataConfig().root).resolve())
        model["elements"] = load_config(ROOT / "configs" / "mp20_vae.yaml").model.elements
    encoder = {"kind": kind, "pooling": spec["pooling"], "avg_num_neighbors": spec["avg_num_neighbors"], **KINDS[kind]}
    if args.pooling:
        encoder["pooling"] = args.pooling
    model["encoder"] = encoder
    s = int(round(args.budget))
    max_time = f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    train = {"lr": 1e-3, "min_lr": 1e-5, "warmup_steps": args.warmup, "scheduler": "cosine", "max_epochs": 100_000,
             "max_time": max_time if args.budget_mode == "wall" else None, "seed": args.seed, "num_threads": args.threads, "out_dir": str(args.runs),
             "limit_val_batches": 0, "checkpoint_every_n_steps": 1_000_000, "log_every_n_steps": 50,
             "progress_bar": False}
    return {"name": f"zoo-{dataset}-{kind}", "data": data, "model": model, "train": train}


def throughput(values: dict[str, Any], stats: dict, batches: list, repeats: int) -> tuple[float, int]:
    """(structures/s of a training step on ``batches``, number of parameters)."""
    from atomarch.models.task import AtomarchTask

    torch.manual_seed(0)
    task = AtomarchTask(values, stats)
    task.train()
    opt = torch.optim.AdamW(task.model.parameters(), lr=1e-4)

    def step() -> None:
        for b in batches:
            loss = task.losses(b, task(b))["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()

    dt = timed(step, repeats)
    return sum(b.num_graphs for b in batches) / dt, sum(p.numel() for p in task.model.parameters())


def train_and_test(values: dict[str, Any]) -> dict[str, Any]:
    """Train one property model for the budget; its steps, wall time and test-split MAE."""
    from atomarch.config import config_from_dict
    from atomarch.data.datamodule import build_datamodule
    from atomarch.evaluation import property_mae
    from atomarch.models.loading import load_model, read_checkpoint
    from atomarch.training import run_dir, train

    cfg = config_from_dict(values)
    directory = run_dir(cfg)
    shutil.rmtree(directory, ignore_errors=True)  # this benchmark's own run folder: start fresh
    t0 = time.perf_counter()
    train(cfg, resume=None)
    wall = time.perf_counter() - t0
    last = directory / "checkpoints" / "last.ckpt"
    steps = int(read_checkpoint(last)["global_step"])
    model = load_model(last)
    dm = build_datamodule(cfg.data, elements=cfg.model.elements)
    dm.setup()
    t1 = time.perf_counter()
    res = property_mae(model, dm, "test", progress=False)
    prop = cfg.data.properties[0]
    return {"steps": steps, "structures_seen": steps * cfg.data.batch_size, "train_wall_s": wall,
            "test_n": res["n"], "test_mae": res["mae"][prop], "eval_s": time.perf_counter() - t1,
            "run": str(directory)}


def format_table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    budget = (f"{meta['budget_s']:.0f} s of training steps at each kind's measured fwd+bwd speed, as a step count"
              if meta.get("budget_mode") == "steps" else f"{meta['budget_s']:.0f} s wall clock")
    head = (f"Encoder zoo: same seed, data order and budget ({budget}, "
            f"{meta['threads']} thread(s)) per model; test-split MAE of the final weights.\n"
            f"train subset: {meta['max_train'] or 'all'}; test subset: {meta['max_test'] or 'all'}; "
            f"batch {meta['batch_size']}; seed {meta['seed']}; load average at start / end: "
            f"{meta['load_start']:.2f} / {meta['load_end']:.2f} on {meta['cpus']} CPUs; torch {meta['torch']}; "
            f"{meta['date']}\n")
    cols = f"{'dataset':<7} {'kind':<7} {'pooling':<9} {'params':>9} {'fwd+bwd str/s':>16} {'steps':>7} " \
           f"{'structures seen':>15} {'test n':>7} {'test MAE':>10}  unit"
    lines = [head, cols, "-" * len(cols)]
    for r in rows:
        lines.append(f"{r['dataset']:<7} {r['kind']:<7} {r['pooling']:<9} {r['params']:>9,} "
                     f"{r['throughput']:>16.1f} {r['steps']:>7} {r['structures_seen']:>15,} {r['test_n']:>7} "
                     f"{r['test_mae']:>10.4f}  {r['unit']} ({r['property']})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=600.0, help="training seconds per model (default 600)")
    ap.add_argument("--budget-mode", choices=["steps", "wall"], default="steps",
                    help="steps (default): each kind trains budget x its measured training-step throughput "
                         "structures, so other load on the machine cannot tilt the comparison; wall: "
                         "train.max_time = budget")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--max-train", type=int, default=None, help="train on the first N of the training split")
    ap.add_argument("--max-test", type=int, default=None, help="evaluate on the first N of the test split")
    ap.add_argument("--pooling", default=None, help="one readout pooling for every kind (default: see module docstring)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=200, help="linear learning-rate warm-up steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training and throughput")
    ap.add_argument("--throughput-batches", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "encoder_zoo", help="run folders (checkpoints, logs)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "encoder_zoo", help="writes OUT.txt and OUT.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # Lightning's start-up notes, repeated for every model, would bury the results (its import sets the level)
    import pytorch_lightning  # noqa: F401

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*could not find the monitored key.*")  # no validation, on purpose
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")

    from atomarch.config import config_from_dict
    from atomarch.data.datamodule import build_datamodule
    from atomarch.data.graph import collate

    load_start = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    plans = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); load average {load_start:.2f}", flush=True)
    for dataset in args.datasets:  # throughput first, for every kind, on the same batches
        cfg = config_from_dict(config_values(dataset, args.kinds[0], args))
        dm = build_datamodule(cfg.data, elements=cfg.model.elements)
        dm.setup()
        stats = dm.target_stats()
        ds = dm.dataset("train")
        idx = np.random.RandomState(args.seed).permutation(len(ds))[: args.batch_size * args.throughput_batches]
        batches = [collate([ds[int(k)] for k in idx[i:i + args.batch_size]], cfg.data.cutoff)
                   for i in range(0, len(idx), args.batch_size)]
        print(f"{dataset}: train {len(ds)}, test {len(dm.dataset('test'))}; throughput batches of "
              f"{args.batch_size}: {batches[0].z.numel()} atoms, {batches[0].edge_index.shape[1]} edges (first)", flush=True)
        for kind in args.kinds:
            values = config_values(dataset, kind, args)
            rate, params = throughput(values, stats, batches, args.repeats)
            print(f"  {kind:<7} {params:>9,} parameters  {rate:8.1f} structures/s (train step)", flush=True)
            spec = DATASETS[dataset]
            rows.append({"dataset": dataset, "kind": kind, "pooling": values["model"]["encoder"]["pooling"],
                         "property": spec["property"], "unit": spec["unit"], "params": params, "throughput": rate,
                         "encoder": values["model"]["encoder"]})
            if args.budget_mode == "steps":  # the budget as steps at this run's measured speed
                values["train"]["max_steps"] = row_steps = max(1, int(round(args.budget * rate / args.batch_size)))
                rows[-1]["budget_steps"] = row_steps
            plans.append(values)
    for row, values in zip(rows, plans):
        what = (f"{values['train']['max_steps']} steps ({args.budget:.0f} s at its measured speed)"
                if args.budget_mode == "steps" else f"{args.budget:.0f} s")
        print(f"training {values['name']} for {what} ...", flush=True)
        row.update(train_and_test(values))
        print(f"  {row['steps']} steps, test MAE {row['test_mae']:.4f} {row['unit']} (n={row['test_n']}, "
              f"evaluated in {row['eval_s']:.0f} s)", flush=True)

    meta = {"budget_s": args.budget, "budget_mode": args.budget_mode, "threads": args.threads, "seed": args.seed, "batch_size": args.batch_size,
            "max_train": args.max_train, "max_test": args.max_test, "warmup_steps": args.warmup,
            "load_start": load_start, "load_end": os.getloadavg()[0], "cpus": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M")}
    table = format_table(rows, meta)
    print("\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".txt").write_text(table + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out.with_suffix('.txt')} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
