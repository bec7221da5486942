"""Typed configuration: YAML files in ``configs/`` map onto these dataclasses.

A config has four sections (``data``, ``model``, ``train`` and a ``name``). Unknown keys are
an error that names the key and the keys that are allowed, so a typo never silently falls
back to a default. Command-line overrides use dotted paths: ``train.max_epochs=3``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from atomarch.errors import ConfigError
from atomarch.registry import CRYSTAL_PROPERTIES, DATASETS, DECODERS, ENCODERS, POOLINGS, RELAX_METHODS, one_of

QM9_PROPERTIES = ("gap", "homo", "lumo", "U0", "mu", "alpha", "Cv")


@dataclass
class DataConfig:
    """Where structures come from and how they are batched."""

    dataset: str = "qm9"
    """``qm9`` (from the qm9pack package), ``files`` (``paths`` below, any ASE-readable file) or a
    crystal dataset in CDVAE's CSV format under ``root``: ``perov5``, ``carbon24``, ``mp20``."""
    root: str = "../shared/data/crystals"
    """For crystal datasets: the folder holding ``perov_5/``, ``carbon_24/``, ``mp_20/``."""
    paths: list[str] = field(default_factory=list)
    """For ``dataset: files``: structure files (xyz, extxyz, cif, traj, ASE db)."""
    cache_dir: str = "~/.cache/atomarch"
    """Parsed datasets are cached here as compact tensors, keyed by the settings."""
    properties: list[str] = field(default_factory=lambda: ["gap"])
    """Per-structure targets (QM9 names: gap, homo, lumo, U0 [eV], mu [D], alpha [bohr^3], Cv)."""
    cutoff: float = 5.0
    """Neighbour-list cutoff radius in Å."""
    batch_size: int = 64
    num_workers: int = 0
    train_subset: int | None = None
    """Use only the first N molecules of the (shuffled) training split."""
    val_subset: int | None = None
    test_subset: int | None = None
    split_seed: int = 0
    """Seed of the random split (QM9: EDM/Cormorant split with seed 0)."""
    val_fraction: float = 0.1
    """For ``dataset: files``: fractions of the random split."""
    test_fraction: float = 0.1
    size_balance: float = 0.0
    """Exponent α of size-balanced training draws: a training structure with ``k`` heavy (non-H)
    atoms is drawn with weight ``min(size_balance_cap, n_max / n_k) ** α``, where ``n_k`` counts
    the training structures of that size. 0 = plain shuffling (every structure once per epoch);
    0.5 lets the few tiny molecules (QM9 has 2 with one heavy atom) be seen often enough to learn."""
    size_balance_cap: float = 1000.0
    """Upper bound of ``n_max / n_k`` in the size-balance weight."""


