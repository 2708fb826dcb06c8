"""Chapter 2 tasks: BatchNorm forward (2.1), staged (2.2) and fused (2.3) backward, running stats (2.4).

References: npnorm.statistics.batchnorm (forward and both backward passes) and npnorm.BatchNorm1d (running
statistics). Backward passes are checked with npnorm.gradcheck against central differences of the
reference forward, given a correct cache - so 2.2 and 2.3 do not depend on the learner's 2.1.
"""

from __future__ import annotations

import numpy as np
import pytest
import inspect
import sys

from task_helpers import (Mistake, TaskFailure, expect_close, expect_gradients, failure_message, mentions,
                          mutated_solution, rand, rand_param, unpack)

from npnorm import BatchNorm1d, BatchNorm2d
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


def call_with_locals(func, *args):
    """Call ``func`` and return its result and its local variables as they were when it returned."""
    code = getattr(inspect.unwrap(func), "__code__", None)
    captured: dict = {}

    def profile(frame, event, arg):
        if event == "return" and frame.f_code is code:
            captured.update(frame.f_locals)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        result = func(*args)
    finally:
        sys.setprofile(previous)
    return result, captured


# The staged backward's nodes, in the order the backward pass visits them: (local name, node of the
# forward graph, what a wrong value usually means).
NODES = (
    ("dx_hat", "(7) out = gamma * x_hat + beta", "dx_hat = dout * gamma."),
    ("drstd", "(6) x_hat = xc * rstd, the rstd path",
     "drstd = sum(dx_hat * xc, axis=0, keepdims=True): rstd is shared by the whole column."),
    ("dstd", "(5) rstd = 1 / std", "d(1/s)/ds = -1/s**2, so dstd = -drstd / std**2."),
    ("dvar", "(4) std = sqrt(var + eps)", "d sqrt(v + eps)/dv = 1 / (2 std), so dvar = dstd * 0.5 / std."),
    ("dxc", "(3) and (6): xc feeds two nodes",
     "xc feeds (6) directly and (3) through the variance: dxc = dx_hat * rstd + dvar * 2 * xc / N - "
     "both contributions added (+=, not =)."),
    ("dmu", "(2) xc = x - mu", "mu is subtracted from every row: dmu = -sum(dxc, axis=0, keepdims=True)."),
    ("dx", "(1) mu = mean(x), and the direct path", "dx = dxc + dmu / N."),
)


def _reference_nodes(dout, cache):
    xc, std, rstd, gamma = cache["xc"], cache["std"], cache["rstd"], cache["gamma"]
    n = dout.shape[0]
    dx_hat = dout * gamma
    drstd = np.sum(dx_hat * xc, axis=0, keepdims=True)
    dstd = -drstd / std**2
    dvar = dstd * 0.5 / std
    dxc = dx_hat * rstd + dvar * 2.0 * xc / n
    dmu = -np.sum(dxc, axis=0, keepdims=True)
    return {"dx_hat": dx_hat, "drstd": drstd, "dstd": dstd, "dvar": dvar, "dxc": dxc, "dmu": dmu,
            "dx": dxc + dmu / n}


def check_2_2_nodes(mod) -> None:
    """Node by node: the first intermediate gradient (named as in the docstring) that is wrong."""
    x, gamma, beta = _inputs(5, 3, 60)
    _, cache = _reference(x, gamma, beta)
    dout = rand(x.shape, 61)
    _, local = call_with_locals(mod.batchnorm_backward_staged, dout, dict(cache))
    want = _reference_nodes(dout, cache)
    right = []
    for name, node, hint in NODES:
        if name not in local or not isinstance(local[name], (np.ndarray, float)):
            continue
        got = np.asarray(local[name], dtype=np.float64)
        ref = want[name]
        if got.size == ref.size and got.shape != ref.shape:     # (D,) for (1, D) is fine
            got = got.reshape(ref.shape)
        ok = got.shape == ref.shape and np.allclose(got, ref, rtol=1e-9, atol=1e-12)
        if not ok:
            before = f" The nodes before it are right: {', '.join(right)}." if right else ""
            try:
                expect_close(name, got, ref, rtol=1e-9, atol=1e-12)
            except TaskFailure as exc:
                detail = str(exc)
            raise TaskFailure(f"node {node}: your {name} is wrong.{before}\n{detail}\nhint: {hint}")
        right.append(name)


