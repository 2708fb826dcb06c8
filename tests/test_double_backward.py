"""The double backward of the WGAN-GP penalty (npnorm.nn.double_backward), checked in float64 against
central differences with a random upstream gradient, for every critic parameter and the input; the
staged and simplified forms compared; the input gradient itself checked against differences of D."""

from __future__ import annotations

import numpy as np
import pytest

from npnorm.gradcheck import check_gradients
from npnorm.nn.double_backward import (PIECEWISE_LINEAR, activation_derivatives, critic_forward,
                                       critic_input_gradient, gradient_penalty_backward,
                                       gradient_penalty_backward_staged, gradient_penalty_forward)

SIZES = (2, 7, 6, 5, 1)     # three hidden layers


def _critic(seed: int, sizes=SIZES):
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((o, i)) * 1.3 / np.sqrt(i) for i, o in zip(sizes[:-1], sizes[1:])]
    bs = [rng.uniform(-0.5, 0.5, o) for o in sizes[1:]]
    return Ws, bs


def _inputs(activation: str, Ws, bs, seed: int, n: int = 6, margin: float = 0.05) -> np.ndarray:
    """n points; for a piecewise-linear activation only points whose every pre-activation is at least
    ``margin`` away from the kink, so the perturbations of the check (at most 2e-3 times a value of
    order 1) never flip a slope."""
    rng = np.random.default_rng(seed)
    pool = rng.normal(0.0, 1.5, (4000, Ws[0].shape[1]))
    if activation in PIECEWISE_LINEAR:
        _, cache = critic_forward(pool, Ws, bs, activation)
        ok = np.all([np.all(np.abs(z) > margin, axis=1) for z in cache["zs"]], axis=0)
        pool = pool[ok]
    assert len(pool) >= n
    return pool[:n].copy()


def _as_named(Ws, bs, x):
    named = {"x": x}
    for k, (W, b) in enumerate(zip(Ws, bs)):
        named[f"W{k}"], named[f"b{k}"] = W, b
    return named


def _pair(activation: str, lam: float, backward, slope=0.2):
    n_layers = len(SIZES) - 1

    def forward(x, **params):
        Ws = [params[f"W{k}"] for k in range(n_layers)]
        bs = [params[f"b{k}"] for k in range(n_layers)]
        return gradient_penalty_forward(x, Ws, bs, activation, lam, slope)

    def back(dout, cache):
        g = backward(dout, cache)
        out = {"x": g["x"]}
        for k in range(n_layers):
            out[f"W{k}"], out[f"b{k}"] = g["weights"][k], g["biases"][k]
        return out

    return forward, back


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "silu"])
@pytest.mark.parametrize("form", ["staged", "simplified"])
def test_penalty_double_backward_gradcheck(activation, form):
    Ws, bs = _critic(1)
    x = _inputs(activation, Ws, bs, seed=2)
    backward = gradient_penalty_backward_staged if form == "staged" else gradient_penalty_backward
    forward, back = _pair(activation, 3.0, backward)
    report = check_gradients(forward, back, _as_named(Ws, bs, x), seed=3, h=1e-4,
                             label=f"gradient penalty ({activation}, {form})")
    assert report.passed, report
    assert len(report.comparisons) == 2 * (len(SIZES) - 1) + 1


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "silu"])
def test_staged_and_simplified_agree(activation):
    Ws, bs = _critic(4, sizes=(3, 9, 8, 1))
    x = np.random.default_rng(5).normal(size=(11, 3))
    p, cache = gradient_penalty_forward(x, Ws, bs, activation, lam=10.0)
    dout = np.random.default_rng(6).normal(size=p.shape)
    a = gradient_penalty_backward_staged(dout, cache)
    b = gradient_penalty_backward(dout, cache)
    np.testing.assert_allclose(a["x"], b["x"], rtol=1e-12, atol=1e-13)
    for ga, gb in zip(a["weights"] + a["biases"], b["weights"] + b["biases"]):
        np.testing.assert_allclose(ga, gb, rtol=1e-12, atol=1e-13)


