"""Radial basis functions of interatomic distances (Å) with a smooth cutoff."""

from __future__ import annotations

import math

import torch
from torch import nn


class PolynomialCutoff(nn.Module):
    """Smooth envelope u(r) that is 1 at r=0 and goes to 0 at ``cutoff`` with ``p`` continuous
    derivatives (the polynomial of DimeNet/NequIP)."""

    def __init__(self, cutoff: float, p: int = 6) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = float(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        x = r / self.cutoff
        p = self.p
        out = (
            1.0
            - (p + 1.0) * (p + 2.0) / 2.0 * x.pow(p)
            + p * (p + 2.0) * x.pow(p + 1.0)
            - p * (p + 1.0) / 2.0 * x.pow(p + 2.0)
        )
        return out * (x < 1.0)


class BesselBasis(nn.Module):
    """``sqrt(2/c) * sin(n*pi*r/c) / r`` for n = 1..num_basis (trainable frequencies),
    multiplied by :class:`PolynomialCutoff`. Input [E] distances in Å, output [E, num_basis]."""

    def __init__(self, cutoff: float, num_basis: int = 8, trainable: bool = True, p: int = 6) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        freq = torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi / self.cutoff
        self.freq = nn.Parameter(freq, requires_grad=trainable)
        self.prefactor = math.sqrt(2.0 / self.cutoff)
        self.envelope = PolynomialCutoff(cutoff, p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1).clamp_min(1e-6)
        return self.prefactor * torch.sin(self.freq * r) / r * self.envelope(r)


class GaussianBasis(nn.Module):
    """Gaussians on a grid in [0, cutoff] (SchNet). [E] -> [E, num_basis]."""

    def __init__(self, cutoff: float, num_basis: int = 50) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.register_buffer("centers", torch.linspace(0.0, cutoff, num_basis))
        self.gamma = 0.5 / float(self.centers[1] - self.centers[0]) ** 2

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.gamma * (r.unsqueeze(-1) - self.centers) ** 2)


def cosine_cutoff(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    """0.5 (cos(pi r / cutoff) + 1) inside the cutoff, 0 outside. [E] -> [E]."""
    return 0.5 * (torch.cos(r * math.pi / cutoff) + 1.0) * (r < cutoff)