@dataclass
class EncoderConfig:
    """The structure → latent encoder (see :mod:`atomarch.nn.encoders`)."""

    kind: str = "e3nn"
    """``e3nn`` (equivariant tensor-field network), ``schnet`` (invariant continuous-filter
    baseline), ``mpnn`` (Gilmer et al. 2017: edge network + GRU; pair it with ``pooling:
    attention`` for its attention readout), ``cgcnn`` (Xie & Grossman 2018: gated crystal-graph
    convolutions with batch norm) or ``elemnet`` (composition only, no geometry; see
    :mod:`atomarch.nn.composition`). All give latents invariant to rotations, translations,
    permutations and (with an intensive pooling) the choice of a crystal's cell."""
    irreps_hidden: str = "32x0e+16x1o+8x2e"
    lmax: int = 2
    """Maximum degree of the edge spherical harmonics."""
    num_layers: int = 3
    """Interaction layers (e3nn, schnet, cgcnn) or message-passing steps of the MPNN (its edge
    network and GRU are shared by all steps, as in Gilmer et al.)."""
    num_basis: int = 8
    """Number of Bessel radial basis functions (e3nn; schnet, mpnn and cgcnn expand distances in
    50 Gaussians)."""
    radial_hidden: int = 64
    """Hidden width of the radial MLP producing tensor-product weights (e3nn) or the MPNN's
    edge matrices."""
    hidden: int = 128
    """schnet, cgcnn: feature width; e3nn, mpnn: width of the invariant readout MLP."""
    message_dim: int = 32
    """mpnn: width F of the node states; its edge network emits an F x F matrix per edge, so
    memory and time grow as edges x F^2 (a batch of 32 QM9 molecules, ~9,000 edges: 37 MB of
    edge matrices at F = 32, 150 MB at 64; forward+backward measured ~3.5x slower at 64)."""
    avg_num_neighbors: float = 15.0
    """Messages are divided by sqrt of this (QM9 at 5 Å: ~15.5)."""
    logvar_init: float = 0.0
    """Initial log-variance of the posterior (bias of the readout's logvar half). A VAE whose
    decoder gets a noisy z from the first step can learn to ignore it (posterior collapse:
    MP-20 at logvar 0 kept sigma = 1 and a latent carrying almost nothing after 2,300 steps);
    -4 (sigma 0.14) starts it nearly as an autoencoder and lets the KL term widen it."""
    pooling: str = "sum_mean"
    """How per-atom features become the latent: ``sum_mean`` (sum/10 and mean side by side:
    molecules, where size matters), ``mean`` (intensive: a crystal gets the same latent from
    its primitive cell, any other cell choice or any supercell) or ``attention`` (intensive
    too: a learned softmax over each structure's atoms, per feature channel, weighs the atoms
    instead of the plain mean; the MPNN's attention readout, usable by every kind)."""
    readout_norm: bool | str = False
    """Standardise the pooled features before the latent MLP: ``false``/``none``, ``true``/``batch``
    (batch normalisation) or ``running`` (running statistics in training too). Pooled (mean)
    features of crystals start nearly identical across structures (Carbon-24: latent spread
    0.004, MP-20: 0.03, far below the posterior noise at ``logvar_init: -4``, sigma 0.14), so the
    decoder learns to ignore z and the encoder gets no useful gradient; standardised, every
    structure starts distinguishable. Evaluation uses running statistics: the latent stays
    batch-independent. Where the features vary little between structures (Carbon-24: all one
    element) batch statistics and running ones drift apart (validation composition loss 4.6 nats
    with the running statistics against 1.7 with the batch's): use ``running`` there."""
    species_skip: int = 0
    """Width of a per-atom element embedding concatenated to the interaction output before the
    readout (0: off). It hands the pooled composition straight to the latent: with 89 elements
    (MP-20) the composition heads otherwise learn from whatever element identity survives the
    interaction layers. Invariant like the rest of the readout (pooled per atom)."""


