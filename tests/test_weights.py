"""Weight normalization, spectral normalization and weight standardization: conventions, the
guarantees spectral normalization promises (and the one it does not), the wrappers, bad input.

The gradient checks of every registered case live in test_registry.py; the tests here check what a
gradient check cannot see.
"""

import copy

import numpy as np
import pytest

import npnorm
from npnorm.base import Module
from npnorm.gradcheck import DEFAULT_TOLERANCE, check_gradients, check_layer
from npnorm.weights.parametrize import ParametrizedModule, spectral_norm, weight_norm, weight_standardization, wrapper_spec
from npnorm.registry import REGISTRY, Case
from npnorm.weights.spectralnorm import (
    conv2d,
    conv2d_adjoint,
    conv2d_operator_norm,
    l2_normalize,
    power_iteration,
    spectral_norm_backward,
    spectral_norm_forward,
    weight_to_matrix,
)
from npnorm.weights.weightnorm import weight_norm_backward, weight_norm_forward
from npnorm.weights.weightstd import weight_standardization_forward


# -- weight normalization -------------------------------------------------------------------------
@pytest.mark.parametrize("shape, dim, g_shape", [
    ((4, 3), 0, (4, 1)),
    ((4, 3, 2, 2), 0, (4, 1, 1, 1)),
    ((4, 3, 2, 2), 1, (1, 3, 1, 1)),
    ((4, 3, 2, 2), -2, (1, 1, 2, 1)),   # negative dims count from the end (as PyTorch for -2)
    ((4, 3, 2, 2), -1, (1, 1, 1, 2)),   # -1 is the last axis (PyTorch: the whole tensor)
    ((4, 3, 2, 2), None, ()),
])
def test_weight_norm_starts_at_the_weight_with_pytorch_shapes(rng, shape, dim, g_shape):
    W = rng.standard_normal(shape)
    wn = npnorm.WeightNorm(W, dim=dim)
    assert wn.params["g"].shape == g_shape
    np.testing.assert_allclose(wn(), W, rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(wn.params["v"], W)
    assert wn.params["v"] is not W          # a copy: training does not write into the caller's array


def test_weight_norm_norm_axes(rng):
    W = rng.standard_normal((3, 2, 4))
    g = rng.uniform(0.5, 2.0, (3, 1, 1))
    w, _ = weight_norm_forward(W, g, dim=0)
    np.testing.assert_allclose(np.sqrt((w ** 2).sum(axis=(1, 2), keepdims=True)), g, rtol=1e-14)
    w, _ = weight_norm_forward(W, np.asarray(2.5), dim=None)
    assert np.isclose(np.linalg.norm(w), 2.5, rtol=1e-14)


def test_weight_norm_gradient_of_v_is_orthogonal_to_v(rng):
    v = rng.standard_normal((4, 5))
    g = rng.uniform(0.5, 2.0, (4, 1))
    _, cache = weight_norm_forward(v, g, 0)
    dv, dg = weight_norm_backward(rng.standard_normal((4, 5)), cache)
    np.testing.assert_allclose(np.sum(dv * v, axis=1), 0.0, atol=1e-13)
    assert dg.shape == g.shape


def test_weight_norm_zero_v_is_a_clear_error_not_nan(rng):
    W = rng.standard_normal((3, 4))
    W[1] = 0.0
    with pytest.raises(ValueError, match="all-zero slice"):
        npnorm.WeightNorm(W)
    npnorm.WeightNorm(W, dim=1)  # every column still has a non-zero entry
    wn = npnorm.WeightNorm(rng.standard_normal((3, 4)))
    wn.params["v"] = np.zeros((3, 4))
    with pytest.raises(ValueError, match="undefined"):
        wn()
    wn = npnorm.WeightNorm(rng.standard_normal((3, 4)), dim=None)
    wn.params["v"] = np.zeros((3, 4))
    with pytest.raises(ValueError, match="all zeros"):
        wn()


def test_weight_norm_train_and_eval_agree(rng):
    wn = npnorm.WeightNorm(rng.standard_normal((3, 4)))
    wn.params["g"] = rng.uniform(0.5, 2, (3, 1))
    np.testing.assert_array_equal(wn(), wn.eval()())


# -- spectral normalization: conventions ------------------------------------------------------------
def test_spectral_norm_creation_is_15_power_iterations_from_normalized_gaussians():
    W = np.random.default_rng(0).standard_normal((4, 6))
    sn = npnorm.SpectralNorm(W, seed=42)
    rng = np.random.default_rng(42)
    u0 = l2_normalize(rng.standard_normal(4))
    v0 = l2_normalize(rng.standard_normal(6))
    u, v = power_iteration(W, u0, v0, 15)
    np.testing.assert_array_equal(sn.u, u)
    np.testing.assert_array_equal(sn.v, v)
    # same seed, same vectors; a Generator is accepted too
    np.testing.assert_array_equal(npnorm.SpectralNorm(W, seed=42).v, sn.v)
    np.testing.assert_array_equal(npnorm.SpectralNorm(W, seed=np.random.default_rng(42)).v, sn.v)


def test_power_iteration_order_is_u_then_v(rng):
    M = rng.standard_normal((3, 5))
    u0, v0 = l2_normalize(rng.standard_normal(3)), l2_normalize(rng.standard_normal(5))
    u, v = power_iteration(M, u0, v0, 1)
    u_expected = M @ v0 / np.linalg.norm(M @ v0)                  # uses the old v ...
    np.testing.assert_allclose(u, u_expected, rtol=1e-14)
    np.testing.assert_allclose(v, M.T @ u_expected / np.linalg.norm(M.T @ u_expected), rtol=1e-14)  # ... then the new u


def test_spectral_norm_iterates_in_training_mode_only(rng):
    W = rng.standard_normal((4, 3, 2, 2))
    sn = npnorm.SpectralNorm(W, n_power_iterations=2, seed=0)
    sn.u, sn.v = l2_normalize(rng.standard_normal(4)), l2_normalize(rng.standard_normal(12))
    u0, v0 = sn.u.copy(), sn.v.copy()
    out = sn()                                      # training: 2 steps, then sigma = u^T M v
    u2, v2 = power_iteration(weight_to_matrix(W), u0, v0, 2)
    np.testing.assert_allclose(sn.u, u2, rtol=1e-14)
    sigma = u2 @ weight_to_matrix(W) @ v2
    assert np.isclose(sn.sigma, sigma, rtol=1e-14)
    np.testing.assert_allclose(out, W / sigma, rtol=1e-14)
    sn()                                            # a second call runs two more steps (as in PyTorch)
    np.testing.assert_allclose(sn.u, power_iteration(weight_to_matrix(W), u0, v0, 4)[0], rtol=1e-13)
    sn.eval()
    u_before = sn.u.copy()
    out = sn()
    np.testing.assert_array_equal(sn.u, u_before)   # eval: no iteration
    np.testing.assert_allclose(out, W / (sn.u @ weight_to_matrix(W) @ sn.v), rtol=1e-14)


def test_spectral_norm_dim_moves_that_axis_to_the_rows(rng):
    W = rng.standard_normal((2, 5, 3, 3))            # a ConvTranspose weight (in, out, kh, kw)
    sn = npnorm.SpectralNorm(W, dim=1, exact=True)
    assert sn.u.shape == (5,) and sn.v.shape == (18,)
    M = np.transpose(W, (1, 0, 2, 3)).reshape(5, -1)
    np.testing.assert_allclose(sn(), W / np.linalg.norm(M, 2), rtol=1e-13)


def test_spectral_norm_keeps_the_weight_dtype(rng):
    W = rng.standard_normal((4, 3)).astype(np.float32)
    sn = npnorm.SpectralNorm(W)
    out = sn()
    assert out.dtype == np.float32 and sn.u.dtype == np.float64
    sn.backward(np.ones((4, 3), np.float32))
    assert sn.grads["weight"].dtype == np.float32


def test_u_v_sigma_are_settable_and_reproduce_a_run(rng):
    W = rng.standard_normal((5, 4))
    a = npnorm.SpectralNorm(W, seed=1)
    b = npnorm.SpectralNorm(W, seed=2)
    assert not np.allclose(a.v, b.v)
    b.u, b.v = a.u, a.v
    for _ in range(3):
        np.testing.assert_array_equal(a(), b())
    # sigma before any forward: what an eval-mode forward would use now
    c = npnorm.SpectralNorm(W, seed=3)
    assert np.isclose(c.sigma, c.u @ W @ c.v, rtol=1e-15)
    assert np.isclose(c.eval()() [0, 0], W[0, 0] / c.sigma, rtol=1e-15)
    # pinning sigma: forward divides by it, u and v stay put, backward treats it as a constant
    u_before = c.u.copy()
    c.train()
    c.sigma = 2.0
    assert c.sigma_pinned and c.sigma == 2.0
    np.testing.assert_array_equal(c(), W / 2.0)
    np.testing.assert_array_equal(c.u, u_before)
    G = rng.standard_normal((5, 4))
    c.backward(G)
    np.testing.assert_allclose(c.grads["weight"], G / 2.0, rtol=1e-15)
    c.sigma = None
    assert not c.sigma_pinned
    c()
    assert np.isclose(c.sigma, c.u @ W @ c.v, rtol=1e-15)


def test_exact_mode_uses_the_svd(rng):
    W = rng.standard_normal((3, 2, 2, 2))
    sn = npnorm.SpectralNorm(W, exact=True)
    out = sn()
    assert np.isclose(sn.sigma, np.linalg.norm(W.reshape(3, -1), 2), rtol=1e-14)
    assert np.isclose(np.linalg.norm(out.reshape(3, -1), 2), 1.0, rtol=1e-14)


# -- spectral normalization: what the gradient check can and cannot assert --------------------------
def test_train_mode_gradient_treats_the_updated_u_v_as_constants(rng):
    """Away from convergence, the training forward W -> W / sigma(W, u'(W), v'(W)) depends on W also
    through this step's power iteration, which (SN4) ignores (as PyTorch does). So (SN4) is *not* its
    full derivative - the registry checks train mode with converged u, v, where the two coincide. What
    (SN4) always is: the exact gradient of W -> W / (u'^T M v') with u', v' frozen after the step."""
    W = rng.standard_normal((4, 6))
    sn = npnorm.SpectralNorm(W, seed=0)
    sn.u, sn.v = power_iteration(W, l2_normalize(rng.standard_normal(4)), l2_normalize(rng.standard_normal(6)), 1)
    # 1. the full derivative of the training forward (central differences through the iteration) differs
    report = check_layer(sn, seed=3, raise_on_failure=False)
    assert report["weight"].max_rel_error > 1e-3
    # 2. with the post-step u', v' frozen, (SN4) is exact
    layer = copy.deepcopy(sn)
    layer()
    u1, v1 = layer.u, layer.v
    check_gradients(lambda weight: spectral_norm_forward(weight, u1, v1), spectral_norm_backward,
                    {"weight": W.copy()}, seed=3)
    # 3. and it is what the layer's backward returns in training mode
    G = rng.standard_normal((4, 6))
    layer.backward(G)
    _, cache = spectral_norm_forward(W, u1, v1)
    np.testing.assert_allclose(layer.grads["weight"], spectral_norm_backward(G, cache), rtol=1e-14)


def test_train_mode_check_is_exact_at_the_fixed_point(rng):
    """At the top singular vectors the iteration's derivative does not move sigma (to first order):
    the full derivative of the training forward equals (SN4) to round-off."""
    W = rng.standard_normal((4, 6))
    sn = npnorm.SpectralNorm(W, seed=0)
    left, _, right_t = np.linalg.svd(W)
    sn.u, sn.v = left[:, 0], right_t[0]
    report = check_layer(sn, seed=3)
    assert report.max_rel_error < DEFAULT_TOLERANCE


# -- spectral normalization: convergence and the Lipschitz guarantee --------------------------------
def _steps_to_tolerance(sn: npnorm.SpectralNorm, target: float, rtol: float, max_steps: int = 2000) -> int:
    for step in range(1, max_steps + 1):
        sn()
        if abs(sn.sigma - target) <= rtol * target:
            return step
    raise AssertionError(f"no convergence in {max_steps} steps")


def test_persistent_power_iteration_reaches_the_spectral_norm():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((16, 24))
    exact = np.linalg.norm(W, 2)
    sn = npnorm.SpectralNorm(W, seed=0)
    steps = _steps_to_tolerance(sn, exact, 1e-6)
    assert abs(sn.sigma - exact) <= 1e-6 * exact
    assert np.isclose(np.linalg.norm(sn(), 2), 1.0, rtol=1e-6)
    assert steps < 500


def test_warm_start_needs_far_fewer_steps_than_a_cold_start():
    """Training changes W a little per step; the persistent u, v of the last step are already close to
    the new top singular vectors, while fresh random vectors start from scratch."""
    rng = np.random.default_rng(1)
    W = rng.standard_normal((16, 24))
    sn = npnorm.SpectralNorm(W, seed=0)
    _steps_to_tolerance(sn, np.linalg.norm(W, 2), 1e-10)          # converged on W
    W2 = W + 1e-3 * rng.standard_normal(W.shape)                  # a small optimizer step
    target = np.linalg.norm(W2, 2)
    warm_steps, cold_steps = [], []
    for seed in range(5):
        warm = copy.deepcopy(sn)
        warm.params["weight"] = W2.copy()
        warm_steps.append(_steps_to_tolerance(warm, target, 1e-6))
        cold = npnorm.SpectralNorm(W2, seed=seed)
        cold.u = l2_normalize(np.random.default_rng(seed).standard_normal(16))   # forget the warm-up
        cold.v = l2_normalize(np.random.default_rng(seed + 100).standard_normal(24))
        cold_steps.append(_steps_to_tolerance(cold, target, 1e-6))
    # measured: warm 1 step, cold 14-19 steps (sigma_2 / sigma_1 = 0.83 for this W)
    assert max(warm_steps) <= 2, warm_steps
    assert min(cold_steps) >= 5 * max(warm_steps), (warm_steps, cold_steps)


def test_spectrally_normalized_linear_map_is_1_lipschitz_and_tight(rng):
    W = 3.0 * rng.standard_normal((8, 12))
    sn = npnorm.SpectralNorm(W, seed=0)
    _steps_to_tolerance(sn, np.linalg.norm(W, 2), 1e-10)
    W_sn = sn.eval()()
    x = rng.standard_normal((500, 12)) * rng.uniform(0.01, 10, (500, 1))
    y = rng.standard_normal((500, 12))
    ratio = np.linalg.norm((x - y) @ W_sn.T, axis=1) / np.linalg.norm(x - y, axis=1)
    assert np.all(ratio <= 1 + 1e-6)
    assert ratio.max() < 0.999   # random directions do not attain the bound ...
    _, _, right_t = np.linalg.svd(W)
    d = right_t[0]               # ... the top right singular vector does
    for t in (1e-3, 1.0, 50.0):
        assert np.isclose(np.linalg.norm(W_sn @ (y[0] + t * d) - W_sn @ y[0]) / t, 1.0, rtol=1e-6)


# -- convolutions: the reshaped-matrix sigma is not the operator norm --------------------------------
def _naive_conv2d(x, w, stride, padding):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (wd + 2 * padding - kw) // stride + 1
    y = np.zeros((n, o, ho, wo))
    for b in range(n):
        for oc in range(o):
            for i in range(ho):
                for j in range(wo):
                    y[b, oc, i, j] = np.sum(w[oc] * xp[b, :, i * stride:i * stride + kh, j * stride:j * stride + kw])
    return y


@pytest.mark.parametrize("stride, padding", [(1, 0), (1, 1), (2, 1), (2, 0), (3, 2)])
def test_conv2d_and_its_adjoint(rng, stride, padding):
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 2))
    y = conv2d(x, w, stride, padding)
    np.testing.assert_allclose(y, _naive_conv2d(x, w, stride, padding), rtol=1e-12, atol=1e-12)
    r = rng.standard_normal(y.shape)
    lhs = np.sum(y * r)                                            # <A x, r>
    rhs = np.sum(x * conv2d_adjoint(r, w, (7, 6), stride, padding))  # <x, A^T r>
    assert np.isclose(lhs, rhs, rtol=1e-12)


