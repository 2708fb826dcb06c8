"""Chapter 13 tasks: the parallel merge (13.1) against the statistics of the concatenation, and local
response normalization (13.2) against npnorm.statistics.lrn (forward) and by gradient check of the
learner's own forward/backward pair."""

from __future__ import annotations

import numpy as np
import pytest
from task_helpers import (Mistake, TaskFailure, expect_close, expect_gradients, failure_message, mentions,
                          mutated_solution, rand, unpack)

from npnorm.statistics.lrn import local_response_norm_forward

CHAPTER = "ch13_catalog"


@pytest.fixture(scope="module")
def ch13(load):
    return load(CHAPTER)


# -- 13.1 -----------------------------------------------------------------------------------------

SPLITS = ((3, 5), (4, 0, 6), (0, 2, 1, 7), (1, 1, 1))


def _triples(sizes, seed):
    rng = np.random.default_rng(seed)
    parts = [rng.normal(rng.normal(0, 5), rng.uniform(0.5, 3), (n, 3)) for n in sizes]
    counts = np.array(sizes, dtype=float)
    means = np.array([p.mean(axis=0) if len(p) else np.zeros(3) for p in parts])
    m2s = np.array([((p - p.mean(axis=0)) ** 2).sum(axis=0) if len(p) else np.zeros(3) for p in parts])
    return parts, counts, means, m2s


def check_13_1(mod) -> None:
    for seed, sizes in enumerate(SPLITS):
        parts, counts, means, m2s = _triples(sizes, seed)
        n, mean, m2 = unpack(mod.merge_all(counts, means, m2s), ("n", "mean", "m2"), "merge_all")
        whole = np.concatenate(parts)
        if n != len(whole):
            raise TaskFailure(f"merge_all (local sizes {sizes}): n = {n}, expected {len(whole)}")
        expect_close(f"mean (local sizes {sizes})", mean, whole.mean(axis=0), rtol=1e-12, atol=1e-12)
        expect_close(f"m2 (local sizes {sizes})", m2, ((whole - whole.mean(axis=0)) ** 2).sum(axis=0),
                     rtol=1e-10, atol=1e-10,
                     hint="M2 of the union = M2_a + M2_b + delta**2 * n_a * n_b / n.")


@pytest.mark.task("13.1")
def test_merge_equals_the_concatenation(ch13):
    """merge_all gives the count, mean and M2 of the concatenated sets (uneven and empty sets)"""
    check_13_1(ch13)


# -- 13.2 -----------------------------------------------------------------------------------------

# The even window comes first: the check names a mistake from the first recorded calls, and only an even size
# tells the symmetric-window forward and the untransposed-window backward from the right ones.
LRN_CASES = (((2, 6, 2, 2), 4, 0.8, 0.6, 2.0), ((2, 5, 3), 3, 0.5, 0.75, 1.0), ((1, 4, 3), 7, 1.0, 1.2, 1.5))


def check_13_2_forward(mod) -> None:
    for i, (shape, size, alpha, beta, k) in enumerate(LRN_CASES):
        x = rand(shape, i, offset=0.5, scale=1.5)
        out, _ = unpack(mod.lrn_forward(x, size, alpha, beta, k), ("out", "cache"), "lrn_forward")
        ref, _ = local_response_norm_forward(x, size, alpha, beta, k)
        expect_close(f"out (x of shape {shape}, size={size})", out, ref, rtol=1e-10, atol=1e-12,
                     hint="window [c - size//2, c + (size-1)//2], zero-padded; alpha divided by size.")


def check_13_2_backward(mod) -> None:
    for i, (shape, size, alpha, beta, k) in enumerate(LRN_CASES):
        inputs = {"x": rand(shape, 10 + i, offset=0.5, scale=1.5), "size": size, "alpha": alpha, "beta": beta,
                  "k": k}
        expect_gradients(f"your lrn_backward (x of shape {shape}, size={size})", mod.lrn_forward,
                         mod.lrn_backward, inputs, forward_name="lrn_forward", backward_name="lrn_backward",
                         seed=i)


@pytest.mark.task("13.2")
def test_lrn_forward_matches_reference(ch13):
    """lrn_forward matches npnorm's LocalResponseNorm (PyTorch's window and alpha / size)"""
    check_13_2_forward(ch13)


@pytest.mark.task("13.2")
def test_lrn_backward_gradcheck(ch13):
    """lrn_backward passes the gradient check (odd, even and wider-than-C windows)"""
    check_13_2_backward(ch13)


# -- the catalogue of common mistakes ----------------------------------------------------------------

