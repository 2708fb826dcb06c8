"""Chapter 2 - Batch normalization.

Input ``x`` of shape ``(N, D)``: a batch of N examples with D features. Every
feature (column) is standardized over the batch, then scaled and shifted:

    mu    = mean(x, axis=0)                      (D,)
    var   = mean((x - mu)**2, axis=0)            (D,)   biased: divide by N
    x_hat = (x - mu) / sqrt(var + eps)           (N, D)
    out   = gamma * x_hat + beta                 (N, D)

Tasks
-----
2.1  batchnorm_forward          - training-mode forward, returning (out, cache)
2.2  batchnorm_backward_staged  - backward through the graph, one node at a
                                  time
2.3  batchnorm_backward_fused   - backward in a few lines, derived from the
                                  staged one
2.4  update_running_stats       - the running mean and (unbiased!) variance
                                  used in eval mode
2.5  batchnorm2d_eval           - evaluation mode on images (N, C, H, W):
                                  per-channel statistics

Tasks 2.2 and 2.3 are checked with a correct cache, so they do not depend on
your 2.1.

Self-check: ``.venv/bin/python exercises/ch2_batchnorm.py``.
Full check: ``make check TASK=2`` (in a notebook: ``%run -m npnorm.check 2``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npnorm.exercises import fingerprint


def batchnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, dict[str, Any]]:
    """Training-mode batch norm of ``x`` (N, D) with the statistics of this
    batch.

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
    * ``keepdims=True`` in ``mean`` keeps the (1, D) shape that broadcasts
      against (N, D).
    * Compute the variance from ``xc`` (two passes), not as ``mean(x**2) -
      mu**2``, which cancels catastrophically when the mean is large compared
      with the spread.

    Self-check: ``self_check_2_1`` below.
    """
    # BEGIN TASK 2.1: the BatchNorm forward pass (training mode)
    mu = x.mean(axis=0, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=0, keepdims=True)
    std = np.sqrt(var + eps)
    rstd = 1.0 / std
    x_hat = xc * rstd
    out = gamma * x_hat + beta
    cache = {"x_hat": x_hat, "xc": xc, "var": var, "std": std, "rstd": rstd,
             "gamma": gamma}
    return out, cache
    # END TASK 2.1


def batchnorm_backward_staged(
    dout: np.ndarray, cache: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of :func:`batchnorm_forward`, walking back through its
    graph one node at a time.

    The forward graph, per feature (sums over the N rows)::

        (1) mu    = sum(x) / N
        (2) xc    = x - mu
        (3) var   = sum(xc**2) / N
        (4) std   = sqrt(var + eps)
        (5) rstd  = 1 / std
        (6) x_hat = xc * rstd
        (7) out   = gamma * x_hat + beta

    Go from (7) back to (1): for every node, the gradient of the loss with
    respect to its output times its local derivative. A node used twice (``xc``
    feeds (3) and (6)) collects both contributions.

    Name the gradient of each node ``d<node>`` - ``dx_hat``, ``drstd``,
    ``dstd``, ``dvar``, ``dxc`` (both contributions, once you have added them),
    ``dmu`` - and the check compares every one of them, so a failure says which
    step is wrong.

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
    * (6) has two inputs: ``dxc = dx_hat * rstd`` and ``drstd = sum(dx_hat *
      xc, axis=0, keepdims=True)``.
    * d(1/s)/ds = -1/s**2;  d sqrt(v + eps)/dv = 1 / (2 sqrt(v + eps));  d
      var/d xc = 2 xc / N.
    * ``mu`` feeds every element of ``xc``, so ``dmu`` is a sum over the batch.

    Self-check: ``self_check_2_2`` below.
    """
    # BEGIN TASK 2.2: the staged BatchNorm backward pass
    xc, std, rstd = cache["xc"], cache["std"], cache["rstd"]
    gamma, x_hat = cache["gamma"], cache["x_hat"]
    n = dout.shape[0]
    dbeta = dout.sum(axis=0)                                  # (7)
    dgamma = np.sum(dout * x_hat, axis=0)                     # (7)
    dx_hat = dout * gamma                                     # (7)
    dxc = dx_hat * rstd                                       # (6), xc path
    drstd = np.sum(dx_hat * xc, axis=0, keepdims=True)        # (6), rstd path
    dstd = -drstd / std**2                                    # (5)
    dvar = dstd * 0.5 / std                                   # (4)
    dxc = dxc + dvar * 2.0 * xc / n                   # (3), xc's second path
    dmu = -np.sum(dxc, axis=0, keepdims=True)                 # (2)
    dx = dxc + dmu / n                                        # (1)
    return dx, dgamma, dbeta
    # END TASK 2.2


