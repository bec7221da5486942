"""Conventional composition baselines (``model.baseline: random_forest | kernel_ridge``).

The source review's point that "deep learning is not a cure-all" needs a conventional model to
compare with: scikit-learn on matminer's Magpie composition descriptors (132 statistics of
elemental properties; the element data ships inside matminer, so nothing is downloaded). A config
with ``model.baseline`` set makes ``atomarch train`` fit it on the training split, for every
property of ``data.properties``, and report the validation and test MAE (physical units) in
``runs/<name>/baseline.json`` and per-structure predictions in ``runs/<name>/baseline_predictions.csv``.
It is a comparison tool, not a checkpoint: nothing is pickled (the project loads no pickles).

* ``random_forest``: 300 trees (``RandomForestRegressor``, seed ``train.seed``, all threads of
  ``train.num_threads``), on the raw descriptors (missing element data → the training mean);
* ``kernel_ridge``: RBF kernel ridge on standardised descriptors, ``alpha`` and ``gamma`` chosen by
  3-fold cross-validation on the training split over a small grid.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

BASELINES = ("none", "random_forest", "kernel_ridge")


def composition_descriptors(frames) -> np.ndarray:
    """Magpie composition descriptors [n, 132] of structures (NaN where matminer has no data)."""
    from atomarch.metrics.crystals import composition_fingerprint

    rows = [composition_fingerprint(a) for a in frames]
    return np.stack([r if r is not None else np.full(132, np.nan) for r in rows]) if rows else np.zeros((0, 132))


def _estimator(kind: str, seed: int, threads: int):
    if kind == "random_forest":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(n_estimators=300, random_state=seed, n_jobs=max(1, threads))
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    grid = {"kernelridge__alpha": [1e-3, 1e-2, 1e-1], "kernelridge__gamma": [1e-3, 3e-3, 1e-2]}
    return GridSearchCV(make_pipeline(StandardScaler(), KernelRidge(kernel="rbf")), grid, cv=3,
                        scoring="neg_mean_absolute_error")


def train_baseline(cfg, directory: Path) -> Path:
    """Fit ``cfg.model.baseline`` on the training split of ``cfg.data`` and write its metrics;
    returns ``directory``."""
    import pandas as pd

    from atomarch.data.datamodule import build_datamodule

    dm = build_datamodule(cfg.data, elements=cfg.model.elements)
    dm.setup()
    packed = dm.packed
    X = {s: composition_descriptors([packed.atoms(int(k)) for k in dm.split[s]]) for s in ("train", "val", "test")}
    fill = np.nanmean(X["train"], axis=0)
    fill = np.where(np.isfinite(fill), fill, 0.0)
    X = {s: np.where(np.isnan(x), fill, x) for s, x in X.items()}
    cols = packed.property_columns(cfg.data.properties)
    result: dict[str, Any] = {"baseline": cfg.model.baseline, "descriptors": "matminer Magpie (132)",
                              "dataset": cfg.data.dataset, "n": {s: int(len(v)) for s, v in dm.split.items()},
                              "mae": {}, "seconds": {}}
    preds = []
    for prop, col in zip(cfg.data.properties, cols):
        y = {s: packed.y[dm.split[s]][:, col].numpy().astype(float) for s in X}
        ok = np.isfinite(y["train"])
        t0 = time.perf_counter()
        model = _estimator(cfg.model.baseline, cfg.train.seed, cfg.train.num_threads or 1)
        model.fit(X["train"][ok], y["train"][ok])
        result["seconds"][prop] = time.perf_counter() - t0
        result["mae"][prop] = {}
        for s in ("val", "test"):
            if not len(y[s]):
                continue
            p = model.predict(X[s])
            fin = np.isfinite(y[s])
            result["mae"][prop][s] = float(np.abs(p[fin] - y[s][fin]).mean()) if fin.any() else None
            preds.append(pd.DataFrame({"split": s, "index": dm.split[s], "property": prop, "true": y[s], "pred": p}))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "baseline.json").write_text(json.dumps(result, indent=2))
    if preds:
        pd.concat(preds, ignore_index=True).to_csv(directory / "baseline_predictions.csv", index=False)
    for prop, maes in result["mae"].items():
        print(f"[atomarch] {cfg.model.baseline} on {prop}: " + ", ".join(f"{s} MAE {v:.4g}" for s, v in maes.items() if v is not None),
              flush=True)
    return directory
