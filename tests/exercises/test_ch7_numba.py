"""Chapter 7 task: a fused Numba LayerNorm forward (7.1), against the NumPy reference
npnorm.layer_norm_forward, including inputs that defeat one-pass variance and float32 accumulators."""

from __future__ import annotations

import numpy as np
import pytest
from numba import config as numba_config
from task_helpers import Mistake, TaskFailure, expect_close, failure_message, mutated_solution, rand

from npnorm.statistics.layernorm import layer_norm_forward

CHAPTER = "ch7_numba"


@pytest.fixture(scope="module")
def ch7(load):
    return load(CHAPTER)


def _reference(x, gamma, beta, eps):
    out, _ = layer_norm_forward(np.asarray(x, dtype=np.float64), (x.shape[-1],), gamma, beta, eps)
    return out


def check_7_1(mod) -> None:
    d = 37
    gamma, beta = np.linspace(-1.5, 1.5, d), np.linspace(0.3, -0.2, d)
    kernel = mod._layernorm_rows
    if not numba_config.DISABLE_JIT and not hasattr(kernel, "py_func"):
        raise TaskFailure("_layernorm_rows is not compiled: keep the @njit decorator above it.")
    cases = (
        ("float64, shape (2, 3, 37)", rand((2, 3, d), 1, offset=2.0, scale=3.0), 1e-5, 1e-10),
        # mean 1e4, spread 1e-3: mean(x**2) - mean(x)**2 loses every digit of the variance
        ("float64 rows with mean 1e4 and spread 1e-3", rand((4, d), 2, offset=1e4, scale=1e-3), 1e-12, 1e-7),
        # float32 near 1000: a float32 running sum of 37 numbers is off by ~1e-4, i.e. 1% of the spread
        ("float32 rows near 1000 with spread 0.01", rand((5, d), 3, offset=1000.0, scale=0.01).astype(np.float32),
         1e-6, 2e-5),
    )
    for what, x, eps, tol in cases:
        out = mod.layernorm_forward_numba(x, gamma, beta, eps)
        if np.shape(out) != x.shape or np.asarray(out).dtype != x.dtype:
            raise TaskFailure(f"{what}: the output must have x's shape {x.shape} and dtype {x.dtype}; "
                              f"got {np.shape(out)} {np.asarray(out).dtype}")
        expect_close(f"out ({what})", out, _reference(x, gamma, beta, eps), rtol=tol, atol=tol,
                     hint="two passes (the mean, then the mean of squared deviations) with float64 "
                          "accumulators (acc = np.float64(0.0); acc += x[r, j]).")


@pytest.mark.task("7.1")
def test_numba_layernorm_matches_numpy(ch7):
    """the @njit kernel matches npnorm.layer_norm_forward, also where one-pass or float32 sums fail"""
    check_7_1(ch7)


def test_mutation_one_pass_variance_fails_7_1(tmp_path):
    mod = mutated_solution(
        CHAPTER,
        "        sq = np.float64(0.0)\n        for j in range(d):\n            diff = x[r, j] - mean\n            sq += diff * diff\n"
        "        rstd = 1.0 / np.sqrt(sq / d + eps)",
        "        sq = np.float64(0.0)\n        for j in range(d):\n            sq += x[r, j] * x[r, j]\n"
        "        rstd = 1.0 / np.sqrt(sq / d - mean * mean + eps)", tmp_path)
    msg = failure_message(lambda: check_7_1(mod))
    assert "mean 1e4" in msg and "two passes" in msg, msg


def test_mutation_float32_accumulator_fails_7_1(tmp_path):
    mod = mutated_solution(CHAPTER, "        total = np.float64(0.0)\n", "        total = x[r, 0] - x[r, 0]  # float32 for float32 x\n", tmp_path)
    msg = failure_message(lambda: check_7_1(mod))
    assert "float32 rows near 1000" in msg, msg


# -- the catalogue of common mistakes (npnorm.check names them; tests/exercises/test_mistakes.py) ----
# The kernel fills ``out`` in place; the mistakes are recognized on what the given wrapper
# ``layernorm_forward_numba`` returns. Each wrong kernel is written as the same loops in plain Python.

def _wrong_kernel(x, gamma, beta, eps=1e-5, *, ddof=0, eps_outside=False, one_pass=False):
    rows = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    out = np.empty_like(rows)
    d = rows.shape[1]
    for r in range(rows.shape[0]):
        total = 0.0
        for j in range(d):
            total += float(rows[r, j])
        mean = total / d
        sq = 0.0
        for j in range(d):
            value = float(rows[r, j])
            sq += value * value if one_pass else (value - mean) * (value - mean)
        var = sq / d - mean * mean if one_pass else sq / (d - ddof)
        std = np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps)
        for j in range(d):
            out[r, j] = (float(rows[r, j]) - mean) / std * gamma[j] + beta[j]
    return out.reshape(x.shape)


def _with(func, **options):
    return lambda *args, **kwargs: func(*args, **kwargs, **options)


MISTAKES: list[Mistake] = [
    Mistake("7.1", "unbiased-variance", "layernorm_forward_numba", _with(_wrong_kernel, ddof=1),
            "your kernel divides the sum of squared deviations by D - 1; LayerNorm's variance is the "
            "biased one: divide by D."),
    Mistake("7.1", "eps-outside-sqrt", "layernorm_forward_numba", _with(_wrong_kernel, eps_outside=True),
            "eps is added to the standard deviation; it belongs inside the square root: "
            "1 / sqrt(var + eps)."),
    Mistake("7.1", "one-pass-variance", "layernorm_forward_numba", _with(_wrong_kernel, one_pass=True),
            "the one-pass variance mean(x**2) - mean(x)**2 cancels catastrophically when the mean is "
            "large compared with the spread: take two passes, the mean first, then the mean of "
            "squared deviations."),
]
