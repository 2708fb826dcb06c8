"""The rest of the catalog beyond the registry's gradient checks: each layer's defining properties,
its limits (where it becomes a layer we already trust) and its reference conventions."""

import numpy as np
import pytest

import npnorm
from npnorm.gradcheck import numerical_gradient
from npnorm.statistics.batchrenorm import batch_renorm_backward, batch_renorm_forward, batch_renorm_schedule


@pytest.fixture
def x4(rng):
    return rng.normal(2.0, 3.0, (6, 3, 4, 5))


# --- batch renormalization ---------------------------------------------------------------------

def test_batch_renorm_with_rmax_1_dmax_0_is_batchnorm(x4, rng):
    br = npnorm.BatchRenorm2d(3, rmax=1.0, dmax=0.0)
    bn = npnorm.BatchNorm2d(3, backend="numpy")
    br.running_mean, br.running_std = rng.normal(size=3), rng.uniform(0.5, 2, 3)
    dy = rng.standard_normal(x4.shape)
    np.testing.assert_allclose(br(x4), bn(x4), atol=1e-13)
    np.testing.assert_allclose(br.backward(dy), bn.backward(dy), atol=1e-13)


def test_batch_renorm_backward_is_the_gradient_with_r_and_d_frozen(x4, rng):
    """Inside the clipping range r and d depend on x; the paper's backward treats them as constants,
    which is exactly the gradient of the forward with r, d given."""
    w, b = rng.normal(1, 0.3, 3), rng.normal(0, 0.3, 3)
    rm, rs = rng.normal(2, 0.3, 3), rng.uniform(2.5, 3.5, 3)
    out, cache = batch_renorm_forward(x4, w, b, rm, rs, 3.0, 5.0)
    r, d = cache["r"], cache["d"]
    assert np.all((r > 1 / 3) & (r < 3)) and np.all(np.abs(d) < 5)      # not clipped
    dy = rng.standard_normal(x4.shape)
    dx = batch_renorm_backward(dy, cache)[0]
    z = x4.copy()
    frozen = numerical_gradient(lambda: batch_renorm_forward(z, w, b, rm, rs, 3.0, 5.0, r=r, d=d)[0], z, dy)
    np.testing.assert_allclose(dx, frozen, rtol=1e-6, atol=1e-8)
    # and it is *not* the full gradient there (r and d do move with x)
    full = numerical_gradient(lambda: batch_renorm_forward(z, w, b, rm, rs, 3.0, 5.0)[0], z, dy)
    assert np.max(np.abs(dx - full)) > 1e-4


def test_batch_renorm_running_std_and_eval(x4):
    br = npnorm.BatchRenorm2d(3, momentum=0.5)
    br(x4)
    std = np.sqrt(x4.var(axis=(0, 2, 3)) + 1e-5)
    np.testing.assert_allclose(br.running_std, 0.5 + 0.5 * std)
    np.testing.assert_allclose(br.running_mean, 0.5 * x4.mean(axis=(0, 2, 3)))
    br.eval()
    expected = (x4 - br.running_mean.reshape(1, -1, 1, 1)) / br.running_std.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(br(x4), expected, atol=1e-13)


def test_batch_renorm_schedule():
    assert batch_renorm_schedule(0) == (1.0, 0.0)
    assert batch_renorm_schedule(5000) == (1.0, 0.0)
    assert batch_renorm_schedule(15000) == pytest.approx((1 + 2 * 10000 / 35000, 5 * 10000 / 20000))
    assert batch_renorm_schedule(10**6) == (3.0, 5.0)


# --- ghost batch norm ---------------------------------------------------------------------------

