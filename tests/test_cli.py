"""The CLI: happy paths on a tiny checkpoint, and one-line errors with exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.build import molecule

from atomarch.cli import main
from atomarch.data.structures import read_structures

from conftest import ROOT, run_cli


def call(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_error(code, err, *fragments):
    assert code == 2
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.fixture()
def ckpt(tiny_run):
    return str(tiny_run / "checkpoints" / "last.ckpt")


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _column(table, prop: str) -> str:
    """The predict CSV's column of ``prop`` (``gap [eV]``, or plain ``gap``)."""
    return next(c for c in table.columns if c == prop or c.startswith(f"{prop} ["))


def test_encode_predict_evaluate(ckpt, tmp_path, capsys, qm9_atoms):
    import ase.io

    path = str(tmp_path / "mols.xyz")
    ase.io.write(path, qm9_atoms[:5])
    code, out, _ = call(capsys, "encode", "--ckpt", ckpt, path, "CCO", "--out", str(tmp_path / "z.npy"))
    assert code == 0
    z = np.load(tmp_path / "z.npy")
    import atomarch
    from atomarch.data.structures import load_inputs

    model = atomarch.load_model(ckpt)
    inputs = load_inputs([path, "CCO"])
    assert z.shape == (6, 16) and z.dtype == np.float32
    np.testing.assert_array_equal(z, model.encode(inputs))  # the file holds the API's latents, in order
    code, out, _ = call(capsys, "predict", "--ckpt", ckpt, path, "--out", str(tmp_path / "p.csv"))
    assert code == 0 and "gap" in out and "homo" in out
    import pandas as pd

    table = pd.read_csv(tmp_path / "p.csv")
    pred = model.predict(qm9_atoms[:5])
    assert len(table) == 5
    assert list(table["formula"]) == [a.get_chemical_formula() for a in qm9_atoms[:5]]
    for p in ("gap", "homo"):
        np.testing.assert_allclose(table[_column(table, p)], pred[p], rtol=1e-5, atol=1e-5)
    code, out, _ = call(capsys, "evaluate", "--ckpt", ckpt, "--split", "test", "--out", str(tmp_path / "e.json"))
    assert code == 0 and "gap" in out
    res = json.loads((tmp_path / "e.json").read_text())
    props = res["properties"]
    assert props["n"] == 64 and props["mae"]["gap"] > 0 and props["units"]["gap"] == "eV"
    assert "reconstruction" not in res  # a property-only checkpoint


def test_python_api_matches_cli(tiny_model, tiny_run, qm9_atoms, tmp_path, capsys):
    """The CLI writes exactly what the Python API returns (predict in a separate process)."""
    import ase.io
    import pandas as pd

    path = tmp_path / "three.extxyz"
    ase.io.write(path, qm9_atoms[:3])
    ckpt = str(tiny_run / "checkpoints" / "last.ckpt")
    code, _, err = call(capsys, "encode", "--ckpt", ckpt, str(path), "--out", str(tmp_path / "z.npy"))
    assert code == 0, err
    res = run_cli("predict", "--ckpt", ckpt, str(path), "--out", str(tmp_path / "p.csv"))
    assert res.returncode == 0, res.stderr[-2000:]
    z = tiny_model.encode(qm9_atoms[:3])
    p = tiny_model.predict(qm9_atoms[:3])
    np.testing.assert_allclose(np.load(tmp_path / "z.npy"), z, atol=1e-6)
    table = pd.read_csv(tmp_path / "p.csv")
    assert set(p) == {"gap", "homo"} and p["gap"].shape == (3,)
    for name in ("gap", "homo"):
        np.testing.assert_allclose(table[_column(table, name)], p[name], rtol=1e-5, atol=1e-5)
    # gap predictions are in eV: near the QM9 range, not standardized units
    assert 2.0 < float(np.mean(p["gap"])) < 12.0


def test_bad_inputs(ckpt, tmp_path, capsys):
    cases = [
        (["missing.xyz"], "file not found"),
        ([write(tmp_path, "bad.xyz", "3\nx\nC 0 0\n")], "cannot read"),
        ([write(tmp_path, "empty.xyz", "0\nempty\n")], "is empty"),
        ([write(tmp_path, "nan.xyz", "2\nx\nC 0 0 0\nO nan 0 0\n")], "non-finite"),
        ([write(tmp_path, "s.xyz", "2\nx\nC 0 0 0\nS 1.8 0 0\n")], "element S"),
        ([write(tmp_path, "close.xyz", "2\nx\nC 0 0 0\nO 0.05 0 0\n")], "overlapping atoms 0 and 1"),
        (["not-a-smiles-((("], "neither an existing file nor a valid SMILES"),
    ]
    for inputs, fragment in cases:
        code, _, err = call(capsys, "predict", "--ckpt", ckpt, *inputs)
        assert_error(code, err, fragment)
    # the unknown-element message lists what the model supports
    code, _, err = call(capsys, "encode", "--ckpt", ckpt, str(tmp_path / "s.xyz"), "--out", str(tmp_path / "z.npy"))
    assert_error(code, err, "supported: H, C, N, O, F", "s.xyz")


