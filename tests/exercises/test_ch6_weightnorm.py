"""Chapter 6 tasks: spectral norm's power iteration (6.1) and weight norm's backward (6.2).

npnorm has no weight-side layers on this branch yet, so these are checked from first principles:
np.linalg.norm(W, 2) (the exact largest singular value), the defining recurrence, and central
differences (npnorm.gradcheck) of w = g v / ||v||.
"""

from __future__ import annotations

import numpy as np
import pytest
from task_helpers import (Mistake, TaskFailure, expect_close, expect_gradients, failure_message, mentions, mutated_solution,
                          rand, unpack)

CHAPTER = "ch6_weightnorm"


@pytest.fixture(scope="module")
def ch6(load):
    return load(CHAPTER)


def _matrix_with_singular_values(out: int, inp: int, s: list[float], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q1, _ = np.linalg.qr(rng.standard_normal((out, out)))
    q2, _ = np.linalg.qr(rng.standard_normal((inp, inp)))
    sigma = np.zeros((out, inp))
    sigma[np.arange(len(s)), np.arange(len(s))] = s
    return q1 @ sigma @ q2.T


def _unit(a):
    return a / np.linalg.norm(a)


def _round(W, u, v):
    """One round of the recurrence, u first."""
    u = _unit(W @ v)
    return u, _unit(W.T @ u)


def check_6_1(mod) -> None:
    # a square matrix first: there, using W where W.T belongs runs (and is wrong)
    W = rand((4, 4), seed=11, scale=2.0)
    u0, v0 = _unit(rand((4,), seed=12)), _unit(rand((4,), seed=13))
    u, v, sigma = unpack(mod.power_iteration(W, u0.copy(), v0.copy(), 1), ("u", "v", "sigma"),
                         "power_iteration")
    u1, v1 = _round(W, u0, v0)
    expect_close("u after one iteration (W of shape (4, 4))", u, u1, rtol=1e-10, atol=1e-12,
                 hint="u = normalize(W @ v) comes first, then v = normalize(W.T @ u) with the new u.")
    expect_close("v after one iteration (W of shape (4, 4))", v, v1, rtol=1e-10, atol=1e-12)
    expect_close("sigma after one iteration (W of shape (4, 4))", sigma, u1 @ W @ v1, rtol=1e-10, atol=1e-12,
                 hint="sigma = u @ W @ v with the new u and v.")
    W = rand((5, 3), seed=1, scale=2.0)
    u0, v0 = _unit(rand((5,), seed=2)), _unit(rand((3,), seed=3))
    u_in, v_in = u0.copy(), v0.copy()
    u, v, sigma = unpack(mod.power_iteration(W, u_in, v_in, 1), ("u", "v", "sigma"), "power_iteration")
    if not (np.array_equal(u_in, u0) and np.array_equal(v_in, v0)):
        raise TaskFailure("power_iteration modified the u or v passed in; work on new arrays.")
    u1, v1 = _round(W, u0, v0)
    expect_close("u after one iteration", u, u1, rtol=1e-10, atol=1e-12,
                 hint="u = normalize(W @ v) comes first.")
    expect_close("v after one iteration", v, v1, rtol=1e-10, atol=1e-12,
                 hint="then v = normalize(W.T @ u), with the new u.")
    expect_close("sigma after one iteration", sigma, u1 @ W @ v1, rtol=1e-10, atol=1e-12,
                 hint="sigma = u @ W @ v with the new u and v.")
    # two rounds are two applications of the recurrence
    u2, _ = _round(W, *_round(W, u0, v0))
    expect_close("u after two iterations", mod.power_iteration(W, u0.copy(), v0.copy(), 2)[0], u2,
                 rtol=1e-10, atol=1e-12)
    # it converges to the largest singular value, from below
    W = _matrix_with_singular_values(6, 4, [3.0, 1.5, 1.0, 0.5], seed=3)
    exact = np.linalg.norm(W, 2)
    start = (_unit(rand((6,), seed=4)), _unit(rand((4,), seed=5)))
    _, _, sigma = mod.power_iteration(W, *start, 60)
    expect_close("sigma after 60 iterations", sigma, exact, rtol=1e-10, atol=0,
                 context="(the exact largest singular value is np.linalg.norm(W, 2) = 3)")
    _, _, sigma1 = mod.power_iteration(W, *start, 1)
    if not sigma1 <= exact * (1 + 1e-12):
        raise TaskFailure(f"sigma after one iteration is {sigma1:.6g}, above the largest singular value {exact:.6g}.")
    # a 3 x 7 matrix (wider than tall) and the zero vector guard
    W = rand((3, 7), seed=5)
    u, v, _ = mod.power_iteration(W, _unit(rand((3,), seed=6)), _unit(rand((7,), seed=16)), 3)
    if np.shape(u) != (3,) or np.shape(v) != (7,):
        raise TaskFailure(f"for W of shape (3, 7), u must have shape (3,) and v shape (7,); got {np.shape(u)}, {np.shape(v)}.")
    u, v, sigma = mod.power_iteration(np.zeros((3, 2)), _unit(rand((3,), seed=7)), _unit(rand((2,), seed=17)), 1)
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(v)) and sigma == 0.0):
        raise TaskFailure("for W = 0 power_iteration must return finite u, v and sigma = 0: normalize with "
                          "l2_normalize (it guards against dividing by a zero norm).")


