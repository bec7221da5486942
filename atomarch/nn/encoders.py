"""Structure encoders: an :class:`AtomGraph` batch → invariant latent ``(mu, logvar)``.

Both encoders share one interface (:class:`Encoder`):

* :class:`E3Encoder` — tensor-field / NequIP-style E(3)-equivariant message passing with
  e3nn: Bessel radial basis with a polynomial cutoff → radial MLP → per-edge weights of a
  "uvu" tensor product of node features with edge spherical harmonics (l ≤ ``lmax``),
  ``o3.Linear`` mixing, gated non-linearity, residual update.
* :class:`SchNetEncoder` — invariant continuous-filter convolutions (baseline).

The readout pools the invariant (0e) per-atom features, so the latent is invariant to
rotations, reflections, translations and atom permutations.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from atomarch.config import EncoderConfig
from atomarch.data.graph import AtomGraph
from atomarch.nn.radial import BesselBasis, GaussianBasis, cosine_cutoff
from atomarch.nn.readout import LatentReadout, SpeciesIndex, scatter_sum


class Encoder(nn.Module):
    """Interface: ``forward(batch) -> (mu, logvar)`` each [G, latent_dim];
    ``node_invariants(batch) -> [N, F]`` per-atom invariant features."""

    latent_dim: int

    def node_invariants(self, batch: AtomGraph) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: AtomGraph) -> tuple[torch.Tensor, torch.Tensor]:
        return self.readout(self.node_invariants(batch), batch.batch, batch.num_graphs)


EDGE_CHUNK = 32_768
"""Edges processed at once by an interaction block (bounds memory on large periodic cells)."""


class Interaction(nn.Module):
    """One equivariant interaction: tensor-product convolution + gate + residual.

    Input/output: node features [N, irreps_in.dim] → [N, irreps_out.dim].

    Gate scalars are the 0e entries of ``irreps_hidden`` (activation silu). Pseudoscalar
    (0o) entries, if any, are kept too, after the 0e ones, with the odd activation tanh so
    they stay 0o: this lets a network tell mirror images apart (e.g. the chiral Tetris
    shapes). Without 0o in ``irreps_hidden`` the layer is unchanged. Irreps with l > 0 are
    gated by sigmoid(0e); irreps unreachable from the input are dropped.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_hidden: o3.Irreps,
        irreps_sh: o3.Irreps,
        num_basis: int,
        radial_hidden: int,
        avg_num_neighbors: float,
        edge_node_features: int = 0,
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        # scalars: 0e (silu) and, when irreps_hidden asks for them, 0o pseudoscalars (odd
        # activation tanh, so they stay 0o); without 0o this is exactly the 0e-only gate
        scalars = o3.Irreps([(m, ir) for m, ir in irreps_hidden if ir.l == 0 and ir.p == 1])
        pseudo = o3.Irreps([(m, ir) for m, ir in o3.Irreps(irreps_hidden) if ir.l == 0 and ir.p == -1])
        act_scalars = [nn.functional.silu]
        if pseudo.num_irreps:
            scalars = o3.Irreps(f"{scalars.num_irreps}x0e + {pseudo.num_irreps}x0o")
            act_scalars = [nn.functional.silu, torch.tanh]
        gated = o3.Irreps([(m, ir) for m, ir in irreps_hidden if ir.l > 0])
        # only keep gated irreps reachable from the input through the spherical harmonics
        reachable = {ir_out for _, ir_in in self.irreps_in for _, ir_sh in irreps_sh for ir_out in ir_in * ir_sh}
        gated = o3.Irreps([(m, ir) for m, ir in gated if ir in reachable])
        gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps("")
        self.gate = Gate(scalars, act_scalars, gates, [torch.sigmoid], gated)
        self.irreps_out = self.gate.irreps_out

        wanted = {ir for _, ir in self.gate.irreps_in}
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in wanted:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        irreps_mid = o3.Irreps(mid)
        irreps_mid, perm, _ = irreps_mid.sort()
        instructions = [(a, b, perm[k], mode, w) for a, b, k, mode, w in instructions]

        self.linear_in = o3.Linear(self.irreps_in, self.irreps_in)
        self.tp = o3.TensorProduct(
            self.irreps_in, irreps_sh, irreps_mid, instructions, shared_weights=False, internal_weights=False
        )
        # optionally the filter also sees both end atoms' invariant features (an EGNN/MACE-like
        # edge network): far more expressive per layer, used by the decoder's flows
        self.edge_node_features = edge_node_features
        n_scalar_in = sum(m for m, ir in self.irreps_in if ir.l == 0 and ir.p == 1)
        if edge_node_features:
            self.edge_proj = nn.Linear(n_scalar_in, edge_node_features)
        radial_in = num_basis + 2 * edge_node_features
        self.radial = FullyConnectedNet([radial_in, radial_hidden, radial_hidden, self.tp.weight_numel], nn.functional.silu)
        self.linear_out = o3.Linear(irreps_mid.simplify(), self.gate.irreps_in)
        self.self_connection = o3.Linear(self.irreps_in, self.gate.irreps_in)
        self.norm = 1.0 / math.sqrt(avg_num_neighbors)
        self.residual = self.irreps_in == self.irreps_out

    def forward(
        self,
        x: torch.Tensor,
        sh: torch.Tensor,
        radial: torch.Tensor,
        edge_index: torch.Tensor,
        envelope: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [N, irreps_in.dim], sh [E, irreps_sh.dim], radial [E, num_basis], edge_index [2, E];
        ``envelope`` [E] multiplies the filter when node features enter it (smooth cutoff)."""
        src, dst = edge_index
        h = self.linear_in(x)
        s = self.edge_proj(x[:, : self.edge_proj.in_features]) if self.edge_node_features else None
        agg = x.new_zeros(x.shape[0], self.tp.irreps_out.dim)
        # edges in chunks: the per-edge tensor-product buffers of a 10,000-atom cell would not
        # fit in cache (or memory) at once; QM9 batches (~18k edges) are a single chunk
        for start in range(0, max(1, src.numel()), EDGE_CHUNK):
            e = slice(start, start + EDGE_CHUNK)
            if s is not None:
                weights = self.radial(torch.cat([radial[e], s[src[e]], s[dst[e]]], dim=-1))
                if envelope is not None:
                    weights = weights * envelope[e].unsqueeze(-1)
            else:
                weights = self.radial(radial[e])
            agg = agg.index_add(0, dst[e], self.tp(h[src[e]], sh[e], weights))
        agg = agg * self.norm
        out = self.gate(self.linear_out(agg) + self.self_connection(x))
        return x + out if self.residual else out


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
        self.readout = LatentReadout(self.n_scalar_out, cfg.hidden, latent_dim)

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
        self.readout = LatentReadout(f, f, latent_dim)

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
    """The encoder named by ``cfg.kind`` (``e3nn`` or ``schnet``)."""
    if cfg.kind == "e3nn":
        return E3Encoder(cfg, cutoff, atomic_numbers, latent_dim)
    if cfg.kind == "schnet":
        return SchNetEncoder(cfg, cutoff, atomic_numbers, latent_dim)
    raise ValueError(f"unknown encoder kind {cfg.kind!r}")
