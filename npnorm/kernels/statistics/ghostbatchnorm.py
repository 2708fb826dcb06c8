"""Ghost BatchNorm on the fused BatchNorm kernels: each virtual batch (contiguous samples) is one call
of :func:`npnorm.kernels.statistics.batchnorm.batch_norm_forward` / ``batch_norm_backward``, as the
NumPy reference :mod:`npnorm.statistics.ghostbatchnorm` calls the NumPy BatchNorm."""

from __future__ import annotations

from typing import Any

import numpy as np

from .batchnorm import batch_norm_backward, batch_norm_forward

__all__ = ["ghost_batch_norm_forward", "ghost_batch_norm_backward"]


def _split(n: int, virtual_batch_size: int) -> list[tuple[int, int]]:
    k = max(1, -(-n // virtual_batch_size))
    bounds, start = [], 0
    for i in range(k):
        size = n // k + (i < n % k)
        bounds.append((start, start + size))
        start += size
    return bounds


def ghost_batch_norm_forward(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
                             virtual_batch_size: int, eps: float = 1e-5):
    """Same signature and results as the NumPy reference; each part's cache also records ``m``."""
    out = np.empty(x.shape, dtype=x.dtype)
    per_sample = x.size // max(1, x.shape[0] * x.shape[1])
    parts = []
    for lo, hi in _split(x.shape[0], virtual_batch_size):
        out[lo:hi], cache = batch_norm_forward(np.array(x[lo:hi], copy=True), weight, bias, eps)  # own copy, no view of x
        cache["m"] = (hi - lo) * per_sample
        parts.append(((lo, hi), cache))
    return out, {"parts": parts, "shape": x.shape, "dtype": x.dtype, "backend": "numba"}


def ghost_batch_norm_backward(dout: np.ndarray, cache: dict[str, Any]):
    """BatchNorm's fused backward in each virtual batch. Returns ``(dx, dweight, dbias)``."""
    dx = np.empty(cache["shape"], dtype=cache["dtype"])
    dweight = dbias = None
    for (lo, hi), part in cache["parts"]:
        dx[lo:hi], dw, db = batch_norm_backward(np.ascontiguousarray(dout[lo:hi]), part)
        dweight = dw if dweight is None or dw is None else dweight + dw
        dbias = db if dbias is None or db is None else dbias + db
    return dx, dweight, dbias
