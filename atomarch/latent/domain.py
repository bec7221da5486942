"""The training domain of a model: which inputs it has seen enough like to be trusted.

A model trained on QM9 knows molecules of 3–29 atoms with at most 9 heavy atoms. Given a
1,000-atom chain, a lone H atom or a crystal it still returns numbers — confident nonsense.
:class:`Domain` holds what the training split looked like and flags a structure that lies
outside it, with a reason a user can read:

* size: more atoms / heavy atoms than any training structure, or fewer atoms than the smallest;
* no heavy atom at all (e.g. a lone H);
* latent: the structure's latent mean lies further from the training latents than 99.9 % of
  them, by the Mahalanobis distance under the training latents' mean and covariance (stored by
  ``atomarch export``; absent from checkpoints exported before it existed).

Periodic structures given to a molecule model are refused outright (a
:class:`~atomarch.errors.StructureError`), not merely flagged: see :func:`refuse_periodic`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ase import Atoms

from atomarch.errors import StructureError

LATENT_QUANTILE = 0.999
"""Share of training latents inside the latent-distance threshold."""


class OutOfDomainWarning(UserWarning):
    """A structure lies outside the model's training domain (its output is an extrapolation)."""


@dataclass
class Domain:
    """What the training structures looked like.

    Attributes:
        min_atoms, max_atoms: smallest / largest number of atoms of a training structure.
        max_heavy: largest number of non-hydrogen atoms.
        periodic: whether training structures were periodic (crystals).
        latent_mean: [d] mean of the training latent means (or None).
        latent_precision: [d, d] inverse covariance of the training latent means (or None).
        latent_threshold: the :data:`LATENT_QUANTILE` quantile of the training latents'
            Mahalanobis distances (or None).
        latent_noise: [d] mean posterior variance E[σ²] of the training structures (VAEs
            exported since it exists; else None): with the latent means' covariance it gives the
            Gaussian fit of the aggregate posterior that :meth:`sample_latents` draws from.
    """

    min_atoms: int
    max_atoms: int
    max_heavy: int
    periodic: bool = False
    latent_mean: list[float] | None = None
    latent_precision: list[list[float]] | None = None
    latent_threshold: float | None = None
    latent_noise: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Primitive types only (safe to store in a checkpoint)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Domain:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def fit_latents(self, latents: np.ndarray, noise: np.ndarray | None = None) -> Domain:
        """Store the latent statistic of training latent means [n, d] (n > d) and, for a VAE, their
        mean posterior variance ``noise`` [d]; returns self."""
        if noise is not None:
            self.latent_noise = np.asarray(noise, dtype=np.float64).tolist()
        x = np.asarray(latents, dtype=np.float64)
        mean = x.mean(0)
        cov = np.cov(x - mean, rowvar=False) + 1e-6 * np.eye(x.shape[1])
        precision = np.linalg.inv(cov)
        dist = _mahalanobis(x, mean, precision)
        self.latent_mean, self.latent_precision = mean.tolist(), precision.tolist()
        self.latent_threshold = float(np.quantile(dist, LATENT_QUANTILE))
        return self

    def latent_gaussian(self) -> tuple[np.ndarray, np.ndarray]:
        """The Gaussian fit of the aggregate posterior: mean [d] and the Cholesky factor [d, d]
        (lower) of Cov(training latent means) + diag(E[σ²]) — where the decoder was trained,
        unlike N(0, I) when the KL weight is small. Without ``latent_noise`` (checkpoints
        exported before it existed) the covariance of the means alone. Raises ValueError when
        the latent statistics are absent (a checkpoint exported without its map)."""
        if self.latent_mean is None or self.latent_precision is None:
            raise ValueError("this checkpoint stores no latent statistics; re-run `atomarch export` to store them")
        mean = np.asarray(self.latent_mean, dtype=np.float64)
        cov = np.linalg.inv(np.asarray(self.latent_precision, dtype=np.float64))
        cov = 0.5 * (cov + cov.T)
        if self.latent_noise is not None:
            cov = cov + np.diag(np.asarray(self.latent_noise, dtype=np.float64))
        return mean, np.linalg.cholesky(cov + 1e-9 * np.eye(len(mean)))

    def sample_latents(self, n: int, generator: np.random.Generator, temperature: float = 1.0) -> np.ndarray:
        """``n`` draws [n, d] (float32) from the Gaussian fit of the aggregate posterior
        (:meth:`latent_gaussian`), its spread scaled by ``temperature`` (1: the fit itself)."""
        mean, chol = self.latent_gaussian()
        eps = generator.standard_normal((int(n), len(mean)))
        return (mean + float(temperature) * (eps @ chol.T)).astype(np.float32)

    def reasons(self, atoms: Atoms, latent: np.ndarray | None = None) -> list[str]:
        """Why ``atoms`` is outside the domain (empty list: inside)."""
        out = []
        n = len(atoms)
        heavy = int((atoms.get_atomic_numbers() > 1).sum())
        if heavy == 0:
            out.append("no heavy (non-hydrogen) atom")
        if heavy > self.max_heavy:
            out.append(f"{heavy} heavy atoms (trained on at most {self.max_heavy})")
        if n > self.max_atoms:
            out.append(f"{n} atoms (trained on at most {self.max_atoms})")
        elif n < self.min_atoms:
            out.append(f"{n} atoms (trained on at least {self.min_atoms})")
        if latent is not None and self.latent_threshold is not None:
            d = float(_mahalanobis(np.asarray(latent, np.float64)[None], np.asarray(self.latent_mean),
                                   np.asarray(self.latent_precision))[0])
            if d > self.latent_threshold:
                out.append(f"latent far from the training data (Mahalanobis distance {d:.1f}, "
                           f"{100 * LATENT_QUANTILE:.1f} % of training structures are within {self.latent_threshold:.1f})")
        return out

    def flag(self, frames: Sequence[Atoms], latents: np.ndarray | None = None, warn: bool = True) -> np.ndarray:
        """Set ``atoms.info["in_domain"]`` (and ``"domain_warning"`` when outside) on every
        structure, warn once per outside structure (:class:`OutOfDomainWarning`), and return
        the flags [n] bool."""
        from atomarch.data.structures import describe

        flags = np.ones(len(frames), dtype=bool)
        for k, atoms in enumerate(frames):
            why = self.reasons(atoms, None if latents is None else latents[k])
            atoms.info["in_domain"] = not why
            if why:
                flags[k] = False
                atoms.info["domain_warning"] = "; ".join(why)
                if warn:
                    warnings.warn(f"{describe(atoms, k)} is outside this model's training domain: {'; '.join(why)}",
                                  OutOfDomainWarning, stacklevel=3)
            else:
                atoms.info.pop("domain_warning", None)
        return flags


