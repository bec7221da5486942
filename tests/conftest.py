"""Shared fixtures: real QM9 molecules, small models, a trained tiny checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def qm9():
    from atomarch.data.qm9 import load_qm9

    return load_qm9()


@pytest.fixture(scope="session")
def qm9_atoms(qm9):
    """24 real QM9 molecules of various sizes (ase.Atoms)."""
    idx = np.random.RandomState(1).choice(len(qm9), 24, replace=False)
    return [qm9.atoms(int(k)) for k in idx]


def random_rotation(rng: np.random.Generator, improper: bool = False) -> np.ndarray:
    """A random 3x3 rotation matrix (det -1 if ``improper``)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return -q if improper else q


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m atomarch.cli ARGS`` and capture its output."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "atomarch.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny model trained for a few steps; returns its run directory."""
    out = tmp_path_factory.mktemp("runs")
    res = run_cli("train", "--config", str(ROOT / "configs/tiny.yaml"), f"train.out_dir={out}", "train.max_epochs=1")
    assert res.returncode == 0, res.stderr[-3000:]
    return out / "tiny"


@pytest.fixture(scope="session")
def tiny_model(tiny_run):
    import atomarch

    return atomarch.load_model(tiny_run / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="session")
def tiny_vae_run(tmp_path_factory):
    """The tiny graph-decoder VAE trained for 400 steps on 64 QM9 molecules; its run directory."""
    out = tmp_path_factory.mktemp("vae-runs")
    res = run_cli("train", "--config", str(ROOT / "configs/tiny_vae.yaml"), f"train.out_dir={out}",
                  "data.batch_size=64", "train.max_steps=400", "train.max_epochs=100000", "train.checkpoint_every_n_steps=400")
    assert res.returncode == 0, res.stderr[-3000:]
    return out / "tiny_vae"


@pytest.fixture(scope="session")
def tiny_vae(tiny_vae_run):
    import atomarch

    return atomarch.load_model(tiny_vae_run / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="session")
def explorer_files(tiny_vae_run, tmp_path_factory):
    """The tiny VAE exported with its map projection, and its map table (parquet)."""
    from atomarch.latent.maps import build_map, fit_map
    from atomarch.models.loading import export_checkpoint, load_model

    src = tiny_vae_run / "checkpoints" / "last.ckpt"
    out = tmp_path_factory.mktemp("explorer")
    ckpt = export_checkpoint(src, out / "model.ckpt", projection=fit_map(load_model(src), progress=False))
    build_map(load_model(ckpt), progress=False, whole=False).to_parquet(out / "map.parquet", index=False)
    return ckpt, out / "map.parquet"


@pytest.fixture(scope="session")
def tiny_crystal_vae_run(tmp_path_factory):
    """The tiny crystal VAE (configs/tiny_crystal_vae.yaml, symmetry decoder) trained for 6 epochs
    on the 20-row Perov-5 copy in tests/data/crystals; its run directory. Its decodes are poor
    but periodic: enough for the explorer's crystal views."""
    out = tmp_path_factory.mktemp("crystal-vae-runs")
    res = run_cli("train", "--config", str(ROOT / "configs/tiny_crystal_vae.yaml"), f"train.out_dir={out}",
                  f"data.root={ROOT / 'tests' / 'data' / 'crystals'}", f"data.cache_dir={out / 'cache'}",
                  "train.max_epochs=6")
    assert res.returncode == 0, res.stderr[-3000:]
    return out / "tiny_crystal_vae"


@pytest.fixture(scope="session")
def crystal_explorer_files(tiny_crystal_vae_run, tmp_path_factory):
    """The tiny crystal VAE exported with its map projection and its map table, laid out as a
    checkpoint folder (``<folder>/model.ckpt`` and ``<folder>/map.parquet``, as under
    checkpoints/); returns (ckpt, map)."""
    from atomarch.latent.maps import build_map, fit_map
    from atomarch.models.loading import export_checkpoint, load_model

    src = tiny_crystal_vae_run / "checkpoints" / "last.ckpt"
    out = tmp_path_factory.mktemp("crystal-explorer") / "tiny-crystal-vae"
    out.mkdir()
    ckpt = export_checkpoint(src, out / "model.ckpt", projection=fit_map(load_model(src), progress=False))
    build_map(load_model(ckpt), progress=False, whole=False).to_parquet(out / "map.parquet", index=False)
    return ckpt, out / "map.parquet"
