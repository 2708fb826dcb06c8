"""Chapter 11 tasks: the affine-like layer (11.1, forward against npnorm.divergence, backward by gradient
check of the learner's own pair) and PatchNorm's forward through one convolution of x**2 (11.2, against
npnorm.divergence.patchnorm)."""

from __future__ import annotations

import numpy as np
import pytest
from task_helpers import (Mistake, expect_close, expect_gradients, failure_message, mentions, mutated_solution,
                          rand, unpack)

from npnorm.divergence.affine_like import affine_like_forward as ref_affine_like
from npnorm.divergence.patchnorm import patch_norm_conv2d_forward, patch_sq_norms as ref_sq_norms
from npnorm.nn.conv import conv2d_forward

CHAPTER = "ch11_divergence"


@pytest.fixture(scope="module")
def ch11(load):
    return load(CHAPTER)


def check_11_1_forward(mod) -> None:
    for (n, d, m), seed in (((4, 5, 3), 0), ((6, 2, 4), 1)):
        x, W, b = rand((n, d), seed, offset=1.0, scale=2.0), rand((m, d), seed + 1), rand((m,), seed + 2)
        z, _ = unpack(mod.affine_like_forward(x, W, b), ("z", "cache"), "affine_like_forward")
        ref, _ = ref_affine_like(x, W, b)
        expect_close(f"z (x of shape {(n, d)})", z, ref, rtol=1e-9, atol=1e-12,
                     hint="divide x @ W.T + b by sqrt(||x||^2 + 1), one divisor per row (the +1 is the bias's input).")


def check_11_1_backward(mod) -> None:
    for (n, d, m), seed in (((4, 5, 3), 10), ((3, 6, 2), 11)):
        inputs = {"x": rand((n, d), seed, offset=1.0, scale=2.0), "W": rand((m, d), seed + 1),
                  "b": rand((m,), seed + 2)}
        expect_gradients(f"your affine_like_backward (x of shape {(n, d)})", mod.affine_like_forward,
                         mod.affine_like_backward, inputs, forward_name="affine_like_forward",
                         backward_name="affine_like_backward", seed=seed, same_shape_output=False)


@pytest.mark.task("11.1")
def test_affine_like_forward_matches_reference(ch11):
    """affine_like_forward matches npnorm.divergence.affine_like_forward"""
    check_11_1_forward(ch11)


@pytest.mark.task("11.1")
def test_affine_like_backward_gradcheck(ch11):
    """affine_like_backward passes the gradient check (dx, dW, db)"""
    check_11_1_backward(ch11)


GEOMETRIES = (((3, 3), 1, 1), ((2, 3), 2, 0), ((1, 1), 1, 0))


def check_11_2_norms(mod) -> None:
    for (kernel, stride, padding), seed in zip(GEOMETRIES, (0, 1, 2)):
        x = rand((2, 3, 6, 7), seed, offset=0.5)
        q = mod.patch_sq_norms(x, kernel, stride, padding)
        ref, _ = ref_sq_norms(x, kernel, stride, padding)
        expect_close(f"patch_sq_norms (kernel {kernel}, stride {stride}, padding {padding})", q, ref,
                     rtol=1e-9, atol=1e-12,
                     hint="sum x**2 over the channels (keepdims), then convolve with ones((1, 1, kh, kw)) "
                          "with the same stride and padding.")


def check_11_2_forward(mod) -> None:
    for (kernel, stride, padding), seed in zip(GEOMETRIES, (3, 4, 5)):
        x = rand((2, 3, 6, 7), seed, offset=0.5)
        W, b = rand((4, 3) + kernel, seed + 1), rand((4,), seed + 2)
        z = mod.patchnorm_forward(x, W, b, stride, padding)
        ref, _ = patch_norm_conv2d_forward(x, W, b, stride, padding)
        expect_close(f"patchnorm_forward (kernel {kernel}, stride {stride}, padding {padding})", z, ref,
                     rtol=1e-9, atol=1e-12,
                     hint="the bias is inside the division; the divisor sqrt(||P||^2 + 1) is shared by all "
                          "output channels.")


