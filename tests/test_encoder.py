"""Invariance of the latent and equivariance of intermediate features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from e3nn import o3

from atomarch.config import EncoderConfig
from atomarch.data.graph import batch_from_atoms
from atomarch.nn.encoders import E3Encoder, build_encoder

from conftest import random_rotation

ELEMENTS = [1, 6, 7, 8, 9]


def make_encoder(kind: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = EncoderConfig(kind=kind, **kw)
    return build_encoder(cfg, 5.0, ELEMENTS, 32).eval()


def latent(enc, frames, cutoff=5.0):
    with torch.no_grad():
        return enc(batch_from_atoms(frames, cutoff))[0].numpy()


def transformed(frames, rng, improper=False, permute=True):
    out = []
    for a in frames:
        R = random_rotation(rng, improper)
        perm = rng.permutation(len(a)) if permute else np.arange(len(a))
        pos = a.positions @ R.T + rng.normal(size=3) * 5.0
        out.append(Atoms(numbers=a.numbers[perm], positions=pos[perm]))
    return out


@pytest.mark.parametrize("kind", ["e3nn", "schnet"])
@pytest.mark.parametrize("improper", [False, True])
@pytest.mark.parametrize("species_skip", [0, 8])
def test_latent_invariant_to_rotation_translation_permutation(qm9_atoms, kind, improper, species_skip):
    enc = make_encoder(kind, species_skip=species_skip)
    rng = np.random.default_rng(7)
    z0 = latent(enc, qm9_atoms)
    z1 = latent(enc, transformed(qm9_atoms, rng, improper))
    rel = np.abs(z1 - z0).max() / np.abs(z0).max()
    assert rel < 1e-4, rel
    # and the latent is not trivially constant
    assert np.abs(z0[0] - z0[1]).max() > 1e-3


def test_latent_depends_on_geometry(qm9_atoms):
    enc = make_encoder("e3nn")
    a = qm9_atoms[5].copy()
    b = a.copy()
    b.positions[0] += [0.3, 0.0, 0.0]
    z = latent(enc, [a, b])
    assert np.abs(z[0] - z[1]).max() > 1e-4


@pytest.mark.parametrize("improper", [False, True])
def test_intermediate_features_equivariant(qm9_atoms, improper):
    enc = make_encoder("e3nn", irreps_hidden="16x0e+8x1o+4x2e", lmax=2)
    assert isinstance(enc, E3Encoder)
    rng = np.random.default_rng(3)
    R = random_rotation(rng, improper)
    frames = qm9_atoms[:4]
    rotated = [Atoms(numbers=a.numbers, positions=a.positions @ R.T) for a in frames]
    with torch.no_grad():
        f0 = enc.node_features(batch_from_atoms(frames, 5.0))
        f1 = enc.node_features(batch_from_atoms(rotated, 5.0))
    Rt = torch.tensor(R, dtype=torch.float32)
    for layer, a, b in zip(enc.layers, f0, f1):
        irreps = layer.irreps_out
        assert any(ir.l == 1 for _, ir in irreps) and any(ir.l == 2 for _, ir in irreps)
        D = irreps.D_from_matrix(Rt)
        expected = a @ D.T
        assert torch.allclose(b, expected, atol=1e-4 * max(1.0, float(a.abs().max()))), float((b - expected).abs().max())
        # the l > 0 parts really rotate (not all zero)
        assert float(a[:, irreps.count("0e"):].abs().max()) > 1e-3


def test_periodic_latent_invariant_to_cell_choice():
    """A crystal's latent does not depend on which image of an atom is stored, or on rotation."""
    enc = make_encoder("e3nn")
    rng = np.random.default_rng(0)
    cell = np.array([[3.9, 0.0, 0.0], [0.3, 3.8, 0.0], [0.2, -0.4, 4.1]])
    frac = rng.random((5, 3))
    a = Atoms(numbers=[6, 8, 8, 7, 1], scaled_positions=frac, cell=cell, pbc=True)
    b = a.copy()
    b.positions[2] += cell[0] - 2 * cell[2]  # same crystal, another image of atom 2
    R = random_rotation(rng)
    c = Atoms(numbers=a.numbers, positions=a.positions @ R.T, cell=cell @ R.T, pbc=True)
    z = latent(enc, [a, b, c])
    assert np.abs(z[1] - z[0]).max() < 1e-4 * np.abs(z[0]).max()
    assert np.abs(z[2] - z[0]).max() < 1e-4 * np.abs(z[0]).max()


def test_unknown_atomic_number_rejected():
    enc = make_encoder("e3nn")
    from atomarch.errors import StructureError

    with pytest.raises(StructureError, match="not known"):
        latent(enc, [Atoms("CS", positions=[[0, 0, 0], [1.5, 0, 0]])])


