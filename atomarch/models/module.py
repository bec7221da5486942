"""The Lightning module: encoder → latent → property heads (the decoder joins it later).

:class:`AtomarchModel` is also the user-facing object returned by
:func:`atomarch.load_model`: ``encode`` and ``predict`` take lists of ``ase.Atoms`` and
return numpy arrays in physical units.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from ase import Atoms
from ase.data import atomic_numbers
from torch import nn

from atomarch._version import __version__
from atomarch.config import Config, config_from_dict
from atomarch.data.graph import AtomGraph, batch_from_atoms
from atomarch.data.structures import check_structures
from atomarch.nn.decoder import HierarchicalDecoder
from atomarch.nn.encoders import build_encoder
from atomarch.nn.readout import mlp


class PropertyHeads(nn.Module):
    """One MLP per property on the latent mean: [G, latent_dim] → {name: [G]} (standardized)."""

    def __init__(self, names: Sequence[str], latent_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        sizes = [latent_dim] + [hidden] * layers + [1]
        self.heads = nn.ModuleDict({name: mlp(sizes) for name in names})

    def forward(self, mu: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(mu).squeeze(-1) for name, head in self.heads.items()}


class AtomarchModel(pl.LightningModule):
    """Encoder + latent + property heads, trained with standardized L1/MSE losses.

    Args:
        config: the run's configuration as a nested dict (see :class:`atomarch.config.Config`).
        stats: ``{property: {"mean": m, "std": s}}`` in physical units, from the training split.
        vocab: the graph decoder's SELFIES tokens (from the training split; stored in checkpoints).
    """

    def __init__(self, config: dict[str, Any], stats: dict[str, dict[str, float]], vocab: list[str] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg: Config = config_from_dict(config)
        mc = self.cfg.model
        self.elements = list(mc.elements)
        self.properties = list(self.cfg.data.properties)
        self.cutoff = float(self.cfg.data.cutoff)
        from atomarch.errors import ConfigError

        unknown = [s for s in self.elements if s not in atomic_numbers]
        if unknown:
            raise ConfigError(f"model.elements: unknown element symbol '{unknown[0]}'")
        numbers = [atomic_numbers[s] for s in self.elements]
        try:
            self.encoder = build_encoder(mc.encoder, self.cutoff, numbers, mc.latent_dim)
            self.heads = PropertyHeads(self.properties, mc.latent_dim, mc.head_hidden, mc.head_layers)
            self.decoder = self._build_decoder(numbers, vocab)
        except (ValueError, AssertionError, KeyError) as exc:  # e.g. unparsable irreps, no H for the decoder
            raise ConfigError(f"invalid model configuration: {exc}") from exc
        self.projection: dict[str, Any] | None = None  # the 2D map (PCA), see project()
        self.domain = None  # atomarch.latent.domain.Domain of the training split, see training_domain()
        self.register_buffer("y_mean", torch.tensor([stats[p]["mean"] for p in self.properties]))
        self.register_buffer("y_std", torch.tensor([stats[p]["std"] for p in self.properties]))

    def _build_decoder(self, numbers: list[int], vocab: list[str] | None) -> nn.Module | None:
        mc = self.cfg.model
        if not mc.decoder.enabled:
            return None
        if mc.decoder.kind == "flow":
            return HierarchicalDecoder(mc.decoder, numbers, mc.latent_dim)
        if not vocab:
            raise ValueError("the graph decoder needs its SELFIES vocabulary (vocab=...)")
        from atomarch.nn.graph_decoder import GraphDecoder

        return GraphDecoder(mc.decoder, numbers, mc.latent_dim, vocab)

    # ----------------------------------------------------------------- core
    def forward(self, batch: AtomGraph) -> dict[str, torch.Tensor]:
        """``mu``, ``logvar`` [G, d] and standardized predictions ``pred`` [G, P]."""
        mu, logvar = self.encoder(batch)
        heads = self.heads(mu)
        pred = torch.stack([heads[p] for p in self.properties], dim=-1) if self.properties else mu.new_zeros(len(mu), 0)
        return {"mu": mu, "logvar": logvar, "pred": pred}

    def kl_beta(self) -> float:
        """β of the KL term at the current step (linear annealing over ``kl_anneal_steps``)."""
        tc = self.cfg.train
        if tc.kl_anneal_steps <= 0:
            return tc.kl_weight
        return tc.kl_weight * min(1.0, self.global_step / tc.kl_anneal_steps)

    def _losses(self, batch: AtomGraph, out: dict[str, torch.Tensor], sample_z: bool = False) -> dict[str, torch.Tensor]:
        """All loss terms. Property: standardized L1/MSE on the heads of ``mu``; KL with free
        bits; decoder levels (teacher forcing) on ``z`` = a posterior sample (``sample_z``) or ``mu``."""
        tc = self.cfg.train
        target = (batch.y - self.y_mean) / self.y_std
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
        if self.decoder is not None:
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample_z else mu
            dec = self.decoder.losses(batch, z)
            terms.update(dec)
            weights = {"global": tc.global_weight, "coarse": tc.coarse_weight, "hcount": tc.hcount_weight,
                       "fine": tc.fine_weight}
            loss = loss + sum(w * dec[k] for k, w in weights.items() if k in dec)
        terms["loss"] = loss
        terms["loss_no_kl"] = loss - beta * kl_pen if beta > 0 else loss
        return terms

    def _mae(self, batch: AtomGraph, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        err = (self.to_physical(out["pred"]) - batch.y).abs()
        return {p: err[:, k][torch.isfinite(err[:, k])] for k, p in enumerate(self.properties)}

    def training_step(self, batch: AtomGraph, batch_idx: int) -> torch.Tensor:
        out = self(batch)
        losses = self._losses(batch, out, sample_z=True)
        bs = batch.num_graphs
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=bs)
        for name, value in losses.items():
            if name != "loss":
                self.log(f"train/{name}", value, batch_size=bs)
        self.log("lr", self.optimizers().param_groups[0]["lr"], batch_size=bs)
        return losses["loss"]

    def _eval_step(self, batch: AtomGraph, stage: str) -> None:
        out = self(batch)
        losses = self._losses(batch, out)
        bs = batch.num_graphs
        self.log(f"{stage}/loss", losses["loss"], prog_bar=stage == "val", batch_size=bs, sync_dist=True)
        for name, value in losses.items():
            if name not in ("loss", "property"):
                self.log(f"{stage}/{name}", value, batch_size=bs, sync_dist=True)
        for p, err in self._mae(batch, out).items():
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
        opt = torch.optim.AdamW(self.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
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
            group["lr"] = lr

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

    def to_physical(self, pred: torch.Tensor) -> torch.Tensor:
        """Standardized head outputs [G, P] → physical units."""
        return pred * self.y_std + self.y_mean

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["atomarch_version"] = __version__
        checkpoint["atomarch_config"] = self.cfg.to_dict()
        if self.projection is not None:
            checkpoint["atomarch_projection"] = self.projection
        if self.domain is not None:
            checkpoint["atomarch_domain"] = self.domain.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.projection = checkpoint.get("atomarch_projection")
        if checkpoint.get("atomarch_domain"):
            from atomarch.latent.domain import Domain

            self.domain = Domain.from_dict(checkpoint["atomarch_domain"])

    def project(self, latents: np.ndarray) -> np.ndarray:
        """Map coordinates [n, 2] of latents [n, d]: the PCA stored with the checkpoint (fitted on
        the training split's latent means by ``atomarch export``)."""
        from atomarch.errors import CheckpointError
        from atomarch.latent.projection import apply_projection

        if self.projection is None:
            raise CheckpointError("this checkpoint has no map projection; `atomarch export` fits and stores one")
        return apply_projection(self.projection, latents)

    # ---------------------------------------------------------- user API
    @property
    def molecules_only(self) -> bool:
        """True for models that know only molecules: a molecule decoder, or a training set
        without periodic structures (QM9). They refuse crystals."""
        if self.decoder is not None or self.cfg.data.dataset == "qm9":
            return True
        dom = self.training_domain()
        return dom is not None and not dom.periodic

    def training_domain(self):
        """The :class:`~atomarch.latent.domain.Domain` of the training split: stored in the
        checkpoint by ``atomarch export`` (with the latent statistic), else the sizes read from
        the model's dataset on first use (None when that dataset cannot be loaded here)."""
        if self.domain is None and not getattr(self, "_domain_failed", False):
            from atomarch.data.datamodule import build_datamodule
            from atomarch.latent.domain import domain_of

            try:
                cfg = dataclasses.replace(self.cfg.data, train_subset=None, val_subset=None, test_subset=None)
                dm = build_datamodule(cfg, elements=self.elements)
                dm.setup()
                self.domain = domain_of(dm.packed, dm.split["train"])
            except Exception:  # the user's training files are not on this machine: no size checks
                self._domain_failed = True
        return self.domain

    def _check_inputs(self, frames: Sequence[Atoms]) -> None:
        """Input validation of user structures (clear errors naming the structure)."""
        check_structures(frames, self.elements)
        if self.molecules_only:
            from atomarch.latent.domain import refuse_periodic

            source = " (trained on QM9)" if self.cfg.data.dataset == "qm9" else ""
            refuse_periodic(frames, f"a molecule model{source}")

    def flag_domain(self, frames: Sequence[Atoms], latents: np.ndarray | None = None, warn: bool = True) -> np.ndarray:
        """Flag structures outside the training domain (``atoms.info["in_domain"]``, one
        :class:`~atomarch.latent.domain.OutOfDomainWarning` each); returns flags [n] bool."""
        dom = self.training_domain()
        if dom is None:
            return np.ones(len(frames), dtype=bool)
        return dom.flag(frames, latents, warn=warn)

    def _batches(self, frames: Sequence[Atoms], batch_size: int):
        self._check_inputs(frames)
        self.eval()
        for k in range(0, len(frames), batch_size):
            yield batch_from_atoms(frames[k : k + batch_size], self.cutoff).to(self.device)

    @torch.no_grad()
    def encode(self, frames: Sequence[Atoms], batch_size: int = 64) -> np.ndarray:
        """Latent means of structures: list of ``ase.Atoms`` → [n, latent_dim] float32.

        Structures outside the training domain are flagged (``atoms.info["in_domain"]``) with one
        :class:`~atomarch.latent.domain.OutOfDomainWarning` each; periodic structures given to
        a molecule model are refused (:class:`~atomarch.errors.StructureError`)."""
        frames = list(frames)
        outs = [self.encoder(b)[0].cpu() for b in self._batches(frames, batch_size)]
        z = torch.cat(outs).numpy() if outs else np.zeros((0, self.cfg.model.latent_dim), np.float32)
        self.flag_domain(frames, z)
        return z

    @torch.no_grad()
    def predict(self, frames: Sequence[Atoms], batch_size: int = 64) -> dict[str, np.ndarray]:
        """Property predictions in physical units: ``{name: [n]}`` (QM9 energies in eV).
        Out-of-domain structures are flagged and warned about as in :meth:`encode`."""
        frames = list(frames)
        outs = [self(b) for b in self._batches(frames, batch_size)]
        pred = torch.cat([self.to_physical(o["pred"]).cpu() for o in outs]) if outs else torch.zeros(0, len(self.properties))
        if outs:
            self.flag_domain(frames, torch.cat([o["mu"].cpu() for o in outs]).numpy())
        return {p: pred[:, k].numpy() for k, p in enumerate(self.properties)}

    # ----------------------------------------------------- generative API
    def _require_decoder(self) -> HierarchicalDecoder:
        if self.decoder is None:
            from atomarch.errors import CheckpointError

            raise CheckpointError("this model has no decoder (a property-only checkpoint); use a VAE checkpoint")
        return self.decoder

    @torch.no_grad()
    def decode(self, z: np.ndarray | torch.Tensor, seed: int = 0, batch_size: int = 256,
               coarse_steps: int | None = None, fine_steps: int | None = None, relax: str | None = None,
               conformers: int | None = None, beams: int | None = None, noise_rotation: np.ndarray | None = None,
               progress: bool = False) -> list[Atoms]:
        """Latents [n, latent_dim] → ``n`` molecules (``ase.Atoms``, zero centre of mass, Å).

        Deterministic for a given ``seed``; every molecule uses the same noise stream, so a
        smoothly varying ``z`` gives a smoothly varying structure and the result does not
        depend on the batch. ``noise_rotation`` [3, 3] rotates the noise draw (the molecules
        rotate with it). ``relax`` overrides the graph decoder's detail-level relaxation
        (mmff, xtb, none); ``coarse_steps``/``fine_steps`` the flow decoder's ODE steps.
        ``conformers`` and ``beams`` override how many conformers / beam-search skeletons the
        graph decoder considers to pick the ones closest to ``z``. ``atoms.info`` carries the property heads' predictions (physical units), ``seed``,
        ``latent_index`` and, for the graph decoder, ``smiles``/``selfies``/``embedding``.
        """
        from tqdm.auto import tqdm

        from atomarch.errors import AtomarchError

        dec = self._require_decoder()
        self.eval()
        z = torch.as_tensor(np.asarray(z, dtype=np.float32))
        d = self.cfg.model.latent_dim
        if z.ndim == 1:
            z = z.unsqueeze(0)
        if z.ndim != 2 or z.shape[1] != d:
            raise AtomarchError(f"latents must have shape [n, {d}], got {list(z.shape)}")
        if not torch.isfinite(z).all():
            raise AtomarchError("latent vectors contain NaN/inf")
        graph = self.cfg.model.decoder.kind == "graph"
        if graph:
            batch_size = min(batch_size, 32)  # the detail level is per molecule; keep the bar moving
        frames: list[Atoms] = []
        chunks = range(0, len(z), batch_size)
        bar = tqdm(total=len(z), desc="decode", unit="mol", disable=not progress or len(z) < 2)
        for k in chunks:
            zb = z[k : k + batch_size].to(self.device)
            heads = self.heads(zb)
            phys = self.to_physical(torch.stack([heads[p] for p in self.properties], -1)) if self.properties else None
            props = {p: phys[:, i].cpu().numpy() for i, p in enumerate(self.properties)}
            if graph:
                decoded = dec.sample(zb, seed=seed, noise_rotation=noise_rotation, relax=relax, conformers=conformers,
                                     beams=beams, encode=self._encode_unchecked)
            else:
                rot = None if noise_rotation is None else torch.as_tensor(np.asarray(noise_rotation), dtype=torch.float32)
                decoded = self._flow_frames(dec.sample(zb, seed=seed, noise_rotation=rot, coarse_steps=coarse_steps,
                                                       fine_steps=fine_steps))
            for g, atoms in enumerate(decoded):
                if len(atoms):
                    atoms.positions -= atoms.get_center_of_mass()
                atoms.info.update({p: float(v[g]) for p, v in props.items()})
                atoms.info.update(seed=int(seed), latent_index=k + g)
                frames.append(atoms)
            bar.update(len(zb))
        bar.close()
        return frames

    @torch.no_grad()
    def _encode_unchecked(self, frames: list[Atoms]) -> np.ndarray:
        """Latent means [n, d] of decoder-made structures (no input validation: a strained
        candidate conformer must not abort decoding)."""
        return self.encoder(batch_from_atoms(frames, self.cutoff).to(self.device))[0].cpu().numpy()

    @staticmethod
    def _flow_frames(out) -> list[Atoms]:
        numbers, pos, b = out.numbers.cpu().numpy(), out.positions.cpu().double().numpy(), out.batch.cpu().numpy()
        return [Atoms(numbers=numbers[b == g], positions=pos[b == g]) for g in range(out.num_graphs)]

    def sample(self, n: int, seed: int = 0, **kwargs: Any) -> list[Atoms]:
        """``n`` molecules decoded from prior draws z ~ N(0, I) (seeded)."""
        from atomarch.errors import AtomarchError
        from atomarch.nn.decoder import noise_seed

        if int(n) < 1:
            raise AtomarchError(f"number of samples must be at least 1, got {n}")
        gen = torch.Generator().manual_seed(noise_seed(seed, 2))
        z = torch.randn(int(n), self.cfg.model.latent_dim, generator=gen)
        return self.decode(z, seed=seed, **kwargs)

    def reconstruct(self, frames: Sequence[Atoms], seed: int = 0, **kwargs: Any) -> list[Atoms]:
        """Encode to the latent mean and decode back. Each output carries its input's
        ``in_domain`` flag (and ``domain_warning``) and ``input_index``."""
        frames = list(frames)
        out = self.decode(self.encode(frames), seed=seed, **kwargs)
        for k, (src, atoms) in enumerate(zip(frames, out)):
            atoms.info["input_index"] = k
            for key in ("in_domain", "domain_warning"):
                if key in src.info:
                    atoms.info[key] = src.info[key]
        return out

    def interpolate(self, a: Atoms, b: Atoms, steps: int = 10, method: str = "slerp", seed: int = 0,
                    **kwargs: Any) -> list[Atoms]:
        """Decoded path of ``steps`` molecules from ``a`` to ``b`` (both ends included)."""
        from atomarch.latent.paths import latent_path

        za, zb = self.encode([a, b])
        path = latent_path(za, zb, steps, method)
        frames = self.decode(path, seed=seed, **kwargs)
        for k, atoms in enumerate(frames):
            atoms.info["path_t"] = float(k / max(1, steps - 1))
        return frames

    # ------------------------------------------------------- design tools
    def optimize(self, start: Sequence[Atoms] | np.ndarray, objective: Any, steps: int = 100, lr: float = 0.05,
                 prior_weight: float = 0.1, decode_every: int = 10, method: str = "gradient", population: int = 16,
                 sigma: float = 0.1, seed: int = 0, relax: str | None = None, progress: bool = False,
                 conformers: int | None = None, beams: int | None = None):
        """Move latents toward a better objective and decode every ``decode_every`` steps.

        Args:
            start: molecules (``ase.Atoms``, encoded to their latent means) or latents [S, d].
            objective: property-head objective (``{"gap": "max"}``, ``{"gap": ("target", 7.0)}``,
                weighted sums, or ``"gap:max"``; see :mod:`atomarch.latent.optimize`), or — with
                ``method="random"`` — a callable ``f(list_of_atoms) -> scores [n]`` to maximise
                on decoded structures (e.g. an oracle).
            steps: optimisation steps; lr: Adam step size (gradient method).
            prior_weight: weight of |z|²/2, the negative log prior density.
            method: ``"gradient"`` (Adam on the heads) or ``"random"`` ((1 + λ) evolution
                strategy with ``population`` λ and step ``sigma``, seeded by ``seed``).
            seed: decoding seed (and the random method's seed).
            relax, conformers, beams: decode options, as in :meth:`decode` (the start record
                decodes exactly as :meth:`reconstruct` does with the same options and seed).

        Returns:
            :class:`~atomarch.latent.optimize.Trajectory` with latents, decoded structures,
            predictions and validity flags at steps 0, ``decode_every``, ... , ``steps``.
        """
        from tqdm.auto import tqdm

        from atomarch.errors import AtomarchError
        from atomarch.latent.optimize import Trajectory, objective_value, parse_objective, validity

        self._require_decoder()
        if method not in ("gradient", "random"):
            raise AtomarchError(f"method must be 'gradient' or 'random', got {method!r}")
        if steps < 0 or decode_every < 1:
            raise AtomarchError("steps must be >= 0 and decode_every >= 1")
        on_structures = callable(objective)
        if on_structures and method != "random":
            raise AtomarchError("a callable objective on decoded structures needs method='random' (it has no gradient)")
        terms = [] if on_structures else parse_objective(objective, self.properties)
        if isinstance(start, np.ndarray) or torch.is_tensor(start):
            z0 = np.asarray(start, dtype=np.float32).reshape(-1, self.cfg.model.latent_dim)
        else:
            z0 = self.encode(list(start))
        if len(z0) == 0:
            raise AtomarchError("optimize needs at least one start structure or latent")
        std = {p: float(self.y_std[k]) for k, p in enumerate(self.properties)}

        def head_score(z: torch.Tensor) -> torch.Tensor:
            heads = self.heads(z)
            phys = self.to_physical(torch.stack([heads[p] for p in self.properties], -1))
            return objective_value(terms, {p: phys[..., k] for k, p in enumerate(self.properties)}, std)

        def penalised(z: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
            return score - prior_weight * 0.5 * z.pow(2).sum(-1)

        dec_kw = {"relax": relax, "conformers": conformers, "beams": beams}
        self.eval()
        z = torch.tensor(z0, device=self.device)
        records, record_steps = [z.detach().cpu().numpy().copy()], [0]
        gen = torch.Generator().manual_seed(int(seed))
        opt = torch.optim.Adam([z.requires_grad_(True)], lr=lr) if method == "gradient" else None
        current = None
        for it in tqdm(range(1, steps + 1), desc=f"optimize ({method})", disable=not progress):
            if opt is not None:
                with torch.enable_grad():
                    opt.zero_grad()
                    loss = -penalised(z, head_score(z)).sum()
                    loss.backward()
                    opt.step()
            else:
                with torch.no_grad():
                    S, d = z.shape
                    cand = z.unsqueeze(1) + sigma * torch.randn(S, population, d, generator=gen).to(z)
                    cand = torch.cat([z.unsqueeze(1), cand], dim=1)  # elitist: the current point competes
                    if on_structures:
                        if current is None:
                            current = self._structure_scores(objective, z, seed, dec_kw)
                        new = self._structure_scores(objective, cand[:, 1:].reshape(-1, d), seed, dec_kw).view(S, population)
                        score = torch.cat([current.unsqueeze(1), new], dim=1)
                    else:
                        score = head_score(cand)
                    best = penalised(cand, score).argmax(1)
                    z = cand[torch.arange(S), best].clone()
                    if on_structures:
                        current = score[torch.arange(S), best]
            if it % decode_every == 0 or it == steps:
                records.append(z.detach().cpu().numpy().copy())
                record_steps.append(it)
        lat = np.stack(records, axis=1)  # [S, R, d]
        S, R, d = lat.shape
        frames = self.decode(lat.reshape(-1, d), seed=seed, progress=progress, **dec_kw)
        valid, perceived = validity(frames)
        smiles = [a.info.get("smiles") or p for a, p in zip(frames, perceived)]  # the decoded graph, if known
        pred = {p: np.array([a.info[p] for a in frames]).reshape(S, R) for p in self.properties}
        return Trajectory(
            steps=record_steps, latents=lat,
            structures=[frames[s * R : (s + 1) * R] for s in range(S)],
            predicted=pred, valid=valid.reshape(S, R),
            smiles=[smiles[s * R : (s + 1) * R] for s in range(S)], objective=terms,
        )

    def _structure_scores(self, objective, z: torch.Tensor, seed: int, dec_kw: dict[str, Any]) -> torch.Tensor:
        frames = self.decode(z.cpu().numpy(), seed=seed, **dec_kw)
        scores = np.asarray(objective(frames), dtype=np.float64).reshape(-1)
        return torch.as_tensor(np.nan_to_num(scores, nan=-np.inf), dtype=torch.float32, device=z.device)
