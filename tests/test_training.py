"""Training: the loss falls, a killed run resumes at its step, DDP on 2 CPU processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import torch

from conftest import ROOT, run_cli

TINY = str(ROOT / "configs/tiny.yaml")


def _train_set_loss(model, dm) -> float:
    """Deterministic standardized L1 loss of ``model`` on the whole (fixed) training set."""
    model.eval()
    with torch.no_grad():
        losses = [model._losses(b, model(b))["property"] for b in dm._loader("train", shuffle=False)]
    return float(torch.stack(losses).mean())


def test_tiny_training_lowers_loss(tmp_path):
    import pytorch_lightning as pl

    import atomarch
    from atomarch.config import load_config
    from atomarch.data.datamodule import build_datamodule
    from atomarch.models.module import AtomarchModel
    from atomarch.training import train

    # a fixed set of 64 molecules: a model that learns must fit it better than at the start
    cfg = load_config(TINY, [f"train.out_dir={tmp_path}", "data.train_subset=64", "train.max_epochs=60"])
    dm = build_datamodule(cfg.data)
    pl.seed_everything(cfg.train.seed, verbose=False)
    before = _train_set_loss(AtomarchModel(cfg.to_dict(), dm.target_stats()), dm)
    run = train(cfg, resume=None)
    after = _train_set_loss(atomarch.load_model(run / "checkpoints" / "last.ckpt"), dm)
    assert after < 0.8 * before, (before, after)
    from atomarch.training import read_metrics

    m = read_metrics(run)
    assert m["step"].max() >= 110
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["atomarch_version"] and ckpt["hyper_parameters"]["stats"]["gap"]["std"] > 0
    assert ckpt["atomarch_config"]["name"] == "tiny"


def test_killed_run_resumes_from_last_checkpoint(tmp_path):
    args = [sys.executable, "-m", "atomarch.cli", "train", "--config", TINY, f"train.out_dir={tmp_path}",
            "train.max_steps=60", "train.max_epochs=100", "train.checkpoint_every_n_steps=5"]
    last = tmp_path / "tiny" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    step = 0
    while time.time() < deadline and proc.poll() is None:
        if last.is_file():
            time.sleep(0.5)
            try:
                step = torch.load(last, weights_only=False)["global_step"]
            except Exception:
                continue
            if step >= 10:
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(last, weights_only=False)["global_step"]
    assert 10 <= saved < 60, saved
    res = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming from" in res.stdout
    assert torch.load(last, weights_only=False)["global_step"] == 60
    first = pd.read_csv(tmp_path / "tiny" / "logs" / "metrics.csv")
    second = pd.read_csv(tmp_path / "tiny" / "logs-2" / "metrics.csv")
    # the killed session's log survives, and the resumed one continues from the saved step
    assert first["step"].min() <= 2 and len(first) > 0
    assert second["step"].min() >= saved - 2 and second["step"].max() >= 55
    # --fresh keeps the old checkpoints aside instead of overwriting or resuming them
    res = subprocess.run(args[:6] + [f"train.out_dir={tmp_path}", "train.max_steps=2", "--fresh"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    backups = list((tmp_path / "tiny").glob("checkpoints.bak-*"))
    assert len(backups) == 1 and (backups[0] / "last.ckpt").is_file()
    assert torch.load(last, weights_only=False)["global_step"] == 2


def test_ddp_two_cpu_processes(tmp_path):
    res = run_cli("train", "--config", TINY, f"train.out_dir={tmp_path}", "train.strategy=ddp", "train.devices=2",
                  "train.accelerator=cpu", "train.max_steps=4", "train.max_epochs=1", timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = torch.load(tmp_path / "tiny" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    assert "world_size: 2" in res.stderr or "MEMBER: 2/2" in res.stderr or "2 processes" in res.stderr


def test_train_on_user_files(tmp_path, qm9):
    """A user's own extxyz file (properties in the comment line) trains through the same path."""
    import ase.io

    from atomarch.config import load_config
    from atomarch.training import train

    frames = [qm9.atoms(k) for k in range(100, 140)]
    for a in frames:
        a.info = {"gap": a.info["gap"]}
    path = tmp_path / "mine.extxyz"
    ase.io.write(path, frames)
    cfg = load_config(TINY, [f"train.out_dir={tmp_path}", "data.dataset=files", f"data.paths=[{path}]",
                             f"data.cache_dir={tmp_path / 'cache'}", "data.properties=[gap]", "train.max_epochs=1"])
    run = train(cfg, resume=None)
    import atomarch

    model = atomarch.load_model(run / "checkpoints" / "last.ckpt")
    pred = model.predict(frames[:3])["gap"]
    assert pred.shape == (3,) and np.isfinite(pred).all()
    split = next((tmp_path / "cache").glob("files-split-*.json"))
    assert split.is_file()
