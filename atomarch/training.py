"""Training and evaluation runs: a config → Lightning ``Trainer`` with checkpoints and logs.

A run writes ``<train.out_dir>/<name>/``:

* ``checkpoints/last.ckpt`` (every ``checkpoint_every_n_steps`` steps and at the end),
  ``checkpoints/best.ckpt`` (lowest validation loss);
* ``logs/metrics.csv`` (Lightning's CSV logger; a resumed session writes ``logs-2/``,
  ``logs-3/``... so no history is lost; :func:`read_metrics` joins them), ``config.yaml``.

Re-running the same command resumes from ``last.ckpt`` (step, optimiser, time budget);
``--fresh`` moves an existing ``checkpoints/`` aside (``checkpoints.bak-<time>``) first.

Resume is exact on one process: N steps, a kill, resume and M more steps give the same
weights, bit for bit, as N + M uninterrupted steps (tested in ``tests/test_training.py``).
Lightning restores the weights, optimiser and scheduler state and the step; the learning rate
is a function of the step; the rest is made a function of the step too:

* the training order is :class:`EpochSampler`'s — a permutation (or, with
  ``data.size_balance``, weighted draws) seeded by ``(train.seed, epoch)``, skipping the
  batches already done when a run resumes mid-epoch (:class:`ResumeState` stores the epoch
  and the number of batches done in the checkpoint);
* the global torch RNG (the VAE's posterior sample) is re-seeded before every step from
  ``(train.seed, global step, rank)``.

Bounds: with ``train.max_time`` the cosine schedule follows wall-clock time, which no resume
can replay; under DDP, Lightning's ``DistributedSampler`` (seeded by seed and epoch) keeps the
order exact at epoch boundaries only (a mid-epoch resume starts that epoch's shard over).
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
from atomarch.models.task import AtomarchTask


def _seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (numpy SeedSequence): distinct tuples, unrelated streams."""
    import numpy as np

    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


class EpochSampler(torch.utils.data.Sampler):
    """Training indices as a pure function of ``(seed, epoch)``: a permutation of ``n``
    structures, or, with ``weights`` [n], ``num_samples`` weighted draws (with replacement
    unless ``replacement=False``). Lightning calls :meth:`set_epoch` before every epoch;
    :meth:`resume_at` makes the next iteration of that epoch skip the indices already used."""

    def __init__(self, n: int, seed: int, weights: torch.Tensor | None = None, num_samples: int | None = None,
                 replacement: bool = True) -> None:
        self.n, self.seed = int(n), int(seed)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.num_samples = int(num_samples if num_samples is not None else n)
        self.replacement = bool(replacement)
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, skip: int) -> None:
        """The iteration of ``epoch`` starts after its first ``skip`` indices (once)."""
        self._resume = (int(epoch), int(skip))

    def order(self, epoch: int) -> torch.Tensor:
        """All indices of ``epoch`` [num_samples]."""
        gen = torch.Generator().manual_seed(_seed(self.seed, 7001, epoch))
        if self.weights is None:
            return torch.randperm(self.n, generator=gen)
        return torch.multinomial(self.weights, self.num_samples, self.replacement, generator=gen)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip = self._resume[1]
        self._resume = None
        yield from self.order(self.epoch)[skip:].tolist()


def resumable_loader(loader: torch.utils.data.DataLoader, seed: int) -> tuple[torch.utils.data.DataLoader, EpochSampler | None]:
    """The same loader with its random order (plain shuffling or a ``WeightedRandomSampler``)
    drawn by an :class:`EpochSampler`; unchanged (and None) for any other sampler."""
    from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

    old = loader.sampler
    if isinstance(old, WeightedRandomSampler):
        sampler = EpochSampler(len(old.weights), seed, old.weights, old.num_samples, old.replacement)
    elif isinstance(old, RandomSampler) and not old.replacement and old.num_samples == len(loader.dataset):
        sampler = EpochSampler(len(loader.dataset), seed)
    else:
        return loader, None
    new = DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=sampler, collate_fn=loader.collate_fn,
        num_workers=loader.num_workers, persistent_workers=loader.persistent_workers, drop_last=loader.drop_last,
        pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn, timeout=loader.timeout,
    )
    return new, sampler


