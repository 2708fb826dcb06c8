"""Chapter 4 tasks: GroupNorm via reshape (4.1) and InstanceNorm (4.2), against npnorm.statistics.groupnorm and
npnorm.statistics.instancenorm, backward by gradient check."""

from __future__ import annotations

import pytest
import numpy as np
from task_helpers import (Mistake, expect_close, expect_gradients, failure_message, mentions, mutated_solution, rand,
                          rand_param, unpack)

from npnorm.statistics.groupnorm import group_norm_forward
from npnorm.statistics.instancenorm import instance_norm_forward

CHAPTER = "ch4_groupnorm"
GN_CASES = (((2, 6, 2, 3), 3, 0), ((2, 4, 5), 2, 1), ((3, 4, 2, 2), 1, 2))


@pytest.fixture(scope="module")
def ch4(load):
    return load(CHAPTER)


def _params(c, seed):
    return rand_param((c,), seed + 1), rand((c,), seed + 2)


def check_4_1_forward(mod) -> None:
    for shape, groups, seed in GN_CASES:
        x = rand(shape, seed, offset=3.0, scale=2.0)
        gamma, beta = _params(shape[1], seed)
        out, _ = unpack(mod.groupnorm_forward(x, groups, gamma, beta, 1e-5), ("out", "cache"), "groupnorm_forward")
        ref, _ = group_norm_forward(x, groups, gamma, beta, 1e-5)
        expect_close(f"out (x of shape {shape}, num_groups={groups})", out, ref, rtol=1e-9, atol=1e-10,
                     hint="reshape to (N, G, -1), standardize over the last axis, reshape back; then the "
                          "per-channel affine map with gamma.reshape(1, C, 1, 1).")


def check_4_1_backward(mod) -> None:
    for shape, groups, seed in GN_CASES:
        gamma, beta = _params(shape[1], seed)
        inputs = {"x": rand(shape, seed, offset=3.0, scale=2.0), "num_groups": groups, "gamma": gamma, "beta": beta}
        expect_gradients(f"your groupnorm_backward (x of shape {shape}, num_groups={groups})", mod.groupnorm_forward,
                         mod.groupnorm_backward, inputs, forward_name="groupnorm_forward",
                         backward_name="groupnorm_backward", seed=seed)


@pytest.mark.task("4.1")
def test_groupnorm_forward_matches_reference(ch4):
    """groupnorm_forward matches npnorm.group_norm_forward (G = 3, 2, 1)"""
    check_4_1_forward(ch4)


@pytest.mark.task("4.1")
def test_groupnorm_backward_gradcheck(ch4):
    """groupnorm_backward passes the gradient check (dx, dgamma, dbeta)"""
    check_4_1_backward(ch4)


IN_CASES = (((2, 3, 2, 3), 10), ((3, 2, 5), 11))


def check_4_2_forward(mod) -> None:
    for shape, seed in IN_CASES:
        x = rand(shape, seed, offset=-2.0, scale=4.0)
        gamma, beta = _params(shape[1], seed)
        out, _ = unpack(mod.instancenorm_forward(x, gamma, beta, 1e-5), ("out", "cache"), "instancenorm_forward")
        ref, _ = instance_norm_forward(x, gamma, beta, 1e-5)
        expect_close(f"out (x of shape {shape})", out, ref, rtol=1e-9, atol=1e-10,
                     hint="statistics per (sample, channel) over the positions: axes 2, 3, ...")


def check_4_2_backward(mod) -> None:
    for shape, seed in IN_CASES:
        gamma, beta = _params(shape[1], seed)
        inputs = {"x": rand(shape, seed, offset=-2.0, scale=4.0), "gamma": gamma, "beta": beta}
        expect_gradients(f"your instancenorm_backward (x of shape {shape})", mod.instancenorm_forward,
                         mod.instancenorm_backward, inputs, forward_name="instancenorm_forward",
                         backward_name="instancenorm_backward", seed=seed)


@pytest.mark.task("4.2")
def test_instancenorm_forward_matches_reference(ch4):
    """instancenorm_forward matches npnorm.instance_norm_forward"""
    check_4_2_forward(ch4)


@pytest.mark.task("4.2")
def test_instancenorm_backward_gradcheck(ch4):
    """instancenorm_backward passes the gradient check (dx, dgamma, dbeta)"""
    check_4_2_backward(ch4)


# -- mutations -------------------------------------------------------------------------------------

def test_mutation_groups_from_wrong_reshape_fails_4_1(tmp_path):
    # splitting the *positions* instead of the channels: (N, -1, G) instead of (N, G, -1)
    mod = mutated_solution(CHAPTER, "grouped = x.reshape(n, num_groups, -1)\n    mu = grouped.mean(axis=-1, keepdims=True)",
                           "grouped = x.reshape(n, -1, num_groups)\n    mu = grouped.mean(axis=-1, keepdims=True)", tmp_path)
    msg = failure_message(lambda: check_4_1_forward(mod))
    assert mentions(msg, "num_groups=3", "first mismatch"), msg


def test_mutation_dgamma_per_group_sum_missing_batch_fails_4_1(tmp_path):
    mod = mutated_solution(CHAPTER, "    axes = (0,) + tuple(range(2, dout.ndim))\n    dbeta",
                           "    axes = tuple(range(2, dout.ndim))\n    dbeta", tmp_path)
    assert "groupnorm_backward" in failure_message(lambda: check_4_1_backward(mod))