def test_bad_checkpoints(tmp_path, capsys, ckpt):
    m = str(tmp_path / "m.xyz")
    molecule("H2O").write(m)
    code, _, err = call(capsys, "predict", "--ckpt", str(tmp_path / "nope.ckpt"), m)
    assert_error(code, err, "checkpoint not found")
    (tmp_path / "junk.ckpt").write_bytes(b"\x00garbage" * 100)
    code, _, err = call(capsys, "predict", "--ckpt", str(tmp_path / "junk.ckpt"), m)
    assert_error(code, err, "corrupt")
    data = torch.load(ckpt, weights_only=False)
    data["atomarch_version"] = "9.9.0"
    torch.save(data, tmp_path / "future.ckpt")
    code, _, err = call(capsys, "predict", "--ckpt", str(tmp_path / "future.ckpt"), m)
    assert_error(code, err, "atomarch 9.9.0")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    code, _, err = call(capsys, "predict", "--ckpt", str(tmp_path / "other.ckpt"), m)
    assert_error(code, err, "not an atomarch checkpoint")


def test_bad_configs(tmp_path, capsys):
    tiny, tiny_vae = str(ROOT / "configs/tiny.yaml"), str(ROOT / "configs/tiny_vae.yaml")
    cases = [
        ([write(tmp_path, "c.yaml", "data:\n  datset: qm9\n")], ("unknown config key 'data.datset'", "dataset")),
        ([tiny, "train.max_epoch=3"], ("'train.max_epoch'",)),
        ([str(tmp_path / "none.yaml")], ("config file not found",)),
        ([tiny, "data.properties=[gapp]"], ("unknown QM9 property 'gapp'",)),
        ([tiny, "data.cutoff=abc"], ("'data.cutoff' must be float",)),
        ([tiny, "data.batch_size=2.5"], ("'data.batch_size' must be int",)),
        ([tiny, "model.elements=[H,Xx]"], ("unknown element symbol 'Xx'",)),
        ([tiny, "model.encoder.irreps_hidden=16x9q"], ("invalid model configuration",)),
        ([tiny_vae, "model.elements=[C,O]"], ("hydrogen",)),
    ]
    for (config, *overrides), fragments in cases:
        code, _, err = call(capsys, "train", "--config", config, *overrides)
        assert_error(code, err, *fragments)


def test_smiles_inputs_and_bad_smiles_one_line(ckpt, tmp_path):
    res = run_cli("predict", "--ckpt", ckpt, "F/C=C/F", "CCO.O")
    assert res.returncode == 0, res.stderr
    res = run_cli("predict", "--ckpt", ckpt, "C1CC(")
    assert res.returncode == 2
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert lines == ["error: 'C1CC(' is neither an existing file nor a valid SMILES string"], res.stderr
    res = run_cli("predict", "--ckpt", ckpt, str(tmp_path / "missing.extxyz"))
    assert res.returncode == 2 and "file not found" in res.stderr


def test_subprocess_exit_status_and_debug(tmp_path):
    res = run_cli("predict", "--ckpt", str(tmp_path / "missing.ckpt"), "C")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: checkpoint not found") and "Traceback" not in res.stderr
    res = run_cli("predict", "--ckpt", str(tmp_path / "missing.ckpt"), "C", "--debug")
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_read_structures_error_names_file(tmp_path):
    from atomarch.errors import ReadError

    with pytest.raises(ReadError, match="garbage.cif"):
        read_structures(write(tmp_path, "garbage.cif", "data_x\n_cell_length_a foo\n"))


def test_export_small_checkpoint(ckpt, tmp_path, capsys, qm9_atoms):
    import atomarch

    code, out, _ = call(capsys, "export", "--ckpt", ckpt, "--out", str(tmp_path / "m.ckpt"))
    assert code == 0
    small = torch.load(tmp_path / "m.ckpt", weights_only=False)
    assert "optimizer_states" not in small and small["atomarch_version"]
    a = atomarch.load_model(tmp_path / "m.ckpt").encode(qm9_atoms[:2])
    b = atomarch.load_model(ckpt).encode(qm9_atoms[:2])
    np.testing.assert_array_equal(a, b)
    # a directory holding model.ckpt loads too
    (tmp_path / "d").mkdir()
    (tmp_path / "m.ckpt").rename(tmp_path / "d" / "model.ckpt")
    assert atomarch.load_model(tmp_path / "d").encode(qm9_atoms[:1]).shape == (1, 16)


@pytest.mark.parametrize("verb", ["evaluate", "reconstruct", "sample", "decode", "interpolate"])
def test_decode_search_options_reach_the_decoder(verb):
    """--beams and --compositions of every decoding verb become the DecodeOptions it decodes with
    (unset: None, i.e. the checkpoint's own settings)."""
    from atomarch.cli import _decode_options, build_parser

    parser = build_parser()
    needs = {"evaluate": [], "reconstruct": ["x.cif", "--out", "y.cif"], "sample": ["--out", "y.cif"],
             "decode": ["z.npy", "--out", "y.cif"], "interpolate": ["a.cif", "b.cif", "--out", "y.cif"]}[verb]
    args = parser.parse_args([verb, "--ckpt", "c", *needs, "--compositions", "20", "--beams", "8"])
    opts = _decode_options(args)
    assert (opts.compositions, opts.beams) == (20, 8)
    default = _decode_options(parser.parse_args([verb, "--ckpt", "c", *needs]))
    assert default.compositions is None and default.beams is None
