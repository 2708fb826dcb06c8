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

__all__ = ["channel_affine", "parallel_copy"]


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


@pjit
def parallel_copy(src, dst):
    """``dst[:] = src`` on all threads: the benchmark's memory-bandwidth yardstick."""
    for i in numba.prange(src.shape[0]):
        dst[i] = src[i]


DISPATCHERS = (_affine_rows, _affine_parallel, parallel_copy)


def channel_affine(x3: np.ndarray, center: np.ndarray, scale: np.ndarray, shift: np.ndarray,
                   out: np.ndarray | None = None) -> np.ndarray:
    """``(x3 - center) * scale + shift`` for ``x3`` (N, C, S) and parameters broadcastable to (P, C)."""
    n, c = x3.shape[:2]
    params = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64).reshape(-1, c) for a in (center, scale, shift)))
    center, scale, shift = (np.ascontiguousarray(a) for a in params)
    y = C.check_out(out, x3.shape, x3.dtype)
    if C.use_parallel(x3.size):
        _affine_parallel(x3, center, scale, shift, y, C.num_chunks(n * c))
    else:
        _affine_rows(x3, center, scale, shift, y, 0, n * c)
    return y
