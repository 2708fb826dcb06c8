"""The affine-divergence layers (npnorm.divergence): the two backward forms agree, the two-convolution
PatchNorm equals the patch-by-patch definition, the special cases that separate do, the general case
does not, and the divergence itself is measured to round-off."""

import numpy as np
import pytest

import npnorm
from npnorm import nn
from npnorm.divergence import measure
from npnorm.divergence.affine_like import (affine_like_backward, affine_like_backward_staged,
                                           affine_like_forward)
from npnorm.divergence.patchnorm import (patch_norm_conv2d_backward, patch_norm_conv2d_backward_by_patches,
                                         patch_norm_conv2d_forward, patch_norm_conv2d_forward_by_patches,
                                         patch_sq_norms)
from npnorm.divergence.prenorm import l2_prenorm_forward, prenorm_backward, radial_norm_forward
from npnorm.kernels.divergence import patchnorm as pn_kernel
from npnorm.nn.conv import conv2d_forward, im2col

RNG = np.random.default_rng(0)


def close(a, b, tol=1e-12):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.max(np.abs(a - b)) <= tol * max(1.0, np.max(np.abs(b)))


# -- the affine-like layer -------------------------------------------------------------------------
def test_affine_like_staged_and_simplified_backward_agree():
    x, W, b = RNG.normal(1, 2, (6, 5)), RNG.normal(0, 1, (3, 5)), RNG.normal(0, 1, 3)
    z, cache = affine_like_forward(x, W, b)
    G = RNG.standard_normal(z.shape)
    for got, want in zip(affine_like_backward(G, cache), affine_like_backward_staged(G, cache)):
        assert close(got, want)


def test_affine_like_is_linear_map_of_normalized_augmented_input():
    x, W, b = RNG.normal(1, 2, (6, 5)), RNG.normal(0, 1, (3, 5)), RNG.normal(0, 1, 3)
    aug = np.concatenate([x, np.ones((6, 1))], axis=1)
    z, _ = affine_like_forward(x, W, b)
    assert close(z, (aug / np.linalg.norm(aug, axis=1, keepdims=True)) @ np.c_[W, b].T)


def test_affine_like_limits_and_no_scale_invariance():
    W, b = RNG.normal(0, 1, (3, 4)), RNG.normal(0, 1, 3)
    x = RNG.normal(0, 1, (5, 4))
    small, _ = affine_like_forward(1e-6 * x, W, b)
    assert close(small, 1e-6 * x @ W.T + b, 1e-9)                      # ||x|| << 1: plain affine
    big, _ = affine_like_forward(1e6 * x, W, b)
    assert close(big, x @ W.T / np.linalg.norm(x, axis=1, keepdims=True), 1e-5)  # >> 1: L2, then linear
    z1, _ = affine_like_forward(x, W, b)
    z2, _ = affine_like_forward(3 * x, W, b)
    assert not np.allclose(z1, z2)


def test_affine_like_init_gives_unit_output_scale():
    layer = npnorm.AffineLike(400, 300, rng=1)
    z = layer(np.random.default_rng(2).normal(0, 1, (200, 400)))
    assert 0.9 < z.std() < 1.1


def test_rms_prenorm_is_rmsnorm_without_weight_and_l2_is_scaled():
    x = RNG.normal(2, 3, (4, 7))
    a = npnorm.RMSPreNorm(eps=1e-5)(x)
    b = npnorm.RMSNorm(7, eps=1e-5, elementwise_affine=False, backend="numpy")(x)
    assert close(a, b)
    l2, _ = l2_prenorm_forward(x, eps=1e-300)
    assert close(l2, x / np.linalg.norm(x, axis=1, keepdims=True))


def test_prenorm_backward_against_rmsnorm():
    x, g = RNG.normal(2, 3, (4, 7)), RNG.standard_normal((4, 7))
    _, cache = radial_norm_forward(x, "rms", 1e-5)
    layer = npnorm.RMSNorm(7, eps=1e-5, elementwise_affine=False, backend="numpy")
    layer(x)
    assert close(prenorm_backward(g, cache), layer.backward(g))


