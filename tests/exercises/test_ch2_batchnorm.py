"""Chapter 2 tasks: BatchNorm forward (2.1), staged (2.2) and fused (2.3) backward, running stats (2.4).

References: npnorm.statistics.batchnorm (forward and both backward passes) and npnorm.BatchNorm1d (running
statistics). Backward passes are checked with npnorm.gradcheck against central differences of the
reference forward, given a correct cache - so 2.2 and 2.3 do not depend on the learner's 2.1.
"""

from __future__ import annotations

import numpy as np
import pytest
from task_helpers import (TaskFailure, expect_close, expect_gradients, failure_message, mentions, mutated_solution,
                          rand, rand_param, unpack)

from npnorm import BatchNorm1d
from npnorm.statistics.batchnorm import batch_norm_forward

CHAPTER = "ch2_batchnorm"
CACHE_KEYS = ("x_hat", "xc", "var", "std", "rstd", "gamma")


@pytest.fixture(scope="module")
def ch2(load):
    return load(CHAPTER)


def _inputs(n: int = 6, d: int = 4, seed: int = 0):
    return rand((n, d), seed, offset=12.0, scale=5.0), rand_param((d,), seed + 1), rand((d,), seed + 2)


def _reference(x, gamma, beta, eps=1e-5):
    """npnorm's forward, and the cache in the layout the exercise's docstring fixes."""
    out, ref = batch_norm_forward(x, gamma, beta, eps)
    cache = {"x_hat": ref["x_hat"], "xc": ref["xc"], "var": ref["var"], "std": ref["std"],
             "rstd": ref["rstd"], "gamma": gamma}
    return out, cache


