"""Chapter 3 tasks: LayerNorm (3.1) and RMSNorm (3.2), forward against npnorm.statistics.layernorm, backward by
gradient check of the learner's own forward/backward pair."""

from __future__ import annotations

import pytest
import numpy as np
from task_helpers import (Mistake, expect_close, expect_gradients, failure_message, mentions, mutated_solution, rand,
                          rand_param, unpack)

from npnorm.statistics.layernorm import layer_norm_forward, rms_norm_forward

CHAPTER = "ch3_layernorm"


@pytest.fixture(scope="module")
def ch3(load):
    return load(CHAPTER)


def check_3_1_forward(mod) -> None:
    for shape, eps, seed in (((2, 3, 5), 1e-5, 0), ((4, 6), 1e-2, 1)):
        x, gamma, beta = rand(shape, seed, offset=-4.0, scale=3.0), rand_param(shape[-1:], seed + 1), rand(shape[-1:], seed + 2)
        out, _ = unpack(mod.layernorm_forward(x, gamma, beta, eps), ("out", "cache"), "layernorm_forward")
        ref, _ = layer_norm_forward(x, shape[-1:], gamma, beta, eps)
        expect_close(f"out (x of shape {shape}, eps={eps})", out, ref, rtol=1e-9, atol=1e-10,
                     hint="statistics over the last axis (axis=-1, keepdims=True), biased variance.")


def check_3_1_backward(mod) -> None:
    for shape, seed in (((2, 3, 5), 10), ((4, 6), 11)):
        inputs = {"x": rand(shape, seed, offset=-4.0, scale=3.0), "gamma": rand_param(shape[-1:], seed + 1),
                  "beta": rand(shape[-1:], seed + 2)}
        expect_gradients(f"your layernorm_backward (x of shape {shape})", mod.layernorm_forward,
                         mod.layernorm_backward, inputs, forward_name="layernorm_forward",
                         backward_name="layernorm_backward", seed=seed)


@pytest.mark.task("3.1")
def test_layernorm_forward_matches_reference(ch3):
    """layernorm_forward matches npnorm.layer_norm_forward"""
    check_3_1_forward(ch3)


@pytest.mark.task("3.1")
def test_layernorm_backward_gradcheck(ch3):
    """layernorm_backward passes the gradient check (dx, dgamma, dbeta; 3-d input)"""
    check_3_1_backward(ch3)


def check_3_2_forward(mod) -> None:
    for shape, eps, seed in (((2, 3, 5), 1e-6, 0), ((4, 6), 1e-2, 1)):
        x, gamma = rand(shape, seed, offset=1.0, scale=2.0), rand_param(shape[-1:], seed + 1)
        out, _ = unpack(mod.rmsnorm_forward(x, gamma, eps), ("out", "cache"), "rmsnorm_forward")
        ref, _ = rms_norm_forward(x, shape[-1:], gamma, eps)
        expect_close(f"out (x of shape {shape}, eps={eps})", out, ref, rtol=1e-9, atol=1e-10,
                     hint="x / sqrt(mean(x**2) + eps): no centring, eps inside the square root.")


def check_3_2_backward(mod) -> None:
    for shape, seed in (((2, 3, 5), 20), ((4, 6), 21)):
        inputs = {"x": rand(shape, seed, offset=1.0, scale=2.0), "gamma": rand_param(shape[-1:], seed + 1)}
        expect_gradients(f"your rmsnorm_backward (x of shape {shape})", mod.rmsnorm_forward, mod.rmsnorm_backward,
                         inputs, forward_name="rmsnorm_forward", backward_name="rmsnorm_backward", seed=seed)


@pytest.mark.task("3.2")
def test_rmsnorm_forward_matches_reference(ch3):
    """rmsnorm_forward matches npnorm.rms_norm_forward"""
    check_3_2_forward(ch3)


@pytest.mark.task("3.2")
def test_rmsnorm_backward_gradcheck(ch3):
    """rmsnorm_backward passes the gradient check (dx, dgamma)"""
    check_3_2_backward(ch3)


# -- mutations -------------------------------------------------------------------------------------

def test_mutation_dgamma_summed_over_one_axis_fails_3_1(tmp_path):
    mod = mutated_solution(CHAPTER, "dgamma = (dout * x_hat).reshape(-1, d).sum(axis=0)",
                           "dgamma = (dout * x_hat).sum(axis=0)", tmp_path)
    # right for a 2-d input, but a (2, 3, 5) input must be summed over both leading axes
    msg = failure_message(lambda: check_3_1_backward(mod))
    assert mentions(msg, r"x of shape \(2, 3, 5\)", "gamma", r"shape \(3, 5\), expected \(5,\)"), msg


def test_mutation_missing_mean_term_fails_3_1(tmp_path):
    mod = mutated_solution(CHAPTER, "dx = rstd * (g - g.mean(axis=-1, keepdims=True)\n                 - x_hat",
                           "dx = rstd * (g\n                 - x_hat", tmp_path)
    msg = failure_message(lambda: check_3_1_backward(mod))
    assert mentions(msg, "-> dx is wrong", r"gamma .* ok"), msg


def test_mutation_rms_eps_outside_sqrt_fails_3_2(tmp_path):
    mod = mutated_solution(CHAPTER, "rstd = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)",
                           "rstd = 1.0 / (np.sqrt(np.mean(x * x, axis=-1, keepdims=True)) + eps)", tmp_path)
    assert "first mismatch" in failure_message(lambda: check_3_2_forward(mod))