def _merge_average_variances(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    if n_a == 0 or n_b == 0:
        return (n_b, mean_b, m2_b) if n_a == 0 else (n_a, mean_a, m2_a)
    n = n_a + n_b
    var = (m2_a / n_a + m2_b / n_b) / 2
    return n, (n_a * mean_a + n_b * mean_b) / n, var * n


def _merge_no_between_term(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    n = n_a + n_b
    if n == 0:
        return 0, mean_a, m2_a
    return n, (n_a * mean_a + n_b * mean_b) / n, m2_a + m2_b


def _merge_unweighted_mean(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    if n_a == 0 or n_b == 0:
        return (n_b, mean_b, m2_b) if n_a == 0 else (n_a, mean_a, m2_a)
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, (mean_a + mean_b) / 2, m2_a + m2_b + delta * delta * n_a * n_b / n


def _lrn_alpha_not_divided(x, size, alpha=1e-4, beta=0.75, k=1.0):
    from npnorm.statistics.lrn import local_response_norm_forward as f
    return f(x, size, alpha * size, beta, k)


def _lrn_symmetric_window(x, size, alpha=1e-4, beta=0.75, k=1.0):
    from npnorm.statistics.lrn import local_response_norm_forward as f
    return f(x, size, alpha, beta, k, window=(-(size // 2), size // 2))


def _lrn_backward_own_term_only(dout, cache):
    return dout * cache["s"] ** (-cache["beta"])


def _lrn_backward_untransposed_window(dout, cache):
    x, s, size, alpha, beta = cache["x"], cache["s"], cache["size"], cache["alpha"], cache["beta"]
    c = x.shape[1]
    ratio = dout * x * s ** (-beta - 1.0)
    pad = [(0, 0)] * x.ndim
    pad[1] = (size // 2, (size - 1) // 2)          # the forward window, not its mirror
    padded = np.pad(ratio, pad)
    back = sum(padded[:, i:i + c] for i in range(size))
    return dout * s ** (-beta) - (2.0 * alpha * beta / size) * x * back


def _lrn_backward_cross_term_added(dout, cache):
    x, s, size, alpha, beta = cache["x"], cache["s"], cache["size"], cache["alpha"], cache["beta"]
    c = x.shape[1]
    ratio = dout * x * s ** (-beta - 1.0)
    pad = [(0, 0)] * x.ndim
    pad[1] = ((size - 1) // 2, size // 2)          # the mirrored window, as it should be
    padded = np.pad(ratio, pad)
    back = sum(padded[:, i:i + c] for i in range(size))
    return dout * s ** (-beta) + (2.0 * alpha * beta / size) * x * back    # + where it should be -


MISTAKES: list[Mistake] = [
    Mistake("13.1", "average-of-variances", "merge_moments", _merge_average_variances,
            "You averaged the two variances. That misses the spread between the two means and weights the "
            "sets equally whatever their sizes: use M2 = M2_a + M2_b + delta**2 * n_a * n_b / n."),
    Mistake("13.1", "no-between-term", "merge_moments", _merge_no_between_term,
            "M2 of the union is not M2_a + M2_b: add delta**2 * n_a * n_b / n, the spread of the two "
            "means around the union's mean (delta = mean_b - mean_a)."),
    Mistake("13.1", "unweighted-mean", "merge_moments", _merge_unweighted_mean,
            "The union's mean is the count-weighted mean, mean_a + delta * n_b / n, not the plain average "
            "of the two means (they differ whenever n_a != n_b)."),
    Mistake("13.2", "alpha-not-divided", "lrn_forward", _lrn_alpha_not_divided,
            "PyTorch divides alpha by size: s = k + alpha / size * (window sum of squares). The AlexNet "
            "paper's formula does not, which is why the two disagree."),
    Mistake("13.2", "symmetric-even-window", "lrn_forward", _lrn_symmetric_window,
            "For an even size the window is asymmetric: [c - size//2, c + (size-1)//2] (size channels), "
            "not size//2 on both sides."),
    Mistake("13.2", "own-term-only", "lrn_backward", _lrn_backward_own_term_only,
            "x_j also appears in s_c of its neighbours: subtract 2*alpha*beta/size * x_j * sum over the "
            "channels c whose window holds j of dout_c * x_c * s_c**(-beta-1)."),
    Mistake("13.2", "cross-term-sign", "lrn_backward", _lrn_backward_cross_term_added,
            "The neighbours' term has the wrong sign: a larger x_j raises s_c, and s_c divides y_c, so "
            "subtract 2*alpha*beta/size * x_j * sum_c dout_c * x_c * s_c**(-beta-1) (beta > 0)."),
    Mistake("13.2", "untransposed-window", "lrn_backward", _lrn_backward_untransposed_window,
            "The backward sum runs over the channels whose window contains j: [j - (size-1)//2, "
            "j + size//2], the forward window mirrored (they differ for an even size)."),
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: f"{m.task}-{m.name}")
def test_each_catalogued_mistake_is_caught(mistake, tmp_path, load_solution):
    """Plant the mistake into a copy of the solutions: the task's check must fail."""
    sol = load_solution(CHAPTER)
    mod = mutated_solution(CHAPTER, "# -- self-checks:", "# -- self-checks (mutated):", tmp_path)
    setattr(mod, mistake.function, mistake.wrong)
    checks = {"13.1": [check_13_1], "13.2": [check_13_2_forward, check_13_2_backward]}[mistake.task]
    messages = []
    for check in checks:
        try:
            check(mod)
        except TaskFailure as exc:
            messages.append(str(exc))
    assert messages, f"{mistake.name}: no check of task {mistake.task} caught it"
    assert sol is not mod


def test_mutation_missing_between_term_is_named(tmp_path):
    mod = mutated_solution(CHAPTER, "m2 = m2_a + m2_b + delta * delta * (n_a * n_b / n)", "m2 = m2_a + m2_b",
                           tmp_path)
    assert mentions(failure_message(lambda: check_13_1(mod)), "m2", "first mismatch")
