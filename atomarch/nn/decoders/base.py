"""The decoder seam: one interface for every decoder family, and its typed options."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ase import Atoms
from torch import nn

from atomarch.data.graph import AtomGraph

Encode = Callable[[list[Atoms]], np.ndarray]
"""Structures → latent means [n, d]: the encoder that verifies a decoder's candidates."""


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode. ``None`` means the checkpoint's configured value (``model.decoder.*``).

    Attributes:
        seed: the noise seed (the same stream for every latent: results do not depend on the batch).
        relax: graph decoder: detail-level relaxation (one of :data:`atomarch.registry.RELAX_METHODS`).
        conformers: graph decoder: seeded conformers per molecule, the one encoding closest to z kept.
        beams: graph decoder: beam-search skeletons per composition.
        compositions: graph / symmetry decoder: most likely compositions of the global level tried.
        skeletons: symmetry decoder: skeletons verified per composition (0: ceil(beams / compositions)).
        recheck: graph decoder: best-probed candidates per molecule re-embedded with all conformers (0: off).
        charge_balanced: symmetry decoder: only compositions that pass SMACT's charge-neutrality test.
        noise_rotation: [3, 3] rotation of the noise draw (the structures rotate with it).
        progress: show a progress bar.
        coarse_steps, fine_steps: flow decoder: ODE steps of its two flows.
    """

    seed: int = 0
    relax: str | None = None
    conformers: int | None = None
    beams: int | None = None
    compositions: int | None = None
    skeletons: int | None = None
    recheck: int | None = None
    charge_balanced: bool | None = None
    noise_rotation: Any = None
    progress: bool = False
    coarse_steps: int | None = None
    fine_steps: int | None = None

    def replace(self, **changes: Any) -> DecodeOptions:
        """A copy with ``changes`` (unknown names are a TypeError)."""
        return dataclasses.replace(self, **changes)

    def merged(self, **overrides: Any) -> DecodeOptions:
        """A copy with the overrides that are not None (for keyword-argument front ends)."""
        return self.replace(**{k: v for k, v in overrides.items() if v is not None})


class Decoder(nn.Module):
    """Interface of a decoder family.

    ``losses(batch, z)``: the training terms of every level (teacher forcing), a dict of scalar
    tensors whose names the task weights (``global``, ``coarse``, ``hcount``, ``fine``, ...).
    ``decode(z, options, encode)``: latents [G, d] → G structures (``ase.Atoms``); ``encode``
    (optional) lets the decoder verify candidates against ``z``.
    """

    decode_batch_size: int | None = None
    """Most latents a caller should hand to one :meth:`decode` call (None: no limit)."""
    periodic: bool = False
    """True for crystal decoders (their models take and return periodic structures only)."""

    @classmethod
    def build(cls, cfg, atomic_numbers: list[int], latent_dim: int, vocab: list[str] | None = None) -> Decoder:
        """The decoder of a config (``vocab``: the training split's tokens, for families that need them)."""
        return cls(cfg, atomic_numbers, latent_dim)

    @classmethod
    def attach_targets(cls, dm, cfg, stored_vocab: list[str] | None = None) -> list[str] | None:
        """Before training: give the data module ``dm`` the targets this family learns from
        (``cfg``: the model config; ``stored_vocab``: the vocabulary of the checkpoint being
        resumed or warm-started from). Returns the vocabulary to store in checkpoints, if any."""
        return stored_vocab

    def init_from_data(self, dm, warm: frozenset[str] = frozenset()) -> None:
        """Before a fresh training run (not on resume): data-dependent initialisation from the
        data module's training split, after :meth:`attach_targets`. ``warm``: names of this
        decoder's parameters (relative to it) copied by a warm start, which keep their values.
        Default: nothing."""

    def losses(self, batch: AtomGraph, z: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode(self, z: torch.Tensor, options: DecodeOptions, encode: Encode | None = None) -> list[Atoms]:
        raise NotImplementedError


def build_decoder(cfg, atomic_numbers: list[int], latent_dim: int, vocab: list[str] | None = None) -> Decoder:
    """The decoder registered as ``cfg.kind`` (:data:`atomarch.registry.DECODERS`)."""
    from atomarch.registry import DECODERS

    return DECODERS.get(cfg.kind).build(cfg, atomic_numbers, latent_dim, vocab)
