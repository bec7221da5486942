"""Pinned outputs of the shipped checkpoints: refactors must leave them identical.

For 20 fixed QM9 test-split molecules: ``checkpoints/qm9-property`` predictions, and
``checkpoints/qm9-vae`` latents, ``reconstruct(seed=0, conformers=2, beams=8)`` SMILES and
positions, and ``sample(5, seed=0, conformers=2, beams=8)`` SMILES.

Regenerate the pins (after a checkpoint is replaced on purpose, never to hide a change):

    python tests/test_pinned_outputs.py --update
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PINS = ROOT / "tests" / "data" / "pinned_outputs.json"
PROPERTY, VAE = ROOT / "checkpoints" / "qm9-property", ROOT / "checkpoints" / "qm9-vae"
N_MOLECULES = 20
DECODE = {"seed": 0, "conformers": 2, "beams": 8}


def _molecules():
    from atomarch.data.qm9 import load_qm9, qm9_split

    qm9 = load_qm9()
    return [qm9.atoms(int(k)) for k in qm9_split(qm9)["test"][:N_MOLECULES]]


def compute() -> dict:
    import warnings

    import atomarch

    frames = _molecules()
    out: dict = {"n": len(frames), "decode": DECODE}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prop = atomarch.load_model(PROPERTY)
        out["predict"] = {p: v.tolist() for p, v in prop.predict(frames).items()}
        vae = atomarch.load_model(VAE)
        out["vae_checkpoint_bytes"] = (VAE / "model.ckpt").stat().st_size
        out["encode"] = vae.encode(frames).tolist()
        rec = vae.reconstruct(frames, **DECODE)
        out["reconstruct_smiles"] = [a.info.get("smiles") for a in rec]
        out["reconstruct_numbers"] = [a.numbers.tolist() for a in rec]
        out["reconstruct_positions"] = [a.positions.tolist() for a in rec]
        out["sample_smiles"] = [a.info.get("smiles") for a in vae.sample(5, **DECODE)]
    return out


@pytest.fixture(scope="module")
def current():
    return compute()


@pytest.fixture(scope="module")
def pins():
    return json.loads(PINS.read_text())


pytestmark = pytest.mark.skipif(
    not (PINS.is_file() and (PROPERTY / "model.ckpt").is_file() and (VAE / "model.ckpt").is_file()),
    reason="no pins or no shipped checkpoints",
)


def test_pins_are_for_the_shipped_vae(pins):
    assert pins["vae_checkpoint_bytes"] == (VAE / "model.ckpt").stat().st_size, (
        "checkpoints/qm9-vae changed: regenerate with `python tests/test_pinned_outputs.py --update`")


def test_predict(current, pins):
    assert current["predict"].keys() == pins["predict"].keys()
    for p, v in pins["predict"].items():
        np.testing.assert_allclose(current["predict"][p], v, rtol=1e-5, atol=1e-5, err_msg=p)


def test_encode(current, pins):
    np.testing.assert_allclose(current["encode"], pins["encode"], rtol=1e-5, atol=1e-5)


def test_reconstruct(current, pins):
    assert current["reconstruct_smiles"] == pins["reconstruct_smiles"]
    assert current["reconstruct_numbers"] == pins["reconstruct_numbers"]
    for a, b in zip(current["reconstruct_positions"], pins["reconstruct_positions"]):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_sample(current, pins):
    assert current["sample_smiles"] == pins["sample_smiles"]


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_pinned_outputs.py --update")
    PINS.parent.mkdir(parents=True, exist_ok=True)
    PINS.write_text(json.dumps(compute(), indent=1) + "\n")
    print(f"wrote {PINS}")
