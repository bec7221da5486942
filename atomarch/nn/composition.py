"""Composition-only encoders: a structure's fractional element composition → latent.

``kind: elemnet`` — an ElemNet-style deep network (Jha et al., Sci. Rep. 8, 17593 (2018)): the
fractions of each element of the model's list [G, T] go through a tapered stack of fully
connected layers (``num_layers`` layers; the widths follow ElemNet's 4 : 3 : 3 : 3 : 2 : 1
pattern of ``hidden``, ``hidden/2``, ..., ``hidden/32``; ``hidden: 1024, num_layers: 16`` plus the output layer is the
published network) to ``mu`` and ``logvar``. Geometry is ignored, so the latent is invariant to
rotations, translations, permutations and the choice of cell by construction; it is the
"composition only" baseline of the source review against the structure encoders.
"""

from __future__ import annotations

import torch
from torch import nn

from atomarch.config import EncoderConfig
from atomarch.data.graph import AtomGraph
from atomarch.nn.encoders import Encoder
from atomarch.nn.readout import SpeciesIndex, scatter_sum

_STAGES = (4, 3, 3, 3, 2, 1)  # ElemNet's layers per width (1024, 512, 256, 128, 64, 32)


def elemnet_widths(hidden: int, num_layers: int) -> list[int]:
    """Layer widths of a ``num_layers``-deep ElemNet-style stack starting at ``hidden``."""
    total = sum(_STAGES)
    bounds = torch.tensor(_STAGES).cumsum(0).tolist()
    widths = []
    for k in range(num_layers):
        pos = (k + 0.5) * total / num_layers
        stage = next(i for i, b in enumerate(bounds) if pos <= b)
        widths.append(max(8, hidden >> stage))
    return widths


class ElemNetEncoder(Encoder):
    """Fractional composition [G, T] → deep MLP → (``mu``, ``logvar``) [G, latent_dim].

    Args:
        cfg: ``hidden`` (first width), ``num_layers`` (depth), ``logvar_init``.
        cutoff: unused (the encoder sees no geometry); kept for the registry's signature.
        atomic_numbers: the model's elements (an unknown one is an error naming it).
        latent_dim: size of ``mu``/``logvar``.
    """

    def __init__(self, cfg: EncoderConfig, cutoff: float, atomic_numbers: list[int], latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.species = SpeciesIndex(atomic_numbers)
        widths = elemnet_widths(cfg.hidden, cfg.num_layers)
        layers: list[nn.Module] = []
        prev = len(atomic_numbers)
        for w in widths:
            layers += [nn.Linear(prev, w), nn.SiLU()]
            prev = w
        self.net = nn.Sequential(*layers)
        for layer in self.net:  # He initialisation: PyTorch's default shrinks the signal ~3x a layer, and
            if isinstance(layer, nn.Linear):  # 16 layers deep two compositions would start indistinguishable
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        self.out = nn.Linear(prev, 2 * latent_dim)
        if cfg.logvar_init:
            with torch.no_grad():
                self.out.bias[latent_dim:] += cfg.logvar_init

    def node_invariants(self, batch: AtomGraph) -> torch.Tensor:
        """Per-atom features [N, T]: the one-hot element (all this encoder sees of an atom)."""
        return nn.functional.one_hot(self.species(batch.z), self.species.num_species).to(batch.pos.dtype)

    def fractions(self, batch: AtomGraph) -> torch.Tensor:
        """Fractional composition [G, T] of each structure of the batch."""
        counts = scatter_sum(self.node_invariants(batch), batch.batch, batch.num_graphs)
        return counts / counts.sum(-1, keepdim=True).clamp_min(1.0)

    def forward(self, batch: AtomGraph) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.out(self.net(self.fractions(batch))).chunk(2, dim=-1)
        return mu, logvar
