"""Fused Numba kernels of :mod:`npnorm.transformer.l2norm`: L2 normalization and ScaleNorm over the
last axis, ``y = g x / max(||x||, eps)`` (``g = 1`` for L2), forward and backward.

A row (1024 float32 = 4 KiB in the benchmark) stays in the L1 cache while the kernel works on it, so
each row is read from memory once per pass of the layer:

* forward: one pass for the sum of squares, one pass that writes ``y`` and the private copy of ``x``
  the backward pass reads (``keep_out=``: the layers pass the copy of their previous cache).
  Memory traffic: read ``x``, write ``y`` and the copy - 3 ``x``-sized streams (2 when ``x`` was
  converted to a private array anyway).
* backward: one pass for ``<x, dy>`` (it gives both ``<y, u>``, ``u = g dy``, and this row's share of
  ``dg = sum <dy, y>``), one pass for ``dx``. Traffic: read the copy and ``dy``, write ``dx``: 3
  streams.

Precision: the sums are float64 (a float32 sum of squares over a long row loses digits, and the
conversion costs no memory traffic); the elementwise passes multiply in the data's dtype by per-row
coefficients rounded once to it (``x.dtype.type(...)``), so float32 rows are scaled with float32
vector instructions, twice as many lanes as float64 and no conversions. The rounding of a
coefficient changes the result by at most one float32 ulp (relative): the same order as rounding
the float64 result to float32.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from ..._checks import check_cache
from .. import _common as C
from .._common import jit, pjit

__all__ = ["l2_normalize_forward", "l2_normalize_backward", "scale_norm_forward", "scale_norm_backward"]


@jit
def _fwd_rows(x, g, eps, out, denom, keep, r0, r1):
    """Rows ``r0 .. r1-1``: ``denom = max(||x||, eps)``, ``out = g x / denom``; with a ``keep`` of
    ``x``'s shape (not 0 rows), also copy each row into it."""
    m = x.shape[1]
    copy = keep.shape[0] == x.shape[0]
    for i in range(r0, r1):
        row = x[i]
        ss = np.float64(0.0)
        for j in range(m):                                   # pass 1: sum of squares (float64)
            v = np.float64(row[j])
            ss += v * v
        d = max(np.sqrt(ss), eps)
        denom[i] = d
        s = x.dtype.type(g / d)                              # the row's scale in x's dtype
        orow = out[i]
        if copy:                                             # pass 2: scale (and keep the row)
            krow = keep[i]
            for j in range(m):
                v = row[j]
                orow[j] = v * s
                krow[j] = v
        else:
            for j in range(m):
                orow[j] = row[j] * s


