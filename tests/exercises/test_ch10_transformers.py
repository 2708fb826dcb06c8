"""Chapter 10 tasks: ScaleNorm forward/backward (10.1) and QK-norm logits forward/backward (10.2),
against npnorm.transformer, plus the catalogue of common mistakes (MISTAKES), each of which the
task checks must catch."""

from __future__ import annotations

import types

import numpy as np
import pytest
from task_helpers import Mistake, TaskFailure, expect_close, expect_gradients, rand, unpack

from npnorm.transformer.l2norm import scale_norm_forward
from npnorm.transformer.qknorm import qk_logits_forward

CHAPTER = "ch10_transformers"
# (shape, g, eps, seed, floored row?). The floored case comes first: the check names a mistake from the
# first recorded calls, and only a floored row tells "floor-ignored" from a right backward pass.
SCALE_CASES = (((4, 6), -0.8, 1.0, 1, True), ((2, 3, 5), 1.7, 1e-5, 0, False))
# (q shape, k shape, g, seed). As many keys as queries first: there "dS-not-transposed" runs (and is
# named); with more keys than queries it is a shape error.
QK_CASES = (((3, 4, 3), (3, 4, 3), -1.3, 1), ((2, 2, 3, 4), (2, 2, 5, 4), 2.5, 0))


@pytest.fixture(scope="module")
def ch10(load):
    return load(CHAPTER)


def _x(shape, seed, floored):
    x = rand(shape, seed, offset=0.5, scale=2.0)
    if floored:
        x[0] = 0.01 * rand(shape[1:], seed + 1)        # ||x|| ~ 0.03 < eps = 1: the floor is active
    return x


def check_10_1_forward(mod) -> None:
    for shape, g, eps, seed, floored in SCALE_CASES:
        x = _x(shape, seed, floored)
        out, _ = unpack(mod.scale_norm_forward(x, g, eps), ("out", "cache"), "scale_norm_forward")
        ref, _ = scale_norm_forward(x, g, eps)
        expect_close(f"out (shape {shape}, eps {eps})", out, ref, rtol=1e-9, atol=1e-12,
                     hint="g * x / max(||x||, eps) over the last axis: eps is a floor on the norm.")


def check_10_1_backward(mod) -> None:
    for shape, g, eps, seed, floored in SCALE_CASES:
        x = _x(shape, seed, floored)
        label = f"your scale_norm_backward (shape {shape}{', a row below eps' if floored else ''})"
        expect_gradients(label, lambda x, g: mod.scale_norm_forward(x, float(g), eps),
                         lambda d, c: mod.scale_norm_backward(d, c), {"x": x, "g": np.array(g)},
                         forward_name="scale_norm_forward", backward_name="scale_norm_backward", seed=seed)


def _qk(qs, ks, seed):
    return rand(qs, seed, offset=0.4, scale=1.5), rand(ks, seed + 1, offset=-0.2, scale=0.8)


def check_10_2_forward(mod) -> None:
    for qs, ks, g, seed in QK_CASES:
        q, k = _qk(qs, ks, seed)
        S, _ = unpack(mod.qk_logits_forward(q, k, g), ("S", "cache"), "qk_logits_forward")
        ref, _ = qk_logits_forward(q, k, "l2", {"g": np.array(g)}, 1e-12)
        expect_close(f"S (q {qs}, k {ks})", S, ref, rtol=1e-9, atol=1e-12,
                     hint="g times the cosines of every (query, key) pair: no 1/sqrt(d) and no mask.")


def check_10_2_backward(mod) -> None:
    for qs, ks, g, seed in QK_CASES:
        q, k = _qk(qs, ks, seed)
        expect_gradients(f"your qk_logits_backward (q {qs}, k {ks})",
                         lambda q, k, g: mod.qk_logits_forward(q, k, float(g)), mod.qk_logits_backward,
                         {"q": q, "k": k, "g": np.array(g)}, forward_name="qk_logits_forward",
                         backward_name="qk_logits_backward", seed=seed, same_shape_output=False)


@pytest.mark.task("10.1")
def test_scale_norm_forward_matches_reference(ch10):
    """scale_norm_forward matches npnorm.transformer.l2norm.scale_norm_forward (also below eps)"""
    check_10_1_forward(ch10)


@pytest.mark.task("10.1")
def test_scale_norm_backward_gradcheck(ch10):
    """scale_norm_backward passes the gradient check for x and g (also where the floor is active)"""
    check_10_1_backward(ch10)


@pytest.mark.task("10.2")
def test_qk_logits_forward_matches_reference(ch10):
    """qk_logits_forward matches npnorm's QK-norm (Henry et al.) logits"""
    check_10_2_forward(ch10)


@pytest.mark.task("10.2")
def test_qk_logits_backward_gradcheck(ch10):
    """qk_logits_backward passes the gradient check for q, k and g (different numbers of queries and keys)"""
    check_10_2_backward(ch10)


# -- the catalogue of common mistakes ------------------------------------------------------------------
# Each ``wrong`` has the signature of the task function and works on the caches of the reference
# solution's forward pass.

def _sn_fwd_eps_inside(x, g, eps=1e-5):
    y = x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + eps)
    n = np.sqrt(np.sum(x * x, axis=-1, keepdims=True))
    return g * y, {"y": y, "d": np.maximum(n, eps), "floored": n <= eps, "g": g}


def _sn_bwd_no_radial(dout, cache):
    return cache["g"] * dout / cache["d"], float(np.sum(dout * cache["y"]))