def test_mutation_missing_variance_term_fails_4_2(tmp_path):
    mod = mutated_solution(CHAPTER, "\n                 - x_hat * np.mean(g * x_hat, axis=spatial, keepdims=True))", ")",
                           tmp_path)
    msg = failure_message(lambda: check_4_2_backward(mod))
    assert mentions(msg, "-> dx is wrong", r"gamma .* ok", r"beta .* ok"), msg


# -- the catalogue of common mistakes (npnorm.check names them; tests/exercises/test_mistakes.py) ----

def _view(ndim):
    return (1, -1) + (1,) * (ndim - 2)


def _gn_forward(x, num_groups, gamma, beta, eps=1e-5, *, split_positions=False, per_channel=False):
    n, c = x.shape[:2]
    groups = c if per_channel else num_groups
    grouped = x.reshape(n, -1, groups) if split_positions else x.reshape(n, groups, -1)
    xc = grouped - grouped.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(np.mean(xc * xc, axis=-1, keepdims=True) + eps)
    x_hat = (xc * rstd).reshape(x.shape)
    cache = {"x_hat": x_hat, "rstd": rstd, "gamma": gamma, "num_groups": num_groups}
    return gamma.reshape(_view(x.ndim)) * x_hat + beta.reshape(_view(x.ndim)), cache


def _gn_backward(dout, cache, *, batch_sum=True, mean_term=True):
    x_hat, rstd, gamma, groups = cache["x_hat"], cache["rstd"], cache["gamma"], cache["num_groups"]
    axes = ((0,) if batch_sum else ()) + tuple(range(2, dout.ndim))
    dbeta, dgamma = dout.sum(axis=axes), np.sum(dout * x_hat, axis=axes)
    n = dout.shape[0]
    g = (dout * gamma.reshape(_view(dout.ndim))).reshape(n, groups, -1)
    xh = x_hat.reshape(n, groups, -1)
    inner = g - g.mean(axis=-1, keepdims=True) if mean_term else g
    dx = rstd * (inner - xh * np.mean(g * xh, axis=-1, keepdims=True))
    return dx.reshape(dout.shape), dgamma, dbeta


def _in_forward(x, gamma, beta, eps=1e-5, *, with_channels=False):
    axes = tuple(range(1 if with_channels else 2, x.ndim))
    xc = x - x.mean(axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(np.mean(xc * xc, axis=axes, keepdims=True) + eps)
    x_hat = xc * rstd
    cache = {"x_hat": x_hat, "rstd": rstd, "gamma": gamma}
    return gamma.reshape(_view(x.ndim)) * x_hat + beta.reshape(_view(x.ndim)), cache


def _in_backward(dout, cache, *, variance_term=True, per_sample=False):
    x_hat, rstd, gamma = cache["x_hat"], cache["rstd"], cache["gamma"]
    spatial = tuple(range(2, dout.ndim))
    axes = spatial if per_sample else (0,) + spatial
    dbeta, dgamma = dout.sum(axis=axes), np.sum(dout * x_hat, axis=axes)
    g = dout * gamma.reshape(_view(dout.ndim))
    inner = g - g.mean(axis=spatial, keepdims=True)
    if variance_term:
        inner = inner - x_hat * np.mean(g * x_hat, axis=spatial, keepdims=True)
    return rstd * inner, dgamma, dbeta


def _with(func, **options):
    return lambda *args, **kwargs: func(*args, **kwargs, **options)


MISTAKES: list[Mistake] = [
    Mistake("4.1", "groups-of-positions", "groupnorm_forward", _with(_gn_forward, split_positions=True),
            "x.reshape(N, -1, G) splits the positions into G groups; the groups are made of CHANNELS: "
            "x.reshape(N, G, -1) puts each group's C/G channels and all their positions in one row."),
    Mistake("4.1", "groups-ignored", "groupnorm_forward", _with(_gn_forward, per_channel=True),
            "you normalize every channel on its own (that is InstanceNorm, G = C); GroupNorm shares the "
            "statistics among the C/G channels of a group: reshape to (N, num_groups, -1)."),
    Mistake("4.1", "dgamma-missing-batch-sum", "groupnorm_backward", _with(_gn_backward, batch_sum=False),
            "dgamma and dbeta are summed over the positions but not over the batch: sum over axis 0 "
            "too (one gamma per channel, shared by every sample)."),
    Mistake("4.1", "missing-mean-term", "groupnorm_backward", _with(_gn_backward, mean_term=False),
            "dx misses the term through the group's mean, - mean(g) over each (sample, group) row."),
    Mistake("4.2", "channels-in-the-statistics", "instancenorm_forward", _with(_in_forward, with_channels=True),
            "you take the statistics over the channels and the positions (that is LayerNorm over "
            "(C, H, W)); InstanceNorm uses each (sample, channel)'s positions only: axes 2, 3, ..."),
    Mistake("4.2", "missing-variance-term", "instancenorm_backward", _with(_in_backward, variance_term=False),
            "dx misses the term through the variance, - x_hat * mean(g * x_hat) over the positions."),
    Mistake("4.2", "dgamma-per-sample", "instancenorm_backward", _with(_in_backward, per_sample=True),
            "dgamma and dbeta keep one value per sample: sum over the batch too (axis 0), not only "
            "over the positions."),
]