@dataclass
class DecoderConfig:
    """The hierarchical decoder (see :mod:`atomarch.nn.decoders`); ``enabled: false`` trains a
    property-only model on the latent mean."""

    enabled: bool = False
    kind: str = "graph"
    """``graph``: skeleton as a SELFIES token sequence (GRU conditioned on z and the global
    level), detail by ETKDG embedding + relaxation; ``flow``: skeleton and detail from
    equivariant flow-matching networks (experimental: does not yet reconstruct, see README);
    ``symmetry``: crystals, skeleton = space group + Wyckoff orbits as tokens, detail = lattice
    parameters and free Wyckoff coordinates (:mod:`atomarch.nn.decoders.symmetry`)."""
    max_count: int = 24
    """Global level: largest per-element count the composition heads can emit."""
    token_dim: int = 64
    """graph: SELFIES token embedding size."""
    gru_hidden: int = 512
    gru_layers: int = 3
    dropout: float = 0.0
    """Dropout between the skeleton GRU's layers (and, for ``symmetry``, the detail level's)."""
    token_dropout: float = 0.0
    """Teacher forcing: share of the skeleton GRU's input tokens (after ``<bos>``) replaced by
    ``<pad>`` while training, so the next token has to come from ``z`` and the composition
    rather than from the tokens before it (against memorising the training skeletons)."""
    count_dropout: float = 0.0
    """Share of the crystals (molecules) whose element counts the skeleton GRU does not see while
    training (its count input zeroed), so the skeleton has to come from ``z``; 1: the skeleton
    level never sees the counts, in training or decoding (the crystal grammar still holds every
    beam to its composition). Against the composition → skeleton lookup a GRU learns when most
    compositions name one training structure (MP-20, ``benchmarks/latent_use.py``)."""
    max_length: int = 48
    """graph: longest SELFIES (tokens + end mark); longer training molecules get no target."""
    relax: str = "mmff"
    """Detail-level relaxation. graph: of the embedded 3D molecule, mmff, xtb (tblite) or none;
    symmetry: of the built crystal (positions and cell), chgnet or none."""
    beams: int = 64
    """graph: beam width of the skeleton level; the candidate graph whose embedded structure
    encodes closest to z is kept (1 = greedy decoding)."""
    compositions: int = 5
    """graph: the global level's most likely compositions that the skeleton beam search is run
    for (a skeleton is kept only if it has the composition it was written for)."""
    skeletons: int = 0
    """symmetry: skeletons per proposed composition that the encoder verifies (the most likely
    of its beam); 0: ``ceil(beams / compositions)``, about ``beams`` candidates in all."""
    charge_balanced: bool = False
    """symmetry: propose only compositions that pass SMACT's charge-neutrality and Pauling
    electronegativity test (CDVAE's "compositional validity"): the global level's most likely
    compositions are screened and the ``compositions`` best that pass are decoded; a latent
    with none among its 8 x ``compositions`` most likely keeps the unscreened ones. For
    generation and design (every decoded crystal chemically plausible); off by default, since
    real materials fail the test too (12 % of MP-20's test crystals), so reconstruction with
    it on cannot return them."""
    composition: str = "counts"
    """symmetry: how the global level describes a cell's composition. ``counts``: independent
    per-element atom counts; ``formula``: the reduced formula (independent per-element counts
    with gcd 1) times the number of formula units in the primitive cell, a separate head. With
    intensive (mean) pooling the latent holds the composition's fractions better than the cell's
    size, which ``formula`` keeps apart (:class:`atomarch.nn.decoders.common.FormulaLevel`)."""
    conformers: int = 8
    """graph: conformers embedded per molecule; the one whose latent is closest to z is kept
    (1 = the first, ~8x faster)."""
    recheck: int = 0
    """graph: before the skeleton choice, the candidates of each molecule whose single probe
    structure encodes closest to z are embedded again with ``conformers`` conformers and
    judged by their best one (0: off). Measured on the QM9 VAE with 4: validation
    reconstruction 80.0 → 82.0 % (200 molecules, ``benchmarks/qm9_misses.py --recheck 4``) but
    test 80.6 → 79.6 % (500 molecules, ``atomarch evaluate --recheck 4``), for 18 % more time:
    no gain shown, so off by default."""
    coarse_irreps: str = "64x0e+16x1o+8x2e"
    coarse_lmax: int = 2
    coarse_layers: int = 4
    coarse_cutoff: float = 10.0
    """Å; the skeleton graph is complete, edges longer than this carry no message."""
    fine_irreps: str = "32x0e+16x1o"
    fine_lmax: int = 1
    fine_layers: int = 3
    fine_cutoff: float = 5.0
    num_basis: int = 16
    radial_hidden: int = 64
    noise_std: float = 1.0
    """Å; std of the skeleton flow's Gaussian prior."""
    h_noise_std: float = 0.5
    """Å; hydrogens start at their parent plus Gaussian noise of this std."""
    refine_noise_std: float = 0.1
    """Å; heavy atoms enter the fine level with this noise during training (refinement)."""
    coarse_steps: int = 40
    """Euler steps of the skeleton ODE at decode time."""
    fine_steps: int = 10
    time_weight_cap: float = 100.0
    """Flow losses weigh |x1_hat - x1|^2 by min(1/(1-t)^2, cap): the velocity error, which
    is what the ODE integrates, capped near t = 1."""
    self_condition: bool = True
    """Feed the previous estimate of the clean positions back into the flow networks (half the
    time in training, every step when sampling): keeps successive ODE steps consistent."""
    ot_pairing: bool = True
    """Pair noise and target atoms by element-wise assignment + Kabsch alignment (straighter flows)."""


