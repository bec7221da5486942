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
