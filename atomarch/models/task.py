"""The Lightning task: trains an :class:`~atomarch.models.net.AtomarchNet` (losses, KL annealing,
learning-rate schedule, logging, checkpoint hooks).

The task holds the network as ``self.model``; its state dict drops that prefix (and loading
accepts keys with or without it), so training checkpoints keep the network's own keys
(``encoder.*``, ``heads.*``, ``decoder.*``, ``y_mean``, ``y_std``): the files written before
the model/task split resume, warm-start and load for inference unchanged, and the ones written
now load anywhere the network's keys are expected.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch

from atomarch._version import __version__
from atomarch.config import Config
from atomarch.data.graph import AtomGraph
from atomarch.models.net import AtomarchNet

PREFIX = "model."


def _strip_prefix(module, state_dict, prefix, local_metadata) -> None:
    """State-dict post-hook: ``model.encoder.w`` → ``encoder.w`` (order kept)."""
    inner = prefix + PREFIX
    for key in [k for k in state_dict if k.startswith(prefix)]:
        state_dict[prefix + key[len(inner):] if key.startswith(inner) else key] = state_dict.pop(key)


def _add_prefix(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs) -> None:
    """Load pre-hook: accept the network's own keys (``encoder.w`` → ``model.encoder.w``)."""
    inner = prefix + PREFIX
    for key in list(state_dict):
        if key.startswith(prefix) and not key.startswith(inner):
            state_dict[inner + key[len(prefix):]] = state_dict.pop(key)