def test_irreps_configurable():
    enc = make_encoder("e3nn", irreps_hidden="8x0e+4x1o", lmax=1, num_layers=1)
    assert str(enc.layers[0].irreps_out) == "8x0e+4x1o"
    assert o3.Irreps(enc.irreps_sh).lmax == 1


@pytest.mark.parametrize("kind", ["e3nn", "schnet"])
def test_species_skip_reaches_the_latent_and_keeps_supercell_invariance(kind):
    """With ``species_skip`` the readout sees an element embedding next to the interaction
    output: the latent still ignores the cell choice (primitive vs 2x2x1 supercell, mean pooling)
    and its extra parameters receive gradient."""
    enc = make_encoder(kind, species_skip=8, pooling="mean")
    assert enc.species_skip is not None and enc.species_skip.weight.shape == (len(ELEMENTS), 8)
    rng = np.random.default_rng(1)
    cell = np.array([[3.1, 0.0, 0.0], [0.4, 3.3, 0.0], [0.1, 0.2, 3.6]])
    a = Atoms(numbers=[6, 8, 7], scaled_positions=rng.random((3, 3)), cell=cell, pbc=True)
    z = latent(enc, [a, a.repeat((2, 2, 1))])
    assert np.abs(z[1] - z[0]).max() < 1e-4 * np.abs(z[0]).max()
    enc.train()
    mu, _ = enc(batch_from_atoms([a], 5.0))
    mu.sum().backward()
    assert float(enc.species_skip.weight.grad.abs().sum()) > 0.0


@pytest.mark.parametrize("kind", ["e3nn", "schnet"])
@pytest.mark.parametrize("mode", [True, "running"])
def test_readout_norm_keeps_invariance_and_batch_independence(qm9_atoms, kind, mode):
    """``readout_norm``: after a few training batches (running statistics), the evaluated latent is
    invariant and does not depend on which structures share its batch; a one-structure training
    batch works (running statistics)."""
    enc = make_encoder(kind, readout_norm=mode)
    enc.train()
    with torch.no_grad():
        for k in range(0, 12, 4):
            enc(batch_from_atoms(qm9_atoms[k:k + 4], 5.0))
        mu1, _ = enc(batch_from_atoms(qm9_atoms[:1], 5.0))  # one structure: no batch statistics
    assert torch.isfinite(mu1).all()
    enc.eval()
    rng = np.random.default_rng(5)
    z0 = latent(enc, qm9_atoms)
    z1 = latent(enc, transformed(qm9_atoms, rng))
    assert np.abs(z1 - z0).max() < 1e-4 * np.abs(z0).max()
    alone = latent(enc, qm9_atoms[3:4])
    assert np.abs(alone[0] - z0[3]).max() < 1e-5 * max(1.0, np.abs(z0).max())
    assert np.abs(z0[0] - z0[1]).max() > 1e-3


def test_readout_norm_spreads_crystal_latents():
    """The reason for ``readout_norm``: at initialisation, mean-pooled latents of different carbon
    crystals barely differ; batch-normalised, their spread is of order 0.1 and more."""
    rng = np.random.default_rng(2)
    frames = []
    for k in range(8):
        n = 4 + k % 3
        cell = np.diag([3.0 + 0.2 * k, 3.2, 3.4 + 0.1 * k])
        frames.append(Atoms(numbers=[6] * n, scaled_positions=rng.random((n, 3)), cell=cell, pbc=True))
    spread = {}
    for norm in (False, True):
        torch.manual_seed(0)
        enc = build_encoder(EncoderConfig(kind="e3nn", pooling="mean", readout_norm=norm), 4.0, ELEMENTS, 32).train()
        with torch.no_grad():
            mu, _ = enc(batch_from_atoms(frames, 4.0))
        spread[norm] = float(mu.std(0).mean())
    assert spread[True] > 5 * spread[False], spread


def test_running_readout_norm_trains_as_it_evaluates(qm9_atoms):
    """``readout_norm: running``: a training forward uses (and updates) the running statistics, so
    right after it the evaluated latent of the same batch is the same; ``batch`` differs."""
    for mode, same in (("running", True), ("batch", False)):
        enc = make_encoder("e3nn", readout_norm=mode)
        batch = batch_from_atoms(qm9_atoms[:6], 5.0)
        enc.train()
        with torch.no_grad():
            for _ in range(3):
                enc(batch)
            norm = enc.readout.norm
            if mode == "running":
                norm.momentum = 0.0  # freeze the statistics for the comparison
            train_mu, _ = enc(batch)
        enc.eval()
        with torch.no_grad():
            eval_mu, _ = enc(batch)
        assert torch.allclose(train_mu, eval_mu, atol=1e-5) == same, mode


def test_readout_norm_rejects_unknown_modes():
    from atomarch.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="readout_norm must be"):
        config_from_dict({"model": {"encoder": {"readout_norm": "layer"}}})
