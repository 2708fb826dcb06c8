"""Chapter 12 tasks: the gradient penalty's double backward for a one-hidden-layer Tanh critic (12.1) and
the Lipschitz bound of a spectrally normalized MLP after one power step (12.2).

12.1 is checked against central differences of the given gradient_penalty (float64) and against
npnorm.nn.double_backward; 12.2 against the recurrence and np.linalg.norm(., 2). MISTAKES lists the
common wrong answers of each task."""

from __future__ import annotations

import numpy as np
import pytest
from task_helpers import Mistake, TaskFailure, expect_close, failure_message, mentions, mutated_solution, unpack

from npnorm.gradcheck import numerical_gradient
from npnorm.nn.double_backward import gradient_penalty_backward, gradient_penalty_forward

CHAPTER = "ch12_lipschitz"


@pytest.fixture(scope="module")
def ch12(load):
    return load(CHAPTER)


def _critic_params(seed: int, n: int = 7, d: int = 3, hidden: int = 6):
    rng = np.random.default_rng(seed)
    return (rng.normal(0.4, 1.3, (n, d)), rng.standard_normal((hidden, d)), rng.uniform(-0.6, 0.6, hidden),
            rng.standard_normal(hidden))


def _unit(a):
    return a / np.linalg.norm(a)


def check_12_1(mod) -> None:
    for seed, lam in ((1, 10.0), (2, 0.5)):
        x, W, b, w = _critic_params(seed)
        x0, W0, b0, w0 = (a.copy() for a in (x, W, b, w))
        dW, db, dw = unpack(mod.penalty_backward(x, W, b, w, lam), ("dW", "db", "dw"), "penalty_backward")
        if not all(np.array_equal(a, a0) for a, a0 in ((x, x0), (W, W0), (b, b0), (w, w0))):
            raise TaskFailure("penalty_backward modified one of its inputs; work on new arrays.")
        # the reference: npnorm's double backward of the same critic (its output bias c plays no role)
        p, cache = gradient_penalty_forward(x, [W, w[None, :]], [b, np.zeros(1)], "tanh", lam)
        ref = gradient_penalty_backward(np.full(len(x), 1.0 / len(x)), cache)
        expected = {"dW": ref["weights"][0], "db": ref["biases"][0], "dw": ref["weights"][1][0]}
        given = mod.gradient_penalty(x, W, b, w, lam)
        expect_close("gradient_penalty (given)", given, p.mean(), rtol=1e-12, atol=1e-14,
                     context="(that function is given; restore it from solutions/ or regenerate)")
        for name, got, arr in (("dW", dW, W), ("db", db, b), ("dw", dw, w)):
            num = numerical_gradient(lambda: np.array(mod.gradient_penalty(x, W, b, w, lam)), arr, np.array(1.0))
            np.testing.assert_allclose(num, expected[name], rtol=1e-6, atol=1e-8)   # the reference is right
            hint = {"dW": "W is used twice: directly in g = r W (r^T delta) and through z (dz^T x).",
                    "db": "b only acts through the slopes m = 1 - tanh(z)^2: db = sum_n dz with dz = dm * (-2 t m).",
                    "dw": "dw = sum_n (delta W^T) * m."}[name]
            expect_close(f"{name} (lam={lam})", got, expected[name], rtol=1e-7, atol=1e-10, hint=hint)


@pytest.mark.task("12.1")
def test_penalty_backward(ch12):
    """penalty_backward agrees with central differences of the penalty and with npnorm's double backward"""
    check_12_1(ch12)


