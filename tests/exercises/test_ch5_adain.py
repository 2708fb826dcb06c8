"""Chapter 5 task: AdaIN forward and backward to content and style (5.1), against npnorm.adaptive.adain."""

from __future__ import annotations

import pytest
import numpy as np
from task_helpers import Mistake, expect_close, expect_gradients, failure_message, mentions, mutated_solution, rand, unpack

from npnorm.adaptive.adain import adain_forward

CHAPTER = "ch5_adain"
CASES = (((2, 3, 3, 2), (2, 3, 4, 3), 0), ((1, 2, 5), (1, 2, 3), 1))


@pytest.fixture(scope="module")
def ch5(load):
    return load(CHAPTER)


def _inputs(cshape, sshape, seed):
    return rand(cshape, seed, offset=2.0, scale=3.0), rand(sshape, seed + 1, offset=-1.0, scale=0.7)


def check_5_1_forward(mod) -> None:
    for cshape, sshape, seed in CASES:
        content, style = _inputs(cshape, sshape, seed)
        out, _ = unpack(mod.adain_forward(content, style, 1e-5), ("out", "cache"), "adain_forward")
        ref, _ = adain_forward(content, style, 1e-5)
        expect_close(f"out (content {cshape}, style {sshape})", out, ref, rtol=1e-9, atol=1e-10,
                     hint="sigma(s) * (x - mu(x)) / sigma(x) + mu(s), statistics per (sample, channel), "
                          "biased variance with eps inside both square roots.")


def check_5_1_backward(mod) -> None:
    for cshape, sshape, seed in CASES:
        content, style = _inputs(cshape, sshape, seed)
        expect_gradients(f"your adain_backward (content {cshape}, style {sshape})", mod.adain_forward,
                         mod.adain_backward, {"content": content, "style": style}, forward_name="adain_forward",
                         backward_name="adain_backward", seed=seed)


@pytest.mark.task("5.1")
def test_adain_forward_matches_reference(ch5):
    """adain_forward matches npnorm.adain_forward (style of a different spatial size)"""
    check_5_1_forward(ch5)


@pytest.mark.task("5.1")
def test_adain_backward_gradcheck(ch5):
    """adain_backward passes the gradient check for the content and the style"""
    check_5_1_backward(ch5)


def test_mutation_style_positions_counted_from_content_fails_5_1(tmp_path):
    mod = mutated_solution(CHAPTER, "m_s = int(np.prod(s_c.shape[2:]))", "m_s = int(np.prod(x_hat.shape[2:]))", tmp_path)
    msg = failure_message(lambda: check_5_1_backward(mod))
    assert mentions(msg, "-> dstyle is wrong", r"content .* ok"), msg


def test_mutation_no_style_gradient_through_sigma_fails_5_1(tmp_path):
    mod = mutated_solution(CHAPTER, "dstyle = dmu_s / m_s + dsigma_s * s_c / (m_s * s_std)", "dstyle = dmu_s / m_s + 0 * s_c",
                           tmp_path)
    assert "-> dstyle is wrong" in failure_message(lambda: check_5_1_backward(mod))


# -- the catalogue of common mistakes (npnorm.check names them; tests/exercises/test_mistakes.py) ----

def _adain_forward(content, style, eps=1e-5, *, unbiased_style=False, eps_outside=False):
    axes = tuple(range(2, content.ndim))
    cc = content - content.mean(axis=axes, keepdims=True)
    c_std = np.sqrt(np.mean(cc * cc, axis=axes, keepdims=True)) + eps if eps_outside else \
        np.sqrt(np.mean(cc * cc, axis=axes, keepdims=True) + eps)
    s_mu = style.mean(axis=axes, keepdims=True)
    m_s = int(np.prod(style.shape[2:]))
    s_var = np.sum((style - s_mu) ** 2, axis=axes, keepdims=True) / (m_s - 1 if unbiased_style else m_s)
    s_std = np.sqrt(s_var) + eps if eps_outside else np.sqrt(s_var + eps)
    cache = {"x_hat": cc / c_std, "c_rstd": 1.0 / c_std, "s_c": style - s_mu, "s_std": s_std, "axes": axes}
    return s_std * cc / c_std + s_mu, cache


def _adain_backward(dout, cache, *, m_from_content=False, sigma_path=True, mean_path=True):
    x_hat, c_rstd, s_c, s_std, axes = cache["x_hat"], cache["c_rstd"], cache["s_c"], cache["s_std"], cache["axes"]
    g = dout * s_std
    dcontent = c_rstd * (g - g.mean(axis=axes, keepdims=True) - x_hat * np.mean(g * x_hat, axis=axes, keepdims=True))
    m_s = int(np.prod((x_hat if m_from_content else s_c).shape[2:]))
    dstyle = 0 * s_c
    if mean_path:
        dstyle = dstyle + dout.sum(axis=axes, keepdims=True) / m_s
    if sigma_path:
        dstyle = dstyle + np.sum(dout * x_hat, axis=axes, keepdims=True) * s_c / (m_s * s_std)
    return dcontent, dstyle


def _with(func, **options):
    return lambda *args, **kwargs: func(*args, **kwargs, **options)


MISTAKES: list[Mistake] = [
    Mistake("5.1", "unbiased-style-variance", "adain_forward", _with(_adain_forward, unbiased_style=True),
            "the style's variance is the unbiased one (divide by m - 1); AdaIN uses the biased variance "
            "for both inputs."),
    Mistake("5.1", "eps-outside-sqrt", "adain_forward", _with(_adain_forward, eps_outside=True),
            "eps is added to the standard deviations; it belongs inside both square roots: "
            "sqrt(var + eps)."),
    Mistake("5.1", "style-count-from-content", "adain_backward", _with(_adain_backward, m_from_content=True),
            "dstyle divides by the number of CONTENT positions; mu(s) and sigma(s) are averages over the "
            "STYLE's positions, m_s = prod(style.shape[2:])."),
    Mistake("5.1", "no-style-sigma-path", "adain_backward", _with(_adain_backward, sigma_path=False),
            "dstyle has only the path through mu(s); out also depends on the style through sigma(s): "
            "add sum(dout * x_hat) * (s - mu(s)) / (m_s sigma(s))."),
    Mistake("5.1", "no-style-mean-path", "adain_backward", _with(_adain_backward, mean_path=False),
            "dstyle has only the path through sigma(s); out also depends on the style through mu(s): "
            "add sum(dout) / m_s, spread over the style's positions."),
]
