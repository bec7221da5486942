"""The shipped QM9 property checkpoint loads and is as accurate as its recorded evaluation says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ROOT

SHIPPED = ROOT / "checkpoints" / "qm9-property"


@pytest.mark.skipif(not (SHIPPED / "model.ckpt").is_file(), reason="no shipped checkpoint")
def test_shipped_property_model_on_test_molecules(qm9):
    import atomarch
    from atomarch.data.qm9 import qm9_split

    model = atomarch.load_model(SHIPPED)
    recorded = json.loads((SHIPPED / "eval_test.json").read_text())["properties"]
    assert recorded["n"] == 13_083
    test = qm9_split(qm9)["test"][:500]
    frames = [qm9.atoms(int(k)) for k in test]
    pred = model.predict(frames)["gap"]
    mae = float(np.mean(np.abs(pred - np.array([a.info["gap"] for a in frames]))))
    # 500 molecules: within 30 % of the MAE recorded on all 13,083 test molecules
    assert abs(mae - recorded["mae"]["gap"]) < 0.3 * recorded["mae"]["gap"], (mae, recorded)
    assert mae <= 0.25


VAE = ROOT / "checkpoints" / "qm9-vae"


@pytest.mark.skipif(not (VAE / "model.ckpt").is_file(), reason="no shipped VAE checkpoint")
def test_shipped_vae_reconstructs_as_recorded(qm9):
    """50 test molecules reconstruct about as often as the recorded evaluation (>= 500 molecules) says,
    and the stored map projection is there."""
    import atomarch
    from atomarch.data.qm9 import qm9_split
    from atomarch.metrics import evaluate_reconstruction

    model = atomarch.load_model(VAE)
    recorded = json.loads((VAE / "eval_test.json").read_text())
    assert recorded["reconstruction"]["n"] >= 500 and recorded["generation"]["n"] >= 500
    frames = [qm9.atoms(int(k)) for k in qm9_split(qm9)["test"][:50]]
    rec = model.reconstruct(frames, seed=0)
    result = evaluate_reconstruction(frames, rec)
    assert result["smiles_match"] >= recorded["reconstruction"]["smiles_match"] - 0.2, result["smiles_match"]
    assert model.project(model.encode(frames[:3])).shape == (3, 2)
    again = model.reconstruct(frames[:3], seed=0)
    for a, b in zip(rec[:3], again):
        np.testing.assert_array_equal(a.positions, b.positions)


PEROV5 = ROOT / "checkpoints" / "perov5-vae"
TINY_CRYSTALS = ROOT / "tests" / "data" / "crystals"


@pytest.mark.skipif(not (PEROV5 / "model.ckpt").is_file(), reason="no shipped Perov-5 VAE")
def test_shipped_perov5_vae_reconstructs_as_recorded():
    """The 20 Perov-5 test crystals in tests/data (rows of CDVAE's test.csv) reconstruct about as
    often as the recorded evaluation says; the latent does not depend on the cell chosen."""
    import atomarch
    from ase.build import make_supercell

    from atomarch.data.crystals import load_crystals
    from atomarch.metrics.crystals import structure_match

    model = atomarch.load_model(PEROV5)
    recorded = json.loads((PEROV5 / "eval_test.json").read_text())["reconstruction"]
    packed, split = load_crystals("perov5", TINY_CRYSTALS, ROOT / "runs" / "cache")
    frames = [packed.atoms(int(k)) for k in split["test"]]
    out = model.reconstruct(frames)
    rate = np.mean([bool(len(b)) and structure_match(a, b)[0] for a, b in zip(frames, out)])
    assert rate >= recorded["match_rate_any"] - 0.25, (rate, recorded)
    assert model.projection is not None and (PEROV5 / "map.parquet").is_file()
    z = model.encode(frames[:3] + [make_supercell(a, np.diag([2, 1, 2])) for a in frames[:3]])
    assert np.abs(z[:3] - z[3:]).max() / np.abs(z[:3]).max() < 1e-4


CARBON24 = ROOT / "checkpoints" / "carbon24-vae"


@pytest.mark.skipif(not (CARBON24 / "model.ckpt").is_file(), reason="no shipped Carbon-24 VAE")
def test_shipped_carbon24_vae_reconstructs_as_recorded():
    """The first 20 Carbon-24 test crystals (tests/data) reconstruct about as often as recorded,
    into valid periodic carbon; a 2x1x2 supercell gets the latent of its cell."""
    import atomarch
    from ase.build import make_supercell

    from atomarch.data.crystals import load_crystals
    from atomarch.metrics.crystals import structure_match, structure_valid

    model = atomarch.load_model(CARBON24)
    recorded = json.loads((CARBON24 / "eval_test.json").read_text())["reconstruction"]
    packed, split = load_crystals("carbon24", TINY_CRYSTALS, ROOT / "runs" / "cache")
    frames = [packed.atoms(int(k)) for k in split["test"]]
    assert len(frames) == 20
    out = model.reconstruct(frames)
    assert all(len(b) and b.pbc.all() and set(b.get_chemical_symbols()) == {"C"} and structure_valid(b) for b in out)
    rate = np.mean([structure_match(a, b)[0] for a, b in zip(frames, out)])
    assert rate >= recorded["match_rate"] - 0.25, (rate, recorded)
    z = model.encode(frames[:3] + [make_supercell(a, np.diag([2, 1, 2])) for a in frames[:3]])
    assert np.abs(z[:3] - z[3:]).max() / np.abs(z[:3]).max() < 1e-4


MP20 = ROOT / "checkpoints" / "mp20-vae"


@pytest.mark.skipif(not (MP20 / "model.ckpt").is_file(), reason="no shipped MP-20 VAE")
def test_shipped_mp20_vae_decodes_valid_crystals_and_predicts_formation_energy(tmp_path):
    """The first MP-20 test crystals (tests/data): the formation-energy head is near the labels,
    reconstructions are periodic and structurally valid, the latent ignores the cell choice, and
    `atomarch sample --out gen.cif` writes CIFs that read back as valid crystals."""
    import atomarch
    from ase.build import make_supercell
    from ase.io import read

    from atomarch.data.crystals import load_crystals
    from atomarch.metrics.crystals import structure_valid

    from conftest import run_cli

    model = atomarch.load_model(MP20)
    packed, split = load_crystals("mp20", TINY_CRYSTALS, ROOT / "runs" / "cache")
    frames = [packed.atoms(int(k)) for k in split["test"]]
    assert len(frames) >= 10
    pred = model.predict(frames)["formation_energy_per_atom"]
    truth = np.array([a.info["formation_energy_per_atom"] for a in frames])
    assert np.abs(pred - truth).mean() < 0.35, (pred, truth)  # validation MAE at the end of training: 0.124
    from atomarch.nn.decoders import DecodeOptions

    out = model.reconstruct(frames[:6], options=DecodeOptions(compositions=5, beams=20))
    assert all(b.pbc.all() and len(b) > 0 for b in out)
    assert np.mean([structure_valid(b) for b in out]) >= 5 / 6
    z = model.encode(frames[:3] + [make_supercell(a, np.diag([2, 1, 2])) for a in frames[:3]])
    assert np.abs(z[:3] - z[3:]).max() / np.abs(z[:3]).max() < 1e-4
    res = run_cli("sample", "--ckpt", str(MP20), "-n", "3", "--compositions", "5", "--beams", "20",
                  "--out", str(tmp_path / "gen.cif"))
    assert res.returncode == 0, res.stderr[-2000:]
    gen = read(tmp_path / "gen.cif", index=":")
    assert len(gen) == 3 and all(g.pbc.all() and structure_valid(g) for g in gen)