def _dense_conv_matrix(w, size, stride, padding):
    c = w.shape[1]
    cols = []
    for k in range(c * size[0] * size[1]):
        e = np.zeros(c * size[0] * size[1])
        e[k] = 1.0
        cols.append(conv2d(e.reshape(1, c, *size), w, stride, padding).ravel())
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1), (1, 0)])
def test_conv_operator_norm_is_the_norm_of_the_dense_matrix(rng, stride, padding):
    w = rng.standard_normal((3, 2, 3, 3))
    exact = np.linalg.norm(_dense_conv_matrix(w, (6, 6), stride, padding), 2)
    assert np.isclose(conv2d_operator_norm(w, (6, 6), stride, padding), exact, rtol=1e-6)


def test_reshaped_sigma_is_not_the_conv_operator_norm(rng):
    w = rng.standard_normal((4, 3, 3, 3))
    reshaped = np.linalg.norm(w.reshape(4, -1), 2)
    true = conv2d_operator_norm(w, (16, 16), 1, 1)
    # for a 3x3 kernel the operator norm is up to sqrt(9) = 3 times the reshaped sigma
    assert reshaped * 1.2 < true <= 3 * reshaped * (1 + 1e-9)
    # so a "spectrally normalized" convolution is not 1-Lipschitz
    sn = npnorm.SpectralNorm(w, exact=True)
    assert conv2d_operator_norm(sn(), (16, 16), 1, 1) > 1.2
    # for a 1x1 kernel (a per-pixel linear map) the two coincide
    w1 = rng.standard_normal((4, 3, 1, 1))
    assert np.isclose(conv2d_operator_norm(w1, (5, 5)), np.linalg.norm(w1.reshape(4, 3), 2), rtol=1e-8)


