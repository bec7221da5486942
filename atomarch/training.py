"""Training and evaluation runs: a config → Lightning ``Trainer`` with checkpoints and logs.

A run writes ``<train.out_dir>/<name>/``:

* ``checkpoints/last.ckpt`` (every ``checkpoint_every_n_steps`` steps and at the end),
  ``checkpoints/best.ckpt`` (lowest validation loss);
* ``logs/metrics.csv`` (Lightning's CSV logger; a resumed session writes ``logs-2/``,
  ``logs-3/``... so no history is lost; :func:`read_metrics` joins them), ``config.yaml``.

Re-running the same command resumes from ``last.ckpt`` (step, optimiser, time budget);
``--fresh`` moves an existing ``checkpoints/`` aside (``checkpoints.bak-<time>``) first.
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
        enable_version_counter=False,
    )
    # the monitored loss leaves out the KL term, whose weight is annealed and would favour early steps
    best = ModelCheckpoint(
        dirpath=directory / "checkpoints", filename="best", monitor="val/loss_no_kl", mode="min", save_top_k=1,
        enable_version_counter=False,
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
        logger=CSVLogger(str(directory), name="", version=_log_version(directory)),
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


def _log_version(directory: Path) -> str:
    """``logs`` for a new run, ``logs-2``, ``logs-3``... for later sessions of the same run."""
    if not (directory / "logs").exists():
        return "logs"
    k = 2
    while (directory / f"logs-{k}").exists():
        k += 1
    return f"logs-{k}"


def read_metrics(directory: str | Path):
    """All sessions' ``metrics.csv`` of a run, concatenated in order (pandas DataFrame)."""
    import pandas as pd

    directory = Path(directory)
    parts = [directory / "logs"] + sorted(directory.glob("logs-*"), key=lambda p: int(p.name.split("-")[1]))
    frames = [pd.read_csv(p / "metrics.csv") for p in parts if (p / "metrics.csv").is_file()]
    if not frames:
        raise FileNotFoundError(f"no metrics.csv under {directory}")
    return pd.concat(frames, ignore_index=True)


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
    elif (directory / "checkpoints").exists():  # a fresh start never overwrites an old run
        import time

        backup = directory / f"checkpoints.bak-{time.strftime('%Y%m%d-%H%M%S')}"
        (directory / "checkpoints").rename(backup)
        print(f"[atomarch] fresh run: moved the old checkpoints to {backup}", flush=True)
    if ckpt_path:
        from atomarch.errors import CheckpointError
        from atomarch.models.loading import read_checkpoint

        ckpt = read_checkpoint(ckpt_path)  # clear error if missing, corrupt or incompatible
        ckpt_path = ckpt["_path"]
        if "optimizer_states" not in ckpt:
            raise CheckpointError(f"{ckpt_path} is an exported inference checkpoint; training resumes only from a run's last.ckpt")
        print(f"[atomarch] resuming from {ckpt_path}", flush=True)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    dm = build_datamodule(cfg.data, elements=cfg.model.elements)
    dm.setup()
    vocab = None
    if cfg.model.decoder.enabled and cfg.model.decoder.kind == "graph":
        vocab = (ckpt.get("hyper_parameters", {}).get("vocab") if ckpt_path else None) or dm.vocabulary_tokens()
        missing = dm.attach_tokens(vocab, cfg.model.decoder.max_length)
        print(f"[atomarch] skeleton vocabulary: {len(vocab)} SELFIES tokens; structures without a "
              f"skeleton target (unsanitizable bonds or too long): {missing}", flush=True)
    model = AtomarchModel(cfg.to_dict(), dm.target_stats(), vocab)
    if not ckpt_path and cfg.train.init_from:
        warm_start(model, cfg.train.init_from)
    if ckpt_path:
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError as exc:
            from atomarch.errors import CheckpointError

            raise CheckpointError(
                f"cannot resume from {ckpt_path}: the config's model does not match the checkpoint "
                f"({str(exc).splitlines()[0]}); use --fresh or the config it was trained with"
            ) from None
    trainer = build_trainer(cfg, directory)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return directory


def warm_start(model: AtomarchModel, path: str) -> int:
    """Copy every parameter of checkpoint ``path`` whose name and shape match into ``model``;
    returns how many tensors were copied (a clear error if none)."""
    from atomarch.errors import CheckpointError
    from atomarch.models.loading import read_checkpoint

    source = read_checkpoint(path)["state_dict"]
    own = model.state_dict()
    take = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not take:
        raise CheckpointError(f"train.init_from: no parameter of {path} matches this model")
    model.load_state_dict(take, strict=False)
    print(f"[atomarch] warm start: {len(take)} of {len(own)} tensors copied from {path}", flush=True)
    return len(take)
