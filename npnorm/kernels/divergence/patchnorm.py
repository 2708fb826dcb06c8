r"""Fused Numba kernel for PatchNorm (:mod:`npnorm.divergence.patchnorm`): the convolution, the patch
norms and the division in one pass per sample, in the input's precision.

The NumPy reference runs two convolutions (the layer's, and a box of ones over :math:`\sum_c x^2`)
and a division, materializing the im2col matrix of the whole batch, in float64. The kernel works one
sample at a time (samples in parallel, ``prange`` over contiguous chunks of samples, each chunk
with its own weight and bias gradient, summed at the end), a tile of output rows at a time so that
the tile's accumulators stay in the L1 cache:

* **stride 1** (the common case): no patch matrix at all. The sample is copied once into
  zero-bordered planes (the padding), and :math:`\sum_c x^2` is summed on the way. On a padded
  plane flattened row by row (row length :math:`W_p`), tap :math:`(i, j)` of output position
  :math:`aW_p + e` is the pixel :math:`aW_p + e + iW_p + j`: every (channel, tap) contributes one
  contiguous multiply-add over the whole tile (the :math:`W_p - W_{out}` extra columns per row are
  computed and dropped), three taps and four filters per pass over the row. The squared patch norms
  :math:`\|P\|^2` are the same shifted sums over the plane of :math:`\sum_c x^2`.
* **other strides**: the tile's patches are copied into a ``(K, T)`` buffer
  (:math:`K = C k_h k_w`, :math:`T` positions) and multiplied the same way.
* then :math:`s = \sqrt{c\|P\|^2 + k}` and :math:`z = (a + b)/s` (affine) or :math:`a/s + b`
  (l2, rms); :math:`s` and :math:`z^w = a/s` are kept for the backward pass.
* backward: per tile, :math:`G/s` and :math:`2\,\partial L/\partial q = -c\sum_f G z^w/s^2`;
  one pass over each (channel, tap) row accumulates both :math:`\partial L/\partial W` (dot products
  with the shifted plane) and :math:`W^\top (G/s)` shifted back onto the padded input gradient
  (col2im without a patch matrix); the patch-norm term is
  :math:`2x\odot\mathrm{box}^\top(\partial L/\partial q)`, added when the padding is cropped.

**Precision.** Float32 input is computed in float32: data, products, accumulators of the
convolution and of the weight gradient over one tile - the precision of PyTorch's float32
convolution. Kept in float64, because they cost nothing measurable (one value per position, not
per product) and they are where float32 would lose digits: the squared norms :math:`\|P\|^2` (a
sum of :math:`K` squares), :math:`s`, :math:`\partial L/\partial q` (a sum over the output
channels of products that can cancel), the bias gradient, and the weight gradient's sum over tiles
and samples (thousands of float32 partial sums). Float64 input is float64 throughout (agreement with
the reference to :math:`10^{-12}`, tested); float32 agrees with the float64 reference to a few
float32 roundings (tested at :math:`10^{-5}` relative). Float16 input is computed as float32.
Same signatures as the reference plus ``out=`` / ``dx_out=``.
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
def _fill_tile(x, n, a0, a1, kh, kw, sh, sw, ph, pw, ow, cols, q):
    """Output rows ``a0:a1`` of sample ``n``: the patch matrix ``cols[:, :T]`` (one row per kernel tap,
    one column per output position, ``T = (a1 - a0) * ow``) and, when ``q`` has room, the squared
    patch norms ``q[:T]`` (float64)."""
    ch_, h, w = x.shape[1], x.shape[2], x.shape[3]
    T = (a1 - a0) * ow
    want_q = q.shape[0] >= T
    if want_q:
        for l in range(T):
            q[l] = 0.0
    for chn in range(ch_):
        for i in range(kh):
            for j in range(kw):
                row = cols[(chn * kh + i) * kw + j]
                # output columns whose input column z = e*sw + j - pw lies inside [0, w)
                e0 = min(ow, max(0, (pw - j + sw - 1) // sw))
                e1 = max(e0, min(ow, (w - 1 + pw - j) // sw + 1))
                for a in range(a0, a1):
                    y = a * sh + i - ph
                    base = (a - a0) * ow
                    if y < 0 or y >= h:
                        for e in range(ow):
                            row[base + e] = 0.0
                        continue
                    xr = x[n, chn, y]
                    for e in range(e0):
                        row[base + e] = 0.0
                    for e in range(e0, e1):
                        row[base + e] = xr[e * sw + j - pw]
                    for e in range(e1, ow):
                        row[base + e] = 0.0
                    if want_q:
                        for e in range(e0, e1):
                            vd = np.float64(row[base + e])
                            q[base + e] += vd * vd


@jit
def _fwd_rows(x, w2, bias, mode, c, k, kh, kw, sh, sw, ph, pw, oh, ow, rt, out, s_out, zw_out, n0, n1):
    """Samples ``n0:n1``, ``rt`` output rows at a time: patches, ``a = W P`` (float32 or float64 as
    the input), ``s`` and the division."""
    F, K = w2.shape
    T = rt * ow
    cols = np.empty((K, T), dtype=x.dtype)
    acc = np.empty((F, T), dtype=x.dtype)
    q = np.empty(T)
    for n in range(n0, n1):
        for a0 in range(0, oh, rt):
            a1 = min(oh, a0 + rt)
            tl = (a1 - a0) * ow
            off = a0 * ow
            _fill_tile(x, n, a0, a1, kh, kw, sh, sw, ph, pw, ow, cols, q)
            for f in range(F):
                ar = acc[f]
                for l in range(tl):
                    ar[l] = 0.0
            for kk in range(K):                               # a = W P: one axpy per (tap, filter)
                crow = cols[kk]
                for f in range(F):
                    wv = w2[f, kk]
                    ar = acc[f]
                    for l in range(tl):
                        ar[l] += wv * crow[l]
            sn = s_out[n]
            for l in range(tl):
                sn[off + l] = np.sqrt(c * q[l] + k)
            for f in range(F):
                ar, orow, zrow = acc[f], out[n, f], zw_out[n, f]
                b = bias[f]
                for l in range(tl):
                    sv = sn[off + l]
                    if mode == 0:
                        zv = (ar[l] + b) / sv
                        zrow[off + l] = zv
                        orow[off + l] = zv
                    else:
                        zv = ar[l] / sv
                        zrow[off + l] = zv
                        orow[off + l] = zv + b


@pjit
def _fwd_parallel(x, w2, bias, mode, c, k, kh, kw, sh, sw, ph, pw, oh, ow, rt, out, s_out, zw_out, nchunks):
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _fwd_rows(x, w2, bias, mode, c, k, kh, kw, sh, sw, ph, pw, oh, ow, rt, out, s_out, zw_out,
                  t * n // nchunks, (t + 1) * n // nchunks)


@jit
def _bwd_rows(x, w2, g, s_all, zw_all, mode, c, kh, kw, sh, sw, ph, pw, oh, ow, rt, dx, dw2, db, n0, n1):
    """Samples ``n0:n1``, ``rt`` output rows at a time: rebuild the patches, ``G/s`` and
    ``2 dL/dq``, ``dW += (G/s) P^T``, ``dP = W^T (G/s) + 2 (dL/dq) P``, scatter ``dP`` onto ``dx``."""
    F, K = w2.shape
    ch_, h, w = x.shape[1], x.shape[2], x.shape[3]
    T = rt * ow
    cols = np.empty((K, T), dtype=x.dtype)
    dcols = np.empty((K, T), dtype=x.dtype)
    gs = np.empty((F, T), dtype=x.dtype)
    dq = np.empty(T)
    noq = np.empty(0)
    for n in range(n0, n1):
        for chn in range(ch_):
            for y in range(h):
                for z in range(w):
                    dx[n, chn, y, z] = 0.0
        sn = s_all[n]
        for a0 in range(0, oh, rt):
            a1 = min(oh, a0 + rt)
            tl = (a1 - a0) * ow
            off = a0 * ow
            _fill_tile(x, n, a0, a1, kh, kw, sh, sw, ph, pw, ow, cols, noq)
            for l in range(tl):
                dq[l] = 0.0
            for f in range(F):
                gr, zr, gsr = g[n, f], zw_all[n, f], gs[f]
                accb = np.float64(0.0)
                for l in range(tl):
                    gv = np.float64(gr[off + l])
                    gsv = gv / sn[off + l]
                    gsr[l] = gsv
                    dq[l] += gv * zr[off + l]
                    accb += gsv if mode == 0 else gv
                db[f] += accb
            for l in range(tl):
                sv = sn[off + l]
                dq[l] = -c * dq[l] / (sv * sv)                # 2 dL/dq
            for f in range(F):                                # dW += (G/s) P^T: one dot per (filter, tap)
                gsr = gs[f]
                dwr = dw2[f]
                for kk in range(K):
                    crow = cols[kk]
                    acc = 0.0
                    for l in range(tl):
                        acc += gsr[l] * crow[l]
                    dwr[kk] += acc
            for kk in range(K):                               # dP = 2 (dL/dq) P + W^T (G/s)
                crow, drow = cols[kk], dcols[kk]
                for l in range(tl):
                    drow[l] = dq[l] * crow[l]
                for f in range(F):
                    wv = w2[f, kk]
                    gsr = gs[f]
                    for l in range(tl):
                        drow[l] += wv * gsr[l]
            for chn in range(ch_):                            # col2im
                for i in range(kh):
                    for j in range(kw):
                        drow = dcols[(chn * kh + i) * kw + j]
                        e0 = min(ow, max(0, (pw - j + sw - 1) // sw))
                        e1 = max(e0, min(ow, (w - 1 + pw - j) // sw + 1))
                        for a in range(a0, a1):
                            y = a * sh + i - ph
                            if y < 0 or y >= h:
                                continue
                            dxr = dx[n, chn, y]
                            base = (a - a0) * ow
                            for e in range(e0, e1):
                                dxr[e * sw + j - pw] += drow[base + e]


@pjit
def _bwd_parallel(x, w2, g, s_all, zw_all, mode, c, kh, kw, sh, sw, ph, pw, oh, ow, rt, dx, dw2_parts, db_parts,
                  nchunks):
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _bwd_rows(x, w2, g, s_all, zw_all, mode, c, kh, kw, sh, sw, ph, pw, oh, ow, rt, dx, dw2_parts[t],
                  db_parts[t], t * n // nchunks, (t + 1) * n // nchunks)


@jit
def _pad_sample(x, n, ph, pw, wp, xp, xsq):
    """Sample ``n`` into the zero-bordered planes ``xp`` (C, Hp*Wp + slack), flattened row by row,
    and, when ``xsq`` has room, :math:`\\sum_c x^2` into ``xsq`` (float64, same layout). Only the
    interior is written: the border and the slack stay zero from the allocation."""
    ch_, h, w = x.shape[1], x.shape[2], x.shape[3]
    want = xsq.shape[0] > 0
    for chn in range(ch_):
        xpc = xp[chn]
        for y in range(h):
            xr = x[n, chn, y]
            base = (y + ph) * wp + pw
            for z in range(w):
                xpc[base + z] = xr[z]
            if want:
                for z in range(w):
                    v = np.float64(xr[z])
                    if chn == 0:
                        xsq[base + z] = v * v
                    else:
                        xsq[base + z] += v * v


@jit
def _fwd_direct_rows(x, w4, bias, mode, c, k, ph, pw, oh, ow, rt, out, s_out, zw_out, n0, n1):
    """Stride 1: the convolution straight from the padded planes, without patches. On the flattened
    padded plane (row length ``Wp``) the tap (i, j) of output position ``a*Wp + e`` is the pixel at
    ``a*Wp + e + i*Wp + j``, so every (tap, channel, filter) is one contiguous axpy over a tile of
    ``rt`` output rows (columns ``e >= ow`` are computed and dropped). ``q`` is the same box sum over
    :math:`\\sum_c x^2`. ``w4`` has the filters padded with zero filters to a multiple of 4 (the
    loop over blocks of four filters vectorizes only with a step that divides its bound)."""
    fp, ch_, kh, kw = w4.shape
    F = out.shape[1]
    h, w = x.shape[2], x.shape[3]
    hp, wp = h + 2 * ph, w + 2 * pw
    plane = hp * wp + kw
    xp = np.zeros((ch_, plane), dtype=x.dtype)
    xsq = np.zeros(plane)
    T = rt * wp
    acc = np.empty((fp, T), dtype=x.dtype)
    q = np.empty(T)
    for n in range(n0, n1):
        _pad_sample(x, n, ph, pw, wp, xp, xsq)
        for a0 in range(0, oh, rt):
            a1 = min(oh, a0 + rt)
            tl = (a1 - a0) * wp
            base0 = a0 * wp
            for f in range(fp):
                ar = acc[f]
                for l in range(tl):
                    ar[l] = 0.0
            for l in range(tl):
                q[l] = 0.0
            for i in range(kh):
                for j in range(kw):
                    off = base0 + i * wp + j
                    for l in range(tl):
                        q[l] += xsq[off + l]
                j3 = kw - kw % 3
                for chn in range(ch_):
                    for j in range(0, j3, 3):                 # three taps x four filters per pass
                        off = base0 + i * wp + j
                        xa, xb, xc_ = xp[chn, off:off + tl], xp[chn, off + 1:off + 1 + tl], \
                            xp[chn, off + 2:off + 2 + tl]
                        for f in range(0, fp, 4):
                            p0, p1, p2, p3 = w4[f, chn, i, j], w4[f + 1, chn, i, j], w4[f + 2, chn, i, j], \
                                w4[f + 3, chn, i, j]
                            b0, b1, b2, b3 = w4[f, chn, i, j + 1], w4[f + 1, chn, i, j + 1], \
                                w4[f + 2, chn, i, j + 1], w4[f + 3, chn, i, j + 1]
                            c0, c1, c2, c3 = w4[f, chn, i, j + 2], w4[f + 1, chn, i, j + 2], \
                                w4[f + 2, chn, i, j + 2], w4[f + 3, chn, i, j + 2]
                            r0, r1, r2, r3 = acc[f], acc[f + 1], acc[f + 2], acc[f + 3]
                            for l in range(tl):
                                u, v, t = xa[l], xb[l], xc_[l]
                                r0[l] += p0 * u + b0 * v + c0 * t
                                r1[l] += p1 * u + b1 * v + c1 * t
                                r2[l] += p2 * u + b2 * v + c2 * t
                                r3[l] += p3 * u + b3 * v + c3 * t
                    for j in range(j3, kw):                   # the taps left over, one at a time
                        off = base0 + i * wp + j
                        xr = xp[chn, off:off + tl]
                        for f in range(0, fp, 4):
                            v0, v1, v2, v3 = w4[f, chn, i, j], w4[f + 1, chn, i, j], w4[f + 2, chn, i, j], \
                                w4[f + 3, chn, i, j]
                            r0, r1, r2, r3 = acc[f], acc[f + 1], acc[f + 2], acc[f + 3]
                            for l in range(tl):
                                xv = xr[l]
                                r0[l] += v0 * xv
                                r1[l] += v1 * xv
                                r2[l] += v2 * xv
                                r3[l] += v3 * xv
            sn = s_out[n]
            for a in range(a0, a1):
                for e in range(ow):
                    sn[a * ow + e] = np.sqrt(c * q[(a - a0) * wp + e] + k)
            for f in range(F):
                ar, orow, zrow = acc[f], out[n, f], zw_out[n, f]
                b = bias[f]
                for a in range(a0, a1):
                    src = (a - a0) * wp
                    dst = a * ow
                    for e in range(ow):
                        sv = sn[dst + e]
                        if mode == 0:
                            zv = (ar[src + e] + b) / sv
                            zrow[dst + e] = zv
                            orow[dst + e] = zv
                        else:
                            zv = ar[src + e] / sv
                            zrow[dst + e] = zv
                            orow[dst + e] = zv + b


@pjit
def _fwd_direct_parallel(x, w4, bias, mode, c, k, ph, pw, oh, ow, rt, out, s_out, zw_out, nchunks):
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _fwd_direct_rows(x, w4, bias, mode, c, k, ph, pw, oh, ow, rt, out, s_out, zw_out,
                         t * n // nchunks, (t + 1) * n // nchunks)


@jit
def _bwd_direct_rows(x, w4, g, s_all, zw_all, mode, c, ph, pw, oh, ow, rt, dx, dw4, db, n0, n1):
    """Stride 1, the backward pass on the padded planes: ``G/s`` and ``2 dL/dq`` per tile (zero in the
    dropped columns), ``dW += dot(G/s, shifted plane)``, ``dxp += W^T (G/s)`` shifted back, the
    patch-norm term ``x * box^T(2 dL/dq)``, then the interior of ``dxp`` is ``dx``. ``w4`` padded with
    zero filters to a multiple of 4, as in the forward pass."""
    fp, ch_, kh, kw = w4.shape
    F = g.shape[1]
    h, w = x.shape[2], x.shape[3]
    hp, wp = h + 2 * ph, w + 2 * pw
    plane = hp * wp + kw
    xp = np.zeros((ch_, plane), dtype=x.dtype)
    dxp = np.empty((ch_, plane), dtype=x.dtype)
    rp = np.empty(plane)
    noq = np.empty(0)
    T = rt * wp
    gs = np.zeros((fp, T), dtype=x.dtype)                    # rows F: of the padding filters stay 0
    zero = gs[0, 0]                                          # 0 in the input's dtype
    dwp = np.zeros((fp, ch_, kh, kw))                         # float64: sums over the whole chunk
    dq = np.empty(T)
    for n in range(n0, n1):
        _pad_sample(x, n, ph, pw, wp, xp, noq)
        for chn in range(ch_):
            for l in range(plane):
                dxp[chn, l] = 0.0
        for l in range(plane):
            rp[l] = 0.0
        sn = s_all[n]
        for a0 in range(0, oh, rt):
            a1 = min(oh, a0 + rt)
            tl = (a1 - a0) * wp
            base0 = a0 * wp
            for l in range(tl):
                dq[l] = 0.0
            for f in range(F):
                gr, zr, gsr = g[n, f], zw_all[n, f], gs[f]
                accb = np.float64(0.0)
                for a in range(a0, a1):
                    src = a * ow
                    dst = (a - a0) * wp
                    for e in range(ow):
                        gv = np.float64(gr[src + e])
                        gsv = gv / sn[src + e]
                        gsr[dst + e] = gsv
                        dq[dst + e] += gv * zr[src + e]
                        accb += gsv if mode == 0 else gv
                    for e in range(ow, wp):
                        gsr[dst + e] = 0.0
                db[f] += accb
            for a in range(a0, a1):
                for e in range(ow):
                    sv = sn[a * ow + e]
                    dq[(a - a0) * wp + e] *= -c / (sv * sv)   # 2 dL/dq
            for i in range(kh):
                for j in range(kw):
                    off = base0 + i * wp + j
                    for l in range(tl):
                        rp[off + l] += dq[l]
                    for chn in range(ch_):
                        xr = xp[chn, off:off + tl]
                        dxr = dxp[chn, off:off + tl]
                        for f in range(0, fp, 4):             # dW and dxp += W^T (G/s), four filters
                            g0, g1, g2, g3 = gs[f], gs[f + 1], gs[f + 2], gs[f + 3]
                            v0, v1, v2, v3 = w4[f, chn, i, j], w4[f + 1, chn, i, j], w4[f + 2, chn, i, j], \
                                w4[f + 3, chn, i, j]
                            s0 = s1 = s2 = s3 = zero           # in the input's precision
                            for l in range(tl):
                                xv = xr[l]
                                e0, e1, e2, e3 = g0[l], g1[l], g2[l], g3[l]
                                s0 += e0 * xv
                                s1 += e1 * xv
                                s2 += e2 * xv
                                s3 += e3 * xv
                                dxr[l] += v0 * e0 + v1 * e1 + v2 * e2 + v3 * e3
                            dwp[f, chn, i, j] += s0
                            dwp[f + 1, chn, i, j] += s1
                            dwp[f + 2, chn, i, j] += s2
                            dwp[f + 3, chn, i, j] += s3
        for chn in range(ch_):
            for y in range(h):
                base = (y + ph) * wp + pw
                xr, dxr = x[n, chn, y], dx[n, chn, y]
                for z in range(w):
                    dxr[z] = dxp[chn, base + z] + xr[z] * rp[base + z]
    for f in range(F):
        for chn in range(ch_):
            for i in range(kh):
                for j in range(kw):
                    dw4[f, chn, i, j] += dwp[f, chn, i, j]


@pjit
def _bwd_direct_parallel(x, w4, g, s_all, zw_all, mode, c, ph, pw, oh, ow, rt, dx, dw4_parts, db_parts, nchunks):
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _bwd_direct_rows(x, w4, g, s_all, zw_all, mode, c, ph, pw, oh, ow, rt, dx, dw4_parts[t], db_parts[t],
                         t * n // nchunks, (t + 1) * n // nchunks)


DISPATCHERS = (_fill_tile, _fwd_rows, _fwd_parallel, _bwd_rows, _bwd_parallel, _pad_sample, _fwd_direct_rows,
               _fwd_direct_parallel, _bwd_direct_rows, _bwd_direct_parallel)

#: Output positions per tile (about): the tile's patch matrix, K x TILE values, stays in the L2 cache
#: and its accumulators, F x TILE, in L1.
TILE = 256


def _pad_filters(w4: np.ndarray) -> np.ndarray:
    """``w4`` (F, C, kh, kw) with zero filters appended up to a multiple of 4 (no copy when F is one)."""
    f = w4.shape[0]
    if f % 4 == 0:
        return np.ascontiguousarray(w4)
    out = np.zeros((f + (-f) % 4,) + w4.shape[1:], dtype=w4.dtype)
    out[:f] = w4
    return out


def _rows_per_tile(oh: int, ow: int) -> int:
    return max(1, min(oh, TILE // max(ow, 1)))


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """float32 for float32 (and float16) input, float64 otherwise."""
    return np.dtype(np.float32) if np.dtype(dtype).itemsize <= 4 else np.dtype(np.float64)


def patch_norm_conv2d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride=1, padding=0,
                              mode: str = "affine", eps: float = 1e-6, out: np.ndarray | None = None
                              ) -> tuple[np.ndarray, dict[str, Any]]:
    """Fused twin of :func:`npnorm.divergence.patchnorm.patch_norm_conv2d_forward`, in the input's
    precision (float32 or float64)."""
    from ...divergence.patchnorm import _check
    from ...divergence.prenorm import radial_coefficients
    x, weight, bias, stride, padding, eps = _check(x, weight, bias, stride, padding, mode, eps,
                                                   "patch_norm_conv2d_forward")
    n, ch, h, w = x.shape
    f, _, kh, kw = weight.shape
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (w + 2 * padding[1] - kw) // stride[1] + 1
    K, L = ch * kh * kw, oh * ow
    dt = _compute_dtype(x.dtype)
    xc = np.array(x, dtype=dt, order="C")                     # a copy, kept for the backward pass
    # a private copy (small): editing the caller's weight before backward must not change dx
    w2 = np.array(weight, dtype=dt, order="C").reshape(f, K)
    b = C.as_f64(bias, (f,), 0.0)
    c, k = radial_coefficients(mode, K, eps)
    result = C.check_out(out, (n, f, oh, ow), x.dtype)
    res = result.reshape(n, f, L) if result.dtype == dt else np.empty((n, f, L), dtype=dt)
    s_all = np.empty((n, L))
    zw = np.empty((n, f, L), dtype=dt)
    direct = tuple(stride) == (1, 1)
    if direct:                                                # the padded planes, no patch matrix
        rt = _rows_per_tile(oh, w + 2 * padding[1])
        args = (xc, _pad_filters(w2.reshape(weight.shape)), b, _MODE_CODE[mode], c, k, padding[0], padding[1], oh, ow, rt,
                res, s_all, zw)
        body, driver = _fwd_direct_rows, _fwd_direct_parallel
    else:
        rt = _rows_per_tile(oh, ow)
        args = (xc, w2, b, _MODE_CODE[mode], c, k, kh, kw, stride[0], stride[1], padding[0], padding[1], oh, ow,
                rt, res, s_all, zw)
        body, driver = _fwd_rows, _fwd_parallel
    if n > 1 and C.use_parallel(n * f * L + x.size):
        driver(*args, C.num_chunks(n))
    elif n > 0:
        body(*args, 0, n)
    if res.dtype != result.dtype:
        result[...] = res.reshape(result.shape)
    cache = {"backend": "numba", "x": xc, "w2": w2, "s": s_all, "zw": zw, "mode": mode, "c": c,
             "geometry": (kh, kw, stride[0], stride[1], padding[0], padding[1], oh, ow, rt), "direct": direct,
             "has_bias": bias is not None, "dtype": x.dtype, "out_shape": (n, f, oh, ow),
             "w_shape": weight.shape}
    return result, cache


def patch_norm_conv2d_backward(dout: np.ndarray, cache: dict[str, Any], dx_out: np.ndarray | None = None):
    """Fused twin of :func:`npnorm.divergence.patchnorm.patch_norm_conv2d_backward`:
    ``(dx, dweight, dbias)`` (``dx`` in the input's dtype, ``dweight`` and ``dbias`` float64 as the
    reference's)."""
    from ..._checks import check_dout
    g = check_dout(dout, cache["out_shape"], "patch_norm_conv2d_backward")
    n, f, oh, ow = cache["out_shape"]
    xc, w2 = cache["x"], cache["w2"]
    dt = xc.dtype
    g = np.ascontiguousarray(g, dtype=dt).reshape(n, f, oh * ow)
    result = C.check_out(dx_out, xc.shape, cache["dtype"], "dx_out")
    dx = result if result.dtype == dt else np.empty(xc.shape, dtype=dt)
    chunks = C.num_chunks(n) if (n > 1 and C.use_parallel(g.size + xc.size)) else 1
    dw2_parts = np.zeros((chunks,) + w2.shape)                # float64: sums over tiles and samples
    db_parts = np.zeros((chunks, f))
    kh, kw, sh, sw, ph, pw, _, _, rt = cache["geometry"]
    code = _MODE_CODE[cache["mode"]]
    if cache["direct"]:
        w4 = _pad_filters(w2.reshape(cache["w_shape"]))
        dw_parts = dw2_parts.reshape((chunks,) + tuple(cache["w_shape"]))
        args = (xc, w4, g, cache["s"], cache["zw"], code, cache["c"], ph, pw, oh, ow, rt, dx)
        body, driver = _bwd_direct_rows, _bwd_direct_parallel
    else:
        dw_parts = dw2_parts
        args = (xc, w2, g, cache["s"], cache["zw"], code, cache["c"], kh, kw, sh, sw, ph, pw, oh, ow, rt, dx)
        body, driver = _bwd_rows, _bwd_parallel
    if chunks > 1:
        driver(*args, dw_parts, db_parts, chunks)
    elif n > 0:
        body(*args, dw_parts[0], db_parts[0], 0, n)
    else:
        dx[...] = 0.0
    if dx is not result:
        result[...] = dx
    dweight = dw2_parts.sum(axis=0).reshape(cache["w_shape"])
    dbias = db_parts.sum(axis=0) if cache["has_bias"] else None
    return result, dweight, dbias
