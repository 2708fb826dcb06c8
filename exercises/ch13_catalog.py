# Your exercise file, generated from solutions/ch13_catalog.py
# by `python -m npnorm.exercises generate`. Write your code between the two
# marker lines of each task (replace the `raise`), then check it with
#     make check TASK=<task id>        (in a terminal)
#     %run -m npnorm.check <task id>   (in a notebook)
# Regenerating never overwrites a file you have changed.
"""Chapter 13 - the rest of the catalog, and statistics across devices.

Two pieces the chapter derives:

    the parallel merge:
        (n_A, mean_A, M2_A) + (n_B, mean_B, M2_B) -> the triple of the union,
        M2 = sum of squared deviations from the mean (variance = M2 / n)
    local response norm:
        s_c = k + alpha/size * sum_{c' in W(c)} x_c'^2
        y_c = x_c * s_c**(-beta)
        with W(c) = [c - size//2, c + (size-1)//2] (zero-padded), as PyTorch

Tasks
-----
13.1  merge_moments and merge_all (the exact parallel merge of SyncBatchNorm)
13.2  lrn_forward and lrn_backward (PyTorch's LocalResponseNorm)

Self-check: ``.venv/bin/python exercises/ch13_catalog.py``.
Full check: ``make check TASK=13`` (in a notebook:
``%run -m npnorm.check 13``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npnorm.exercises import fingerprint


def merge_moments(
    n_a: float, mean_a: np.ndarray, m2_a: np.ndarray,
    n_b: float, mean_b: np.ndarray, m2_b: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """The (count, mean, M2) of the union of two sets, from theirs.

    Parameters
    ----------
    n_a, n_b : number
        Counts (either may be 0: then the other triple is the answer).
    mean_a, mean_b, m2_a, m2_b : ndarray, shape (C,)
        Means and sums of squared deviations from the mean, per channel.

    Returns
    -------
    (n, mean, m2) of the union.

    Hints
    -----
    * delta = mean_b - mean_a; the new mean moves towards B by the fraction
      n_b / n.
    * M2 is not M2_a + M2_b: the two means differ, and that spread counts
      too.
    """
    # BEGIN TASK 13.1: the parallel merge
    raise NotImplementedError(
        'Task 13.1: the parallel merge - not written yet (exercise 13.1 of '
        'chapter 13). Check it with: make check TASK=13.1 (in a notebook: '
        '%run -m npnorm.check 13.1)')
    # END TASK 13.1


def merge_all(
    counts: np.ndarray, means: np.ndarray, m2s: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Merge W triples (``counts`` (W,), ``means`` and ``m2s`` (W, C)) in
    order with :func:`merge_moments`; empty sets (count 0) are allowed
    anywhere.

    Self-check: ``self_check_13_1`` below.
    """
    # BEGIN TASK 13.1: the parallel merge
    raise NotImplementedError(
        'Task 13.1: the parallel merge - not written yet (exercise 13.1 of '
        'chapter 13). Check it with: make check TASK=13.1 (in a notebook: '
        '%run -m npnorm.check 13.1)')
    # END TASK 13.1


def lrn_forward(
    x: np.ndarray, size: int, alpha: float = 1e-4, beta: float = 0.75,
    k: float = 1.0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Local response normalization across axis 1 of ``x`` (N, C, *), as
    ``torch.nn.LocalResponseNorm(size, alpha, beta, k)``.

    Returns
    -------
    out : ndarray, shape of ``x``
    cache : dict for :func:`lrn_backward`

    Hints
    -----
    * Pad the squares with zeros on axis 1 (``size // 2`` before,
      ``(size - 1) // 2`` after) and add ``size`` shifted slices: that is
      the window sum of every channel at once.
    * PyTorch divides alpha by ``size`` (the paper does not).
    """
    # BEGIN TASK 13.2: local response normalization
    raise NotImplementedError(
        'Task 13.2: local response normalization - not written yet (exercise '
        '13.2 of chapter 13). Check it with: make check TASK=13.2 (in a '
        'notebook: %run -m npnorm.check 13.2)')
    # END TASK 13.2


def lrn_backward(dout: np.ndarray, cache: dict[str, Any]) -> np.ndarray:
    """Backward pass of :func:`lrn_forward`; returns ``dx``.

    .. math:: dx_j = g_j s_j^{-\\beta} - \\frac{2\\alpha\\beta}{n} x_j
              \\sum_{c:\\ j \\in W(c)} g_c x_c s_c^{-\\beta-1}

    Hints
    -----
    * The channels c whose window holds j are j - (size-1)//2 .. j + size//2:
      the window mirrored, which differs from the window itself when
      ``size`` is even.

    Self-check: ``self_check_13_2`` below.
    """
    # BEGIN TASK 13.2: local response normalization
    raise NotImplementedError(
        'Task 13.2: local response normalization - not written yet (exercise '
        '13.2 of chapter 13). Check it with: make check TASK=13.2 (in a '
        'notebook: %run -m npnorm.check 13.2)')
    # END TASK 13.2


# -- self-checks: `.venv/bin/python exercises/ch13_catalog.py` ---------------
# Each returns one number made of every element of every result
# (npnorm.exercises.fingerprint).

def self_check_13_1() -> float:
    """Task 13.1: n, mean and M2 of three merged sets of 2 channels (sizes
    4, 0 and 6), every element weighted; you should get about 185.9266."""
    rng = np.random.default_rng(13)
    parts = [rng.normal(0.0, 1.0, (4, 2)), np.zeros((0, 2)),
             rng.normal(5.0, 2.0, (6, 2))]
    counts = np.array([len(p) for p in parts], dtype=float)
    means = np.array([p.mean(axis=0) if len(p) else np.zeros(2)
                      for p in parts])
    m2s = np.array([((p - p.mean(axis=0)) ** 2).sum(axis=0) if len(p)
                    else np.zeros(2) for p in parts])
    n, mean, m2 = merge_all(counts, means, m2s)
    return fingerprint(n=(n, ()), mean=(mean, (2,)), m2=(m2, (2,)))


def self_check_13_2() -> float:
    """Task 13.2: out and dx for size=4 (an even window), alpha=0.8,
    beta=0.75, k=1, every element weighted; you should get about 5.254951."""
    rng = np.random.default_rng(2)
    x = rng.normal(0.5, 1.5, (2, 5, 3))
    dout = rng.standard_normal((2, 5, 3))
    out, cache = lrn_forward(x, 4, alpha=0.8, beta=0.75, k=1.0)
    dx = lrn_backward(dout, cache)
    return fingerprint(out=(out, (2, 5, 3)), dx=(dx, (2, 5, 3)))


if __name__ == "__main__":
    from npnorm.exercises import self_check_main

    self_check_main(globals())