@pjit
def _fwd_parallel(x, g, eps, out, denom, keep, nchunks):
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _fwd_rows(x, g, eps, out, denom, keep, t * n // nchunks, (t + 1) * n // nchunks)


@jit
def _bwd_rows(dy, x, g, eps, denom, dx, dg, r0, r1):
    """``dx = (u - y <y, u>) / d`` with ``u = g dy`` (no radial term where the floor is active), as
    ``dx = a dy + b x`` with two per-row coefficients; adds ``sum(dy * y)`` of the rows into dg[0]."""
    m = x.shape[1]
    acc = np.float64(0.0)
    for i in range(r0, r1):
        row, drow = x[i], dy[i]
        d = denom[i]
        inv = 1.0 / d
        s = np.float64(0.0)
        for j in range(m):                                   # pass 1: <x, dy> (float64)
            s += np.float64(drow[j]) * row[j]
        s *= inv                                             # <y, dy>
        acc += s
        radial = 0.0 if d <= eps else g * s                  # <y, u>
        a = x.dtype.type(g * inv)
        b = x.dtype.type(-radial * inv * inv)
        dxrow = dx[i]
        for j in range(m):                                   # pass 2: dx, in x's dtype
            dxrow[j] = a * drow[j] + b * row[j]
    dg[0] += acc


@pjit
def _bwd_parallel(dy, x, g, eps, denom, dx, dg):
    n = x.shape[0]
    nchunks = dg.shape[0]
    for t in numba.prange(nchunks):
        _bwd_rows(dy, x, g, eps, denom, dx, dg[t:t + 1], t * n // nchunks, (t + 1) * n // nchunks)


DISPATCHERS = (_fwd_rows, _fwd_parallel, _bwd_rows, _bwd_parallel)


def _forward(x: np.ndarray, g: float, eps: float, out=None, keep_out=None):
    m = x.shape[-1]
    n = x.size // m if m else 0
    x2 = C.as_input(x, (n, m))
    y = C.check_out(out, (n, m), x2.dtype)
    denom = np.empty(n)
    # the cache never holds a view of the caller's array: the kernel copies x2 while scaling it
    keep = C.keep_buffer(x, x2, keep_out) if x2.size else None
    kept = np.empty((0, m), x2.dtype) if keep is None else keep      # 0 rows: no copy
    if C.use_parallel(x2.size):
        _fwd_parallel(x2, float(g), float(eps), y, denom, kept, C.num_chunks(n))
    else:
        _fwd_rows(x2, float(g), float(eps), y, denom, kept, 0, n)
    cache = {"backend": "numba", "x": x2 if keep is None else keep, "owns_x": keep is not None, "denom": denom,
             "g": float(g), "eps": float(eps), "shape": x.shape, "out_shape": x.shape,
             "dtype": x.dtype}
    return C.restore(y, x.shape, x.dtype), cache


def _backward(dout: np.ndarray, cache: dict[str, Any], dx_out=None):
    """``dout`` already checked by the public function (:func:`check_cache`)."""
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


def l2_normalize_forward(x: np.ndarray, dim: int = -1, eps: float = 1e-12, *, out: np.ndarray | None = None,
                         keep_out: np.ndarray | None = None):
    """Fused ``x / max(||x||, eps)`` along ``dim`` (other axes are moved last and back); ``out`` and
    ``keep_out`` (a buffer for the private copy of ``x``) may be preallocated. ``out`` only when
    ``dim`` is the last axis: the kernel writes rows along the normalized axis, which are not
    contiguous in an ``out`` of ``x``'s layout otherwise (a ``ValueError``, not a silent copy)."""
    axis = int(dim) % x.ndim
    if axis != x.ndim - 1:
        if out is not None:
            raise ValueError(f"l2_normalize_forward: out= needs dim to be the last axis "
                             f"({x.ndim - 1} or -1), got dim={dim}")
        y, cache = _forward(np.moveaxis(x, axis, -1), 1.0, eps, None, keep_out)
        cache["axis"] = axis
        cache["out_shape"] = x.shape
        return np.moveaxis(y, -1, axis), cache
    y, cache = _forward(x, 1.0, eps, out, keep_out)
    cache["axis"] = x.ndim - 1
    return y, cache


def l2_normalize_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused backward of :func:`l2_normalize_forward`: returns ``dx`` (``dx_out`` only when the
    normalized axis was the last one, as ``out=`` of the forward pass)."""
    dout = check_cache(dout, cache, "l2_normalize_backward")
    axis, nd = cache["axis"], len(cache["shape"])
    if axis != nd - 1:
        if dx_out is not None:
            raise ValueError(f"l2_normalize_backward: dx_out= needs the normalized axis to be the "
                             f"last one, got axis {axis} of {nd}")
        dx, _ = _backward(np.moveaxis(dout, axis, -1), cache)
        return np.moveaxis(dx, -1, axis)
    return _backward(dout, cache, dx_out)[0]


def scale_norm_forward(x: np.ndarray, scale, eps: float = 1e-5, *, out: np.ndarray | None = None,
                       keep_out: np.ndarray | None = None):
    """Fused ScaleNorm forward over the last axis: ``scale * x / max(||x||, eps)``."""
    return _forward(x, float(np.asarray(scale, dtype=np.float64)), eps, out, keep_out)


def scale_norm_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused ScaleNorm backward: returns ``(dx, dscale)``."""
    dout = check_cache(dout, cache, "scale_norm_backward")
    return _backward(dout, cache, dx_out)
