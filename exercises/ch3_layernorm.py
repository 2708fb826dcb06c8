# Your exercise file, generated from solutions/ch3_layernorm.py
# by `python -m npnorm.exercises generate`. Write your code between the two
# marker lines of each task (replace the `raise`), then check it with
#     make check TASK=<task id>        (in a terminal)
#     %run -m npnorm.check <task id>   (in a notebook)
# Regenerating never overwrites a file you have changed.
"""Chapter 3 - LayerNorm and RMSNorm.

Both normalize each example over its last axis (the D features of a token,
say), not over the batch, so they behave the same in training and evaluation
and need no running statistics.

    LayerNorm:  x_hat = (x - mean) / sqrt(var + eps)
                out = gamma * x_hat + beta
    RMSNorm:    x_hat = x / sqrt(mean(x**2) + eps)
                out = gamma * x_hat               (no centring, no beta)

Inputs have shape ``(..., D)`` - any number of leading (batch) axes; ``gamma``
and ``beta`` have shape ``(D,)``.

Tasks
-----
3.1  layernorm_forward and layernorm_backward
3.2  rmsnorm_forward and rmsnorm_backward

Self-check: ``.venv/bin/python exercises/ch3_layernorm.py``.
Full check: ``make check TASK=3`` (in a notebook: ``%run -m npnorm.check 3``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npnorm.exercises import fingerprint


def layernorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, dict[str, Any]]:
    """LayerNorm over the last axis of ``x`` (as ``torch.nn.LayerNorm(D)``).

    Parameters
    ----------
    x : ndarray, shape (..., D)
    gamma, beta : ndarray, shape (D,)
    eps : float

    Returns
    -------
    out : ndarray, shape of ``x``
    cache : dict
        Whatever your :func:`layernorm_backward` needs (suggestion: ``x_hat``,
        ``rstd`` of shape (..., 1), ``gamma``).

    Hints
    -----
    * ``axis=-1, keepdims=True``: the statistics have shape (..., 1).
    * It is batch norm transposed: the same three lines, with ``axis=-1``
      instead of ``axis=0``.
    """
    # BEGIN TASK 3.1: LayerNorm forward and backward
    raise NotImplementedError(
        'Task 3.1: LayerNorm forward and backward - not written yet (exercise'
        ' 3.1 of chapter 3). Check it with: make check TASK=3.1 (in a '
        'notebook: %run -m npnorm.check 3.1)')
    # END TASK 3.1


def layernorm_backward(
    dout: np.ndarray, cache: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of :func:`layernorm_forward`.

    With ``g = gamma * dout`` and bars meaning the mean over the last axis:

    .. math:: dx = r\\,(g - \\bar g - \\hat x\\,\\overline{g \\hat x})

    Returns
    -------
    dx : ndarray, shape of ``x``
    dgamma, dbeta : ndarray, shape (D,)
        Summed over **every** leading axis (a (B, T, D) input sums over B and
        T).

    Hints
    -----
    * ``dout.reshape(-1, D)`` turns any leading axes into one, which makes the
      parameter sums easy.

    Self-check: ``self_check_3_1`` below.
    """
    # BEGIN TASK 3.1: LayerNorm forward and backward
    raise NotImplementedError(
        'Task 3.1: LayerNorm forward and backward - not written yet (exercise'
        ' 3.1 of chapter 3). Check it with: make check TASK=3.1 (in a '
        'notebook: %run -m npnorm.check 3.1)')
    # END TASK 3.1


def rmsnorm_forward(
    x: np.ndarray, gamma: np.ndarray, eps: float = 1e-6
) -> tuple[np.ndarray, dict[str, Any]]:
    """RMSNorm over the last axis of ``x``: ``out = gamma * x / sqrt(mean(x**2)
    + eps)``.

    Parameters
    ----------
    x : ndarray, shape (..., D)
    gamma : ndarray, shape (D,)
    eps : float
        1e-6 here (a common choice in language models). ``torch.nn.RMSNorm``'s
        default ``eps=None`` means the machine epsilon of the input's dtype.

    Returns
    -------
    out : ndarray, shape of ``x``
    cache : dict for :func:`rmsnorm_backward`
    """
    # BEGIN TASK 3.2: RMSNorm forward and backward
    raise NotImplementedError(
        'Task 3.2: RMSNorm forward and backward - not written yet (exercise '
        '3.2 of chapter 3). Check it with: make check TASK=3.2 (in a '
        'notebook: %run -m npnorm.check 3.2)')
    # END TASK 3.2


def rmsnorm_backward(
    dout: np.ndarray, cache: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Backward pass of :func:`rmsnorm_forward`.

    .. math::
       dx = r\\,(g - \\hat x\\,\\overline{g \\hat x}),
       \\qquad g = \\gamma\\,dout

    (LayerNorm's formula without the ``- mean(g)`` term: there is no mean to
    subtract.)

    Returns
    -------
    dx : ndarray, shape of ``x``
    dgamma : ndarray, shape (D,)

    Self-check: ``self_check_3_2`` below.
    """
    # BEGIN TASK 3.2: RMSNorm forward and backward
    raise NotImplementedError(
        'Task 3.2: RMSNorm forward and backward - not written yet (exercise '
        '3.2 of chapter 3). Check it with: make check TASK=3.2 (in a '
        'notebook: %run -m npnorm.check 3.2)')
    # END TASK 3.2


# -- self-checks: `.venv/bin/python exercises/ch3_layernorm.py` ---------------
# Each returns one number made of every element of every result
# (npnorm.exercises.fingerprint).

def _example() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = 2.0 + 3.0 * rng.standard_normal((2, 3, 4))
    x[0, 0] *= 1e-3                      # one row so small that eps matters
    gamma = np.array([1.2, -0.5, 0.8, 2.0])
    beta = np.array([0.1, 0.2, -0.3, 0.0])
    dout = rng.standard_normal((2, 3, 4))
    return x, gamma, beta, dout


def self_check_3_1() -> float:
    """Task 3.1: out, dx, dgamma and dbeta of the example (2, 3, 4), every
    element weighted; you should get about -11.96435."""
    x, gamma, beta, dout = _example()
    out, cache = layernorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = layernorm_backward(dout, cache)
    return fingerprint(out=(out, (2, 3, 4)), dx=(dx, (2, 3, 4)),
                       dgamma=(dgamma, (4,)), dbeta=(dbeta, (4,)))


def self_check_3_2() -> float:
    """Task 3.2: out, dx and dgamma of the example, every element weighted; you
    should get about 49.76936."""
    x, gamma, _, dout = _example()
    out, cache = rmsnorm_forward(x, gamma)
    dx, dgamma = rmsnorm_backward(dout, cache)
    return fingerprint(out=(out, (2, 3, 4)), dx=(dx, (2, 3, 4)),
                       dgamma=(dgamma, (4,)))


if __name__ == "__main__":
    from npnorm.exercises import self_check_main

    self_check_main(globals())
