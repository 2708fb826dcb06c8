"""Conventions (PyTorch's) and hard-but-valid inputs of the core normalizers."""

import numpy as np
import pytest

import npnorm
from npnorm.statistics.batchnorm import batch_norm_backward, batch_norm_backward_staged, batch_norm_forward
from npnorm.gradcheck import check_layer


# -- batch norm: running statistics, modes ---------------------------------------------------------
def test_batchnorm_running_statistics_follow_pytorch(rng):
    bn = npnorm.BatchNorm2d(3, momentum=0.1)
    rm, rv = np.zeros(3), np.ones(3)
    for step in range(4):
        x = 2 + 3 * rng.standard_normal((4, 3, 2, 5))
        bn(x)
        m = 4 * 2 * 5
        mean = x.mean(axis=(0, 2, 3))
        unbiased = x.var(axis=(0, 2, 3)) * m / (m - 1)
        rm = 0.9 * rm + 0.1 * mean
        rv = 0.9 * rv + 0.1 * unbiased
        assert bn.num_batches_tracked == step + 1
    np.testing.assert_allclose(bn.running_mean, rm, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(bn.running_var, rv, rtol=1e-13)


def test_batchnorm_normalizes_with_the_biased_variance(rng):
    x = rng.standard_normal((5, 2))
    out = npnorm.BatchNorm1d(2)(x)
    expected = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)  # np.var is biased (ddof=0)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_batchnorm_momentum_none_is_a_cumulative_average(rng):
    bn = npnorm.BatchNorm1d(2, momentum=None)
    batches = [rng.standard_normal((6, 2)) + k for k in range(3)]
    for x in batches:
        bn(x)
    np.testing.assert_allclose(bn.running_mean, np.mean([x.mean(0) for x in batches], axis=0), rtol=1e-13)
    np.testing.assert_allclose(bn.running_var, np.mean([x.var(0, ddof=1) for x in batches], axis=0), rtol=1e-13)


def test_batchnorm_eval_uses_running_statistics_and_does_not_update(rng):
    bn = npnorm.BatchNorm1d(3)
    for _ in range(3):
        bn(rng.standard_normal((8, 3, 2)) * 2 + 1)
    bn.params["weight"] = rng.standard_normal(3)
    bn.params["bias"] = rng.standard_normal(3)
    rm, rv, t = bn.running_mean.copy(), bn.running_var.copy(), bn.num_batches_tracked
    bn.eval()
    x = rng.standard_normal((2, 3, 2))
    out = bn(x)
    view = (1, 3, 1)
    expected = (x - rm.reshape(view)) / np.sqrt(rv.reshape(view) + 1e-5) * bn.params["weight"].reshape(view) \
        + bn.params["bias"].reshape(view)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    assert np.array_equal(bn.running_mean, rm) and np.array_equal(bn.running_var, rv)
    assert bn.num_batches_tracked == t
    # eval mode with batch size 1 is fine: the statistics are not the batch's
    assert bn(x[:1]).shape == (1, 3, 2)


def test_batchnorm_without_running_stats_uses_batch_statistics_in_eval(rng):
    bn = npnorm.BatchNorm2d(2, track_running_stats=False)
    assert bn.running_mean is None and bn.running_var is None and bn.num_batches_tracked is None
    x = rng.standard_normal((3, 2, 2, 2))
    train_out = bn(x)
    np.testing.assert_array_equal(bn.eval()(x), train_out)


def test_batchnorm_without_affine_has_no_parameters(rng):
    bn = npnorm.BatchNorm1d(3, affine=False)
    assert bn.params == {}
    bn(rng.standard_normal((4, 3)))
    bn.backward(rng.standard_normal((4, 3)))
    assert bn.grads == {}


def test_batchnorm2d_trains_with_batch_size_one(rng):
    """N = 1 is allowed when there are several values per channel (H * W > 1)."""
    layer = npnorm.BatchNorm2d(2)
    x = 3 + rng.standard_normal((1, 2, 3, 3))
    out = layer(x)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 5)])
