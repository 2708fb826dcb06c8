"""Fused Numba kernels of :mod:`npnorm.transformer.dyt` (channels-last): ``y = w tanh(a x) + b``.

The forward pass is one elementwise pass, which also writes the private copy of ``x`` that the
backward pass reads (``keep_out=``: the layer passes the copy of its previous cache). The backward
pass computes ``dx`` and accumulates ``dalpha = sum x w dy (1 - t^2)``, ``dweight = sum dy t`` and
``dbias = sum dy`` in the same pass (``t`` is recomputed rather than stored). Memory traffic: forward
reads ``x``, writes ``y`` and the copy (3 ``x``-sized streams); backward reads the copy and ``dy``
and writes ``dx`` (3 streams). There are no statistics, so nothing is read twice; DyT is limited by
the cost of ``tanh``, not by memory.

``tanh``: Numba has no vectorized ``tanh`` (without Intel's SVML it calls the C library once per
element, which keeps the loop from vectorizing; hand measurements when these kernels were written,
not repeated by any script here, found that several times slower than NumPy's vectorized
``np.tanh``). The kernels use instead formulas of multiplications, additions, one division and
(float64) one table look-up, which LLVM turns into vector instructions:

* float32 (:func:`_tanh32`): the odd degree-13 / even degree-6 minimax ratio of Eigen's fast float
  ``tanh`` on ``|z| <= 7.9053``; beyond it the ratio at the clamp, ``1 - 2.4e-7`` (float32 ``tanh``
  is within 3e-7 of 1 there), and exactly +-1 for ``|z| > 13 ln 2 = 9.0109``, where ``tanh`` rounds
  to +-1 in float32 (a select, which vectorizes). Exactly: else ``1 - t^2`` would be ``4.8e-7``
  rather than 0 for every saturated element, and that bias adds up in ``dalpha``;
* float64 (:func:`_tanh64`): ``tanh|z| = -m / (2 + m)`` with ``m = expm1(-2|z|)``, and ``expm1`` of
  ``-k + f`` (``k`` an integer, ``|f| <= 1/2``) as ``e^-k (1 + expm1 f) - 1``: ``e^-k`` from a table,
  ``expm1 f`` from its Taylor series to ``f^15`` (remainder below 2e-18 relative). No cancellation:
  for small ``|z|``, ``k = 0`` and ``m = expm1 f`` directly.

Both are within a few ulps of ``np.tanh`` (``tests/test_transformer.py`` checks it: 4e-7 relative in
float32, 1e-15 in float64) and odd; NaN stays NaN, and both give exactly +-1 wherever ``tanh``
rounds to +-1 in their precision, +-inf included.

The float32 kernels compute in float32 (``a``, ``w`` and ``b`` rounded once); the three parameter
gradients are sums over all rows and are accumulated in float64.

Why these kernels are compiled with ``error_model="numpy"``: under Numba's default (Python) error
model every float division checks its divisor for zero, to raise ``ZeroDivisionError`` as Python
does. That branch keeps LLVM from vectorizing the loop around it (the float32 forward pass was
several times slower with it, in hand measurements not repeated by any script here). Under NumPy's
model a division by zero gives ``inf``/``nan`` as in NumPy;
the divisions here are by ``q >= 4.9e-3`` (float32) and ``2 + m >= 1`` (float64).
"""

from __future__ import annotations

from typing import Any

import math

import numba
import numpy as np

from .. import _common as C
from ..._checks import check_cache

__all__ = ["dyt_forward", "dyt_backward"]

#: :data:`npnorm.kernels._common.jit` / ``pjit`` with NumPy's error model for float division (see the
#: module docstring): the division in :func:`_tanh32` does not stop vectorization.
jit = numba.njit(cache=True, fastmath=C.FASTMATH, nogil=True, error_model="numpy")
pjit = numba.njit(cache=True, fastmath=C.FASTMATH, nogil=True, parallel=True, error_model="numpy")

#: the clamp of the rational approximation (Eigen's)
_CLAMP = 7.90531110763549805
#: ``13 ln 2``: for ``|z|`` above it ``1 - tanh|z| < 2^-25`` (half a float32 ulp below 1), so
#: ``tanh z`` rounds to +-1 in float32; the last float32 at or below it is 9.010913
_ONE32 = 13.0 * math.log(2.0)


@jit
def _tanh32(z):
    """Rational approximation of tanh for float32 (see the module docstring);
    exactly +-1 for ``|z| > 13 ln 2``; NaN stays NaN."""
    zc = min(max(z, np.float32(-_CLAMP)), np.float32(_CLAMP))
    z2 = zc * zc
    p = np.float32(-2.76076847742355e-16)
    p = p * z2 + np.float32(2.00018790482477e-13)
    p = p * z2 + np.float32(-8.60467152213735e-11)
    p = p * z2 + np.float32(5.12229709037114e-08)
    p = p * z2 + np.float32(1.48572235717979e-05)
    p = p * z2 + np.float32(6.37261928875436e-04)
    p = p * z2 + np.float32(4.89352455891786e-03)
    q = np.float32(1.19825839466702e-06)
    q = q * z2 + np.float32(1.18534705686654e-04)
    q = q * z2 + np.float32(2.26843463243900e-03)
    q = q * z2 + np.float32(4.89352518554385e-03)
    t = zc * p / q
    # a select, not a branch (the loop still vectorizes); NaN > x is false
    return math.copysign(np.float32(1.0), z) if abs(z) > np.float32(_ONE32) else t


