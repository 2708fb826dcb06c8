"""Fused Numba kernels of :mod:`npnorm.transformer.dyt` (channels-last): ``y = w tanh(a x) + b``.

The forward pass is one elementwise pass; the backward pass computes ``dx`` and accumulates
``dalpha = sum x w dy (1 - t^2)``, ``dweight = sum dy t`` and ``dbias = sum dy`` in the same pass
(``t`` is recomputed rather than stored: the kernel keeps only the input).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from .. import _common as C
from .._common import jit, pjit

__all__ = ["dyt_forward", "dyt_backward"]


@jit
def _fwd_rows(x, a, w, b, out, r0, r1):
    m = x.shape[1]
    for i in range(r0, r1):
        row, orow = x[i], out[i]
        for j in range(m):
            orow[j] = w[j] * np.tanh(a * row[j]) + b[j]


@pjit
def _fwd_parallel(x, a, w, b, out, nchunks):
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _fwd_rows(x, a, w, b, out, t * n // nchunks, (t + 1) * n // nchunks)


@jit
def _bwd_rows(dy, x, a, w, dx, da, dw, db, r0, r1):
    m = x.shape[1]
    acc = np.float64(0.0)
    for i in range(r0, r1):
        row, drow, dxrow = x[i], dy[i], dx[i]
        for j in range(m):
            xv = np.float64(row[j])
            g = np.float64(drow[j])
            t = np.tanh(a * xv)
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


DISPATCHERS = (_fwd_rows, _fwd_parallel, _bwd_rows, _bwd_parallel)


def dyt_forward(x: np.ndarray, alpha, weight: np.ndarray, bias: np.ndarray, channels_last: bool = True, *,
                out: np.ndarray | None = None):
    """Fused DyT forward (channels-last only; ``channels_last=False`` raises)."""
    if not channels_last:
        raise ValueError("the Numba DyT kernel is channels-last only; use backend='numpy' for (N, C, ...)")
    m = x.shape[-1]
    n = x.size // m if m else 0
    x2 = C.as_input(x, (n, m))
    a = float(np.asarray(alpha, dtype=np.float64).reshape(-1)[0])
    w, b = C.as_f64(weight, (m,), 1.0), C.as_f64(bias, (m,), 0.0)
    y = C.check_out(out, (n, m), x2.dtype)
    if C.use_parallel(x2.size):
        _fwd_parallel(x2, a, w, b, y, C.num_chunks(n))
    else:
        _fwd_rows(x2, a, w, b, y, 0, n)
    cache = {"backend": "numba", "x": x2.copy() if x2 is x or np.shares_memory(x2, x) else x2, "alpha": a,
             "w": w, "shape": x.shape, "dtype": x.dtype}
    return C.restore(y, x.shape, x.dtype), cache


def dyt_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused DyT backward: returns ``(dx, dalpha, dweight, dbias)`` (``dalpha`` of shape ``(1,)``)."""
    x2 = cache["x"]
    n, m = x2.shape
    dy = C.as_upstream(dout, x2.dtype, (n, m))
    dx = C.check_out(dx_out, (n, m), x2.dtype, "dx_out")
    if C.use_parallel(x2.size):
        k = C.num_chunks(n)
        da, dw, db = np.zeros(k), np.zeros((k, m)), np.zeros((k, m))
        _bwd_parallel(dy, x2, cache["alpha"], cache["w"], dx, da, dw, db)
        da, dw, db = np.array([da.sum()]), dw.sum(axis=0), db.sum(axis=0)
    else:
        da, dw, db = np.zeros(1), np.zeros(m), np.zeros(m)
        _bwd_rows(dy, x2, cache["alpha"], cache["w"], dx, da, dw, db, 0, n)
    return C.restore(dx, cache["shape"], cache["dtype"]), da, dw, db
