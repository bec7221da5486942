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
        return StructureDataset(self.packed, self.split[split], self.cfg.properties)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.cfg.batch_size,
            shuffle=shuffle,
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


def build_datamodule(cfg: DataConfig, elements: list[str] | None = None) -> StructureDataModule:
    """The data module for ``cfg.dataset``; ``elements`` (symbols) restricts user files to the
    elements the model knows (a clear error otherwise)."""
    if cfg.dataset == "qm9":
        return QM9DataModule(cfg, elements)
    if cfg.dataset == "files":
        return FilesDataModule(cfg, elements)
    raise ConfigError(f"unknown dataset {cfg.dataset!r}")