@pytest.mark.task("6.1")
def test_power_iteration(ch6):
    """power_iteration follows the recurrence and converges to np.linalg.norm(W, 2)"""
    check_6_1(ch6)


WN_CASES = (((3, 2, 2, 2), 0, (3, 1, 1, 1), 0), ((3, 4), None, (), 1), ((3, 4), 1, (1, 4), 2))


def check_6_2(mod) -> None:
    for vshape, dim, gshape, seed in WN_CASES:
        v = rand(vshape, seed, offset=0.5)
        g = np.asarray(np.random.default_rng(seed + 100).uniform(0.5, 2.0, gshape) * (-1.0) ** np.arange(int(np.prod(gshape))).reshape(gshape))
        # the given forward must still compute w = g v / ||v||
        axes = tuple(a for a in range(v.ndim) if dim is None or a != dim % v.ndim)
        w_expected = g * v / np.sqrt(np.sum(v * v, axis=axes, keepdims=dim is not None))
        w, _ = mod.weightnorm_forward(v, g, dim)
        expect_close("w from the given weightnorm_forward", w, w_expected, rtol=1e-12, atol=1e-14,
                     context="(that function is given; restore it from solutions/ or regenerate)")
        expect_gradients(f"your weightnorm_backward (v of shape {vshape}, dim={dim})",
                         lambda v, g, dim=dim: mod.weightnorm_forward(v, g, dim), mod.weightnorm_backward,
                         {"v": v, "g": g}, forward_name="weightnorm_forward", backward_name="weightnorm_backward",
                         seed=seed)


@pytest.mark.task("6.2")
def test_weightnorm_backward_gradcheck(ch6):
    """weightnorm_backward passes the gradient check for v and g (dim=0, None, 1)"""
    check_6_2(ch6)


def test_control_sigma_as_norm_of_WTu_is_accepted_6_1(tmp_path):
    mod = mutated_solution(CHAPTER, "        v = l2_normalize(W.T @ u, eps)\n    sigma = float(u @ W @ v)",
                           "        sigma = float(np.linalg.norm(W.T @ u))\n        v = l2_normalize(W.T @ u, eps)\n"
                           "    sigma = float(u @ W @ v) * 0 + sigma", tmp_path)
    # (mathematically equal: ||W.T u|| = u @ W @ v once v = normalize(W.T @ u); this mutation must PASS -
    # a control for the test's fairness)
    check_6_1(mod)


