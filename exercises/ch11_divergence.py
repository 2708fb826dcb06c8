# Your exercise file, generated from solutions/ch11_divergence.py
# by `python -m npnorm.exercises generate`. Write your code between the two
# marker lines of each task (replace the `raise`), then check it with
#     make check TASK=<task id>        (in a terminal)
#     %run -m npnorm.check <task id>   (in a notebook)
# Regenerating never overwrites a file you have changed.
"""Chapter 11 - The affine divergence and PatchNorm.

One SGD step on an affine layer z = W x + b moves the sample's output by
(||x||^2 + 1) times the ideal step -eta * dL/dz. The affine-like layer divides
the output by s = sqrt(||x||^2 + 1), which makes that factor exactly 1;
PatchNorm does the same at every position of a convolution, with the
receptive-field patch P in the role of x (both are reconstructions of Bird,
"The Affine Divergence", 2025: see the chapter).

    affine-like:  s = sqrt(sum(x**2) + 1),
                  z = (x @ W.T + b) / s
    PatchNorm:    s = sqrt(||P||^2 + 1) per position,
                  z = conv2d(x, W, b) / s

Tasks
-----
11.1  affine_like_forward and affine_like_backward
11.2  patch_sq_norms (one convolution of x**2 with a box of ones) and
      patchnorm_forward

Self-check: ``.venv/bin/python exercises/ch11_divergence.py``.
Full check: ``make check TASK=11`` (in a notebook:
``%run -m npnorm.check 11``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npnorm.exercises import fingerprint
from npnorm.nn.conv import conv2d_forward


def affine_like_forward(
    x: np.ndarray, W: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """The affine-like layer on a batch: ``z = (x @ W.T + b) / sqrt(||x||^2
    + 1)``, row by row.

    Parameters
    ----------
    x : ndarray, shape (N, D)
    W : ndarray, shape (M, D)
    b : ndarray, shape (M,)

    Returns
    -------
    z : ndarray, shape (N, M)
    cache : dict
        Whatever your :func:`affine_like_backward` needs (suggestion: ``x``,
        ``W``, ``s`` of shape (N, 1) and ``z``).

    Hints
    -----
    * ``np.sum(x * x, axis=1, keepdims=True)`` is ``||x||^2`` per row, shape
      (N, 1).
    * The "+1" is the bias's input: the layer is ``[W b]`` applied to
      ``[x; 1] / ||[x; 1]||``.
    """
    # BEGIN TASK 11.1: the affine-like layer, forward and backward
    raise NotImplementedError(
        'Task 11.1: the affine-like layer, forward and backward - not written'
        ' yet (exercise 11.1 of chapter 11). Check it with: make check '
        'TASK=11.1 (in a notebook: %run -m npnorm.check 11.1)')
    # END TASK 11.1


def affine_like_backward(
    dout: np.ndarray, cache: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of :func:`affine_like_forward`.

    With ``G = dout``, per row: ``dW = (G/s)^T x``, ``db = sum(G/s)``, and

    .. math:: dx = \\frac{G}{s} W - \\frac{\\langle G, z\\rangle}{s^2}\\,x

    (the last term comes from ``ds/dx = x / s``).

    Returns
    -------
    dx : ndarray, shape (N, D)
    dW : ndarray, shape (M, D)
    db : ndarray, shape (M,)

    Self-check: ``self_check_11_1`` below.
    """
    # BEGIN TASK 11.1: the affine-like layer, forward and backward
    raise NotImplementedError(
        'Task 11.1: the affine-like layer, forward and backward - not written'
        ' yet (exercise 11.1 of chapter 11). Check it with: make check '
        'TASK=11.1 (in a notebook: %run -m npnorm.check 11.1)')
    # END TASK 11.1


def patch_sq_norms(
    x: np.ndarray, kernel: tuple[int, int], stride: int = 1, padding: int = 0
) -> np.ndarray:
    """``||P||^2`` of every receptive-field patch of a convolution, shape
    ``(N, 1, H_out, W_out)``.

    A patch spans all C input channels and ``kh x kw`` pixels (padded zeros
    included). Compute the norms with **one convolution**, without building
    the patches: the squares ``x**2``, summed over the channels, convolved
    with a ``kh x kw`` box of ones (same stride and padding).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel : (kh, kw)
    stride, padding : int

    Hints
    -----
    * ``conv2d_forward(x, weight, bias, stride=(s, s), padding=(p, p))`` from
      ``npnorm.nn.conv`` returns ``(out, cache)``; a weight of shape
      ``(1, 1, kh, kw)`` has one input and one output channel.
    """
    # BEGIN TASK 11.2: patch norms by one convolution, PatchNorm
    raise NotImplementedError(
        'Task 11.2: patch norms by one convolution, PatchNorm - not written '
        'yet (exercise 11.2 of chapter 11). Check it with: make check '
        'TASK=11.2 (in a notebook: %run -m npnorm.check 11.2)')
    # END TASK 11.2


def patchnorm_forward(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int = 1,
    padding: int = 0
) -> np.ndarray:
    """PatchNorm (affine mode): ``conv2d(x, W, b) / sqrt(||P||^2 + 1)``, one
    divisor per (sample, position), shared by all output channels.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    W : ndarray, shape (F, C, kh, kw)
    b : ndarray, shape (F,)

    Returns
    -------
    z : ndarray, shape (N, F, H_out, W_out)

    Self-check: ``self_check_11_2`` below.
    """
    # BEGIN TASK 11.2: patch norms by one convolution, PatchNorm
    raise NotImplementedError(
        'Task 11.2: patch norms by one convolution, PatchNorm - not written '
        'yet (exercise 11.2 of chapter 11). Check it with: make check '
        'TASK=11.2 (in a notebook: %run -m npnorm.check 11.2)')
    # END TASK 11.2


# -- self-checks: `.venv/bin/python exercises/ch11_divergence.py` ------------
# Each returns one number made of every element of every result
# (npnorm.exercises.fingerprint).

def self_check_11_1() -> float:
    """Task 11.1: z, dx, dW and db of the example (3 samples, 4 inputs, 2
    outputs), every element weighted; you should get about -10.57524."""
    rng = np.random.default_rng(11)
    x = 1.0 + 2.0 * rng.standard_normal((3, 4))
    W, b = rng.standard_normal((2, 4)), rng.standard_normal(2)
    dout = rng.standard_normal((3, 2))
    z, cache = affine_like_forward(x, W, b)
    dx, dW, db = affine_like_backward(dout, cache)
    return fingerprint(z=(z, (3, 2)), dx=(dx, (3, 4)), dW=(dW, (2, 4)),
                       db=(db, (2,)))


def self_check_11_2() -> float:
    """Task 11.2: the patch norms and z of the example (3x3 kernel, padding
    1), every element weighted; you should get about 710.8754."""
    rng = np.random.default_rng(12)
    x = 0.5 + rng.standard_normal((2, 2, 5, 5))
    W, b = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    q = patch_sq_norms(x, (3, 3), 1, 1)
    z = patchnorm_forward(x, W, b, 1, 1)
    return fingerprint(q=(q, (2, 1, 5, 5)), z=(z, (2, 3, 5, 5)))


if __name__ == "__main__":
    from npnorm.exercises import self_check_main

    self_check_main(globals())
