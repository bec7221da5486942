"""2D-image baseline of the source report: planar QM9 molecules as Gaussian images + a CNN.

* :func:`align_to_plane` centres a molecule and rotates its best-fit plane (PCA) onto xy;
  the largest |z| left is its distance from planarity.
* :func:`planar_subset` keeps the QM9 molecules whose atoms (hydrogens included) all lie
  within ``tol`` Å of their best-fit plane.
* :func:`rasterize` draws each atom as a normalised 2D Gaussian (width γ = 0.2 Å, z ignored)
  in the channel of its element, on a fixed grid centred on the origin. Each atom's
  Gaussian integrates to one, so each channel sums to that element's atom count.
  The image is *not* invariant: translating or rotating the molecule in-plane changes it
  (PCA fixes the frame only up to axis signs), which is what the CNN has to learn around.
* :class:`ImageCNN`: a small CNN image → scalar.
* :class:`AtomwiseE3Regressor`: atomarch's :class:`E3Encoder` per-atom invariants → MLP →
  sum over atoms (+ a per-element linear reference), the equivariant comparison.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from atomarch.config import EncoderConfig
from atomarch.data.datasets import PackedStructures
from atomarch.nn.encoders import E3Encoder
from atomarch.nn.readout import mlp, scatter_sum

ELEMENTS = [1, 6, 7, 8, 9]
"""Image channels: H, C, N, O, F."""


def align_to_plane(pos: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre ``pos`` [n, 3] (Å) on its centroid and rotate its principal axes onto x, y, z
    (largest variance first). Returns the aligned positions [n, 3] and max |z| (Å), the
    largest distance of an atom from the best-fit plane."""
    x = np.asarray(pos, dtype=np.float64)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=True)
    if np.linalg.det(vt) < 0:
        vt[2] = -vt[2]
    out = x @ vt.T
    return out, float(np.abs(out[:, 2]).max())


def plane_deviation(packed: PackedStructures) -> np.ndarray:
    """[M] largest distance (Å) of any atom from its molecule's best-fit plane (batched SVD
    per molecule size)."""
    natoms = (packed.ptr[1:] - packed.ptr[:-1]).numpy()
    pos = packed.pos.double().numpy()
    start = packed.ptr[:-1].numpy()
    out = np.zeros(len(natoms))
    for n in np.unique(natoms):
        mols = np.flatnonzero(natoms == n)
        idx = start[mols, None] + np.arange(n)[None, :]
        x = pos[idx]  # [m, n, 3]
        x = x - x.mean(1, keepdims=True)
        if n < 3:
            continue  # two points are always planar
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        normal = vt[:, 2, :]  # smallest singular direction
        out[mols] = np.abs(np.einsum("mnk,mk->mn", x, normal)).max(1)
    return out


def planar_subset(packed: PackedStructures, tol: float) -> np.ndarray:
    """Indices of molecules with every atom within ``tol`` Å of the best-fit plane."""
    return np.flatnonzero(plane_deviation(packed) < tol)


def rasterize(
    z: np.ndarray, xy: np.ndarray, size: int = 40, pixel: float = 0.3, gamma: float = 0.2,
    elements: list[int] = ELEMENTS,
) -> np.ndarray:
    """Gaussian image [len(elements), size, size] of atoms ``z`` [n] at ``xy`` [n, 2] (Å;
    extra columns ignored). Pixel centres at ((i + 0.5) - size/2) * pixel Å; each atom adds a
    Gaussian of standard deviation ``gamma`` Å normalised so its pixel sum is ~1."""
    xy = np.asarray(xy, dtype=np.float64)[:, :2]
    centres = (np.arange(size) + 0.5 - size / 2) * pixel
    gx = np.exp(-((centres[None, :] - xy[:, 0:1]) ** 2) / (2 * gamma**2))  # [n, W]
    gy = np.exp(-((centres[None, :] - xy[:, 1:2]) ** 2) / (2 * gamma**2))  # [n, H]
    norm = pixel**2 / (2 * np.pi * gamma**2)
    img = np.zeros((len(elements), size, size))
    for c, el in enumerate(elements):
        sel = np.asarray(z) == el
        if sel.any():
            img[c] = norm * np.einsum("nh,nw->hw", gy[sel], gx[sel])  # row = y, column = x
    return img.astype(np.float32)


def molecule_images(packed: PackedStructures, mols: np.ndarray, **kw) -> torch.Tensor:
    """[len(mols), C, H, W] images of the molecules ``mols`` after :func:`align_to_plane`."""
    out = []
    for k in mols:
        a, b = int(packed.ptr[k]), int(packed.ptr[k + 1])
        aligned, _ = align_to_plane(packed.pos[a:b].double().numpy())
        out.append(rasterize(packed.z[a:b].numpy(), aligned, **kw))
    return torch.from_numpy(np.stack(out))


class ImageCNN(nn.Module):
    """Small CNN: [B, C, H, W] image → [B] scalar (three conv-ReLU-pool blocks, 4x4 average
    pool, MLP)."""

    def __init__(self, channels: int = len(ELEMENTS), width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, 1),
        )

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.net(img).squeeze(-1)


def element_counts(packed: PackedStructures, mols: np.ndarray, elements: list[int] = ELEMENTS) -> np.ndarray:
    """[len(mols), len(elements)] number of atoms of each element."""
    out = np.zeros((len(mols), len(elements)))
    for r, k in enumerate(mols):
        z = packed.z[int(packed.ptr[k]) : int(packed.ptr[k + 1])].numpy()
        out[r] = [(z == el).sum() for el in elements]
    return out


class AtomwiseE3Regressor(nn.Module):
    """E(3)-invariant property model: :class:`E3Encoder` per-atom invariants → MLP → one
    energy per atom, summed, plus a fixed per-element reference ``ref`` (same units as the
    target, e.g. eV). Input an :class:`~atomarch.data.graph.AtomGraph`; output [G]."""

    def __init__(self, cfg: EncoderConfig, cutoff: float, ref: torch.Tensor, scale: float = 1.0) -> None:
        super().__init__()
        self.encoder = E3Encoder(cfg, cutoff, ELEMENTS, latent_dim=1)
        self.encoder.readout = nn.Identity()
        self.atom_mlp = mlp([self.encoder.n_scalar_out, cfg.hidden, 1])
        self.register_buffer("ref", torch.as_tensor(ref, dtype=torch.float32))
        self.scale = float(scale)

    def forward(self, batch) -> torch.Tensor:
        h = self.encoder.node_invariants(batch)
        e = self.atom_mlp(h).squeeze(-1) * self.scale + self.ref[self.encoder.species(batch.z)]
        return scatter_sum(e, batch.batch, batch.num_graphs)