def check_2_2(mod) -> None:
    check_2_2_nodes(mod)
    _check_backward(mod.batchnorm_backward_staged, "batchnorm_backward_staged")


def check_2_3(mod) -> None:
    _check_backward(mod.batchnorm_backward_fused, "batchnorm_backward_fused", keys=("x_hat", "rstd", "gamma"))


@pytest.mark.task("2.2")
def test_staged_backward_node_by_node(ch2):
    """every node of batchnorm_backward_staged (dx_hat, drstd, dstd, dvar, dxc, dmu, dx) is right"""
    check_2_2_nodes(ch2)


@pytest.mark.task("2.2")
def test_staged_backward_gradcheck(ch2):
    """batchnorm_backward_staged passes the gradient check (dx, dgamma, dbeta)"""
    _check_backward(ch2.batchnorm_backward_staged, "batchnorm_backward_staged")


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


def _eval_inputs(shape, seed):
    c = shape[1]
    x = rand(shape, seed, offset=3.0, scale=2.0)
    gamma, beta = rand_param((c,), seed + 1), rand((c,), seed + 2)
    mean, var = rand((c,), seed + 3, offset=3.0), 0.5 + rand((c,), seed + 4) ** 2
    return x, gamma, beta, mean, var


def check_2_5(mod) -> None:
    # W = C: a (C,) array broadcast along the last axis (W) instead of the channels runs silently
    for shape, eps, seed in (((2, 3, 2, 3), 1e-5, 70), ((4, 2, 3, 5), 1e-1, 80)):
        x, gamma, beta, mean, var = _eval_inputs(shape, seed)
        layer = BatchNorm2d(shape[1], eps=eps, backend="numpy")
        layer.params["weight"][...] = gamma
        layer.params["bias"][...] = beta
        layer.running_mean, layer.running_var = mean.copy(), var.copy()
        layer.eval()
        out = mod.batchnorm2d_eval(x, gamma, beta, mean, var, eps)
        expect_close(f"out (x of shape {shape}, eps={eps})", out, layer(x), rtol=1e-9, atol=1e-10,
                     context="(compared with npnorm.BatchNorm2d in eval mode)",
                     hint="per channel: reshape gamma, beta and the running statistics to (1, C, 1, 1); "
                          "use the running statistics, not the batch's.")
        alone = mod.batchnorm2d_eval(x[:1], gamma, beta, mean, var, eps)
        expect_close("out of the first image given alone", alone, np.asarray(out)[:1], rtol=1e-12,
                     atol=1e-12, hint="in evaluation mode an image's output must not depend on the rest "
                                      "of the batch.")


@pytest.mark.task("2.5")
def test_eval_mode_nchw_matches_batchnorm2d(ch2):
    """batchnorm2d_eval matches npnorm.BatchNorm2d in eval mode, per channel, and each image alone"""
    check_2_5(ch2)


# -- the catalogue of common mistakes (npnorm.check names them; tests/exercises/test_mistakes.py) ----

def _bn_forward(x, gamma, beta, eps=1e-5, *, axis=0, ddof=0, eps_outside=False, center=True):
    mu = x.mean(axis=axis, keepdims=True)
    xc = x - mu
    var = np.sum(xc * xc, axis=axis, keepdims=True) / (x.shape[axis] - ddof)
    std = np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps)
    return gamma * xc / std + beta, {}


def _staged(dout, cache, *, variance_path=True, accumulate=True, sum_dmu=True, dgamma_axis=0):
    xc, std, rstd, gamma, x_hat = cache["xc"], cache["std"], cache["rstd"], cache["gamma"], cache["x_hat"]
    n = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = np.sum(dout * x_hat, axis=dgamma_axis)
    dx_hat = dout * gamma
    dxc = dx_hat * rstd
    drstd = np.sum(dx_hat * xc, axis=0, keepdims=True)
    dvar = -drstd / std**2 * 0.5 / std
    if variance_path:
        dxc = dxc + dvar * 2.0 * xc / n if accumulate else dvar * 2.0 * xc / n
    dmu = -np.sum(dxc, axis=0, keepdims=True) if sum_dmu else -dxc
    return dxc + dmu / n, dgamma, dbeta


