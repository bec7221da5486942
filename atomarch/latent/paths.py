"""Paths between two latent vectors."""

from __future__ import annotations

import numpy as np

from atomarch.errors import AtomarchError


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Straight line: a, b [d], t [k] in [0, 1] → [k, d]."""
    t = np.asarray(t, dtype=np.float64)[:, None]
    return ((1 - t) * a[None] + t * b[None]).astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation (great circle, with the norm interpolated linearly), which keeps
    intermediate points at a typical radius of the Gaussian prior. a, b [d], t [k] → [k, d]."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    if na < 1e-8 or nb < 1e-8:
        return lerp(a, b, t)
    ua, ub = a64 / na, b64 / nb
    omega = np.arccos(np.clip(ua @ ub, -1.0, 1.0))
    t = np.asarray(t, dtype=np.float64)[:, None]
    if omega < 1e-6:
        return lerp(a, b, t[:, 0])
    direction = (np.sin((1 - t) * omega) * ua + np.sin(t * omega) * ub) / np.sin(omega)
    radius = (1 - t) * na + t * nb
    return (direction * radius).astype(np.float32)


def latent_path(a: np.ndarray, b: np.ndarray, steps: int, method: str = "slerp") -> np.ndarray:
    """``steps`` latents from ``a`` to ``b`` inclusive, by ``slerp`` or ``linear``."""
    if steps < 2:
        raise AtomarchError(f"interpolation needs at least 2 steps, got {steps}")
    t = np.linspace(0.0, 1.0, steps)
    if method == "slerp":
        return slerp(a, b, t)
    if method == "linear":
        return lerp(a, b, t)
    raise AtomarchError(f"unknown interpolation method '{method}' (use 'slerp' or 'linear')")
