"""Structure encoders: an :class:`AtomGraph` batch → invariant latent ``(mu, logvar)``.

All encoders share one interface (:class:`Encoder`) and are built by name through
:data:`atomarch.registry.ENCODERS` (config ``model.encoder.kind``):

* :class:`E3Encoder` — tensor-field / NequIP-style E(3)-equivariant message passing with
  e3nn: Bessel radial basis with a polynomial cutoff → radial MLP → per-edge weights of a
  "uvu" tensor product of node features with edge spherical harmonics (l ≤ ``lmax``),
  ``o3.Linear`` mixing, gated non-linearity, residual update.
* :class:`SchNetEncoder` — invariant continuous-filter convolutions (baseline).
* :class:`MPNNEncoder` — Gilmer et al.'s message-passing neural network: an edge network maps
  each expanded distance to an F x F matrix that multiplies the neighbour's state; a GRU updates
  the node states for ``num_layers`` steps (weights shared across steps). Its readout is the
  configured pooling; ``pooling: attention`` is the (intensive) attention readout.
* :class:`CGCNNEncoder` — Xie & Grossman's crystal-graph convolutions: gated messages
  ``sigmoid(W_f z_ij) * softplus(W_s z_ij)`` of ``z_ij = [v_i, v_j, gaussians(d_ij)]``, summed,
  batch-normalised, residual softplus update.

Every encoder sees distances only (no directions for the invariant ones, spherical harmonics
for e3nn), over the periodic neighbour list of the batch (:meth:`AtomGraph.edge_vectors`), and
the readout pools invariant per-atom features, so the latent is invariant to rotations,
reflections, translations and atom permutations; with ``pooling: mean`` or ``attention`` also
to the choice of a crystal's cell (primitive, conventional, Niggli, supercell). Messages of the
invariant encoders fade out smoothly at the cutoff (cosine envelope), so the latent is
continuous in the positions.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

from atomarch.config import EncoderConfig
from atomarch.data.graph import AtomGraph
from atomarch.nn.blocks import Interaction
from atomarch.nn.radial import BesselBasis, GaussianBasis, cosine_cutoff
from atomarch.nn.readout import LatentReadout, SpeciesIndex, mlp, scatter_sum
from atomarch.registry import ENCODERS


class Encoder(nn.Module):
    """Interface: ``forward(batch) -> (mu, logvar)`` each [G, latent_dim];
    ``node_invariants(batch) -> [N, F]`` per-atom invariant features."""

    latent_dim: int

    def node_invariants(self, batch: AtomGraph) -> torch.Tensor:
        raise NotImplementedError

    def readout_inputs(self, batch: AtomGraph) -> torch.Tensor:
        """What the readout pools: the node invariants [N, F], with the species-skip embedding
        [N, cfg.species_skip] concatenated when configured."""
        h = self.node_invariants(batch)
        if getattr(self, "species_skip", None) is not None:
            h = torch.cat([h, self.species_skip(self.species(batch.z))], dim=-1)
        return h

    def forward(self, batch: AtomGraph) -> tuple[torch.Tensor, torch.Tensor]:
        return self.readout(self.readout_inputs(batch), batch.batch, batch.num_graphs)


class E3Encoder(Encoder):
    """E(3)-equivariant tensor-field encoder (see module docstring).

    Args:
        cfg: irreps, number of layers, radial basis and MLP sizes.
        cutoff: neighbour cutoff in Å (must equal the data's).
        atomic_numbers: elements the model accepts.
        latent_dim: size of ``mu``/``logvar``.
    """

    def __init__(self, cfg: EncoderConfig, cutoff: float, atomic_numbers: list[int], latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.species = SpeciesIndex(atomic_numbers)
        self.irreps_sh = o3.Irreps.spherical_harmonics(cfg.lmax)
        hidden = o3.Irreps(cfg.irreps_hidden).simplify()
        n_scalar = sum(m for m, ir in hidden if ir.l == 0 and ir.p == 1)
        if n_scalar == 0:
            raise ValueError(f"irreps_hidden {hidden} needs scalar (0e) channels")
        self.embed = nn.Embedding(len(atomic_numbers), n_scalar)
        self.radial_basis = BesselBasis(cutoff, cfg.num_basis)
        irreps = o3.Irreps(f"{n_scalar}x0e")
        self.layers = nn.ModuleList()
        for _ in range(cfg.num_layers):
            layer = Interaction(irreps, hidden, self.irreps_sh, cfg.num_basis, cfg.radial_hidden, cfg.avg_num_neighbors)
            self.layers.append(layer)
            irreps = layer.irreps_out
        self.irreps_out = irreps
        self.n_scalar_out = sum(m for m, ir in irreps if ir.l == 0 and ir.p == 1)
        self.species_skip = nn.Embedding(len(atomic_numbers), cfg.species_skip) if cfg.species_skip else None
        self.readout = LatentReadout(self.n_scalar_out + cfg.species_skip, cfg.hidden, latent_dim, cfg.pooling,
                                     cfg.logvar_init, cfg.readout_norm)

    def node_features(self, batch: AtomGraph) -> list[torch.Tensor]:
        """Equivariant per-atom features after each layer ([N, layer.irreps_out.dim])."""
        vec = batch.edge_vectors()
        r = vec.norm(dim=-1)
        sh = o3.spherical_harmonics(self.irreps_sh, vec, normalize=True, normalization="component")
        radial = self.radial_basis(r)
        x = self.embed(self.species(batch.z))
        out = []
        for layer in self.layers:
            x = layer(x, sh, radial, batch.edge_index)
            out.append(x)
        return out

    def node_invariants(self, batch: AtomGraph) -> torch.Tensor:
        x = self.node_features(batch)[-1]
        # the gate puts all scalars first
        return x[:, : self.n_scalar_out]


class SchNetEncoder(Encoder):
    """Invariant SchNet baseline: continuous-filter convolutions on Gaussian-expanded distances."""

    def __init__(self, cfg: EncoderConfig, cutoff: float, atomic_numbers: list[int], latent_dim: int) -> None:
        super().__init__()
        f = cfg.hidden
        self.latent_dim = latent_dim
        self.species = SpeciesIndex(atomic_numbers)
        self.embed = nn.Embedding(len(atomic_numbers), f)
        self.rbf = GaussianBasis(cutoff, 50)
        self.filters = nn.ModuleList(
            [nn.Sequential(nn.Linear(50, f), nn.Softplus(), nn.Linear(f, f)) for _ in range(cfg.num_layers)]
        )
        self.in2f = nn.ModuleList([nn.Linear(f, f, bias=False) for _ in range(cfg.num_layers)])
        self.f2out = nn.ModuleList(
            [nn.Sequential(nn.Linear(f, f), nn.Softplus(), nn.Linear(f, f)) for _ in range(cfg.num_layers)]
        )
        self.species_skip = nn.Embedding(len(atomic_numbers), cfg.species_skip) if cfg.species_skip else None
        self.readout = LatentReadout(f + cfg.species_skip, f, latent_dim, cfg.pooling, cfg.logvar_init,
                                     cfg.readout_norm)

    def node_invariants(self, batch: AtomGraph) -> torch.Tensor:
        src, dst = batch.edge_index
        r = batch.edge_vectors().norm(dim=-1)
        rbf = self.rbf(r)
        env = cosine_cutoff(r, self.rbf.cutoff)
        x = self.embed(self.species(batch.z))
        for filt, lin_in, lin_out in zip(self.filters, self.in2f, self.f2out):
            w = filt(rbf) * env.unsqueeze(-1)
            msg = lin_in(x)[src] * w
            x = x + lin_out(scatter_sum(msg, dst, x.shape[0]))
        return x


class MPNNEncoder(Encoder):
    """Gilmer et al. (2017) message-passing network with an edge network and a GRU update.

    For an edge from neighbour j to centre i at distance d_ij (Å):
    ``A_ij = edge_net(gaussians(d_ij))`` [F, F] (an MLP of 50 Gaussians on [0, cutoff] with
    ``cfg.radial_hidden`` hidden units), the message ``m_i = sum_j c(d_ij) h_j A_ij /
    sqrt(F * cfg.avg_num_neighbors)`` (``c``: cosine cutoff; ``h_j A_ij`` is the paper's
    ``A h_j`` with the learned matrix transposed, a faster layout) and the update
    ``h_i <- GRU(m_i, h_i)``,
    repeated ``cfg.num_layers`` times with the same edge matrices and GRU (as in the paper).
    Node states h [N, F] start from an element embedding; F = ``cfg.message_dim``. The edge
    matrices are computed once per forward pass: [E, F, F] floats of memory.

    Args:
        cfg: ``message_dim``, ``num_layers`` (steps), ``radial_hidden``, ``avg_num_neighbors`` and
            the readout's ``hidden``, ``pooling``, ``logvar_init``, ``species_skip``, ``readout_norm``.
        cutoff: neighbour cutoff in Å (must equal the data's).
        atomic_numbers: elements the model accepts.
        latent_dim: size of ``mu``/``logvar``.
    """

    def __init__(self, cfg: EncoderConfig, cutoff: float, atomic_numbers: list[int], latent_dim: int) -> None:
        super().__init__()
        f = cfg.message_dim
        self.latent_dim = latent_dim
        self.dim = f
        self.steps = cfg.num_layers
        self.species = SpeciesIndex(atomic_numbers)
        self.embed = nn.Embedding(len(atomic_numbers), f)
        self.rbf = GaussianBasis(cutoff, 50)
        self.edge_net = mlp([50, cfg.radial_hidden, f * f])
        self.gru = nn.GRUCell(f, f)
        self.message_scale = 1.0 / math.sqrt(f * cfg.avg_num_neighbors)
        self.species_skip = nn.Embedding(len(atomic_numbers), cfg.species_skip) if cfg.species_skip else None
        self.readout = LatentReadout(f + cfg.species_skip, cfg.hidden, latent_dim, cfg.pooling, cfg.logvar_init,
                                     cfg.readout_norm)

    def edge_matrices(self, batch: AtomGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """Edge-network matrices ``A`` [E, F, F] and cutoff envelopes [E] of the batch's edges."""
        r = batch.edge_vectors().norm(dim=-1)
        return self.edge_net(self.rbf(r)).view(-1, self.dim, self.dim), cosine_cutoff(r, self.rbf.cutoff)

    def node_invariants(self, batch: AtomGraph) -> torch.Tensor:
        """Node states after the last step, [N, F] (invariant: built from distances only)."""
        src, dst = batch.edge_index
        a, env = self.edge_matrices(batch)
        h = self.embed(self.species(batch.z))
        for _ in range(self.steps):
            msg = torch.bmm(h[src].unsqueeze(1), a).squeeze(1) * env.unsqueeze(-1)
            h = self.gru(scatter_sum(msg, dst, h.shape[0]) * self.message_scale, h)
        return h


def _batch_norm(norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)``, except that a training batch of at most one row (a lone atom, a structure
    without edges) uses and keeps the running statistics instead of failing."""
    use_batch = norm.training and x.shape[0] > 1
    return nn.functional.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, use_batch,
                                    norm.momentum if use_batch else 0.0, norm.eps)


class CGCNNConv(nn.Module):
    """One crystal-graph convolution (Xie & Grossman 2018, eq. 5 with their batch norms).

    ``z_ij = [v_i, v_j, u_ij]`` for the edge from neighbour j to centre i (``u_ij``: expanded
    distance [E, G]); ``s_ij = BN(W z_ij + b)`` split into filter and core halves;
    ``v_i <- softplus(v_i + BN(sum_j c(d_ij) sigmoid(s_f) * softplus(s_s)))`` (``c``: cosine
    cutoff, so a neighbour crossing the cutoff enters smoothly). [N, F] → [N, F]."""

    def __init__(self, features: int, edge_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * features + edge_features, 2 * features)
        self.norm_edges = nn.BatchNorm1d(2 * features)
        self.norm_sum = nn.BatchNorm1d(features)

    def forward(self, v: torch.Tensor, u: torch.Tensor, env: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        src, dst = edge_index
        s = _batch_norm(self.norm_edges, self.linear(torch.cat([v[dst], v[src], u], dim=-1)))
        filt, core = s.chunk(2, dim=-1)
        msg = torch.sigmoid(filt) * nn.functional.softplus(core) * env.unsqueeze(-1)
        return nn.functional.softplus(v + _batch_norm(self.norm_sum, scatter_sum(msg, dst, v.shape[0])))


class CGCNNEncoder(Encoder):
    """Xie & Grossman (2018) crystal-graph convolutional network as an encoder.

    Atom features v [N, F] (F = ``cfg.hidden``) start from an element embedding (the paper's
    one-hot element table through a linear layer); ``cfg.num_layers`` :class:`CGCNNConv` layers
    use 50 Gaussians of the distance on [0, cutoff] Å as edge features. Neighbours are all
    atoms within the cutoff in the batch's (periodic) neighbour list rather than the paper's 12
    nearest, with a cosine envelope. Batch norm uses batch statistics in training and running
    statistics in evaluation, where a structure's latent does not depend on its batch.

    Args:
        cfg: ``hidden``, ``num_layers`` and the readout's ``pooling``, ``logvar_init``,
            ``species_skip``, ``readout_norm``.
        cutoff: neighbour cutoff in Å (must equal the data's).
        atomic_numbers: elements the model accepts.
        latent_dim: size of ``mu``/``logvar``.
    """

    def __init__(self, cfg: EncoderConfig, cutoff: float, atomic_numbers: list[int], latent_dim: int) -> None:
        super().__init__()
        f = cfg.hidden
        self.latent_dim = latent_dim
        self.species = SpeciesIndex(atomic_numbers)
        self.embed = nn.Embedding(len(atomic_numbers), f)
        self.rbf = GaussianBasis(cutoff, 50)
        self.convs = nn.ModuleList([CGCNNConv(f, 50) for _ in range(cfg.num_layers)])
        self.species_skip = nn.Embedding(len(atomic_numbers), cfg.species_skip) if cfg.species_skip else None
        self.readout = LatentReadout(f + cfg.species_skip, f, latent_dim, cfg.pooling, cfg.logvar_init,
                                     cfg.readout_norm)

    def node_invariants(self, batch: AtomGraph) -> torch.Tensor:
        """Atom features after the last convolution, [N, F]."""
        r = batch.edge_vectors().norm(dim=-1)
        u = self.rbf(r)
        env = cosine_cutoff(r, self.rbf.cutoff)
        v = self.embed(self.species(batch.z))
        for conv in self.convs:
            v = conv(v, u, env, batch.edge_index)
        return v


def build_encoder(cfg: EncoderConfig, cutoff: float, atomic_numbers: list[int], latent_dim: int) -> Encoder:
    """The encoder registered as ``cfg.kind`` (:data:`atomarch.registry.ENCODERS`)."""
    return ENCODERS.get(cfg.kind)(cfg, cutoff, atomic_numbers, latent_dim)
