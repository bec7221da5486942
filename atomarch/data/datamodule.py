"""Lightning data modules: QM9 (EDM split) and a user's own structure files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from atomarch.config import DataConfig
from atomarch.data.datasets import PackedStructures, StructureDataset
from atomarch.data.graph import Collater
from atomarch.data.qm9 import load_qm9, qm9_split
from atomarch.data.structures import check_structures, read_structures
from atomarch.errors import ConfigError


class StructureDataModule(pl.LightningDataModule):
    """Train/val/test loaders over :class:`PackedStructures` with a recorded split.

    Subclasses implement :meth:`load` returning the packed dataset and its split.
    """

    def __init__(self, cfg: DataConfig, elements: list[str] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.elements = elements
        self.packed: PackedStructures | None = None
        self.split: dict[str, np.ndarray] = {}
        self.tokens: torch.Tensor | None = None  # [M, L] skeleton targets once attach_tokens ran
        self.targets: dict[str, torch.Tensor] | None = None  # continuous decoder targets, [M, ...] each
        self._smiles: list[str | None] | None = None

    def load(self) -> tuple[PackedStructures, dict[str, np.ndarray]]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.packed is not None:
            return
        self.packed, split = self.load()
        limits = {"train": self.cfg.train_subset, "val": self.cfg.val_subset, "test": self.cfg.test_subset}
        self.split = {k: (v[: limits[k]] if limits.get(k) else v) for k, v in split.items()}

    def dataset(self, split: str) -> StructureDataset:
        self.setup()
        if split not in self.split:
            raise ConfigError(f"unknown split '{split}' (have: {', '.join(self.split)})")
        return StructureDataset(self.packed, self.split[split], self.cfg.properties, self.tokens, self.targets)

    # ------------------------------------------------- graph-decoder targets
    def smiles_cache_path(self) -> Path | None:
        """Where the whole dataset's skeleton SMILES are cached (None: not cached)."""
        return None

    def graph_smiles(self) -> list[str | None]:
        """Mirror-canonical stereo SMILES perceived from each structure's 3D geometry
        (:func:`atomarch.chem.strings.stereo_smiles`), indexed like ``packed``; None where the
        bonds do not sanitize or the structure is in no split in use."""
        self.setup()
        if self._smiles is not None:
            return self._smiles
        from tqdm.auto import tqdm

        from atomarch.chem.strings import stereo_smiles

        path = self.smiles_cache_path()
        if path is not None and path.is_file():
            self._smiles = json.loads(path.read_text())
            return self._smiles
        n = len(self.packed)
        used = np.unique(np.concatenate(list(self.split.values())))
        whole = path is not None and len(used) > min(n // 2, 10_000)  # big runs: perceive (and cache) all
        if whole:
            used = np.arange(n)
        smiles: list[str | None] = [None] * n
        for k in tqdm(used.tolist(), desc="perceiving molecular graphs", disable=len(used) < 2000, mininterval=2.0):
            smiles[k] = stereo_smiles(self.packed.atoms(k))
        if whole and path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(smiles))
            tmp.replace(path)
        self._smiles = smiles
        return smiles

    def vocabulary_tokens(self) -> list[str]:
        """The SELFIES vocabulary of the training split (special tokens first)."""
        from atomarch.chem.strings import Vocabulary, smiles_to_selfies

        smiles = self.graph_smiles()
        vocab = Vocabulary.from_selfies(smiles_to_selfies(smiles[k]) for k in self.split["train"] if smiles[k])
        return vocab.tokens

    def attach_tokens(self, tokens: list[str], max_length: int) -> dict[str, int]:
        """Give every structure its skeleton target (token ids under the vocabulary ``tokens``);
        returns ``{split: number of structures without a usable target}``."""
        from atomarch.chem.strings import Vocabulary, token_table

        smiles = self.graph_smiles()
        used = np.unique(np.concatenate([np.asarray(v, dtype=np.int64) for v in self.split.values()]))
        table = np.zeros((len(smiles), max_length), dtype=np.int16)  # all-pad rows: no target
        table[used], _ = token_table([smiles[k] for k in used.tolist()], Vocabulary(tokens), max_length)
        self.tokens = torch.from_numpy(table)
        return {k: int((self.tokens[torch.as_tensor(v)][:, 0] == 0).sum()) if len(v) else 0 for k, v in self.split.items()}

    # ------------------------------------------------- symmetry-decoder targets
    def skeleton_cache_path(self) -> Path | None:
        """Where the perceived crystal skeletons are cached (None: not cached)."""
        return None

    def attach_skeleton_targets(self, elements: list[str], max_length: int, max_count: int) -> dict[str, int]:
        """Give every structure of the train and val splits its symmetry-decoder targets (space
        group, Wyckoff orbits, lattice, free coordinates;
        :func:`atomarch.data.crystals.skeleton_targets`); returns ``{split: number of structures
        without a target}`` (symmetry not perceived,
        more orbits than ``max_length`` allows, or more than ``max_count`` atoms of an element)."""
        from atomarch.data.crystals import crystal_skeletons, skeleton_targets

        self.setup()
        fit = {k: v for k, v in self.split.items() if k != "test"}  # the test split is never trained on
        used = np.unique(np.concatenate([np.asarray(v, dtype=np.int64) for v in fit.values()]))
        if not bool(self.packed.pbc[torch.as_tensor(used)].all()):
            from atomarch.errors import ConfigError

            raise ConfigError("the symmetry decoder needs periodic structures (pbc on all axes) in every split")
        rows = crystal_skeletons(self.packed, used.tolist(), self.skeleton_cache_path())
        tokens, targets = skeleton_targets(rows, elements, max_length, max_count)
        self.tokens = torch.from_numpy(tokens)
        self.targets = {k: torch.from_numpy(v) for k, v in targets.items()}
        return {k: int((self.tokens[torch.as_tensor(v)][:, 0] == 0).sum()) if len(v) else 0 for k, v in fit.items()}

    def size_weights(self, split: str = "train") -> np.ndarray:
        """Per-structure draw weights [n] of ``split`` for size-balanced training (see
        ``DataConfig.size_balance``); mean 1."""
        self.setup()
        idx = torch.as_tensor(self.split[split])
        counts = self.packed.ptr.diff()
        owner = torch.repeat_interleave(torch.arange(len(counts)), counts)
        heavy = torch.zeros(len(counts), dtype=torch.long).index_add_(0, owner, (self.packed.z > 1).long())
        k = heavy[idx].numpy()
        n_k = np.bincount(k)[k].astype(np.float64)
        w = np.minimum(self.cfg.size_balance_cap, n_k.max() / n_k) ** self.cfg.size_balance
        return w / w.mean()

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        sampler = None
        if shuffle and self.cfg.size_balance > 0:
            from torch.utils.data import WeightedRandomSampler

            w = torch.as_tensor(self.size_weights(split))
            gen = torch.Generator().manual_seed(self.cfg.split_seed)
            sampler, shuffle = WeightedRandomSampler(w, num_samples=len(w), replacement=True, generator=gen), False
        return DataLoader(
            self.dataset(split),
            batch_size=self.cfg.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            collate_fn=Collater(self.cfg.cutoff),
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def target_stats(self) -> dict[str, dict[str, float]]:
        """Mean and standard deviation of each property over the training split (physical units)."""
        self.setup()
        cols = self.packed.property_columns(self.cfg.properties)
        y = self.packed.y[torch.as_tensor(self.split["train"])][:, cols].double()
        stats = {}
        for k, name in enumerate(self.cfg.properties):
            v = y[:, k][torch.isfinite(y[:, k])]
            if v.numel() < 2:
                raise ConfigError(f"property '{name}' has fewer than 2 known values in the training split")
            stats[name] = {"mean": float(v.mean()), "std": float(v.std().clamp_min(1e-8))}
        return stats


class QM9DataModule(StructureDataModule):
    """QM9 from qm9pack, EDM/Cormorant split (100,000 / 17,748 / 13,083)."""

    def load(self) -> tuple[PackedStructures, dict[str, np.ndarray]]:
        packed = load_qm9(self.cfg.cache_dir)
        return packed, qm9_split(packed, self.cfg.split_seed, self.cfg.cache_dir)

    def smiles_cache_path(self) -> Path | None:
        from atomarch.chem.strings import STRINGS_VERSION
        from atomarch.data.qm9 import cache_key

        return Path(self.cfg.cache_dir).expanduser() / f"qm9-{cache_key()}-graphs-{STRINGS_VERSION}.json"


class FilesDataModule(StructureDataModule):
    """Structures from the user's files (any ASE-readable format), randomly split with
    ``split_seed`` into ``1 - val_fraction - test_fraction`` / ``val_fraction`` / ``test_fraction``.
    The split is written to ``<cache_dir>/files-split-<hash>.json``."""

    def load(self) -> tuple[PackedStructures, dict[str, np.ndarray]]:
        frames = [a for p in self.cfg.paths for a in read_structures(p)]
        check_structures(frames, self.elements)
        packed = PackedStructures.from_atoms(frames, self.cfg.properties)
        n = len(packed)
        perm = np.random.RandomState(self.cfg.split_seed).permutation(n)
        n_test = int(round(self.cfg.test_fraction * n))
        n_val = int(round(self.cfg.val_fraction * n))
        split = {"test": perm[:n_test], "val": perm[n_test : n_test + n_val], "train": perm[n_test + n_val :]}
        if len(split["train"]) == 0:
            raise ConfigError(f"only {n} structures in data.paths: nothing left for training")
        import hashlib

        key = hashlib.sha1(json.dumps([str(Path(p).resolve()) for p in self.cfg.paths]).encode()).hexdigest()[:10]
        out = Path(self.cfg.cache_dir).expanduser() / f"files-split-{key}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"paths": self.cfg.paths, **{k: v.tolist() for k, v in split.items()}}))
        return packed, split


class CrystalDataModule(StructureDataModule):
    """A crystal dataset in CDVAE's CSV format (``perov5``, ``carbon24``, ``mp20``) read from
    ``data.root``; splits in :mod:`atomarch.data.crystals`."""

    def load(self) -> tuple[PackedStructures, dict[str, np.ndarray]]:
        """The dataset and its split; with a model's ``elements``, structures holding another
        element are left out of every split (their number is printed), so that a model
        trained on one dataset can be fine-tuned on another (AFLOW has Ne, MP-20 has not)."""
        from ase.data import atomic_numbers

        from atomarch.data.crystals import load_crystals

        packed, split = load_crystals(self.cfg.dataset, self.cfg.root, self.cfg.cache_dir, self.cfg.split_seed)
        if self.elements:
            known = torch.zeros(119, dtype=torch.bool)
            known[[atomic_numbers[s] for s in self.elements]] = True
            owner = torch.repeat_interleave(torch.arange(len(packed)), packed.ptr.diff())
            bad = torch.zeros(len(packed), dtype=torch.bool).index_put_((owner,), ~known[packed.z.long()], accumulate=True)
            if bool(bad.any()):
                dropped = {k: int(bad[torch.as_tensor(v)].sum()) for k, v in split.items() if len(v)}
                split = {k: v[~bad[torch.as_tensor(v)].numpy()] if len(v) else v for k, v in split.items()}
                print(f"[atomarch] {self.cfg.dataset}: structures with elements outside the model's left out: "
                      f"{dropped}", flush=True)
        return packed, split

    def skeleton_cache_path(self) -> Path | None:
        from atomarch.data.crystals import SKELETON_VERSION, dataset_cache

        cache = dataset_cache(self.cfg.dataset, self.cfg.root, self.cfg.cache_dir)
        return cache.with_name(f"{cache.stem}-skeletons-{SKELETON_VERSION}.json")


def build_datamodule(cfg: DataConfig, elements: list[str] | None = None) -> StructureDataModule:
    """The data module for ``cfg.dataset`` (see :data:`atomarch.registry.DATASETS`); ``elements``
    (symbols) restricts user files to the elements the model knows (a clear error otherwise)."""
    from atomarch.registry import DATASETS

    if cfg.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg.dataset!r} (known: {', '.join(DATASETS.names())})")
    return DATASETS.get(cfg.dataset)(cfg, elements)
