"""Packed structure datasets: many structures as a few flat tensors, cached on disk.

:class:`PackedStructures` keeps atomic numbers, positions, cells and targets of a whole
dataset in concatenated tensors with an offset array, so that loading the 130,831 QM9
molecules from the cache takes about a second and indexing is O(1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from atomarch.data.graph import Structure
from atomarch.errors import ReadError


@dataclass
class PackedStructures:
    """A dataset of structures in flat tensors.

    Attributes (M structures, N atoms in all, P properties):
        z: [N] uint8 atomic numbers; pos: [N, 3] float32 Å; ptr: [M + 1] offsets into z/pos.
        cell: [M, 3, 3] float32 Å; pbc: [M, 3] bool.
        y: [M, P] float32 targets in physical units; properties: their P names.
        ids: [M] identifiers (QM9: the molecule index 1..133885).
        text: optional per-structure strings (QM9: SMILES).
    """

    z: torch.Tensor
    pos: torch.Tensor
    ptr: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    y: torch.Tensor
    properties: list[str]
    ids: torch.Tensor
    text: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.ptr.numel() - 1)

    def structure(self, k: int, properties: Sequence[str] | None = None) -> Structure:
        a, b = int(self.ptr[k]), int(self.ptr[k + 1])
        y = self.y[k] if properties is None else self.y[k, self.property_columns(properties)]
        return Structure(
            z=self.z[a:b].long(), pos=self.pos[a:b], cell=self.cell[k], pbc=self.pbc[k], y=y, idx=int(self.ids[k])
        )

    def atoms(self, k: int) -> Atoms:
        """Structure ``k`` as ``ase.Atoms`` with its properties in ``info``, and its text: the
        SMILES of a molecule (``smiles``), the material id of a crystal (``material_id``)."""
        s = self.structure(k)
        atoms = Atoms(numbers=s.z.numpy(), positions=s.pos.double().numpy(), cell=s.cell.double().numpy(), pbc=s.pbc.numpy())
        atoms.info.update({p: float(v) for p, v in zip(self.properties, self.y[k].tolist())})
        atoms.info["id"] = int(self.ids[k])
        if self.text:
            atoms.info["material_id" if bool(s.pbc.all()) else "smiles"] = self.text[k]
        return atoms

    def property_columns(self, properties: Sequence[str]) -> list[int]:
        missing = [p for p in properties if p not in self.properties]
        if missing:
            raise KeyError(f"property {missing[0]!r} not in dataset (has: {', '.join(self.properties)})")
        return [self.properties.index(p) for p in properties]

    def save(self, path: Path) -> None:
        """Write the cache (tensors and lists of str only; atomic: a killed run never leaves a
        half-written cache)."""
        from atomarch.serialization import safe_save

        safe_save(self.__dict__, path)

    @classmethod
    def load(cls, path: Path) -> PackedStructures:
        """Read a cache written by :meth:`save` with ``torch.load(weights_only=True)``: a corrupt
        file, or one holding pickled objects (refused before anything in it runs), is a
        :class:`ReadError` naming the file and how to rebuild it."""
        from atomarch.serialization import safe_load

        remedy = f"; delete it (rm '{path}') and run again to rebuild it from the source data"
        data = safe_load(path, ReadError, "dataset cache", remedy)
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not {f.name for f in fields(cls) if f.default is MISSING
                                              and f.default_factory is MISSING} <= set(data) or set(data) - names:
            raise ReadError(f"dataset cache {path} does not hold a packed dataset{remedy}")
        try:
            packed = cls(**data)
            if not all(isinstance(getattr(packed, k), torch.Tensor) for k in ("z", "pos", "ptr", "cell", "pbc", "y", "ids")):
                raise TypeError("a field is not a tensor")
        except Exception as exc:
            raise ReadError(f"dataset cache {path} is unreadable ({type(exc).__name__}: {exc}){remedy}") from None
        return packed

    @classmethod
    def from_atoms(cls, frames: Sequence[Atoms], properties: Sequence[str]) -> PackedStructures:
        natoms = [len(a) for a in frames]
        ptr = torch.zeros(len(frames) + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(torch.tensor(natoms, dtype=torch.long), 0)
        return cls(
            z=torch.as_tensor(np.concatenate([a.get_atomic_numbers() for a in frames]), dtype=torch.uint8),
            pos=torch.as_tensor(np.concatenate([a.get_positions() for a in frames]), dtype=torch.float32),
            ptr=ptr,
            cell=torch.as_tensor(np.stack([np.asarray(a.get_cell()) for a in frames]), dtype=torch.float32),
            pbc=torch.as_tensor(np.stack([np.asarray(a.get_pbc(), dtype=bool) for a in frames])),
            y=torch.tensor([[float(a.info.get(p, np.nan)) for p in properties] for a in frames], dtype=torch.float32).reshape(len(frames), len(properties)),
            properties=list(properties),
            ids=torch.arange(len(frames)),
        )


class StructureDataset(torch.utils.data.Dataset):
    """A view of :class:`PackedStructures` restricted to ``indices`` and ``properties``
    (and, for the sequence decoders, a table of skeleton token targets and of fixed-shape
    continuous targets, e.g. a crystal's lattice parameters)."""

    def __init__(self, packed: PackedStructures, indices: Sequence[int] | np.ndarray, properties: Sequence[str],
                 tokens: torch.Tensor | None = None, targets: dict[str, torch.Tensor] | None = None) -> None:
        self.packed = packed
        self.indices = np.asarray(indices, dtype=np.int64)
        self.columns = packed.property_columns(properties)
        self.tokens = tokens  # optional [M, L] skeleton targets, indexed like ``packed``
        self.targets = targets  # optional {name: [M, ...]} decoder targets, indexed like ``packed``

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Structure:
        s = self.packed.structure(int(self.indices[k]))
        s.y = s.y[self.columns]
        if self.tokens is not None:
            s.tokens = self.tokens[int(self.indices[k])]
        if self.targets:
            s.targets = {name: t[int(self.indices[k])] for name, t in self.targets.items()}
        return s
