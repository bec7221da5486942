"""Shared e3nn building blocks (the encoder's message passing and the flow decoder's velocity
network both use :class:`Interaction`)."""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from atomarch.nn.tensor_product import FusedUVUConvolution, mlp_forward


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
        # the same function evaluated with fewer edge-sized buffers (1.3-1.4x faster fwd+bwd of the
        # encoder on a CPU, benchmarks/encoder_throughput.py); use_fused = False evaluates e3nn's
        # own tensor product instead (the reference)
        self.conv = FusedUVUConvolution(self.tp)
        self.use_fused = True
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
            filt = torch.cat([radial[e], s[src[e]], s[dst[e]]], dim=-1) if s is not None else radial[e]
            envelope_e = envelope[e].unsqueeze(-1) if envelope is not None and s is not None else None
            if self.use_fused:  # the path constants folded into the filter network's last layer
                weights = mlp_forward(self.radial, filt, self.conv.weight_scale)
                weights = weights if envelope_e is None else weights * envelope_e
                agg = agg + self.conv(h, sh[e], weights, src[e], dst[e], prescaled=True)
            else:
                weights = self.radial(filt)
                weights = weights if envelope_e is None else weights * envelope_e
                agg = agg.index_add(0, dst[e], self.tp(h[src[e]], sh[e], weights))
        agg = agg * self.norm
        out = self.gate(self.linear_out(agg) + self.self_connection(x))
        return x + out if self.residual else out