@dataclass
class ModelConfig:
    """Encoder, latent, heads and (for the VAE) the decoder."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    latent_dim: int = 128
    head_hidden: int = 128
    head_layers: int = 2
    elements: list[str] = field(default_factory=lambda: ["H", "C", "N", "O", "F"])
    """Elements the model knows; structures with other elements are rejected with an error."""
    baseline: str = "none"
    """``random_forest`` or ``kernel_ridge``: instead of a network, fit a conventional model on
    Magpie composition descriptors and report its MAEs (:mod:`atomarch.models.baselines`)."""


@dataclass
class TrainConfig:
    """Optimisation and the Lightning trainer."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    """``cosine`` (over max_steps or the time budget's estimate), ``plateau`` or ``none``."""
    warmup_steps: int = 200
    min_lr: float = 1e-5
    max_epochs: int = 100
    max_steps: int = -1
    max_time: str | None = None
    """Wall-clock budget ``DD:HH:MM:SS``; training stops (with a checkpoint) when it is spent."""
    grad_clip: float = 10.0
    property_weight: float = 1.0
    kl_weight: float = 0.0
    """β of the KL term; 0 trains a deterministic property model on the latent mean."""
    kl_anneal_steps: int = 0
    """β rises linearly from 0 to ``kl_weight`` over these steps."""
    init_from: str | None = None
    """Warm start: copy every parameter whose name and shape match from this checkpoint (e.g. a
    property model's encoder) before training; ignored when the run resumes. The target
    statistics (``y_mean``/``y_std``) always come from the new data."""
    init_exclude: list[str] = field(default_factory=list)
    """Parameter-name prefixes the warm start does not copy (they start fresh), e.g.
    ``decoder.skeleton`` to retrain a level from scratch on a copied, frozen encoder."""
    freeze: list[str] = field(default_factory=list)
    """Parameter-name prefixes kept fixed (``encoder``, ``encoder.layers.0``, ``heads``, ...);
    frozen modules also keep their batch-norm statistics. Used by ``atomarch finetune``."""
    encoder_lr_scale: float = 1.0
    """Learning-rate multiplier of the encoder's (unfrozen) parameters: fine-tuning a pretrained
    encoder more gently than a new head."""
    free_bits: float = 0.0
    """Nats per latent dimension below which the KL is not penalised."""
    global_weight: float = 1.0
    coarse_weight: float = 1.0
    hcount_weight: float = 1.0
    fine_weight: float = 1.0
    loss: str = "l1"
    """``l1`` or ``mse`` on standardized targets."""
    seed: int = 0
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_threads: int | None = None
    """torch intra-op threads on the CPU (None: torch's default)."""
    out_dir: str = "runs"
    """Each run writes ``<out_dir>/<name>/`` (checkpoints/, metrics.csv)."""
    checkpoint_every_n_steps: int = 500
    val_check_interval: Any = 1.0
    """Validate every this fraction of an epoch (float) or every this many training steps (int)."""
    check_val_every_n_epoch: int | None = 1
    """Validate every n epochs; ``null`` with an integer ``val_check_interval`` validates every
    that many steps across epoch boundaries (small training sets, many short epochs)."""
    limit_val_batches: Any = 1.0
    log_every_n_steps: int = 50
    progress_bar: bool = True


@dataclass
class Config:
    """A whole run: ``name`` + sections."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, values: Any, where: str) -> Any:
    """Recursively build dataclass ``cls`` from a mapping, rejecting unknown keys."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{where or 'top level'}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            path = f"{where}.{key}" if where else key
            raise ConfigError(
                f"unknown config key '{path}' (allowed in '{where or 'top level'}': "
                f"{', '.join(sorted(names))})"
            )
        hint = hints[key]
        path = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, path)
        else:
            kwargs[key] = _check_type(value, hint, path)
    return cls(**kwargs)


def _check_type(value: Any, hint: Any, path: str) -> Any:
    """Check (and for int → float, convert) a config value against its type hint."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _check_type(value, option, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config key '{path}': bad value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{path}' must be a list, got {value!r}")
        return [_check_type(v, args[0], f"{path}[{k}]") for k, v in enumerate(value)] if args else value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(f"config key '{path}' must be {hint.__name__}, got {value!r}")


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build a :class:`Config` from a nested mapping (unknown keys raise :class:`ConfigError`)."""
    cfg = _build(Config, values, "")
    validate(cfg)
    return cfg


def _parse_scalar(text: str) -> Any:
    return yaml.safe_load(text)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested mapping in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        node = values
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{k}' is not a section")
        node[keys[-1]] = _parse_scalar(raw)
    return values


