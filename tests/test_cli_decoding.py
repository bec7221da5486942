"""The decoding commands (``sample``, ``reconstruct``, ``interpolate``), ``evaluate`` on a VAE,
``train --resume PATH`` and ``train.init_from``, ``export --half`` / ``--no-map`` — through the
command line, with the written files read back and compared with the Python API.

Assertions are on the files and exit codes, not on the printed wording.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.io import read

from atomarch.cli import main

from conftest import ROOT

TINY = str(ROOT / "configs/tiny.yaml")


def call(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_error(code, err, *fragments):
    assert code == 2, err
    lines = [l for l in err.strip().splitlines() if l.strip() and not l.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.fixture(scope="module")
def vae_ckpt(tiny_vae_run):
    return str(tiny_vae_run / "checkpoints" / "last.ckpt")


def _same_structures(written, frames, atol=1e-5):
    assert len(written) == len(frames)
    for w, f in zip(written, frames):
        assert w.get_chemical_formula() == f.get_chemical_formula()
        np.testing.assert_allclose(w.positions, f.positions, atol=atol)
        assert w.info.get("smiles") == f.info.get("smiles")


# ----------------------------------------------------------------------------- sample
def test_sample_writes_the_api_samples(vae_ckpt, tiny_vae, tmp_path, capsys):
    out = tmp_path / "s.extxyz"
    code, _, err = call(capsys, "sample", "--ckpt", vae_ckpt, "-n", 3, "--seed", 5, "--out", out)
    assert code == 0, err
    _same_structures(read(out, ":"), tiny_vae.sample(3, seed=5))
    # another seed: other molecules (the seed reaches the prior draw)
    code, _, err = call(capsys, "sample", "--ckpt", vae_ckpt, "-n", 3, "--seed", 6, "--out", tmp_path / "s6.extxyz")
    assert code == 0, err
    other = read(tmp_path / "s6.extxyz", ":")
    assert [a.info.get("smiles") for a in other] != [a.info.get("smiles") for a in read(out, ":")]
    # an SDF in a new sub-folder: one record per sample, titled by its SMILES
    code, _, err = call(capsys, "sample", "--ckpt", vae_ckpt, "-n", 2, "--seed", 5, "--out", tmp_path / "new" / "s.sdf")
    assert code == 0, err
    from rdkit import Chem

    mols = [m for m in Chem.SDMolSupplier(str(tmp_path / "new" / "s.sdf"), removeHs=False)]
    first = tiny_vae.sample(2, seed=5)
    assert [m.GetNumAtoms() for m in mols] == [len(a) for a in first]
    assert [m.GetProp("_Name") for m in mols] == [a.info["smiles"] for a in first]


def test_sample_bad_input(vae_ckpt, tiny_run, tmp_path, capsys):
    code, _, err = call(capsys, "sample", "--ckpt", vae_ckpt, "-n", 0, "--out", tmp_path / "a.xyz")
    assert_error(code, err, "at least 1")
    code, _, err = call(capsys, "sample", "--ckpt", vae_ckpt, "-n", 1, "--out", tmp_path / "a.unknownformat")
    assert_error(code, err, "cannot write structures", "a.unknownformat")
    (tmp_path / "file").write_text("x")
    code, _, err = call(capsys, "sample", "--ckpt", vae_ckpt, "-n", 1, "--out", tmp_path / "file" / "a.xyz")
    assert_error(code, err, "cannot create the folder")
    code, _, err = call(capsys, "sample", "--ckpt", tiny_run / "checkpoints" / "last.ckpt", "-n", 1, "--out", tmp_path / "b.xyz")
    assert_error(code, err, "no decoder")
    code, _, err = call(capsys, "sample", "--ckpt", tmp_path / "missing.ckpt", "-n", 1, "--out", tmp_path / "c.xyz")
    assert_error(code, err, "checkpoint not found")
    assert not any((tmp_path / n).exists() for n in ("a.xyz", "a.unknownformat", "b.xyz", "c.xyz"))


# ------------------------------------------------------------------------- reconstruct
def test_reconstruct_writes_the_api_reconstructions(vae_ckpt, tiny_vae, qm9, tmp_path, capsys):
    import ase.io

    frames = [qm9.atoms(k) for k in (5, 40, 77)]
    src = tmp_path / "in.extxyz"
    ase.io.write(src, frames)
    out = tmp_path / "rec.extxyz"
    code, _, err = call(capsys, "reconstruct", "--ckpt", vae_ckpt, src, "CCO", "--seed", 2, "--out", out)
    assert code == 0, err
    from atomarch.data.structures import load_inputs

    inputs = load_inputs([str(src), "CCO"])
    _same_structures(read(out, ":"), tiny_vae.reconstruct(inputs, seed=2))
    # the seed reaches the detail level: another seed, other coordinates of the same graphs
    code, _, err = call(capsys, "reconstruct", "--ckpt", vae_ckpt, src, "--seed", 3, "--out", tmp_path / "rec3.extxyz")
    assert code == 0, err
    a, b = read(out, ":")[:3], read(tmp_path / "rec3.extxyz", ":")
    assert [x.info["smiles"] for x in a] == [x.info["smiles"] for x in b]
    assert any(not np.allclose(x.positions, y.positions, atol=1e-3) for x, y in zip(a, b) if len(x) > 1)


def test_reconstruct_bad_input(vae_ckpt, tmp_path, capsys):
    code, _, err = call(capsys, "reconstruct", "--ckpt", vae_ckpt, tmp_path / "missing.xyz", "--out", tmp_path / "r.xyz")
    assert_error(code, err, "file not found")
    code, _, err = call(capsys, "reconstruct", "--ckpt", vae_ckpt, "C1CC(", "--out", tmp_path / "r.xyz")
    assert_error(code, err, "neither an existing file nor a valid SMILES")
    (tmp_path / "si.xyz").write_text("2\nx\nSi 0 0 0\nSi 0 0 2.3\n")
    code, _, err = call(capsys, "reconstruct", "--ckpt", vae_ckpt, tmp_path / "si.xyz", "--out", tmp_path / "r.xyz")
    assert_error(code, err, "element Si")
    code, _, err = call(capsys, "reconstruct", "--ckpt", vae_ckpt, "CCO", "--out", tmp_path / "r.nope")
    assert_error(code, err, "cannot write structures")
    assert not (tmp_path / "r.xyz").exists() and not (tmp_path / "r.nope").exists()


# ------------------------------------------------------------------------- interpolate
def test_interpolate_writes_the_api_path(vae_ckpt, tiny_vae, tmp_path, capsys):
    from atomarch.data.structures import load_inputs

    out = tmp_path / "path.extxyz"
    code, _, err = call(capsys, "interpolate", "--ckpt", vae_ckpt, "CCO", "CC(=O)O", "--steps", 5, "--method", "linear",
                        "--seed", 1, "--out", out)
    assert code == 0, err
    a, b = load_inputs(["CCO", "CC(=O)O"])
    want = tiny_vae.interpolate(a, b, steps=5, method="linear", seed=1)
    written = read(out, ":")
    _same_structures(written, want)
    assert [w.info["path_t"] for w in written] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    slerp = tmp_path / "slerp.extxyz"
    assert call(capsys, "interpolate", "--ckpt", vae_ckpt, "CCO", "CC(=O)O", "--steps", 5, "--seed", 1, "--out", slerp)[0] == 0
    _same_structures(read(slerp, ":"), tiny_vae.interpolate(a, b, steps=5, method="slerp", seed=1))


def test_interpolate_bad_input(vae_ckpt, tmp_path, capsys):
    code, _, err = call(capsys, "interpolate", "--ckpt", vae_ckpt, "CCO", "CCN", "--steps", 1, "--out", tmp_path / "p.xyz")
    assert_error(code, err, "at least 2 steps")
    code, _, err = call(capsys, "interpolate", "--ckpt", vae_ckpt, "CCO", "", "--out", tmp_path / "p.xyz")
    assert_error(code, err, "empty")
    code, _, err = call(capsys, "interpolate", "--ckpt", vae_ckpt, "CCO", tmp_path / "none.xyz", "--out", tmp_path / "p.xyz")
    assert_error(code, err, "file not found")
    with pytest.raises(SystemExit):  # argparse: an unknown method is a usage error
        main(["interpolate", "--ckpt", vae_ckpt, "CCO", "CCN", "--method", "cubic", "--out", str(tmp_path / "p.xyz")])
    assert not (tmp_path / "p.xyz").exists()


# ---------------------------------------------------------------------------- evaluate
def test_evaluate_vae_checkpoint(vae_ckpt, tiny_vae, tmp_path, capsys):
    """evaluate on a VAE: property MAE in physical units (checked against an independent
    computation from the split's structures and true values) + reconstruction and generation."""
    out = tmp_path / "eval.json"
    code, _, err = call(capsys, "evaluate", "--ckpt", vae_ckpt, "--split", "test", "-n", 4, "--out", out)
    assert code == 0, err
    res = json.loads(out.read_text())
    assert out.with_suffix(".txt").is_file()
    dm = tiny_vae.datamodule()
    idx = dm.split["test"]
    frames = [dm.packed.atoms(int(k)) for k in idx]
    true = np.array([a.info["gap"] for a in frames])
    mae = float(np.abs(tiny_vae.predict(frames)["gap"] - true).mean())
    props = res["properties"]
    assert props["n"] == len(idx) == 32 and props["units"]["gap"] == "eV"
    assert props["mae"]["gap"] == pytest.approx(mae, rel=1e-4)
    assert res["reconstruction"]["n"] == 4 and 0.0 <= res["reconstruction"]["smiles_match"] <= 1.0
    assert res["generation"]["n"] == 4 and 0.0 <= res["generation"]["validity"] <= 1.0
    assert res["data_reference"]["n"] == 4


def test_property_mae_is_in_physical_units(tiny_model):
    """The reported MAE is in eV: equal to |predict - true| on the split (an MAE of standardized
    values would differ by the factor std(gap) ≈ 1.3 eV)."""
    from atomarch.evaluation import property_mae

    dm = tiny_model.datamodule()
    frames = [dm.packed.atoms(int(k)) for k in dm.split["val"]]
    pred = tiny_model.predict(frames)
    got = property_mae(tiny_model, dm, "val", progress=False)
    for p in ("gap", "homo"):
        true = np.array([a.info[p] for a in frames])
        assert got["mae"][p] == pytest.approx(float(np.abs(pred[p] - true).mean()), rel=1e-4), p
    assert abs(float(tiny_model.y_std[0]) - 1.0) > 0.1  # the check can tell the two units apart


# ------------------------------------------------------------------- --resume, init_from
def test_train_resume_from_path_and_init_from(tiny_run, tmp_path, capsys):
    src = tiny_run / "checkpoints" / "last.ckpt"
    first = torch.load(src, weights_only=False)
    # --resume PATH continues that checkpoint's run (its step, optimiser state) in a new run directory
    code, out, err = call(capsys, "train", "--config", TINY, f"train.out_dir={tmp_path / 'r'}", "train.max_epochs=2",
                          "--resume", src)
    assert code == 0, err
    assert f"resuming from {src}" in out
    resumed = torch.load(tmp_path / "r" / "tiny" / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 2 * first["global_step"]
    k = next(iter(resumed["optimizer_states"][0]["state"]))
    assert float(resumed["optimizer_states"][0]["state"][k]["step"]) == resumed["global_step"]  # Adam state carried on
    # an exported checkpoint cannot be resumed; a missing one is named
    code, _, err = call(capsys, "export", "--ckpt", src, "--out", tmp_path / "small.ckpt", "--no-map")
    assert code == 0, err
    code, _, err = call(capsys, "train", "--config", TINY, f"train.out_dir={tmp_path / 'x'}", "--resume", tmp_path / "small.ckpt")
    assert_error(code, err, "exported inference checkpoint")
    code, _, err = call(capsys, "train", "--config", TINY, f"train.out_dir={tmp_path / 'x'}", "--resume", tmp_path / "none.ckpt")
    assert_error(code, err, "checkpoint not found")
    # train.init_from copies the weights: with lr 0 they stay exactly the source's
    code, out, err = call(capsys, "train", "--config", TINY, f"train.out_dir={tmp_path / 'w'}", f"train.init_from={src}",
                          "train.lr=0.0", "train.min_lr=0.0", "train.max_steps=2", "train.max_epochs=1")
    assert code == 0, err
    assert "warm start" in out
    warm = torch.load(tmp_path / "w" / "tiny" / "checkpoints" / "last.ckpt", weights_only=False)
    assert warm["global_step"] == 2
    for name, v in first["state_dict"].items():
        assert torch.equal(warm["state_dict"][name], v), name
    code, _, err = call(capsys, "train", "--config", TINY, f"train.out_dir={tmp_path / 'y'}",
                        f"train.init_from={tmp_path / 'none.ckpt'}")
    assert_error(code, err, "checkpoint not found")


# ---------------------------------------------------------------------------- export
def test_export_half_and_no_map(vae_ckpt, tiny_vae, tmp_path, capsys):
    import atomarch
    from atomarch.errors import CheckpointError

    full, half, nomap = tmp_path / "full.ckpt", tmp_path / "half.ckpt", tmp_path / "nomap.ckpt"
    assert call(capsys, "export", "--ckpt", vae_ckpt, "--out", full)[0] == 0
    code, out, err = call(capsys, "export", "--ckpt", vae_ckpt, "--out", half, "--half")
    assert code == 0, err
    code, out, err = call(capsys, "export", "--ckpt", vae_ckpt, "--out", nomap, "--no-map")
    assert code == 0, err
    raw = {p.name: torch.load(p, weights_only=False) for p in (full, half, nomap)}
    assert all("optimizer_states" not in c for c in raw.values())
    floats = [v for v in raw["half.ckpt"]["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert half.stat().st_size < 0.65 * full.stat().st_size
    assert "atomarch_projection" in raw["full.ckpt"] and "atomarch_projection" not in raw["nomap.ckpt"]
    from ase.build import molecule

    mols = [molecule("CH3CH2OH"), molecule("CH3COOH")]
    m_full, m_half, m_nomap = (atomarch.load_model(p) for p in (full, half, nomap))
    z = tiny_vae.encode(mols)
    np.testing.assert_array_equal(m_full.encode(mols), z)
    np.testing.assert_array_equal(m_nomap.encode(mols), z)
    np.testing.assert_allclose(m_half.encode(mols), z, atol=2e-2)
    assert not np.array_equal(m_half.encode(mols), z)  # really rounded to float16
    np.testing.assert_allclose(m_half.project(z), m_full.project(z), atol=1e-5)  # the map is kept in full precision
    with pytest.raises(CheckpointError, match="no map projection"):
        m_nomap.project(z)
    code, _, err = call(capsys, "export", "--ckpt", tmp_path / "missing.ckpt", "--out", tmp_path / "o.ckpt")
    assert_error(code, err, "checkpoint not found")
