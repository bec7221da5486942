"""Training and evaluation runs: a config → Lightning ``Trainer`` with checkpoints and logs.

A run writes ``<train.out_dir>/<name>/``:

* ``checkpoints/last.ckpt`` (every ``checkpoint_every_n_steps`` steps and at the end),
  ``checkpoints/best.ckpt`` (lowest validation loss);
* ``metrics.csv`` (Lightning's CSV logger), ``config.yaml`` (the resolved config).

Re-running the same command resumes from ``last.ckpt`` (step, optimiser, time budget).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger

from atomarch.config import Config
from atomarch.data.datamodule import build_datamodule
from atomarch.models.module import AtomarchModel


def run_dir(cfg: Config) -> Path:
    return Path(cfg.train.out_dir) / cfg.name


def build_trainer(cfg: Config, directory: Path, **overrides: Any) -> pl.Trainer:
    """A Lightning trainer for ``cfg`` writing to ``directory``."""
    tc = cfg.train
    last = ModelCheckpoint(
        dirpath=directory / "checkpoints",
        filename="step{step}",
        auto_insert_metric_name=False,
        every_n_train_steps=tc.checkpoint_every_n_steps,
        save_top_k=0,
        save_last=True,
    )
    best = ModelCheckpoint(
        dirpath=directory / "checkpoints", filename="best", monitor="val/loss", mode="min", save_top_k=1
    )
    callbacks: list[pl.Callback] = [last, best]
    if tc.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=20))
    kwargs: dict[str, Any] = dict(
        accelerator=tc.accelerator,
        devices=tc.devices,
        strategy=tc.strategy,
        max_epochs=tc.max_epochs,
        max_steps=tc.max_steps,
        max_time=tc.max_time,
        gradient_clip_val=tc.grad_clip,
        callbacks=callbacks,
        logger=CSVLogger(str(directory), name="", version="logs"),
        log_every_n_steps=tc.log_every_n_steps,
        val_check_interval=tc.val_check_interval,
        limit_val_batches=tc.limit_val_batches,
        enable_progress_bar=tc.progress_bar,
        enable_model_summary=False,
        default_root_dir=str(directory),
        deterministic=False,
    )
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def train(cfg: Config, resume: str | None = "auto") -> Path:
    """Train ``cfg``; returns the run directory.

    Args:
        resume: ``"auto"`` resumes from ``<run>/checkpoints/last.ckpt`` if it exists,
            ``None`` starts fresh, or a checkpoint path.
    """
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    directory = run_dir(cfg)
    ckpt_path = None
    last = directory / "checkpoints" / "last.ckpt"
    if resume == "auto":
        ckpt_path = str(last) if last.is_file() else None
    elif resume:
        ckpt_path = resume
    if ckpt_path:
        from atomarch.models.loading import read_checkpoint

        read_checkpoint(ckpt_path)  # clear error if corrupt or incompatible
        print(f"[atomarch] resuming from {ckpt_path}", flush=True)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    dm = build_datamodule(cfg.data)
    dm.setup()
    model = AtomarchModel(cfg.to_dict(), dm.target_stats())
    trainer = build_trainer(cfg, directory)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return directory


def evaluate(model: AtomarchModel, split: str = "test", batch_size: int | None = None, subset: int | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Property MAEs (physical units) of ``model`` on a split of its own dataset config."""
    cfg = model.cfg
    data_cfg = cfg.data
    if batch_size:
        data_cfg.batch_size = batch_size
    if subset is not None:
        setattr(data_cfg, f"{split}_subset", subset)
    dm = build_datamodule(data_cfg)
    dm.setup()
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
    model.eval()
    errors: dict[str, list[torch.Tensor]] = {p: [] for p in model.properties}
    from tqdm.auto import tqdm

    with torch.no_grad():
        for batch in tqdm(loader, desc=f"evaluate {split}", disable=not progress):
            batch = batch.to(model.device)
            for p, err in model._mae(batch, model(batch)).items():
                errors[p].append(err.cpu())
    units = _units(cfg)
    result = {
        "split": split,
        "n": len(dm.dataset(split)),
        "checkpoint": getattr(model, "checkpoint_path", None),
        "mae": {p: float(torch.cat(e).mean()) for p, e in errors.items() if e},
        "units": {p: units.get(p, "") for p in model.properties},
    }
    return result


def _units(cfg: Config) -> dict[str, str]:
    if cfg.data.dataset == "qm9":
        from atomarch.data.qm9 import UNITS

        return UNITS
    return {}


def format_table(result: dict[str, Any]) -> str:
    lines = [f"split={result['split']}  n={result['n']}", f"{'property':<10} {'MAE':>12}  unit"]
    for p, v in result["mae"].items():
        lines.append(f"{p:<10} {v:>12.4f}  {result['units'].get(p, '')}")
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2))