class AtomarchTask(pl.LightningModule):
    """Standardized L1/MSE property loss + β·KL (annealed, free bits) + the decoder's level losses.

    Args:
        config, stats, vocab: as for :class:`~atomarch.models.net.AtomarchNet` (saved as the
            checkpoint's ``hyper_parameters``).
        model: an existing network to train (default: a new one from the arguments).
    """

    def __init__(self, config: dict[str, Any], stats: dict[str, dict[str, float]], vocab: list[str] | None = None,
                 model: AtomarchNet | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model if model is not None else AtomarchNet(config, stats, vocab)
        self.cfg: Config = self.model.cfg
        self.projection: dict[str, Any] | None = None  # carried through checkpoints (see atomarch export)
        self.domain: dict[str, Any] | None = None
        self.register_state_dict_post_hook(_strip_prefix)
        self.register_load_state_dict_pre_hook(_add_prefix)
        self.frozen = self._freeze(list(self.cfg.train.freeze))

    def _freeze(self, prefixes: list[str]) -> list[str]:
        """Fix the parameters named by ``train.freeze`` (prefixes of the network's parameter names);
        returns the names of the modules that are frozen whole (kept in eval mode)."""
        from atomarch.errors import ConfigError

        names = [n for n, _ in self.model.named_parameters()]
        for prefix in prefixes:
            if not any(n == prefix or n.startswith(prefix + ".") for n in names):
                tops = sorted({n.split(".")[0] for n in names})
                raise ConfigError(f"train.freeze: no parameter is named {prefix!r}.* (the network has: "
                                  f"{', '.join(tops)}; deeper names like encoder.layers.0 work too)")
        for n, p in self.model.named_parameters():
            if any(n == f or n.startswith(f + ".") for f in prefixes):
                p.requires_grad_(False)
        whole = []
        for name, module in self.model.named_modules():
            params = list(module.parameters())
            if name and params and not any(p.requires_grad for p in params):
                whole.append(name)
        return whole

    def train(self, mode: bool = True) -> AtomarchTask:
        """Lightning's train/eval switch; frozen modules stay in eval mode (batch-norm statistics
        and dropout of a frozen encoder do not change)."""
        super().train(mode)
        if mode and getattr(self, "frozen", None):
            modules = dict(self.model.named_modules())
            for name in self.frozen:
                modules[name].eval()
        return self

    def forward(self, batch: AtomGraph) -> dict[str, torch.Tensor]:
        return self.model(batch)

    def kl_beta(self) -> float:
        """β of the KL term at the current step (linear annealing over ``kl_anneal_steps``)."""
        tc = self.cfg.train
        if tc.kl_anneal_steps <= 0:
            return tc.kl_weight
        return tc.kl_weight * min(1.0, self.global_step / tc.kl_anneal_steps)

    def losses(self, batch: AtomGraph, out: dict[str, torch.Tensor], sample_z: bool = False) -> dict[str, torch.Tensor]:
        """All loss terms. Property: standardized L1/MSE on the heads of ``mu``; KL with free
        bits; decoder levels (teacher forcing) on ``z`` = a posterior sample (``sample_z``) or ``mu``."""
        tc, net = self.cfg.train, self.model
        target = (batch.y - net.y_mean) / net.y_std
        mask = torch.isfinite(target)
        diff = (out["pred"] - torch.nan_to_num(target))[mask]
        prop = diff.abs().mean() if tc.loss == "l1" else diff.pow(2).mean()
        if not mask.any():
            prop = out["pred"].sum() * 0.0
        mu, logvar = out["mu"], out["logvar"]
        kl_dim = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean(0)  # [d], nats
        kl = kl_dim.sum()
        kl_pen = kl_dim.clamp_min(tc.free_bits).sum() if tc.free_bits > 0 else kl
        terms: dict[str, torch.Tensor] = {"property": prop, "kl": kl}
        loss = tc.property_weight * prop
        beta = self.kl_beta()
        if beta > 0:
            loss = loss + beta * kl_pen
        if net.decoder is not None:
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample_z else mu
            dec = net.decoder.losses(batch, z)
            terms.update(dec)
            weights = {"global": tc.global_weight, "coarse": tc.coarse_weight, "hcount": tc.hcount_weight,
                       "fine": tc.fine_weight}
            loss = loss + sum(w * dec[k] for k, w in weights.items() if k in dec)
        terms["loss"] = loss
        terms["loss_no_kl"] = loss - beta * kl_pen if beta > 0 else loss
        return terms

    _losses = losses  # the name used before the model/task split (benchmarks, old notebooks)

    def training_step(self, batch: AtomGraph, batch_idx: int) -> torch.Tensor:
        out = self(batch)
        losses = self.losses(batch, out, sample_z=True)
        bs = batch.num_graphs
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=bs)
        for name, value in losses.items():
            if name != "loss":
                self.log(f"train/{name}", value, batch_size=bs)
        self.log("lr", self.optimizers().param_groups[0]["lr"], batch_size=bs)
        return losses["loss"]

    def _eval_step(self, batch: AtomGraph, stage: str) -> None:
        out = self(batch)
        losses = self.losses(batch, out)
        bs = batch.num_graphs
        self.log(f"{stage}/loss", losses["loss"], prog_bar=stage == "val", batch_size=bs, sync_dist=True)
        for name, value in losses.items():
            if name not in ("loss", "property"):
                self.log(f"{stage}/{name}", value, batch_size=bs, sync_dist=True)
        for p, err in self.model.mae(batch, out).items():
            if err.numel():
                self.log(f"{stage}/mae_{p}", err.mean(), prog_bar=stage == "val", batch_size=err.numel(), sync_dist=True)

    def validation_step(self, batch: AtomGraph, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        """Log the wall-clock training time (hours, from Lightning's Timer, resume-safe) for learning curves."""
        timer = self._timer()
        if timer is not None and not self.trainer.sanity_checking:
            self.log("time_h", timer.time_elapsed("train") / 3600.0)

    def test_step(self, batch: AtomGraph, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    # ------------------------------------------------------- optimisation
    def configure_optimizers(self):
        tc = self.cfg.train
        enc = [p for n, p in self.model.named_parameters() if n.startswith("encoder.") and p.requires_grad]
        rest = [p for n, p in self.model.named_parameters() if not n.startswith("encoder.") and p.requires_grad]
        # one group unless the encoder has its own rate (checkpoints of one-group runs keep resuming)
        if tc.encoder_lr_scale == 1.0:
            groups = [{"params": [p for p in self.model.parameters() if p.requires_grad], "lr_scale": 1.0}]
        else:
            groups = [{"params": rest, "lr_scale": 1.0}]
        if enc and tc.encoder_lr_scale > 0 and tc.encoder_lr_scale != 1.0:
            groups.append({"params": enc, "lr_scale": float(tc.encoder_lr_scale)})
        elif enc and tc.encoder_lr_scale == 0:  # scale 0: the encoder is fixed as if frozen
            for p in enc:
                p.requires_grad_(False)
        groups = [g for g in groups if g["params"]]
        for g in groups:
            g["lr"] = tc.lr * g["lr_scale"]
        opt = torch.optim.AdamW(groups, lr=tc.lr, weight_decay=tc.weight_decay)
        if tc.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3, min_lr=tc.min_lr)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/loss"}}
        return opt

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Linear warm-up, then (``scheduler: cosine``) cosine decay to ``min_lr`` over the
        run's budget: ``max_steps`` if set, else the ``max_time`` wall-clock budget."""
        tc = self.cfg.train
        if tc.scheduler == "plateau":
            return
        step = self.global_step
        lr = tc.lr * min(1.0, (step + 1) / max(1, tc.warmup_steps))
        if tc.scheduler == "cosine":
            progress = self._progress()
            lr = min(lr, tc.min_lr + (tc.lr - tc.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
        for group in self.optimizers().param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def _progress(self) -> float:
        trainer = self.trainer
        fractions = []
        if trainer.max_steps and trainer.max_steps > 0:
            fractions.append(self.global_step / trainer.max_steps)
        timer = self._timer()
        if timer is not None and timer.time_remaining("train") is not None:
            elapsed = timer.time_elapsed("train")
            fractions.append(elapsed / max(1e-9, elapsed + timer.time_remaining("train")))
        if not fractions and trainer.max_epochs and trainer.max_epochs > 0 and trainer.num_training_batches:
            total = trainer.max_epochs * trainer.num_training_batches
            if math.isfinite(total):
                fractions.append(self.global_step / total)
        return max(fractions) if fractions else 0.0

    def _timer(self):
        """Lightning's Timer callback (present when ``train.max_time`` is set), else None."""
        from pytorch_lightning.callbacks import Timer

        return next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["atomarch_version"] = __version__
        checkpoint["atomarch_config"] = self.cfg.to_dict()
        if self.projection is not None:
            checkpoint["atomarch_projection"] = self.projection
        if self.domain is not None:
            checkpoint["atomarch_domain"] = self.domain

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.projection = checkpoint.get("atomarch_projection")
        self.domain = checkpoint.get("atomarch_domain") or None