def check_12_2(mod) -> None:
    rng = np.random.default_rng(5)
    sizes = (3, 8, 6, 1)
    weights = [rng.standard_normal((o, i)) * 2.0 for i, o in zip(sizes[:-1], sizes[1:])]
    us = [_unit(rng.standard_normal(o)) for o in sizes[1:]]
    us0 = [u.copy() for u in us]
    bound, sigma_hats = unpack(mod.sn_lipschitz_bound(weights, us), ("bound", "sigma_hats"), "sn_lipschitz_bound")
    if not all(np.array_equal(u, u0) for u, u0 in zip(us, us0)):
        raise TaskFailure("sn_lipschitz_bound modified the u vectors passed in; work on new arrays.")
    expected_sigma, expected_bound = [], 1.0
    for W, u in zip(weights, us):
        v = _unit(W.T @ u)
        u1 = _unit(W @ v)
        s = float(u1 @ W @ v)
        expected_sigma.append(s)
        expected_bound *= np.linalg.norm(W, 2) / s
    expect_close("sigma_hats", np.asarray(sigma_hats, dtype=np.float64).ravel(), expected_sigma, rtol=1e-10,
                 atol=1e-12, hint="one step, v = normalize(W.T @ u) first, then u = normalize(W @ v); "
                 "sigma_hat = u @ W @ v with the new vectors.")
    expect_close("bound", bound, expected_bound, rtol=1e-10, atol=1e-12,
                 hint="the product of np.linalg.norm(W / sigma_hat, 2) - the exact norms of the normalized "
                 "layers, not the estimates.")
    if not bound >= 1.0 - 1e-12:
        raise TaskFailure(f"the bound is {bound:.6g} < 1: sigma_hat can never exceed the largest singular value.")
    # converged vectors give the bound 1
    us_conv = [np.linalg.svd(W)[0][:, 0] for W in weights]
    bound_conv, _ = unpack(mod.sn_lipschitz_bound(weights, us_conv), ("bound", "sigma_hats"), "sn_lipschitz_bound")
    expect_close("bound with converged u", bound_conv, 1.0, rtol=1e-10, atol=1e-12)


@pytest.mark.task("12.2")
def test_sn_lipschitz_bound(ch12):
    """sn_lipschitz_bound follows one power step and multiplies the exact norms of W / sigma_hat"""
    check_12_2(ch12)


# -- common mistakes (recognized by the check command) ------------------------------------------------
def _no_second_derivative(x, W, b, w, lam=10.0):
    """The ReLU answer: drops dz (the slopes' dependence on z)."""
    t = np.tanh(x @ W.T + b)
    m = 1.0 - t * t
    g = (m * w) @ W
    norm = np.linalg.norm(g, axis=1, keepdims=True)
    delta = (2.0 * lam / len(x)) * (norm - 1.0) * g / norm
    return (m * w).T @ delta, np.zeros_like(b), np.sum((delta @ W.T) * m, axis=0)


def _unnormalized_delta(x, W, b, w, lam=10.0):
    """delta = 2 lam (n - 1) g / N, forgetting the division by ||g||."""
    t = np.tanh(x @ W.T + b)
    m = 1.0 - t * t
    r = m * w
    g = r @ W
    norm = np.linalg.norm(g, axis=1, keepdims=True)
    delta = (2.0 * lam / len(x)) * (norm - 1.0) * g
    dr = delta @ W.T
    dz = dr * w * (-2.0 * t * m)
    return r.T @ delta + dz.T @ x, dz.sum(axis=0), np.sum(dr * m, axis=0)


def _no_mean(x, W, b, w, lam=10.0):
    """The sum over samples instead of the mean (N times too large)."""
    t = np.tanh(x @ W.T + b)
    m = 1.0 - t * t
    r = m * w
    g = r @ W
    norm = np.linalg.norm(g, axis=1, keepdims=True)
    delta = 2.0 * lam * (norm - 1.0) * g / norm
    dr = delta @ W.T
    dz = dr * w * (-2.0 * t * m)
    return r.T @ delta + dz.T @ x, dz.sum(axis=0), np.sum(dr * m, axis=0)


