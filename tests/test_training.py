"""Training: the loss falls, a killed run resumes at its step, DDP on 2 CPU processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from conftest import ROOT, run_cli

TINY = str(ROOT / "configs/tiny.yaml")


def _train_set_loss(model, dm) -> float:
    """Deterministic standardized L1 loss of ``model`` (the user-facing object) on the whole
    (fixed) training set, computed by the training task around its network."""
    from atomarch.models.task import AtomarchTask

    task = AtomarchTask(model.cfg.to_dict(), {}, model=model.net).eval()
    with torch.no_grad():
        losses = [task.losses(b, task(b))["property"] for b in dm._loader("train", shuffle=False)]
    return float(torch.stack(losses).mean())


def test_tiny_training_lowers_loss(tmp_path):
    import pytorch_lightning as pl

    import atomarch
    from atomarch.config import load_config
    from atomarch.data.datamodule import build_datamodule
    from atomarch.models.api import AtomarchModel
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


DDP_SCRIPT = """
import sys
import pytorch_lightning as pl
import torch
from atomarch.config import load_config
from atomarch.training import train

out = sys.argv[1]


class Record(pl.Callback):
    \"\"\"Per rank: the dataset ids of every training batch and the final weights.\"\"\"

    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen += batch.idx.tolist()

    def on_train_end(self, trainer, pl_module):
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save({"seen": self.seen, "state": state, "world": trainer.world_size}, f"{out}/rank{trainer.global_rank}.pt")


cfg = load_config(sys.argv[2], [f"train.out_dir={out}", "train.strategy=ddp", "train.devices=2", "train.accelerator=cpu",
                                 "train.max_steps=4", "train.max_epochs=1", "train.num_threads=1"])
