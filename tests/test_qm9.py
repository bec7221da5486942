"""QM9 parsing, units, counts and the EDM split."""

from __future__ import annotations

import numpy as np

from atomarch.data.qm9 import HARTREE_TO_EV, N_MOLECULES, qm9_split


def test_counts_and_first_molecule(qm9):
    assert len(qm9) == N_MOLECULES == 130_831
    ch4 = qm9.atoms(0)
    assert ch4.get_chemical_formula() == "CH4"
    assert ch4.info["id"] == 1
    # published B3LYP geometry of dsgdb9nsd_000001 (Å)
    np.testing.assert_allclose(ch4.positions[0], [-0.0126981359, 1.0858041578, 0.0080009958], atol=1e-6)
    np.testing.assert_allclose(ch4.positions[4], [-0.5238136345, 1.4379326443, 0.9063972942], atol=1e-6)
    np.testing.assert_allclose(ch4.info["U0"], -40.47893 * HARTREE_TO_EV, atol=2e-3)  # eV
    np.testing.assert_allclose(ch4.info["gap"], 0.5048 * HARTREE_TO_EV, atol=1e-4)
    assert ch4.info["smiles"] == "C"
    # element counts over the whole set: only H, C, N, O, F; at most 29 atoms, 9 heavy atoms
    assert set(np.unique(qm9.z.numpy())) == {1, 6, 7, 8, 9}
    natoms = (qm9.ptr[1:] - qm9.ptr[:-1]).numpy()
    assert natoms.min() == 3 and natoms.max() == 29


def test_edm_split(qm9, tmp_path):
    split = qm9_split(qm9, seed=0, cache_dir=tmp_path)
    assert {k: len(v) for k, v in split.items()} == {"train": 100_000, "val": 17_748, "test": 13_083}
    allidx = np.concatenate(list(split.values()))
    assert len(np.unique(allidx)) == N_MOLECULES
    again = qm9_split(qm9, seed=0)
    assert all((split[k] == again[k]).all() for k in split)
    saved = np.load(tmp_path / "qm9-split-seed0.npz")
    assert (saved["test"] == split["test"]).all()
    assert (saved["test_qm9_index"] == qm9.ids.numpy()[split["test"]]).all()
    # identical to numpy's legacy global seeding used by EDM/Cormorant
    np.random.seed(0)
    assert (np.random.permutation(N_MOLECULES)[:100_000] == split["train"]).all()


def test_split_pinned_ids(qm9):
    """Regression guard: the first QM9 ids of each split (recorded 2026-11-22) never change,
    so every model is evaluated on the same test molecules."""
    split = qm9_split(qm9, seed=0)
    ids = qm9.ids.numpy()
    assert ids[split["train"][:5]].tolist() == [133161, 70467, 8226, 26624, 20504]
    assert ids[split["val"][:3]].tolist() == [70434, 125892, 29477]
    assert ids[split["test"][:5]].tolist() == [117980, 92051, 68086, 72921, 105219]