def _fused(dout, cache, *, mean_term=True, variance_term=True, over_n=True, use_gamma=True):
    x_hat, rstd, gamma = cache["x_hat"], cache["rstd"], cache["gamma"]
    n = dout.shape[0]
    g = dout * gamma if use_gamma else dout
    inner = n * g
    if mean_term:
        inner = inner - g.sum(axis=0, keepdims=True)
    if variance_term:
        inner = inner - x_hat * np.sum(g * x_hat, axis=0, keepdims=True)
    dx = rstd * inner / n if over_n else rstd * inner
    return dx, np.sum(dout * x_hat, axis=0), dout.sum(axis=0)


def _running(running_mean, running_var, x, momentum=0.1, num_batches_tracked=0, *, ddof=1, keras=False,
             cumulative_offset=0):
    n = x.shape[0]
    mean = x.mean(axis=0)
    var = np.sum((x - mean) ** 2, axis=0) / (n - ddof)
    tracked = num_batches_tracked + 1
    alpha = 1.0 / (tracked + cumulative_offset) if momentum is None else momentum
    if keras and momentum is not None:
        alpha = 1.0 - momentum
    return (1 - alpha) * running_mean + alpha * mean, (1 - alpha) * running_var + alpha * var, tracked


def _eval(x, gamma, beta, running_mean, running_var, eps=1e-5, *, batch_stats=False, last_axis=False,
          no_sqrt=False, eps_outside=False):
    view = (-1,) if last_axis else (1, -1, 1, 1)
    mean, var = running_mean.reshape(view), running_var.reshape(view)
    if batch_stats:
        mean, var = x.mean(axis=(0, 2, 3), keepdims=True), x.var(axis=(0, 2, 3), keepdims=True)
    scale = var + eps if no_sqrt else (np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps))
    return (x - mean) / scale * gamma.reshape(view) + beta.reshape(view)


def _with(func, **options):
    return lambda *args, **kwargs: func(*args, **kwargs, **options)


MISTAKES: list[Mistake] = [
    Mistake("2.1", "unbiased-variance", "batchnorm_forward", _with(_bn_forward, ddof=1),
            "you normalize with the unbiased variance (divide by N - 1, np.var(..., ddof=1)); the "
            "forward pass uses the biased one, divide by N (np.mean(xc * xc, axis=0))."),
    Mistake("2.1", "wrong-axis", "batchnorm_forward", _with(_bn_forward, axis=1),
            "you take the statistics over each row (axis=1, that is LayerNorm); BatchNorm standardizes "
            "each feature (column) over the batch: axis=0."),
    Mistake("2.1", "eps-outside-sqrt", "batchnorm_forward", _with(_bn_forward, eps_outside=True),
            "eps is added to the standard deviation; it belongs inside the square root: "
            "sqrt(var + eps)."),
    Mistake("2.2", "missing-variance-path", "batchnorm_backward_staged", _with(_staged, variance_path=False),
            "dxc has only the direct contribution dx_hat * rstd: xc also feeds the variance (node 3), "
            "so add dvar * 2 * xc / N to it."),
    Mistake("2.2", "overwritten-not-accumulated", "batchnorm_backward_staged", _with(_staged, accumulate=False),
            "the variance path's contribution replaces dxc instead of being added to it (= where += is "
            "needed): a node that feeds two others collects the gradient of both."),
    Mistake("2.2", "dmu-not-summed", "batchnorm_backward_staged", _with(_staged, sum_dmu=False),
            "dmu is not summed over the batch: mu is one number per column, subtracted from every row, "
            "so dmu = -sum(dxc, axis=0, keepdims=True)."),
    Mistake("2.2", "dgamma-wrong-axis", "batchnorm_backward_staged", _with(_staged, dgamma_axis=1),
            "dgamma is summed over the features (axis=1); gamma has one entry per feature, so sum "
            "dout * x_hat over the batch: axis=0."),
    Mistake("2.3", "missing-mean-term", "batchnorm_backward_fused", _with(_fused, mean_term=False),
            "the term through the mean, - sum(g) over the batch, is missing: every x moves the mean, "
            "and the mean moves every output of its column."),
    Mistake("2.3", "missing-variance-term", "batchnorm_backward_fused", _with(_fused, variance_term=False),
            "the term through the variance, - x_hat * sum(g * x_hat) over the batch, is missing."),
    Mistake("2.3", "missing-1-over-N", "batchnorm_backward_fused", _with(_fused, over_n=False),
            "your dx is N times too large: the bracket N g - sum(g) - x_hat sum(g x_hat) is "
            "multiplied by rstd / N."),
    Mistake("2.3", "gamma-not-applied", "batchnorm_backward_fused", _with(_fused, use_gamma=False),
            "g must be gamma * dout: the gradient reaches x_hat through the scale gamma."),
    Mistake("2.4", "biased-running-variance", "update_running_stats", _with(_running, ddof=0),
            "the running variance averages the UNBIASED batch variance (divide by N - 1), although the "
            "forward pass normalizes with the biased one."),
    Mistake("2.4", "momentum-of-the-old-value", "update_running_stats", _with(_running, keras=True),
            "momentum is the weight of the NEW batch in PyTorch (0.1): new = (1 - momentum) * old + "
            "momentum * batch. You used Keras' convention, where it weighs the old value."),
    Mistake("2.4", "cumulative-off-by-one", "update_running_stats", _with(_running, cumulative_offset=1),
            "with momentum=None the t-th batch has weight 1/t, where t = num_batches_tracked + 1 counts "
            "this batch; you divided by one more."),
    Mistake("2.5", "batch-statistics", "batchnorm2d_eval", _with(_eval, batch_stats=True),
            "you standardize with the batch's own statistics; evaluation mode uses running_mean and "
            "running_var, so that an image's output does not depend on its batch-mates."),
    Mistake("2.5", "last-axis-broadcast", "batchnorm2d_eval", _with(_eval, last_axis=True),
            "your (C,) arrays line up with the last axis (W), not with the channels: reshape gamma, "
            "beta and the running statistics to (1, C, 1, 1)."),
    Mistake("2.5", "variance-not-std", "batchnorm2d_eval", _with(_eval, no_sqrt=True),
            "you divide by the variance; divide by the standard deviation sqrt(running_var + eps)."),
    Mistake("2.5", "eps-outside-sqrt", "batchnorm2d_eval", _with(_eval, eps_outside=True),
            "eps is added to the standard deviation; it belongs inside the square root: "
            "sqrt(running_var + eps)."),
]