# -- PatchNorm: two convolutions = the definition, numpy = numba ------------------------------------
@pytest.mark.parametrize("mode", ["affine", "l2", "rms"])
@pytest.mark.parametrize("geom", [(3, 1, 1), ((2, 3), (2, 1), (0, 1)), (1, 1, 0)])
def test_patchnorm_conv_form_equals_patch_by_patch(mode, geom):
    k, s, p = geom
    x = RNG.normal(0.5, 1.5, (2, 3, 6, 5))
    kk = (k, k) if isinstance(k, int) else k
    W, b = RNG.normal(0, 1, (4, 3) + kk), RNG.normal(0, 1, 4)
    z, cache = patch_norm_conv2d_forward(x, W, b, s, p, mode)
    zr, cache_r = patch_norm_conv2d_forward_by_patches(x, W, b, s, p, mode)
    assert close(z, zr)
    G = RNG.standard_normal(z.shape)
    for got, want in zip(patch_norm_conv2d_backward(G, cache), patch_norm_conv2d_backward_by_patches(G, cache_r)):
        assert close(got, want)
    zk, cache_k = pn_kernel.patch_norm_conv2d_forward(x, W, b, s, p, mode)
    assert close(zk, z)
    for got, want in zip(pn_kernel.patch_norm_conv2d_backward(G, cache_k), patch_norm_conv2d_backward(G, cache)):
        assert close(got, want)


def test_patch_sq_norms_is_one_convolution_of_x_squared():
    x = RNG.normal(0, 1, (2, 3, 5, 6))
    q, _ = patch_sq_norms(x, 3, 2, 1)
    ones, _ = conv2d_forward(x**2, np.ones((1, 3, 3, 3)), None, (2, 2), (1, 1))
    cols = im2col(x, (3, 3), (2, 2), (1, 1))
    assert close(q, ones)
    assert close(q.transpose(0, 2, 3, 1).ravel(), np.sum(cols**2, axis=1))


def test_patchnorm_matches_pytorch_composition_formula():
    """conv2d(x, W, b) / sqrt(conv2d(x^2, ones) + 1), written with npnorm's conv."""
    x = RNG.normal(0, 1, (2, 2, 6, 6))
    W, b = RNG.normal(0, 1, (3, 2, 3, 3)), RNG.normal(0, 1, 3)
    num, _ = conv2d_forward(x, W, b, (1, 1), (1, 1))
    den, _ = conv2d_forward(x**2, np.ones((1, 2, 3, 3)), None, (1, 1), (1, 1))
    z, _ = patch_norm_conv2d_forward(x, W, b, 1, 1)
    assert close(z, num / np.sqrt(den + 1))


# -- special cases that separate, and the general case that does not ---------------------------------
def test_1x1_kernel_is_channelwise_l2_then_1x1_conv():
    x = RNG.normal(0.3, 1, (2, 4, 3, 5))
    W, b = RNG.normal(0, 1, (3, 4, 1, 1)), RNG.normal(0, 1, 3)
    z, _ = patch_norm_conv2d_forward(x, W, b, mode="l2", eps=1e-9)
    xn, _ = radial_norm_forward(x, "l2", 1e-9, axis=1)
    ref, _ = conv2d_forward(xn, W, b, (1, 1), (0, 0))
    assert close(z, ref)


def test_whole_input_kernel_is_affine_like_on_flattened_input():
    x = RNG.normal(0.3, 1, (4, 2, 3, 3))
    W, b = RNG.normal(0, 1, (5, 2, 3, 3)), RNG.normal(0, 1, 5)
    z, _ = patch_norm_conv2d_forward(x, W, b)
    ref, _ = affine_like_forward(x.reshape(4, -1), W.reshape(5, -1), b)
    assert close(z[:, :, 0, 0], ref)