#: ``|z|`` beyond which ``tanh(z)`` rounds to +-1 in float64 (``1 - tanh(19.1) = 5e-17``)
_CLAMP64 = 19.1
#: ``e^-k`` for ``k = 0 .. 39`` (``-2|z| >= -38.2``)
_EXP_NEG = np.exp(-np.arange(40.0))
#: ``1 / k!``, the Taylor coefficients of ``exp``
_INV_FACT = tuple(1.0 / math.factorial(k) for k in range(16))


@jit
def _tanh64(z):
    """tanh for float64 through ``expm1`` (see the module docstring); NaN stays NaN."""
    zc = min(max(z, -_CLAMP64), _CLAMP64)
    zc = zc if zc == zc else 0.0           # NaN: compute on 0 (a valid table index), return NaN
    y = -2.0 * abs(zc)                      # tanh|z| = -expm1(y) / (2 + expm1(y))
    k = int(0.5 - y)                        # y = -k + f, |f| <= 1/2, 0 <= k <= 38
    f = y + k
    p = _INV_FACT[15]
    for i in range(14, 0, -1):              # Horner: expm1(f) = f (1 + f/2 + f^2/6 + ...)
        p = p * f + _INV_FACT[i]
    em = f * p
    e = _EXP_NEG[k]
    m = e * em + (e - 1.0)                  # expm1(y) = e^-k (1 + expm1 f) - 1
    t = math.copysign(-m / (2.0 + m), z)
    return t if z == z else z


# Test-only helpers (tests/test_transformer.py): not in DISPATCHERS, compiled only if a test calls them.
@jit
def _tanh32_array(z, out):
    """``out[i] = _tanh32(z[i])`` (for the accuracy test)."""
    for i in range(z.shape[0]):
        out[i] = _tanh32(z[i])


@jit
def _tanh64_array(z, out):
    """``out[i] = _tanh64(z[i])`` (for the accuracy test)."""
    for i in range(z.shape[0]):
        out[i] = _tanh64(z[i])


@jit
def _fwd_rows32(x, a, w, b, out, keep, r0, r1):
    """float32 rows ``r0 .. r1-1``: ``out = w tanh(a x) + b`` (``a``, ``w``, ``b`` float32); with a
    ``keep`` of ``x``'s shape (not 0 rows), also copy each row into it."""
    m = x.shape[1]
    copy = keep.shape[0] == x.shape[0]
    for i in range(r0, r1):
        row, orow = x[i], out[i]
        for j in range(m):
            orow[j] = w[j] * _tanh32(a * row[j]) + b[j]
        if copy:                    # the row is still in the L1 cache: copying it costs one write
            keep[i, :] = row