# -- mutations -------------------------------------------------------------------------------------

def test_mutation_unbiased_variance_in_forward_fails_2_1(tmp_path):
    mod = mutated_solution(CHAPTER, "var = np.mean(xc * xc, axis=0, keepdims=True)\n    std = np.sqrt(var + eps)\n    rstd",
                           "var = np.var(x, axis=0, ddof=1, keepdims=True)\n    std = np.sqrt(var + eps)\n    rstd", tmp_path)
    msg = failure_message(lambda: check_2_1(mod))
    assert mentions(msg, r"^out \(x of shape", "first mismatch at index", "expected", "biased"), msg


def test_mutation_missing_variance_path_fails_2_2(tmp_path):
    mod = mutated_solution(CHAPTER, "dxc = dxc + dvar * 2.0 * xc / n", "dxc = dxc", tmp_path)
    msg = failure_message(lambda: check_2_2(mod))
    # node by node: the first wrong step, and the ones before it that are right
    assert mentions(msg, r"your dxc is wrong", "right: dx_hat, drstd, dstd, dvar", r"\+=, not ="), msg
    msg = failure_message(lambda: _check_backward(mod.batchnorm_backward_staged, "batchnorm_backward_staged"))
    assert mentions(msg, "FAILED", "-> dx is wrong", r"gamma .* ok"), msg


def test_mutation_wrong_local_derivative_is_named_node_by_node_2_2(tmp_path):
    mod = mutated_solution(CHAPTER, "dstd = -drstd / std**2", "dstd = -drstd / std", tmp_path)
    msg = failure_message(lambda: check_2_2_nodes(mod))
    assert mentions(msg, r"node \(5\) rstd = 1 / std: your dstd is wrong", "right: dx_hat, drstd", "-1/s"), msg


def test_node_check_passes_a_staged_backward_with_other_names_2_2(tmp_path):
    """Nodes the learner named differently are not compared (the gradient check still judges them)."""
    mod = mutated_solution(CHAPTER, "dvar = dstd * 0.5 / std", "d_var = dstd * 0.5 / std\n    dvar = d_var", tmp_path)
    check_2_2_nodes(mod)


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
