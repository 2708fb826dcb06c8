"""Chapter 1 tasks: the numerical gradient (1.1) and the relative error / checker (1.2)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from task_helpers import Mistake, TaskFailure, expect_close, failure_message, mutated_solution, rand, unpack

from npnorm.gradcheck import numerical_gradient as reference_numerical_gradient
from npnorm.gradcheck import relative_error as reference_relative_error

CHAPTER = "ch1_gradcheck"


@pytest.fixture(scope="module")
def ch1(load):
    return load(CHAPTER)


def _tanh_layer():
    """f(x) = tanh(x @ A) with its exact input gradient: a function whose output shape differs from x's."""
    a = rand((4, 3), seed=1)

    def f(x):
        return np.tanh(x @ a)

    def grad(x, dout):
        return (dout * (1.0 - np.tanh(x @ a) ** 2)) @ a.T

    return f, grad


def check_1_1(mod) -> None:
    f, exact = _tanh_layer()
    x = rand((5, 4), seed=2, offset=0.3, scale=0.8)
    x0 = x.copy()
    dout = rand((5, 3), seed=3)
    got = mod.numerical_gradient(f, x, dout)
    if not np.allclose(x, x0, rtol=1e-14, atol=0):
        raise TaskFailure("numerical_gradient changed x: every element must hold its original value again "
                          "when it returns (put `old` back after evaluating L(x - h)).")
    expect_close("numerical_gradient(f, x, dout)", got, exact(x, dout), rtol=1e-7, atol=1e-9,
                 context="(f(x) = tanh(x @ A), compared with the exact derivative)",
                 hint="an error of about 1e-5 relative means a one-sided difference (L(x+h) - L(x)) / h; "
                      "use (L(x+h) - L(x-h)) / (2h). A factor 2 off means a missing or extra 2 in 2h.")
    # any number of dimensions, and an elementwise function
    x3 = rand((2, 3, 2), seed=4, offset=1.0)
    d3 = rand((2, 3, 2), seed=5)
    expect_close("numerical_gradient(f, x, dout) for a 3-d x and f(x) = x**3", mod.numerical_gradient(
        lambda z: z ** 3, x3, d3), 3 * x3 ** 2 * d3, rtol=1e-7, atol=1e-9)


@pytest.mark.task("1.1")
def test_numerical_gradient_matches_the_exact_derivative(ch1):
    """numerical_gradient agrees with exact derivatives and leaves x unchanged"""
    check_1_1(ch1)


def _reference_numerical_gradient(f, x, dout, h=1e-5):
    return reference_numerical_gradient(lambda: f(x), x, dout, h=h, stencil=2)


def check_1_2_relative_error(mod) -> None:
    a = np.array([[1.0, -2.0, 0.0, 1e-9], [3.0, 0.5, 0.0, -4.0]])
    n = np.array([[1.1, -2.0, 0.0, 0.0], [-3.0, 0.4, 2e-5, -4.0 + 1e-6]])
    with warnings.catch_warnings():       # 0 / 0 without a floor: report the NaN it gives, not the warning
        warnings.simplefilter("ignore", RuntimeWarning)
        got = mod.relative_error(a, n)
    expect_close("relative_error(a, n)", got, reference_relative_error(a, n, 1e-4),
                 rtol=1e-10, atol=1e-14,
                 hint="|a - n| / max(|a| + |n|, floor), elementwise; the floor (1e-4) only matters where "
                      "both gradients are (almost) zero.")
    expect_close("relative_error(a, n, floor=1.0)", mod.relative_error(a, n, floor=1.0),
                 reference_relative_error(a, n, 1.0), rtol=1e-10, atol=1e-14)


def check_1_2_gradient_check(mod) -> None:
    x = rand((3, 4), seed=6, offset=1.0)
    dout = rand((3, 4), seed=7)
    analytic = 2 * x * dout                      # the gradient of sum(dout * x**2) ...
    analytic[2, 1] *= 1.5                        # ... with one wrong element
    result = unpack(mod.gradient_check(np.square, x, analytic, dout), ("max_rel_error", "worst_index"),
                    "gradient_check")
    err, worst = result
    if tuple(np.atleast_1d(worst).tolist()) != (2, 1):
        raise TaskFailure(f"gradient_check reported the worst element at {worst}, but it is at (2, 1) "
                          "(np.unravel_index turns np.argmax's flat index into a tuple).")
    expect_close("max_rel_error from gradient_check", err, 0.5 / 2.5, rtol=1e-6, atol=0,
                 context="(analytic = 1.5 x the true gradient at (2, 1): relative error 0.5 / 2.5)")
    good_err, _ = mod.gradient_check(np.square, x, 2 * x * dout, dout)
    if not good_err < 1e-7:
        raise TaskFailure(f"gradient_check gives {good_err:.3g} for a correct gradient; expected below 1e-7.")


@pytest.mark.task("1.2")
def test_relative_error_matches_the_floored_formula(ch1):
    """relative_error uses |a - n| / max(|a| + |n|, floor)"""
    check_1_2_relative_error(ch1)


@pytest.mark.task("1.2")
def test_gradient_check_reports_the_worst_element(ch1, monkeypatch):
    """gradient_check finds the largest relative error and where it is"""
    # isolate task 1.2 from task 1.1: use a known-good numerical gradient
    monkeypatch.setattr(ch1, "numerical_gradient", _reference_numerical_gradient)
    check_1_2_gradient_check(ch1)


