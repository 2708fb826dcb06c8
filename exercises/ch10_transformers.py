# Your exercise file, generated from solutions/ch10_transformers.py
# by `python -m npnorm.exercises generate`. Write your code between the two
# marker lines of each task (replace the `raise`), then check it with
#     make check TASK=<task id>        (in a terminal)
#     %run -m npnorm.check <task id>   (in a notebook)
# Regenerating never overwrites a file you have changed.
"""Chapter 10 - Normalization in transformers.

Two layers of the transformer era, forward and backward by hand.

* ScaleNorm (Nguyen & Salazar 2019): one learned scalar ``g`` times the
  L2-normalized token (norm over the last axis; ``eps`` floors the norm,
  F.normalize style),

      y = g * x / max(||x||, eps)

* QK-norm (Henry et al. 2020): the attention logits of unit-length queries
  and keys with a learned temperature ``g`` in place of 1/sqrt(d):

      S = g * q_hat @ k_hat^T,   q_hat = q / max(||q||, eps),
                                 k_hat = k / max(||k||, eps)

Shapes: ``x`` is ``(*, D)``; ``q`` is ``(*, Lq, d)`` and ``k`` is
``(*, Lk, d)``; ``S`` is ``(*, Lq, Lk)``.

Tasks
-----
10.1  scale_norm_forward and scale_norm_backward (to x and to g)
10.2  qk_logits_forward and qk_logits_backward (to q, k and g)

Self-check: ``.venv/bin/python exercises/ch10_transformers.py``.
Full check: ``make check TASK=10`` (in a notebook:
``%run -m npnorm.check 10``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npnorm.exercises import fingerprint


def scale_norm_forward(
    x: np.ndarray, g: float, eps: float = 1e-5
) -> tuple[np.ndarray, dict[str, Any]]:
    """ScaleNorm over the last axis: ``g * x / max(||x||_2, eps)``.

    Returns
    -------
    out : ndarray, shape of ``x``
    cache : dict for :func:`scale_norm_backward`

    Hints
    -----
    * ``np.linalg.norm(x, axis=-1, keepdims=True)`` or
      ``np.sqrt((x * x).sum(-1, keepdims=True))``.
    * ``eps`` is a floor on the norm (``np.maximum``), not a term under the
      square root.
    """
    # BEGIN TASK 10.1: ScaleNorm forward and backward
    raise NotImplementedError(
        'Task 10.1: ScaleNorm forward and backward - not written yet '
        '(exercise 10.1 of chapter 10). Check it with: make check TASK=10.1 '
        '(in a notebook: %run -m npnorm.check 10.1)')
    # END TASK 10.1


def scale_norm_backward(
    dout: np.ndarray, cache: dict[str, Any]
) -> tuple[np.ndarray, float]:
    """Backward of :func:`scale_norm_forward`: returns ``(dx, dg)``.

    With ``y = x / ||x||`` and ``u = g * dout`` (the gradient reaching
    ``y``):

    * ``dg = sum(dout * y)`` over everything (``g`` is one scalar);
    * ``dx = (u - y * <y, u>) / ||x||`` with ``<y, u>`` summed over the last
      axis - the radial part of ``u`` is removed, because scaling ``x`` does
      not change ``y``;
    * where the floor is active (``||x|| <= eps``) the divisor is the
      constant ``eps`` and ``dx = u / eps``.

    Self-check: ``self_check_10_1`` below.
    """
    # BEGIN TASK 10.1: ScaleNorm forward and backward
    raise NotImplementedError(
        'Task 10.1: ScaleNorm forward and backward - not written yet '
        '(exercise 10.1 of chapter 10). Check it with: make check TASK=10.1 '
        '(in a notebook: %run -m npnorm.check 10.1)')
    # END TASK 10.1


def qk_logits_forward(
    q: np.ndarray, k: np.ndarray, g: float, eps: float = 1e-12
) -> tuple[np.ndarray, dict[str, Any]]:
    """QK-norm logits ``S = g * q_hat @ k_hat^T`` (no mask, no softmax).

    Returns
    -------
    S : ndarray, shape ``(*, Lq, Lk)``
    cache : dict for :func:`qk_logits_backward`

    Hints
    -----
    * ``np.swapaxes(k_hat, -1, -2)`` transposes the last two axes for any
      number of leading axes.
    * Every entry of ``S`` lies in ``[-|g|, |g|]``: a quick sanity check.
    """
    # BEGIN TASK 10.2: QK-norm logits, forward and backward
    raise NotImplementedError(
        'Task 10.2: QK-norm logits, forward and backward - not written yet '
        '(exercise 10.2 of chapter 10). Check it with: make check TASK=10.2 '
        '(in a notebook: %run -m npnorm.check 10.2)')
    # END TASK 10.2


def qk_logits_backward(
    dS: np.ndarray, cache: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Backward of :func:`qk_logits_forward`: returns ``(dq, dk, dg)``.

    * ``dg = sum(dS * (q_hat @ k_hat^T))``;
    * ``dq_hat = g * dS @ k_hat`` and ``dk_hat = g * dS^T @ q_hat`` (the
      transpose of the last two axes of ``dS``: every key receives from every
      query that looked at it);
    * then through the L2 normalization of each row:
      ``dq = (dq_hat - q_hat <q_hat, dq_hat>) / ||q||``.
      (Take the norms to be above ``eps``.)

    Self-check: ``self_check_10_2`` below.
    """
    # BEGIN TASK 10.2: QK-norm logits, forward and backward
    raise NotImplementedError(
        'Task 10.2: QK-norm logits, forward and backward - not written yet '
        '(exercise 10.2 of chapter 10). Check it with: make check TASK=10.2 '
        '(in a notebook: %run -m npnorm.check 10.2)')
    # END TASK 10.2


# -- self-checks: `.venv/bin/python exercises/ch10_transformers.py` ----------
# Each returns one number made of every element of every result
# (npnorm.exercises.fingerprint).

def self_check_10_1() -> float:
    """Task 10.1: out, dx and dg of the example (2, 3, 5) with g = 1.7 and
    eps = 0.5 (one row below the floor), every element weighted; you should
    get about 15.15571."""
    rng = np.random.default_rng(10)
    x = 1.0 + 2.0 * rng.standard_normal((2, 3, 5))
    x[0, 1] *= 0.05                  # ||x|| < eps: the floor is active here
    x[1, 0] *= 0.3                   # ||x|| near eps: eps inside sqrt shows
    dout = rng.standard_normal((2, 3, 5))
    out, cache = scale_norm_forward(x, 1.7, 0.5)
    dx, dg = scale_norm_backward(dout, cache)
    return fingerprint(out=(out, (2, 3, 5)), dx=(dx, (2, 3, 5)),
                       dg=(dg, ()))


def self_check_10_2() -> float:
    """Task 10.2: S, dq, dk and dg of the example (4 queries, 5 keys, g =
    3.5), every element weighted; you should get about -64.91560."""
    rng = np.random.default_rng(11)
    q = 0.5 + rng.standard_normal((2, 2, 4, 3))
    k = -0.3 + 2.0 * rng.standard_normal((2, 2, 5, 3))
    dS = rng.standard_normal((2, 2, 4, 5))
    S, cache = qk_logits_forward(q, k, 3.5)
    dq, dk, dg = qk_logits_backward(dS, cache)
    return fingerprint(S=(S, (2, 2, 4, 5)), dq=(dq, (2, 2, 4, 3)),
                       dk=(dk, (2, 2, 5, 3)), dg=(dg, ()))


if __name__ == "__main__":
    from npnorm.exercises import self_check_main

    self_check_main(globals())