train(cfg, resume=None, callbacks=[Record()])
"""


def test_ddp_two_cpu_processes(tmp_path):
    """Two DDP ranks on the CPU: each sees its own half of the training set (disjoint, together
    all 256 molecules in the 4 steps of one epoch) and both end with identical weights, equal to
    the checkpoint's."""
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    res = subprocess.run([sys.executable, str(script), str(tmp_path), TINY], cwd=ROOT, capture_output=True, text=True,
                         timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = torch.load(tmp_path / "tiny" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    seen = [set(r["seen"]) for r in ranks]
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 128 and all(len(s) == 128 for s in seen)
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 256  # different data, together the whole set
    for k, v in ranks[0]["state"].items():
        assert torch.equal(v, ranks[1]["state"][k]), k  # gradients were averaged: identical weights
        assert torch.equal(v, ckpt["state_dict"][k].cpu()), k


class _Killed(Exception):
    pass


class _KillAt(pl.Callback):
    """Stops a run like a kill just before step ``step`` (after that step's checkpoint was written)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise _Killed()


def _final(cfg, kill_at: int | None = None) -> dict:
    """The last checkpoint of ``cfg`` run uninterrupted, or killed at ``kill_at`` and resumed."""
    from atomarch.training import train

    if kill_at is not None:
        with pytest.raises(_Killed):
            train(cfg, resume=None, callbacks=[_KillAt(kill_at)])
        saved = torch.load(Path(cfg.train.out_dir) / cfg.name / "checkpoints" / "last.ckpt", weights_only=False)
        assert saved["global_step"] == kill_at
        run = train(cfg, resume="auto")
    else:
        run = train(cfg, resume=None)
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)


def _assert_same_training_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"]
    worst = max(((a["state_dict"][k] - b["state_dict"][k]).abs().max().item() for k in a["state_dict"]
                 if a["state_dict"][k].is_floating_point() and a["state_dict"][k].numel()), default=0.0)
    assert worst == 0.0, f"weights differ by up to {worst:.3g}"
    sa, sb = a["optimizer_states"][0], b["optimizer_states"][0]
    assert sa["param_groups"][0]["lr"] == sb["param_groups"][0]["lr"]
    for k, st in sa["state"].items():
        assert float(st["step"]) == float(sb["state"][k]["step"]) == a["global_step"], "optimiser state was reset"
        assert torch.equal(st["exp_avg"], sb["state"][k]["exp_avg"]) and torch.equal(st["exp_avg_sq"], sb["state"][k]["exp_avg_sq"])


@pytest.mark.parametrize("kill_at,every,extra", [
    (4, 4, []),                               # mid-epoch (8 batches per epoch)
    (8, 4, []),                               # at the epoch boundary
    (6, 3, ["data.size_balance=0.5"]),        # mid-epoch with the size-balanced weighted sampler
], ids=["mid-epoch", "epoch-end", "size-balance"])
def test_resume_is_exact(tmp_path, kill_at, every, extra):
    """Killed after ``kill_at`` steps and resumed, a run ends bit-identical (weights, Adam
    moments and step counts, learning rate) to the same run uninterrupted: optimiser, schedule,
    data order and RNG all continue where they stopped."""
    from atomarch.config import load_config

    # one thread: with two, a multi-threaded CPU reduction can sum in a timing-dependent order
    # (seen under load, 6e-8 apart); bit-identical resume is a property of the training loop
    base = [TINY, ["train.max_steps=12", "train.max_epochs=100", "train.log_every_n_steps=1", "train.num_threads=1",
                   *extra]]
    whole = _final(load_config(base[0], base[1] + [f"train.out_dir={tmp_path / 'a'}"]))
    resumed = _final(load_config(base[0], base[1] + [f"train.out_dir={tmp_path / 'b'}",
                                                     f"train.checkpoint_every_n_steps={every}"]), kill_at=kill_at)
    _assert_same_training_state(whole, resumed)


def test_vae_resume_is_exact(tmp_path, qm9):
    """The VAE draws a posterior sample every step (global RNG): resumed mid-epoch it still ends
    bit-identical. User files keep the set-up to seconds (no whole-QM9 skeleton targets)."""
    import ase.io

    from atomarch.config import load_config

    frames = [qm9.atoms(k) for k in range(200, 236)]
    for a in frames:
        a.info = {"gap": a.info["gap"]}
    path = tmp_path / "mols.extxyz"
    ase.io.write(path, frames)
    over = ["data.dataset=files", f"data.paths=[{path}]", f"data.cache_dir={tmp_path / 'cache'}", "data.properties=[gap]",
            "data.batch_size=8", "train.max_steps=6", "train.max_epochs=100", "model.decoder.gru_hidden=32",
            "train.num_threads=1"]  # see test_resume_is_exact
    whole = _final(load_config(ROOT / "configs/tiny_vae.yaml", over + [f"train.out_dir={tmp_path / 'a'}"]))
    resumed = _final(load_config(ROOT / "configs/tiny_vae.yaml", over + [f"train.out_dir={tmp_path / 'b'}",
                                                                         "train.checkpoint_every_n_steps=2"]), kill_at=2)
    _assert_same_training_state(whole, resumed)


def test_epoch_sampler_order_and_resume():
    from atomarch.training import EpochSampler

    s = EpochSampler(10, seed=3)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert sorted(e0) == sorted(e1) == list(range(10)) and e0 != e1  # a new permutation every epoch
    again = EpochSampler(10, seed=3)
    again.set_epoch(1)
    assert list(again) == e1  # a function of (seed, epoch) only
    again.resume_at(1, 4)
    assert list(again) == e1[4:] and list(again) == e1  # skips once, then whole epochs again
    w = EpochSampler(10, seed=3, weights=torch.tensor([0.0] * 9 + [1.0]), num_samples=5)
    assert list(w) == [9] * 5


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


def test_override_accepts_exponent_floats_and_names_bad_values():
    """YAML 1.1 reads ``3e-4`` (no dot) as a string: a float key still takes it; junk is refused by name."""
    from atomarch.config import ConfigError, config_from_dict

    cfg = config_from_dict({"train": {"lr": "3e-4", "min_lr": 1e-5}})
    assert cfg.train.lr == pytest.approx(3e-4)
    with pytest.raises(ConfigError, match="'train.lr' must be float"):
        config_from_dict({"train": {"lr": "fast"}})


def test_batch_readout_norm_is_calibrated_before_validation_and_checkpoints(tmp_path):
    """``readout_norm: batch``: before validation (and before checkpoints are written) the readout
    statistics are recomputed from training structures under the current weights, so a saved
    model evaluates with precise statistics, not a lagging running average."""
    from atomarch.config import load_config
    from atomarch.data.datamodule import build_datamodule
    from atomarch.models.loading import load_model
    from atomarch.training import calibrate_readout_norm, train

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "tiny_crystal_vae.yaml",
                      [f"data.root={root / 'tests' / 'data' / 'crystals'}", f"data.cache_dir={tmp_path / 'cache'}",
                       f"train.out_dir={tmp_path / 'runs'}", "train.max_epochs=2", "model.encoder.readout_norm=batch"])
    run = train(cfg)
    model = load_model(run / "checkpoints" / "best.ckpt")
    saved = model.net.encoder.readout.norm
    mean, var = saved.running_mean.clone(), saved.running_var.clone()
    dm = build_datamodule(cfg.data, elements=cfg.model.elements)
    dm.setup()
    assert calibrate_readout_norm(model.net, dm.dataset("train"), cfg.data.cutoff)
    assert torch.allclose(saved.running_mean, mean, atol=1e-5) and torch.allclose(saved.running_var, var, rtol=1e-4, atol=1e-7)


def test_export_recalibrates_batch_readout_statistics(tmp_path):
    """``atomarch export`` recomputes precise readout statistics (a checkpoint written by a run
    without them, or with stale ones, ships calibrated)."""
    from atomarch.config import load_config
    from atomarch.data.datamodule import build_datamodule
    from atomarch.models.loading import load_model
    from atomarch.training import calibrate_readout_norm, train

    from conftest import run_cli

    root = Path(__file__).resolve().parents[1]
    overrides = [f"data.root={root / 'tests' / 'data' / 'crystals'}", f"data.cache_dir={tmp_path / 'cache'}",
                 f"train.out_dir={tmp_path / 'runs'}", "train.max_epochs=1", "model.encoder.readout_norm=batch"]
    cfg = load_config(root / "configs" / "tiny_crystal_vae.yaml", overrides)
    run = train(cfg)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    key = next(k for k in ckpt["state_dict"] if k.endswith("readout.norm.running_mean"))
    ckpt["state_dict"][key] = torch.zeros_like(ckpt["state_dict"][key])  # stale statistics
    stale = tmp_path / "stale.ckpt"
    torch.save(ckpt, stale)
    res = run_cli("export", "--ckpt", str(stale), "--out", str(tmp_path / "exported.ckpt"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "statistics recomputed" in res.stdout
    model = load_model(tmp_path / "exported.ckpt")
    shipped = model.net.encoder.readout.norm.running_mean.clone()
    assert shipped.abs().max() > 0
    dm = build_datamodule(cfg.data, elements=cfg.model.elements)
    dm.setup()
    calibrate_readout_norm(model.net, dm.dataset("train"), cfg.data.cutoff)
    assert torch.allclose(model.net.encoder.readout.norm.running_mean, shipped, atol=1e-5)