class ResumeState(pl.Callback):
    """Makes a resumed run replay the uninterrupted one (see the module docstring): re-seeds the
    global torch RNG from ``(seed, step, rank)`` before every training step and stores, in the
    checkpoint, the epoch and how many of its batches are done, which the resumed run's
    :class:`EpochSampler` skips."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.epoch = 0
        self.batches = 0  # training batches done in ``epoch``
        self.sampler: EpochSampler | None = None
        self.batch_size = 1
        self.loaded = False

    def attach(self, sampler: EpochSampler, batch_size: int) -> None:
        """Called with the training loader's sampler when the trainer asks for the loader."""
        self.sampler, self.batch_size = sampler, int(batch_size)
        if self.loaded:  # a resumed run: continue the interrupted epoch where it stopped
            sampler.set_epoch(self.epoch)
            sampler.resume_at(self.epoch, self.batches * self.batch_size)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch = self.sampler.epoch if self.sampler is not None else trainer.current_epoch
        self.batches = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        torch.manual_seed(_seed(self.seed, 7002, trainer.global_step, trainer.global_rank))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.batches += 1

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch, self.batches = int(state_dict["epoch"]), int(state_dict["batches"])
        self.loaded = True


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
        check_val_every_n_epoch=tc.check_val_every_n_epoch,
        limit_val_batches=tc.limit_val_batches,
        enable_progress_bar=tc.progress_bar,
        enable_model_summary=False,
        default_root_dir=str(directory),
        deterministic=False,
    )
    kwargs.update(overrides)
    kwargs["callbacks"] = [ResumeState(tc.seed)] + list(kwargs["callbacks"])
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


