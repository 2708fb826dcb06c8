"""Fused Numba kernels of :mod:`npnorm.transformer.l2norm`: L2 normalization and ScaleNorm over the
last axis, ``y = g x / max(||x||, eps)`` (``g = 1`` for L2), forward and backward.

Per row: forward = one pass for the sum of squares, one pass to scale; backward = one pass for
``<y, u>`` (with ``u = g dy``) and the sum ``<y, dy>`` for dg, one pass for dx.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from .. import _common as C
from .._common import jit, pjit

__all__ = ["l2_normalize_forward", "l2_normalize_backward", "scale_norm_forward", "scale_norm_backward"]


@jit
def _fwd_rows(x, g, eps, out, denom, r0, r1):
    m = x.shape[1]
    for i in range(r0, r1):
        row = x[i]
        ss = np.float64(0.0)
        for j in range(m):
            v = np.float64(row[j])
            ss += v * v
        d = max(np.sqrt(ss), eps)
        denom[i] = d
        s = g / d
        orow = out[i]
        for j in range(m):
            orow[j] = row[j] * s


@pjit
def _fwd_parallel(x, g, eps, out, denom, nchunks):
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _fwd_rows(x, g, eps, out, denom, t * n // nchunks, (t + 1) * n // nchunks)


@jit
def _bwd_rows(dy, x, g, eps, denom, dx, dg, r0, r1):
    """dx = (u - y <y, u>) / d with u = g dy (no radial term where the floor is active); adds
    sum(dy * y) of the rows into dg[0]."""
    m = x.shape[1]
    acc = np.float64(0.0)
    for i in range(r0, r1):
        row, drow = x[i], dy[i]
        d = denom[i]
        inv = 1.0 / d
        s = np.float64(0.0)
        for j in range(m):
            s += np.float64(drow[j]) * row[j]
        s *= inv                                # <y, dy>
        acc += s
        radial = 0.0 if d <= eps else g * s     # <y, u>
        dxrow = dx[i]
        for j in range(m):
            dxrow[j] = (g * drow[j] - row[j] * inv * radial) * inv
    dg[0] += acc


@pjit
def _bwd_parallel(dy, x, g, eps, denom, dx, dg):
    n = x.shape[0]
    nchunks = dg.shape[0]
    for t in numba.prange(nchunks):
        _bwd_rows(dy, x, g, eps, denom, dx, dg[t:t + 1], t * n // nchunks, (t + 1) * n // nchunks)


DISPATCHERS = (_fwd_rows, _fwd_parallel, _bwd_rows, _bwd_parallel)


def _forward(x: np.ndarray, g: float, eps: float, out=None):
    m = x.shape[-1]
    n = x.size // m if m else 0
    x2 = C.as_input(x, (n, m))
    y = C.check_out(out, (n, m), x2.dtype)
    denom = np.empty(n)
    if C.use_parallel(x2.size):
        _fwd_parallel(x2, float(g), float(eps), y, denom, C.num_chunks(n))
    else:
        _fwd_rows(x2, float(g), float(eps), y, denom, 0, n)
    keep = x2.copy() if np.shares_memory(x2, x) else x2          # never a view of the caller's array
    cache = {"backend": "numba", "x": keep, "denom": denom, "g": float(g), "eps": float(eps), "shape": x.shape,
             "dtype": x.dtype}
    return C.restore(y, x.shape, x.dtype), cache


def _backward(dout: np.ndarray, cache: dict[str, Any], dx_out=None):
    x2 = cache["x"]
    n, m = x2.shape
    dy = C.as_upstream(dout, x2.dtype, (n, m))
    dx = C.check_out(dx_out, (n, m), x2.dtype, "dx_out")
    if C.use_parallel(x2.size):
        dg = np.zeros(C.num_chunks(n))
        _bwd_parallel(dy, x2, cache["g"], cache["eps"], cache["denom"], dx, dg)
    else:
        dg = np.zeros(1)
        _bwd_rows(dy, x2, cache["g"], cache["eps"], cache["denom"], dx, dg, 0, n)
    return C.restore(dx, cache["shape"], cache["dtype"]), float(dg.sum())


def l2_normalize_forward(x: np.ndarray, dim: int = -1, eps: float = 1e-12, *, out: np.ndarray | None = None):
    """Fused ``x / max(||x||, eps)`` along ``dim`` (other axes are moved last and back)."""
    axis = int(dim) % x.ndim
    if axis != x.ndim - 1:
        y, cache = _forward(np.moveaxis(x, axis, -1), 1.0, eps)
        cache["axis"] = axis
        return np.moveaxis(y, -1, axis), cache
    y, cache = _forward(x, 1.0, eps, out)
    cache["axis"] = x.ndim - 1
    return y, cache


def l2_normalize_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused backward of :func:`l2_normalize_forward`: returns ``dx``."""
    axis, nd = cache["axis"], len(cache["shape"])
    if axis != nd - 1:
        dx, _ = _backward(np.moveaxis(np.asarray(dout), axis, -1), cache)
        return np.moveaxis(dx, -1, axis)
    return _backward(dout, cache, dx_out)[0]


def scale_norm_forward(x: np.ndarray, scale, eps: float = 1e-5, *, out: np.ndarray | None = None):
    """Fused ScaleNorm forward over the last axis: ``scale * x / max(||x||, eps)``."""
    return _forward(x, float(np.asarray(scale, dtype=np.float64)), eps, out)


def scale_norm_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused ScaleNorm backward: returns ``(dx, dscale)``."""
    return _backward(dout, cache, dx_out)
