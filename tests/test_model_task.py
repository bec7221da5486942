"""The model/task split and the decoder seam: checkpoint keys, registries, typed decode options."""

from __future__ import annotations

import ast

import pytest
import torch

from atomarch.config import load_config

from conftest import ROOT

STATS = {"gap": {"mean": 6.8, "std": 1.3}}


@pytest.fixture(scope="module")
def task():
    from atomarch.models.task import AtomarchTask

    cfg = load_config(ROOT / "configs/tiny_flow.yaml")
    return AtomarchTask(cfg.to_dict(), STATS)


def test_task_state_dict_has_the_networks_keys(task):
    """Training checkpoints keep the keys written before the split (``encoder.*``, ``heads.*``,
    ``decoder.*``, ``y_mean``, ``y_std``), in the network's order."""
    own = task.state_dict()
    assert list(own) == list(task.model.state_dict())
    assert not any(k.startswith("model.") for k in own)
    assert {"y_mean", "y_std"} <= set(own) and any(k.startswith("decoder.") for k in own)


def test_task_loads_keys_with_or_without_the_prefix(task):
    from atomarch.models.task import AtomarchTask

    plain = {k: v + 1 if v.is_floating_point() else v for k, v in task.state_dict().items()}
    other = AtomarchTask(task.hparams["config"], STATS)
    other.load_state_dict(plain)
    assert all(torch.equal(other.state_dict()[k], v) for k, v in plain.items())
    prefixed = {"model." + k: v - 1 if v.is_floating_point() else v for k, v in plain.items()}
    other.load_state_dict(prefixed)
    assert all(torch.equal(other.state_dict()[k], prefixed["model." + k]) for k in plain)
    with pytest.raises(RuntimeError):
        other.load_state_dict({"encoder.nonsense": torch.zeros(1)})


def test_user_object_wraps_the_network(task):
    from atomarch.models.api import AtomarchModel

    model = AtomarchModel(net=task.model)
    assert model.decoder is task.model.decoder and model.state_dict().keys() == task.state_dict().keys()
    assert not isinstance(model, torch.nn.Module)  # the user object is not the training module


def test_registries_drive_config_validation():
    from atomarch.config import validate
    from atomarch.errors import ConfigError
    from atomarch.nn.decoders import Decoder
    from atomarch.nn.encoders import Encoder
    from atomarch.registry import DECODERS, ENCODERS

    assert set(ENCODERS.names()) == {"e3nn", "schnet", "mpnn", "cgcnn", "elemnet"} and set(DECODERS.names()) == {"graph", "flow", "symmetry"}
    assert all(issubclass(DECODERS.get(n), Decoder) for n in DECODERS.names())
    assert all(issubclass(ENCODERS.get(n), Encoder) for n in ENCODERS.names())
    cfg = load_config(ROOT / "configs/tiny_flow.yaml")
    cfg.model.decoder.kind = "diffusion"
    with pytest.raises(ConfigError, match="'graph', 'flow' or 'symmetry'"):
        validate(cfg)


def test_decode_options_are_typed():
    from atomarch.nn.decoders import DecodeOptions

    opts = DecodeOptions(seed=3).merged(relax="none", beams=None)
    assert (opts.seed, opts.relax, opts.beams) == (3, "none", None)
    with pytest.raises(TypeError):
        opts.replace(temperature=1.0)


def test_decoder_families_do_not_import_each_other():
    folder = ROOT / "atomarch" / "nn" / "decoders"
    families = ("graph", "flow", "symmetry")
    for name in families:
        tree = ast.parse((folder / f"{name}.py").read_text())
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        for other in families:
            assert other == name or f"atomarch.nn.decoders.{other}" not in modules, (name, other)
