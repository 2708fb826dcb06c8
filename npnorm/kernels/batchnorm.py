r"""Fused Numba kernels for BatchNorm: training mode (batch statistics) and evaluation mode.

The input is viewed as ``(N, C, S)`` (``S`` = 1 for ``(N, C)``, ``L`` or ``H W`` otherwise). The
statistics of channel ``c`` run over ``N`` blocks of ``S`` contiguous elements. Each block's mean and
sum of squared deviations are taken in two passes over the (cache-resident) block, and the blocks
are merged with Chan et al.'s pairwise update

.. math::
   \delta = \mu_b - \mu, \quad
   \mu \leftarrow \mu + \delta\,\frac{n_b}{n + n_b}, \quad
   M_2 \leftarrow M_2 + M_{2,b} + \delta^2\,\frac{n\,n_b}{n + n_b}, \quad n \leftarrow n + n_b ,

which is exact and numerically sound (no :math:`E[x^2]-E[x]^2`), so ``x`` is read from memory once
for the statistics. Channels are independent: the parallel driver splits them across threads.

Evaluation mode is an affine map with frozen statistics: the :mod:`~npnorm.kernels.affine` kernel.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from . import _common as C
from ._common import jit, pjit
from .affine import channel_affine

__all__ = ["batch_norm_forward", "batch_norm_backward", "batch_norm_eval_forward", "batch_norm_eval_backward"]


@jit
def _bn_fwd_channels(x, w, b, eps, out, mean, var, c0, c1):
    """Training-mode forward of channels ``c0 <= c < c1`` of ``x`` (N, C, S); saves mean and biased var."""
    n_batch, s_len = x.shape[0], x.shape[2]
    for c in range(c0, c1):
        cnt = np.float64(0.0)
        mu = np.float64(0.0)
        m2 = np.float64(0.0)
        for n in range(n_batch):                 # statistics: two passes per block, Chan merge
            xr = x[n, c]
            s = np.float64(0.0)
            for j in range(s_len):
                s += xr[j]
            mu_b = s / s_len
            ss = np.float64(0.0)
            for j in range(s_len):
                d = xr[j] - mu_b
                ss += d * d
            tot = cnt + s_len
            delta = mu_b - mu
            mu += delta * (s_len / tot)
            m2 += ss + delta * delta * (cnt * s_len / tot)
            cnt = tot
        v = m2 / cnt
        a = w[c] / np.sqrt(v + eps)
        bc = b[c]
        for n in range(n_batch):                 # normalize + affine
            xr, orow = x[n, c], out[n, c]
            for j in range(s_len):
                orow[j] = (xr[j] - mu) * a + bc
        mean[c] = mu
        var[c] = v


@pjit
def _bn_fwd_parallel(x, w, b, eps, out, mean, var, nchunks):
    nc = x.shape[1]
    for t in numba.prange(nchunks):
        _bn_fwd_channels(x, w, b, eps, out, mean, var, t * nc // nchunks, (t + 1) * nc // nchunks)


@jit
def _bn_bwd_channels(dy, x, w, mean, rstd, dx, dw, db, c0, c1):
    """Training-mode backward of channels ``c0 <= c < c1``: ``dx = r (g - mean(g) - x_hat mean(g x_hat))``."""
    n_batch, s_len = x.shape[0], x.shape[2]
    m = n_batch * s_len
    for c in range(c0, c1):
        mu, rs = mean[c], rstd[c]
        sdy = np.float64(0.0)
        sdyx = np.float64(0.0)
        for n in range(n_batch):
            xr, dr = x[n, c], dy[n, c]
            for j in range(s_len):
                sdy += dr[j]
                sdyx += dr[j] * (xr[j] - mu)
        db[c] = sdy
        dw[c] = sdyx * rs                        # sum dy * x_hat
        wc = w[c]
        g_mean = wc * sdy / m
        gx_mean = wc * sdyx * rs / m
        for n in range(n_batch):
            xr, dr, dxr = x[n, c], dy[n, c], dx[n, c]
            for j in range(s_len):
                dxr[j] = rs * (wc * dr[j] - g_mean - (xr[j] - mu) * rs * gx_mean)


@pjit
def _bn_bwd_parallel(dy, x, w, mean, rstd, dx, dw, db, nchunks):
    nc = x.shape[1]
    for t in numba.prange(nchunks):
        _bn_bwd_channels(dy, x, w, mean, rstd, dx, dw, db, t * nc // nchunks, (t + 1) * nc // nchunks)


DISPATCHERS = (_bn_fwd_channels, _bn_fwd_parallel, _bn_bwd_channels, _bn_bwd_parallel)


def batch_norm_forward(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float = 1e-5,
                       *, out: np.ndarray | None = None):
    """Fused training-mode BatchNorm of ``x`` (N, C, *). The cache holds the batch ``mean`` and biased
    ``batch_var`` (C,), as the reference's does (for the running statistics)."""
    n, c = x.shape[:2]
    x3 = C.as_input(x, (n, c, -1))
    w, b = C.as_f64(weight, (c,), 1.0), C.as_f64(bias, (c,), 0.0)
    y = C.check_out(out, x3.shape, x3.dtype)
    mean, var = np.empty(c), np.empty(c)
    if C.use_parallel(x3.size):
        _bn_fwd_parallel(x3, w, b, float(eps), y, mean, var, C.num_chunks(c))
    else:
        _bn_fwd_channels(x3, w, b, float(eps), y, mean, var, 0, c)
    cache = {"backend": "numba", "x": x3, "w": w, "mean": mean, "batch_var": var,
             "rstd": 1.0 / np.sqrt(var + eps), "shape": x.shape,
             "has_weight": weight is not None, "has_bias": bias is not None}
    return y.reshape(x.shape), cache


