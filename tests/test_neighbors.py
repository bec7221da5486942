"""Neighbour lists against brute force: molecules, small and skewed periodic cells."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from atomarch.data.graph import Structure, collate
from atomarch.data.neighbors import dense_radius_graph, neighbor_list


def brute_force(pos, cell, pbc, cutoff, extra=0):
    """All (i, j, shift) with |pos[j] + shift@cell - pos[i]| < cutoff, by enumeration (``extra``
    more images each way for atoms outside the cell)."""
    pos, cell = np.asarray(pos, float), np.asarray(cell, float)
    ranges = []
    for k in range(3):
        if pbc[k]:
            # images needed: cutoff / (distance between lattice planes) + 1
            normal = np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])
            height = abs(np.dot(cell[k], normal)) / np.linalg.norm(normal)
            n = int(np.ceil(cutoff / height)) + 1 + extra
            ranges.append(range(-n, n + 1))
        else:
            ranges.append(range(0, 1))
    pairs = set()
    for shift in itertools.product(*ranges):
        d = pos[None, :, :] + np.array(shift) @ cell - pos[:, None, :]
        dist = np.linalg.norm(d, axis=-1)
        for i, j in zip(*np.where(dist < cutoff)):
            if i == j and shift == (0, 0, 0):
                continue
            pairs.add((int(i), int(j), tuple(int(s) for s in shift)))
    return pairs


def as_set(i, j, S):
    return {(int(a), int(b), tuple(int(x) for x in s)) for a, b, s in zip(i, j, S)}


CELLS = {
    "cubic-small": (np.eye(3) * 2.1, 3),  # cell smaller than the cutoff: many images
    "skewed": (np.array([[3.0, 0.0, 0.0], [2.4, 2.2, 0.0], [1.1, -1.3, 2.6]]), 5),
    "slab": (np.array([[4.0, 0.0, 0.0], [1.0, 3.5, 0.0], [0.0, 0.0, 20.0]]), 6),
}


@pytest.mark.parametrize("name", list(CELLS))
def test_periodic_matches_brute_force(name):
    cell, n = CELLS[name]
    rng = np.random.default_rng(0)
    pos = rng.random((n, 3)) @ cell
    pbc = np.array([True, True, name != "slab"])
    cutoff = 4.0
    i, j, S = neighbor_list(pos, cell, pbc, cutoff)
    assert as_set(i, j, S) == brute_force(pos, cell, pbc, cutoff)
    assert len(i) > n  # non-trivial


def test_molecules_dense_path_matches_brute_force(qm9_atoms):
    frames = qm9_atoms[:8]
    items = [Structure(torch.tensor(a.numbers), torch.tensor(a.positions, dtype=torch.float32), torch.zeros(3, 3),
                       torch.zeros(3, dtype=torch.bool), torch.zeros(0)) for a in frames]
    batch = collate(items, cutoff=3.0)
    got = {(int(s), int(d)) for s, d in batch.edge_index.T}
    want, start = set(), 0
    for a in frames:
        for i, j, _ in brute_force(a.positions, np.zeros((3, 3)), [False] * 3, 3.0):
            want.add((start + j, start + i))  # (source = neighbour, target = centre)
        start += len(a)
    assert got == want
    assert batch.edge_shift.abs().sum() == 0


def test_dense_and_ase_paths_agree(qm9_atoms):
    a = qm9_atoms[3]
    pos = torch.tensor(a.positions, dtype=torch.float32)
    ei = dense_radius_graph(pos, torch.zeros(len(a), dtype=torch.long), 5.0)
    i, j, _ = neighbor_list(a.positions, np.zeros((3, 3)), [False] * 3, 5.0)
    assert {(int(s), int(d)) for s, d in ei.T} == {(int(b), int(c)) for b, c in zip(j, i)}


def test_periodic_batch_edge_vectors_respect_shifts():
    cell = CELLS["skewed"][0]
    pos = np.random.default_rng(1).random((4, 3)) @ cell
    s = Structure(torch.tensor([6, 6, 8, 1]), torch.tensor(pos, dtype=torch.float32), torch.tensor(cell, dtype=torch.float32),
                  torch.ones(3, dtype=torch.bool), torch.zeros(0))
    batch = collate([s, s], cutoff=3.5)
    r = batch.edge_vectors().norm(dim=-1)
    assert (r < 3.5 + 1e-4).all() and (r > 1e-3).all()
    assert batch.edge_index.shape[1] == 2 * len(neighbor_list(pos, cell, [True] * 3, 3.5)[0])


def jittered_cloud(shape, spacing=2.15, jitter=0.3, seed=0):
    """A liquid-density (~0.1 atoms/Å³ at 2.15 Å spacing) cloud: a jittered simple-cubic grid,
    minimum separation >= spacing - 2 * jitter."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    return grid * spacing + rng.uniform(-jitter, jitter, (len(grid), 3))


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True), (False, True, False)])
def test_partial_periodic_atoms_outside_cell_match_brute_force(pbc):
    # atoms far outside the cell, a non-orthogonal (and for one case zero) non-periodic vector
    rng = np.random.default_rng(3)
    cell = np.array([[3.2, 0.1, 0.0], [0.7, 2.9, 0.3], [0.4, -0.8, 3.6]])
    if not pbc[2]:
        cell[2] = 0.0
    pos = rng.uniform(-6, 9, (7, 3))
    i, j, S, d = neighbor_list(pos, cell, np.array(pbc), 4.2, return_distances=True)
    full = cell + np.diag([0, 0, 3.6]) * (not pbc[2])  # brute force counts images with a full cell
    assert as_set(i, j, S) == brute_force(pos, full, pbc, 4.2, extra=6)
    vec = pos[j] - pos[i] + S @ cell
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), d)
    assert (S[:, ~np.array(pbc)] == 0).all()


