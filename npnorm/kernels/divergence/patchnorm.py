r"""Fused Numba kernel for PatchNorm (:mod:`npnorm.divergence.patchnorm`): im2col, the convolution,
the patch norm and the division in one pass per sample.

The NumPy reference runs two convolutions (the layer's, and a box of ones over :math:`\sum_c x^2`)
and a division, materializing the im2col matrix of the whole batch. The kernel works one sample at a
time:

* forward: copy the sample's patches into a ``(L, K)`` buffer (:math:`L` output positions,
  :math:`K = C k_h k_w`), summing their squares on the way (:math:`\|P\|^2` for free - the patch is
  already in the cache), take the dot product with every filter row, and write
  :math:`z = (a + b)/s` or :math:`a/s + b`. Saves :math:`s` per position and :math:`z^w = a/s`.
* backward: rebuild the patch buffer, form :math:`G/s` and
  :math:`\partial L/\partial q = -c\sum_f G z^w/(2s^2)`, then
  :math:`\partial L/\partial P = (G/s) W + 2\,(\partial L/\partial q)\,P` ,
  accumulate :math:`\partial L/\partial W \mathrel{+}= (G/s)^\top P`, and scatter
  :math:`\partial L/\partial P` back onto the pixels (col2im).

Samples run in parallel (``prange`` over contiguous chunks of samples, each chunk with its own weight
and bias gradient, summed at the end) when the input is large. All arithmetic is float64; the output
has the input's dtype. Same signatures as the reference plus ``out=``.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from .. import _common as C
from .._common import jit, pjit

__all__ = ["patch_norm_conv2d_forward", "patch_norm_conv2d_backward"]

_MODE_CODE = {"affine": 0, "l2": 1, "rms": 2}


@jit
def _fill_patches(x, n, kh, kw, sh, sw, ph, pw, oh, ow, cols, q):
    """Sample ``n``'s patches into ``cols`` (L, K) and their squared norms into ``q`` (L,)."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    for a in range(oh):
        for e in range(ow):
            row = a * ow + e
            acc = np.float64(0.0)
            for ch in range(c):
                for i in range(kh):
                    y = a * sh + i - ph
                    for j in range(kw):
                        z = e * sw + j - pw
                        v = np.float64(0.0)
                        if 0 <= y < h and 0 <= z < w:
                            v = np.float64(x[n, ch, y, z])
                        cols[row, (ch * kh + i) * kw + j] = v
                        acc += v * v
            q[row] = acc


@jit
def _fwd_samples(x, w2, bias, mode, c, k, kh, kw, sh, sw, ph, pw, oh, ow, out, s_out, zw_out, n0, n1):
    L, F, K = oh * ow, w2.shape[0], w2.shape[1]
    cols = np.empty((L, K))
    q = np.empty(L)
    for n in range(n0, n1):
        _fill_patches(x, n, kh, kw, sh, sw, ph, pw, oh, ow, cols, q)
        for l in range(L):
            s = np.sqrt(c * q[l] + k)
            s_out[n, l] = s
            prow = cols[l]
            for f in range(F):
                wrow = w2[f]
                acc = np.float64(0.0)
                for kk in range(K):                            # a = W_f . P  (contiguous rows)
                    acc += wrow[kk] * prow[kk]
                if mode == 0:
                    zw = (acc + bias[f]) / s
                    zw_out[n, f, l] = zw
                    out[n, f, l] = zw
                else:
                    zw = acc / s
                    zw_out[n, f, l] = zw
                    out[n, f, l] = zw + bias[f]


@pjit
def _fwd_parallel(x, w2, bias, mode, c, k, kh, kw, sh, sw, ph, pw, oh, ow, out, s_out, zw_out, nchunks):
    n = x.shape[0]
    for t in numba.prange(nchunks):
        n0 = t * n // nchunks
        n1 = (t + 1) * n // nchunks
        _fwd_samples(x, w2, bias, mode, c, k, kh, kw, sh, sw, ph, pw, oh, ow, out, s_out, zw_out, n0, n1)


@jit
def _bwd_samples(x, w2, g, s_all, zw_all, mode, c, kh, kw, sh, sw, ph, pw, oh, ow, dx, dw2, db, n0, n1):
    L, F, K = oh * ow, w2.shape[0], w2.shape[1]
    ch_, h, w = x.shape[1], x.shape[2], x.shape[3]
    cols = np.empty((L, K))
    q = np.empty(L)
    gs = np.empty((L, F))
    dcols = np.empty((L, K))
    for n in range(n0, n1):
        _fill_patches(x, n, kh, kw, sh, sw, ph, pw, oh, ow, cols, q)
        dq2 = np.empty(L)
        for l in range(L):
            s = s_all[n, l]
            t = np.float64(0.0)
            for f in range(F):
                gv = np.float64(g[n, f, l])
                gs[l, f] = gv / s
                t += gv * zw_all[n, f, l]
                if mode == 0:
                    db[f] += gv / s
                else:
                    db[f] += gv
            dq2[l] = -c * t / (s * s)                           # 2 * dL/dq
        for l in range(L):
            prow = cols[l]
            drow = dcols[l]
            for kk in range(K):
                drow[kk] = dq2[l] * prow[kk]                    # 2 dL/dq * P
            for f in range(F):
                gv = gs[l, f]
                wrow = w2[f]
                dwrow = dw2[f]
                for kk in range(K):
                    drow[kk] += gv * wrow[kk]                   # (G/s) W
                    dwrow[kk] += gv * prow[kk]                  # dW += (G/s)^T P
        for a in range(oh):
            for e in range(ow):
                row = a * ow + e
                for chn in range(ch_):
                    for i in range(kh):
                        y = a * sh + i - ph
                        if y < 0 or y >= h:
                            continue
                        for j in range(kw):
                            z = e * sw + j - pw
                            if 0 <= z < w:
                                col = (chn * kh + i) * kw + j
                                dx[n, chn, y, z] += dcols[row, col]