def test_mutation_v_before_u_fails_6_1(tmp_path):
    mod = mutated_solution(CHAPTER, "        u = l2_normalize(W @ v, eps)\n        v = l2_normalize(W.T @ u, eps)",
                           "        v = l2_normalize(W.T @ u, eps)\n        u = l2_normalize(W @ v, eps)",
                           tmp_path)
    msg = failure_message(lambda: check_6_1(mod))
    assert mentions(msg, r"after one iteration \(W of shape \(4, 4\)\) is wrong", "first mismatch"), msg


def test_mutation_missing_projection_fails_6_2(tmp_path):
    mod = mutated_solution(CHAPTER, "dv = (g / norm) * dw - (g * dg / norm**2) * v", "dv = (g / norm) * dw", tmp_path)
    msg = failure_message(lambda: check_6_2(mod))
    assert mentions(msg, "-> dv is wrong", r"g .* ok"), msg


# -- the catalogue of common mistakes (npnorm.check names them; tests/exercises/test_mistakes.py) ----

def _l2(a):
    return a / max(float(np.linalg.norm(a)), 1e-12)


def _power(W, u, v, n_iters=1, eps=1e-12, *, v_first=False, old_vectors=False, frobenius=False,
           transposed=False):
    u_old, v_old = u, v
    for _ in range(n_iters):
        u_old, v_old = u, v
        if v_first:
            v = _l2(W.T @ u)
            u = _l2(W @ v)
        else:
            u = _l2((W.T @ v) if transposed else (W @ v))
            v = _l2((W @ u) if transposed else (W.T @ u))
    sigma = float(np.linalg.norm(W)) if frobenius else float((u_old @ W @ v_old) if old_vectors else (u @ W @ v))
    return u, v, sigma


def _wn_backward(dw, cache, *, projection=True, dg_axes="right", divide=True):
    v, g, norm, axes = cache["v"], cache["g"], cache["norm"], cache["axes"]
    if dg_axes == "right":
        dg = np.sum(dw * v, axis=axes, keepdims=cache["keepdims"])
    else:   # over the axis that was kept, i.e. per input unit
        other = tuple(a for a in range(v.ndim) if a not in axes) or axes
        dg = np.sum(dw * v, axis=other, keepdims=True)
    if divide:
        dg = dg / norm
    dv = (g / norm) * dw - ((g * dg / norm**2) * v if projection else 0)
    return dv, dg


def _with(func, **options):
    return lambda *args, **kwargs: func(*args, **kwargs, **options)


MISTAKES: list[Mistake] = [
    Mistake("6.1", "v-before-u", "power_iteration", _with(_power, v_first=True),
            "you update v first; the chapter's order (and PyTorch's parametrization) is u = normalize(W @ v) "
            "first, then v = normalize(W.T @ u) with the new u."),
    Mistake("6.1", "sigma-from-the-old-vectors", "power_iteration", _with(_power, old_vectors=True),
            "sigma uses the u and v from before the round; compute sigma = u @ W @ v with the NEW ones."),
    Mistake("6.1", "frobenius-norm", "power_iteration", _with(_power, frobenius=True),
            "sigma is the Frobenius norm of W (np.linalg.norm(W)); the spectral norm is the largest "
            "singular value, u @ W @ v."),
    Mistake("6.1", "transposed-matrix", "power_iteration", _with(_power, transposed=True),
            "W and W.T are swapped: u has W's output size, so u = normalize(W @ v) and "
            "v = normalize(W.T @ u)."),
    Mistake("6.2", "missing-projection", "weightnorm_backward", _with(_wn_backward, projection=False),
            "dv misses the projection - g dg / ||v||**2 * v: the part of dw along v must be removed, "
            "since changing the length of v does not change w."),
    Mistake("6.2", "dg-wrong-axis", "weightnorm_backward", _with(_wn_backward, dg_axes="wrong"),
            "dg is summed over the wrong axis: sum dw * v over every axis EXCEPT dim (cache['axes'], "
            "keepdims=cache['keepdims']), one value per output unit."),
    Mistake("6.2", "dg-not-divided-by-norm", "weightnorm_backward", _with(_wn_backward, divide=False),
            "dg = sum(dw * v) / ||v||: w depends on g through the unit vector v / ||v||."),
]