@pytest.mark.parametrize("mode", ["l2", "rms"])
def test_non_overlapping_patches_separate(mode):
    """stride = kernel: normalize each patch block of the input, then the convolution."""
    x = RNG.normal(0.3, 1, (2, 3, 4, 6))
    W, b = RNG.normal(0, 1, (2, 3, 2, 2)), RNG.normal(0, 1, 2)
    z, _ = patch_norm_conv2d_forward(x, W, b, 2, 0, mode)
    blocks = x.reshape(2, 3, 2, 2, 3, 2)                         # (n, c, a, i, e, j)
    sq = np.sum(blocks**2, axis=(1, 3, 5), keepdims=True)
    c = 1.0 if mode == "l2" else 1.0 / 12
    xn = (blocks / np.sqrt(c * sq + 1e-6)).reshape(x.shape)
    ref, _ = conv2d_forward(xn, W, b, (2, 2), (0, 0))
    assert close(z, ref)


def _bright_pixel_image():
    x = 0.1 + 0.05 * np.random.default_rng(3).standard_normal((1, 1, 8, 8))
    x[0, 0, 1, 1] = 5.0                     # patches touching it have a large norm, the others small
    return x


def test_overlapping_patchnorm_differs_from_the_obvious_compositions():
    x = _bright_pixel_image()
    W, b = RNG.normal(0, 1, (2, 1, 3, 3)), RNG.normal(0, 1, 2)
    z, _ = patch_norm_conv2d_forward(x, W, b, mode="l2", eps=1e-12)
    # normalize the image (L2 over all pixels), then convolve
    xn, _ = radial_norm_forward(x.reshape(1, -1), "l2", 1e-12)
    nt, _ = conv2d_forward(xn.reshape(x.shape), W, b, (1, 1), (0, 0))
    # convolve, then L2-normalize each position over the output channels
    a, _ = conv2d_forward(x, W, None, (1, 1), (0, 0))
    tn = a / np.sqrt(np.sum(a**2, axis=1, keepdims=True) + 1e-12) + b[:, None, None]
    assert np.max(np.abs(z - nt)) > 0.5 and np.max(np.abs(z - tn)) > 0.5


def test_no_function_of_the_conv_output_gives_patchnorm():
    """Two inputs with exactly the same convolution output but different PatchNorm outputs: any
    normalize-after-the-convolution sees the same numbers and must give the same answer."""
    x = _bright_pixel_image()
    W = RNG.normal(0, 1, (1, 1, 3, 3))
    # the convolution as a matrix (36 outputs x 64 pixels) has a null space of dimension >= 28
    M = np.stack([conv2d_forward(e.reshape(1, 1, 8, 8), W, None, (1, 1), (0, 0))[0].ravel()
                  for e in np.eye(64)], axis=1)
    delta = np.linalg.svd(M)[2][-1].reshape(1, 1, 8, 8)           # M @ delta = 0
    x2 = x + delta
    a1, _ = conv2d_forward(x, W, None, (1, 1), (0, 0))
    a2, _ = conv2d_forward(x2, W, None, (1, 1), (0, 0))
    assert close(a1, a2, 1e-12)
    z1, _ = patch_norm_conv2d_forward(x, W, None, mode="l2", eps=1e-12)
    z2, _ = patch_norm_conv2d_forward(x2, W, None, mode="l2", eps=1e-12)
    assert np.max(np.abs(z1 - z2)) > 1e-2


def test_no_rescaling_of_the_input_pixels_gives_patchnorm():
    """With as many filters as patch entries (an invertible W), PatchNorm's output determines each
    normalized patch P / s. A pixel shared by two overlapping patches then appears with two different
    values, so no per-pixel rescaling of the input followed by the convolution produces it."""
    x = _bright_pixel_image()
    W = RNG.normal(0, 1, (9, 1, 3, 3))
    z, _ = patch_norm_conv2d_forward(x, W, None, mode="l2", eps=1e-12)
    W2 = W.reshape(9, 9)
    p_hat = np.linalg.solve(W2, z[0].reshape(9, -1)).T.reshape(6, 6, 3, 3)   # (a, e, i, j)
    # pixel (3, 3) is entry (2, 2) of patch (1, 1), which holds the bright pixel, and entry (0, 0)
    # of patch (3, 3), which does not
    v1, v3 = p_hat[1, 1, 2, 2], p_hat[3, 3, 0, 0]
    assert close(v1 * np.linalg.norm(x[0, 0, 1:4, 1:4]), x[0, 0, 3, 3], 1e-9)   # each is pixel / ||P||
    assert close(v3 * np.linalg.norm(x[0, 0, 3:6, 3:6]), x[0, 0, 3, 3], 1e-9)
    assert abs(v3 / v1) > 5                                                     # but the two differ