# -- weight standardization ---------------------------------------------------------------------------
def test_weight_standardization_conventions(rng):
    W = 2.0 + 3.0 * rng.standard_normal((4, 3, 3, 3))
    timm = npnorm.WeightStandardization(W)()
    paper = npnorm.WeightStandardization(W, convention="paper")()
    flat_t, flat_p = timm.reshape(4, -1), paper.reshape(4, -1)
    np.testing.assert_allclose(flat_t.mean(axis=1), 0.0, atol=1e-14)
    np.testing.assert_allclose(flat_p.mean(axis=1), 0.0, atol=1e-14)
    np.testing.assert_allclose(flat_t.var(axis=1), 1.0, rtol=1e-5)           # biased variance ~ 1
    np.testing.assert_allclose(flat_p.std(axis=1, ddof=1), 1.0, rtol=1e-5)    # unbiased std ~ 1
    m = 27
    np.testing.assert_allclose(flat_p, flat_t * np.sqrt((m - 1) / m), rtol=1e-5)
    # exact formulas, with the eps where each convention puts it
    Wf = W.reshape(4, -1)
    xc = Wf - Wf.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(flat_t, xc / np.sqrt(xc.var(axis=1, keepdims=True) + 1e-6), rtol=1e-13)
    np.testing.assert_allclose(flat_p, xc / (xc.std(axis=1, ddof=1, keepdims=True) + 1e-5), rtol=1e-13)


