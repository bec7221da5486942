"""Latent design tools: optimisation, the oracle, the map projection and their CLI."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
from ase.build import molecule

from atomarch.errors import AtomarchError
from atomarch.latent.optimize import parse_objective
from atomarch.latent.projection import apply_projection, fit_pca

from conftest import run_cli


@pytest.fixture(scope="module")
def starts(tiny_vae):
    dm = tiny_vae.datamodule()
    return [dm.packed.atoms(int(k)) for k in dm.split["test"][:4]]


def _fraction_non_decreasing(values: np.ndarray) -> float:
    steps = np.diff(values, axis=1)
    return float((steps >= -1e-6).mean())


@pytest.mark.parametrize("direction", ["max", "min"])
def test_gradient_optimisation_moves_the_head(tiny_vae, starts, direction):
    traj = tiny_vae.optimize(starts, {"gap": direction}, steps=40, lr=0.05, prior_weight=0.01, decode_every=10)
    pred = traj.predicted["gap"] * (1 if direction == "max" else -1)
    assert traj.latents.shape == (4, 5, tiny_vae.cfg.model.latent_dim) and traj.steps == [0, 10, 20, 30, 40]
    assert (pred[:, -1] > pred[:, 0]).all(), pred
    assert _fraction_non_decreasing(pred) >= 0.8, pred
    assert traj.valid.shape == (4, 5) and traj.valid.dtype == bool
    assert all(len(row) == 5 for row in traj.structures)


def test_prior_penalty_keeps_latents_bounded(tiny_vae, starts):
    z0 = np.zeros((2, tiny_vae.cfg.model.latent_dim), np.float32)
    free = tiny_vae.optimize(z0, "gap:max", steps=150, lr=0.1, prior_weight=0.0, decode_every=150)
    held = tiny_vae.optimize(z0, "gap:max", steps=150, lr=0.1, prior_weight=1.0, decode_every=150)
    n_free = np.linalg.norm(free.latents[:, -1], axis=-1)
    n_held = np.linalg.norm(held.latents[:, -1], axis=-1)
    assert (n_held < n_free).all(), (n_held, n_free)
    assert (n_held < 0.5 * np.sqrt(tiny_vae.cfg.model.latent_dim)).all(), n_held  # stays in the prior's bulk


def test_target_mode_and_random_search(tiny_vae, starts):
    target = float(np.median(tiny_vae.predict(starts)["gap"]))
    traj = tiny_vae.optimize(starts, {"gap": ("target", target)}, steps=30, prior_weight=0.0, decode_every=30)
    err = np.abs(traj.predicted["gap"] - target)
    assert (err[:, -1] <= err[:, 0] + 1e-6).all() and err[:, -1].mean() < err[:, 0].mean()
    rnd = tiny_vae.optimize(starts, "gap:max", steps=15, method="random", population=8, sigma=0.2, prior_weight=0.0,
                            decode_every=5, seed=1)
    assert (np.diff(rnd.predicted["gap"], axis=1) >= -1e-5).all()  # elitist: never worse
    assert (rnd.predicted["gap"][:, -1] > rnd.predicted["gap"][:, 0]).all()


def test_random_search_on_decoded_structures(tiny_vae, starts):
    """A callable objective (here: number of atoms) is optimised on the decoded molecules."""
    traj = tiny_vae.optimize(starts[:2], lambda frames: [len(a) for a in frames], steps=4, method="random",
                             population=6, sigma=0.5, decode_every=1, seed=0, prior_weight=0.0)  # pure elitism
    sizes = np.array([[len(a) for a in row] for row in traj.structures])
    assert (np.diff(sizes, axis=1) >= 0).all(), sizes
    with pytest.raises(AtomarchError, match="method='random'"):
        tiny_vae.optimize(starts, lambda f: [0] * len(f), steps=1)


def test_objective_errors(tiny_vae):
    with pytest.raises(AtomarchError, match="no property head 'homo'"):
        parse_objective({"homo": "max"}, ["gap"])
    with pytest.raises(AtomarchError, match="max, min or target"):
        parse_objective({"gap": "up"}, ["gap"])
    with pytest.raises(AtomarchError, match="'abc' is not a number"):
        parse_objective("gap:target=abc", ["gap"])
    terms = parse_objective("gap:target=7.5*2", ["gap"])
    assert (terms[0].mode, terms[0].target, terms[0].weight) == ("target", 7.5, 2.0)


def test_trajectory_files(tiny_vae, starts, tmp_path):
    traj = tiny_vae.optimize(starts[:2], "gap:max", steps=4, decode_every=2)
    xyz, csv = traj.write(tmp_path)
    table = pd.read_csv(csv)
    assert len(table) == 2 * 3 and {"start", "step", "valid", "smiles", "pred_gap"} <= set(table.columns)
    from ase.io import read

    frames = read(xyz, ":")
    assert len(frames) == sum(len(a) > 0 for row in traj.structures for a in row)
    assert "pred_gap" in frames[0].info


@pytest.mark.skipif(importlib.util.find_spec("tblite") is None, reason="tblite not installed")
def test_xtb_oracle_reference_gaps(tmp_path):
    from atomarch.chem.oracles import XTBOracle

    # GFN2-xTB HOMO-LUMO gaps (eV) of ASE's reference geometries, computed once with tblite 0.8.0
    reference = {"H2O": 14.177, "CH4": 16.976, "C6H6": 4.821}
    oracle = XTBOracle(cache=tmp_path / "xtb.json")
    mols = [molecule(name) for name in reference]
    got = oracle(mols)
    np.testing.assert_allclose(got["xtb_gap"], list(reference.values()), atol=0.2)
    assert (got["xtb_energy"] < 0).all()
    oracle.save()
    again = XTBOracle(cache=tmp_path / "xtb.json")  # cached by structure hash
    assert len(again._cache) == 3
    np.testing.assert_array_equal(again(mols)["xtb_gap"], got["xtb_gap"])


def _reference_pca(x: np.ndarray, dims: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, axes [dims, d] (unit, sign-free) and explained-variance fractions from an
    eigendecomposition of the covariance matrix — independent of fit_pca's SVD."""
    x = np.asarray(x, np.float64)
    mean = x.mean(0)
    w, v = np.linalg.eigh(np.cov(x - mean, rowvar=False))
    order = np.argsort(w)[::-1][:dims]
    return mean, v[:, order].T, w[order] / w.sum()


