"""CDVAE-protocol crystal metrics: StructureMatcher reconstruction, structural and SMACT validity."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

pytest.importorskip("pymatgen")
pytest.importorskip("smact")

from atomarch.metrics.crystals import (  # noqa: E402
    composition_valid,
    evaluate_crystal_reconstruction,
    evaluate_crystal_validity,
    structure_match,
    structure_valid,
)


def _perovskite(a: float = 3.9) -> Atoms:
    return Atoms("SrTiO3", cell=np.eye(3) * a, pbc=True,
                 scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def test_match_is_invariant_to_cell_choice_and_translation():
    prim, conv = bulk("NaCl", "rocksalt", a=5.64), bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    matched, rms = structure_match(prim, conv)
    assert matched and rms < 1e-6
    moved = _perovskite()
    moved.positions += [0.7, -1.3, 2.1]
    moved.wrap()
    assert structure_match(_perovskite(), moved)[0]


def test_match_tolerates_small_noise_but_not_a_different_crystal():
    a = _perovskite()
    b = a.copy()
    b.rattle(0.05, seed=1)
    matched, rms = structure_match(a, b)
    assert matched and 0 < rms < 0.1
    other = _perovskite()
    other.set_chemical_symbols(["Ba", "Ti", "O", "O", "O"])
    assert structure_match(a, other) == (False, None)
    stretched = _perovskite()
    stretched.set_cell(np.diag([3.9, 3.9, 3.9 * 2.0]), scale_atoms=True)  # c/a = 2: outside ltol = 0.3
    assert not structure_match(a, stretched)[0]
    scaled = _perovskite(3.9 * 1.2)  # isotropic scaling is normalised away (scale=True, as in CDVAE)
    assert structure_match(a, scaled)[0]
    res = evaluate_crystal_reconstruction([a, a], [b, other])
    assert res["match_rate"] == 0.5 and res["rms_mean"] == pytest.approx(rms)


def test_structural_validity_sees_periodic_images():
    ok = Atoms("C2", cell=np.eye(3) * 10, pbc=True, scaled_positions=[[0.0, 0, 0], [0.5, 0, 0]])
    assert structure_valid(ok)
    close = Atoms("C2", cell=np.eye(3) * 10, pbc=True, scaled_positions=[[0.0, 0, 0], [0.98, 0, 0]])  # 0.2 Å apart
    assert not structure_valid(close)
    flat = Atoms("C", cell=[[1, 0, 0], [0, 1, 0], [0, 0, 0]], pbc=True)
    assert not structure_valid(flat)


def test_smact_composition_validity():
    assert composition_valid(bulk("NaCl", "rocksalt", a=5.64))
    assert composition_valid(_perovskite())  # Sr2+ Ti4+ O2-
    assert composition_valid(bulk("Fe", "bcc", a=2.87))  # one element
    assert composition_valid(Atoms("CuZn", cell=np.eye(3) * 3, pbc=True, scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]]))
    nacl2 = Atoms("NaCl2", cell=np.eye(3) * 5, pbc=True, scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])
    assert not composition_valid(nacl2)
    res = evaluate_crystal_validity([_perovskite(), nacl2])
    assert res == {"n": 2, "structural_validity": 1.0, "compositional_validity": 0.5, "validity": 0.5}
