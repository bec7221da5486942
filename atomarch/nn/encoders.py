"""Structure encoders: an :class:`AtomGraph` batch → invariant latent ``(mu, logvar)``.

Both encoders share one interface (:class:`Encoder`):

* :class:`E3Encoder` — tensor-field / NequIP-style E(3)-equivariant message passing with
  e3nn: Bessel radial basis with a polynomial cutoff → radial MLP → per-edge weights of a
  "uvu" tensor product of node features with edge spherical harmonics (l ≤ ``lmax``),
  ``o3.Linear`` mixing, gated non-linearity, residual update.
* :class:`SchNetEncoder` — invariant continuous-filter convolutions (baseline).

The readout pools the invariant (0e) per-atom features, so the latent is invariant to
rotations, reflections, translations and atom permutations; with ``pooling: mean`` also to the
choice of a crystal's cell (primitive, conventional, Niggli, supercell).
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from atomarch.config import EncoderConfig
from atomarch.data.graph import AtomGraph
from atomarch.nn.blocks import Interaction
from atomarch.nn.radial import BesselBasis, GaussianBasis, cosine_cutoff
from atomarch.nn.readout import LatentReadout, SpeciesIndex, scatter_sum
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


def build_encoder(cfg: EncoderConfig, cutoff: float, atomic_numbers: list[int], latent_dim: int) -> Encoder:
    """The encoder registered as ``cfg.kind`` (:data:`atomarch.registry.ENCODERS`)."""
    return ENCODERS.get(cfg.kind)(cfg, cutoff, atomic_numbers, latent_dim)
