r"""Fused Numba twin of :mod:`npnorm.statistics.grn` (global response normalization).

GRN's statistics are per sample: the spatial L2 norm :math:`G_{nc}` of every channel and their mean
over the channels. One sample's ``S x C`` block (``S = H W``) is the unit of work, walked twice.
It is ``4 S C`` bytes in float32: 294 KiB for ``(N, 14, 14, 384)``, but 1.15 MiB for the
benchmark's ``(32, 56, 56, 96)``, more than the 1 MiB L2 cache per core of the machine this was
written on (``lscpu``). A block that stays in L2 is read from memory once per kernel; a larger one
may be evicted before the second walk, which then reads it again from L3 or memory (the cache
behaviour was not measured):

* forward, pass 1: :math:`G_{nc}^2 = \sum_s x^2` for every channel (float64 accumulators), then
  :math:`D_n = \frac{1}{C}\sum_c G_{nc} + \epsilon` and :math:`N_{nc} = G_{nc} / D_n`;
  pass 2: :math:`y = x\,(1 + \gamma_c N_{nc}) + \beta_c` (and the private copy of ``x`` that the
  backward pass reads, written while the block is in the cache);
* backward, pass 1: the per-(sample, channel) sums :math:`\sum_s dy` and :math:`\sum_s dy\,x`; from
  them, per channel, :math:`q = \gamma \sum_s dy\,x`,
  :math:`\partial L/\partial G = q/D - \frac{1}{C D^2}\sum_{c'} q_{c'} G_{c'}` and the coefficient
  :math:`(\partial L/\partial G)/G` (0 where :math:`G = 0`); pass 2:
  :math:`dx = dy\,(1 + \gamma N) + x\,(\partial L/\partial G)/G`, equation (grn-backward).

Both layouts of the reference are supported: channels-last ``(N, H, W, C)``, viewed as
``(N, S, C)`` (a sample's rows of ``C`` contiguous channels; the per-channel sums are accumulated
row by row into an array of ``C``), and channels-first ``(N, C, H, W)``, viewed as ``(N, C, S)``
(each channel's ``S`` positions contiguous). The per-(sample, channel) sums are kept in ``(N, C)``
arrays, so the parallel driver (one chunk of samples per thread) has no shared accumulator; the
parameter gradients are summed over the samples afterwards, in float64.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from ..._checks import check_cache
from .. import _common as C
from .._common import jit, pjit

__all__ = ["grn_forward", "grn_backward"]


# -- forward --------------------------------------------------------------------------------------
@jit
def _fwd_cf(x, w, b, eps, out, keep, keep_x, gnorm, nrm, denom,
            i0, i1):  # pragma: no cover - compiled
    """Channels-first forward of samples ``i0 <= i < i1`` of ``x``
    (N, C, S)."""
    c, s = x.shape[1], x.shape[2]
    for i in range(i0, i1):
        tot = np.float64(0.0)
        # pass 1: the spatial L2 norm of every channel
        for j in range(c):
            xr = x[i, j]
            acc = np.float64(0.0)
            for k in range(s):
                v = np.float64(xr[k])
                acc += v * v
            g = np.sqrt(acc)
            gnorm[i, j] = g
            tot += g
        # the channels' mean norm (+ eps)
        d = tot / c + eps
        denom[i] = d
        # pass 2: y = x (1 + gamma N) + beta, keep x
        for j in range(c):
            nrm[i, j] = gnorm[i, j] / d
            a = 1.0 + w[j] * nrm[i, j]
            bj = b[j]
            xr, orow = x[i, j], out[i, j]
            if keep_x:
                krow = keep[i, j]
                for k in range(s):
                    v = xr[k]
                    orow[k] = v * a + bj
                    krow[k] = v
            else:
                for k in range(s):
                    orow[k] = xr[k] * a + bj


@jit
def _fwd_cl(x, w, b, eps, out, keep, keep_x, gnorm, nrm, denom, scale, i0, i1):  # pragma: no cover - compiled
    """Channels-last forward of samples ``i0 <= i < i1`` of ``x`` (N, S, C); ``scale`` (N, C) is
    scratch for :math:`1 + \\gamma N`."""
    s, c = x.shape[1], x.shape[2]
    for i in range(i0, i1):
        gi = gnorm[i]
        for j in range(c):
            gi[j] = 0.0
        for k in range(s):                      # pass 1: sums of squares, row by row
            xr = x[i, k]
            for j in range(c):
                v = np.float64(xr[j])
                gi[j] += v * v
        tot = np.float64(0.0)
        for j in range(c):                      # the norms and their mean over the channels
            gi[j] = np.sqrt(gi[j])
            tot += gi[j]
        d = tot / c + eps
        denom[i] = d
        si = scale[i]
        for j in range(c):
            nrm[i, j] = gi[j] / d
            si[j] = 1.0 + w[j] * nrm[i, j]
        for k in range(s):                      # pass 2: y = x (1 + gamma N) + beta, keep x
            xr, orow = x[i, k], out[i, k]
            if keep_x:
                krow = keep[i, k]
                for j in range(c):
                    v = xr[j]
                    orow[j] = v * si[j] + b[j]
                    krow[j] = v
            else:
                for j in range(c):
                    orow[j] = xr[j] * si[j] + b[j]


@jit
def _fwd_samples(x, w, b, eps, out, keep, keep_x, channels_last, gnorm, nrm, denom, scale, i0, i1):  # pragma: no cover
    """Serial body: forward of samples ``i0 <= i < i1`` in either layout."""
    if channels_last:
        _fwd_cl(x, w, b, eps, out, keep, keep_x, gnorm, nrm, denom, scale, i0, i1)
    else:
        _fwd_cf(x, w, b, eps, out, keep, keep_x, gnorm, nrm, denom, i0, i1)


@pjit
def _fwd_parallel(x, w, b, eps, out, keep, keep_x, channels_last, gnorm, nrm, denom, scale,
                  nchunks):  # pragma: no cover
    """Parallel driver: one contiguous chunk of samples per thread."""
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _fwd_samples(x, w, b, eps, out, keep, keep_x, channels_last, gnorm, nrm, denom, scale,
                     t * n // nchunks, (t + 1) * n // nchunks)


# -- backward -------------------------------------------------------------------------------------
@jit
def _coefficients(i, w, gnorm, nrm, denom, sdyx, scale, coef):  # pragma: no cover - compiled
    """Per channel of sample ``i``: ``scale = 1 + gamma N`` and ``coef = (dL/dG) / G`` (0 where G = 0)."""
    c = w.shape[0]
    d = denom[i]
    qg = np.float64(0.0)
    for j in range(c):                          # sum_c' q_c' G_c', q = gamma sum dy x
        qg += w[j] * sdyx[i, j] * gnorm[i, j]
    for j in range(c):
        dg = w[j] * sdyx[i, j] / d - qg / (c * d * d)
        g = gnorm[i, j]
        coef[i, j] = dg / g if g > 0.0 else 0.0
        scale[i, j] = 1.0 + w[j] * nrm[i, j]


@jit
def _bwd_cf(dy, x, w, gnorm, nrm, denom, dx, sdy, sdyx, scale, coef, i0, i1):  # pragma: no cover - compiled
    """Channels-first backward of samples ``i0 <= i < i1`` (N, C, S)."""
    c, s = x.shape[1], x.shape[2]
    for i in range(i0, i1):
        for j in range(c):                      # pass 1: sum dy and sum dy x per channel
            xr, dr = x[i, j], dy[i, j]
            a = np.float64(0.0)
            bx = np.float64(0.0)
            for k in range(s):
                g = np.float64(dr[k])
                a += g
                bx += g * xr[k]
            sdy[i, j] = a
            sdyx[i, j] = bx
        _coefficients(i, w, gnorm, nrm, denom, sdyx, scale, coef)
        for j in range(c):                      # pass 2: dx = dy (1 + gamma N) + x (dL/dG) / G
            a, q = scale[i, j], coef[i, j]
            xr, dr, dxr = x[i, j], dy[i, j], dx[i, j]
            for k in range(s):
                dxr[k] = dr[k] * a + xr[k] * q


@jit
def _bwd_cl(dy, x, w, gnorm, nrm, denom, dx, sdy, sdyx, scale, coef, i0, i1):  # pragma: no cover - compiled
    """Channels-last backward of samples ``i0 <= i < i1`` (N, S, C)."""
    s, c = x.shape[1], x.shape[2]
    for i in range(i0, i1):
        ai, bi = sdy[i], sdyx[i]
        for j in range(c):
            ai[j] = 0.0
            bi[j] = 0.0
        for k in range(s):                      # pass 1: sum dy and sum dy x, row by row
            xr, dr = x[i, k], dy[i, k]
            for j in range(c):
                g = np.float64(dr[j])
                ai[j] += g
                bi[j] += g * xr[j]
        _coefficients(i, w, gnorm, nrm, denom, sdyx, scale, coef)
        si, qi = scale[i], coef[i]
        for k in range(s):                      # pass 2: dx = dy (1 + gamma N) + x (dL/dG) / G
            xr, dr, dxr = x[i, k], dy[i, k], dx[i, k]
            for j in range(c):
                dxr[j] = dr[j] * si[j] + xr[j] * qi[j]


@jit
def _bwd_samples(dy, x, w, channels_last, gnorm, nrm, denom, dx, sdy, sdyx, scale, coef, i0, i1):  # pragma: no cover
    """Serial body: backward of samples ``i0 <= i < i1`` in either layout."""
    if channels_last:
        _bwd_cl(dy, x, w, gnorm, nrm, denom, dx, sdy, sdyx, scale, coef, i0, i1)
    else:
        _bwd_cf(dy, x, w, gnorm, nrm, denom, dx, sdy, sdyx, scale, coef, i0, i1)


@pjit
def _bwd_parallel(dy, x, w, channels_last, gnorm, nrm, denom, dx, sdy, sdyx, scale, coef, nchunks):  # pragma: no cover
    """Parallel driver: one contiguous chunk of samples per thread."""
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _bwd_samples(dy, x, w, channels_last, gnorm, nrm, denom, dx, sdy, sdyx, scale, coef,
                     t * n // nchunks, (t + 1) * n // nchunks)


#: The compiled functions of this module (for the warm-up and the cache checks).
DISPATCHERS = (_fwd_cf, _fwd_cl, _fwd_samples, _fwd_parallel, _coefficients, _bwd_cf, _bwd_cl, _bwd_samples,
               _bwd_parallel)


# -- entry points with the reference's signatures -------------------------------------------------
def _view(shape: tuple[int, ...], channels_last: bool) -> tuple[tuple[int, int, int], int]:
    """The 3-D kernel view of a 4-D input, ``(N, S, C)`` or ``(N, C, S)``, and ``C``."""
    n = int(shape[0])
    if channels_last:
        return (n, int(shape[1]) * int(shape[2]), int(shape[3])), int(shape[3])
    return (n, int(shape[1]), int(shape[2]) * int(shape[3])), int(shape[1])


def grn_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-6,
                channels_last: bool = True, *, out: np.ndarray | None = None,
                keep_out: np.ndarray | None = None):
    """Fused forward, equation (grn-forward); same arguments and results as the NumPy reference
    :func:`npnorm.statistics.grn.grn_forward`, plus a preallocated ``out`` and ``keep_out`` (a buffer
    for the private copy of ``x``, see :func:`npnorm.kernels._common.keep_buffer`).

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C) (``channels_last``) or (N, C, H, W)
    weight, bias : ndarray, shape (C,)
    eps : float
        Added to the channels' mean norm.
    channels_last : bool

    Returns
    -------
    out : ndarray, the shape and dtype of ``x``
    cache : dict
        A private copy of ``x`` (never the caller's array), the norms ``G`` and ratios ``N`` (N, C),
        the denominators ``D`` (N,) and the weight.
    """
    channels_last = bool(channels_last)
    view, c = _view(x.shape, channels_last)
    x3 = C.as_input(x, view)
    n = view[0]
    # private float64 copies of the parameters (small): the cache never follows edits of the caller's
    w, b = C.as_f64(weight, (c,), 1.0), C.as_f64(bias, (c,), 0.0)
    y = C.check_out(out, view, x3.dtype)
    keep, kbuf, do_keep = C.keep_args(x, x3, keep_out)
    gnorm, nrm, scale, denom = np.empty((n, c)), np.empty((n, c)), np.empty((n, c)), np.empty(n)
    args = (x3, w, b, float(eps), y, kbuf, do_keep, channels_last, gnorm, nrm, denom, scale)
    if C.use_parallel(x3.size):
        _fwd_parallel(*args, C.num_chunks(n))
    else:
        _fwd_samples(*args, 0, n)
    cache = {"backend": "numba", "x": x3 if keep is None else keep, "owns_x": keep is not None, "w": w,
             "g": gnorm, "n": nrm, "d": denom, "channels_last": channels_last, "shape": x.shape,
             "out_shape": x.shape, "dtype": x.dtype}
    return C.restore(y, x.shape, x.dtype), cache


def grn_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused backward, equation (grn-backward). Returns ``(dx, dweight, dbias)`` as the reference
    (float64 parameter gradients). ``dout`` must have the forward output's shape and a real
    floating dtype (``ValueError`` / ``TypeError`` naming ``grn_backward`` otherwise)."""
    dout = check_cache(dout, cache, "grn_backward")
    x3, w = cache["x"], cache["w"]
    n, c = x3.shape[0], w.shape[0]
    dy3 = C.as_upstream(dout, x3.dtype, x3.shape)
    dx = C.check_out(dx_out, x3.shape, x3.dtype, "dx_out")
    sdy, sdyx = np.empty((n, c)), np.empty((n, c))
    scale, coef = np.empty((n, c)), np.empty((n, c))
    args = (dy3, x3, w, cache["channels_last"], cache["g"], cache["n"], cache["d"], dx, sdy, sdyx, scale, coef)
    if C.use_parallel(x3.size):
        _bwd_parallel(*args, C.num_chunks(n))
    else:
        _bwd_samples(*args, 0, n)
    dweight = np.sum(sdyx * cache["n"], axis=0)              # sum dy x N over samples and positions
    dbias = sdy.sum(axis=0)
    return C.restore(dx, cache["shape"], cache["dtype"]), dweight, dbias
