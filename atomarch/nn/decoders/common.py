"""Parts shared by the decoder families: the global level, seeded noise streams, element tables."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from atomarch.nn.readout import mlp


class GlobalLevel(nn.Module):
    """z [G, d] → per-element count logits [G, n_elements, max_count + 1]."""

    def __init__(self, latent_dim: int, n_elements: int, max_count: int, hidden: int = 128) -> None:
        super().__init__()
        self.n_elements, self.max_count = n_elements, max_count
        self.net = mlp([latent_dim, hidden, hidden, n_elements * (max_count + 1)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, self.n_elements, self.max_count + 1)


def noise_seed(seed: int, stream: int) -> int:
    """A 63-bit generator seed for (user seed, stream), distinct across streams (numpy SeedSequence).
    Stream 0: skeleton noise, 1: hydrogen noise, 2: prior latents."""
    return int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def type_table(atomic_numbers: list[int]) -> torch.Tensor:
    """Atomic number → index in the decoder's element list: a [119] long tensor, -1 elsewhere."""
    table = torch.full((119,), -1, dtype=torch.long)
    table[torch.tensor(atomic_numbers)] = torch.arange(len(atomic_numbers))
    return table


def require_hydrogen(atomic_numbers: list[int]) -> None:
    """Molecule decoders place hydrogens themselves: H must be in the element list."""
    if 1 not in atomic_numbers:
        raise ValueError("the molecule decoder needs hydrogen in the element list")


def k_best_compositions(logp: torch.Tensor, k: int, per_element: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most likely compositions under independent per-element count distributions.

    Args:
        logp: [G, T, C] log-probabilities of each element's count 0..C-1.
        k: how many compositions.
        per_element: only each element's ``per_element`` most likely counts are considered.

    Returns:
        counts [G, k', T] and log-probabilities [G, k'] (best first; k' = min(k, per_element^T)).
        Exact: a beam of width ``k`` over the elements keeps every prefix of the k best
        compositions (a sum of independent terms), so 89 elements cost 89 small steps.
    """
    G, T, C = logp.shape
    m = min(per_element, C)
    top_lp, top_c = logp.topk(m, dim=-1)  # [G, T, m]
    best_lp = logp.new_zeros(G, 1)
    best_c = torch.zeros(G, 1, 0, dtype=torch.long, device=logp.device)
    for t in range(T):
        cand = (best_lp.unsqueeze(-1) + top_lp[:, t].unsqueeze(1)).reshape(G, -1)  # [G, K*m]
        best_lp, idx = cand.topk(min(k, cand.shape[1]), dim=1)
        parent, choice = idx // m, idx % m
        prev = best_c.gather(1, parent.unsqueeze(-1).expand(-1, -1, best_c.shape[2]))
        best_c = torch.cat([prev, top_c[:, t].gather(1, choice).unsqueeze(-1)], dim=-1)
    return best_c, best_lp
