r"""A per-(sample, channel) affine map, the one elementwise kernel several layers need.

.. math:: y_{n,c,s} = (x_{n,c,s} - \text{center}_{n,c})\,\text{scale}_{n,c} + \text{shift}_{n,c}

with parameter arrays of shape ``(P, C)``, ``P`` = 1 (broadcast over the batch) or ``N``. Used for
evaluation-mode BatchNorm / InstanceNorm with running statistics (forward: center = running mean,
scale = :math:`\gamma r`, shift = :math:`\beta`; backward: :math:`dx = \gamma r\,dy`) and for AdaIN's
style gradient. One read, one write: it runs at memory speed.
"""

from __future__ import annotations

import numba
import numpy as np

from . import _common as C
from ._common import jit, pjit

__all__ = ["channel_affine", "channel_affine2", "channel_sums", "parallel_copy", "parallel_read", "stream_copy2",
           "stream_add", "stream_read2"]


@jit
def _affine_rows(x, center, scale, shift, out, r0, r1):
    """Rows ``r0 <= n C + c < r1`` of ``x`` (N, C, S)."""
    nc = x.shape[1]
    s_len = x.shape[2]
    p = scale.shape[0]
    for r in range(r0, r1):
        n, c = r // nc, r % nc
        mu, a, b = center[n % p, c], scale[n % p, c], shift[n % p, c]
        xr, orow = x[n, c], out[n, c]
        for j in range(s_len):
            orow[j] = (xr[j] - mu) * a + b