def check_2_1(mod) -> None:
    for eps, (n, d, seed) in ((1e-5, (6, 4, 0)), (1e-1, (3, 5, 10))):
        x, gamma, beta = _inputs(n, d, seed)
        out, cache = unpack(mod.batchnorm_forward(x, gamma, beta, eps), ("out", "cache"), "batchnorm_forward")
        ref_out, ref_cache = _reference(x, gamma, beta, eps)
        expect_close(f"out (x of shape {x.shape}, eps={eps})", out, ref_out, rtol=1e-9, atol=1e-10,
                     hint="the variance is the biased one (divide by N), eps goes inside the square root.")
        if not isinstance(cache, dict) or set(CACHE_KEYS) - set(cache):
            missing = sorted(set(CACHE_KEYS) - set(cache)) if isinstance(cache, dict) else CACHE_KEYS
            raise TaskFailure(f"the cache must be a dict with keys {CACHE_KEYS}; missing: {missing}")
        for key in CACHE_KEYS:
            want = ref_cache[key]
            got = np.asarray(cache[key])
            if got.size == np.size(want):        # (D,) instead of (1, D) is fine
                got = got.reshape(np.shape(want))
            expect_close(f'cache["{key}"]', got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.task("2.1")
def test_forward_matches_reference(ch2):
    """batchnorm_forward matches npnorm.batch_norm_forward, and its cache is complete"""
    check_2_1(ch2)


def _check_backward(backward, name: str, keys: tuple[str, ...] = CACHE_KEYS) -> None:
    def forward(x, gamma, beta):
        out, cache = _reference(x, gamma, beta)
        return out, {k: cache[k] for k in keys}

    def guarded(dout, cache):
        try:
            return backward(dout, cache)
        except KeyError as exc:
            raise TaskFailure(f"{name} read cache[{exc.args[0]!r}], but the cache it gets holds only "
                              f"{sorted(keys)}.") from None

    for n, d, seed in ((6, 4, 20), (3, 5, 30)):   # (N = 2 would make dx identically 0)
        x, gamma, beta = _inputs(n, d, seed)
        expect_gradients(f"your {name} (x of shape {x.shape})", forward, guarded,
                         {"x": x, "gamma": gamma, "beta": beta}, forward_name="batch_norm_forward",
                         backward_name=name, seed=seed)


def check_2_2(mod) -> None:
    _check_backward(mod.batchnorm_backward_staged, "batchnorm_backward_staged")


def check_2_3(mod) -> None:
    _check_backward(mod.batchnorm_backward_fused, "batchnorm_backward_fused", keys=("x_hat", "rstd", "gamma"))


@pytest.mark.task("2.2")
def test_staged_backward_gradcheck(ch2):
    """batchnorm_backward_staged passes the gradient check (dx, dgamma, dbeta)"""
    check_2_2(ch2)


@pytest.mark.task("2.3")
def test_fused_backward_gradcheck(ch2):
    """batchnorm_backward_fused passes the gradient check using only x_hat, rstd and gamma"""
    check_2_3(ch2)


def check_2_4(mod) -> None:
    d = 3
    for momentum in (0.1, 0.3, None):
        layer = BatchNorm1d(d, momentum=momentum)
        running_mean, running_var, tracked = rand((d,), 40), 1.0 + rand((d,), 41) ** 2, 2
        layer.running_mean, layer.running_var, layer.num_batches_tracked = running_mean.copy(), running_var.copy(), tracked
        for step, n in enumerate((5, 2, 8)):
            x = rand((n, d), 50 + step, offset=3.0, scale=2.0)
            before = (running_mean.copy(), running_var.copy())
            result = mod.update_running_stats(running_mean, running_var, x, momentum, tracked)
            new_mean, new_var, new_tracked = unpack(
                result, ("new_running_mean", "new_running_var", "num_batches_tracked"), "update_running_stats")
            if not (np.array_equal(before[0], running_mean) and np.array_equal(before[1], running_var)):
                raise TaskFailure("update_running_stats modified running_mean or running_var in place; "
                                  "return new arrays instead.")
            layer(x)
            what = f"(momentum={momentum}, batch {step + 1} of size {n}, {tracked} batches tracked before)"
            expect_close("new_running_mean", new_mean, layer.running_mean, rtol=1e-10, atol=1e-12, context=what)
            expect_close("new_running_var", new_var, layer.running_var, rtol=1e-10, atol=1e-12, context=what,
                         hint="the running variance stores the UNBIASED batch variance (divide by N - 1), "
                              "although the forward pass normalizes with the biased one. With momentum=None "
                              "the weight of the new batch is 1 / (num_batches_tracked + 1).")
            if int(new_tracked) != layer.num_batches_tracked:
                raise TaskFailure(f"num_batches_tracked: you return {new_tracked}, expected "
                                  f"{layer.num_batches_tracked} {what}.")
            running_mean, running_var, tracked = new_mean, new_var, int(new_tracked)


@pytest.mark.task("2.4")
def test_running_stats_match_batchnorm1d(ch2):
    """update_running_stats follows npnorm.BatchNorm1d (= PyTorch) for momentum 0.1, 0.3 and None"""
    check_2_4(ch2)


# -- mutations -------------------------------------------------------------------------------------

def test_mutation_unbiased_variance_in_forward_fails_2_1(tmp_path):
    mod = mutated_solution(CHAPTER, "var = np.mean(xc * xc, axis=0, keepdims=True)\n    std = np.sqrt(var + eps)\n    rstd",
                           "var = np.var(x, axis=0, ddof=1, keepdims=True)\n    std = np.sqrt(var + eps)\n    rstd", tmp_path)
    msg = failure_message(lambda: check_2_1(mod))
    assert mentions(msg, r"^out \(x of shape", "first mismatch at index", "expected", "biased"), msg


def test_mutation_missing_variance_path_fails_2_2(tmp_path):
    mod = mutated_solution(CHAPTER, "dxc = dxc + dvar * 2.0 * xc / n", "dxc = dxc", tmp_path)
    msg = failure_message(lambda: check_2_2(mod))
    assert mentions(msg, "FAILED", "-> dx is wrong", r"gamma .* ok"), msg


def test_mutation_missing_term_fails_2_3(tmp_path):
    mod = mutated_solution(CHAPTER, " - x_hat * np.sum(g * x_hat, axis=0, keepdims=True))", ")", tmp_path)
    msg = failure_message(lambda: check_2_3(mod))
    assert mentions(msg, "batchnorm_backward_fused", "-> dx is wrong", "max rel. error", "worst index"), msg


def test_mutation_fused_reading_other_cache_keys_fails_2_3(tmp_path):
    mod = mutated_solution(CHAPTER, 'x_hat, rstd, gamma = cache["x_hat"], cache["rstd"], cache["gamma"]\n    n',
                           'x_hat, rstd, gamma = cache["xc"] * cache["rstd"], cache["rstd"], cache["gamma"]\n    n',
                           tmp_path)
    assert "read cache['xc']" in failure_message(lambda: check_2_3(mod))


def test_mutation_biased_running_variance_fails_2_4(tmp_path):
    mod = mutated_solution(CHAPTER, "* n / (n - 1)", "", tmp_path)
    msg = failure_message(lambda: check_2_4(mod))
    assert mentions(msg, "new_running_var is wrong", "UNBIASED"), msg


def test_mutation_cumulative_average_off_by_one_fails_2_4(tmp_path):
    mod = mutated_solution(CHAPTER, "alpha = 1.0 / num_batches_tracked if", "alpha = 1.0 / (num_batches_tracked + 1) if",
                           tmp_path)
    assert "momentum=None" in failure_message(lambda: check_2_4(mod))
