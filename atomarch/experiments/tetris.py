"""3D Tetris: the equivariance demo of tensor field networks, with atomarch's layers.

Eight shapes of four unit cubes (each given by its cubes' centres, Å-free unit lengths);
two of them (``chiral_left`` / ``chiral_right``) are mirror images of each other and are
told apart only by pseudoscalar (0o) features. A classifier trained on the shapes in a
single orientation classifies any rotated and translated copy exactly like the original,
because its logits are invariant to proper rotations and translations by construction.
The :class:`MLPBaseline` on flattened coordinates has no such guarantee.
"""

from __future__ import annotations

import numpy as np
import torch
from e3nn import o3
from torch import nn

from atomarch.nn.blocks import Interaction
from atomarch.nn.radial import BesselBasis
from atomarch.nn.readout import mlp, scatter_sum

#: name -> [4, 3] cube centres (unit grid). Coordinates written for atomarch.
SHAPES: dict[str, list[tuple[int, int, int]]] = {
    "line": [(0, 0, 0), (1, 0, 0), (2, 0, 0), (3, 0, 0)],
    "square": [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)],
    "L": [(0, 0, 0), (1, 0, 0), (2, 0, 0), (2, 1, 0)],
    "T": [(0, 0, 0), (1, 0, 0), (2, 0, 0), (1, 1, 0)],
    "zigzag": [(0, 0, 0), (1, 0, 0), (1, 1, 0), (2, 1, 0)],
    "tripod": [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)],
    # a chain turning along x, then y, then z: right- or left-handed
    "chiral_right": [(0, 0, 0), (1, 0, 0), (1, 1, 0), (1, 1, 1)],
    "chiral_left": [(0, 0, 0), (1, 0, 0), (1, 1, 0), (1, 1, -1)],
}
NAMES = list(SHAPES)


def tetris_shapes() -> tuple[torch.Tensor, torch.Tensor]:
    """The eight shapes in their reference orientation: positions [8, 4, 3], labels [8]."""
    pos = torch.tensor([SHAPES[n] for n in NAMES], dtype=torch.get_default_dtype())
    return pos, torch.arange(len(NAMES))


def random_copies(n_per_shape: int, seed: int = 0, translate: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_per_shape`` randomly rotated (proper rotations, uniform on SO(3)) and translated
    (N(0, translate²) per axis) copies of each shape: positions [8n, 4, 3], labels [8n]."""
    g = torch.Generator().manual_seed(seed)
    pos, labels = tetris_shapes()
    pos = pos.repeat_interleave(n_per_shape, 0)
    labels = labels.repeat_interleave(n_per_shape, 0)
    R = _rand_rot(pos.shape[0], g)
    shift = torch.randn(pos.shape[0], 1, 3, generator=g) * translate
    return torch.einsum("bij,bnj->bni", R, pos) + shift, labels


def _rand_rot(n: int, g: torch.Generator) -> torch.Tensor:
    """[n, 3, 3] uniform random rotations (QR of Gaussian matrices, det +1)."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    det = torch.linalg.det(q)
    q[:, :, 0] = q[:, :, 0] * det.unsqueeze(-1)
    return q


class TetrisClassifier(nn.Module):
    """Equivariant classifier: complete graph over each shape's 4 points → ``num_layers``
    :class:`Interaction` layers (hidden irreps with 0e, 0o, 1o, 1e, 2e) → sum-pooled 0e and
    0o channels → linear → logits.

    Input positions [B, n, 3]; output logits [B, num_classes]. Invariant to proper rotations
    and translations; the 0o channels flip sign under reflection, so mirror images differ.
    """

    def __init__(
        self,
        num_classes: int = 8,
        irreps_hidden: str = "16x0e + 8x0o + 8x1o + 8x1e + 4x2e",
        num_layers: int = 4,
        lmax: int = 2,
        cutoff: float = 4.0,
        num_basis: int = 8,
    ) -> None:
        super().__init__()
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.radial_basis = BesselBasis(cutoff, num_basis)
        irreps = o3.Irreps("1x0e")
        self.layers = nn.ModuleList()
        for _ in range(num_layers):
            layer = Interaction(irreps, o3.Irreps(irreps_hidden), self.irreps_sh, num_basis, 32, 3.0)
            self.layers.append(layer)
            irreps = layer.irreps_out
        self.n_scalars = sum(m for m, ir in irreps if ir.l == 0)  # 0e then 0o, first in the gate output
        self.head = nn.Linear(self.n_scalars, num_classes)

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        B, n, _ = pos.shape
        x_pos = pos.reshape(B * n, 3)
        batch = torch.arange(B).repeat_interleave(n)
        i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        keep = i != j
        offs = (torch.arange(B) * n).view(B, 1)
        src = (j[keep].view(1, -1) + offs).reshape(-1)
        dst = (i[keep].view(1, -1) + offs).reshape(-1)
        vec = x_pos[src] - x_pos[dst]
        sh = o3.spherical_harmonics(self.irreps_sh, vec, normalize=True, normalization="component")
        radial = self.radial_basis(vec.norm(dim=-1))
        x = pos.new_ones(B * n, 1)
        edge_index = torch.stack([src, dst])
        for layer in self.layers:
            x = layer(x, sh, radial, edge_index)
        return self.head(scatter_sum(x[:, : self.n_scalars], batch, B))


class MLPBaseline(nn.Module):
    """Non-equivariant baseline: MLP on the flattened coordinates [B, n*3] → logits."""

    def __init__(self, n_points: int = 4, num_classes: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.net = mlp([3 * n_points, hidden, hidden, num_classes])

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        return self.net(pos.reshape(pos.shape[0], -1))


def train_classifier(model: nn.Module, steps: int = 300, lr: float = 1e-2, seed: int = 0) -> list[float]:
    """Full-batch Adam on the eight shapes in their single reference orientation; returns the
    loss per step (cross-entropy, nats)."""
    torch.manual_seed(seed)
    pos, labels = tetris_shapes()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(pos), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, pos: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of shapes [B, n, 3] classified as ``labels`` [B]."""
    model.eval()
    return float((model(pos).argmax(-1) == labels).double().mean())