def batchnorm_backward_fused(
    dout: np.ndarray, cache: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of :func:`batchnorm_forward` as a few whole-array lines:
    derive it from 2.2.

    Start from your staged backward (task 2.2) and substitute every node's
    gradient into the next one, from (7) down to (1), until ``dx`` is written
    with nothing but ``g = gamma * dout``, ``x_hat``, ``rstd``, ``N`` and sums
    over the batch: no ``xc``, ``std`` or ``var``, and no intermediate gradient
    arrays.

    Parameters
    ----------
    dout : ndarray, shape (N, D)
    cache : dict from :func:`batchnorm_forward`. Use only ``cache["x_hat"]``,
        ``cache["rstd"]`` and ``cache["gamma"]``: the test passes a cache with
        nothing else in it.

    Returns
    -------
    dx : ndarray, shape (N, D)
    dgamma, dbeta : ndarray, shape (D,)

    Hints
    -----
    * Eliminate ``xc`` with ``xc = x_hat / rstd`` and ``std`` with ``std = 1 /
      rstd``.
    * ``x`` reaches the loss along three paths - directly through ``xc``,
      through the mean and through the variance - so expect one term per path.
    * On the same cache it agrees with your staged backward to about 1e-15 (try
      it).

    Self-check: ``self_check_2_3`` below.
    """
    # BEGIN TASK 2.3: the fused BatchNorm backward pass
    x_hat, rstd, gamma = cache["x_hat"], cache["rstd"], cache["gamma"]
    n = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = np.sum(dout * x_hat, axis=0)
    g = dout * gamma
    dx = (rstd / n) * (n * g - g.sum(axis=0, keepdims=True)
                       - x_hat * np.sum(g * x_hat, axis=0, keepdims=True))
    return dx, dgamma, dbeta
    # END TASK 2.3


def update_running_stats(
    running_mean: np.ndarray,
    running_var: np.ndarray,
    x: np.ndarray,
    momentum: float | None = 0.1,
    num_batches_tracked: int = 0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One update of the running statistics that batch norm uses in evaluation
    mode (PyTorch's rule).

    .. math::
       \\hat\\mu \\leftarrow (1 - \\alpha)\\hat\\mu + \\alpha\\,\\mu_B, \\qquad
       \\hat\\sigma^2 \\leftarrow (1 - \\alpha)\\hat\\sigma^2
       + \\alpha\\,\\frac{N}{N-1}\\sigma_B^2

    where :math:`\\mu_B, \\sigma_B^2` are the mean and biased variance of the
    batch ``x``. Note the
    **unbiased** variance (divide by N - 1) in the running average, although
    the forward pass normalizes with the biased one. ``momentum`` is the weight
    of the *new* batch (0.1 in PyTorch; Keras' 0.99 is the weight of the old
    value). ``momentum=None`` gives the cumulative average: alpha = 1/t for the
    t-th batch, with t = ``num_batches_tracked + 1``.

    Parameters
    ----------
    running_mean, running_var : ndarray, shape (D,)
        The current running statistics (do not modify them in place; return new
        arrays).
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
    n = x.shape[0]
    batch_mean = x.mean(axis=0)
    unbiased_var = np.mean((x - batch_mean) ** 2, axis=0) * n / (n - 1)
    num_batches_tracked = num_batches_tracked + 1
    alpha = 1.0 / num_batches_tracked if momentum is None else momentum
    new_mean = (1.0 - alpha) * running_mean + alpha * batch_mean
    new_var = (1.0 - alpha) * running_var + alpha * unbiased_var
    return new_mean, new_var, num_batches_tracked
    # END TASK 2.4


def batchnorm2d_eval(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    eps: float = 1e-5,
) -> np.ndarray:
    """BatchNorm of images ``x`` (N, C, H, W) in evaluation mode
    (``torch.nn.BatchNorm2d`` after ``.eval()``).

    Every **channel** has one mean and one variance - in training taken over
    the batch *and* every position (N * H * W numbers), here the running
    statistics of task 2.4 - and one ``gamma`` and ``beta``:

        out[n, c, h, w] = gamma[c] * (x[n, c, h, w] - running_mean[c])
                          / sqrt(running_var[c] + eps) + beta[c]

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    gamma, beta, running_mean, running_var : ndarray, shape (C,)
    eps : float

    Returns
    -------
    out : ndarray, shape of ``x``

    Hints
    -----
    * A (C,) array broadcasts against the **last** axis of (N, C, H, W), which
      is W: reshape it to (1, C, 1, 1) first. (With W = C NumPy will not even
      complain.)
    * Nothing in evaluation mode depends on the rest of the batch: each image's
      output is the same whether it comes alone or with others. Why does that
      matter at inference time?

    Self-check: ``self_check_2_5`` below.
    """
    # BEGIN TASK 2.5: BatchNorm2d in evaluation mode
    view = (1, -1, 1, 1)
    scale = gamma.reshape(view) / np.sqrt(running_var.reshape(view) + eps)
    return (x - running_mean.reshape(view)) * scale + beta.reshape(view)
    # END TASK 2.5


# -- self-checks: `.venv/bin/python exercises/ch2_batchnorm.py` ---------------
# Each returns one number made of every element of every result
# (npnorm.exercises.fingerprint), so a mistake anywhere - one node, one axis,
# one parameter gradient - changes it.

def _example() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    spread = np.array([5.0, 0.5, 0.005])            # one tiny variance
    x = 12.0 + spread * rng.standard_normal((6, 3))
    gamma = np.array([1.5, -0.7, 0.9])
    beta = np.array([0.2, 0.0, -1.0])
    dout = rng.standard_normal((6, 3))
    return x, gamma, beta, dout


def _cache_for(
    x: np.ndarray, gamma: np.ndarray, eps: float = 1e-5
) -> dict[str, Any]:
    mu = x.mean(axis=0, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=0, keepdims=True)
    std = np.sqrt(var + eps)
    return {"x_hat": xc / std, "xc": xc, "var": var, "std": std,
            "rstd": 1.0 / std, "gamma": gamma}


def self_check_2_1() -> float:
    """Task 2.1: out of the example (6, 3), every element weighted; you
    should get about -4.506023."""
    x, gamma, beta, _ = _example()
    out, _ = batchnorm_forward(x, gamma, beta)
    return fingerprint(out=(out, (6, 3)))


def self_check_2_2() -> float:
    """Task 2.2: dx, dgamma and dbeta of the example (staged), every element
    weighted; you should get about 8.426777."""
    x, gamma, _, dout = _example()
    dx, dgamma, dbeta = batchnorm_backward_staged(dout, _cache_for(x, gamma))
    return fingerprint(dx=(dx, (6, 3)), dgamma=(dgamma, (3,)),
                       dbeta=(dbeta, (3,)))


def self_check_2_3() -> float:
    """Task 2.3: the same as 2.2 from the fused backward; you should get
    about 8.426777."""
    x, gamma, _, dout = _example()
    full = _cache_for(x, gamma)
    cache = {k: full[k] for k in ("x_hat", "rstd", "gamma")}
    dx, dgamma, dbeta = batchnorm_backward_fused(dout, cache)
    return fingerprint(dx=(dx, (6, 3)), dgamma=(dgamma, (3,)),
                       dbeta=(dbeta, (3,)))


def self_check_2_4() -> float:
    """Task 2.4: the running statistics after a batch with momentum 0.1 from
    the initial state (mean 0, variance 1), then one with momentum=None; you
    should get about 21.15087."""
    x, _, _, _ = _example()
    mean, var, count = update_running_stats(np.zeros(3), np.ones(3), x)
    second = 0.5 * x[:4] + 1.0
    mean, var, count = update_running_stats(mean, var, second, None, count)
    return fingerprint(mean=(mean, (3,)), var=(var, (3,)), count=(count, ()))


def self_check_2_5() -> float:
    """Task 2.5: evaluation-mode output for images (2, 3, 2, 3) - as many
    channels as columns, so a wrong broadcast is silent; you should get about
    15.23736."""
    rng = np.random.default_rng(25)
    x = 4.0 + 2.0 * rng.standard_normal((2, 3, 2, 3))
    gamma, beta = np.array([1.5, -0.5, 0.8]), np.array([0.1, -0.2, 0.3])
    mean, var = np.array([3.0, 5.0, 4.5]), np.array([2.0, 6.0, 0.5])
    out = batchnorm2d_eval(x, gamma, beta, mean, var)
    return fingerprint(out=(out, (2, 3, 2, 3)))


if __name__ == "__main__":
    from npnorm.exercises import self_check_main

    self_check_main(globals())
