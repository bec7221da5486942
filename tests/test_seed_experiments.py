"""The source experiments as fast checks: 3D Tetris, missing-atom completion, 2D images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3

from atomarch.nn.blocks import Interaction

from conftest import random_rotation


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- Interaction 0o


def test_interaction_without_pseudoscalars_is_unchanged():
    sh = o3.Irreps.spherical_harmonics(2)
    layer = Interaction(o3.Irreps("8x0e"), o3.Irreps("8x0e + 4x1o + 2x2e"), sh, 8, 16, 3.0)
    assert layer.irreps_out == o3.Irreps("8x0e + 4x1o + 2x2e")
    assert len(layer.gate.act_scalars.acts) == 1


def test_interaction_keeps_pseudoscalars_odd():
    """0o channels survive the gate and flip sign under a reflection; 0e ones do not."""
    torch.manual_seed(0)
    sh_irreps = o3.Irreps.spherical_harmonics(2)
    hidden = o3.Irreps("8x0e + 4x0o + 4x1o + 4x1e + 2x2e")
    irreps, layers = o3.Irreps("1x0e"), []
    for _ in range(3):
        layers.append(Interaction(irreps, hidden, sh_irreps, 8, 16, 3.0))
        irreps = layers[-1].irreps_out
    assert "0o" in str(irreps)

    def run(pos):
        src, dst = [t.reshape(-1) for t in torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")]
        keep = src != dst
        src, dst = src[keep], dst[keep]
        vec = pos[src] - pos[dst]
        sh = o3.spherical_harmonics(sh_irreps, vec, normalize=True, normalization="component")
        from atomarch.nn.radial import BesselBasis

        radial = BesselBasis(4.0, 8)(vec.norm(dim=-1))
        x = torch.ones(4, 1)
        for layer in layers:
            x = layer(x, sh, radial, torch.stack([src, dst]))
        return x[:, :12]

    pos = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]])
    with torch.no_grad():
        a, b = run(pos), run(-pos)  # inversion
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-5)
    assert torch.allclose(a[:, 8:], -b[:, 8:], atol=1e-5)
    assert a[:, 8:].abs().max() > 1e-3  # a chiral shape has non-zero pseudoscalars


# --------------------------------------------------------------------------- 3D Tetris


def test_tetris_equivariant_classifier_generalises_to_rotations():
    from atomarch.experiments.tetris import NAMES, MLPBaseline, TetrisClassifier, accuracy, random_copies, tetris_shapes, train_classifier

    ref, labels = tetris_shapes()
    assert ref.shape == (8, 4, 3)
    # the two chiral shapes are mirror images (and not proper rotations of each other)
    pos, lab = random_copies(25, seed=3)

    torch.manual_seed(0)
    model = TetrisClassifier()
    train_classifier(model, steps=120)
    assert accuracy(model, ref, labels) == 1.0
    assert accuracy(model, pos, lab) == 1.0
    with torch.no_grad():
        mirrored = model(ref * torch.tensor([1.0, 1.0, -1.0])).argmax(-1)
    swap = {NAMES.index("chiral_left"): NAMES.index("chiral_right"), NAMES.index("chiral_right"): NAMES.index("chiral_left")}
    assert mirrored.tolist() == [swap.get(k, k) for k in range(8)]

    torch.manual_seed(0)
    mlp = MLPBaseline()
    train_classifier(mlp, steps=300)
    assert accuracy(mlp, ref, labels) == 1.0
    assert accuracy(mlp, pos, lab) < 0.6


# --------------------------------------------------------------------------- missing atom


def test_missing_atom_rotated_copy_gives_same_predictions(qm9):
    from atomarch.experiments.completion import CompletionModel, evaluate, molecules_by_size, predict, remove_atoms, train_completion

    mols = molecules_by_size(qm9, 5, 18, 48, seed=0)
    torch.manual_seed(0)
    model = CompletionModel(irreps_hidden="16x0e + 8x1o", lmax=1, num_layers=2, radial_hidden=16)
    info = train_completion(model, qm9, mols, epochs=40, batch_size=8, lr=3e-3)
    assert info["steps"] == 240

    test = remove_atoms(qm9, molecules_by_size(qm9, 19, 19, 24, seed=1), np.random.default_rng(0))
    R = torch.as_tensor(random_rotation(np.random.default_rng(4)), dtype=torch.float32)
    t = torch.tensor([2.0, -1.0, 4.0])
    moved = test.transformed(R, t)
    z0, x0 = predict(model, test)
    z1, x1 = predict(model, moved)
    assert torch.equal(z0, z1)  # element: invariant
    assert torch.allclose(x0 @ R.T + t, x1, atol=1e-3)  # position: equivariant (Å)
    a, b = evaluate(model, test), evaluate(model, moved)
    assert a["accuracy"] == b["accuracy"] and a["element_accuracy"] == b["element_accuracy"]
    assert abs(a["distance_mae"] - b["distance_mae"]) < 1e-4
    assert a["element_accuracy"] > 0.5  # a few hundred steps already learn the common case (H)


# --------------------------------------------------------------------------- 2D images


def _planar_molecule(qm9):
    from atomarch.experiments.image_baseline import plane_deviation

    natoms = (qm9.ptr[1:] - qm9.ptr[:-1]).numpy()
    dev = plane_deviation(qm9)
    k = int(np.flatnonzero((dev < 0.01) & (natoms >= 8))[0])
    a, b = int(qm9.ptr[k]), int(qm9.ptr[k + 1])
    return qm9.z[a:b].numpy(), qm9.pos[a:b].double().numpy()


def test_image_sums_to_atom_counts_and_is_not_invariant(qm9):
    from atomarch.experiments.image_baseline import ELEMENTS, align_to_plane, rasterize

    z, pos = _planar_molecule(qm9)
    aligned, dev = align_to_plane(pos)
    assert dev < 0.01 and np.abs(aligned[:, 2]).max() < 0.01
    img = rasterize(z, aligned)
    assert img.shape == (len(ELEMENTS), 40, 40)
    counts = [(z == el).sum() for el in ELEMENTS]
    np.testing.assert_allclose(img.sum(axis=(1, 2)), counts, atol=1e-3)

    shifted = rasterize(z, aligned[:, :2] + np.array([0.7, -0.4]))
    c, s = np.cos(0.5), np.sin(0.5)
    rotated = rasterize(z, aligned[:, :2] @ np.array([[c, -s], [s, c]]).T)
    for other in (shifted, rotated):
        np.testing.assert_allclose(other.sum(axis=(1, 2)), counts, atol=1e-3)  # same atoms...
        assert np.abs(other - img).sum() > 0.5 * sum(counts)  # ...but a different image
