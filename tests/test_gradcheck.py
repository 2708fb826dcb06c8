"""Tests of the gradient checker itself: it must pass right backward passes and catch wrong ones."""

import numpy as np
import pytest

import npnorm
from npnorm.statistics.batchnorm import batch_norm_backward, batch_norm_forward
from npnorm.gradcheck import (
    GradcheckError,
    check_gradients,
    check_layer,
    compare_gradients,
    numerical_gradient,
    relative_error,
)
from npnorm.statistics.layernorm import layer_norm_backward, layer_norm_forward


# -- the numerical derivative ----------------------------------------------------------------------
@pytest.mark.parametrize("stencil", [2, 4])
def test_numerical_gradient_of_known_function(stencil, rng):
    x = rng.standard_normal((3, 4))
    dout = rng.standard_normal((3, 4))
    x_before = x.copy()
    num = numerical_gradient(lambda: np.sin(x) * x, x, dout, stencil=stencil)
    exact = dout * (np.cos(x) * x + np.sin(x))
    tol = 1e-8 if stencil == 2 else 1e-11
    assert np.max(np.abs(num - exact)) < tol
    # x is restored exactly after perturbation
    assert np.array_equal(x, x_before)


def test_fourth_order_stencil_is_more_accurate_than_two_point(rng):
    x = rng.standard_normal(50) * 3 + 5
    dout = rng.standard_normal(50)
    exact = dout * np.exp(x / 4) / 4
    err2 = np.max(np.abs(numerical_gradient(lambda: np.exp(x / 4), x, dout, stencil=2) - exact))
    err4 = np.max(np.abs(numerical_gradient(lambda: np.exp(x / 4), x, dout, stencil=4) - exact))
    assert err4 < err2 / 10


def test_relative_error_floor():
    assert relative_error(np.array([0.0]), np.array([0.0]))[0] == 0.0
    assert relative_error(np.array([1.0]), np.array([1.0 + 1e-9]))[0] == pytest.approx(5e-10, rel=1e-3)
    # tiny values are judged against the floor, not against each other
    assert relative_error(np.array([1e-12]), np.array([2e-12]), floor=1e-4)[0] == pytest.approx(1e-8)


def test_numerical_gradient_refuses_float32():
    x = np.ones(3, dtype=np.float32)
    with pytest.raises(TypeError, match="float64"):
        numerical_gradient(lambda: x * 2, x, np.ones(3))


def test_check_layer_refuses_float32_input():
    layer = npnorm.LayerNorm(4)
    with pytest.raises(TypeError, match="float64"):
        check_layer(layer, np.ones((2, 4), dtype=np.float32))


# -- it catches wrong backward passes --------------------------------------------------------------
def _bn_inputs(rng):
    x = 5 + 3 * rng.standard_normal((6, 4))
    w = 1 + 0.5 * rng.standard_normal(4)
    b = 0.5 * rng.standard_normal(4)
    return {"x": x, "weight": w, "bias": b}


def _bn_forward(x, weight, bias):
    return batch_norm_forward(x, weight, bias, 1e-5)


def test_right_batchnorm_backward_passes(rng):
    report = check_gradients(_bn_forward, batch_norm_backward, _bn_inputs(rng))
    assert report.passed
    assert report.max_rel_error < 1e-9


def test_catches_dx_scaled_by_1_01(rng):
    def scaled(dout, cache):
        dx, dw, db = batch_norm_backward(dout, cache)
        return dx * 1.01, dw, db

    report = check_gradients(_bn_forward, scaled, _bn_inputs(rng), raise_on_failure=False)
    assert not report.passed
    assert not report["x"].passed and report["weight"].passed and report["bias"].passed
    assert report["x"].max_rel_error > 1e-3
    assert "1.01" in report["x"].hint  # the diagnosis names the constant factor


def test_catches_dropped_mean_term(rng):
    def no_mean_term(dout, cache):
        m, x_hat, rstd, axes = cache["m"], cache["x_hat"], cache["rstd"], cache["axes"]
        g = dout * cache["weight"]
        dx = rstd / m * (m * g - x_hat * np.sum(g * x_hat, axis=axes, keepdims=True))  # forgot -sum(g)
        _, dw, db = batch_norm_backward(dout, cache)
        return dx, dw, db

    report = check_gradients(_bn_forward, no_mean_term, _bn_inputs(rng), raise_on_failure=False)
    assert not report["x"].passed
    assert report["x"].max_rel_error > 1e-3


def test_catches_wrong_gamma_gradient(rng):
    def wrong_gamma(dout, cache):
        dx, dw, db = batch_norm_backward(dout, cache)
        return dx, dout.sum(axis=0), db  # forgot to multiply by x_hat

    with pytest.raises(GradcheckError) as info:
        check_gradients(_bn_forward, wrong_gamma, _bn_inputs(rng))
    report = info.value.report
    assert not report["weight"].passed and report["x"].passed
    msg = str(info.value)
    # the message a learner sees names the gradient, the worst index and both values
    assert "dweight is wrong" in msg and "worst index" in msg and "FAIL" in msg