# -- never silently wrong ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_patchnorm_cache_does_not_alias_input_and_empty_batch(backend):
    layer = npnorm.PatchNormConv2d(2, 3, 3, padding=1, rng=0, backend=backend)
    x = RNG.normal(0, 1, (2, 2, 4, 4))
    g = RNG.standard_normal((2, 3, 4, 4))
    layer(x)
    dx0 = layer.backward(g)
    x[...] = 7.0
    assert close(layer.backward(g), dx0)
    out = layer(np.zeros((0, 2, 4, 4)))
    assert out.shape == (0, 3, 4, 4)
    dx = layer.backward(np.zeros((0, 3, 4, 4)))
    assert dx.shape == (0, 2, 4, 4) and not np.any(layer.grads["weight"])


def test_affine_like_empty_batch_and_errors():
    layer = npnorm.AffineLike(3, 2, rng=0)
    assert layer(np.zeros((0, 3))).shape == (0, 2)
    layer.backward(np.zeros((0, 2)))
    assert not np.any(layer.grads["weight"]) and not np.any(layer.grads["bias"])
    with pytest.raises(ValueError, match="in_features=3"):
        layer(np.zeros((2, 4)))
    with pytest.raises(TypeError, match="floating"):
        layer(np.zeros((2, 3), dtype=int))
    layer(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="AffineLike.backward"):
        layer.backward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="mode"):
        npnorm.PatchNormConv2d(1, 1, 3, mode="batch")
    with pytest.raises(ValueError, match="smaller than the kernel"):
        npnorm.PatchNormConv2d(1, 1, 3)(np.zeros((1, 1, 2, 2)))


# -- the divergence, measured ------------------------------------------------------------------------
def test_affine_step_is_norm_squared_plus_one_times_ideal():
    X = RNG.normal(0, 1, (6, 5)) * np.array([0.1, 0.5, 1, 2, 4, 8])[:, None]
    lin = nn.Linear(5, 3, rng=0)
    r = measure.step_ratio(lin, X)
    assert np.allclose(r["ratio"], r["norm"] ** 2 + 1, rtol=1e-9, atol=0)
    assert np.all(r["residual"] < 1e-8)
    r = measure.step_ratio(npnorm.AffineLike(5, 3, rng=0), X)
    assert np.allclose(r["ratio"], 1.0, rtol=1e-9, atol=0)
    assert np.all(r["residual"] < 1e-8)


def test_batch_step_is_the_kernel():
    X, G, lr = RNG.normal(0, 2, (5, 4)), RNG.standard_normal((5, 3)), 1e-3
    dz = measure.sgd_step_change(nn.Linear(4, 3, rng=0), X, G, lr)
    assert close(dz, -lr * measure.affine_kernel(X) @ G, 1e-9)
    dz = measure.sgd_step_change(npnorm.AffineLike(4, 3, rng=0), X, G, lr)
    K = measure.affine_like_kernel(X)
    assert close(dz, -lr * K @ G, 1e-9)
    assert close(np.diag(K), 1.0) and np.all(np.abs(K) <= 1 + 1e-12)


def test_conv_step_factor_is_patch_norm_plus_one_and_patchnorm_removes_it():
    x = RNG.normal(0, 1, (1, 2, 6, 6))
    x[0, :, :2] *= 5
    positions = [(0, 0, 0), (0, 1, 3), (0, 3, 3), (0, 5, 5)]
    dmap = measure.conv_divergence_map(x, 3, 1, 1)
    conv = nn.Conv2d(2, 3, 3, padding=1, rng=0, backend="numpy")
    # one position at a time; the cross terms to other positions do not touch this position's own factor
    f = measure.position_step_factors(conv, x, positions)
    assert np.allclose(f, [dmap[n, i, j] for n, i, j in positions], rtol=1e-8)
    f = measure.position_step_factors(npnorm.PatchNormConv2d(2, 3, 3, padding=1, rng=0, backend="numpy"), x,
                                      positions)
    assert np.allclose(f, 1.0, rtol=1e-8)


