r"""Fused Numba kernels for LayerNorm and RMSNorm.

The input is viewed as ``(R, M)``: ``R`` rows (every batch position) of ``M`` contiguous elements
(the ``normalized_shape``). One row is a few KiB, so it stays in the L1/L2 cache while the kernel
walks over it several times:

* forward, LayerNorm: pass 1 sums the row (mean), pass 2 sums squared deviations (variance, the
  numerically sound two-pass form, never :math:`E[x^2]-E[x]^2`), pass 3 writes
  :math:`y = (x-\mu) r \gamma + \beta`. Memory traffic: one read of ``x``, one write of ``y``
  (and one write of the private copy of ``x`` the backward pass reads, see below).
* backward: pass 1 accumulates :math:`\sum g` and :math:`\sum g\hat x` with :math:`g = \gamma\,dy`
  (and this row's share of :math:`d\gamma, d\beta`), pass 2 writes
  :math:`dx = r\,(g - \overline{g} - \hat x\,\overline{g\hat x})`. Traffic: read ``x`` and ``dy``, write ``dx``.
  The drivers run pass 1 on four rows at a time (:func:`_ln_bwd_rows4`), which loads and stores the
  ``dweight``/``dbias`` accumulators once per four rows.

All accumulation is in float64, whatever the input dtype. The backward pass recomputes
:math:`\hat x` from ``x`` and the per-row ``mean`` / ``rstd`` saved by the forward pass instead of
storing a full-size :math:`\hat x` (less memory, less traffic). It reads a **private copy** of ``x``,
never the caller's array (which the caller may edit after the forward pass): the forward pass
writes it row by row while the row is in the cache (``_ln_fwd_keep_rows``), one more write of
``x`` and no more reads. An input that :func:`~npnorm.kernels._common.as_input` had to copy anyway
(another dtype, not contiguous) is used as it is.

Public functions have the signatures of the NumPy reference (:func:`npnorm.statistics.layernorm.layer_norm_forward`
etc.) plus optional preallocated outputs; their caches differ from the reference's but only their
own backward reads them.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from ..._checks import check_cache, check_rows_input
from .. import _common as C
from .._common import jit, pjit

__all__ = ["layer_norm_forward", "layer_norm_backward", "rms_norm_forward", "rms_norm_backward"]


# -- LayerNorm ------------------------------------------------------------------------------------
@jit
def _ln_fwd_rows(x, w, b, eps, out, mean, rstd, r0, r1):
    """LayerNorm forward of rows ``r0 <= i < r1`` of ``x`` (R, M) into
    ``out``; saves mean and rstd."""
    m = x.shape[1]
    for i in range(r0, r1):
        row = x[i]
        s = np.float64(0.0)
        # pass 1: mean
        for j in range(m):
            s += row[j]
        mu = s / m
        ss = np.float64(0.0)
        # pass 2: biased variance, from deviations
        for j in range(m):
            d = row[j] - mu
            ss += d * d
        r = 1.0 / np.sqrt(ss / m + eps)
        orow = out[i]
        # pass 3: normalize + affine
        for j in range(m):
            orow[j] = (row[j] - mu) * r * w[j] + b[j]
        mean[i] = mu
        rstd[i] = r


@pjit
def _ln_fwd_parallel(x, w, b, eps, out, mean, rstd, nchunks):
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _ln_fwd_rows(x, w, b, eps, out, mean, rstd, t * n // nchunks,
                     (t + 1) * n // nchunks)


@jit
def _ln_bwd_rows(dy, x, w, mean, rstd, dx, dw, db, r0, r1):
    """LayerNorm backward of rows ``r0 <= i < r1``; adds this range's
    dweight/dbias into ``dw``/``db`` (M,)."""
    m = x.shape[1]
    for i in range(r0, r1):
        row, drow = x[i], dy[i]
        mu, r = mean[i], rstd[i]
        sg = np.float64(0.0)
        sgx = np.float64(0.0)
        # pass 1: row sums and parameter-gradient shares
        for j in range(m):
            xh = (row[j] - mu) * r
            g = drow[j] * w[j]
            sg += g
            sgx += g * xh
            dw[j] += drow[j] * xh
            db[j] += drow[j]
        sg /= m
        sgx /= m
        dxrow = dx[i]
        # pass 2: dx = r (g - mean(g) - x_hat mean(g x_hat))
        for j in range(m):
            xh = (row[j] - mu) * r
            dxrow[j] = r * (drow[j] * w[j] - sg - xh * sgx)


@jit
def _ln_dx_row(row, drow, w, mu, r, sg, sgx, dxrow):
    """Pass 2 of :func:`_ln_bwd_rows` for one row, given its means ``sg`` of g and ``sgx`` of g x_hat."""
    for j in range(row.shape[0]):
        xh = (row[j] - mu) * r
        dxrow[j] = r * (drow[j] * w[j] - sg - xh * sgx)


@jit
def _ln_bwd_rows4(dy, x, w, mean, rstd, dx, dw, db, r0, r1):
    """:func:`_ln_bwd_rows` four rows at a time (the rest row by row): pass 1 walks the four rows
    together, so each element of the ``dw``/``db`` accumulators is loaded and stored once per four
    rows instead of once per row. Those loads and stores, not the reads of ``x`` and ``dy``, limited
    the one-row loop. Same formulas; the order of the operations in the sums differs (``dy x_hat``
    times ``w`` rather than ``w dy`` times ``x_hat``), which changes the last bits."""
    m = x.shape[1]
    i = r0
    while i + 4 <= r1:
        x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        d0, d1, d2, d3 = dy[i], dy[i + 1], dy[i + 2], dy[i + 3]
        m0, m1, m2, m3 = mean[i], mean[i + 1], mean[i + 2], mean[i + 3]
        q0, q1, q2, q3 = rstd[i], rstd[i + 1], rstd[i + 2], rstd[i + 3]
        g0 = g1 = g2 = g3 = np.float64(0.0)          # sums of g = w dy
        h0 = h1 = h2 = h3 = np.float64(0.0)          # sums of g x_hat
        for j in range(m):
            wj = w[j]
            e0, e1 = np.float64(d0[j]), np.float64(d1[j])
            e2, e3 = np.float64(d2[j]), np.float64(d3[j])
            p0, p1 = e0 * ((x0[j] - m0) * q0), e1 * ((x1[j] - m1) * q1)   # dy x_hat
            p2, p3 = e2 * ((x2[j] - m2) * q2), e3 * ((x3[j] - m3) * q3)
            g0 += e0 * wj
            g1 += e1 * wj
            g2 += e2 * wj
            g3 += e3 * wj
            h0 += p0 * wj
            h1 += p1 * wj
            h2 += p2 * wj
            h3 += p3 * wj
            dw[j] += (p0 + p1) + (p2 + p3)
            db[j] += (e0 + e1) + (e2 + e3)
        _ln_dx_row(x0, d0, w, m0, q0, g0 / m, h0 / m, dx[i])
        _ln_dx_row(x1, d1, w, m1, q1, g1 / m, h1 / m, dx[i + 1])
        _ln_dx_row(x2, d2, w, m2, q2, g2 / m, h2 / m, dx[i + 2])
        _ln_dx_row(x3, d3, w, m3, q3, g3 / m, h3 / m, dx[i + 3])
        i += 4
    _ln_bwd_rows(dy, x, w, mean, rstd, dx, dw, db, i, r1)


@jit
def _ln_out_keep_next(row, mu, r, w, b, orow, krow, nxt):
    """Pass 3 of one row (normalize + affine, and keep x) fused with pass 1 of the next row ``nxt``:
    returns the sum of ``nxt``."""
    s = np.float64(0.0)
    for j in range(row.shape[0]):
        v = row[j]
        orow[j] = (v - mu) * r * w[j] + b[j]
        krow[j] = v
        s += nxt[j]
    return s


@jit
def _ln_fwd_keep_rows(x, w, b, eps, out, mean, rstd, keep, r0, r1):
    """:func:`_ln_fwd_rows` whose pass 3 also copies the row into ``keep`` while it is in the cache
    (the backward pass reads that private copy, never the caller's array), software-pipelined: pass 3
    of row ``i`` also sums row ``i + 1`` (its pass 1), so that the next row's loads from memory are
    in flight while this row is written. Same formulas as :func:`_ln_fwd_rows`; the compiler may
    split the fused sum over vector lanes differently, which changes the last bits of the mean at
    most."""
    m = x.shape[1]
    if r0 >= r1:
        return
    s = np.float64(0.0)
    row = x[r0]
    for j in range(m):                          # pass 1 of the first row
        s += row[j]
    for i in range(r0, r1):
        row = x[i]
        mu = s / m
        ss = np.float64(0.0)
        for j in range(m):                      # pass 2: biased variance, from deviations
            d = row[j] - mu
            ss += d * d
        r = 1.0 / np.sqrt(ss / m + eps)
        nxt = x[i + 1] if i + 1 < r1 else row   # (the last row sums itself again, unused)
        s = _ln_out_keep_next(row, mu, r, w, b, out[i], keep[i], nxt)   # pass 3, and pass 1 of i + 1
        mean[i] = mu
        rstd[i] = r


@pjit
def _ln_fwd_keep_parallel(x, w, b, eps, out, mean, rstd, keep, nchunks):
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _ln_fwd_keep_rows(x, w, b, eps, out, mean, rstd, keep, t * n // nchunks, (t + 1) * n // nchunks)


@pjit
def _ln_bwd_parallel(dy, x, w, mean, rstd, dx, dw, db):
    n = x.shape[0]
    nchunks = dw.shape[0]
    for t in numba.prange(nchunks):
        _ln_bwd_rows4(dy, x, w, mean, rstd, dx, dw[t], db[t], t * n // nchunks, (t + 1) * n // nchunks)


# -- RMSNorm ----------------------------------------------------------------------------------------
@jit
def _rms_fwd_rows(x, w, eps, out, rstd, r0, r1):
    """RMSNorm forward of rows ``r0 <= i < r1``: ``y = x r w`` with ``r = 1/sqrt(mean(x^2) + eps)``."""
    m = x.shape[1]
    for i in range(r0, r1):
        row = x[i]
        ss = np.float64(0.0)
        for j in range(m):                      # pass 1: mean square (no centring in RMSNorm)
            v = np.float64(row[j])
            ss += v * v
        r = 1.0 / np.sqrt(ss / m + eps)
        orow = out[i]
        for j in range(m):                      # pass 2: scale
            orow[j] = row[j] * r * w[j]
        rstd[i] = r


@pjit
def _rms_fwd_parallel(x, w, eps, out, rstd, nchunks):
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _rms_fwd_rows(x, w, eps, out, rstd, t * n // nchunks, (t + 1) * n // nchunks)


@jit
def _rms_fwd_keep_rows(x, w, eps, out, rstd, keep, r0, r1):
    """:func:`_rms_fwd_rows` whose pass 2 also copies the row into ``keep`` (see :func:`_ln_fwd_keep_rows`)."""
    m = x.shape[1]
    for i in range(r0, r1):
        row = x[i]
        ss = np.float64(0.0)
        for j in range(m):
            v = np.float64(row[j])
            ss += v * v
        r = 1.0 / np.sqrt(ss / m + eps)
        orow, krow = out[i], keep[i]
        for j in range(m):
            v = row[j]
            orow[j] = v * r * w[j]
            krow[j] = v
        rstd[i] = r


@pjit
def _rms_fwd_keep_parallel(x, w, eps, out, rstd, keep, nchunks):
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _rms_fwd_keep_rows(x, w, eps, out, rstd, keep, t * n // nchunks, (t + 1) * n // nchunks)


@jit
def _rms_bwd_rows(dy, x, w, rstd, dx, dw, r0, r1):
    """RMSNorm backward of rows ``r0 <= i < r1``: ``dx = r (g - x_hat mean(g x_hat))``; adds dweight into ``dw``."""
    m = x.shape[1]
    for i in range(r0, r1):
        row, drow = x[i], dy[i]
        r = rstd[i]
        sgx = np.float64(0.0)
        for j in range(m):
            xh = row[j] * r
            sgx += drow[j] * w[j] * xh
            dw[j] += drow[j] * xh
        sgx /= m
        dxrow = dx[i]
        for j in range(m):
            dxrow[j] = r * (drow[j] * w[j] - row[j] * r * sgx)


@pjit
def _rms_bwd_parallel(dy, x, w, rstd, dx, dw):
    n = x.shape[0]
    nchunks = dw.shape[0]
    for t in numba.prange(nchunks):
        _rms_bwd_rows(dy, x, w, rstd, dx, dw[t], t * n // nchunks, (t + 1) * n // nchunks)


DISPATCHERS = (_ln_fwd_rows, _ln_fwd_parallel, _ln_fwd_keep_rows, _ln_fwd_keep_parallel, _ln_bwd_rows,
               _ln_dx_row, _ln_bwd_rows4, _ln_bwd_parallel, _ln_out_keep_next, _rms_fwd_rows, _rms_fwd_parallel,
               _rms_fwd_keep_rows, _rms_fwd_keep_parallel, _rms_bwd_rows, _rms_bwd_parallel)


# -- Python entry points (same signatures as the NumPy reference) -----------------------------------
def _rows(x: np.ndarray, normalized_shape: tuple[int, ...]) -> tuple[int, int]:
    m = int(np.prod(normalized_shape))
    return x.size // m, m


def layer_norm_forward(x: np.ndarray, normalized_shape: tuple[int, ...], weight: np.ndarray | None,
                       bias: np.ndarray | None, eps: float = 1e-5, *, out: np.ndarray | None = None,
                       keep_out: np.ndarray | None = None):
    """Fused LayerNorm forward; ``out`` may be a preallocated array (shape and dtype of ``x``). Same
    checks and errors as the reference; the cache holds a private copy of ``x`` (written while the
    kernel reads each row), never the caller's array."""
    x, normalized_shape, p, eps = check_rows_input(x, normalized_shape, {"weight": weight, "bias": bias}, eps,
                                                   "layer_norm_forward")
    weight, bias = p["weight"], p["bias"]
    n, m = _rows(x, normalized_shape)
    x2 = C.as_input(x, (n, m))
    w, b = C.as_f64(weight, (m,), 1.0), C.as_f64(bias, (m,), 0.0)
    y = C.check_out(out, (n, m), x2.dtype)
    mean, rstd = np.empty(n), np.empty(n)
    keep = C.keep_buffer(x, x2, keep_out)
    if keep is not None:
        if C.use_parallel(x2.size):
            _ln_fwd_keep_parallel(x2, w, b, float(eps), y, mean, rstd, keep, C.num_chunks(n))
        else:
            _ln_fwd_keep_rows(x2, w, b, float(eps), y, mean, rstd, keep, 0, n)
    elif C.use_parallel(x2.size):
        _ln_fwd_parallel(x2, w, b, float(eps), y, mean, rstd, C.num_chunks(n))
    else:
        _ln_fwd_rows(x2, w, b, float(eps), y, mean, rstd, 0, n)
    cache = {"backend": "numba", "x": x2 if keep is None else keep, "owns_x": keep is not None, "w": w, "mean": mean, "rstd": rstd,
             "shape": x.shape, "out_shape": x.shape, "dtype": x.dtype,
             "normalized_shape": tuple(normalized_shape), "has_weight": weight is not None,
             "has_bias": bias is not None}
    return C.restore(y, x.shape, x.dtype), cache


def layer_norm_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused LayerNorm backward: returns ``(dx, dweight, dbias)`` (float64 parameter gradients)."""
    dout = check_cache(dout, cache, "layer_norm_backward")
    x2, w = cache["x"], cache["w"]
    n, m = x2.shape
    dy = C.as_upstream(dout, x2.dtype, (n, m))
    dx = C.check_out(dx_out, (n, m), x2.dtype, "dx_out")
    if C.use_parallel(x2.size):
        k = C.num_chunks(n)
        dw, db = np.zeros((k, m)), np.zeros((k, m))
        _ln_bwd_parallel(dy, x2, w, cache["mean"], cache["rstd"], dx, dw, db)
        dw, db = dw.sum(axis=0), db.sum(axis=0)
    else:
        dw, db = np.zeros(m), np.zeros(m)
        _ln_bwd_rows4(dy, x2, w, cache["mean"], cache["rstd"], dx, dw, db, 0, n)
    nshape = cache["normalized_shape"]
    return (C.restore(dx, cache["shape"], cache["dtype"]),
            dw.reshape(nshape) if cache["has_weight"] else None,
            db.reshape(nshape) if cache["has_bias"] else None)


def rms_norm_forward(x: np.ndarray, normalized_shape: tuple[int, ...], weight: np.ndarray | None,
                     eps: float | None = None, *, out: np.ndarray | None = None,
                     keep_out: np.ndarray | None = None):
    """Fused RMSNorm forward (``eps=None``: machine epsilon of the input dtype, as the reference). Same
    checks as the reference; the cache holds a private copy of ``x``."""
    x, normalized_shape, p, eps = check_rows_input(x, normalized_shape, {"weight": weight}, eps,
                                                   "rms_norm_forward", eps_none=True)
    weight = p["weight"]
    n, m = _rows(x, normalized_shape)
    if eps is None:
        eps = float(np.finfo(np.promote_types(x.dtype, np.float32)).eps)
    x2 = C.as_input(x, (n, m))
    w = C.as_f64(weight, (m,), 1.0)
    y = C.check_out(out, (n, m), x2.dtype)
    rstd = np.empty(n)
    keep = C.keep_buffer(x, x2, keep_out)
    if keep is not None:
        if C.use_parallel(x2.size):
            _rms_fwd_keep_parallel(x2, w, float(eps), y, rstd, keep, C.num_chunks(n))
        else:
            _rms_fwd_keep_rows(x2, w, float(eps), y, rstd, keep, 0, n)
    elif C.use_parallel(x2.size):
        _rms_fwd_parallel(x2, w, float(eps), y, rstd, C.num_chunks(n))
    else:
        _rms_fwd_rows(x2, w, float(eps), y, rstd, 0, n)
    cache = {"backend": "numba", "x": x2 if keep is None else keep, "owns_x": keep is not None, "w": w, "rstd": rstd, "shape": x.shape,
             "out_shape": x.shape, "dtype": x.dtype,
             "normalized_shape": tuple(normalized_shape), "has_weight": weight is not None}
    return C.restore(y, x.shape, x.dtype), cache


def rms_norm_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused RMSNorm backward: returns ``(dx, dweight)``."""
    dout = check_cache(dout, cache, "rms_norm_backward")
    x2, w = cache["x"], cache["w"]
    n, m = x2.shape
    dy = C.as_upstream(dout, x2.dtype, (n, m))
    dx = C.check_out(dx_out, (n, m), x2.dtype, "dx_out")
    if C.use_parallel(x2.size):
        dw = np.zeros((C.num_chunks(n), m))
        _rms_bwd_parallel(dy, x2, w, cache["rstd"], dx, dw)
        dw = dw.sum(axis=0)
    else:
        dw = np.zeros(m)
        _rms_bwd_rows(dy, x2, w, cache["rstd"], dx, dw, 0, n)
    dweight = dw.reshape(cache["normalized_shape"]) if cache["has_weight"] else None
    return C.restore(dx, cache["shape"], cache["dtype"]), dweight