def test_mutation_rms_backward_with_centring_fails_3_2(tmp_path):
    mod = mutated_solution(CHAPTER, "dx = rstd * (g - x_hat * np.mean(g * x_hat, axis=-1, keepdims=True))",
                           "dx = rstd * (g - g.mean(axis=-1, keepdims=True) - x_hat * np.mean(g * x_hat, axis=-1, keepdims=True))",
                           tmp_path)
    assert "-> dx is wrong" in failure_message(lambda: check_3_2_backward(mod))


# -- the catalogue of common mistakes (npnorm.check names them; tests/exercises/test_mistakes.py) ----

def _ln_forward(x, gamma, beta, eps=1e-5, *, axis=-1, ddof=0):
    mu = x.mean(axis=axis, keepdims=True)
    xc = x - mu
    var = np.sum(xc * xc, axis=axis, keepdims=True) / (x.shape[axis] - ddof)
    rstd = 1.0 / np.sqrt(var + eps)
    return gamma * xc * rstd + beta, {"x_hat": xc * rstd, "rstd": rstd, "gamma": gamma}


def _ln_backward(dout, cache, *, mean_term=True, variance_term=True, dgamma_one_axis=False):
    x_hat, rstd, gamma = cache["x_hat"], cache["rstd"], cache["gamma"]
    d = dout.shape[-1]
    dgamma = (dout * x_hat).sum(axis=0) if dgamma_one_axis else (dout * x_hat).reshape(-1, d).sum(axis=0)
    dbeta = dout.reshape(-1, d).sum(axis=0)
    g = dout * gamma
    inner = g
    if mean_term:
        inner = inner - g.mean(axis=-1, keepdims=True)
    if variance_term:
        inner = inner - x_hat * np.mean(g * x_hat, axis=-1, keepdims=True)
    return rstd * inner, dgamma, dbeta


def _rms_forward(x, gamma, eps=1e-6, *, centred=False, eps_outside=False):
    z = x - x.mean(axis=-1, keepdims=True) if centred else x
    ms = np.mean(z * z, axis=-1, keepdims=True)
    rstd = 1.0 / (np.sqrt(ms) + eps) if eps_outside else 1.0 / np.sqrt(ms + eps)
    return gamma * z * rstd, {"x_hat": z * rstd, "rstd": rstd, "gamma": gamma}


def _rms_backward(dout, cache, *, mean_term=False, projection=True):
    x_hat, rstd, gamma = cache["x_hat"], cache["rstd"], cache["gamma"]
    dgamma = (dout * x_hat).reshape(-1, dout.shape[-1]).sum(axis=0)
    g = dout * gamma
    inner = g - g.mean(axis=-1, keepdims=True) if mean_term else g
    if projection:
        inner = inner - x_hat * np.mean(g * x_hat, axis=-1, keepdims=True)
    return rstd * inner, dgamma


def _with(func, **options):
    return lambda *args, **kwargs: func(*args, **kwargs, **options)


MISTAKES: list[Mistake] = [
    Mistake("3.1", "batch-axis", "layernorm_forward", _with(_ln_forward, axis=0),
            "you take the statistics over the batch (axis=0, that is BatchNorm); LayerNorm normalizes "
            "each example over its features: axis=-1, keepdims=True."),
    Mistake("3.1", "unbiased-variance", "layernorm_forward", _with(_ln_forward, ddof=1),
            "you normalize with the unbiased variance (divide by D - 1); LayerNorm uses the biased "
            "one: np.mean(xc * xc, axis=-1, keepdims=True)."),
    Mistake("3.1", "missing-mean-term", "layernorm_backward", _with(_ln_backward, mean_term=False),
            "dx misses the term through the mean, - mean(g) over the features: every feature moves "
            "the mean of its row."),
    Mistake("3.1", "missing-variance-term", "layernorm_backward", _with(_ln_backward, variance_term=False),
            "dx misses the term through the variance, - x_hat * mean(g * x_hat) over the features."),
    Mistake("3.1", "dgamma-one-leading-axis", "layernorm_backward", _with(_ln_backward, dgamma_one_axis=True),
            "dgamma and dbeta must be summed over EVERY leading axis (a (B, T, D) input sums over B and "
            "T): dout.reshape(-1, D).sum(axis=0); you summed over axis 0 only."),
    Mistake("3.2", "centred", "rmsnorm_forward", _with(_rms_forward, centred=True),
            "you subtract the mean: that is LayerNorm. RMSNorm divides x itself by "
            "sqrt(mean(x**2) + eps), with no centring."),
    Mistake("3.2", "eps-outside-sqrt", "rmsnorm_forward", _with(_rms_forward, eps_outside=True),
            "eps is added to the root mean square; it belongs inside the square root: "
            "sqrt(mean(x**2) + eps)."),
    Mistake("3.2", "layernorm-mean-term", "rmsnorm_backward", _with(_rms_backward, mean_term=True),
            "your RMSNorm backward has LayerNorm's - mean(g) term. RMSNorm subtracts no mean in the "
            "forward pass, so there is no such term: dx = rstd (g - x_hat mean(g x_hat))."),
    Mistake("3.2", "missing-projection", "rmsnorm_backward", _with(_rms_backward, projection=False),
            "dx misses the term through the root mean square, - x_hat * mean(g * x_hat): x also "
            "changes the scale it is divided by."),
]