def _only_through_z(x, W, b, w, lam=10.0):
    """dW only through z: the direct use of W in g = r W forgotten."""
    t = np.tanh(x @ W.T + b)
    m = 1.0 - t * t
    g = (m * w) @ W
    norm = np.linalg.norm(g, axis=1, keepdims=True)
    delta = (2.0 * lam / len(x)) * (norm - 1.0) * g / norm
    dr = delta @ W.T
    dz = dr * w * (-2.0 * t * m)
    return dz.T @ x, dz.sum(axis=0), np.sum(dr * m, axis=0)


def _exact_sigma(weights, us):
    """sigma from the SVD: the bound is then always exactly 1 and says nothing about the power step."""
    s = np.array([np.linalg.norm(W, 2) for W in weights])
    return 1.0, s


def _product_of_estimates(weights, us):
    """The product of the sigma_hat themselves (the unnormalized network's estimated bound)."""
    sig = []
    for W, u in zip(weights, us):
        v = _unit(W.T @ u)
        u = _unit(W @ v)
        sig.append(float(u @ W @ v))
    return float(np.prod(sig)), np.array(sig)


def _sigma_before_update(weights, us):
    """sigma_hat = ||W^T u|| with the old u (before u is updated)."""
    sig, bound = [], 1.0
    for W, u in zip(weights, us):
        s = float(np.linalg.norm(W.T @ u))
        sig.append(s)
        bound *= float(np.linalg.norm(W / s, 2))
    return bound, np.array(sig)


MISTAKES: list[Mistake] = [
    Mistake("12.1", "no-second-derivative", "penalty_backward", _no_second_derivative,
            "db is zero and dW misses a term: you treated the slopes m = 1 - tanh(z)^2 as constants (true for "
            "ReLU, not for Tanh). Add dz = (delta W^T) * w * (-2 t m), then dW += dz^T x and db = sum_n dz."),
    Mistake("12.1", "unnormalized-delta", "penalty_backward", _unnormalized_delta,
            "dP/dg is 2 lam (||g|| - 1) g / ||g|| / N: you left out the division by ||g|| (the derivative of "
            "||g|| is g / ||g||)."),
    Mistake("12.1", "sum-not-mean", "penalty_backward", _no_mean,
            "Every gradient is N times too large: the penalty is a mean over the samples, so delta carries 1/N."),
    Mistake("12.1", "w-used-once", "penalty_backward", _only_through_z,
            "dW misses r^T delta: W appears twice, in z = x W^T + b and again in g = r W."),
    Mistake("12.2", "exact-sigma", "sn_lipschitz_bound", _exact_sigma,
            "Your sigma_hats are the exact singular values and the bound is 1: use the one-step power estimate "
            "u^T W v, and the exact norm only of W / sigma_hat."),
    Mistake("12.2", "product-of-estimates", "sn_lipschitz_bound", _product_of_estimates,
            "The bound is the product of the exact norms of the normalized layers W / sigma_hat, not the product "
            "of the estimates sigma_hat."),
    Mistake("12.2", "old-u", "sn_lipschitz_bound", _sigma_before_update,
            "sigma_hat must use the updated vectors: v = normalize(W^T u), u = normalize(W v), then u^T W v."),
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: f"{m.task}-{m.name}")
def test_each_listed_mistake_fails_its_task(mistake, load_solution):
    """Every mistake in MISTAKES is caught by the task's check (and differs from the solution)."""
    from types import SimpleNamespace

    sol = load_solution(CHAPTER)
    wrong = SimpleNamespace(**{k: getattr(sol, k) for k in dir(sol) if not k.startswith("__")})
    setattr(wrong, mistake.function, mistake.wrong)
    check = {"12.1": check_12_1, "12.2": check_12_2}[mistake.task]
    msg = failure_message(lambda: check(wrong))
    assert msg


def test_mutation_sign_of_tanh_second_derivative_fails_12_1(tmp_path):
    mod = mutated_solution(CHAPTER, "dz = dr * w * (-2.0 * t * m)", "dz = dr * w * (2.0 * t * m)", tmp_path)
    msg = failure_message(lambda: check_12_1(mod))
    assert mentions(msg, "dW"), msg