def test_large_molecule_and_cell_match_ase_cell_list():
    from ase.neighborlist import primitive_neighbor_list

    pos = jittered_cloud((9, 8, 7))  # 504 atoms: beyond the dense path
    for pbc, cell in (([False] * 3, np.zeros((3, 3))), ([True] * 3, np.diag([9, 8, 7]) * 2.15)):
        i, j, S = neighbor_list(pos, cell, pbc, 5.0)
        ref = primitive_neighbor_list("ijS", pbc, cell, pos, 5.0, self_interaction=False)
        assert as_set(i, j, S) == as_set(*ref) and len(i) == len(ref[0])
        assert (np.diff(i) >= 0).all()
    # the collated batch of a large molecule uses it, in the j -> i convention
    s = Structure(torch.full((len(pos),), 6), torch.tensor(pos, dtype=torch.float32), torch.zeros(3, 3),
                  torch.zeros(3, dtype=torch.bool), torch.zeros(0))
    batch = collate([s], cutoff=5.0)
    i, j, _ = neighbor_list(s.pos.double().numpy(), np.zeros((3, 3)), [False] * 3, 5.0)
    assert {(int(a), int(b)) for a, b in batch.edge_index.T} == {(int(b), int(a)) for a, b in zip(i, j)}


@pytest.mark.parametrize("periodic", [False, True])
def test_neighbor_search_memory_is_linear(periodic):
    """50,000 atoms: a dense N x N array would be 20 GB; the tree search stays near the size of
    its output (numpy allocations traced; ~50 neighbours per atom at 5 Å)."""
    import tracemalloc

    shape = (25, 40, 50)
    pos = jittered_cloud(shape)
    cell = np.diag(shape) * 2.15 if periodic else np.zeros((3, 3))
    tracemalloc.start()
    try:
        i, j, S = neighbor_list(pos, cell, [periodic] * 3, 5.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    edges = len(i)
    assert 30 * len(pos) < edges < 80 * len(pos)
    assert peak < 250 * edges, (peak / 2**20, edges)  # bytes: a few int64/float64 arrays per edge (~130)
    tracemalloc.start()
    try:
        i, j, S = neighbor_list(pos, cell, [periodic] * 3, 0.1)  # the overlap check
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(i) == 0 and peak < 100 * 2**20


def test_skewed_cell_is_reduced_not_enumerated():
    """A very skewed description of a 10 Å cubic lattice: the same pairs as the plain cell (shifts
    in the skewed basis), without enumerating the thousands of images its face spacings suggest."""
    import time

    plain_cell = np.eye(3) * 10.0
    op = np.array([[1, 0, 0], [0, 1, 0], [400, 370, 1]])  # unimodular
    skewed = op @ plain_cell
    pos = jittered_cloud((4, 4, 4), spacing=2.5)
    t = time.perf_counter()
    i, j, S = neighbor_list(pos, skewed, [True] * 3, 5.0)
    assert time.perf_counter() - t < 2.0
    i0, j0, S0 = neighbor_list(pos, plain_cell, [True] * 3, 5.0)
    # S @ skewed == S0 @ plain for the same pair
    assert as_set(i, j, S @ op) == as_set(i0, j0, S0)
    np.testing.assert_allclose(np.linalg.norm(pos[j] - pos[i] + S @ skewed, axis=1).max(), 5.0, atol=0.5)