def test_ghost_batchnorm_is_batchnorm_per_virtual_batch(x4, rng):
    gbn = npnorm.GhostBatchNorm(3, virtual_batch_size=2)
    dy = rng.standard_normal(x4.shape)
    out, dx = gbn(x4), gbn.backward(dy)
    dw = np.zeros(3)
    means = []
    for lo in (0, 2, 4):
        bn = npnorm.BatchNorm2d(3, backend="numpy")
        np.testing.assert_allclose(out[lo:lo + 2], bn(x4[lo:lo + 2]), atol=1e-13)
        np.testing.assert_allclose(dx[lo:lo + 2], bn.backward(dy[lo:lo + 2]), atol=1e-13)
        dw += bn.grads["weight"]
        means.append(x4[lo:lo + 2].mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(gbn.grads["weight"], dw, atol=1e-12)
    np.testing.assert_allclose(gbn.running_mean, 0.1 * np.mean(means, axis=0), atol=1e-14)


def test_ghost_batchnorm_with_one_virtual_batch_is_batchnorm(x4):
    np.testing.assert_allclose(npnorm.GhostBatchNorm(3, virtual_batch_size=64)(x4),
                               npnorm.BatchNorm2d(3, backend="numpy")(x4), atol=1e-13)


def test_ghost_batchnorm_rejects_a_virtual_batch_of_one_value():
    with pytest.raises(ValueError, match="virtual batch"):
        npnorm.GhostBatchNorm(2, virtual_batch_size=1)(np.ones((4, 2)))


# --- FRN, EvoNorm, GRN --------------------------------------------------------------------------

def test_frn_is_per_sample_and_the_tlu_is_a_learned_relu(x4):
    frn = npnorm.FilterResponseNormTlu2d(3)
    out = frn(x4)
    np.testing.assert_allclose(out[:2], npnorm.FilterResponseNormTlu2d(3)(x4[:2]))
    nu2 = np.mean(x4**2, axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(out, np.maximum(x4 / np.sqrt(nu2 + 1e-5), 0.0), atol=1e-14)
    frn.params["tau"][:] = -np.inf
    np.testing.assert_allclose(frn(x4), x4 / np.sqrt(nu2 + 1e-5), atol=1e-14)


def test_evonorm_b0_formula_and_eval(x4, rng):
    layer = npnorm.EvoNorm2dB0(3)
    layer.params["v"] = rng.normal(1, 0.5, 3)
    v = layer.params["v"].reshape(1, -1, 1, 1)
    left = np.sqrt(x4.var(axis=(0, 2, 3), keepdims=True) + 1e-3)
    right = v * x4 + np.sqrt(x4.var(axis=(2, 3), keepdims=True) + 1e-3)
    np.testing.assert_allclose(layer(x4), x4 / np.maximum(left, right), atol=1e-14)
    m = x4.size // 3
    np.testing.assert_allclose(layer.running_var, 0.9 + 0.1 * x4.var(axis=(0, 2, 3)) * m / (m - 1))
    layer.eval()
    left = np.sqrt(layer.running_var.reshape(1, -1, 1, 1) + 1e-3)
    np.testing.assert_allclose(layer(x4), x4 / np.maximum(left, right), atol=1e-14)


def test_evonorm_s0_formula(rng):
    x = rng.normal(1, 2, (2, 4, 3, 3))
    layer = npnorm.EvoNorm2dS0(4, groups=2)
    g = x.reshape(2, 2, 2, 3, 3)
    std = np.sqrt(g.var(axis=(2, 3, 4), keepdims=True) + 1e-5)
    expected = ((x / (1 + np.exp(-x))).reshape(g.shape) / std).reshape(x.shape)
    np.testing.assert_allclose(layer(x), expected, atol=1e-14)
    assert npnorm.EvoNorm2dS0(8, group_size=4).groups == 2
    with pytest.raises(ValueError, match="divisible"):
        npnorm.EvoNorm2dS0(6, groups=4)


def test_grn_starts_as_identity_and_both_layouts_agree(x4, rng):
    nhwc = np.ascontiguousarray(x4.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(npnorm.GlobalResponseNorm(3)(nhwc), nhwc)
    last, first = npnorm.GlobalResponseNorm(3), npnorm.GlobalResponseNorm(3, channels_last=False)
    for layer in (last, first):
        layer.params["weight"] = np.array([0.5, -1.0, 2.0])
        layer.params["bias"] = np.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(last(nhwc).transpose(0, 3, 1, 2), first(x4), atol=1e-13)
    dy = rng.standard_normal(x4.shape)
    np.testing.assert_allclose(last.backward(np.ascontiguousarray(dy.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2),
                               first.backward(dy), atol=1e-13)
    g = np.sqrt(np.sum(x4**2, axis=(2, 3), keepdims=True))
    n = g / (g.mean(axis=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(first(x4), x4 + np.array([0.5, -1, 2]).reshape(1, -1, 1, 1) * x4 * n
                               + np.array([0.1, 0.2, 0.3]).reshape(1, -1, 1, 1), atol=1e-13)


# --- switchable normalization -------------------------------------------------------------------

def test_switchnorm_limits_and_running_stats(x4):
    sn = npnorm.SwitchNorm2d(3)
    sn.params["mean_weight"] = np.array([60.0, -60.0, -60.0])
    sn.params["var_weight"] = np.array([60.0, -60.0, -60.0])
    v_in = x4.var(axis=(2, 3), ddof=1, keepdims=True)              # the reference's unbiased variance
    expected = (x4 - x4.mean(axis=(2, 3), keepdims=True)) / np.sqrt(v_in + 1e-5)
    np.testing.assert_allclose(sn(x4), expected, atol=1e-12)
    mu = x4.mean(axis=(2, 3))
    t = v_in[..., 0, 0] + mu**2
    np.testing.assert_allclose(sn.running_mean, 0.003 * mu.mean(axis=0), atol=1e-15)
    np.testing.assert_allclose(sn.running_var, 0.003 * (t.mean(axis=0) - mu.mean(axis=0) ** 2), atol=1e-14)
    # equal logits: the plain average of the three statistics
    sn2 = npnorm.SwitchNorm2d(3)
    mu_ln = mu.mean(axis=1, keepdims=True)
    v_ln = t.mean(axis=1, keepdims=True) - mu_ln**2
    v_bn = t.mean(axis=0, keepdims=True) - mu.mean(axis=0, keepdims=True) ** 2
    mean = (mu + mu_ln + mu.mean(axis=0, keepdims=True)) / 3
    var = (v_in[..., 0, 0] + v_ln + v_bn) / 3
    np.testing.assert_allclose(sn2(x4), (x4 - mean[..., None, None]) / np.sqrt(var[..., None, None] + 1e-5),
                               atol=1e-12)


# --- IterNorm -----------------------------------------------------------------------------------

def test_iternorm_converges_to_zca_whitening(rng):
    a = rng.normal(size=(4, 4))
    x = rng.normal(size=(200, 4)) @ a + 3.0                      # strongly correlated channels
    xc = x - x.mean(axis=0)
    sigma = xc.T @ xc / len(x) + 1e-5 * np.eye(4)
    evals, evecs = np.linalg.eigh(sigma)
    zca = xc @ (evecs @ np.diag(evals**-0.5) @ evecs.T).T
    errors = []
    for t in (2, 5, 10):
        out = npnorm.IterNorm(4, T=t)(x)
        errors.append(np.max(np.abs(out - zca)))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-6, errors
    cov = np.cov(npnorm.IterNorm(4, T=10)(x).T, bias=True)
    np.testing.assert_allclose(cov, np.eye(4), atol=1e-3)      # eps in Sigma: I - eps W^2


def test_iternorm_groups_whiten_separately(rng):
    x = rng.normal(size=(50, 4, 2))
    out = npnorm.IterNorm(4, num_groups=2, T=6)(x)
    np.testing.assert_allclose(out[:, :2], npnorm.IterNorm(2, T=6)(x[:, :2]), atol=1e-13)
    assert npnorm.IterNorm(6, num_channels=3).num_groups == 2


# --- the contract of every new layer: empty batches, no view of the input ---------------------

NEW_LAYERS = ("LocalResponseNorm", "CrossMapLRN2d", "BatchRenorm1d", "BatchRenorm2d", "GhostBatchNorm",
              "FilterResponseNormTlu2d", "EvoNorm2dB0", "EvoNorm2dS0", "GlobalResponseNorm", "SwitchNorm2d",
              "IterNorm", "SyncBatchNorm")


def _builds():
    from npnorm.registry import REGISTRY
    for name in NEW_LAYERS:
        spec = REGISTRY[name]
        for case in spec.cases:
            for mode in case.modes:
                for backend in spec.backends:
                    yield pytest.param(spec, case, mode, backend, id=f"{name}-{case.name}-{mode}-{backend}")


@pytest.mark.parametrize("spec, case, mode, backend", list(_builds()))
def test_empty_batch_and_no_view_of_the_input(spec, case, mode, backend):
    import copy
    import inspect
    kw = {"backend": backend} if "backend" in inspect.signature(spec.cls).parameters else {}
    layer, (x,) = spec.build(case, seed=1, mode=mode, **kw)
    buffers = {k: copy.deepcopy(getattr(layer, k)) for k in ("running_mean", "running_var", "running_std",
                                                             "running_wm") if getattr(layer, k, None) is not None}
    empty = np.zeros((0,) + x.shape[1:])
    out = layer(empty)
    dx = layer.backward(np.zeros_like(out))
    assert out.shape == empty.shape and dx.shape == empty.shape
    assert set(layer.grads) == set(layer.params) and not any(np.any(g) for g in layer.grads.values())
    for k, v in buffers.items():
        np.testing.assert_array_equal(getattr(layer, k), v)
    # editing the input after the forward pass does not change the gradient
    a, (x,) = spec.build(case, seed=1, mode=mode, **kw)
    b, _ = spec.build(case, seed=1, mode=mode, **kw)
    xa = x.copy()
    out = a(xa)
    b(x.copy())
    dy = np.random.default_rng(0).standard_normal(out.shape)
    xa[...] = 0.0
    np.testing.assert_array_equal(a.backward(dy), b.backward(dy))
