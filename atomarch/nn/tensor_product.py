"""A faster evaluation of e3nn's per-edge-weighted "uvu" tensor product (the convolution of
:class:`~atomarch.nn.blocks.Interaction`), numerically the same function.

e3nn's :class:`~e3nn.o3.TensorProduct` gathers the whole source feature vector per edge, slices
it per path, evaluates every path (l1 ⊗ l2 → l3) as an einsum and concatenates the per-edge
results before they are summed onto the atoms; backward, every slice of an [E, ...] buffer
becomes a zero-filled [E, ...] gradient. On a CPU those passes over edge-sized memory, not the
arithmetic, are the cost (a QM9 batch: 18k edges, ~1k multiply-adds per edge).

This module evaluates the same paths with as few edge-sized buffers as possible: the weights
are split once, each block of U channels of order l1 is gathered on its own, the per-edge path
weight multiplies the (small) gathered input before the Clebsch–Gordan contraction, the
contraction with the spherical harmonics is a broadcast product (or a batched product for
l1 > 0 into l3 > 0), and every path's messages are summed onto their destination atoms at once
(``index_add``), so the concatenation happens at the atoms (N ≪ E).

It reads e3nn's own instructions (path weights, weight layout, output slots), so the trained
weights of a checkpoint mean the same thing; ``tests/test_tensor_product.py`` checks values
and gradients against ``o3.TensorProduct`` on random inputs.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.math import normalize2mom
from e3nn.nn import FullyConnectedNet
from torch import nn


class FusedUVUConvolution(nn.Module):
    """``out[n] = sum_{e: dst[e] = n} TP(x[src[e]], sh[e], weights[e])`` for every atom n, with
    ``tp`` an ``o3.TensorProduct`` whose instructions are all weighted "uvu" paths, with per-edge
    weights (``shared_weights=False``, ``internal_weights=False``) and a second input of
    multiplicity one per irrep (spherical harmonics).

    Args:
        tp: the e3nn tensor product whose function this evaluates (its instructions, path
            weights and weight layout are read; it is not called).

    Shapes: ``x`` [N, tp.irreps_in1.dim] node features, ``sh`` [E, tp.irreps_in2.dim],
    ``weights`` [E, tp.weight_numel], ``src``/``dst`` [E] (long); output [N, tp.irreps_out.dim]
    in e3nn's layout.
    """

    def __init__(self, tp: o3.TensorProduct) -> None:
        super().__init__()
        if any(ins.connection_mode != "uvu" or not ins.has_weight for ins in tp.instructions):
            raise ValueError("FusedUVUConvolution handles weighted 'uvu' instructions only")
        if tp.shared_weights or tp.internal_weights:
            raise ValueError("FusedUVUConvolution needs per-edge (external, unshared) weights")
        if any(mul != 1 for mul, _ in tp.irreps_in2):
            raise ValueError("FusedUVUConvolution needs a single-multiplicity second input (spherical harmonics)")
        self.out_layout = [(mul, ir.dim) for mul, ir in tp.irreps_out]  # plain ints (torch.compile-friendly)
        self.in1 = [(s.start, mul, ir.dim) for s, (mul, ir) in zip(tp.irreps_in1.slices(), tp.irreps_in1)]
        self.in2 = [(s.start, ir.dim) for s, (_, ir) in zip(tp.irreps_in2.slices(), tp.irreps_in2)]
        self.weight_sizes = [ins.path_shape[0] * ins.path_shape[1] for ins in tp.instructions]
        # per path: (i_in1, i_in2, i_out, kind, scale); kind says which contraction it is
        self.paths: list[tuple[int, int, int, str, float]] = []
        for k, ins in enumerate(tp.instructions):
            l1, l2 = tp.irreps_in1[ins.i_in1].ir.l, tp.irreps_in2[ins.i_in2].ir.l
            l3 = tp.irreps_out[ins.i_out].ir.l
            w3j = o3.wigner_3j(l1, l2, l3)
            if l2 == 0:  # out = x Y0 / sqrt(2l1+1)
                kind, scale = "copy", 1.0 / math.sqrt(2 * l1 + 1)
            elif l1 == 0:  # out = x Y / sqrt(2l2+1)
                kind, scale = "outer", 1.0 / math.sqrt(2 * l2 + 1)
            elif l3 == 0:  # out = x . Y / sqrt(2l1+1)
                kind, scale = "dot", 1.0 / math.sqrt(2 * l1 + 1)
            else:
                kind, scale = "cg", 1.0
                self.register_buffer(f"w3j{k}", w3j.permute(1, 0, 2).reshape(w3j.shape[1], -1).contiguous(),
                                     persistent=False)
            self.paths.append((ins.i_in1, ins.i_in2, ins.i_out, kind, scale * ins.path_weight))
        self._check_against(tp)
        self.register_buffer("weight_scale", torch.cat([torch.full((size,), p[-1]) for size, p in
                                                        zip(self.weight_sizes, self.paths)]), persistent=False)

    def _check_against(self, tp: o3.TensorProduct) -> None:
        """The closed forms above assume e3nn's Wigner-3j conventions: verify them once."""
        for k, (i1, i2, i3, kind, _) in enumerate(self.paths):
            l1, l2, l3 = tp.irreps_in1[i1].ir.l, tp.irreps_in2[i2].ir.l, tp.irreps_out[i3].ir.l
            w3j = o3.wigner_3j(l1, l2, l3)
            d1, d2 = 2 * l1 + 1, 2 * l2 + 1
            if kind == "copy":
                ref = torch.eye(d1).unsqueeze(1) / math.sqrt(d1)
            elif kind == "outer":
                ref = torch.eye(d2).unsqueeze(0) / math.sqrt(d2)
            elif kind == "dot":
                ref = torch.eye(d1).unsqueeze(-1) / math.sqrt(d1)
            else:
                continue
            if not torch.allclose(w3j, ref.reshape(w3j.shape), atol=1e-6):
                raise RuntimeError(f"unexpected Wigner-3j convention for ({l1}, {l2}, {l3}) in this e3nn version")

    def forward(self, x: torch.Tensor, sh: torch.Tensor, weights: torch.Tensor, src: torch.Tensor,
                dst: torch.Tensor, prescaled: bool = False) -> torch.Tensor:
        """``prescaled``: ``weights`` already carry the per-path constants :attr:`weight_scale`
        [weight_numel] (folded into the last layer of the network that makes them: one pass
        over the edges fewer per path)."""
        n, e = x.shape[0], sh.shape[0]
        ws = torch.split(weights, self.weight_sizes, dim=1)  # one pass backward (a cat), not one per path
        ys = [sh[:, s : s + d].unsqueeze(-1) for s, d in self.in2]  # [E, d2, 1]
        # features are handled component-major, [E, 2l+1, U]: every broadcast and every sum over
        # components then runs over contiguous rows of U channels (e3nn's layout is [U, 2l+1])
        gathered: dict[int, torch.Tensor] = {}
        slots: dict[int, torch.Tensor] = {}
        for k, (i1, i2, i3, kind, scale) in enumerate(self.paths):
            start, mul, d1 = self.in1[i1]
            if i1 not in gathered:
                block = x[:, start : start + mul * d1].reshape(n, mul, d1).transpose(1, 2).contiguous()
                gathered[i1] = block[src]  # [E, d1, U]
            w = ws[k] if prescaled else ws[k] * scale
            xw = gathered[i1] * w.unsqueeze(1)  # [E, d1, U]
            y = ys[i2]  # [E, d2, 1]
            if kind in ("copy", "outer"):  # one of d1, d2 is 1: a broadcast product, [E, d1 * d2, U]
                msg = xw * y
            elif kind == "dot":
                msg = (xw * y).sum(1, keepdim=True)  # [E, 1, U]
            else:  # general coupling: M[e] = sum_j Y[e, j] C[:, j, :] [d1, d3], msg[e] = M[e]^T xw[e]
                cg = getattr(self, f"w3j{k}")
                m = (y.squeeze(-1) @ cg).view(e, d1, cg.shape[1] // d1)
                msg = sum(m[:, i, :, None] * xw[:, i, None, :] for i in range(d1))  # [E, d3, U]
            node = x.new_zeros(n, msg.shape[1], mul).index_add_(0, dst, msg)
            slots[i3] = node if i3 not in slots else slots[i3] + node
        parts = []
        for i3, (mul, dim) in enumerate(self.out_layout):
            if i3 in slots:  # back to e3nn's [U, 2l+1] layout, at the atoms
                parts.append(slots[i3].transpose(1, 2).reshape(n, mul * dim))
            else:
                parts.append(x.new_zeros(n, mul * dim))
        return torch.cat(parts, dim=1)


def mlp_forward(net: FullyConnectedNet, x: torch.Tensor, out_scale: torch.Tensor | None = None) -> torch.Tensor:
    """``net(x) * out_scale`` for an e3nn :class:`~e3nn.nn.FullyConnectedNet`, with its constant
    factors (the 1/sqrt(fan-in) weight normalisation, the activation's second-moment
    normalisation, ``out_scale`` [h_out]) folded into the (small) weight matrices instead of
    multiplying the (edge-sized) activations: the same function with fewer passes over memory.
    ``x`` [..., h_in] → [..., h_out]."""
    carry = 1.0  # the true activations are carry * x
    for layer in net:
        if layer.act is not None:
            w = layer.weight * (carry / (layer.h_in * layer.var_in) ** 0.5)
            act = layer.act
            if isinstance(act, normalize2mom):
                x = act.f(x @ w)
                carry = (1.0 if act._is_id else act.cst) * layer.var_out**0.5
            else:
                x = act(x @ w)
                carry = layer.var_out**0.5
        else:
            w = layer.weight * (carry / (layer.h_in * layer.var_in / layer.var_out) ** 0.5)
            carry = 1.0
            if out_scale is not None:
                w = w * out_scale
                out_scale = None
            x = x @ w
    if carry != 1.0:
        x = x * carry
    return x if out_scale is None else x * out_scale
