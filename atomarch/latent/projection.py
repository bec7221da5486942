"""The 2D "materials map": a PCA of the latent means, fitted once on the training split and
stored in the checkpoint so every user sees the same map."""

from __future__ import annotations

from typing import Any

import numpy as np


def fit_pca(latents: np.ndarray, dims: int = 2) -> dict[str, Any]:
    """PCA of latents [n, d] → ``{"mean": [d], "axes": [dims, d], "explained": [dims], "n_fit": n}``.

    Deterministic: each axis is signed so that its largest-magnitude component is positive.
    ``explained`` is the fraction of the total variance along each axis.
    """
    x = np.asarray(latents, dtype=np.float64)
    if x.ndim != 2 or len(x) < dims + 1:
        raise ValueError(f"need at least {dims + 1} latent vectors [n, d] to fit a {dims}D map, got shape {x.shape}")
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    axes = vt[:dims]
    axes *= np.sign(axes[np.arange(dims), np.abs(axes).argmax(1)])[:, None]
    var = s**2
    return {"mean": mean.tolist(), "axes": axes.tolist(), "explained": (var[:dims] / var.sum()).tolist(), "n_fit": len(x)}


def apply_projection(projection: dict[str, Any], latents: np.ndarray) -> np.ndarray:
    """Latents [n, d] → map coordinates [n, dims] (float32)."""
    mean = np.asarray(projection["mean"], dtype=np.float64)
    axes = np.asarray(projection["axes"], dtype=np.float64)
    x = np.asarray(latents, dtype=np.float64).reshape(-1, len(mean))
    return ((x - mean) @ axes.T).astype(np.float32)
