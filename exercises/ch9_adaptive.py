# Your exercise file, generated from solutions/ch9_adaptive.py
# by `python -m npnorm.exercises generate`. Write your code between the two
# marker lines of each task (replace the `raise`), then check it with
#     make check TASK=<task id>        (in a terminal)
#     %run -m npnorm.check <task id>   (in a notebook)
# Regenerating never overwrites a file you have changed.
"""Chapter 9 - Adaptive normalization.

An adaptive normalizer standardizes its input, then applies a scale and a
shift that are not learned constants but functions of a condition (a class,
a style, a diffusion timestep):

    AdaGN:   x_hat = GroupNorm(x) (no affine),
             out = x_hat * (1 + scale) + shift
    adaLN-Zero block:
             [shift, scale, gate] = SiLU(c) @ W_mod.T + b_mod
             u = LayerNorm(x) * (1 + scale) + shift
             out = x + gate * (u @ W.T + b)

and the timestep reaches the network as a sinusoidal embedding.

Tasks
-----
9.1  adagn_forward and adagn_backward (the gradient to x, to the scale and
     to the shift)
9.2  timestep_embedding (cos first, max_period 10000)
9.3  modulated_block_forward and modulated_block_backward (one adaLN-Zero
     block, gradient to the condition)

Self-check: ``.venv/bin/python exercises/ch9_adaptive.py``.
Full check: ``make check TASK=9`` (in a notebook:
``%run -m npnorm.check 9``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npnorm.exercises import fingerprint


def adagn_forward(
    x: np.ndarray, scale: np.ndarray, shift: np.ndarray, num_groups: int,
    eps: float = 1e-5
) -> tuple[np.ndarray, dict[str, Any]]:
    """Adaptive GroupNorm with a given per-sample scale and shift.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    scale, shift : ndarray, shape (N, C)
        One value per sample and channel (in a network: a Linear map of the
        timestep embedding).
    num_groups : int
        Divides C; each (sample, group) of C / num_groups channels is
        standardized on its own (biased variance, ``eps`` inside the square
        root).

    Returns
    -------
    out : ndarray, shape of ``x``
        ``x_hat * (1 + scale) + shift``, broadcast over H, W
    cache : dict
        Whatever :func:`adagn_backward` needs (suggestion: ``x_hat``,
        ``rstd`` of shape (N, G, 1), ``scale``, ``num_groups``).

    Hints
    -----
    * ``x.reshape(N, G, -1)`` puts each group's elements on the last axis.
    * ``scale[:, :, None, None]`` broadcasts a per-(sample, channel) value
      over H and W.
    """
    # BEGIN TASK 9.1: AdaGN forward and backward
    raise NotImplementedError(
        'Task 9.1: AdaGN forward and backward - not written yet (exercise 9.1'
        ' of chapter 9). Check it with: make check TASK=9.1 (in a notebook: '
        '%run -m npnorm.check 9.1)')
    # END TASK 9.1


def adagn_backward(
    dout: np.ndarray, cache: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of :func:`adagn_forward`.

    .. math:: \\frac{\\partial L}{\\partial s_{n,c}} = \\sum_{h,w} g\\,\\hat x,
              \\quad
              \\frac{\\partial L}{\\partial t_{n,c}} = \\sum_{h,w} g, \\quad
              \\frac{\\partial L}{\\partial \\hat x} = g\\,(1 + s)

    then the group-standardization backward
    :math:`r(\\hat g - \\overline{\\hat g}
    - \\hat x\\,\\overline{\\hat g \\hat x})` with the means over each group.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dscale, dshift : ndarray, shape (N, C)
        Per sample: summed over H and W only, **not** over the batch (each
        sample has its own scale).

    Self-check: ``self_check_9_1`` below.
    """
    # BEGIN TASK 9.1: AdaGN forward and backward
    raise NotImplementedError(
        'Task 9.1: AdaGN forward and backward - not written yet (exercise 9.1'
        ' of chapter 9). Check it with: make check TASK=9.1 (in a notebook: '
        '%run -m npnorm.check 9.1)')
    # END TASK 9.1


def timestep_embedding(
    t: np.ndarray, dim: int, max_period: float = 10000.0
) -> np.ndarray:
    """Sinusoidal embedding of diffusion timesteps, as ADM and DiT compute it.

    With ``half = dim // 2`` and frequencies
    ``f_j = max_period ** (-j / half)``, ``j = 0 .. half-1``, the embedding
    of ``t`` is ``[cos(t f_0), ..., cos(t f_{half-1}), sin(t f_0), ...,
    sin(t f_{half-1})]`` - **cos first** - and a zero last column when
    ``dim`` is odd.

    Parameters
    ----------
    t : ndarray, shape (N,)
        Timesteps (integers or floats).
    dim : int
    max_period : float
        The slowest frequency is about ``1 / max_period``.

    Returns
    -------
    ndarray, shape (N, dim), float64

    Self-check: ``self_check_9_2`` below.
    """
    # BEGIN TASK 9.2: Sinusoidal timestep embedding
    raise NotImplementedError(
        'Task 9.2: Sinusoidal timestep embedding - not written yet (exercise '
        '9.2 of chapter 9). Check it with: make check TASK=9.2 (in a '
        'notebook: %run -m npnorm.check 9.2)')
    # END TASK 9.2


