"""Invariant per-atom features → a global latent distribution (``mu``, ``logvar``)."""

from __future__ import annotations

import torch
from torch import nn


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` [N, F] into ``dim_size`` groups given by ``index`` [N]."""
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src)


def mlp(sizes: list[int], act: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """Linear layers of the given sizes with ``act`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class LatentReadout(nn.Module):
    """Per-atom MLP, then pooling over each graph, then an MLP to ``mu`` and ``logvar``
    [G, latent_dim]. Pooling makes the latent permutation-invariant.

    ``pooling``: ``sum_mean`` (sum/10 and mean side by side; extensive, for molecules) or
    ``mean`` (intensive: any cell of a crystal, including supercells, gives the same latent,
    since every atom of a supercell has the environment of its primitive-cell image).
    ``logvar_init`` shifts the initial log-variance (see ``EncoderConfig.logvar_init``).
    ``norm``: batch-normalise the pooled features (running statistics at evaluation, so a
    structure's latent does not depend on its batch; see ``EncoderConfig.readout_norm``)."""

    def __init__(self, in_dim: int, hidden: int, latent_dim: int, pooling: str = "sum_mean",
                 logvar_init: float = 0.0, norm: bool = False) -> None:
        super().__init__()
        if pooling not in ("sum_mean", "mean"):
            raise ValueError(f"unknown pooling {pooling!r} (known: 'sum_mean', 'mean')")
        self.pooling = pooling
        self.atom_mlp = mlp([in_dim, hidden, hidden])
        g_dim = (2 if pooling == "sum_mean" else 1) * hidden
        self.norm = nn.BatchNorm1d(g_dim) if norm else None
        self.graph_mlp = mlp([g_dim, hidden, 2 * latent_dim])
        self.latent_dim = latent_dim
        if logvar_init:
            with torch.no_grad():
                self.graph_mlp[-1].bias[latent_dim:] += logvar_init

    def forward(self, h: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.atom_mlp(h)
        total = scatter_sum(a, batch, num_graphs)
        count = torch.bincount(batch, minlength=num_graphs).clamp_min(1).unsqueeze(-1).to(a.dtype)
        mean = total / count
        g = torch.cat([total / 10.0, mean], dim=-1) if self.pooling == "sum_mean" else mean  # /10: QM9-size sums near 1
        if self.norm is not None:
            n = self.norm  # a one-structure training batch has no batch statistics: use the running ones
            use_batch = n.training and g.shape[0] > 1
            g = nn.functional.batch_norm(g, n.running_mean, n.running_var, n.weight, n.bias, use_batch,
                                         n.momentum if use_batch else 0.0, n.eps)
        mu, logvar = self.graph_mlp(g).chunk(2, dim=-1)
        return mu, logvar


class SpeciesIndex(nn.Module):
    """Maps atomic numbers to 0..n_species-1 (``-1`` for elements the model does not know)."""

    def __init__(self, atomic_numbers: list[int]) -> None:
        super().__init__()
        table = torch.full((119,), -1, dtype=torch.long)
        table[torch.tensor(atomic_numbers)] = torch.arange(len(atomic_numbers))
        self.register_buffer("table", table, persistent=False)
        self.num_species = len(atomic_numbers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        idx = self.table[z]
        if bool((idx < 0).any()):
            from atomarch.errors import StructureError

            bad = sorted(set(z[idx < 0].tolist()))
            raise StructureError(f"atomic numbers {bad} are not known to this model")
        return idx