def _quiet_lightning() -> None:
    """Hide Lightning's own deprecation notices about torch internals (not actionable by users)."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*treespec.*", category=Warning)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=Warning)


def train(cfg: Config, resume: str | None = "auto", callbacks: list[pl.Callback] | None = None) -> Path:
    """Train ``cfg``; returns the run directory.

    Args:
        resume: ``"auto"`` resumes from ``<run>/checkpoints/last.ckpt`` if it exists,
            ``None`` starts fresh, or a checkpoint path.
        callbacks: extra Lightning callbacks (run before the checkpoint callbacks).
    """
    _quiet_lightning()
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    directory = run_dir(cfg)
    if cfg.model.baseline != "none":  # a conventional composition model, no network
        from atomarch.models.baselines import train_baseline

        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return train_baseline(cfg, directory)
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
        if ckpt.get("atomarch_compact"):  # a committed compact state: expand it into the run's folder
            (directory / "checkpoints").mkdir(parents=True, exist_ok=True)
            ckpt = unpack_state(ckpt)
            ckpt_path = str(directory / "checkpoints" / "unpacked-state.ckpt")
            torch.save(ckpt, ckpt_path)
            print(f"[atomarch] expanded the compact state into {ckpt_path}", flush=True)
        if "optimizer_states" not in ckpt:
            raise CheckpointError(f"{ckpt_path} is an exported inference checkpoint; training resumes only from a run's last.ckpt")
        print(f"[atomarch] resuming from {ckpt_path}", flush=True)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    dm = build_datamodule(cfg.data, elements=cfg.model.elements)
    dm.setup()
    vocab = None
    if cfg.model.decoder.enabled:
        from atomarch.registry import DECODERS

        stored = (ckpt.get("hyper_parameters", {}).get("vocab") if ckpt_path else None) or _init_vocab(cfg)
        vocab = DECODERS.get(cfg.model.decoder.kind).attach_targets(dm, cfg.model, stored)
    task = AtomarchTask(cfg.to_dict(), dm.target_stats(), vocab)
    if not ckpt_path:
        warm = (warm_start(task.model, cfg.train.init_from, cfg.train.init_exclude)
                if cfg.train.init_from else set())
        if task.model.decoder is not None:  # parts the warm start did not fill start from the data
            task.model.decoder.init_from_data(dm, frozenset(n[len("decoder."):] for n in warm if n.startswith("decoder.")))
    if ckpt_path:
        try:
            task.load_state_dict(ckpt["state_dict"])
        except RuntimeError as exc:
            from atomarch.errors import CheckpointError

            raise CheckpointError(
                f"cannot resume from {ckpt_path}: the config's model does not match the checkpoint "
                f"({str(exc).splitlines()[0]}); use --fresh or the config it was trained with"
            ) from None
    trainer = build_trainer(cfg, directory)
    trainer.callbacks[1:1] = list(callbacks or [])
    if getattr(getattr(task.model.encoder, "readout", None), "norm_mode", "none") == "batch":  # before the checkpoint callbacks
        trainer.callbacks.insert(1, ReadoutNormCalibration(dm, cfg.train.checkpoint_every_n_steps))
    _install_resumable_order(dm, trainer)
    if trainer.world_size == 1:  # the EpochSampler resumes mid-epoch, so Lightning's warning does not apply
        import warnings

        warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")
    trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path)
    return directory


def _install_resumable_order(dm: pl.LightningDataModule, trainer: pl.Trainer) -> None:
    """Let ``dm``'s training loader draw its order from an :class:`EpochSampler` registered
    with the trainer's :class:`ResumeState` (single process; under DDP Lightning's
    ``DistributedSampler`` takes over, as before)."""
    state = next(c for c in trainer.callbacks if isinstance(c, ResumeState))
    dm.train_dataloader = _ResumableTrainLoader(dm, state)


class _ResumableTrainLoader:
    """``dm.train_dataloader`` with the order of an :class:`EpochSampler` (a picklable callable,
    so ``ddp_spawn`` can ship the data module; ``__wrapped__`` lets Lightning see the override)."""

    def __init__(self, dm: pl.LightningDataModule, state: ResumeState) -> None:
        self.dm, self.state = dm, state
        self.__wrapped__ = type(dm).train_dataloader

    def __call__(self) -> torch.utils.data.DataLoader:
        loader = type(self.dm).train_dataloader(self.dm)
        trainer = getattr(self.dm, "trainer", None)
        if trainer is not None and trainer.world_size > 1:
            return loader
        loader, sampler = resumable_loader(loader, self.state.seed)
        if sampler is not None:
            self.state.attach(sampler, loader.batch_size)
        return loader


def _init_vocab(cfg: Config) -> list[str] | None:
    """The SELFIES vocabulary of the ``train.init_from`` checkpoint, if it has one: a warm start
    keeps it so that the copied token embeddings and output rows keep their meaning (targets
    with tokens outside it get none)."""
    if not cfg.train.init_from:
        return None
    from atomarch.models.loading import read_checkpoint

    return read_checkpoint(cfg.train.init_from).get("hyper_parameters", {}).get("vocab") or None


def warm_start(model: torch.nn.Module, path: str, exclude: list[str] | tuple[str, ...] = ()) -> set[str]:
    """Copy every parameter of checkpoint ``path`` whose name and shape match into ``model``,
    except those under the prefixes ``exclude`` (``decoder.skeleton``: that level starts fresh);
    returns the names of the tensors copied (a clear error if none, or if a prefix names nothing)."""
    from atomarch.errors import CheckpointError, ConfigError
    from atomarch.models.loading import read_checkpoint

    source = read_checkpoint(path)["state_dict"]
    own = model.state_dict()
    for prefix in exclude:
        if not any(k == prefix or k.startswith(prefix + ".") for k in own):
            raise ConfigError(f"train.init_exclude: no parameter is named {prefix!r}.* "
                              f"(the network has: {', '.join(sorted({k.split('.')[0] for k in own}))})")
    source = {k: v for k, v in source.items() if not any(k == p or k.startswith(p + ".") for p in exclude)}
    # the target statistics belong to the new data, whatever their shape
    take = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape and k not in ("y_mean", "y_std")}
    if not take:
        raise CheckpointError(f"train.init_from: no parameter of {path} matches this model")
    model.load_state_dict(take, strict=False)
    print(f"[atomarch] warm start: {len(take)} of {len(own)} tensors copied from {path}", flush=True)
    return set(take)


# ------------------------------------------------------------------ compact resumable state
COMPACT_FORMAT = 1


def _quantize_log(v: torch.Tensor) -> dict[str, Any]:
    """A non-negative tensor as 8-bit codes of log(v) spread over its own [min, max] (code 0:
    exactly zero). For Adam's second moment: under 1 % median, 6 % worst relative error on
    sqrt(v), the step's denominator."""
    v = v.float()
    pos = v > 0
    lv = torch.log(v.clamp_min(1e-38))
    lo = float(lv[pos].min()) if bool(pos.any()) else 0.0
    hi = float(lv[pos].max()) if bool(pos.any()) else 0.0
    scale = (hi - lo) / 254.0 or 1.0
    codes = (torch.round((lv - lo) / scale).clamp(0, 254) + 1).to(torch.uint8)
    return {"codes": codes.masked_fill(~pos, 0), "lo": lo, "scale": scale}


