r"""Fused Numba twin of :mod:`npnorm.statistics.frn` (filter response normalization + TLU).

Every (sample, channel) of ``S = H * W`` contiguous elements is a row. Forward: one pass for the
mean square, one for the output. Backward: one pass per row for :math:`\sum g \hat x` and the
parameter sums, one for ``dx``; parameter gradients are accumulated per channel over the samples
serially (no race between threads). Accumulation in float64 whatever the input dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._common import as_f64, as_input, jit

__all__ = ["frn_tlu_forward", "frn_tlu_backward"]


@jit
def _forward(x, weight, bias, tau, use_tau, eps, out, rstd):  # pragma: no cover - compiled
    n, c, s = x.shape
    for i in range(n):
        for j in range(c):
            acc = np.float64(0.0)
            for k in range(s):
                v = np.float64(x[i, j, k])
                acc += v * v
            r = 1.0 / np.sqrt(acc / s + eps)
            rstd[i, j] = r
            for k in range(s):
                y = np.float64(x[i, j, k]) * r * weight[j] + bias[j]
                if use_tau and y < tau[j]:
                    y = tau[j]
                out[i, j, k] = y


@jit
def _backward(dy, x, weight, bias, tau, use_tau, rstd, dx, dweight, dbias, dtau):  # pragma: no cover
    n, c, s = x.shape
    for i in range(n):
        for j in range(c):
            r = rstd[i, j]
            sgx = np.float64(0.0)
            for k in range(s):
                xh = np.float64(x[i, j, k]) * r
                g = np.float64(dy[i, j, k])
                if use_tau and xh * weight[j] + bias[j] < tau[j]:
                    dtau[j] += g
                    continue
                dweight[j] += g * xh
                dbias[j] += g
                sgx += g * weight[j] * xh
            mean_gx = sgx / s
            for k in range(s):
                xh = np.float64(x[i, j, k]) * r
                g = np.float64(dy[i, j, k])
                if use_tau and xh * weight[j] + bias[j] < tau[j]:
                    g = 0.0
                dx[i, j, k] = r * (g * weight[j] - xh * mean_gx)


def frn_tlu_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, tau: np.ndarray | None,
                    eps: float = 1e-5, *, out: np.ndarray | None = None):
    """Fused forward of ``(N, C, H, W)`` input; same signature and results as the NumPy reference
    (plus ``out=``). The cache keeps a copy of ``x`` and the per-row ``rstd``."""
    n, c, h, w = x.shape
    xin = np.array(as_input(x, (n, c, h * w)), copy=True)
    wt, bs = as_f64(weight, (c,), 1.0), as_f64(bias, (c,), 0.0)
    ta = as_f64(tau, (c,), 0.0)
    res = np.empty((n, c, h * w), dtype=xin.dtype) if out is None else out.reshape(n, c, h * w)
    rstd = np.empty((n, c))
    _forward(xin, wt, bs, ta, tau is not None, float(eps), res, rstd)
    cache = {"x": xin, "rstd": rstd, "weight": wt, "bias": bs, "tau": ta, "use_tau": tau is not None,
             "shape": x.shape, "dtype": xin.dtype, "backend": "numba", "x_hat": None}
    return res.reshape(x.shape), cache


def frn_tlu_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused backward: returns ``(dx, dweight, dbias, dtau)`` as the NumPy reference."""
    n, c, h, w = cache["shape"]
    dy = as_input(dout, (n, c, h * w))
    dx = np.empty((n, c, h * w), dtype=cache["dtype"]) if dx_out is None else dx_out.reshape(n, c, h * w)
    dweight, dbias, dtau = np.zeros(c), np.zeros(c), np.zeros(c)
    _backward(dy, cache["x"], cache["weight"], cache["bias"], cache["tau"], cache["use_tau"], cache["rstd"],
              dx, dweight, dbias, dtau)
    return dx.reshape(cache["shape"]), dweight, dbias, (dtau if cache["use_tau"] else None)


#: The compiled functions of this module (for the warm-up and the cache checks).
DISPATCHERS = (_forward, _backward)