def test_weight_standardization_constant_channel(rng):
    W = rng.standard_normal((3, 4))
    W[1] = 7.0
    for convention in ("timm", "paper"):
        ws = npnorm.WeightStandardization(W, convention=convention)
        out = ws()
        np.testing.assert_array_equal(out[1], 0.0)
        ws.backward(rng.standard_normal((3, 4)))
        assert np.all(np.isfinite(ws.grads["weight"]))
        # a constant channel's output is 0 whatever the shift: the gradient is centred
        assert np.isclose(ws.grads["weight"][1].sum(), 0.0, atol=1e-9)


def test_weight_standardization_paper_needs_fan_in_2(rng):
    with pytest.raises(ValueError, match="fan-in of at least 2"):
        npnorm.WeightStandardization(rng.standard_normal((3, 1)), convention="paper")
    out = npnorm.WeightStandardization(rng.standard_normal((3, 1)))()   # timm: zeros, no NaN
    np.testing.assert_array_equal(out, 0.0)
    with pytest.raises(ValueError, match="convention"):
        weight_standardization_forward(rng.standard_normal((3, 2)), convention="torch")


# -- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, error, match", [
    (lambda: npnorm.SpectralNorm(np.ones(5)), ValueError, "at least 2-D"),
    (lambda: npnorm.SpectralNorm(np.float64(3.0)), ValueError, "at least 2-D"),
    (lambda: npnorm.SpectralNorm(np.ones((3, 4)), n_power_iterations=0), ValueError, "n_power_iterations must be >= 1"),
    (lambda: npnorm.SpectralNorm(np.ones((3, 4)), n_power_iterations=1.5), TypeError, "n_power_iterations"),
    (lambda: npnorm.SpectralNorm(np.ones((3, 4)), dim=2), ValueError, "dim=2 is out of range"),
    (lambda: npnorm.SpectralNorm(np.ones((3, 4)), dim=-3), ValueError, "out of range"),
    (lambda: npnorm.SpectralNorm(np.ones((3, 4)), dim=None), TypeError, "dim must be an int"),
    (lambda: npnorm.SpectralNorm(np.ones((3, 4)), eps=0.0), ValueError, "eps"),
    (lambda: npnorm.SpectralNorm(np.ones((3, 4), dtype=int)), TypeError, "floating-point"),
    (lambda: npnorm.SpectralNorm(np.full((3, 4), np.nan)), ValueError, "NaN"),
    (lambda: npnorm.SpectralNorm(np.zeros((3, 4)))(), ValueError, "sigma"),
    (lambda: npnorm.WeightNorm(np.ones((3, 4)), dim=2), ValueError, "dim=2 is out of range"),
    (lambda: npnorm.WeightNorm(np.ones((3, 4)), dim=0.5), TypeError, "dim must be an int or None"),
    (lambda: npnorm.WeightNorm(np.float64(1.0)), ValueError, "at least 1 dimensions"),
    (lambda: npnorm.WeightStandardization(np.ones(4)), ValueError, "at least 2-D"),
    (lambda: npnorm.WeightStandardization(np.ones((3, 4)), eps=-1.0), ValueError, "eps"),
    (lambda: npnorm.WeightStandardization(np.ones((3, 4)), convention="std"), ValueError, "convention"),
])
def test_bad_input_is_a_clear_error(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_state_and_backward_errors(rng):
    sn = npnorm.SpectralNorm(rng.standard_normal((3, 4)))
    with pytest.raises(ValueError, match=r"u must have shape \(3,\)"):
        sn.u = np.ones(4)
    with pytest.raises(ValueError, match="NaN"):
        sn.v = np.full(4, np.nan)
    with pytest.raises(ValueError, match="> 0"):
        sn.sigma = -1.0
    with pytest.raises(RuntimeError, match="before forward"):
        sn.backward(np.ones((3, 4)))
    sn()
    with pytest.raises(ValueError, match=r"SpectralNorm\.backward: dout must have the shape of the forward "
                                         r"output \(3, 4\), got \(4, 3\)"):
        sn.backward(np.ones((4, 3)))
    sn.params["weight"] = np.ones((3, 5))
    with pytest.raises(ValueError, match="built for shape"):
        sn()


# -- wrapping a layer -------------------------------------------------------------------------------------
class TinyLinear(Module):
    """Test-only ``y = x W^T + b`` (npnorm.nn is written elsewhere); computes in float64 and returns
    the input's dtype, like every npnorm layer."""

    def __init__(self, in_features, out_features, rng):
        super().__init__()
        self.params["weight"] = rng.standard_normal((out_features, in_features))
        self.params["bias"] = rng.standard_normal(out_features)

    def forward(self, x):
        self._cache = x
        return (np.asarray(x, np.float64) @ self.params["weight"].T + self.params["bias"]).astype(x.dtype)

    def backward(self, dy):
        x = np.asarray(self._require_cache(), np.float64)
        dy64 = np.asarray(dy, np.float64)
        self.grads["weight"] = dy64.T @ x
        self.grads["bias"] = dy64.sum(axis=0)
        return (dy64 @ self.params["weight"]).astype(dy.dtype)


class TinyConvTranspose(TinyLinear):
    """Only its class name matters: spectral_norm picks dim=1 for ConvTranspose layers."""


_WRAPPER_SPECS = [
    wrapper_spec("spectral_norm(TinyLinear)", spectral_norm, lambda case, rng, dtype: TinyLinear(6, 4, rng),
                 cases=(Case("linear", {}, ((5, 6),)), Case("linear-3-iters", {"n_power_iterations": 3}, ((3, 6),)),
                        Case("exact", {"exact": True}, ((3, 6),))), reference="Miyato et al., 2018"),
    wrapper_spec("weight_norm(TinyLinear)", weight_norm, lambda case, rng, dtype: TinyLinear(5, 3, rng),
                 cases=(Case("dim0", {}, ((4, 5),)), Case("whole", {"dim": None}, ((4, 5),)))),
    wrapper_spec("weight_standardization(TinyLinear)", weight_standardization,
                 lambda case, rng, dtype: TinyLinear(5, 3, rng),
                 cases=(Case("timm", {}, ((4, 5),)), Case("paper", {"convention": "paper"}, ((4, 5),)))),
]


@pytest.mark.parametrize("spec, case, mode", [
    pytest.param(s, c, m, id=f"{s.name}-{c.name}-{m}") for s in _WRAPPER_SPECS for c in s.cases for m in c.modes])
def test_wrapped_layer_gradients(spec, case, mode):
    """The same check as test_registry.py, on the wrappers around a test-only layer (the registry gets
    cases for npnorm.nn.Linear / Conv2d once npnorm.nn exists)."""
    layer, inputs = spec.build(case, seed=7, mode=mode)
    report = check_layer(layer, *inputs, seed=11, raise_on_failure=False)
    assert {c.name for c in report.comparisons} == {"x"} | set(layer.params), report
    assert report.passed, str(report)


def test_wrapper_names_and_live_params(rng):
    lin = TinyLinear(6, 4, rng)
    W, b = lin.params["weight"], lin.params["bias"]
    m = spectral_norm(lin, seed=0)
    assert isinstance(m, ParametrizedModule)
    assert list(m.params) == ["bias", "parametrizations.weight.original"]
    assert [n for n, _ in m.named_parameters()] == list(m.params)
    np.testing.assert_array_equal(m.params["parametrizations.weight.original"], W)   # a copy, like WeightNorm's v
    assert m.params["bias"] is b
    assert m.parametrizations.weight.u.shape == (4,)
    x = rng.standard_normal((3, 6))
    y = m(x)
    np.testing.assert_allclose(y, x @ (W / m.parametrizations.weight.sigma).T + b, rtol=1e-13)
    np.testing.assert_allclose(m.weight, W / m.parametrizations.weight.sigma, rtol=1e-14)
    m.backward(np.ones_like(y))
    assert set(m.grads) == set(m.params)
    # an optimizer step through the view reaches the arrays the forward pass uses
    for k in list(m.params):
        m.params[k] = m.params[k] - 0.1 * m.grads[k]
    assert m.parametrizations.weight.params["weight"] is m.params["parametrizations.weight.original"]
    assert not np.allclose(m.params["parametrizations.weight.original"], W)
    with pytest.raises(KeyError, match="not a parameter"):
        m.params["weight"]
    with pytest.raises(TypeError):
        del m.params["bias"]
    # modes reach the normalizer and the layer
    m.eval()
    assert not m.parametrizations.weight.training and not m.module.training
    u = m.parametrizations.weight.u.copy()
    m(x)
    np.testing.assert_array_equal(m.parametrizations.weight.u, u)


def test_weight_norm_wrapper_keeps_the_output_and_uses_pytorch_names(rng):
    lin = TinyLinear(5, 3, rng)
    x = rng.standard_normal((4, 5))
    y0 = lin(x)
    m = weight_norm(lin)
    assert list(m.params) == ["bias", "parametrizations.weight.original0", "parametrizations.weight.original1"]
    assert m.params["parametrizations.weight.original0"].shape == (3, 1)
    np.testing.assert_allclose(m(x), y0, rtol=1e-13)


def test_wrapper_defaults_and_errors(rng):
    assert spectral_norm(TinyConvTranspose(6, 4, rng)).parametrizations.weight.dim == 1
    assert spectral_norm(TinyLinear(6, 4, rng), dim=1).parametrizations.weight.dim == 1
    with pytest.raises(ValueError, match="has no parameter 'kernel'"):
        spectral_norm(TinyLinear(6, 4, rng), name="kernel")
    lin = TinyLinear(6, 4, rng)
    with pytest.raises(ValueError, match="at least 2-D"):
        spectral_norm(lin, name="bias")
    assert "bias" in lin.params                     # a failed wrap leaves the layer as it was
    with pytest.raises(TypeError, match="npnorm Module"):
        weight_norm(np.ones((3, 3)))
    m = weight_standardization(TinyLinear(6, 4, rng))
    with pytest.raises(RuntimeError, match="before forward"):
        m.backward(np.ones((2, 4)))
    with pytest.raises(RuntimeError, match="forward pass first"):
        m.weight


def test_weight_specs_are_registered_with_both_modes_where_they_differ():
    sn = REGISTRY["SpectralNorm"]
    assert sn.family == "weights" and sn.input_names == ()
    both = [c for c in sn.cases if set(c.modes) == {"train", "eval"}]
    assert both and any(c.extra["uv"] == "partial" for c in sn.cases)
    assert {"WeightNorm", "WeightStandardization"} <= set(REGISTRY)
