"""The model as a plain ``nn.Module``: encoder → latent → property heads (+ decoder), and the
training split's target statistics.

:class:`AtomarchNet` holds the weights and nothing else: the user-facing object
(:class:`atomarch.models.api.AtomarchModel`, what :func:`atomarch.load_model` returns) wraps it
for inference, the Lightning task (:class:`atomarch.models.task.AtomarchTask`) for training.
Its state-dict keys (``encoder.*``, ``heads.*``, ``decoder.*``, ``y_mean``, ``y_std``) are
the checkpoints' keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from ase.data import atomic_numbers
from torch import nn

from atomarch.config import Config, config_from_dict
from atomarch.data.graph import AtomGraph
from atomarch.errors import ConfigError
from atomarch.nn.decoders import Decoder, build_decoder
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


class AtomarchNet(nn.Module):
    """Encoder + property heads + (optional) decoder + target statistics.

    Args:
        config: the run's configuration as a nested dict (see :class:`atomarch.config.Config`).
        stats: ``{property: {"mean": m, "std": s}}`` in physical units, from the training split.
        vocab: the graph decoder's SELFIES tokens (from the training split; stored in checkpoints).
    """

    def __init__(self, config: dict[str, Any], stats: dict[str, dict[str, float]], vocab: list[str] | None = None) -> None:
        super().__init__()
        self.cfg: Config = config_from_dict(config)
        mc = self.cfg.model
        self.elements = list(mc.elements)
        self.properties = list(self.cfg.data.properties)
        self.cutoff = float(self.cfg.data.cutoff)
        unknown = [s for s in self.elements if s not in atomic_numbers]
        if unknown:
            raise ConfigError(f"model.elements: unknown element symbol '{unknown[0]}'")
        numbers = [atomic_numbers[s] for s in self.elements]
        try:
            self.encoder = build_encoder(mc.encoder, self.cutoff, numbers, mc.latent_dim)
            self.heads = PropertyHeads(self.properties, mc.latent_dim, mc.head_hidden, mc.head_layers)
            self.decoder: Decoder | None = (build_decoder(mc.decoder, numbers, mc.latent_dim, vocab)
                                            if mc.decoder.enabled else None)
        except (ValueError, AssertionError, KeyError) as exc:  # e.g. unparsable irreps, no H for the decoder
            raise ConfigError(f"invalid model configuration: {exc}") from exc
        self.register_buffer("y_mean", torch.tensor([stats[p]["mean"] for p in self.properties]))
        self.register_buffer("y_std", torch.tensor([stats[p]["std"] for p in self.properties]))

    @property
    def device(self) -> torch.device:
        return self.y_mean.device

    def forward(self, batch: AtomGraph) -> dict[str, torch.Tensor]:
        """``mu``, ``logvar`` [G, d] and standardized predictions ``pred`` [G, P]."""
        mu, logvar = self.encoder(batch)
        return {"mu": mu, "logvar": logvar, "pred": self.head_predictions(mu)}

    def head_predictions(self, z: torch.Tensor) -> torch.Tensor:
        """Standardized property-head outputs [..., P] of latents [..., d]."""
        if not self.properties:
            return z.new_zeros(*z.shape[:-1], 0)
        heads = self.heads(z)
        return torch.stack([heads[p] for p in self.properties], dim=-1)

    def to_physical(self, pred: torch.Tensor) -> torch.Tensor:
        """Standardized head outputs [G, P] → physical units."""
        return pred * self.y_std + self.y_mean

    def mae(self, batch: AtomGraph, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Absolute errors in physical units per property (finite targets only)."""
        err = (self.to_physical(out["pred"]) - batch.y).abs()
        return {p: err[:, k][torch.isfinite(err[:, k])] for k, p in enumerate(self.properties)}