# -- the pre-normalizers are the transformer family's L2 normalization (eps under the root) ------------
@pytest.mark.parametrize("mode", ["l2", "rms", "affine"])
def test_radial_norm_is_the_shared_l2_normalization(mode, monkeypatch):
    from npnorm.divergence import prenorm
    from npnorm.transformer import l2norm
    x, g = RNG.normal(1, 2, (4, 6, 3)), RNG.standard_normal((4, 6, 3))
    calls = []
    for name in ("l2_normalize_forward", "l2_normalize_backward"):
        fn = getattr(l2norm, name)
        monkeypatch.setattr(prenorm, name, lambda *a, _fn=fn, _n=name, **k: calls.append(_n) or _fn(*a, **k))
    xh, cache = radial_norm_forward(x, mode, 1e-3, axis=1)
    dx = prenorm.radial_norm_backward(g, cache)
    assert calls == ["l2_normalize_forward", "l2_normalize_backward"]
    c, k = {"l2": (1.0, 1e-3), "rms": (1 / 6, 1e-3), "affine": (1.0, 1.0)}[mode]
    s = np.sqrt(c * np.sum(x * x, axis=1, keepdims=True) + k)
    assert close(xh, x / s)
    assert close(dx, (g - c * xh * np.sum(g * xh, axis=1, keepdims=True)) / s)   # (PRE-B)
    if mode == "l2":
        y, _ = l2norm.l2_normalize_forward(x, 1, 1e-3, eps_mode="sqrt")
        assert np.array_equal(xh, y)


def test_affine_radial_scaling_is_the_norm_of_the_augmented_input_not_a_floor():
    x = RNG.normal(0, 0.2, (5, 3))                                # ||x|| < 1: a floor of 1 would differ
    xh, _ = radial_norm_forward(x, "affine")
    aug = np.linalg.norm(np.c_[x, np.ones(5)], axis=1, keepdims=True)
    assert close(xh, x / aug)
    floor, _ = npnorm.transformer.l2norm.l2_normalize_forward(x, -1, 1.0)
    assert np.max(np.abs(floor - xh)) > 1e-3


# -- the kernel's float32 path: float32 data and products, float64 per-position norms ----------------
@pytest.mark.parametrize("mode", ["affine", "l2", "rms"])
@pytest.mark.parametrize("geom", [(3, 1, 1), ((3, 5), 1, (2, 0)), (3, 2, 1), ((2, 3), (2, 1), (0, 1))])
@pytest.mark.parametrize("f", [4, 5])
def test_patchnorm_kernel_float32_agrees_with_the_float64_reference(mode, geom, f):
    """Stride 1 (the padded-plane path, several row tiles, a filter count that is not a multiple of
    4) and other strides (the patch-buffer path): float32 in, float32 out, within a few float32
    roundings of the float64 reference computed from the same float32 numbers."""
    k, s, p = geom
    kk = (k, k) if isinstance(k, int) else k
    x = RNG.normal(0.5, 1.5, (3, 3, 40, 21)).astype(np.float32)
    W, b = RNG.normal(0, 1, (f, 3) + kk).astype(np.float32), RNG.normal(0, 1, f).astype(np.float32)
    z, cache = patch_norm_conv2d_forward(x.astype(np.float64), W, b, s, p, mode)
    G = RNG.standard_normal(z.shape).astype(np.float32)
    ref = (z,) + patch_norm_conv2d_backward(G.astype(np.float64), cache)
    zk, ck = pn_kernel.patch_norm_conv2d_forward(x, W, b, s, p, mode)
    got = (zk,) + pn_kernel.patch_norm_conv2d_backward(G, ck)
    assert zk.dtype == np.float32 and got[1].dtype == np.float32
    for a, r in zip(got, ref):
        assert close(a, r, 1e-5)
    z64, c64 = pn_kernel.patch_norm_conv2d_forward(x.astype(np.float64), W, b, s, p, mode)   # and float64
    for a, r in zip((z64,) + pn_kernel.patch_norm_conv2d_backward(G.astype(np.float64), c64), ref):
        assert close(a, r)
