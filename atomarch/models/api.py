"""The user-facing model object: what :func:`atomarch.load_model` returns.

:class:`AtomarchModel` wraps an :class:`~atomarch.models.net.AtomarchNet` (the weights) with the
map projection and training domain stored beside it, and offers the user API on lists of
``ase.Atoms`` and numpy arrays in physical units: ``encode``, ``predict``, ``decode``,
``sample``, ``reconstruct``, ``interpolate``, ``project``, ``optimize``, ``flag_domain`` and
``training_domain``. Decoding goes through the decoder seam
(:class:`~atomarch.nn.decoders.Decoder`, typed :class:`~atomarch.nn.decoders.DecodeOptions`);
latent optimisation is :func:`atomarch.latent.optimize.optimize_latents`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms

from atomarch.config import Config
from atomarch.data.graph import AtomGraph, batch_from_atoms
from atomarch.data.structures import check_structures
from atomarch.errors import AtomarchError, CheckpointError
from atomarch.models.net import AtomarchNet
from atomarch.nn.decoders import DecodeOptions, Decoder
from atomarch.nn.decoders.common import noise_seed
from atomarch.registry import PRIORS


class AtomarchModel:
    """A trained model for users (see module docstring).

    Build it from a network (``AtomarchModel(net=...)``, as :func:`atomarch.load_model` does) or
    from the arguments of a new :class:`~atomarch.models.net.AtomarchNet` (``config``, ``stats``,
    ``vocab``: an untrained model).
    """

    def __init__(self, config: dict[str, Any] | None = None, stats: dict[str, dict[str, float]] | None = None,
                 vocab: list[str] | None = None, *, net: AtomarchNet | None = None) -> None:
        if net is None:
            if config is None or stats is None:
                raise TypeError("AtomarchModel needs config and stats, or net=")
            net = AtomarchNet(config, stats, vocab)
        self.net = net
        self.projection: dict[str, Any] | None = None  # the 2D map (PCA), see project()
        self.domain = None  # atomarch.latent.domain.Domain of the training split, see training_domain()
        self.checkpoint_path: str | None = None
        self._domain_failed = False

    # --------------------------------------------------- the network's parts
    cfg: Config = property(lambda self: self.net.cfg)  # type: ignore[assignment]
    elements: list[str] = property(lambda self: self.net.elements)  # type: ignore[assignment]
    properties: list[str] = property(lambda self: self.net.properties)  # type: ignore[assignment]
    cutoff: float = property(lambda self: self.net.cutoff)  # type: ignore[assignment]
    encoder = property(lambda self: self.net.encoder)
    heads = property(lambda self: self.net.heads)
    decoder: Decoder | None = property(lambda self: self.net.decoder)  # type: ignore[assignment]
    y_mean = property(lambda self: self.net.y_mean)
    y_std = property(lambda self: self.net.y_std)
    device: torch.device = property(lambda self: self.net.device)  # type: ignore[assignment]

    def __call__(self, batch: AtomGraph) -> dict[str, torch.Tensor]:
        """``mu``, ``logvar`` [G, d] and standardized predictions ``pred`` [G, P] of a batch."""
        return self.net(batch)

    def to_physical(self, pred: torch.Tensor) -> torch.Tensor:
        return self.net.to_physical(pred)

    def head_predictions(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.head_predictions(z)

    def _mae(self, batch: AtomGraph, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.net.mae(batch, out)

    def eval(self) -> AtomarchModel:
        self.net.eval()
        return self

    def to(self, device: str | torch.device) -> AtomarchModel:
        self.net.to(device)
        return self

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.net.parameters()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True):
        return self.net.load_state_dict(state_dict, strict=strict)

    # --------------------------------------------------------------- data
    def datamodule(self, **data_overrides: Any):
        """The model's own data module (a copy of its data config with ``data_overrides``), set up."""
        from atomarch.data.datamodule import build_datamodule

        dm = build_datamodule(dataclasses.replace(self.cfg.data, **data_overrides), elements=self.elements)
        dm.setup()
        return dm

    def project(self, latents: np.ndarray) -> np.ndarray:
        """Map coordinates [n, 2] of latents [n, d]: the PCA stored with the checkpoint (fitted on
        the training split's latent means by ``atomarch export``)."""
        from atomarch.latent.projection import apply_projection

        if self.projection is None:
            raise CheckpointError("this checkpoint has no map projection; `atomarch export` fits and stores one")
        return apply_projection(self.projection, latents)

    # ----------------------------------------------------------- domain
    @property
    def crystals_only(self) -> bool:
        """True for models with a crystal decoder: they refuse molecules."""
        return self.decoder is not None and self.decoder.periodic

    @property
    def molecules_only(self) -> bool:
        """True for models that know only molecules: a molecule decoder, or a training set
        without periodic structures (QM9). They refuse crystals."""
        if (self.decoder is not None and not self.decoder.periodic) or self.cfg.data.dataset == "qm9":
            return True
        if self.decoder is not None:
            return False
        dom = self.training_domain()
        return dom is not None and not dom.periodic

    def training_domain(self):
        """The :class:`~atomarch.latent.domain.Domain` of the training split: stored in the
        checkpoint by ``atomarch export`` (with the latent statistic), else the sizes read from
        the model's dataset on first use (None when that dataset cannot be loaded here)."""
        if self.domain is None and not self._domain_failed:
            from atomarch.latent.domain import domain_of

            try:
                dm = self.datamodule(train_subset=None, val_subset=None, test_subset=None)
                self.domain = domain_of(dm.packed, dm.split["train"])
            except Exception:  # the user's training files are not on this machine: no size checks
                self._domain_failed = True
        return self.domain

    def check_inputs(self, frames: Sequence[Atoms]) -> None:
        """Validate user structures for this model: clear errors (:class:`StructureError`) naming
        the structure — empty, NaN, overlapping atoms, unknown elements, a crystal given to a
        molecule model or a molecule given to a crystal model."""
        self._check_inputs(frames)

    def _check_inputs(self, frames: Sequence[Atoms]) -> None:
        """Input validation of user structures (clear errors naming the structure)."""
        check_structures(frames, self.elements)
        if self.molecules_only:
            from atomarch.latent.domain import refuse_periodic

            source = " (trained on QM9)" if self.cfg.data.dataset == "qm9" else ""
            refuse_periodic(frames, f"a molecule model{source}")
        if self.crystals_only:
            from atomarch.latent.domain import refuse_molecules

            refuse_molecules(frames, f"a crystal model (trained on {self.cfg.data.dataset})")

    def flag_domain(self, frames: Sequence[Atoms], latents: np.ndarray | None = None, warn: bool = True) -> np.ndarray:
        """Flag structures outside the training domain (``atoms.info["in_domain"]``, one
        :class:`~atomarch.latent.domain.OutOfDomainWarning` each); returns flags [n] bool."""
        dom = self.training_domain()
        if dom is None:
            return np.ones(len(frames), dtype=bool)
        return dom.flag(frames, latents, warn=warn)

    # ---------------------------------------------------------- user API
    def _batches(self, frames: Sequence[Atoms], batch_size: int):
        self._check_inputs(frames)
        self.eval()
        for k in range(0, len(frames), batch_size):
            yield batch_from_atoms(frames[k : k + batch_size], self.cutoff).to(self.device)

    @torch.no_grad()
    def encode(self, frames: Sequence[Atoms], batch_size: int = 64) -> np.ndarray:
        """Latent means of structures: list of ``ase.Atoms`` → [n, latent_dim] float32.

        Structures outside the training domain are flagged (``atoms.info["in_domain"]``) with one
        :class:`~atomarch.latent.domain.OutOfDomainWarning` each; periodic structures given to
        a molecule model are refused (:class:`~atomarch.errors.StructureError`)."""
        frames = list(frames)
        outs = [self.encoder(b)[0].cpu() for b in self._batches(frames, batch_size)]
        z = torch.cat(outs).numpy() if outs else np.zeros((0, self.cfg.model.latent_dim), np.float32)
        self.flag_domain(frames, z)
        return z

    @torch.no_grad()
    def predict(self, frames: Sequence[Atoms], batch_size: int = 64) -> dict[str, np.ndarray]:
        """Property predictions in physical units: ``{name: [n]}`` (QM9 energies in eV).
        Out-of-domain structures are flagged and warned about as in :meth:`encode`."""
        frames = list(frames)
        outs = [self(b) for b in self._batches(frames, batch_size)]
        pred = torch.cat([self.to_physical(o["pred"]).cpu() for o in outs]) if outs else torch.zeros(0, len(self.properties))
        if outs:
            self.flag_domain(frames, torch.cat([o["mu"].cpu() for o in outs]).numpy())
        return {p: pred[:, k].numpy() for k, p in enumerate(self.properties)}

    # ----------------------------------------------------- generative API
    def _require_decoder(self) -> Decoder:
        if self.decoder is None:
            raise CheckpointError("this model has no decoder (a property-only checkpoint); use a VAE checkpoint")
        return self.decoder

    @staticmethod
    def decode_options(options: DecodeOptions | None = None, **overrides: Any) -> DecodeOptions:
        """``options`` (default: all the checkpoint's settings, seed 0) with the keyword
        arguments that are not None."""
        return (options or DecodeOptions()).merged(**overrides)

    @torch.no_grad()
    def decode(self, z: np.ndarray | torch.Tensor, seed: int | None = None, batch_size: int = 256,
               coarse_steps: int | None = None, fine_steps: int | None = None, relax: str | None = None,
               conformers: int | None = None, beams: int | None = None, noise_rotation: np.ndarray | None = None,
               progress: bool | None = None, *, options: DecodeOptions | None = None) -> list[Atoms]:
        """Latents [n, latent_dim] → ``n`` structures: molecules (``ase.Atoms``, zero centre of
        mass, Å) or, for a crystal decoder, crystals (periodic ``ase.Atoms`` with their cell).

        Deterministic for a given ``seed``; every molecule uses the same noise stream, so a
        smoothly varying ``z`` gives a smoothly varying structure and the result does not
        depend on the batch. ``noise_rotation`` [3, 3] rotates the noise draw (the molecules
        rotate with it). ``relax`` overrides the graph decoder's detail-level relaxation
        (mmff, xtb, none); ``coarse_steps``/``fine_steps`` the flow decoder's ODE steps.
        ``conformers`` and ``beams`` override how many conformers / beam-search skeletons the
        graph decoder considers to pick the ones closest to ``z``. ``options`` gives all of
        these at once (:class:`~atomarch.nn.decoders.DecodeOptions`); keyword arguments that
        are not None override it. ``atoms.info`` carries the property heads' predictions
        (physical units), ``seed``, ``latent_index`` and, for the graph decoder,
        ``smiles``/``selfies``/``embedding``; for the symmetry decoder ``skeleton``,
        ``space_group`` and ``structure_valid``.
        """
        from tqdm.auto import tqdm

        opts = self.decode_options(options, seed=seed, coarse_steps=coarse_steps, fine_steps=fine_steps, relax=relax,
                                   conformers=conformers, beams=beams, noise_rotation=noise_rotation, progress=progress)
        dec = self._require_decoder()
        self.eval()
        z = torch.as_tensor(np.asarray(z, dtype=np.float32))
        d = self.cfg.model.latent_dim
        if z.ndim == 1:
            z = z.unsqueeze(0)
        if z.ndim != 2 or z.shape[1] != d:
            raise AtomarchError(f"latents must have shape [n, {d}], got {list(z.shape)}")
        if not torch.isfinite(z).all():
            raise AtomarchError("latent vectors contain NaN/inf")
        if dec.decode_batch_size:
            batch_size = min(batch_size, dec.decode_batch_size)
        frames: list[Atoms] = []
        bar = tqdm(total=len(z), desc="decode", unit="crystal" if dec.periodic else "mol", disable=not opts.progress or len(z) < 2)
        for k in range(0, len(z), batch_size):
            zb = z[k : k + batch_size].to(self.device)
            phys = self.to_physical(self.head_predictions(zb)).cpu().numpy()
            for g, atoms in enumerate(dec.decode(zb, opts, encode=self._encode_unchecked)):
                if len(atoms) and not atoms.pbc.any():
                    atoms.positions -= atoms.get_center_of_mass()
                atoms.info.update({p: float(phys[g, i]) for i, p in enumerate(self.properties)})
                atoms.info.update(seed=int(opts.seed), latent_index=k + g)
                frames.append(atoms)
            bar.update(len(zb))
        bar.close()
        return frames

    @torch.no_grad()
    def _encode_unchecked(self, frames: list[Atoms]) -> np.ndarray:
        """Latent means [n, d] of decoder-made structures (no input validation: a strained
        candidate conformer must not abort decoding)."""
        return self.encoder(batch_from_atoms(frames, self.cutoff).to(self.device))[0].cpu().numpy()

    def prior_domain(self, prior: str):
        """The training :class:`~atomarch.latent.domain.Domain` whose fitted Gaussian
        ``prior="fitted"`` uses (sampling and optimisation), None for ``"standard"`` (N(0, I));
        a clear error for an unknown prior or a checkpoint without latent statistics."""
        if prior not in PRIORS:
            raise AtomarchError(f"unknown prior {prior!r} (choose from {', '.join(PRIORS)})")
        if prior == "standard":
            return None
        dom = self.training_domain()
        if dom is None or dom.latent_mean is None or dom.latent_precision is None:
            raise AtomarchError("prior 'fitted': this checkpoint stores no latent statistics; "
                                "re-run `atomarch export` to store them")
        return dom

    def prior_latents(self, n: int, seed: int = 0, prior: str = "standard", temperature: float = 1.0) -> np.ndarray:
        """``n`` seeded latents [n, latent_dim] to decode (what :meth:`sample` decodes):
        ``prior="standard"``: z ~ N(0, I), the VAE's prior (CDVAE/EDM protocols);
        ``prior="fitted"``: the Gaussian fit of the aggregate posterior stored by ``atomarch
        export`` (:meth:`~atomarch.latent.domain.Domain.sample_latents`). ``temperature`` scales
        the draws' spread about the prior's mean (1: the prior itself; below 1: closer to its
        mode, i.e. more typical and less diverse structures)."""
        if int(n) < 1:
            raise AtomarchError(f"number of samples must be at least 1, got {n}")
        if not (np.isfinite(temperature) and temperature > 0):
            raise AtomarchError(f"sampling temperature must be a positive number, got {temperature}")
        dom = self.prior_domain(prior)
        if dom is not None:
            return dom.sample_latents(int(n), np.random.default_rng(noise_seed(seed, 2)), temperature)
        gen = torch.Generator().manual_seed(noise_seed(seed, 2))
        return float(temperature) * torch.randn(int(n), self.cfg.model.latent_dim, generator=gen).numpy()

    @staticmethod
    def _seed(seed: int | None, kwargs: dict[str, Any]) -> int:
        """The decoding seed: ``seed`` if given, else the one of ``options`` in ``kwargs``, else 0."""
        if seed is not None:
            return int(seed)
        options = kwargs.get("options")
        return int(options.seed) if options is not None else 0

    def sample(self, n: int, seed: int | None = None, prior: str = "standard", temperature: float = 1.0,
               **kwargs: Any) -> list[Atoms]:
        """``n`` structures decoded from prior draws (seeded; default seed 0): z ~ N(0, I), or
        ``prior="fitted"`` from the Gaussian fit of the aggregate posterior, with their spread
        scaled by ``temperature`` (see :meth:`prior_latents`)."""
        seed = self._seed(seed, kwargs)
        return self.decode(self.prior_latents(n, seed, prior, temperature), seed=seed, **kwargs)

    def reconstruct(self, frames: Sequence[Atoms], seed: int | None = None, **kwargs: Any) -> list[Atoms]:
        """Encode to the latent mean and decode back (default seed 0). Each output carries its
        input's ``in_domain`` flag (and ``domain_warning``) and ``input_index``."""
        frames = list(frames)
        out = self.decode(self.encode(frames), seed=self._seed(seed, kwargs), **kwargs)
        for k, (src, atoms) in enumerate(zip(frames, out)):
            atoms.info["input_index"] = k
            for key in ("in_domain", "domain_warning"):
                if key in src.info:
                    atoms.info[key] = src.info[key]
        return out

    def interpolate(self, a: Atoms | np.ndarray, b: Atoms | np.ndarray, steps: int = 10, method: str = "slerp",
                    seed: int | None = None, **kwargs: Any) -> list[Atoms]:
        """Decoded path of ``steps`` molecules from ``a`` to ``b`` (both ends included; default
        seed 0); each end is a structure or an already encoded latent [d]."""
        from atomarch.latent.paths import latent_path

        ends = [x for x in (a, b) if isinstance(x, Atoms)]
        encoded = iter(self.encode(ends)) if ends else iter(())
        za, zb = (next(encoded) if isinstance(x, Atoms) else np.asarray(x, dtype=np.float32).reshape(-1) for x in (a, b))
        path = latent_path(za, zb, steps, method)
        frames = self.decode(path, seed=self._seed(seed, kwargs), **kwargs)
        for k, atoms in enumerate(frames):
            atoms.info["path_t"] = float(k / max(1, steps - 1))
        return frames

    # ------------------------------------------------------- design tools
    def optimize(self, start: Sequence[Atoms] | np.ndarray, objective: Any, steps: int = 100, lr: float = 0.05,
                 prior_weight: float = 0.1, decode_every: int = 10, method: str = "gradient", population: int = 16,
                 sigma: float = 0.1, seed: int = 0, relax: str | None = None, progress: bool = False,
                 conformers: int | None = None, beams: int | None = None, *, options: DecodeOptions | None = None,
                 prior: str = "standard"):
        """Move latents toward a better objective and decode every ``decode_every`` steps.

        Args:
            start: molecules (``ase.Atoms``, encoded to their latent means) or latents [S, d].
            objective: property-head objective (``{"gap": "max"}``, ``{"gap": ("target", 7.0)}``,
                weighted sums, or ``"gap:max"``; see :mod:`atomarch.latent.optimize`), or — with
                ``method="random"`` — a callable ``f(list_of_atoms) -> scores [n]`` to maximise
                on decoded structures (e.g. an oracle).
            steps: optimisation steps; lr: Adam step size (gradient method).
            prior_weight: weight of |z|²/2, the negative log prior density.
            prior: ``"standard"`` (search in z, penalty |z|²/2 of N(0, I)) or ``"fitted"``
                (search in the whitened coordinates of the aggregate posterior's Gaussian fit,
                penalty = half the squared Mahalanobis distance to the training latents; the
                scale that fits VAEs trained with a small KL weight, such as the crystal VAEs).
            method: ``"gradient"`` (Adam on the heads) or ``"random"`` ((1 + λ) evolution
                strategy with ``population`` λ and step ``sigma``, seeded by ``seed``).
            seed: decoding seed (and the random method's seed).
            relax, conformers, beams, options: decode options, as in :meth:`decode` (the start
                record decodes exactly as :meth:`reconstruct` does with the same options and seed).

        Returns:
            :class:`~atomarch.latent.optimize.Trajectory` with latents, decoded structures,
            predictions and validity flags at steps 0, ``decode_every``, ... , ``steps``.
        """
        from atomarch.latent.optimize import optimize_latents

        self._require_decoder()
        opts = self.decode_options(options, relax=relax, conformers=conformers, beams=beams)
        return optimize_latents(self, start, objective, steps=steps, lr=lr, prior_weight=prior_weight,
                                decode_every=decode_every, method=method, population=population, sigma=sigma,
                                seed=seed, progress=progress, options=opts, prior=prior)
