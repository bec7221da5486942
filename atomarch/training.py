"""Training and evaluation runs: a config → Lightning ``Trainer`` with checkpoints and logs.

A run writes ``<train.out_dir>/<name>/``:

* ``checkpoints/last.ckpt`` (every ``checkpoint_every_n_steps`` steps and at the end),
  ``checkpoints/best.ckpt`` (lowest validation loss);
* ``metrics.csv`` (Lightning's CSV logger), ``config.yaml`` (the resolved config).

Re-running the same command resumes from ``last.ckpt`` (step, optimiser, time budget).
"""

from __future__ import annotations

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