# -- mutations: the checks above catch plausible mistakes ------------------------------------------

def test_mutation_one_sided_difference_fails_1_1(tmp_path):
    mod = mutated_solution(CHAPTER, "grad[idx] = (loss_plus - loss_minus) / (2.0 * h)",
                           "grad[idx] = (loss_plus - np.sum(dout * f(x))) / h", tmp_path)
    msg = failure_message(lambda: check_1_1(mod))
    assert "numerical_gradient" in msg and "one-sided" in msg, msg


def test_mutation_x_not_restored_fails_1_1(tmp_path):
    mod = mutated_solution(CHAPTER, "        x[idx] = old\n        grad[idx]", "        grad[idx]", tmp_path)
    assert "changed x" in failure_message(lambda: check_1_1(mod))


def test_mutation_no_floor_fails_1_2(tmp_path):
    mod = mutated_solution(CHAPTER, "np.maximum(np.abs(a) + np.abs(n), floor)", "(np.abs(a) + np.abs(n) + 1e-300)",
                           tmp_path)
    assert "relative_error(a, n) is wrong" in failure_message(lambda: check_1_2_relative_error(mod))


def test_mutation_flat_index_fails_1_2(tmp_path, monkeypatch):
    mod = mutated_solution(CHAPTER, "return float(err[worst]), tuple(int(i) for i in worst)",
                           "return float(err.max()), (int(np.argmax(err)),)", tmp_path)
    monkeypatch.setattr(mod, "numerical_gradient", _reference_numerical_gradient)
    assert "(2, 1)" in failure_message(lambda: check_1_2_gradient_check(mod))


# -- the catalogue of common mistakes (npnorm.check names them; tests/exercises/test_mistakes.py) ----

def _numerical(f, x, dout, h=1e-5, *, use_dout=True, scheme="central"):
    grad = np.zeros(x.shape)
    weights = dout if use_dout else np.ones_like(dout)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h
        plus = np.sum(weights * f(x))
        x[idx] = old - h
        minus = np.sum(weights * f(x))
        x[idx] = old
        if scheme == "one-sided":
            grad[idx] = (plus - np.sum(weights * f(x))) / h
        elif scheme == "no-2":
            grad[idx] = (plus - minus) / h
        else:
            grad[idx] = (plus - minus) / (2.0 * h)
    return grad


def _relative(analytic, numeric, floor=1e-4, *, kind="floored"):
    a, n = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    if kind == "no-floor":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(a - n) / (np.abs(a) + np.abs(n))
    if kind == "max-denominator":
        return np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)
    return np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), floor)


def _checker(f, x, analytic, dout, h=1e-5, floor=1e-4, *, ones=False, flat=False, mean=False):
    numeric = _reference_numerical_gradient(f, x, np.ones_like(dout) if ones else dout, h)
    err = _relative(analytic, numeric, floor)
    flat_index = int(np.argmax(err))
    worst = (flat_index,) if flat else tuple(int(i) for i in np.unravel_index(flat_index, err.shape))
    return (float(err.mean()) if mean else float(err.max())), worst


def _with(func, **options):
    return lambda *args, **kwargs: func(*args, **kwargs, **options)


MISTAKES: list[Mistake] = [
    Mistake("1.1", "ignores-dout", "numerical_gradient", _with(_numerical, use_dout=False),
            "your numerical gradient ignores dout: it differentiates sum(f(x)), as if dout were all "
            "ones. The loss is L(x) = sum(dout * f(x)); evaluate that at x + h and x - h."),
    Mistake("1.1", "one-sided-difference", "numerical_gradient", _with(_numerical, scheme="one-sided"),
            "a one-sided difference (L(x + h) - L(x)) / h: its error is proportional to h. Use the "
            "central one, (L(x + h) - L(x - h)) / (2h)."),
    Mistake("1.1", "missing-factor-2", "numerical_gradient", _with(_numerical, scheme="no-2"),
            "your estimate is twice the gradient: the central difference divides by 2h, the distance "
            "between x - h and x + h."),
    Mistake("1.2", "no-floor", "relative_error", _with(_relative, kind="no-floor"),
            "relative_error has no floor: where both gradients are zero it divides 0 by 0. Use "
            "max(|a| + |n|, floor) as the denominator."),
    Mistake("1.2", "max-denominator", "relative_error", _with(_relative, kind="max-denominator"),
            "the denominator is max(|a|, |n|); this course's relative error divides by |a| + |n| "
            "(floored), which keeps every entry in [0, 1]."),
    Mistake("1.2", "all-ones-upstream", "gradient_check", _with(_checker, ones=True),
            "your gradient_check computes the numerical gradient with an all-ones upstream instead of "
            "the dout it is given: pass dout through to numerical_gradient."),
    Mistake("1.2", "flat-index", "gradient_check", _with(_checker, flat=True),
            "the worst index is np.argmax's flat index; return a tuple with one int per dimension of x "
            "(np.unravel_index(flat, err.shape))."),
    Mistake("1.2", "mean-not-max", "gradient_check", _with(_checker, mean=True),
            "you report the mean relative error; a gradient check reports the worst (largest) one - a "
            "single wrong element is a bug."),
]
