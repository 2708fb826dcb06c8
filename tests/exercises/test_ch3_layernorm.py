"""Chapter 3 tasks: LayerNorm (3.1) and RMSNorm (3.2), forward against npnorm.statistics.layernorm, backward by
gradient check of the learner's own forward/backward pair."""

from __future__ import annotations

import pytest
from task_helpers import expect_close, expect_gradients, failure_message, mentions, mutated_solution, rand, rand_param, unpack

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
    mod = mutated_solution(CHAPTER, "dx = rstd * (g - g.mean(axis=-1, keepdims=True) - x_hat",
                           "dx = rstd * (g - x_hat", tmp_path)
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
