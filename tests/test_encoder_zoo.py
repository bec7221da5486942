"""The encoder zoo: every registered encoder kind (e3nn, schnet, mpnn, cgcnn) gives a latent
invariant to rotations (proper and improper), translations and atom permutations, and, for a
crystal, to the choice of cell (another image of an atom, a rotated cell, a 2x2x1 supercell with
intensive pooling); it depends on the geometry; it plugs into a VAE through the registry and
trains (finite gradients everywhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from atomarch.config import EncoderConfig, config_from_dict
from atomarch.data.graph import batch_from_atoms
from atomarch.errors import ConfigError
from atomarch.nn.encoders import CGCNNEncoder, Encoder, MPNNEncoder, build_encoder
from atomarch.registry import ENCODERS

from conftest import random_rotation
from test_encoder import latent, transformed

ROOT = Path(__file__).resolve().parents[1]
KINDS = ["e3nn", "schnet", "mpnn", "cgcnn"]
ELEMENTS = [1, 6, 7, 8, 9]
SMALL = {"e3nn": {"irreps_hidden": "16x0e+8x1o", "lmax": 1}, "schnet": {"hidden": 32}, "mpnn": {"message_dim": 16},
         "cgcnn": {"hidden": 32}}
"""Small widths per kind: the properties tested do not depend on size."""


def make(kind: str, **kw) -> Encoder:
    torch.manual_seed(0)
    cfg = EncoderConfig(kind=kind, num_layers=2, **{**SMALL[kind], **kw})
    return build_encoder(cfg, 5.0, ELEMENTS, 16).eval()


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(a).max())


def test_registry_lists_the_zoo():
    assert set(KINDS) <= set(ENCODERS.names())
    assert ENCODERS.get("mpnn") is MPNNEncoder and ENCODERS.get("cgcnn") is CGCNNEncoder


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("improper", [False, True])
def test_molecule_latent_invariant(qm9_atoms, kind, improper):
    """Rotation (det ±1), translation and permutation of every molecule: same latent."""
    frames = qm9_atoms[:12]
    enc = make(kind)
    rng = np.random.default_rng(11)
    z0 = latent(enc, frames)
    z1 = latent(enc, transformed(frames, rng, improper))
    assert rel(z0, z1) < 1e-4, rel(z0, z1)


@pytest.mark.parametrize("kind", KINDS)
def test_latent_depends_on_geometry(qm9_atoms, kind):
    """Not a constant: moving one atom by 0.3 Å, or another molecule, changes the latent (by far
    more than the float32 noise of the invariance tests, ~1e-6)."""
    enc = make(kind)
    a = qm9_atoms[5].copy()
    b = a.copy()
    b.positions[0] += [0.3, 0.0, 0.0]
    z = latent(enc, [a, b, qm9_atoms[6]])
    assert rel(z[0], z[1]) > 5e-5, rel(z[0], z[1])
    assert rel(z[0], z[2]) > 1e-3, rel(z[0], z[2])


def _crystal(rng: np.random.Generator) -> Atoms:
    cell = np.array([[3.9, 0.0, 0.0], [0.3, 3.8, 0.0], [0.2, -0.4, 4.1]])
    return Atoms(numbers=[6, 8, 8, 7, 1], scaled_positions=rng.random((5, 3)), cell=cell, pbc=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_crystal_latent_invariant_to_cell_choice(kind, pooling):
    """Another image of an atom, rotated cell + positions, a permuted and shifted 2x2x1
    supercell: the same latent under intensive pooling (mean or attention)."""
    enc = make(kind, pooling=pooling)
    rng = np.random.default_rng(0)
    a = _crystal(rng)
    cell = a.cell[:]
    b = a.copy()
    b.positions[2] += cell[0] - 2 * cell[2]  # the same crystal, another image of atom 2
    R = random_rotation(rng, improper=True)
    c = Atoms(numbers=a.numbers, positions=a.positions @ R.T, cell=cell @ R.T, pbc=True)
    sup = a.repeat((2, 2, 1))
    d = sup[rng.permutation(len(sup))]
    d.positions += rng.normal(size=3) * 3.0
    d.wrap()
    z = latent(enc, [a, b, c, d])
    for k in (1, 2, 3):
        assert rel(z[0], z[k]) < 1e-4, (k, rel(z[0], z[k]))
    other = _crystal(np.random.default_rng(5))
    assert rel(z[0], latent(enc, [other])[0]) > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_sum_pooling_sees_the_supercell(kind):
    """Control for the test above: the extensive molecule readout changes with a supercell."""
    enc = make(kind, pooling="sum_mean")
    a = _crystal(np.random.default_rng(0))
    z = latent(enc, [a, a.repeat((2, 2, 1))])
    assert rel(z[0], z[1]) > 1e-3


@pytest.mark.parametrize("kind", ["mpnn", "cgcnn"])
def test_options_honoured(qm9_atoms, kind):
    """species_skip, logvar_init and readout_norm work as for SchNet; a one-structure training
    batch works (cgcnn's batch norms fall back to running statistics)."""
    enc = make(kind, species_skip=4, logvar_init=-4.0, readout_norm=True).train()
    assert enc.species_skip is not None and enc.readout.norm is not None
    mu, logvar = enc(batch_from_atoms(qm9_atoms[:4], 5.0))
    assert abs(float(logvar.detach().mean()) + 4.0) < 1.0
    (mu.sum() + logvar.sum()).backward()
    assert float(enc.species_skip.weight.grad.abs().sum()) > 0.0
    with torch.no_grad():
        one, _ = enc(batch_from_atoms(qm9_atoms[:1], 5.0))
        lone, _ = enc(batch_from_atoms([Atoms("O", positions=[[0, 0, 0]])], 5.0))  # no edges at all
    assert torch.isfinite(one).all() and torch.isfinite(lone).all()
    enc.eval()
    z = latent(enc, qm9_atoms[:6])
    assert rel(z[2], latent(enc, qm9_atoms[2:3])[0]) < 1e-5  # batch-independent at evaluation


def test_unknown_kind_names_the_known_ones():
    with pytest.raises(ConfigError, match="model.encoder.kind") as err:
        config_from_dict({"model": {"encoder": {"kind": "painn"}}})
    assert all(f"'{k}'" in str(err.value) for k in ENCODERS.names()) and "'painn'" in str(err.value)
    with pytest.raises(ValueError, match="mpnn, cgcnn"):
        ENCODERS.get("painn")
    with pytest.raises(ConfigError, match="'sum_mean', 'mean' or 'attention'"):
        config_from_dict({"model": {"encoder": {"pooling": "max"}}})


@pytest.fixture(scope="module")
def crystal_data(tmp_path_factory):
    """The tiny Perov-5 copy with the symmetry decoder's targets, and one training batch."""
    from atomarch.config import load_config
    from atomarch.data.datamodule import build_datamodule
    from atomarch.nn.decoders.symmetry import SymmetryDecoder

    pytest.importorskip("pyxtal")
    cfg = load_config(ROOT / "configs" / "tiny_crystal_vae.yaml")
    cfg.data.root = str(ROOT / "tests" / "data" / "crystals")
    cfg.data.cache_dir = str(tmp_path_factory.mktemp("zoo-cache"))
    dm = build_datamodule(cfg.data, elements=cfg.model.elements)
    dm.setup()
    vocab = SymmetryDecoder.attach_targets(dm, cfg.model)
    return cfg, dm, vocab, next(iter(dm._loader("train", shuffle=False)))


@pytest.mark.parametrize("kind", KINDS)
def test_kind_builds_a_vae_that_trains(crystal_data, kind):
    """``model.encoder.kind`` alone swaps the encoder of the tiny crystal VAE: a training step's
    forward+backward gives finite gradients that reach every encoder parameter."""
    from atomarch.models.task import AtomarchTask

    cfg, dm, vocab, batch = crystal_data
    values = cfg.to_dict()
    values["model"]["encoder"].update(kind=kind, **SMALL[kind])
    torch.manual_seed(0)
    task = AtomarchTask(values, dm.target_stats(), vocab)
    assert type(task.model.encoder) is ENCODERS.get(kind) and task.model.decoder is not None
    task.train()
    out = task(batch)
    losses = task.losses(batch, out, sample_z=True)
    assert {"global", "property", "kl"} <= set(losses)
    losses["loss"].backward()
    grads = {n: p.grad for n, p in task.model.encoder.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), \
        [n for n, g in grads.items() if g is None or not torch.isfinite(g).all()]
    assert all(float(g.abs().sum()) > 0 for n, g in grads.items() if not n.startswith("radial_basis")), \
        [n for n, g in grads.items() if float(g.abs().sum()) == 0]


@pytest.mark.parametrize("kind", ["mpnn", "cgcnn"])
def test_kind_builds_a_molecule_property_model(qm9_atoms, kind):
    """A QM9 property model (decoder off) with the new kinds: predictions and finite gradients."""
    from atomarch.models.net import AtomarchNet

    torch.manual_seed(0)
    cfg = {"data": {"dataset": "qm9", "properties": ["gap"]},
           "model": {"latent_dim": 16, "encoder": {"kind": kind, "num_layers": 2, "pooling": "attention",
                                                   **SMALL[kind]}}}
    net = AtomarchNet(cfg, {"gap": {"mean": 6.8, "std": 1.3}}).train()
    batch = batch_from_atoms(qm9_atoms[:8], net.cutoff, ["gap"])
    out = net(batch)
    assert out["pred"].shape == (8, 1)
    out["pred"].pow(2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.encoder.parameters())