def read_config_values(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML config file (``name`` defaults to the file's stem), unvalidated."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    values.setdefault("name", path.stem)
    return values


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file, apply dotted overrides and validate it."""
    path = Path(path)
    values = read_config_values(path)
    apply_overrides(values, overrides or [])
    try:
        return config_from_dict(values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def validate(cfg: Config) -> None:
    """Check values that a type hint cannot (names, ranges)."""
    if cfg.model.encoder.readout_norm not in (True, False, "none", "batch", "running"):
        raise ConfigError(f"model.encoder.readout_norm must be true, false, 'none', 'batch' or 'running', "
                          f"got {cfg.model.encoder.readout_norm!r}")
    if cfg.model.baseline not in ("none", "random_forest", "kernel_ridge"):
        raise ConfigError(f"model.baseline must be 'none', 'random_forest' or 'kernel_ridge', got '{cfg.model.baseline}'")
    if cfg.train.encoder_lr_scale < 0:
        raise ConfigError(f"train.encoder_lr_scale must be >= 0, got {cfg.train.encoder_lr_scale}")
    if cfg.data.dataset not in DATASETS:
        raise ConfigError(f"data.dataset must be {one_of(DATASETS.names())}, got '{cfg.data.dataset}'")
    if cfg.data.dataset in CRYSTAL_PROPERTIES:
        props = CRYSTAL_PROPERTIES[cfg.data.dataset]
        bad = [p for p in cfg.data.properties if p not in props]
        if bad:
            raise ConfigError(f"data.properties: {cfg.data.dataset} has no property {bad[0]!r} (has: {', '.join(props)})")
    if cfg.data.dataset == "qm9":
        bad = [p for p in cfg.data.properties if p not in QM9_PROPERTIES]
        if bad:
            raise ConfigError(
                f"data.properties: unknown QM9 property {bad[0]!r} (known: {', '.join(QM9_PROPERTIES)})"
            )
    if cfg.data.dataset == "files" and not cfg.data.paths:
        raise ConfigError("data.paths must list at least one file when data.dataset is 'files'")
    if cfg.model.encoder.kind not in ENCODERS:
        raise ConfigError(f"model.encoder.kind must be {one_of(ENCODERS.names())}, got '{cfg.model.encoder.kind}'")
    if cfg.model.decoder.kind not in DECODERS:
        raise ConfigError(f"model.decoder.kind must be {one_of(DECODERS.names())}, got '{cfg.model.decoder.kind}'")
    if cfg.model.decoder.composition not in ("counts", "formula"):
        raise ConfigError(f"model.decoder.composition must be 'counts' or 'formula', got '{cfg.model.decoder.composition}'")
    if cfg.model.decoder.composition == "formula" and cfg.model.decoder.kind != "symmetry":
        raise ConfigError("model.decoder.composition: 'formula' is for the symmetry (crystal) decoder; "
                          f"the {cfg.model.decoder.kind} decoder describes compositions by counts")
    for key in ("dropout", "token_dropout", "count_dropout"):
        value = getattr(cfg.model.decoder, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"model.decoder.{key} must be in [0, 1], got {value}")
    if cfg.model.decoder.relax not in RELAX_METHODS:
        raise ConfigError(f"model.decoder.relax must be {one_of(RELAX_METHODS)}, got '{cfg.model.decoder.relax}'")
    if cfg.model.encoder.pooling not in POOLINGS:
        raise ConfigError(f"model.encoder.pooling must be {one_of(POOLINGS)}, got '{cfg.model.encoder.pooling}'")
    if cfg.model.encoder.message_dim < 1:
        raise ConfigError(f"model.encoder.message_dim must be >= 1, got {cfg.model.encoder.message_dim}")
    if cfg.data.cutoff <= 0:
        raise ConfigError(f"data.cutoff must be positive, got {cfg.data.cutoff}")
    if cfg.train.loss not in ("l1", "mse"):
        raise ConfigError(f"train.loss must be 'l1' or 'mse', got '{cfg.train.loss}'")
    if cfg.train.scheduler not in ("cosine", "plateau", "none"):
        raise ConfigError(f"train.scheduler must be cosine, plateau or none, got '{cfg.train.scheduler}'")