@pjit
def _affine_parallel(x, center, scale, shift, out, nchunks):
    nr = x.shape[0] * x.shape[1]
    for t in numba.prange(nchunks):
        _affine_rows(x, center, scale, shift, out, t * nr // nchunks, (t + 1) * nr // nchunks)


@jit
def _affine_keep_rows(x, center, scale, shift, out, keep, r0, r1):
    """As :func:`_affine_rows`, and copies each row of ``x`` into ``keep`` while it is in the cache
    (the private copy a backward pass reads, so that the caller may edit ``x``)."""
    nc = x.shape[1]
    s_len = x.shape[2]
    p = scale.shape[0]
    for r in range(r0, r1):
        n, c = r // nc, r % nc
        mu, a, b = center[n % p, c], scale[n % p, c], shift[n % p, c]
        xr, orow, krow = x[n, c], out[n, c], keep[n, c]
        for j in range(s_len):
            v = xr[j]
            orow[j] = (v - mu) * a + b
            krow[j] = v


@pjit
def _affine_keep_parallel(x, center, scale, shift, out, keep, nchunks):
    nr = x.shape[0] * x.shape[1]
    for t in numba.prange(nchunks):
        _affine_keep_rows(x, center, scale, shift, out, keep, t * nr // nchunks, (t + 1) * nr // nchunks)


@jit
def _sums_rows(dy, x, center, sdy, sdyx, r0, r1):
    """Per-(n, c) sums ``sum_s dy`` and ``sum_s dy (x - center)`` for rows ``r0 <= n C + c < r1``."""
    nc = x.shape[1]
    s_len = x.shape[2]
    p = center.shape[0]
    for r in range(r0, r1):
        n, c = r // nc, r % nc
        mu = center[n % p, c]
        xr, dr = x[n, c], dy[n, c]
        a = np.float64(0.0)
        b = np.float64(0.0)
        for j in range(s_len):
            a += dr[j]
            b += dr[j] * (xr[j] - mu)
        sdy[n, c] = a
        sdyx[n, c] = b


@pjit
def _sums_parallel(dy, x, center, sdy, sdyx, nchunks):
    nr = x.shape[0] * x.shape[1]
    for t in numba.prange(nchunks):
        _sums_rows(dy, x, center, sdy, sdyx, t * nr // nchunks, (t + 1) * nr // nchunks)


@jit
def _affine2_rows(dy, x, center, a, b, c0, out, r0, r1):
    """``out = dy a + (x - center) b + c0`` per (n, c), rows ``r0 <= n C + c < r1`` (parameters (1, C))."""
    nc = x.shape[1]
    s_len = x.shape[2]
    for r in range(r0, r1):
        n, c = r // nc, r % nc
        mu, ac, bc, cc = center[0, c], a[0, c], b[0, c], c0[0, c]
        xr, dr, orow = x[n, c], dy[n, c], out[n, c]
        for j in range(s_len):
            orow[j] = dr[j] * ac + (xr[j] - mu) * bc + cc


@pjit
def _affine2_parallel(dy, x, center, a, b, c0, out, nchunks):
    nr = x.shape[0] * x.shape[1]
    for t in numba.prange(nchunks):
        _affine2_rows(dy, x, center, a, b, c0, out, t * nr // nchunks, (t + 1) * nr // nchunks)


@pjit
def parallel_copy(src, dst):
    """``dst[:] = src`` on all threads: the benchmark's memory-bandwidth yardstick."""
    for i in numba.prange(src.shape[0]):
        dst[i] = src[i]


@pjit
def parallel_read(src):
    """The sum of ``src`` on all threads (reads only): the benchmark's read-bandwidth yardstick."""
    s = 0.0
    for i in numba.prange(src.shape[0]):
        s += src[i]
    return s


@pjit
def stream_copy2(src, dst1, dst2):
    """``dst1[:] = dst2[:] = src`` on all threads: one read stream and two write streams, no arithmetic
    (the memory pattern of a fused forward pass that writes its output and a private copy)."""
    for i in numba.prange(src.shape[0]):
        v = src[i]
        dst1[i] = v
        dst2[i] = v


@pjit
def stream_add(a, b, dst):
    """``dst[:] = a + b`` on all threads: two read streams and one write stream (the memory pattern of
    a backward pass that reads ``x`` and ``dy`` and writes ``dx``), one addition per element."""
    for i in numba.prange(a.shape[0]):
        dst[i] = a[i] + b[i]


@pjit
def stream_read2(a, b):
    """``sum(a) + sum(b)`` on all threads: two read streams (a backward pass's sums over ``x``, ``dy``)."""
    s = 0.0
    for i in numba.prange(a.shape[0]):
        s += a[i] + b[i]
    return s


DISPATCHERS = (_affine_rows, _affine_parallel, _affine_keep_rows, _affine_keep_parallel, _sums_rows,
               _sums_parallel, _affine2_rows, _affine2_parallel, parallel_copy, parallel_read, stream_copy2,
               stream_add, stream_read2)


def _params(c: int, *arrays: np.ndarray) -> list[np.ndarray]:
    """Per-(sample, channel) parameters as contiguous float64 arrays of one common shape (P, C)."""
    params = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64).reshape(-1, c) for a in arrays))
    return [np.ascontiguousarray(a) for a in params]


def channel_affine(x3: np.ndarray, center: np.ndarray, scale: np.ndarray, shift: np.ndarray,
                   out: np.ndarray | None = None, keep: np.ndarray | None = None) -> np.ndarray:
    """``(x3 - center) * scale + shift`` for ``x3`` (N, C, S) and parameters broadcastable to (P, C).

    ``keep`` (optional, shape and dtype of ``x3``): also copy ``x3`` into it in the same pass - one
    more write, no more reads - for a cache that must not alias the caller's input."""
    n, c = x3.shape[:2]
    center, scale, shift = _params(c, center, scale, shift)
    y = C.check_out(out, x3.shape, x3.dtype)
    if keep is not None:
        if C.use_parallel(x3.size):
            _affine_keep_parallel(x3, center, scale, shift, y, keep, C.num_chunks(n * c))
        else:
            _affine_keep_rows(x3, center, scale, shift, y, keep, 0, n * c)
        return y
    if C.use_parallel(x3.size):
        _affine_parallel(x3, center, scale, shift, y, C.num_chunks(n * c))
    else:
        _affine_rows(x3, center, scale, shift, y, 0, n * c)
    return y


def channel_sums(dy3: np.ndarray, x3: np.ndarray, center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-(n, c) ``sum_s dy`` and ``sum_s dy (x - center)`` (float64, shape (N, C)) of (N, C, S) arrays."""
    n, c = x3.shape[:2]
    (center,) = _params(c, center)
    sdy, sdyx = np.empty((n, c)), np.empty((n, c))
    if C.use_parallel(x3.size):
        _sums_parallel(dy3, x3, center, sdy, sdyx, C.num_chunks(n * c))
    else:
        _sums_rows(dy3, x3, center, sdy, sdyx, 0, n * c)
    return sdy, sdyx


def channel_affine2(dy3: np.ndarray, x3: np.ndarray, center: np.ndarray, a: np.ndarray, b: np.ndarray,
                    c0: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``dy * a + (x - center) * b + c0`` with per-channel ``(C,)`` parameters: the shape of every
    batch-statistics backward pass ``dx``."""
    n, c = x3.shape[:2]
    center, a, b, c0 = (np.ascontiguousarray(np.asarray(v, dtype=np.float64).reshape(1, c)) for v in (center, a, b, c0))
    y = C.check_out(out, x3.shape, x3.dtype, "dx_out")
    if C.use_parallel(x3.size):
        _affine2_parallel(dy3, x3, center, a, b, c0, y, C.num_chunks(n * c))
    else:
        _affine2_rows(dy3, x3, center, a, b, c0, y, 0, n * c)
    return y
