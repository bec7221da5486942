"""Crystal symmetry skeletons: perceive → build reproduces the crystal; the discrete skeleton does
not depend on the choice of cell, origin, orientation or atom order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, make_supercell

pytest.importorskip("pyxtal")

from atomarch.chem.symmetry import SymmetrySkeleton, build, perceive  # noqa: E402
from atomarch.errors import StructureError  # noqa: E402
from atomarch.metrics.crystals import structure_match  # noqa: E402

TINY = Path(__file__).with_name("data") / "crystals"


def _perovskite() -> Atoms:
    return Atoms("SrTiO3", cell=np.eye(3) * 3.905, pbc=True,
                 scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


@pytest.mark.parametrize("atoms,group", [(bulk("NaCl", "rocksalt", a=5.64), 225), (bulk("C", "diamond", a=3.567), 227),
                                          (_perovskite(), 221)])
def test_round_trip_of_textbook_crystals(atoms, group):
    skel = perceive(atoms)
    assert skel.space_group == group
    rebuilt = build(skel)
    assert rebuilt.pbc.all() and len(rebuilt) == len(atoms)
    assert structure_match(atoms, rebuilt)[0]


def test_skeleton_tokens_independent_of_cell_choice():
    rng = np.random.default_rng(0)
    prim = bulk("NaCl", "rocksalt", a=5.64)
    ref = perceive(prim).tokens
    conv = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    sup = make_supercell(prim, [[2, 0, 0], [0, 2, 0], [0, 0, 1]])
    moved = conv.copy()
    moved.positions += rng.normal(size=3)
    moved.wrap()
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotated = conv.copy()
    rotated.set_cell(conv.cell[:] @ q.T, scale_atoms=True)
    shuffled = conv[rng.permutation(len(conv))]
    for other in (conv, sup, moved, rotated, shuffled):
        assert perceive(other).tokens == ref == ["SG225", "Cl:a", "Na:b"]


def test_perov5_rows_round_trip():
    from atomarch.data.crystals import load_crystals

    packed, split = load_crystals("perov5", TINY, "~/.cache/atomarch-test")
    for k in split["test"][:10]:
        atoms = packed.atoms(int(k))
        assert structure_match(atoms, build(perceive(atoms)))[0]


def test_errors():
    with pytest.raises(StructureError, match="periodic"):
        perceive(Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
    bad = SymmetrySkeleton(space_group=225, orbits=[("Na", "z")], lattice=(5.6, 5.6, 5.6, 90, 90, 90),
                           coords=[(0.0, 0.0, 0.0)])
    with pytest.raises(StructureError, match="cannot build a crystal from skeleton"):
        build(bad)
