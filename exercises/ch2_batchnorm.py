# Your exercise file, generated from solutions/ch2_batchnorm.py by `python -m npnorm.exercises generate`.
# Write your code between the BEGIN TASK and END TASK lines (replace the `raise`), then run
# `python -m npnorm.check <task id>`. Regenerating never overwrites a file you have changed.
"""Chapter 2 - Batch normalization.

Input ``x`` of shape ``(N, D)``: a batch of N examples with D features. Every feature (column) is
standardized over the batch, then scaled and shifted:

    mu    = mean(x, axis=0)                      (D,)
    var   = mean((x - mu)**2, axis=0)            (D,)   biased: divide by N
    x_hat = (x - mu) / sqrt(var + eps)           (N, D)
    out   = gamma * x_hat + beta                 (N, D)

Tasks
-----
2.1  batchnorm_forward          - training-mode forward, returning (out, cache)
2.2  batchnorm_backward_staged  - backward through the graph, one node at a time
2.3  batchnorm_backward_fused   - backward from the simplified formula
2.4  update_running_stats       - the running mean and (unbiased!) variance used in eval mode

Tasks 2.2 and 2.3 are checked with a correct cache, so they do not depend on your 2.1.

Self-check: ``python exercises/ch2_batchnorm.py``.  Full check: ``python -m npnorm.check 2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def batchnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, dict[str, Any]]:
    """Training-mode batch norm of ``x`` (N, D) with the statistics of this batch.

    Parameters
    ----------
    x : ndarray, shape (N, D)
    gamma, beta : ndarray, shape (D,)
        Scale and shift.
    eps : float
        Added to the variance inside the square root.

    Returns
    -------
    out : ndarray, shape (N, D)
    cache : dict
        Exactly these keys (the backward passes and the tests rely on them):

        ============  ========  =====================================
        ``"x_hat"``   (N, D)    the normalized input
        ``"xc"``      (N, D)    ``x - mu``
        ``"var"``     (1, D)    biased batch variance
        ``"std"``     (1, D)    ``sqrt(var + eps)``
        ``"rstd"``    (1, D)    ``1 / std``
        ``"gamma"``   (D,)      the scale
        ============  ========  =====================================

    Hints
    -----
    * ``keepdims=True`` in ``mean`` keeps the (1, D) shape that broadcasts against (N, D).
    * Compute the variance from ``xc`` (two passes), not as ``mean(x**2) - mu**2``, which cancels
      catastrophically when the mean is large compared with the spread.

    Self-check: ``self_check_2_1`` below.
    """
    # BEGIN TASK 2.1: the BatchNorm forward pass (training mode)
    raise NotImplementedError('Task 2.1: the BatchNorm forward pass (training mode) - not written yet (book chapter 2, exercise 2.1); check it with: python -m npnorm.check 2.1')
    # END TASK 2.1


def batchnorm_backward_staged(dout: np.ndarray, cache: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of :func:`batchnorm_forward`, walking back through its graph one node at a time.

    The forward graph, per feature (sums over the N rows)::

        (1) mu    = sum(x) / N
        (2) xc    = x - mu
        (3) var   = sum(xc**2) / N
        (4) std   = sqrt(var + eps)
        (5) rstd  = 1 / std
        (6) x_hat = xc * rstd
        (7) out   = gamma * x_hat + beta

    Go from (7) back to (1): for every node, the gradient of the loss with respect to its output times
    its local derivative. A node used twice (``xc`` feeds (3) and (6)) collects both contributions.

    Parameters
    ----------
    dout : ndarray, shape (N, D)
    cache : dict from :func:`batchnorm_forward`

    Returns
    -------
    dx : ndarray, shape (N, D)
    dgamma, dbeta : ndarray, shape (D,)

    Hints
    -----
    * (6) has two inputs: ``dxc = dx_hat * rstd`` and ``drstd = sum(dx_hat * xc, axis=0, keepdims=True)``.
    * d(1/s)/ds = -1/s**2;  d sqrt(v + eps)/dv = 1 / (2 sqrt(v + eps));  d var/d xc = 2 xc / N.
    * ``mu`` feeds every element of ``xc``, so ``dmu`` is a sum over the batch.

    Self-check: ``self_check_2_2`` below.
    """
    # BEGIN TASK 2.2: the staged BatchNorm backward pass
    raise NotImplementedError('Task 2.2: the staged BatchNorm backward pass - not written yet (book chapter 2, exercise 2.2); check it with: python -m npnorm.check 2.2')
    # END TASK 2.2