def modulated_block_forward(
    x: np.ndarray, c: np.ndarray, w_mod: np.ndarray, b_mod: np.ndarray,
    w: np.ndarray, b: np.ndarray, eps: float = 1e-6
) -> tuple[np.ndarray, dict[str, Any]]:
    """One adaLN-Zero block with a Linear branch:
    ``x + gate * Linear(LN(x) * (1 + scale) + shift)``.

    Parameters
    ----------
    x : ndarray, shape (N, D)
    c : ndarray, shape (N, E)
        The condition (timestep + class embedding).
    w_mod, b_mod : ndarray, shapes (3D, E) and (3D,)
        ``SiLU(c) @ w_mod.T + b_mod`` is split in **DiT's order**: columns
        ``[0, D)`` the shift, ``[D, 2D)`` the scale, ``[2D, 3D)`` the gate.
    w, b : ndarray, shapes (D, D) and (D,)
        The branch ``f(u) = u @ w.T + b``.
    eps : float
        LayerNorm's (no affine; biased variance over the D features).

    Returns
    -------
    out : ndarray, shape (N, D)
    cache : dict for :func:`modulated_block_backward`
    """
    # BEGIN TASK 9.3: One adaLN-Zero block, forward and backward
    raise NotImplementedError(
        'Task 9.3: One adaLN-Zero block, forward and backward - not written '
        'yet (exercise 9.3 of chapter 9). Check it with: make check TASK=9.3 '
        '(in a notebook: %run -m npnorm.check 9.3)')
    # END TASK 9.3


def modulated_block_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Backward pass of :func:`modulated_block_forward`.

    Returns
    -------
    dx, dc, dw_mod, db_mod, dw, db
        ``dx`` includes the identity path; ``dc`` reaches the condition
        through the gate, the scale and the shift (and the SiLU).

    Self-check: ``self_check_9_3`` below.
    """
    # BEGIN TASK 9.3: One adaLN-Zero block, forward and backward
    raise NotImplementedError(
        'Task 9.3: One adaLN-Zero block, forward and backward - not written '
        'yet (exercise 9.3 of chapter 9). Check it with: make check TASK=9.3 '
        '(in a notebook: %run -m npnorm.check 9.3)')
    # END TASK 9.3


# -- self-checks: `.venv/bin/python exercises/ch9_adaptive.py` ---------------
# Each returns one number made of every element of every result
# (npnorm.exercises.fingerprint).

def _example_9_1() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(9)
    x = 2.0 + 3.0 * rng.standard_normal((2, 4, 3, 3))
    scale = 0.5 * rng.standard_normal((2, 4))
    shift = rng.standard_normal((2, 4))
    dout = rng.standard_normal((2, 4, 3, 3))
    return x, scale, shift, dout


def self_check_9_1() -> float:
    """Task 9.1: out, dx, dscale and dshift of the example (2, 4, 3, 3) with
    2 groups, every element weighted; you should get about 37.42378."""
    x, scale, shift, dout = _example_9_1()
    out, cache = adagn_forward(x, scale, shift, num_groups=2)
    dx, dscale, dshift = adagn_backward(dout, cache)
    return fingerprint(out=(out, (2, 4, 3, 3)), dx=(dx, (2, 4, 3, 3)),
                       dscale=(dscale, (2, 4)), dshift=(dshift, (2, 4)))


def self_check_9_2() -> float:
    """Task 9.2: timestep_embedding([0, 7, 499], 9) and, with max_period 100,
    timestep_embedding([3, 50], 6), every element weighted; you should get
    about 10.08370."""
    emb = timestep_embedding(np.array([0, 7, 499]), 9)
    emb100 = timestep_embedding(np.array([3, 50]), 6, 100.0)
    return fingerprint(emb=(emb, (3, 9)), emb100=(emb100, (2, 6)))


def _example_9_3():
    rng = np.random.default_rng(93)
    n, d, e = 3, 4, 5
    x = 1.0 + 2.0 * rng.standard_normal((n, d))
    c = rng.standard_normal((n, e))
    w_mod = 0.5 * rng.standard_normal((3 * d, e))
    b_mod = 0.5 * rng.standard_normal(3 * d)
    w, b = 0.5 * rng.standard_normal((d, d)), 0.5 * rng.standard_normal(d)
    return x, c, w_mod, b_mod, w, b, rng.standard_normal((n, d))


def self_check_9_3() -> float:
    """Task 9.3: out and all six gradients of the example (N=3, D=4, E=5),
    every element weighted; you should get about 14.89841."""
    x, c, w_mod, b_mod, w, b, dout = _example_9_3()
    out, cache = modulated_block_forward(x, c, w_mod, b_mod, w, b)
    dx, dc, dw_mod, db_mod, dw, db = modulated_block_backward(dout, cache)
    return fingerprint(out=(out, (3, 4)), dx=(dx, (3, 4)), dc=(dc, (3, 5)),
                       dw_mod=(dw_mod, (12, 5)), db_mod=(db_mod, (12,)),
                       dw=(dw, (4, 4)), db=(db, (4,)))


if __name__ == "__main__":
    from npnorm.exercises import self_check_main

    self_check_main(globals())