def batch_norm_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused training-mode BatchNorm backward: returns ``(dx, dweight, dbias)``."""
    x3, w = cache["x"], cache["w"]
    c = x3.shape[1]
    dy3 = C.as_upstream(dout, x3.dtype, x3.shape)
    dx = C.check_out(dx_out, x3.shape, x3.dtype, "dx_out")
    dw, db = np.empty(c), np.empty(c)
    if C.use_parallel(x3.size):
        _bn_bwd_parallel(dy3, x3, w, cache["mean"], cache["rstd"], dx, dw, db, C.num_chunks(c))
    else:
        _bn_bwd_channels(dy3, x3, w, cache["mean"], cache["rstd"], dx, dw, db, 0, c)
    return (dx.reshape(cache["shape"]), dw if cache["has_weight"] else None,
            db if cache["has_bias"] else None)


def batch_norm_eval_forward(x: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray,
                            weight: np.ndarray | None, bias: np.ndarray | None, eps: float = 1e-5,
                            *, out: np.ndarray | None = None):
    """Evaluation-mode BatchNorm (an affine map with the running statistics), on the affine kernel."""
    n, c = x.shape[:2]
    x3 = C.as_input(x, (n, c, -1))
    rstd = 1.0 / np.sqrt(np.asarray(running_var, dtype=np.float64) + eps)
    w, b = C.as_f64(weight, (c,), 1.0), C.as_f64(bias, (c,), 0.0)
    rm = np.asarray(running_mean, dtype=np.float64)
    y = channel_affine(x3, rm, w * rstd, b, out=out)
    cache = {"backend": "numba", "x": x3, "w": w, "rm": rm, "rstd": rstd, "shape": x.shape,
             "has_weight": weight is not None, "has_bias": bias is not None}
    return y.reshape(x.shape), cache


def batch_norm_eval_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Backward of evaluation-mode BatchNorm: ``dx = gamma r dy``; returns ``(dx, dweight, dbias)``.

    The parameter gradients need :math:`\\sum dy` and :math:`\\sum dy\\,\\hat x` per channel; they are
    computed with NumPy in float64 (evaluation-mode backward is rare: fine-tuning with frozen statistics).
    """
    x3, w, rstd = cache["x"], cache["w"], cache["rstd"]
    dy3 = C.as_upstream(dout, x3.dtype, x3.shape)
    c = x3.shape[1]
    dx = channel_affine(dy3, np.zeros(c), w * rstd, np.zeros(c))
    dweight = dbias = None
    if cache["has_bias"]:
        dbias = dy3.sum(axis=(0, 2), dtype=np.float64)
    if cache["has_weight"]:
        x_hat = (x3 - cache["rm"].reshape(1, c, 1)) * rstd.reshape(1, c, 1)
        dweight = np.einsum("ncs,ncs->c", dy3.astype(np.float64), x_hat)
    return dx.reshape(cache["shape"]), dweight, dbias