def test_what_vanishes_for_piecewise_linear_activations():
    """ReLU/LeakyReLU: zero bias and input gradients (the slopes are constants a.e.), nonzero weight
    gradients; Tanh: nothing vanishes but the output bias's gradient."""
    Ws, bs = _critic(7)
    x = np.random.default_rng(8).normal(size=(9, 2))
    dout = np.random.default_rng(9).normal(size=9)
    for activation in ("relu", "leaky_relu", "tanh", "silu"):
        _, cache = gradient_penalty_forward(x, Ws, bs, activation, lam=10.0)
        g = gradient_penalty_backward_staged(dout, cache)
        assert np.abs(g["biases"][-1]).max() == 0.0
        assert all(np.abs(dW).max() > 1e-6 for dW in g["weights"])
        hidden_b = max(np.abs(db).max() for db in g["biases"][:-1])
        if activation in PIECEWISE_LINEAR:
            assert hidden_b == 0.0 and np.abs(g["x"]).max() == 0.0
        else:
            assert hidden_b > 1e-6 and np.abs(g["x"]).max() > 1e-6


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "silu"])
def test_input_gradient_is_dD_dx(activation):
    Ws, bs = _critic(10)
    x = _inputs(activation, Ws, bs, seed=11, n=5)
    _, cache = critic_forward(x, Ws, bs, activation)
    g = critic_input_gradient(cache)[0]
    h = 1e-6
    num = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num[idx] = (critic_forward(xp, Ws, bs, activation)[0][idx[0]]
                    - critic_forward(xm, Ws, bs, activation)[0][idx[0]]) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("activation", ["tanh", "silu", "leaky_relu"])
def test_activation_second_derivatives(activation):
    z = np.linspace(-3, 3, 41) + 0.013
    _, d1, d2 = activation_derivatives(activation, z)
    h = 1e-5
    np.testing.assert_allclose(d1, (activation_derivatives(activation, z + h)[0]
                                    - activation_derivatives(activation, z - h)[0]) / (2 * h), atol=1e-8)
    np.testing.assert_allclose(d2, (activation_derivatives(activation, z + h)[1]
                                    - activation_derivatives(activation, z - h)[1]) / (2 * h), atol=1e-8)


def test_bad_arguments_are_named():
    Ws, bs = _critic(0)
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="activation"):
        gradient_penalty_forward(x, Ws, bs, "sigmoid")
    with pytest.raises(ValueError, match="weights\\[0\\]"):
        gradient_penalty_forward(np.zeros((3, 4)), Ws, bs)
    with pytest.raises(ValueError, match="one output"):
        critic_forward(x, Ws[:-1], bs[:-1])
    _, cache = gradient_penalty_forward(x, Ws, bs)
    with pytest.raises(ValueError, match="shape of the forward output"):
        gradient_penalty_backward(np.ones(4), cache)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "silu"])
def test_matches_pytorch_double_backward(activation):
    """Against torch.autograd.grad(..., create_graph=True) then backward (recorded with PyTorch 2.13 by
    tools/pytorch_ref_gan.py): input gradient, per-sample penalty, and every parameter's and x's gradient."""
    from pathlib import Path

    ref = np.load(Path(__file__).parent / "data" / "pytorch_gan.npz")
    r = {k.split("/", 1)[1]: ref[k] for k in ref.files if k.startswith(activation + "/")}
    n_layers = len(SIZES) - 1
    Ws = [r[f"W{k}"] for k in range(n_layers)]
    bs = [r[f"b{k}"] for k in range(n_layers)]
    p, cache = gradient_penalty_forward(r["x"], Ws, bs, activation, float(ref["lam"]), negative_slope=0.2)
    np.testing.assert_allclose(cache["g"], r["g"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(p, r["p"], rtol=1e-12, atol=1e-14)
    for backward in (gradient_penalty_backward, gradient_penalty_backward_staged):
        g = backward(r["dout"], cache)
        np.testing.assert_allclose(g["x"], r["dx"], rtol=1e-10, atol=1e-12)
        for k in range(n_layers):
            np.testing.assert_allclose(g["weights"][k], r[f"dW{k}"], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(g["biases"][k], r[f"db{k}"], rtol=1e-10, atol=1e-12)