def test_staged_and_fused_backward_agree(shape, rng):
    x = 5 + 3 * rng.standard_normal(shape)
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    _, cache = batch_norm_forward(x, w, b)
    dout = rng.standard_normal(shape)
    staged = batch_norm_backward_staged(dout, cache)
    fused = batch_norm_backward(dout, cache)
    for s, f in zip(staged, fused):
        np.testing.assert_allclose(s, f, rtol=1e-10, atol=1e-12)
    # and with no affine transform
    _, cache = batch_norm_forward(x, None, None)
    np.testing.assert_allclose(batch_norm_backward_staged(dout, cache)[0], batch_norm_backward(dout, cache)[0],
                               rtol=1e-10, atol=1e-12)


# -- instance norm, RMSNorm conventions -------------------------------------------------------------
def test_instancenorm_running_statistics_follow_pytorch(rng):
    layer = npnorm.InstanceNorm1d(2, track_running_stats=True)
    x = 1 + 2 * rng.standard_normal((3, 2, 5))
    layer(x)
    np.testing.assert_allclose(layer.running_mean, 0.1 * x.mean(axis=2).mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(layer.running_var, 0.9 + 0.1 * x.var(axis=2, ddof=1).mean(axis=0), rtol=1e-13)
    layer.eval()
    y = layer(x)
    expected = (x - layer.running_mean[None, :, None]) / np.sqrt(layer.running_var[None, :, None] + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-12)


def test_instancenorm_defaults_use_instance_statistics_in_eval(rng):
    layer = npnorm.InstanceNorm2d(3)
    assert layer.params == {} and layer.running_mean is None
    x = rng.standard_normal((2, 3, 4, 4))
    np.testing.assert_array_equal(layer(x), layer.eval()(x))


def test_instancenorm_unbatched_input(rng):
    x = rng.standard_normal((3, 4, 4))
    layer = npnorm.InstanceNorm2d(3, affine=True)
    np.testing.assert_allclose(layer(x[None])[0], layer(x))
    assert layer.backward(np.ones_like(x)).shape == x.shape


@pytest.mark.parametrize("dtype, eps", [(np.float32, np.finfo(np.float32).eps), (np.float64, np.finfo(np.float64).eps)])
def test_rmsnorm_default_eps_is_the_dtype_machine_epsilon(dtype, eps):
    x = np.full((1, 4), 1e-4, dtype=dtype)  # tiny values, where eps matters
    out = npnorm.RMSNorm(4)(x)
    expected = 1e-4 / np.sqrt(1e-8 + float(eps))
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_groupnorm_extremes_equal_layernorm_and_instancenorm(rng):
    x = rng.standard_normal((2, 4, 3, 3))
    ln = npnorm.LayerNorm((4, 3, 3), elementwise_affine=False)
    np.testing.assert_allclose(npnorm.GroupNorm(1, 4, affine=False)(x), ln(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(npnorm.GroupNorm(4, 4, affine=False)(x), npnorm.InstanceNorm2d(4)(x),
                               rtol=1e-12, atol=1e-12)


def test_adain_transfers_style_statistics(rng):
    content = 3 + 2 * rng.standard_normal((2, 3, 5, 5))
    style = -1 + 0.5 * rng.standard_normal((2, 3, 4, 6))
    out = npnorm.AdaIN(eps=1e-12)(content, style)
    np.testing.assert_allclose(out.mean(axis=(2, 3)), style.mean(axis=(2, 3)), rtol=1e-10)
    np.testing.assert_allclose(out.std(axis=(2, 3)), style.std(axis=(2, 3)), rtol=1e-8)


# -- hard but valid input ---------------------------------------------------------------------------
def _constant_cases():
    yield npnorm.LayerNorm(5), np.full((3, 5), 7.0), (1, 5)
    yield npnorm.BatchNorm1d(4), np.full((6, 4), -3.0), (1, 4)
    yield npnorm.BatchNorm2d(2), np.full((2, 2, 3, 3), 2.5), (1, 2, 1, 1)
    yield npnorm.GroupNorm(2, 4), np.full((2, 4, 3), 1.5), (1, 4, 1)
    yield npnorm.InstanceNorm2d(2, affine=True), np.full((2, 2, 3, 3), 9.0), (1, 2, 1, 1)


@pytest.mark.parametrize("layer, x, view", list(_constant_cases()), ids=lambda v: type(v).__name__ if hasattr(v, "params") else "")
def test_constant_input_gives_beta_and_finite_gradients(layer, x, view, rng):
    """Variance 0: x_hat = 0, so the output is beta; eps keeps every gradient finite."""
    layer.params["weight"] = rng.standard_normal(layer.params["weight"].shape)
    layer.params["bias"] = rng.standard_normal(layer.params["bias"].shape)
    out = layer(x)
    np.testing.assert_allclose(out, np.broadcast_to(layer.params["bias"].reshape(view), x.shape), atol=1e-12)
    dx = layer.backward(rng.standard_normal(x.shape))
    assert np.all(np.isfinite(dx))
    assert all(np.all(np.isfinite(g)) for g in layer.grads.values())
    # and the gradients are right. The output is linear in the parameters, so the default step
    # checks them; in x the function is smooth but varies on the scale sqrt(eps) ~ 3e-3, so the
    # input gradient needs a step well below that.
    params_report = check_layer(layer, x, check_inputs=False, raise_on_failure=False)
    assert params_report.passed, str(params_report)
    input_report = check_layer(layer, x, params=False, h=3e-5, raise_on_failure=False)
    assert input_report.passed, str(input_report)


def test_rmsnorm_zero_row_is_finite(rng):
    layer = npnorm.RMSNorm(4, eps=1e-6)
    out = layer(np.zeros((2, 4)))
    assert np.array_equal(out, np.zeros((2, 4)))
    assert np.all(np.isfinite(layer.backward(rng.standard_normal((2, 4)))))


@pytest.mark.parametrize(
    "make, shape",
    [(lambda: npnorm.LayerNorm(64), (8, 64)), (lambda: npnorm.BatchNorm2d(4), (8, 4, 6, 6)),
     (lambda: npnorm.GroupNorm(2, 4), (3, 4, 8, 8)), (lambda: npnorm.InstanceNorm2d(4), (3, 4, 8, 8)),
     (lambda: npnorm.BatchNorm1d(16), (32, 16))],
    ids=["LayerNorm", "BatchNorm2d", "GroupNorm", "InstanceNorm2d", "BatchNorm1d"],
)
def test_float32_with_large_offset_matches_float64(make, shape, rng):
    """float32 input at 1e4 +- 1: catastrophic cancellation would ruin E[x^2] - E[x]^2."""
    x32 = (1e4 + rng.standard_normal(shape)).astype(np.float32)
    layer = make()
    out32 = layer(x32)
    out64 = layer(x32.astype(np.float64))
    assert out32.dtype == np.float32
    assert np.max(np.abs(out32.astype(np.float64) - out64)) < 1e-3


def test_instancenorm_momentum_none_is_cumulative_average(rng):
    """A deliberate difference: PyTorch freezes the running statistics with momentum=None."""
    layer = npnorm.InstanceNorm1d(2, momentum=None, track_running_stats=True)
    batches = [rng.standard_normal((3, 2, 5)) + k for k in range(3)]
    for x in batches:
        layer(x)
    assert layer.num_batches_tracked == 3
    np.testing.assert_allclose(layer.running_mean, np.mean([x.mean(axis=2).mean(0) for x in batches], axis=0),
                               rtol=1e-13)
