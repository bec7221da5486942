"""The composition-only ElemNet-style encoder (``encoder.kind: elemnet``): invariant by
construction, sensitive to composition only, trainable through the same property model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

from atomarch.config import EncoderConfig
from atomarch.data.graph import batch_from_atoms
from atomarch.nn.composition import ElemNetEncoder, elemnet_widths
from atomarch.nn.encoders import build_encoder

from conftest import random_rotation, run_cli

ROOT = Path(__file__).resolve().parents[1]
ELEMENTS = [3, 8, 11, 17, 22, 38]


def _latent(enc, frames):
    with torch.no_grad():
        return enc(batch_from_atoms(frames, 4.0))[0].numpy()


def test_published_widths_and_registry():
    assert elemnet_widths(1024, 16) == [1024] * 4 + [512] * 3 + [256] * 3 + [128] * 3 + [64] * 2 + [32]
    enc = build_encoder(EncoderConfig(kind="elemnet", hidden=64, num_layers=6), 4.0, ELEMENTS, 8)
    assert isinstance(enc, ElemNetEncoder)


def test_latent_is_a_function_of_composition_only():
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(kind="elemnet", hidden=64, num_layers=6), 4.0, ELEMENTS, 8).eval()
    rng = np.random.default_rng(0)
    salt = bulk("NaCl", "rocksalt", a=5.64)
    R = random_rotation(rng)
    moved = Atoms(numbers=salt.numbers[::-1], positions=salt.positions[::-1] @ R.T + 1.3,
                  cell=salt.cell.array @ R.T, pbc=True)
    super_cell = salt.repeat((2, 2, 1))
    squeezed = salt.copy()
    squeezed.set_cell(salt.cell.array * 0.9, scale_atoms=True)
    lico = Atoms("LiCl", positions=[[0, 0, 0], [2.5, 2.5, 2.5]], cell=np.eye(3) * 5.1, pbc=True)
    z = _latent(enc, [salt, moved, super_cell, squeezed, lico])
    for k in (1, 2, 3):
        assert np.abs(z[k] - z[0]).max() < 1e-5 * max(1.0, np.abs(z[0]).max())
    assert np.abs(z[4] - z[0]).max() > 1e-3


def test_elemnet_property_model_trains_from_a_config(tmp_path):
    res = run_cli("train", "--config", str(ROOT / "configs" / "tiny.yaml"), "model.encoder.kind=elemnet",
                  "model.encoder.hidden=32", "model.encoder.num_layers=4", f"train.out_dir={tmp_path}",
                  "train.max_epochs=2", "model.decoder.enabled=false")
    assert res.returncode == 0, res.stderr[-3000:]
    assert list(tmp_path.glob("*/checkpoints/last.ckpt"))


def test_random_forest_baseline_trains_from_a_config(tmp_path):
    """``model.baseline: random_forest``: ``atomarch train`` fits it on Magpie descriptors and
    writes val/test MAEs that agree with its per-structure predictions; a bad name is refused."""
    import json

    import pandas as pd

    res = run_cli("train", "--config", str(ROOT / "configs" / "tiny_crystal_vae.yaml"), "model.baseline=random_forest",
                  "model.decoder.enabled=false", f"train.out_dir={tmp_path}", f"data.cache_dir={tmp_path / 'cache'}",
                  f"data.root={ROOT / 'tests' / 'data' / 'crystals'}", "name=rf")
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads((tmp_path / "rf" / "baseline.json").read_text())
    assert out["baseline"] == "random_forest" and set(out["mae"]) == {"heat_ref"}
    pred = pd.read_csv(tmp_path / "rf" / "baseline_predictions.csv")
    test = pred[pred["split"] == "test"]
    assert len(test) == out["n"]["test"]
    assert abs(out["mae"]["heat_ref"]["test"] - (test["pred"] - test["true"]).abs().mean()) < 1e-9
    bad = run_cli("train", "--config", str(ROOT / "configs" / "tiny_crystal_vae.yaml"), "model.baseline=svm")
    assert bad.returncode != 0 and "model.baseline must be" in bad.stderr