def _sn_bwd_dg_without_y(dout, cache):
    y, d, g = cache["y"], cache["d"], cache["g"]
    u = g * dout
    radial = np.where(cache["floored"], 0.0, np.sum(u * y, axis=-1, keepdims=True))
    return (u - y * radial) / d, float(np.sum(dout))


def _sn_bwd_ignores_floor(dout, cache):
    y, d, g = cache["y"], cache["d"], cache["g"]
    u = g * dout
    return (u - y * np.sum(u * y, axis=-1, keepdims=True)) / d, float(np.sum(dout * y))


def _qk_bwd_no_transpose(dS, cache):
    qh, kh, g = cache["qh"], cache["kh"], cache["g"]
    dqh = g * (dS @ kh)
    dkh = g * (dS @ qh)           # dS where dS^T belongs (a shape error unless there are as many keys as queries)
    dq = (dqh - qh * np.sum(dqh * qh, axis=-1, keepdims=True)) / cache["nq"]
    dk = (dkh - kh * np.sum(dkh * kh, axis=-1, keepdims=True)) / cache["nk"]
    return dq, dk, float(np.sum(dS * cache["cos"]))


def _qk_bwd_no_radial(dS, cache):
    qh, kh, g = cache["qh"], cache["kh"], cache["g"]
    dq = g * (dS @ kh) / cache["nq"]
    dk = g * (np.swapaxes(dS, -1, -2) @ qh) / cache["nk"]
    return dq, dk, float(np.sum(dS * cache["cos"]))


def _qk_bwd_dg_sum(dS, cache):
    qh, kh, g = cache["qh"], cache["kh"], cache["g"]
    dqh, dkh = g * (dS @ kh), g * (np.swapaxes(dS, -1, -2) @ qh)
    dq = (dqh - qh * np.sum(dqh * qh, axis=-1, keepdims=True)) / cache["nq"]
    dk = (dkh - kh * np.sum(dkh * kh, axis=-1, keepdims=True)) / cache["nk"]
    return dq, dk, float(np.sum(dS))


def _qk_fwd_extra_sqrt_d(q, k, g, eps=1e-12):
    nq = np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), eps)
    nk = np.maximum(np.linalg.norm(k, axis=-1, keepdims=True), eps)
    qh, kh = q / nq, k / nk
    cos = qh @ np.swapaxes(kh, -1, -2) / np.sqrt(q.shape[-1])
    return g * cos, {"qh": qh, "kh": kh, "nq": nq, "nk": nk, "cos": cos, "g": g}


MISTAKES: list[Mistake] = [
    Mistake("10.1", "eps-inside-sqrt", "scale_norm_forward", _sn_fwd_eps_inside,
            "eps is under the square root (x / sqrt(||x||^2 + eps), the Flax/JAX convention); ScaleNorm and "
            "F.normalize use it as a floor: x / max(||x||, eps)."),
    Mistake("10.1", "no-radial-term", "scale_norm_backward", _sn_bwd_no_radial,
            "dx = g * dout / ||x|| forgets that ||x|| depends on x: subtract the radial part, "
            "(u - y <y, u>) / ||x|| with u = g * dout."),
    Mistake("10.1", "dg-without-y", "scale_norm_backward", _sn_bwd_dg_without_y,
            "dg = sum(dout) treats g like a bias; g multiplies y, so dg = sum(dout * y)."),
    Mistake("10.1", "floor-ignored", "scale_norm_backward", _sn_bwd_ignores_floor,
            "where ||x|| <= eps the divisor is the constant eps: there dx = g * dout / eps, without the "
            "radial term."),
    Mistake("10.2", "extra-1/sqrt(d)", "qk_logits_forward", _qk_fwd_extra_sqrt_d,
            "QK-norm replaces 1/sqrt(d) by the learned g: S = g * q_hat k_hat^T, with no 1/sqrt(d)."),
    Mistake("10.2", "dS-not-transposed", "qk_logits_backward", _qk_bwd_no_transpose,
            "dk_hat = g * dS^T @ q_hat: transpose the last two axes of dS (each key collects from every "
            "query that looked at it)."),
    Mistake("10.2", "no-radial-term", "qk_logits_backward", _qk_bwd_no_radial,
            "the gradient through q_hat = q / ||q|| needs the radial part removed: "
            "(dq_hat - q_hat <q_hat, dq_hat>) / ||q||."),
    Mistake("10.2", "dg-sum-of-dS", "qk_logits_backward", _qk_bwd_dg_sum,
            "dg = sum(dS) forgets that g multiplies the cosines: dg = sum(dS * q_hat k_hat^T)."),
]

_CHECKS = {"10.1": (check_10_1_forward, check_10_1_backward), "10.2": (check_10_2_forward, check_10_2_backward)}


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: f"{m.task}-{m.name}")
def test_every_catalogued_mistake_is_caught(mistake, load_solution):
    sol = load_solution(CHAPTER)
    mod = types.SimpleNamespace(**{k: getattr(sol, k) for k in dir(sol) if not k.startswith("__")})
    setattr(mod, mistake.function, mistake.wrong)
    fwd, bwd = _CHECKS[mistake.task]
    check = fwd if mistake.function.endswith("forward") else bwd
    try:
        check(mod)
    except TaskFailure as exc:
        assert str(exc), mistake.name
    except (ValueError, IndexError):      # a shape error is also caught (by the learner's own run)
        pass
    else:
        pytest.fail(f"the task check passed on the catalogued mistake {mistake.name!r}")
