"""Checkpoints and dataset caches load with ``weights_only=True``: a file carrying a pickled
object that would run code is refused with one clean error line, and the code never runs."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
import torch

import atomarch
from atomarch._version import __version__
from atomarch.cli import main
from atomarch.errors import CheckpointError, ReadError

from conftest import ROOT


class Payload:
    """Unpickling this runs ``exec``, which writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').write('ran')",)


def hostile_checkpoint(tmp_path: Path, ckpt: str | None = None) -> tuple[Path, Path]:
    """An otherwise valid atomarch checkpoint with a code-running object inside."""
    marker = tmp_path / "pwned"
    data = torch.load(ckpt, weights_only=True) if ckpt else {"state_dict": {}, "atomarch_version": __version__}
    data["hyper_parameters"] = dict(data.get("hyper_parameters", {}), extra=Payload(marker))
    path = tmp_path / "hostile.ckpt"
    torch.save(data, path)
    return path, marker


def one_error_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture()
def ckpt(tiny_run):
    return str(tiny_run / "checkpoints" / "last.ckpt")


def test_shipped_and_training_checkpoints_are_plain_data(ckpt):
    for name in ("qm9-property", "qm9-property-schnet", "qm9-vae"):
        data = torch.load(ROOT / "checkpoints" / name / "model.ckpt", weights_only=True)
        assert data["state_dict"] and data["atomarch_version"]
    # Lightning's training checkpoint (optimiser, scheduler, loops, callbacks) too: resumable
    data = torch.load(ckpt, weights_only=True)
    assert {"optimizer_states", "lr_schedulers", "loops", "callbacks"} <= set(data)


def test_hostile_checkpoint_refused_without_running_code(tmp_path, capsys, ckpt):
    path, marker = hostile_checkpoint(tmp_path, ckpt)
    m = tmp_path / "m.xyz"
    m.write_text("3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    for argv in (["predict", "--ckpt", str(path), str(m)],
                 ["encode", "--ckpt", str(path), str(m), "--out", str(tmp_path / "z.npy")],
                 ["export", "--ckpt", str(path), "--out", str(tmp_path / "x.ckpt"), "--no-map"],
                 ["train", "--config", str(ROOT / "configs/tiny.yaml"), f"train.out_dir={tmp_path / 'runs'}",
                  "--resume", str(path)]):
        line = one_error_line(capsys, argv)
        assert "hostile.ckpt" in line and "pickled Python object" in line and "exec" in line, line
    with pytest.raises(CheckpointError, match="refused"):
        atomarch.load_model(path)
    assert not marker.exists()
    # the payload is real: an unrestricted unpickler would have run it
    torch.load(path, weights_only=False)
    assert marker.read_text() == "ran"


def test_export_stores_numpy_projection_as_plain_values(tmp_path, ckpt, qm9_atoms):
    from atomarch.models.loading import export_checkpoint, load_model

    rng = np.random.default_rng(0)
    projection = {"mean": rng.normal(size=16), "axes": rng.normal(size=(2, 16)), "explained": np.array([0.4, 0.2]),
                  "n_fit": np.int64(64)}
    out = export_checkpoint(ckpt, tmp_path / "m.ckpt", projection=projection)
    data = torch.load(out, weights_only=True)
    assert isinstance(data["atomarch_projection"]["mean"], list) and data["atomarch_projection"]["n_fit"] == 64
    model = load_model(out)
    z = model.encode(qm9_atoms[:3])
    want = (z - projection["mean"]) @ projection["axes"].T
    np.testing.assert_allclose(model.project(z), want, rtol=1e-5, atol=1e-5)


def test_convert_legacy_checkpoint(tmp_path, ckpt, qm9_atoms):
    from atomarch.models.loading import convert_checkpoint, load_model

    legacy = torch.load(ckpt, weights_only=True)
    legacy["atomarch_projection"] = {"mean": np.zeros(16), "axes": np.eye(2, 16), "explained": np.array([0.5, 0.1]),
                                     "n_fit": 10}
    torch.save(legacy, tmp_path / "legacy.ckpt")  # numpy arrays: not loadable with weights_only=True
    with pytest.raises(CheckpointError, match=r"legacy.ckpt holds a pickled Python object .*numpy"):
        load_model(tmp_path / "legacy.ckpt")
    out = convert_checkpoint(tmp_path / "legacy.ckpt", tmp_path / "converted.ckpt")
    a, b = load_model(out), load_model(ckpt)
    np.testing.assert_array_equal(a.encode(qm9_atoms[:4]), b.encode(qm9_atoms[:4]))
    assert a.projection["axes"] == np.eye(2, 16).tolist()


def test_dataset_cache_is_safe(tmp_path, qm9_atoms):
    from atomarch.data.datasets import PackedStructures

    packed = PackedStructures.from_atoms(qm9_atoms[:5], ["gap"])
    packed.text = ["C"] * 5
    packed.save(tmp_path / "cache.pt")
    back = PackedStructures.load(tmp_path / "cache.pt")
    assert torch.equal(back.pos, packed.pos) and back.text == packed.text and back.properties == ["gap"]

    marker = tmp_path / "pwned"
    torch.save(dict(packed.__dict__, text=[Payload(marker)]), tmp_path / "hostile.pt")
    with pytest.raises(ReadError, match=r"dataset cache .*hostile.pt holds a pickled Python object .*delete it"):
        PackedStructures.load(tmp_path / "hostile.pt")
    assert not marker.exists()
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ReadError, match=r"corrupt.pt is corrupt .*rebuild"):
        PackedStructures.load(tmp_path / "corrupt.pt")
    torch.save({"z": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ReadError, match=r"other.pt does not hold a packed dataset"):
        PackedStructures.load(tmp_path / "other.pt")


def test_hostile_qm9_cache_through_the_cli(tmp_path, capsys, ckpt, monkeypatch):
    """A hostile file in the cache folder: `evaluate` answers with one line naming the file."""
    from atomarch.data.qm9 import cache_key

    cache = tmp_path / "cache"
    cache.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"z": Payload(marker)}, cache / f"qm9-{cache_key()}.pt")
    data = torch.load(ckpt, weights_only=True)
    for cfg in (data["hyper_parameters"]["config"], data["atomarch_config"]):
        cfg["data"]["cache_dir"] = str(cache)
    torch.save(data, tmp_path / "m.ckpt")
    line = one_error_line(capsys, ["evaluate", "--ckpt", str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "e.json")])
    assert f"qm9-{cache_key()}.pt" in line and "delete it" in line, line
    assert not marker.exists()
