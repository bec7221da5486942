"""Equivariant conditional velocity networks and helpers for flow matching on point clouds.

A :class:`VelocityNet` maps noisy positions ``x_t`` [N, 3] (Å), node types, the flow time
``t`` and a per-graph condition (the latent ``z``) to a velocity [N, 3] — an l=1 (1o) output
of e3nn interaction blocks, so rotating the input positions rotates the velocity — and to
optional invariant per-node logits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from e3nn import o3
from torch import nn

from atomarch.data.neighbors import dense_radius_graph
from atomarch.geometry import assign_by_element, axis_alignments, kabsch
from atomarch.nn.blocks import Interaction
from atomarch.nn.radial import BesselBasis
from atomarch.nn.readout import scatter_sum


def time_features(t: torch.Tensor, n: int = 16) -> torch.Tensor:
    """Sinusoidal features of flow times ``t`` [M] in [0, 1] → [M, 2n]."""
    freq = torch.exp(torch.linspace(0.0, math.log(1000.0), n, device=t.device, dtype=t.dtype))
    arg = t.unsqueeze(-1) * freq * math.pi
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


def center(x: torch.Tensor, batch: torch.Tensor, num_graphs: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Subtract each graph's mean position: [N, 3] → [N, 3]. With ``mask`` [N] (bool) the mean
    is taken over the masked nodes only (e.g. heavy atoms) and subtracted from all nodes."""
    xs, bs = (x, batch) if mask is None else (x[mask], batch[mask])
    count = torch.bincount(bs, minlength=num_graphs).clamp_min(1).unsqueeze(-1).to(x.dtype)
    return x - (scatter_sum(xs, bs, num_graphs) / count)[batch]


class VelocityNet(nn.Module):
    """Conditional equivariant network on a point cloud.

    Args:
        irreps_hidden: hidden irreps of the interaction blocks, e.g. ``64x0e+16x1o+8x2e``.
        lmax: degree of the edge spherical harmonics.
        num_layers, num_basis, radial_hidden: sizes of the blocks and radial MLPs.
        cutoff: Å; edges are all pairs closer than this (use a large value for complete graphs).
        num_types: node types (embedding); cond_dim: size of the per-graph condition;
        num_extra: size of extra per-node scalar inputs; num_logits: invariant outputs per node.
        avg_num_neighbors: message normalisation.
    """

    def __init__(
        self,
        irreps_hidden: str,
        lmax: int,
        num_layers: int,
        num_basis: int,
        radial_hidden: int,
        cutoff: float,
        num_types: int,
        cond_dim: int,
        num_extra: int = 0,
        num_logits: int = 0,
        avg_num_neighbors: float = 8.0,
        edge_node_features: int = 16,
    ) -> None:
        super().__init__()
        hidden = o3.Irreps(irreps_hidden).simplify()
        n_scalar = sum(m for m, ir in hidden if ir.l == 0 and ir.p == 1)
        self.cutoff = float(cutoff)
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.type_embed = nn.Embedding(num_types, n_scalar)
        self.time_embed = nn.Sequential(nn.Linear(32, n_scalar), nn.SiLU(), nn.Linear(n_scalar, n_scalar))
        self.cond_embed = nn.Sequential(nn.Linear(cond_dim, n_scalar), nn.SiLU(), nn.Linear(n_scalar, n_scalar))
        self.extra_embed = nn.Linear(num_extra, n_scalar) if num_extra else None
        self.radial_basis = BesselBasis(cutoff, num_basis)
        # input: invariant channels + one vector channel for self-conditioning (the previous
        # prediction of the clean positions, relative to the current ones; zero when absent)
        irreps = o3.Irreps(f"{n_scalar}x0e+1x1o")
        self.n_scalar = n_scalar
        self.layers = nn.ModuleList()
        for _ in range(num_layers):
            layer = Interaction(
                irreps, hidden, self.irreps_sh, num_basis, radial_hidden, avg_num_neighbors, edge_node_features
            )
            self.layers.append(layer)
            irreps = layer.irreps_out
        self.num_logits = num_logits
        out = o3.Irreps("1x1o") + (o3.Irreps(f"{num_logits}x0e") if num_logits else o3.Irreps(""))
        self.out = o3.Linear(irreps, out)
        with torch.no_grad():  # start as the identity flow (no displacement): stable early training
            self.out.weight.zero_()

    def forward(
        self,
        x: torch.Tensor,
        types: torch.Tensor,
        batch: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        extra: torch.Tensor | None = None,
        self_cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 3] Å, types [N], batch [N], t [G], cond [G, cond_dim], extra [N, num_extra],
        self_cond [N, 3] (a previous estimate of the clean positions, or None)
        → (displacement to the clean positions [N, 3] Å, logits [N, num_logits])."""
        edge_index = dense_radius_graph(x.detach(), batch, self.cutoff)
        src, dst = edge_index
        vec = x[src] - x[dst]
        sh = o3.spherical_harmonics(self.irreps_sh, vec, normalize=True, normalization="component")
        r = vec.norm(dim=-1)
        radial = self.radial_basis(r)
        envelope = self.radial_basis.envelope(r)
        h = self.type_embed(types) + self.time_embed(time_features(t))[batch] + self.cond_embed(cond)[batch]
        if self.extra_embed is not None and extra is not None:
            h = h + self.extra_embed(extra)
        sc = (self_cond - x).detach() if self_cond is not None else x.new_zeros(x.shape)
        h = torch.cat([h, sc], dim=-1)
        for layer in self.layers:
            h = layer(h, sh, radial, edge_index, envelope)
        out = self.out(h)
        return self._split(out)

    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        irreps = self.out.irreps_out
        vel, logits = None, []
        for sl, (mul, ir) in zip(irreps.slices(), irreps):
            if ir.l == 1:
                vel = out[:, sl]
            else:
                logits.append(out[:, sl])
        logits_t = torch.cat(logits, dim=-1) if logits else out.new_zeros(out.shape[0], 0)
        return vel, logits_t


def ot_pair(x0: np.ndarray, x1: np.ndarray, types: np.ndarray, iterations: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Pair the target ``x1`` [n, 3] with the noise ``x0`` [n, 3] (both centred): element-wise
    optimal assignment alternating with an optimal orthogonal alignment (reflections allowed:
    the networks are O(3)-equivariant and the latent cannot tell mirror images apart), started
    from every alignment of the principal axes; the lowest squared distance wins.

    Returns ``(perm, R)`` such that ``x1[perm] @ R.T`` is the target of noise point k in row k.
    O(3)-equivariant (up to ties): transforming ``x0`` transforms the paired target the same way,
    so the training target is a function an equivariant network can represent."""
    n = len(x0)
    if n == 1:
        return np.zeros(1, dtype=int), np.eye(3)
    best = (np.inf, np.arange(n), np.eye(3))
    for R in axis_alignments(x0, x1, allow_reflection=True):
        perm = np.arange(n)
        for _ in range(iterations):
            perm = assign_by_element(x0, x1 @ R.T, types, types)
            R = kabsch(x1[perm], x0, allow_reflection=True)
        cost = float(((x1[perm] @ R.T - x0) ** 2).sum())
        if cost < best[0] - 1e-9:
            best = (cost, perm, R)
    return best[1], best[2]
