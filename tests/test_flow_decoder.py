"""The experimental flow decoder (decoder.kind: flow): determinism, equivariance, pairing, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from atomarch.config import load_config
from atomarch.data.graph import batch_from_atoms
from atomarch.models.api import AtomarchModel
from atomarch.nn.decoders.flow import constrained_h_counts, h_parents
from atomarch.nn.flows import ot_pair

from conftest import ROOT, random_rotation

STATS = {"gap": {"mean": 6.8, "std": 1.3}}


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs/tiny_flow.yaml", ["model.decoder.coarse_steps=6", "model.decoder.fine_steps=3"])
    model = AtomarchModel(cfg.to_dict(), STATS).eval()
    with torch.no_grad():  # the flows start as the identity; give them a non-trivial output layer
        for net in (model.decoder.coarse, model.decoder.fine):
            net.out.weight.normal_(0.0, 0.01)
    return model


def test_decode_deterministic_per_seed(vae):
    z = np.random.default_rng(0).normal(size=(3, vae.cfg.model.latent_dim)).astype(np.float32)
    a = vae.decode(z, seed=1)
    b = vae.decode(z, seed=1)
    c = vae.decode(z, seed=2)
    assert len(a) == 3
    for x, y in zip(a, b):
        assert (x.numbers == y.numbers).all() and np.array_equal(x.positions, y.positions)
    assert any(not np.allclose(x.positions, y.positions) for x, y in zip(a, c) if len(x) == len(y))
    for atoms in a:
        np.testing.assert_allclose(atoms.get_center_of_mass(), 0.0, atol=1e-5)
        assert "gap" in atoms.info and np.isfinite(atoms.info["gap"])
        assert (atoms.numbers != 1).any()  # at least one heavy atom


def test_decode_independent_of_batch(vae):
    """A molecule decodes identically alone, first or last in a batch, and across chunks."""
    z = np.random.default_rng(1).normal(size=(5, vae.cfg.model.latent_dim)).astype(np.float32)
    together = vae.decode(z, seed=3)
    chunked = vae.decode(z, seed=3, batch_size=2)
    for k in (0, 4):
        alone = vae.decode(z[k : k + 1], seed=3)[0]
        assert (alone.numbers == together[k].numbers).all()
        scale = max(1.0, np.abs(alone.positions).max())
        np.testing.assert_allclose(alone.positions, together[k].positions, atol=1e-4 * scale)
        np.testing.assert_allclose(chunked[k].positions, together[k].positions, atol=1e-4 * scale)
    from atomarch.errors import AtomarchError

    with pytest.raises(AtomarchError, match=r"shape \[n, 32\]"):
        vae.decode(np.zeros((2, 16), np.float32))
    with pytest.raises(AtomarchError, match="at least 1"):
        vae.sample(0)


def test_decode_equivariant_to_noise_rotation(vae):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(4, vae.cfg.model.latent_dim)).astype(np.float32)
    R = random_rotation(rng)
    base = vae.decode(z, seed=5)
    rotated = vae.decode(z, seed=5, noise_rotation=R)
    for a, b in zip(base, rotated):
        assert (a.numbers == b.numbers).all()
        scale = max(1.0, np.abs(a.positions).max())
        np.testing.assert_allclose(b.positions, a.positions @ R.T, atol=2e-4 * scale)


def test_latent_of_decoded_molecule_invariant(vae):
    rng = np.random.default_rng(4)
    decoded = vae.decode(rng.normal(size=(3, vae.cfg.model.latent_dim)).astype(np.float32), seed=0)
    moved = []
    for a in decoded:
        R = random_rotation(rng, improper=True)
        perm = rng.permutation(len(a))
        moved.append(Atoms(numbers=a.numbers[perm], positions=(a.positions @ R.T + rng.normal(size=3))[perm]))
    with torch.no_grad():
        z0 = vae.encoder(batch_from_atoms(decoded, vae.cutoff))[0]
        z1 = vae.encoder(batch_from_atoms(moved, vae.cutoff))[0]
    assert float((z0 - z1).abs().max()) < 1e-4 * max(1.0, float(z0.abs().max()))


def test_interpolation_path(vae, qm9_atoms):
    a, b = qm9_atoms[0], qm9_atoms[1]
    for method in ("slerp", "linear"):
        path = vae.interpolate(a, b, steps=5, method=method, seed=0)
        assert len(path) == 5 and path[0].info["path_t"] == 0.0 and path[-1].info["path_t"] == 1.0
    ra, rb = vae.reconstruct([a, b], seed=0)
    for x, y in ((path[0], ra), (path[-1], rb)):
        assert (x.numbers == y.numbers).all()
        scale = max(1.0, np.abs(y.positions).max())  # an untrained decoder may place atoms far out
        np.testing.assert_allclose(x.positions, y.positions, atol=1e-4 * scale)
    from atomarch.errors import AtomarchError

    with pytest.raises(AtomarchError, match="at least 2 steps"):
        vae.interpolate(a, b, steps=1)
    with pytest.raises(AtomarchError, match="unknown interpolation method"):
        vae.interpolate(a, b, method="cubic")


def test_sample_is_seeded(vae):
    a = vae.sample(3, seed=0)
    b = vae.sample(3, seed=0)
    assert all(np.array_equal(x.positions, y.positions) for x, y in zip(a, b))
    # another seed draws other latents: the heads' predictions (a function of z alone) differ
    c = vae.sample(3, seed=1)
    ga, gc = np.array([m.info["gap"] for m in a]), np.array([m.info["gap"] for m in c])
    assert np.abs(ga - gc).min() > 1e-6, (ga, gc)


def test_h_parents_and_constrained_counts(qm9_atoms):
    batch = batch_from_atoms(qm9_atoms[:4], 5.0)
    h, parent = h_parents(batch)
    assert (batch.z[h] == 1).all() and (batch.z[parent] != 1).all()
    assert (batch.batch[h] == batch.batch[parent]).all()
    d = (batch.pos[h] - batch.pos[parent]).norm(dim=-1)
    assert (d < 1.2).all()
    # the DP meets the global total while staying close to the per-atom preferences
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.2, 0.05, 0.05], [0.1, 0.1, 0.7, 0.05, 0.05], [0.7, 0.2, 0.05, 0.03, 0.02]]))
    counts = constrained_h_counts(logits, torch.tensor([0, 0, 0]), torch.tensor([4]), 1)
    # argmax gives [1, 2, 0] (3 H); the best total-4 assignment: log .2 + log .7 + log .7 > [1, 2, 1]
    assert counts.tolist() == [2, 2, 0]
    free = constrained_h_counts(logits, torch.tensor([0, 0, 0]), torch.tensor([99]), 1)
    assert free.tolist() == [1, 2, 0]  # an impossible total falls back to the argmax


def test_ot_pair_is_equivariant():
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(7, 3))
    x0 -= x0.mean(0)
    x1 = rng.normal(size=(7, 3)) * 1.5
    x1 -= x1.mean(0)
    types = np.array([0, 0, 0, 1, 1, 2, 0])
    perm, R = ot_pair(x0, x1, types)
    assert (types[perm] == types).all()  # pairs stay within an element
    for improper in (False, True):  # the networks are O(3)-equivariant, so is the pairing
        Q = random_rotation(rng, improper)
        perm2, R2 = ot_pair(x0 @ Q.T, x1, types)
        np.testing.assert_allclose(x1[perm2] @ R2.T, (x1[perm] @ R.T) @ Q.T, atol=1e-8)


def test_vae_trains_and_roundtrips_checkpoint(tmp_path):
    import atomarch
    from atomarch.training import train

    cfg = load_config(ROOT / "configs/tiny_flow.yaml", [f"train.out_dir={tmp_path}", "train.max_steps=4", "data.train_subset=32"])
    run = train(cfg, resume=None)
    raw = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    model = atomarch.load_model(run / "checkpoints" / "last.ckpt")
    assert model.decoder is not None
    # every trained tensor (encoder, heads, both flows) is what the checkpoint holds
    own = model.state_dict()
    assert set(own) == set(raw["state_dict"])
    for k, v in raw["state_dict"].items():
        assert torch.equal(own[k].cpu(), v.cpu()), k
    assert any(k.startswith("decoder.coarse") for k in own) and any(k.startswith("decoder.fine") for k in own)
    mols = model.sample(2, seed=0)
    assert len(mols) == 2 and all(len(m) > 0 for m in mols)
    z = model.encode(mols)
    # through an exported checkpoint and back: the same latents and the same decoded molecules
    from atomarch.models.loading import export_checkpoint

    again = atomarch.load_model(export_checkpoint(run / "checkpoints" / "last.ckpt", tmp_path / "flow.ckpt"))
    np.testing.assert_array_equal(again.encode(mols), z)
    for x, y in zip(again.sample(2, seed=0), mols):
        assert (x.numbers == y.numbers).all()
        np.testing.assert_array_equal(x.positions, y.positions)
    # and the trained decoder is not the untrained one: a fresh model decodes differently
    fresh = AtomarchModel(raw["hyper_parameters"]["config"], raw["hyper_parameters"]["stats"]).eval()
    other = fresh.sample(2, seed=0)
    assert any(len(x) != len(y) or not np.allclose(x.positions, y.positions) for x, y in zip(other, mols))