def _dequantize_log(q: dict[str, Any]) -> torch.Tensor:
    codes = q["codes"]
    v = torch.exp((codes.float() - 1.0) * q["scale"] + q["lo"])
    return v.masked_fill(codes == 0, 0.0)


def pack_state(src: str | Path, dst: str | Path) -> Path:
    """A training checkpoint (``last.ckpt``) → a compact resumable state for committing: weights
    in float16, Adam's second moments as 8-bit log codes, the first moments dropped (they rebuild
    within ~20 steps), loops and callbacks (step, wall-clock budget, data order) kept as they
    are. About a third of the weights' float32 size; resume with ``atomarch train --resume``."""
    from atomarch.models.loading import read_checkpoint
    from atomarch.serialization import safe_save

    ckpt = read_checkpoint(src)
    ckpt.pop("_path", None)
    if "optimizer_states" not in ckpt:
        from atomarch.errors import CheckpointError

        raise CheckpointError(f"{src} has no optimiser state (an exported checkpoint): pack a run's last.ckpt")
    ckpt["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    packed_opts = []
    for opt in ckpt["optimizer_states"]:
        state = {}
        for key, s in opt["state"].items():
            state[key] = {"step": s["step"], "exp_avg_sq": _quantize_log(s["exp_avg_sq"])}
        packed_opts.append({"state": state, "param_groups": opt["param_groups"]})
    ckpt["optimizer_states"] = packed_opts
    ckpt["atomarch_compact"] = COMPACT_FORMAT
    return safe_save(ckpt, dst)


def unpack_state(ckpt: dict) -> dict:
    """The training checkpoint of a compact state (:func:`pack_state`): float32 weights, Adam
    state with the second moments decoded and zero first moments."""
    full = dict(ckpt)
    full.pop("atomarch_compact", None)
    full.pop("_path", None)
    full["state_dict"] = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    opts = []
    for opt in ckpt["optimizer_states"]:
        state = {}
        for key, s in opt["state"].items():
            v = _dequantize_log(s["exp_avg_sq"])
            state[key] = {"step": s["step"], "exp_avg": torch.zeros_like(v), "exp_avg_sq": v}
        opts.append({"state": state, "param_groups": opt["param_groups"]})
    full["optimizer_states"] = opts
    return full


# ------------------------------------------------------------------ transfer learning
def finetune_config(source: str | Path, values: dict[str, Any], freeze: list[str] | None = None,
                    encoder_lr_scale: float | None = None, overrides: list[str] | None = None) -> Config:
    """The config of a fine-tuning run on a pretrained checkpoint ``source``.

    The network comes from ``source`` (its ``model`` section: encoder, latent size, elements,
    head sizes), with the decoder switched off (a property model on the latent mean) unless
    ``values`` asks for one; ``values`` (a config mapping: ``data`` with the new dataset and
    properties, ``train``, and any ``model`` keys to change) goes on top, then ``overrides``
    (``a.b=value``). ``train.init_from`` is set to ``source``, so every matching tensor (the
    encoder, heads of properties with the same name) starts from it; ``freeze`` (default: the
    config's ``train.freeze``) and ``encoder_lr_scale`` set what trains and how fast."""
    import copy

    from atomarch.config import apply_overrides, config_from_dict
    from atomarch.models.loading import read_checkpoint

    ckpt = read_checkpoint(source)
    src_model = copy.deepcopy(ckpt["hyper_parameters"]["config"]["model"])
    src_model.setdefault("decoder", {})["enabled"] = False

    def merge(base: dict, top: dict) -> dict:
        out = dict(base)
        for k, v in top.items():
            out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        return out

    user = copy.deepcopy(values)
    merged = dict(user)
    merged["model"] = merge(src_model, user.get("model") or {})
    # the encoder's radial basis and neighbour lists were trained at the source's cutoff
    src_cutoff = float(ckpt["hyper_parameters"]["config"]["data"]["cutoff"])
    data = dict(merged.get("data") or {})
    if "cutoff" in data and abs(float(data["cutoff"]) - src_cutoff) > 1e-9:
        from atomarch.errors import ConfigError

        raise ConfigError(f"data.cutoff {data['cutoff']} differs from the pretrained model's {src_cutoff} Å "
                          f"({source}); leave it out to use the model's")
    data["cutoff"] = src_cutoff
    merged["data"] = data
    train_section = dict(merged.get("train") or {})
    train_section["init_from"] = str(ckpt["_path"])
    if freeze is not None:
        train_section["freeze"] = list(freeze)
    if encoder_lr_scale is not None:
        train_section["encoder_lr_scale"] = float(encoder_lr_scale)
    merged["train"] = train_section
    apply_overrides(merged, overrides or [])
    return config_from_dict(merged)


def finetune(source: str | Path, values: dict[str, Any], freeze: list[str] | None = None,
             encoder_lr_scale: float | None = None, overrides: list[str] | None = None,
             resume: str | None = "auto") -> Path:
    """Train a new property model on a pretrained encoder (see :func:`finetune_config`); it
    resumes from its run's last.ckpt like :func:`train`. Returns the run directory."""
    cfg = finetune_config(source, values, freeze, encoder_lr_scale, overrides)
    return train(cfg, resume=resume)


# ------------------------------------------------------------------ precise readout statistics
@torch.no_grad()
def calibrate_readout_norm(net: torch.nn.Module, dataset, cutoff: float, n: int = 512, batch_size: int = 64,
                           seed: int = 0) -> bool:
    """Recompute the encoder readout's normalisation statistics (``readout_norm``) from ``n``
    structures of ``dataset`` (a fixed seeded subset) under the current weights, in eval mode;
    returns False when the encoder has no such normalisation. See
    :meth:`atomarch.nn.readout.LatentReadout.calibrate`."""
    import numpy as np
    from torch.utils.data import DataLoader, Subset

    from atomarch.data.graph import Collater

    encoder = getattr(net, "encoder", None)
    readout = getattr(encoder, "readout", None)
    if readout is None or getattr(readout, "norm", None) is None:
        return False
    idx = np.random.default_rng(seed).permutation(len(dataset))[:n].tolist()
    loader = DataLoader(Subset(dataset, idx), batch_size=batch_size, shuffle=False, collate_fn=Collater(cutoff))
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    pooled = []
    for batch in loader:
        batch = batch.to(device)
        pooled.append(readout.pool(encoder.readout_inputs(batch), batch.batch, batch.num_graphs))
    readout.calibrate(torch.cat(pooled))
    encoder.train(was_training)
    return True


class ReadoutNormCalibration(pl.Callback):
    """Precise readout statistics (:func:`calibrate_readout_norm`) before every validation, every
    checkpoint interval (before the checkpoint callbacks save) and at the end of training, so
    validation, ``best.ckpt``, ``last.ckpt`` and exported models use them."""

    def __init__(self, dm, every_n_steps: int, n: int = 512) -> None:
        self.dm, self.every, self.n = dm, max(1, int(every_n_steps)), n

    def _calibrate(self, pl_module) -> None:
        net = pl_module.model
        calibrate_readout_norm(net, self.dm.dataset("train"), float(net.cutoff), n=self.n)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._calibrate(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self._calibrate(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._calibrate(pl_module)