@pytest.mark.task("11.2")
def test_patch_sq_norms_match_reference(ch11):
    """patch_sq_norms matches the sum of squares of every im2col patch"""
    check_11_2_norms(ch11)


@pytest.mark.task("11.2")
def test_patchnorm_forward_matches_reference(ch11):
    """patchnorm_forward matches npnorm's PatchNorm (affine mode)"""
    check_11_2_forward(ch11)


# -- the catalogue of common mistakes ----------------------------------------------------------------

def _al_no_plus_one(x, W, b):
    s = np.sqrt(np.sum(x * x, axis=1, keepdims=True))
    z = (x @ W.T + b) / s
    return z, {"x": x, "W": W, "s": s, "z": z}


def _al_bias_outside(x, W, b):
    s = np.sqrt(np.sum(x * x, axis=1, keepdims=True) + 1.0)
    z = x @ W.T / s + b
    return z, {"x": x, "W": W, "s": s, "z": z}


def _al_bwd_no_radial(dout, cache):
    Gs = dout / cache["s"]
    return Gs @ cache["W"], Gs.T @ cache["x"], Gs.sum(axis=0)


def _al_bwd_params_not_scaled(dout, cache):
    x, W, s, z = cache["x"], cache["W"], cache["s"], cache["z"]
    dx = (dout / s) @ W - (np.sum(dout * z, axis=1, keepdims=True) / s**2) * x
    return dx, dout.T @ x, dout.sum(axis=0)


def _al_bwd_radial_over_s(dout, cache):
    x, W, s, z = cache["x"], cache["W"], cache["s"], cache["z"]
    Gs = dout / s
    return Gs @ W - (np.sum(dout * z, axis=1, keepdims=True) / s) * x, Gs.T @ x, Gs.sum(axis=0)


def _sq_no_channel_sum(x, kernel, stride=1, padding=0):
    c = x.shape[1]
    q, _ = conv2d_forward(x * x, np.ones((c, c) + tuple(kernel)) / c, None, (stride, stride), (padding, padding))
    return q[:, :1]


def _sq_norm_not_squared(x, kernel, stride=1, padding=0):
    xa = np.sqrt(np.sum(x * x, axis=1, keepdims=True))
    q, _ = conv2d_forward(xa, np.ones((1, 1) + tuple(kernel)), None, (stride, stride), (padding, padding))
    return q**2


def _sq_no_padding(x, kernel, stride=1, padding=0):
    xsq = np.pad(np.sum(x * x, axis=1, keepdims=True), ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2), mode="edge")
    q, _ = conv2d_forward(xsq, np.ones((1, 1) + tuple(kernel)), None, (stride, stride), (0, 0))
    return q


def _pn_bias_outside(x, W, b, stride=1, padding=0):
    a, _ = conv2d_forward(x, W, None, (stride, stride), (padding, padding))
    q, _ = ref_sq_norms(x, W.shape[2:], stride, padding)
    return a / np.sqrt(q + 1.0) + b[:, None, None]


def _pn_no_plus_one(x, W, b, stride=1, padding=0):
    a, _ = conv2d_forward(x, W, b, (stride, stride), (padding, padding))
    q, _ = ref_sq_norms(x, W.shape[2:], stride, padding)
    return a / np.sqrt(q)