def _mahalanobis(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    d = x - mean
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", d, precision, d), 0.0))


def domain_of(packed, indices: np.ndarray) -> Domain:
    """The size domain of structures ``indices`` of a :class:`~atomarch.data.datasets.PackedStructures`."""
    import torch

    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    counts = packed.ptr.diff()
    owner = torch.repeat_interleave(torch.arange(len(counts)), counts)
    heavy = torch.zeros(len(counts), dtype=torch.long).index_add_(0, owner, (packed.z > 1).long())
    n = counts[idx]
    return Domain(min_atoms=int(n.min()), max_atoms=int(n.max()), max_heavy=int(heavy[idx].max()),
                  periodic=bool(packed.pbc[idx].any()))


def refuse_periodic(frames: Sequence[Atoms], what: str) -> None:
    """Raise a :class:`StructureError` naming the first periodic structure: ``what`` says which
    kind of model refuses it (e.g. "a molecule model (trained on QM9)")."""
    from atomarch.data.structures import describe

    for k, atoms in enumerate(frames):
        if np.asarray(atoms.get_pbc(), dtype=bool).any():
            raise StructureError(
                f"{describe(atoms, k)} is periodic (a crystal with a cell), but this is {what}: it was never "
                "trained on crystals and would return a meaningless molecule or number. Use a crystal model, or "
                "give a molecule (no cell, pbc=False)"
            )


def refuse_molecules(frames: Sequence[Atoms], what: str) -> None:
    """Raise a :class:`StructureError` naming the first structure that is not periodic on all
    three axes: ``what`` says which kind of model refuses it (e.g. "a crystal model")."""
    from atomarch.data.structures import describe

    for k, atoms in enumerate(frames):
        if not np.asarray(atoms.get_pbc(), dtype=bool).all():
            raise StructureError(
                f"{describe(atoms, k)} is not periodic on all three axes, but this is {what}: it decodes only "
                "crystals. Give a crystal (a cell and pbc=True, e.g. a CIF), or use a molecule model"
            )