def test_catches_wrong_shape_and_missing_gradient(rng):
    def bad(dout, cache):
        dx, dw, db = batch_norm_backward(dout, cache)
        return dx, dw[None, :], None

    report = check_gradients(_bn_forward, bad, _bn_inputs(rng), raise_on_failure=False)
    assert not report["weight"].passed and "shape" in report["weight"].hint
    assert not report["bias"].passed and "None" in report["bias"].hint


def test_check_layer_catches_broken_layer_and_reports_params(rng):
    class BrokenLayerNorm(npnorm.LayerNorm):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["bias"] = self.grads["bias"] * 0.5
            return dx

    layer = BrokenLayerNorm(5)
    layer.params["weight"] = 1 + rng.standard_normal(5) * 0.5
    report = check_layer(layer, 3 + 2 * rng.standard_normal((4, 5)), raise_on_failure=False)
    assert not report.passed
    assert report["x"].passed and report["weight"].passed and not report["bias"].passed


def test_check_layer_does_not_modify_layer_state(rng):
    layer = npnorm.BatchNorm1d(3)
    before = layer.running_mean.copy(), layer.running_var.copy(), layer.num_batches_tracked
    check_layer(layer, rng.standard_normal((5, 3)))
    assert np.array_equal(layer.running_mean, before[0]) and np.array_equal(layer.running_var, before[1])
    assert layer.num_batches_tracked == before[2]


# -- why the upstream gradient must be random ------------------------------------------------------
def _broken_layer_norm_backward(dout, cache):
    """A plausible mistake: the variance path is forgotten, so the x_hat * mean(g * x_hat) term is missing."""
    dy = np.asarray(dout, dtype=np.float64)
    g = dy * cache["weight"]
    axes = cache["axes"]
    dx = cache["rstd"] * (g - g.mean(axis=axes, keepdims=True))
    dweight = (dy * cache["x_hat"]).sum(axis=cache["batch_axes"])
    dbias = dy.sum(axis=cache["batch_axes"])
    return dx, dweight, dbias


def test_all_ones_upstream_misses_a_broken_layernorm_backward(rng):
    """Live example: with dout = 1 and the default gamma = 1, the true dx is exactly zero, and so is
    the broken one's, so the check passes; a random dout exposes the bug at once."""
    x = 5 + 3 * rng.standard_normal((4, 6))
    inputs = {"x": x, "weight": np.ones(6), "bias": np.zeros(6)}

    def forward(x, weight, bias):
        return layer_norm_forward(x, (6,), weight, bias, 1e-5)

    ones = check_gradients(forward, _broken_layer_norm_backward, inputs, dout="ones", raise_on_failure=False)
    assert ones.passed, str(ones)  # the blind spot: a broken backward passes
    assert "all-ones" in str(ones)
    random = check_gradients(forward, _broken_layer_norm_backward, inputs, raise_on_failure=False)
    assert not random.passed
    assert random["x"].max_rel_error > 1e-2
    # and the correct backward passes both
    assert check_gradients(forward, layer_norm_backward, inputs, dout="ones").passed
    assert check_gradients(forward, layer_norm_backward, inputs).passed


def test_compare_gradients_reports_worst_index():
    numeric = np.zeros((2, 3)) + 1.0
    analytic = numeric.copy()
    analytic[1, 2] = 2.0
    comp = compare_gradients("x", analytic, numeric)
    assert comp.worst_index == (1, 2)
    assert comp.analytic_at_worst == 2.0 and comp.numeric_at_worst == 1.0
    assert not comp.passed


def test_check_gradients_refuses_float32_and_leaves_inputs_alone(rng):
    inputs = _bn_inputs(rng)
    copies = {k: v.copy() for k, v in inputs.items()}
    check_gradients(_bn_forward, batch_norm_backward, inputs)
    assert all(np.array_equal(inputs[k], copies[k]) for k in inputs)
    inputs["x"] = inputs["x"].astype(np.float32)
    with pytest.raises(TypeError, match="float64"):
        check_gradients(_bn_forward, batch_norm_backward, inputs)


def test_zero_true_gradient_is_judged_against_roundoff(rng):
    """A bias followed by batch norm has a true gradient of exactly zero. Central differences give
    round-off there; the check accepts that, but still rejects a wrong non-zero answer."""
    x = 2 + rng.standard_normal((5, 3))
    inputs = {"x": x, "b": rng.standard_normal(3)}

    def forward(x, b):
        out, cache = batch_norm_forward(x + b, None, None)
        return out, cache

    def right(dout, cache):
        dx = batch_norm_backward(dout, cache)[0]
        return dx, np.zeros(3)

    def wrong(dout, cache):
        dx = batch_norm_backward(dout, cache)[0]
        return dx, dout.sum(axis=0) * 1e-3  # small, but not round-off

    report = check_gradients(forward, right, inputs)
    assert report.passed and report.floor >= 1e-4
    bad = check_gradients(forward, wrong, inputs, raise_on_failure=False)
    assert not bad["b"].passed and bad["x"].passed
