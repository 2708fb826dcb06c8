# Your exercise file, generated from solutions/ch4_groupnorm.py
# by `python -m npnorm.exercises generate`. Write your code between the two
# marker lines of each task (replace the `raise`), then check it with
#     make check TASK=<task id>        (in a terminal)
#     %run -m npnorm.check <task id>   (in a notebook)
# Regenerating never overwrites a file you have changed.
"""Chapter 4 - Group and instance normalization.

Input ``x`` of shape ``(N, C, *spatial)`` - for images ``(N, C, H, W)``.

* **GroupNorm** splits the C channels into G contiguous groups of C/G channels
  and standardizes every (sample, group) block - C/G channels times all
  positions - on its own; then a per-channel affine map.
* **InstanceNorm** standardizes every (sample, channel) over its positions:
  GroupNorm with G = C.

Both use the biased variance and behave the same in training and evaluation (no
running statistics here; ``torch.nn.InstanceNorm2d`` can optionally keep some).
``gamma`` and ``beta`` have shape (C,).

Tasks
-----
4.1  groupnorm_forward and groupnorm_backward, via a reshape to (N, G, -1)
4.2  instancenorm_forward and instancenorm_backward

Self-check: ``.venv/bin/python exercises/ch4_groupnorm.py``.
Full check: ``make check TASK=4`` (in a notebook: ``%run -m npnorm.check 4``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npnorm.exercises import fingerprint


def _channel_view(ndim: int) -> tuple[int, ...]:
    """Shape that broadcasts a (C,) vector against an (N, C, *spatial) array,
    e.g. (1, C, 1, 1)."""
    return (1, -1) + (1,) * (ndim - 2)


def groupnorm_forward(
    x: np.ndarray,
    num_groups: int,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float = 1e-5,
) -> tuple[np.ndarray, dict[str, Any]]:
    """GroupNorm of ``x`` (N, C, *spatial), as ``torch.nn.GroupNorm(num_groups,
    C)``.

    Parameters
    ----------
    x : ndarray, shape (N, C, *spatial)
    num_groups : int
        G; it divides C.
    gamma, beta : ndarray, shape (C,)
    eps : float

    Returns
    -------
    out : ndarray, shape of ``x``
    cache : dict for :func:`groupnorm_backward`

    Hints
    -----
    * ``x.reshape(N, G, -1)`` puts every (sample, group) block in one row of
      length C/G * H * W; standardize over the last axis (that is LayerNorm),
      then reshape back to ``x.shape``.
    * The affine map is per **channel**: ``gamma.reshape(1, C, 1, 1)`` (see
      ``_channel_view``).
    """
    # BEGIN TASK 4.1: GroupNorm via reshape, forward and backward
    raise NotImplementedError(
        'Task 4.1: GroupNorm via reshape, forward and backward - not written '
        'yet (exercise 4.1 of chapter 4). Check it with: make check TASK=4.1 '
        '(in a notebook: %run -m npnorm.check 4.1)')
    # END TASK 4.1


def groupnorm_backward(
    dout: np.ndarray, cache: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of :func:`groupnorm_forward`.

    Returns
    -------
    dx : ndarray, shape of ``x``
    dgamma, dbeta : ndarray, shape (C,), summed over the batch and every
        position

    Hints
    -----
    * Parameter gradients first, in the (N, C, ...) layout; then ``g = gamma *
      dout``, reshaped to (N, G, -1), goes through the standardize backward ``r
      (g - mean(g) - x_hat mean(g x_hat))`` over the last axis; reshape the
      result back.

    Self-check: ``self_check_4_1`` below.
    """
    # BEGIN TASK 4.1: GroupNorm via reshape, forward and backward
    raise NotImplementedError(
        'Task 4.1: GroupNorm via reshape, forward and backward - not written '
        'yet (exercise 4.1 of chapter 4). Check it with: make check TASK=4.1 '
        '(in a notebook: %run -m npnorm.check 4.1)')
    # END TASK 4.1


def instancenorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, dict[str, Any]]:
    """InstanceNorm of ``x`` (N, C, *spatial) with a per-channel affine map (as
    ``torch.nn.InstanceNorm2d(C, affine=True)``; ``affine=False`` is ``gamma =
    1, beta = 0``).

    Returns
    -------
    out : ndarray, shape of ``x``
    cache : dict for :func:`instancenorm_backward`

    Hints
    -----
    * Standardize over ``axes = tuple(range(2, x.ndim))`` with
      ``keepdims=True``.
    * Or reuse task 4.1: it is ``groupnorm_forward(x, C, gamma, beta, eps)``.
    """
    # BEGIN TASK 4.2: InstanceNorm forward and backward
    raise NotImplementedError(
        'Task 4.2: InstanceNorm forward and backward - not written yet '
        '(exercise 4.2 of chapter 4). Check it with: make check TASK=4.2 (in '
        'a notebook: %run -m npnorm.check 4.2)')
    # END TASK 4.2


def instancenorm_backward(
    dout: np.ndarray, cache: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of :func:`instancenorm_forward`: returns ``(dx, dgamma,
    dbeta)``.

    Self-check: ``self_check_4_2`` below.
    """
    # BEGIN TASK 4.2: InstanceNorm forward and backward
    raise NotImplementedError(
        'Task 4.2: InstanceNorm forward and backward - not written yet '
        '(exercise 4.2 of chapter 4). Check it with: make check TASK=4.2 (in '
        'a notebook: %run -m npnorm.check 4.2)')
    # END TASK 4.2


# -- self-checks: `.venv/bin/python exercises/ch4_groupnorm.py` ---------------
# Each returns one number made of every element of every result
# (npnorm.exercises.fingerprint).

def _example() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    x = -3.0 + 2.0 * rng.standard_normal((2, 4, 3, 3))
    gamma = np.array([0.5, 1.5, -1.0, 2.0])
    beta = np.array([0.0, 0.3, 0.1, -0.2])
    dout = rng.standard_normal((2, 4, 3, 3))
    return x, gamma, beta, dout


def self_check_4_1() -> float:
    """Task 4.1: out, dx, dgamma and dbeta of the example with 2 groups; you
    should get about 32.23476."""
    x, gamma, beta, dout = _example()
    out, cache = groupnorm_forward(x, 2, gamma, beta)
    dx, dgamma, dbeta = groupnorm_backward(dout, cache)
    return fingerprint(out=(out, x.shape), dx=(dx, x.shape),
                       dgamma=(dgamma, (4,)), dbeta=(dbeta, (4,)))


def self_check_4_2() -> float:
    """Task 4.2: out, dx, dgamma and dbeta of the example; you should get
    about 29.05876."""
    x, gamma, beta, dout = _example()
    out, cache = instancenorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = instancenorm_backward(dout, cache)
    return fingerprint(out=(out, x.shape), dx=(dx, x.shape),
                       dgamma=(dgamma, (4,)), dbeta=(dbeta, (4,)))


if __name__ == "__main__":
    from npnorm.exercises import self_check_main

    self_check_main(globals())
