"""Chapter 5 task: AdaIN forward and backward to content and style (5.1), against npnorm.adaptive.adain."""

from __future__ import annotations

import pytest
from task_helpers import expect_close, expect_gradients, failure_message, mentions, mutated_solution, rand, unpack

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
