"""The fused "uvu" convolution evaluates exactly e3nn's tensor product (values and gradients),
and an encoder gives the same latent (and the same gradients) with either evaluation."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from atomarch.config import EncoderConfig
from atomarch.data.graph import batch_from_atoms
from atomarch.nn.blocks import Interaction
from atomarch.nn.encoders import build_encoder
from atomarch.nn.tensor_product import FusedUVUConvolution


def _uvu(irreps_in: str, lmax: int, irreps_out: str) -> o3.TensorProduct:
    """e3nn's per-edge "uvu" product of ``irreps_in`` with Y (l <= lmax) into ``irreps_out`` irreps."""
    irreps_in, sh = o3.Irreps(irreps_in), o3.Irreps.spherical_harmonics(lmax)
    wanted = {ir for _, ir in o3.Irreps(irreps_out)}
    mid, instructions = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in wanted:
                    instructions.append((i, j, len(mid), "uvu", True))
                    mid.append((mul, ir_out))
    return o3.TensorProduct(irreps_in, sh, o3.Irreps(mid), instructions, shared_weights=False, internal_weights=False)


@pytest.mark.parametrize("irreps_in,lmax,irreps_out", [
    ("8x0e", 1, "8x0e+8x1o"),
    ("8x0e+4x1o", 1, "8x0e+4x1o"),
    ("6x0e+4x1o+3x2e", 2, "6x0e+4x1o+3x2e"),
    ("5x0e+3x0o+4x1o+2x1e+3x2e", 2, "0e+0o+1o+1e+2e+2o"),  # pseudo-scalars and parity-odd paths
    ("4x0e+2x1o+2x2e+2x3o", 3, "0e+1o+2e+3o"),
])
def test_fused_matches_e3nn_values_and_gradients(irreps_in, lmax, irreps_out):
    torch.manual_seed(0)
    tp = _uvu(irreps_in, lmax, irreps_out)
    fused = FusedUVUConvolution(tp)
    n, e = 13, 70
    x = torch.randn(n, tp.irreps_in1.dim, dtype=torch.float64, requires_grad=True)
    vec = torch.randn(e, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(e, tp.weight_numel, dtype=torch.float64, requires_grad=True)
    src, dst = torch.randint(0, n, (e,)), torch.randint(0, n, (e,))
    tp, fused = tp.double(), fused.double()

    def both():
        sh = o3.spherical_harmonics(tp.irreps_in2, vec, normalize=True, normalization="component")
        ref = x.new_zeros(n, tp.irreps_out.dim).index_add(0, dst, tp(x[src], sh, w))
        return ref, fused(x, sh, w, src, dst)

    ref, out = both()
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(ref)
    ref, out = both()
    g_ref = torch.autograd.grad(ref, [x, vec, w], g)
    ref, out = both()
    g_out = torch.autograd.grad(out, [x, vec, w], g)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_fused_gradient_wrt_every_spherical_harmonic_input():
    """Gradients reach the spherical-harmonic input itself (not only through the positions), l = 0 included."""
    torch.manual_seed(1)
    tp = _uvu("4x0e+2x1o", 1, "4x0e+2x1o").double()
    fused = FusedUVUConvolution(tp).double()
    x = torch.randn(5, tp.irreps_in1.dim, dtype=torch.float64)
    sh = torch.randn(9, tp.irreps_in2.dim, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, tp.weight_numel, dtype=torch.float64)
    src, dst = torch.randint(0, 5, (9,)), torch.randint(0, 5, (9,))
    ref = x.new_zeros(5, tp.irreps_out.dim).index_add(0, dst, tp(x[src], sh, w))
    (g_ref,) = torch.autograd.grad(ref.pow(2).sum(), sh)
    (g_out,) = torch.autograd.grad(fused(x, sh, w, src, dst).pow(2).sum(), sh)
    torch.testing.assert_close(g_out, g_ref, rtol=1e-10, atol=1e-10)


def test_fused_rejects_products_it_does_not_evaluate():
    irreps = o3.Irreps("4x0e+2x1o")
    sh = o3.Irreps.spherical_harmonics(1)
    shared = o3.TensorProduct(irreps, sh, o3.Irreps("4x0e"), [(0, 0, 0, "uvu", True)])
    with pytest.raises(ValueError, match="per-edge"):
        FusedUVUConvolution(shared)
    uvw = o3.TensorProduct(irreps, sh, o3.Irreps("3x0e"), [(0, 0, 0, "uvw", True)], shared_weights=False,
                           internal_weights=False)
    with pytest.raises(ValueError, match="uvu"):
        FusedUVUConvolution(uvw)


@pytest.mark.parametrize("cfg", [EncoderConfig(kind="e3nn"),
                                 EncoderConfig(kind="e3nn", irreps_hidden="16x0e+8x1o", lmax=1)])
def test_encoder_same_latent_and_gradients_either_way(qm9_atoms, cfg):
    torch.manual_seed(0)
    enc = build_encoder(cfg, 5.0, [1, 6, 7, 8, 9], 16).double()
    batch = batch_from_atoms(qm9_atoms[:6], 5.0)
    batch.pos = batch.pos.double().requires_grad_()
    if batch.cell is not None:
        batch.cell = batch.cell.double()
    results = []
    for fused in (False, True):
        for layer in enc.layers:
            assert isinstance(layer, Interaction)
            layer.use_fused = fused
        mu, _ = enc(batch)
        grads = torch.autograd.grad(mu.pow(2).sum(), [batch.pos, *enc.parameters()], allow_unused=True)
        results.append((mu.detach(), grads))
    (mu_ref, g_ref), (mu_fused, g_fused) = results
    torch.testing.assert_close(mu_fused, mu_ref, rtol=1e-9, atol=1e-9)
    for a, b in zip(g_fused, g_ref):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)


def test_checkpoint_state_unchanged_by_the_fused_path():
    """The fused evaluation adds no stored state: old checkpoints load as they are."""
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(kind="e3nn"), 5.0, [1, 6], 8)
    assert not [k for k in enc.state_dict() if ".conv." in k]


def test_fused_handles_no_edges():
    tp = _uvu("4x0e+2x1o+2x2e", 2, "4x0e+2x1o+2x2e")
    x = torch.randn(3, tp.irreps_in1.dim, requires_grad=True)
    empty = torch.zeros(0, dtype=torch.long)
    out = FusedUVUConvolution(tp)(x, torch.zeros(0, tp.irreps_in2.dim), torch.zeros(0, tp.weight_numel), empty, empty)
    assert out.shape == (3, tp.irreps_out.dim) and not out.any()
    out.sum().backward()


@pytest.mark.parametrize("out_act", [False, True])
def test_mlp_forward_is_the_network(out_act):
    from e3nn.nn import FullyConnectedNet

    from atomarch.nn.tensor_product import mlp_forward

    torch.manual_seed(0)
    net = FullyConnectedNet([8, 16, 16, 5], torch.nn.functional.silu, out_act=out_act).double()
    x = torch.randn(30, 8, dtype=torch.float64)
    scale = torch.rand(5, dtype=torch.float64) + 0.5
    torch.testing.assert_close(mlp_forward(net, x, scale), net(x) * scale, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mlp_forward(net, x), net(x), rtol=1e-12, atol=1e-12)