def _assert_pca_matches(projection: dict, x: np.ndarray, atol: float = 1e-6) -> None:
    mean, axes, explained = _reference_pca(x)
    got = np.asarray(projection["axes"])
    np.testing.assert_allclose(projection["mean"], mean, atol=atol)
    np.testing.assert_allclose(np.abs((got * axes).sum(1)), 1.0, atol=1e-4)  # the same axes up to sign
    np.testing.assert_allclose(projection["explained"], explained, rtol=1e-4)
    xy = apply_projection(projection, x)
    ref = (x - mean) @ axes.T
    np.testing.assert_allclose(np.abs(xy), np.abs(ref), atol=1e-3 * max(1.0, np.abs(ref).max()))


def test_pca_projection_matches_an_independent_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)) @ np.diag(np.arange(1, 9)) @ np.linalg.qr(rng.normal(size=(8, 8)))[0]
    a = fit_pca(x)
    _assert_pca_matches(a, x)
    assert a["n_fit"] == 200 and a["explained"][0] > a["explained"][1]
    # deterministic, also in the signs: the row order of the training latents does not matter
    b = fit_pca(x[rng.permutation(200)])
    np.testing.assert_allclose(b["axes"], a["axes"], atol=1e-10)
    np.testing.assert_allclose(apply_projection(b, x), apply_projection(a, x), atol=1e-5)
    for axis in np.asarray(a["axes"]):
        assert axis[np.abs(axis).argmax()] > 0
    with pytest.raises(ValueError, match="at least 3"):
        fit_pca(x[:2])


