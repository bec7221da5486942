"""The fitted prior: samples drawn from the Gaussian fit of the aggregate posterior (what
`atomarch export` stores), beside the VAE's N(0, I)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomarch.errors import AtomarchError
from atomarch.latent.domain import Domain

from conftest import run_cli


def test_fitted_gaussian_has_the_latents_covariance_plus_the_posterior_noise():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(4, 4))
    x = rng.normal(size=(8000, 4)) @ mix.T + np.array([1.0, -2.0, 0.5, 3.0])
    noise = np.array([0.5, 0.1, 0.0, 2.0])
    dom = Domain(min_atoms=1, max_atoms=9, max_heavy=9).fit_latents(x, noise)
    dom = Domain.from_dict(dom.to_dict())  # what a checkpoint stores and loads
    z = dom.sample_latents(40_000, np.random.default_rng(1))
    assert z.shape == (40_000, 4) and z.dtype == np.float32
    np.testing.assert_allclose(z.mean(0), x.mean(0), atol=0.05)
    target = np.cov(x, rowvar=False) + np.diag(noise)
    np.testing.assert_allclose(np.cov(z, rowvar=False), target, atol=0.06 * np.abs(target).max())
    # seeded: the same generator state gives the same draws
    np.testing.assert_array_equal(dom.sample_latents(5, np.random.default_rng(7)), dom.sample_latents(5, np.random.default_rng(7)))
    # without the posterior noise (checkpoints exported before it existed): the means' covariance
    dom.latent_noise = None
    z = dom.sample_latents(40_000, np.random.default_rng(2))
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.cov(x, rowvar=False), atol=0.06 * np.abs(target).max())


def test_fitted_prior_needs_stored_latent_statistics():
    with pytest.raises(ValueError, match="atomarch export"):
        Domain(min_atoms=1, max_atoms=9, max_heavy=9).sample_latents(3, np.random.default_rng(0))


def test_fit_map_stores_the_mean_posterior_variance(tiny_vae_run):
    import atomarch
    from atomarch.data.graph import Collater
    from atomarch.latent.maps import fit_map

    tiny_vae = atomarch.load_model(tiny_vae_run / "checkpoints" / "last.ckpt")  # own copy: fit_map changes it
    fit_map(tiny_vae, progress=False)
    dm = tiny_vae.datamodule()
    batch = Collater(tiny_vae.cutoff)([dm.dataset("train")[k] for k in range(len(dm.split["train"]))])
    with torch.no_grad():
        logvar = tiny_vae(batch)["logvar"]
    np.testing.assert_allclose(tiny_vae.domain.latent_noise, logvar.double().exp().mean(0).numpy(), rtol=1e-4)
    z = tiny_vae.prior_latents(6, seed=3, prior="fitted")
    assert z.shape == (6, tiny_vae.cfg.model.latent_dim)
    np.testing.assert_array_equal(z, tiny_vae.prior_latents(6, seed=3, prior="fitted"))
    assert not np.allclose(z, tiny_vae.prior_latents(6, seed=3))  # not the N(0, I) draws
    with pytest.raises(AtomarchError, match="unknown prior 'flat'"):
        tiny_vae.prior_latents(2, prior="flat")


def test_cli_sample_with_the_fitted_prior(tiny_vae_run, tmp_path):
    from ase.io import read

    src = tiny_vae_run / "checkpoints" / "last.ckpt"
    res = run_cli("sample", "--ckpt", str(src), "-n", "2", "--prior", "fitted", "--out", str(tmp_path / "a.xyz"))
    assert res.returncode == 2 and "prior 'fitted'" in res.stderr and "atomarch export" in res.stderr
    out = tmp_path / "model.ckpt"
    assert run_cli("export", "--ckpt", str(src), "--out", str(out)).returncode == 0
    res = run_cli("sample", "--ckpt", str(out), "-n", "3", "--prior", "fitted", "--out", str(tmp_path / "s.xyz"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(read(tmp_path / "s.xyz", index=":")) == 3


def test_optimize_in_the_fitted_coordinates_is_pulled_to_the_training_latents(tiny_vae_run):
    """``optimize(prior="fitted")``: the search runs in the whitened coordinates of the fitted
    Gaussian, so its penalty pulls toward the training latents' mean (not toward 0 as N(0, I)
    does); the start record is the encoded start; without stored statistics: a clear error."""
    import atomarch
    from atomarch.latent.maps import fit_map

    model = atomarch.load_model(tiny_vae_run / "checkpoints" / "last.ckpt")
    dm = model.datamodule()
    starts = [dm.packed.atoms(int(k)) for k in dm.split["val"][:2]]
    with pytest.raises(AtomarchError, match="prior 'fitted'.*atomarch export"):
        model.optimize(starts, "gap:max", steps=1, prior="fitted")
    with pytest.raises(AtomarchError, match="unknown prior 'flat'"):
        model.optimize(starts, "gap:max", steps=1, prior="flat")
    fit_map(model, progress=False)
    mean = np.asarray(model.domain.latent_mean, dtype=np.float32)
    z0 = model.encode(starts)
    kw = dict(steps=30, lr=0.2, prior_weight=1e4, decode_every=30, beams=1, conformers=1)
    fitted = model.optimize(starts, "gap:max", prior="fitted", **kw).latents
    standard = model.optimize(starts, "gap:max", prior="standard", **kw).latents
    np.testing.assert_allclose(fitted[:, 0], z0, atol=1e-4)
    # the penalty dominates: fitted ends near the training mean, standard near the origin
    assert np.linalg.norm(fitted[:, -1] - mean, axis=1).max() < 0.5 * np.linalg.norm(z0 - mean, axis=1).min()
    assert np.linalg.norm(standard[:, -1], axis=1).max() < 0.5 * np.linalg.norm(z0, axis=1).min()
    assert np.linalg.norm(standard[:, -1] - mean, axis=1).min() > np.linalg.norm(fitted[:, -1] - mean, axis=1).max()


def test_temperature_scales_the_draws_about_the_prior_mean(tiny_vae_run):
    """``temperature`` T: the same seeded draws, their offsets from the prior's mean times T
    (N(0, I): z itself; fitted: z - the training latents' mean); T <= 0 or NaN is refused."""
    import atomarch
    from atomarch.latent.maps import fit_map

    model = atomarch.load_model(tiny_vae_run / "checkpoints" / "last.ckpt")
    fit_map(model, progress=False)
    z1, z5 = model.prior_latents(7, seed=4), model.prior_latents(7, seed=4, temperature=0.5)
    np.testing.assert_allclose(z5, 0.5 * z1, rtol=1e-6)
    mean = np.asarray(model.domain.latent_gaussian()[0])
    f1 = model.prior_latents(7, seed=4, prior="fitted")
    f2 = model.prior_latents(7, seed=4, prior="fitted", temperature=2.0)
    np.testing.assert_allclose(f2 - mean, 2.0 * (f1 - mean), rtol=1e-4, atol=1e-5)
    assert np.linalg.norm(f1 - mean) > 1e-3  # the check can fail: the draws do spread
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(AtomarchError, match="temperature must be a positive number"):
            model.prior_latents(2, temperature=bad)