@pjit
def _bwd_parallel(x, w2, g, s_all, zw_all, mode, c, kh, kw, sh, sw, ph, pw, oh, ow, dx, dw2_parts, db_parts,
                  nchunks):
    n = x.shape[0]
    for t in numba.prange(nchunks):
        n0 = t * n // nchunks
        n1 = (t + 1) * n // nchunks
        _bwd_samples(x, w2, g, s_all, zw_all, mode, c, kh, kw, sh, sw, ph, pw, oh, ow, dx, dw2_parts[t],
                     db_parts[t], n0, n1)


DISPATCHERS = (_fill_patches, _fwd_samples, _fwd_parallel, _bwd_samples, _bwd_parallel)


def patch_norm_conv2d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride=1, padding=0,
                              mode: str = "affine", eps: float = 1e-6, out: np.ndarray | None = None
                              ) -> tuple[np.ndarray, dict[str, Any]]:
    """Fused twin of :func:`npnorm.divergence.patchnorm.patch_norm_conv2d_forward`."""
    from ...divergence.patchnorm import _check
    from ...divergence.prenorm import radial_coefficients
    x, weight, bias, stride, padding, eps = _check(x, weight, bias, stride, padding, mode, eps,
                                                   "patch_norm_conv2d_forward")
    n, ch, h, w = x.shape
    f, _, kh, kw = weight.shape
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (w + 2 * padding[1] - kw) // stride[1] + 1
    K, L = ch * kh * kw, oh * ow
    xc = np.array(x, dtype=np.float64, order="C")            # a copy, kept for the backward pass
    w2 = np.ascontiguousarray(np.asarray(weight, dtype=np.float64).reshape(f, K))
    b = C.as_f64(bias, (f,), 0.0)
    c, k = radial_coefficients(mode, K, eps)
    code = _MODE_CODE[mode]
    res = np.empty((n, f, L))
    s_all = np.empty((n, L))
    zw = np.empty((n, f, L))
    args = (xc, w2, b, code, c, k, kh, kw, stride[0], stride[1], padding[0], padding[1], oh, ow, res, s_all, zw)
    if n > 1 and C.use_parallel(n * f * L + x.size):
        _fwd_parallel(*args, C.num_chunks(n))
    elif n > 0:
        _fwd_samples(*args, 0, n)
    result = C.check_out(out, (n, f, oh, ow), x.dtype)
    result[...] = res.reshape(n, f, oh, ow)
    cache = {"backend": "numba", "x": xc, "w2": w2, "s": s_all, "zw": zw, "mode": mode, "c": c,
             "geometry": (kh, kw, stride[0], stride[1], padding[0], padding[1], oh, ow),
             "has_bias": bias is not None, "dtype": x.dtype, "out_shape": (n, f, oh, ow),
             "w_shape": weight.shape}
    return result, cache


def patch_norm_conv2d_backward(dout: np.ndarray, cache: dict[str, Any], dx_out: np.ndarray | None = None):
    """Fused twin of :func:`npnorm.divergence.patchnorm.patch_norm_conv2d_backward`:
    ``(dx, dweight, dbias)``."""
    from ..._checks import check_dout
    g = check_dout(dout, cache["out_shape"], "patch_norm_conv2d_backward")
    n, f, oh, ow = cache["out_shape"]
    g = np.ascontiguousarray(g, dtype=np.float64).reshape(n, f, oh * ow)
    xc, w2 = cache["x"], cache["w2"]
    code = _MODE_CODE[cache["mode"]]
    kh, kw, sh, sw, ph, pw, _, _ = cache["geometry"]
    dx = np.zeros(xc.shape)
    chunks = C.num_chunks(n) if (n > 1 and C.use_parallel(g.size + xc.size)) else 1
    dw2_parts = np.zeros((chunks,) + w2.shape)
    db_parts = np.zeros((chunks, f))
    args = (xc, w2, g, cache["s"], cache["zw"], code, cache["c"], kh, kw, sh, sw, ph, pw, oh, ow, dx)
    if chunks > 1:
        _bwd_parallel(*args, dw2_parts, db_parts, chunks)
    elif n > 0:
        _bwd_samples(*args, dw2_parts[0], db_parts[0], 0, n)
    dweight = dw2_parts.sum(axis=0).reshape(cache["w_shape"])
    dbias = db_parts.sum(axis=0) if cache["has_bias"] else None
    result = C.check_out(dx_out, xc.shape, cache["dtype"], "dx_out")
    result[...] = dx
    return result, dweight, dbias