def test_validity_flags_invalid_structures():
    """The validity check behind optimize's ``traj.valid`` and the explorer's flags says no to
    structures whose perceived bonds do not sanitize (pentavalent carbon), empty ones, and yes to
    real molecules, with their SMILES."""
    from ase import Atoms

    from apps.explorer.service import validity as explorer_validity
    from atomarch.latent.optimize import validity

    ch5 = Atoms("CH5", positions=[[0, 0, 0], [1.09, 0, 0], [-1.09, 0, 0], [0, 1.09, 0], [0, -1.09, 0], [0, 0, 1.09]])
    frames = [molecule("CH3CH2OH"), ch5, Atoms(), molecule("C6H6")]
    assert explorer_validity is validity  # one check, shared by optimize and the explorer
    for check in (validity,):
        valid, smiles = check(frames)
        assert valid.tolist() == [True, False, False, True], check
        assert smiles[0] == "CCO" and smiles[1] is None and smiles[2] is None and smiles[3]


def test_optimize_validity_flags_are_the_decoded_structures(tiny_vae, starts):
    """``traj.valid`` is the validity check of the recorded structures themselves."""
    from atomarch.latent.optimize import validity

    traj = tiny_vae.optimize(starts[:2], "gap:max", steps=2, decode_every=1)
    flat = [a for row in traj.structures for a in row]
    valid, _ = validity(flat)
    np.testing.assert_array_equal(traj.valid.reshape(-1), valid)
    assert valid.any()


def test_export_stores_the_map_and_map_cli(tiny_vae_run, tmp_path):
    import atomarch

    ckpt = tmp_path / "model.ckpt"
    res = run_cli("export", "--ckpt", str(tiny_vae_run / "checkpoints" / "last.ckpt"), "--out", str(ckpt))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "map: PCA of 64 training latents" in res.stdout
    model = atomarch.load_model(ckpt)
    # the stored map is the PCA of the 64 training latents, checked against an independent PCA
    dm = model.datamodule()
    train_z = model.encode([dm.packed.atoms(int(k)) for k in dm.split["train"]])
    assert model.projection["n_fit"] == len(train_z) == 64
    _assert_pca_matches(model.projection, train_z, atol=1e-5)
    z = model.encode([molecule("CH3CH2OH")])
    mean, axes, _ = _reference_pca(train_z)
    np.testing.assert_allclose(np.abs(model.project(z)), np.abs((z - mean) @ axes.T), atol=1e-3)
    out = tmp_path / "map.parquet"
    res = run_cli("map", "--ckpt", str(ckpt), "--out", str(out), "--model-subsets")
    assert res.returncode == 0, res.stderr[-2000:]
    table = pd.read_parquet(out)
    assert len(table) == 64 + 32 + 32
    assert {"id", "split", "x", "y", "smiles", "formula", "gap", "pred_gap"} <= set(table.columns)
    assert set(table["split"]) == {"train", "val", "test"}
    row = table[table["split"] == "test"].iloc[0]
    dm = model.datamodule()
    k = int(row["index"])
    np.testing.assert_allclose([row["x"], row["y"]], model.project(model.encode([dm.packed.atoms(k)]))[0], atol=1e-4)
    bad = run_cli("map", "--ckpt", str(ckpt), "--out", str(tmp_path / "map.txt"))
    assert bad.returncode == 2 and "parquet or .csv" in bad.stderr


def test_optimize_cli(tiny_vae_run, tmp_path):
    args = ["optimize", "--ckpt", str(tiny_vae_run / "checkpoints" / "last.ckpt"), "--start", "CCO", "CC(=O)C",
            "--objective", "gap:max", "--steps", "6", "--decode-every", "3", "--out", str(tmp_path / "opt")]
    if importlib.util.find_spec("tblite") is None:
        args += ["--oracle", "none"]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "objective: gap:max" in res.stdout and "(best)" in res.stdout
    assert (tmp_path / "opt" / "trajectory.csv").is_file()
    bad = run_cli("optimize", "--ckpt", str(tiny_vae_run / "checkpoints" / "last.ckpt"), "--start", "CCO",
                  "--objective", "homo:max", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "no property head 'homo'" in bad.stderr
