"""The CHGNet oracle for crystals: energies, formation energies against its own elemental
references, caching, relaxation, and NaN (not a crash) for what it cannot judge."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

pytest.importorskip("chgnet")

from atomarch.chem.oracles import CHGNetOracle  # noqa: E402


@pytest.fixture(scope="module")
def oracle():
    return CHGNetOracle(progress=False)


def test_formation_energies_have_the_right_sign_and_size(oracle):
    nacl, na, cu = bulk("NaCl", "rocksalt", a=5.69), bulk("Na", "bcc", a=4.23), bulk("Cu", "fcc", a=3.63)
    out = oracle([nacl, na, cu])
    assert np.isfinite(out["chgnet_energy"]).all()
    # Materials Project: NaCl -2.1 eV/atom; an element in its ground state ~0
    assert -2.6 < out["chgnet_formation_energy"][0] < -1.6
    assert abs(out["chgnet_formation_energy"][1]) < 0.1 and abs(out["chgnet_formation_energy"][2]) < 0.1


def test_cache_and_supercell_consistency(oracle):
    from ase.build import make_supercell

    nacl = bulk("NaCl", "rocksalt", a=5.69)
    first = oracle([nacl])["chgnet_energy"][0]
    n_cached = len(oracle._cache)
    again = oracle([nacl.copy()])["chgnet_energy"][0]
    assert again == first and len(oracle._cache) == n_cached
    sup = make_supercell(nacl, np.eye(3) * 2)
    assert oracle([sup])["chgnet_energy"][0] == pytest.approx(first, abs=2e-3)  # intensive


def test_file_cache_survives_a_new_oracle_and_a_corrupt_file_is_named(tmp_path, monkeypatch):
    from atomarch.errors import AtomarchError

    path = tmp_path / "chgnet.json"
    writer = CHGNetOracle(progress=False, cache=path)
    nacl = bulk("NaCl", "rocksalt", a=5.69)
    first = writer([nacl])
    writer.save()
    reader = CHGNetOracle(progress=False, cache=path)
    monkeypatch.setattr(reader, "energies", lambda frames: pytest.fail("a cached structure was recomputed"))
    again = reader([nacl.copy()])
    assert again["chgnet_formation_energy"][0] == first["chgnet_formation_energy"][0]
    path.write_text("{not json")
    with pytest.raises(AtomarchError, match="chgnet.json"):
        CHGNetOracle(progress=False, cache=path)
    assert path.read_text() == "{not json"  # the bad file is left as it was


def test_molecules_and_empty_structures_are_nan(oracle):
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    out = oracle([water, Atoms()])
    assert np.isnan(out["chgnet_energy"]).all() and np.isnan(out["chgnet_formation_energy"]).all()


def test_relaxation_lowers_a_strained_cell():
    relaxing = CHGNetOracle(relax=True, steps=40, progress=False)
    strained = bulk("Cu", "fcc", a=3.63 * 1.08)
    out = relaxing([strained])
    assert out["chgnet_relax_delta"][0] < -0.01
