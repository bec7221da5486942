"""Reading user files (ASE formats, databases, SMILES) and rejecting bad structures."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from atomarch.data.structures import check_structures, load_inputs, read_structures
from atomarch.errors import ReadError, StructureError


@pytest.mark.parametrize("fmt", ["xyz", "extxyz", "traj", "db"])
def test_roundtrip_formats_with_properties(tmp_path, fmt):
    import ase.io

    frames = [molecule("H2O"), molecule("CH4")]
    for k, a in enumerate(frames):
        a.info["gap"] = 5.0 + k
    path = tmp_path / f"mols.{fmt}"
    if fmt == "db":
        import ase.db

        with ase.db.connect(str(path)) as db:
            for a in frames:
                db.write(a, gap=a.info["gap"])
    else:
        ase.io.write(str(path), frames, format="extxyz" if fmt == "xyz" else None)
    got = read_structures(path)
    assert [a.get_chemical_formula() for a in got] == ["H2O", "CH4"]
    np.testing.assert_allclose(got[1].positions, frames[1].positions, atol=1e-5)
    if fmt != "traj":
        assert got[1].info["gap"] == pytest.approx(6.0)
    assert got[0].info["source"].endswith(":0")


def test_cif_periodic(tmp_path):
    import ase.io

    a = bulk("NaCl", "rocksalt", a=5.64)
    ase.io.write(str(tmp_path / "x.cif"), a)
    got = read_structures(tmp_path / "x.cif")[0]
    assert got.pbc.all() and len(got) == 2
    np.testing.assert_allclose(got.cell.volume, a.cell.volume, rtol=1e-4)


def test_smiles_input():
    (a,) = load_inputs(["CCO"])
    assert a.get_chemical_formula() == "C2H6O"


def test_read_errors(tmp_path):
    with pytest.raises(ReadError, match="file not found"):
        read_structures(tmp_path / "missing.xyz")
    bad = tmp_path / "bad.xyz"
    bad.write_text("3\ncomment\nC 0 0\n")
    with pytest.raises(ReadError, match="bad.xyz"):
        read_structures(bad)


def test_structure_checks():
    ok = molecule("H2O")
    check_structures([ok], ["H", "O"])
    with pytest.raises(StructureError, match="empty"):
        check_structures([ok, Atoms()])
    nan = ok.copy()
    nan.positions[1, 2] = np.nan
    with pytest.raises(StructureError, match=r"structure 0 .*NaN.*atom 1"):
        check_structures([nan])
    with pytest.raises(StructureError, match="element S .*supported: H, C"):
        check_structures([Atoms("SH2", positions=[[0, 0, 0], [1.3, 0, 0], [0, 1.3, 0]])], ["H", "C"])
    with pytest.raises(StructureError, match="overlapping atoms 0 and 1"):
        check_structures([Atoms("CO", positions=[[0, 0, 0], [0.05, 0, 0]])])
    # periodic image overlap
    with pytest.raises(StructureError, match="overlapping"):
        check_structures([Atoms("C", positions=[[0, 0, 0]], cell=[0.05, 3, 3], pbc=True)])


def test_structure_size_limit():
    from atomarch.data.structures import MAX_ATOMS

    big = Atoms(numbers=np.ones(MAX_ATOMS + 1, dtype=int), positions=np.zeros((MAX_ATOMS + 1, 3)))
    big.info["source"] = "big.xyz:0"
    with pytest.raises(StructureError, match=r"structure 0 \(big.xyz:0\) has 100,001 atoms, more than the limit of 100,000"):
        check_structures([big])


def test_large_structure_checks_are_linear():
    """50,000 atoms (no dense N x N array: that would need 20 GB); a duplicated atom is found."""
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(25), np.arange(40), np.arange(50), indexing="ij"), -1).reshape(-1, 3)
    pos = grid * 2.15 + rng.uniform(-0.3, 0.3, grid.shape)
    check_structures([Atoms(numbers=np.full(len(pos), 6), positions=pos)], ["C"])
    check_structures([Atoms(numbers=np.full(len(pos), 6), positions=pos, cell=np.diag([25, 40, 50]) * 2.15, pbc=True)])
    pos[31_000] = pos[7] + 0.02
    with pytest.raises(StructureError, match="overlapping atoms 7 and 31000"):
        check_structures([Atoms(numbers=np.full(len(pos), 6), positions=pos)])