@pjit
def _fwd_parallel32(x, a, w, b, out, keep, nchunks):
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _fwd_rows32(x, a, w, b, out, keep, t * n // nchunks, (t + 1) * n // nchunks)


@jit
def _bwd_rows32(dy, x, a, w, dx, da, dw, db, r0, r1):
    """float32 rows: ``dx = a u`` with ``u = w dy (1 - t^2)``, in float32; ``da[0] += sum x u``,
    ``dw += sum dy t``, ``db += sum dy`` accumulated in float64."""
    m = x.shape[1]
    acc = np.float64(0.0)
    for i in range(r0, r1):
        row, drow, dxrow = x[i], dy[i], dx[i]
        for j in range(m):
            v = row[j]
            g = drow[j]
            t = _tanh32(a * v)
            u = w[j] * g * (np.float32(1.0) - t * t)
            dxrow[j] = a * u
            acc += np.float64(v * u)
            dw[j] += np.float64(g * t)
            db[j] += np.float64(g)
    da[0] += acc


@pjit
def _bwd_parallel32(dy, x, a, w, dx, da, dw, db):
    n = x.shape[0]
    nchunks = da.shape[0]
    for t in numba.prange(nchunks):
        _bwd_rows32(dy, x, a, w, dx, da[t:t + 1], dw[t], db[t], t * n // nchunks, (t + 1) * n // nchunks)


@jit
def _fwd_rows(x, a, w, b, out, keep, r0, r1):
    """float64 rows: as :func:`_fwd_rows32` with :func:`_tanh64`."""
    m = x.shape[1]
    copy = keep.shape[0] == x.shape[0]
    for i in range(r0, r1):
        row, orow = x[i], out[i]
        for j in range(m):
            orow[j] = w[j] * _tanh64(a * row[j]) + b[j]
        if copy:
            keep[i, :] = row


@pjit
def _fwd_parallel(x, a, w, b, out, keep, nchunks):
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _fwd_rows(x, a, w, b, out, keep, t * n // nchunks, (t + 1) * n // nchunks)


@jit
def _bwd_rows(dy, x, a, w, dx, da, dw, db, r0, r1):
    m = x.shape[1]
    acc = np.float64(0.0)
    for i in range(r0, r1):
        row, drow, dxrow = x[i], dy[i], dx[i]
        for j in range(m):
            xv = row[j]
            g = drow[j]
            t = _tanh64(a * xv)
            u = w[j] * g * (1.0 - t * t)
            dxrow[j] = a * u
            acc += xv * u
            dw[j] += g * t
            db[j] += g
    da[0] += acc


@pjit
def _bwd_parallel(dy, x, a, w, dx, da, dw, db):
    n = x.shape[0]
    nchunks = da.shape[0]
    for t in numba.prange(nchunks):
        _bwd_rows(dy, x, a, w, dx, da[t:t + 1], dw[t], db[t], t * n // nchunks, (t + 1) * n // nchunks)


DISPATCHERS = (_tanh32, _tanh64, _fwd_rows32, _fwd_parallel32, _bwd_rows32, _bwd_parallel32, _fwd_rows,
               _fwd_parallel, _bwd_rows, _bwd_parallel)


def _coefficients(alpha, weight, bias, m: int, dtype: np.dtype):
    """``(a, w, b)`` in the kernels' precision: float32 for float32 data, else float64."""
    a = float(np.asarray(alpha, dtype=np.float64).reshape(-1)[0])
    w, b = C.as_f64(weight, (m,), 1.0), C.as_f64(bias, (m,), 0.0)
    if dtype == np.float32:
        return np.float32(a), w.astype(np.float32), b.astype(np.float32)
    return a, w, b


def dyt_forward(x: np.ndarray, alpha, weight: np.ndarray, bias: np.ndarray, channels_last: bool = True, *,
                out: np.ndarray | None = None, keep_out: np.ndarray | None = None):
    """Fused DyT forward (channels-last only; ``channels_last=False`` raises); ``out`` and ``keep_out``
    (a buffer for the private copy of ``x``) may be preallocated."""
    if not channels_last:
        raise ValueError("the Numba DyT kernel is channels-last only; use backend='numpy' for (N, C, ...)")
    m = x.shape[-1]
    n = x.size // m if m else 0
    x2 = C.as_input(x, (n, m))
    a, w, b = _coefficients(alpha, weight, bias, m, x2.dtype)
    y = C.check_out(out, (n, m), x2.dtype)
    # the cache never holds a view of the caller's array: the kernel copies x2 while reading it
    keep = C.keep_buffer(x, x2, keep_out) if x2.size else None
    kept = np.empty((0, m), x2.dtype) if keep is None else keep      # 0 rows: no copy
    f32 = x2.dtype == np.float32
    if C.use_parallel(x2.size):
        (_fwd_parallel32 if f32 else _fwd_parallel)(x2, a, w, b, y, kept, C.num_chunks(n))
    else:
        (_fwd_rows32 if f32 else _fwd_rows)(x2, a, w, b, y, kept, 0, n)
    cache = {"backend": "numba", "x": x2 if keep is None else keep, "owns_x": keep is not None, "alpha": a,
             "w": w, "shape": x.shape, "out_shape": x.shape, "dtype": x.dtype}
    return C.restore(y, x.shape, x.dtype), cache


def dyt_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused DyT backward: returns ``(dx, dalpha, dweight, dbias)`` (``dalpha`` of shape ``(1,)``).
    ``cache`` must be the dict :func:`dyt_forward` returned and ``dout`` a real floating array of the
    forward output's shape (``TypeError`` / ``ValueError`` naming ``dyt_backward`` otherwise)."""
    dout = check_cache(dout, cache, "dyt_backward")
    x2 = cache["x"]
    n, m = x2.shape
    dy = C.as_upstream(dout, x2.dtype, (n, m))
    dx = C.check_out(dx_out, (n, m), x2.dtype, "dx_out")
    bwd_rows, bwd_parallel = (_bwd_rows32, _bwd_parallel32) if x2.dtype == np.float32 else (_bwd_rows, _bwd_parallel)
    if C.use_parallel(x2.size):
        k = C.num_chunks(n)
        da, dw, db = np.zeros(k), np.zeros((k, m)), np.zeros((k, m))
        bwd_parallel(dy, x2, cache["alpha"], cache["w"], dx, da, dw, db)
        da, dw, db = np.array([da.sum()]), dw.sum(axis=0), db.sum(axis=0)
    else:
        da, dw, db = np.zeros(1), np.zeros(m), np.zeros(m)
        bwd_rows(dy, x2, cache["alpha"], cache["w"], dx, da, dw, db, 0, n)
    return C.restore(dx, cache["shape"], cache["dtype"]), da, dw, db
