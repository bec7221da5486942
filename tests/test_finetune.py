"""Transfer learning: ``atomarch finetune`` puts a new property head on a pretrained encoder,
frozen, partly frozen or fine-tuned at its own learning rate, and resumes like ``train``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atomarch.config import ConfigError
from atomarch.models.loading import read_checkpoint
from atomarch.training import finetune_config

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "crystals"


def _task_yaml(tmp_path: Path, **train) -> Path:
    import yaml

    cfg = {"name": "gap_transfer",
           "data": {"dataset": "perov5", "root": str(DATA), "properties": ["dir_gap"], "cutoff": 4.0,
                    "batch_size": 8, "cache_dir": str(tmp_path / "cache")},
           "train": {"lr": 3e-3, "max_epochs": 1, "out_dir": str(tmp_path / "runs"), "progress_bar": False,
                     "log_every_n_steps": 1, **train}}
    path = tmp_path / "gap_transfer.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in read_checkpoint(path)["state_dict"].items()}


def test_finetune_frozen_encoder_trains_only_the_new_head(tiny_crystal_vae_run, tmp_path):
    source = tiny_crystal_vae_run / "checkpoints" / "last.ckpt"
    res = run_cli("finetune", "--from", str(source), "--config", str(_task_yaml(tmp_path)))
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "runs" / "gap_transfer"
    before, after = _weights(source), _weights(run / "checkpoints" / "last.ckpt")
    enc = [k for k in after if k.startswith("encoder.")]
    assert enc and all(torch.equal(before[k], after[k]) for k in enc)  # weights and batch-norm statistics
    assert "heads.heads.dir_gap.0.weight" in after and not any(".heat_ref." in k for k in after)
    assert not any(k.startswith("decoder.") for k in after)  # a property model on the latent mean
    # the new target statistics are the new data's, not the source's
    stats = read_checkpoint(run / "checkpoints" / "last.ckpt")["hyper_parameters"]["stats"]
    assert set(stats) == {"dir_gap"}
    # re-running resumes instead of starting again
    again = run_cli("finetune", "--from", str(source), "--config", str(_task_yaml(tmp_path)), "train.max_epochs=2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout + again.stderr


def test_finetune_partly_frozen_with_its_own_encoder_rate(tiny_crystal_vae_run, tmp_path):
    source = tiny_crystal_vae_run / "checkpoints" / "last.ckpt"
    res = run_cli("finetune", "--from", str(source), "--config", str(_task_yaml(tmp_path)),
                  "--freeze", "encoder.embed,encoder.layers.0", "--encoder-lr-scale", "0.1")
    assert res.returncode == 0, res.stderr[-3000:]
    before, after = _weights(source), _weights(tmp_path / "runs" / "gap_transfer" / "checkpoints" / "last.ckpt")
    fixed = [k for k in after if k.startswith(("encoder.embed.", "encoder.layers.0."))]
    moved = [k for k in after if k.startswith("encoder.layers.1.") and k.endswith("weight")]
    assert fixed and all(torch.equal(before[k], after[k]) for k in fixed)
    assert moved and any(not torch.equal(before[k], after[k]) for k in moved)


def test_finetune_config_takes_the_network_from_the_source_and_refuses_bad_prefixes(tiny_crystal_vae_run, tmp_path):
    source = tiny_crystal_vae_run / "checkpoints" / "last.ckpt"
    values = {"data": {"dataset": "perov5", "root": str(DATA), "properties": ["dir_gap"]}}
    cfg = finetune_config(source, values, freeze=["encoder"], encoder_lr_scale=0.5)
    src = read_checkpoint(source)["hyper_parameters"]["config"]["model"]
    assert cfg.model.encoder.irreps_hidden == src["encoder"]["irreps_hidden"]
    assert cfg.model.latent_dim == src["latent_dim"] and not cfg.model.decoder.enabled
    assert cfg.train.init_from == str(source) and cfg.train.freeze == ["encoder"] and cfg.train.encoder_lr_scale == 0.5
    res = run_cli("finetune", "--from", str(source), "--config", str(_task_yaml(tmp_path)), "--freeze", "encoder.nope")
    assert res.returncode != 0 and "train.freeze: no parameter is named 'encoder.nope'" in res.stderr
    with pytest.raises(ConfigError, match="differs from the pretrained model's"):
        finetune_config(source, {"data": {**values["data"], "cutoff": 6.0}})
    with pytest.raises(ConfigError, match="encoder_lr_scale"):
        finetune_config(source, values, encoder_lr_scale=-1.0)


def test_one_optimiser_group_unless_the_encoder_has_its_own_rate():
    """Runs without ``encoder_lr_scale`` keep one parameter group, so checkpoints (and compact
    states) written before fine-tuning existed still resume."""
    from atomarch.config import load_config
    from atomarch.models.task import AtomarchTask

    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    stats = {p: {"mean": 0.0, "std": 1.0} for p in cfg.data.properties}
    assert len(AtomarchTask(cfg.to_dict(), stats).configure_optimizers().param_groups) == 1
    cfg.train.encoder_lr_scale = 0.1
    groups = AtomarchTask(cfg.to_dict(), stats).configure_optimizers().param_groups
    assert [g["lr_scale"] for g in groups] == [1.0, 0.1]


def test_transfer_benchmark_compares_modes_on_equal_steps_and_validates_by_steps(tiny_crystal_vae_run, tmp_path):
    """benchmarks/transfer.py: scratch / frozen / fine-tuned runs get the same step count; with many
    one-batch epochs, validation runs every ``steps / val_checks`` steps, not every epoch."""
    import json
    import subprocess
    import sys

    import pandas as pd

    source = tiny_crystal_vae_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "transfer"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "transfer.py"), "--source", str(source),
                          "--config", str(_task_yaml(tmp_path)), "--sizes", "8", "--steps", "6", "--val-checks", "2",
                          "--runs", str(tmp_path / "runs"), "--out", str(out)], capture_output=True, text=True,
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["mode"] for r in rows] == ["scratch", "frozen", "finetuned"]
    assert all(r["n_train"] == 8 and r["test_mae"] > 0 for r in rows)
    assert out.with_suffix(".png").is_file() and "finetuned" in out.with_suffix(".txt").read_text()
    scratch = pd.read_csv(tmp_path / "runs" / "scratch_8" / "logs" / "metrics.csv")
    assert scratch["step"].max() >= 5                                      # 6 steps = 6 one-batch epochs
    assert scratch["val/loss"].notna().sum() == 2                          # validated twice, not six times
    frozen, before = _weights(tmp_path / "runs" / "frozen_8" / "checkpoints" / "last.ckpt"), _weights(source)
    assert all(torch.equal(before[k], frozen[k]) for k in frozen if k.startswith("encoder."))
    fresh = _weights(tmp_path / "runs" / "scratch_8" / "checkpoints" / "last.ckpt")
    key = next(k for k, v in before.items() if k.startswith("encoder.") and v.dim() == 2)
    assert not torch.equal(before[key], fresh[key])                        # scratch did not copy the encoder