def batchnorm_backward_fused(dout: np.ndarray, cache: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of :func:`batchnorm_forward` from the simplified formula.

    With ``g = gamma * dout`` and ``r = rstd``, per feature (sums over the N rows):

    .. math:: dx = \\frac{r}{N}\\Big(N g - \\sum g - \\hat x \\sum g \\hat x\\Big)

    Parameters
    ----------
    dout : ndarray, shape (N, D)
    cache : dict from :func:`batchnorm_forward`. Use only ``cache["x_hat"]``, ``cache["rstd"]`` and
        ``cache["gamma"]``: the test passes a cache with nothing else in it.

    Returns
    -------
    dx : ndarray, shape (N, D)
    dgamma, dbeta : ndarray, shape (D,)

    Hints
    -----
    * Three terms: ``N g`` (the direct path), ``sum g`` (through the mean), ``x_hat * sum(g x_hat)``
      (through the variance). Forget the last and the check fails for every input but a constant one.
    * It should agree with your staged backward to about 1e-15 (try it).

    Self-check: ``self_check_2_3`` below.
    """
    # BEGIN TASK 2.3: the fused BatchNorm backward pass
    raise NotImplementedError('Task 2.3: the fused BatchNorm backward pass - not written yet (book chapter 2, exercise 2.3); check it with: python -m npnorm.check 2.3')
    # END TASK 2.3


def update_running_stats(
    running_mean: np.ndarray,
    running_var: np.ndarray,
    x: np.ndarray,
    momentum: float | None = 0.1,
    num_batches_tracked: int = 0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One update of the running statistics that batch norm uses in evaluation mode (PyTorch's rule).

    .. math::
       \\hat\\mu \\leftarrow (1 - \\alpha)\\hat\\mu + \\alpha\\,\\mu_B, \\qquad
       \\hat\\sigma^2 \\leftarrow (1 - \\alpha)\\hat\\sigma^2 + \\alpha\\,\\frac{N}{N-1}\\sigma_B^2

    where :math:`\\mu_B, \\sigma_B^2` are the mean and biased variance of the batch ``x``. Note the
    **unbiased** variance (divide by N - 1) in the running average, although the forward pass normalizes
    with the biased one. ``momentum`` is the weight of the *new* batch (0.1 in PyTorch; Keras' 0.99 is
    the weight of the old value). ``momentum=None`` gives the cumulative average: alpha = 1/t for the
    t-th batch, with t = ``num_batches_tracked + 1``.

    Parameters
    ----------
    running_mean, running_var : ndarray, shape (D,)
        The current running statistics (do not modify them in place; return new arrays).
    x : ndarray, shape (N, D), N >= 2
        The batch.
    momentum : float in [0, 1] or None
    num_batches_tracked : int
        How many batches have been averaged in so far.

    Returns
    -------
    new_running_mean, new_running_var : ndarray, shape (D,)
    num_batches_tracked : int
        The count including this batch.

    Self-check: ``self_check_2_4`` below.
    """
    # BEGIN TASK 2.4: the running statistics
    raise NotImplementedError('Task 2.4: the running statistics - not written yet (book chapter 2, exercise 2.4); check it with: python -m npnorm.check 2.4')
    # END TASK 2.4


# -- self-checks: `python exercises/ch2_batchnorm.py` ----------------------------------------------

def _example() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = 12.0 + 5.0 * rng.standard_normal((6, 3))
    gamma = np.array([1.5, -0.7, 0.9])
    beta = np.array([0.2, 0.0, -1.0])
    dout = rng.standard_normal((6, 3))
    return x, gamma, beta, dout


def _cache_for(x: np.ndarray, gamma: np.ndarray, eps: float = 1e-5) -> dict[str, Any]:
    mu = x.mean(axis=0, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=0, keepdims=True)
    std = np.sqrt(var + eps)
    return {"x_hat": xc / std, "xc": xc, "var": var, "std": std, "rstd": 1.0 / std, "gamma": gamma}


def self_check_2_1() -> float:
    """Task 2.1: out[0, 1] of the example; you should get about -0.068314."""
    x, gamma, beta, _ = _example()
    out, _ = batchnorm_forward(x, gamma, beta)
    return float(out[0, 1])


def self_check_2_2() -> float:
    """Task 2.2: dx[0, 0] of the example (staged); you should get about -0.046954."""
    x, gamma, _, dout = _example()
    dx, _, _ = batchnorm_backward_staged(dout, _cache_for(x, gamma))
    return float(dx[0, 0])


def self_check_2_3() -> float:
    """Task 2.3: dx[0, 0] of the example (fused, the same number as 2.2); you should get about -0.046954."""
    x, gamma, _, dout = _example()
    dx, _, _ = batchnorm_backward_fused(dout, _cache_for(x, gamma))
    return float(dx[0, 0])


def self_check_2_4() -> float:
    """Task 2.4: running_var[0] after one batch from the initial state (mean 0, variance 1); you should
    get about 4.8875."""
    x, _, _, _ = _example()
    _, running_var, _ = update_running_stats(np.zeros(3), np.ones(3), x)
    return float(running_var[0])


if __name__ == "__main__":
    from npnorm.exercises import run_self_checks

    run_self_checks(globals())
