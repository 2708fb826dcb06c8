r"""Sums for the float32 kernels: the terms in float32, the totals in float64.

A float32 kernel that computes in float32 fits 16 numbers in an AVX-512 register instead of 8 (and
converts nothing). Its sums must still be accurate. Each helper here adds the terms of a block of
``SUM_BLOCK`` elements in the input's dtype (LLVM spreads them over several vector accumulators, so
each float32 partial sum holds a few dozen terms) and adds the block's sum to a float64 total.

Each block is a slice looped over from 0: indexing ``row[j]`` with ``j`` running from ``j0`` does not
vectorize (Numba wraps negative indices, and LLVM cannot rule them out), and was several times slower
when we measured it.

The statistics come from the corrected two-pass algorithm: a first mean ``c`` (:func:`total`), then
the sums of ``x - c`` and ``(x - c)^2`` (:func:`dev_sums`), and

.. math:: \mu = c + \overline{x - c}, \qquad \sigma^2 = \overline{(x - c)^2} - \left(\overline{x - c}\right)^2

where ``c`` is within a few float32 rounding errors of the mean, so the subtraction loses nothing.
With float64 input the same code computes in float64.
"""

from __future__ import annotations

import numpy as np

from ._common import SUM_BLOCK, cast_like, jit

__all__ = ["total", "dev_sums", "dy_sums", "weighted_dy_sums"]


@jit
def total(xr):
    """:math:`\\sum_j x_j` of a 1-D array."""
    s = np.float64(0.0)
    for j0 in range(0, xr.shape[0], SUM_BLOCK):
        xs = xr[j0:j0 + SUM_BLOCK]
        p = cast_like(0.0, xr)
        for j in range(xs.shape[0]):
            p += xs[j]
        s += p
    return s


@jit
def dev_sums(xr, c):
    """:math:`\\sum_j (x_j - c)` and :math:`\\sum_j (x_j - c)^2` (``c`` in the dtype of ``xr``)."""
    s1 = np.float64(0.0)
    s2 = np.float64(0.0)
    for j0 in range(0, xr.shape[0], SUM_BLOCK):
        xs = xr[j0:j0 + SUM_BLOCK]
        p1 = cast_like(0.0, xr)
        p2 = cast_like(0.0, xr)
        for j in range(xs.shape[0]):
            d = xs[j] - c
            p1 += d
            p2 += d * d
        s1 += p1
        s2 += p2
    return s1, s2


@jit
def dy_sums(dr, xr, hi):
    """:math:`\\sum_j dy_j` and :math:`\\sum_j dy_j (x_j - hi)`."""
    a = np.float64(0.0)
    bx = np.float64(0.0)
    for j0 in range(0, xr.shape[0], SUM_BLOCK):
        xs, ds = xr[j0:j0 + SUM_BLOCK], dr[j0:j0 + SUM_BLOCK]
        pa = cast_like(0.0, xr)
        pb = cast_like(0.0, xr)
        for j in range(xs.shape[0]):
            pa += ds[j]
            pb += ds[j] * (xs[j] - hi)
        a += pa
        bx += pb
    return a, bx


@jit
def weighted_dy_sums(dr, w, xr, hi):
    """:math:`\\sum_j g_j` and :math:`\\sum_j g_j (x_j - hi)` with :math:`g = w\\,dy` (``w`` an array)."""
    sg = np.float64(0.0)
    sgx = np.float64(0.0)
    for j0 in range(0, xr.shape[0], SUM_BLOCK):
        xs, ds, ws = xr[j0:j0 + SUM_BLOCK], dr[j0:j0 + SUM_BLOCK], w[j0:j0 + SUM_BLOCK]
        pg = cast_like(0.0, xr)
        pgx = cast_like(0.0, xr)
        for j in range(xs.shape[0]):
            g = ds[j] * ws[j]
            pg += g
            pgx += g * (xs[j] - hi)
        sg += pg
        sgx += pgx
    return sg, sgx


DISPATCHERS = (total, dev_sums, dy_sums, weighted_dy_sums)
