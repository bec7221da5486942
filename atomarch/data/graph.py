"""Flat graph batches (PyG-style, no padding) and their construction from ``ase.Atoms``.

A :class:`Structure` is one structure as compact tensors; :func:`collate` turns a list of
them into an :class:`AtomGraph` batch with a cutoff neighbour list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from ase import Atoms

from atomarch.data.neighbors import DENSE_MAX_ATOMS, dense_radius_graph, neighbor_list


@dataclass
class Structure:
    """One structure as tensors.

    Attributes:
        z: [n] atomic numbers (int64).
        pos: [n, 3] Cartesian positions, Å (float32).
        cell: [3, 3] lattice vectors as rows, Å (zeros for molecules).
        pbc: [3] periodic flags (bool).
        y: [p] targets in physical units (NaN where unknown).
        idx: identifier within its dataset.
        tokens: optional [L] skeleton token ids (the sequence decoders' target; 0 = padding).
        targets: optional fixed-shape decoder targets by name (e.g. ``lattice`` [6]).
    """

    z: torch.Tensor
    pos: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    y: torch.Tensor
    idx: int = -1
    tokens: torch.Tensor | None = None
    targets: dict[str, torch.Tensor] | None = None


@dataclass
class AtomGraph:
    """A batch of structures as one disconnected graph.

    Attributes (N atoms, G graphs, E directed edges, P targets):
        z: [N] atomic numbers; pos: [N, 3] Å; batch: [N] graph of each atom.
        cell: [G, 3, 3] Å; pbc: [G, 3] bool.
        edge_index: [2, E] (row 0 neighbour j, row 1 centre i); edge_shift: [E, 3] image offsets.
        y: [G, P] targets (physical units, NaN = missing); natoms: [G]; idx: [G] dataset ids.
        tokens: optional [G, L] skeleton token ids (0-padded), when the dataset provides them.
        targets: optional decoder targets by name, each [G, ...] (stacked per structure).
    """

    z: torch.Tensor
    pos: torch.Tensor
    batch: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    edge_index: torch.Tensor
    edge_shift: torch.Tensor
    y: torch.Tensor
    natoms: torch.Tensor
    idx: torch.Tensor
    tokens: torch.Tensor | None = None
    targets: dict[str, torch.Tensor] | None = None

    @property
    def num_graphs(self) -> int:
        return int(self.natoms.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> AtomGraph:
        moved = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "targets"}
        out = {k: v if v is None else v.to(device, non_blocking=non_blocking) for k, v in moved.items()}
        targets = None if self.targets is None else {k: v.to(device, non_blocking=non_blocking)
                                                      for k, v in self.targets.items()}
        return AtomGraph(**out, targets=targets)

    def edge_vectors(self) -> torch.Tensor:
        """[E, 3] vectors from centre to neighbour, Å (periodic shifts applied)."""
        src, dst = self.edge_index
        vec = self.pos[src] - self.pos[dst]
        if self.edge_shift.numel() and bool(self.pbc.any()):
            cell = self.cell[self.batch[dst]]
            vec = vec + torch.einsum("ek,ekl->el", self.edge_shift, cell)
        return vec

    def __len__(self) -> int:
        return self.num_graphs


def atoms_to_structure(atoms: Atoms, properties: Sequence[str] = (), idx: int = -1) -> Structure:
    """``ase.Atoms`` → :class:`Structure`; targets from ``atoms.info[name]`` (NaN if absent)."""
    y = [float(atoms.info.get(p, np.nan)) for p in properties]
    return Structure(
        z=torch.as_tensor(atoms.get_atomic_numbers(), dtype=torch.long),
        pos=torch.as_tensor(atoms.get_positions(), dtype=torch.float32),
        cell=torch.as_tensor(np.asarray(atoms.get_cell()), dtype=torch.float32),
        pbc=torch.as_tensor(np.asarray(atoms.get_pbc(), dtype=bool)),
        y=torch.tensor(y, dtype=torch.float32),
        idx=idx,
    )


def collate(items: Sequence[Structure], cutoff: float) -> AtomGraph:
    """Batch structures and build their neighbour list (cutoff in Å)."""
    natoms = torch.tensor([len(s.z) for s in items], dtype=torch.long)
    z = torch.cat([s.z for s in items])
    pos = torch.cat([s.pos for s in items])
    batch = torch.repeat_interleave(torch.arange(len(items)), natoms)
    cell = torch.stack([s.cell for s in items])
    pbc = torch.stack([s.pbc for s in items])
    starts = torch.cumsum(natoms, 0) - natoms
    dense = ~pbc.any(dim=1) & (natoms <= DENSE_MAX_ATOMS)

    edges, shifts = [], []
    if bool(dense.all()):
        edges.append(dense_radius_graph(pos, batch, cutoff))
        shifts.append(torch.zeros(edges[0].shape[1], 3))
    else:
        for g, s in enumerate(items):
            i, j, S = neighbor_list(s.pos.double().numpy(), s.cell.double().numpy(), s.pbc.numpy(), cutoff)
            off = int(starts[g])
            edges.append(torch.stack([torch.as_tensor(j, dtype=torch.long) + off, torch.as_tensor(i, dtype=torch.long) + off]))
            shifts.append(torch.as_tensor(S, dtype=torch.float32).reshape(-1, 3))
    y_dim = max((s.y.numel() for s in items), default=0)
    y = torch.stack([s.y for s in items]) if y_dim else torch.zeros(len(items), 0)
    return AtomGraph(
        z=z,
        pos=pos,
        batch=batch,
        cell=cell,
        pbc=pbc,
        edge_index=torch.cat(edges, dim=1) if edges else torch.zeros(2, 0, dtype=torch.long),
        edge_shift=torch.cat(shifts) if shifts else torch.zeros(0, 3),
        y=y,
        natoms=natoms,
        idx=torch.tensor([s.idx for s in items], dtype=torch.long),
        tokens=_pad_tokens(items),
        targets=_stack_targets(items),
    )


def _stack_targets(items: Sequence[Structure]) -> dict[str, torch.Tensor] | None:
    """Each named target stacked over the batch ([G, ...]), or None when an item has none."""
    if not items or any(s.targets is None for s in items):
        return None
    return {name: torch.stack([s.targets[name] for s in items]) for name in items[0].targets}


def _pad_tokens(items: Sequence[Structure]) -> torch.Tensor | None:
    """[G, L] token ids padded with 0 to the longest target in the batch, or None."""
    if not items or any(s.tokens is None for s in items):
        return None
    length = max(1, max(int((s.tokens != 0).sum()) for s in items))
    out = torch.zeros(len(items), length, dtype=torch.long)
    for g, s in enumerate(items):
        t = s.tokens[:length].long()
        out[g, : len(t)] = t
    return out


def batch_from_atoms(frames: Sequence[Atoms], cutoff: float, properties: Sequence[str] = ()) -> AtomGraph:
    """Convenience: ``ase.Atoms`` list → :class:`AtomGraph` (no validation; see
    :func:`atomarch.data.structures.check_structures`)."""
    return collate([atoms_to_structure(a, properties, k) for k, a in enumerate(frames)], cutoff)


class Collater:
    """Picklable ``collate_fn`` for DataLoader workers."""

    def __init__(self, cutoff: float) -> None:
        self.cutoff = cutoff

    def __call__(self, items: Sequence[Structure]) -> AtomGraph:
        return collate(items, self.cutoff)