MISTAKES: list[Mistake] = [
    Mistake("11.1", "no-plus-one", "affine_like_forward", _al_no_plus_one,
            "you divide by ||x||, not sqrt(||x||^2 + 1): the +1 is the bias's constant input, and without it "
            "the layer is an L2 normalizer (it forgets ||x||)."),
    Mistake("11.1", "bias-outside-division", "affine_like_forward", _al_bias_outside,
            "the bias is added after the division; in the affine-like layer it is divided too: "
            "z = (x @ W.T + b) / s."),
    Mistake("11.1", "missing-radial-term", "affine_like_backward", _al_bwd_no_radial,
            "dx lacks the radial term -(<G, z> / s^2) x that comes from s depending on x (ds/dx = x / s)."),
    Mistake("11.1", "param-grads-not-scaled", "affine_like_backward", _al_bwd_params_not_scaled,
            "dW and db use G instead of G / s: every sample's contribution to the parameter gradients is "
            "divided by its own s."),
    Mistake("11.1", "radial-term-over-s", "affine_like_backward", _al_bwd_radial_over_s,
            "the radial term is divided by s once; it needs s^2: (<G, u> / s^3) x = (<G, z> / s^2) x."),
    Mistake("11.2", "no-channel-sum", "patch_sq_norms", _sq_no_channel_sum,
            "a patch spans all input channels: sum x**2 over the channels before the box convolution (the "
            "result has one channel)."),
    Mistake("11.2", "norm-not-squared", "patch_sq_norms", _sq_norm_not_squared,
            "you convolved the pixels' norms and squared the sum; the patch's squared norm is the sum of the "
            "squares: convolve x**2."),
    Mistake("11.2", "padding-not-zero", "patch_sq_norms", _sq_no_padding,
            "the padding must be zeros (as the convolution's): padded positions add nothing to ||P||^2."),
    Mistake("11.2", "bias-outside-division", "patchnorm_forward", _pn_bias_outside,
            "in the affine mode the bias is inside the division: conv2d(x, W, b) / s."),
    Mistake("11.2", "no-plus-one", "patchnorm_forward", _pn_no_plus_one,
            "the divisor is sqrt(||P||^2 + 1), with the bias's +1 (and never zero)."),
]


# -- mutations: each catalogued mistake, planted in a copy of the solution, is caught ------------------

def test_mutation_missing_radial_term_fails_11_1(tmp_path):
    mod = mutated_solution(CHAPTER, "dx = Gs @ W - (np.sum(dout * z, axis=1, keepdims=True) / s**2) * x",
                           "dx = Gs @ W", tmp_path)
    msg = failure_message(lambda: check_11_1_backward(mod))
    assert mentions(msg, "-> dx is wrong"), msg


def test_mutation_param_grads_not_scaled_fails_11_1(tmp_path):
    mod = mutated_solution(CHAPTER, "dW = Gs.T @ x", "dW = dout.T @ x", tmp_path)
    msg = failure_message(lambda: check_11_1_backward(mod))
    assert mentions(msg, "W"), msg


def test_mutation_no_plus_one_fails_11_1(tmp_path):
    mod = mutated_solution(CHAPTER, "s = np.sqrt(np.sum(x * x, axis=1, keepdims=True) + 1.0)",
                           "s = np.sqrt(np.sum(x * x, axis=1, keepdims=True))", tmp_path)
    assert "first mismatch" in failure_message(lambda: check_11_1_forward(mod))


def test_mutation_no_channel_sum_fails_11_2(tmp_path):
    mod = mutated_solution(CHAPTER, "xsq = np.sum(x * x, axis=1, keepdims=True)", "xsq = (x * x)[:, :1]", tmp_path)
    assert "patch_sq_norms" in failure_message(lambda: check_11_2_norms(mod))


def test_every_catalogued_mistake_is_wrong_on_the_task_inputs(load_solution):
    """Each mistake differs from the solution on the task's inputs (so the check can tell them apart)."""
    sol = load_solution(CHAPTER)
    x, W, b = rand((4, 5), 0, offset=1.0, scale=2.0), rand((3, 5), 1), rand((3,), 2)
    G = rand((4, 3), 3)
    xi, Wc, bc = rand((2, 3, 6, 7), 4, offset=0.5), rand((4, 3, 3, 3), 5), rand((4,), 6)
    cache = sol.affine_like_forward(x, W, b)[1]
    run = {"affine_like_forward": lambda f: f(x, W, b)[0],
           "affine_like_backward": lambda f: np.concatenate([np.ravel(a) for a in f(G, cache)]),
           "patch_sq_norms": lambda f: f(xi, (3, 3), 1, 1),
           "patchnorm_forward": lambda f: f(xi, Wc, bc, 1, 1)}
    assert {m.task for m in MISTAKES} == {"11.1", "11.2"}
    for m in MISTAKES:
        good, bad = run[m.function](getattr(sol, m.function)), run[m.function](m.wrong)
        assert np.shape(bad) != np.shape(good) or not np.allclose(bad, good), (m.task, m.name)
