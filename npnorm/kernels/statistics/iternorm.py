r"""Fused Numba twin of :mod:`npnorm.statistics.iternorm` (IterNorm: Newton batch whitening).

The input is viewed as ``(N, C, S)`` (``S`` = 1 for ``(N, C)``, else the product of the spatial
sizes). With ``G`` groups of ``d = C / G`` channels, the block ``x[n, g d : (g + 1) d, :]`` - the
``d`` channels of group ``g`` of sample ``n`` - is ``d S`` *contiguous* elements, and every pass over
the big tensor walks these blocks in memory order, a chunk of samples per thread. No transposed copy
of the input is made (the reference moves the channel axis to the front: one copy in, one out).

What is compiled, and what is not
    Compiled (the passes over the big tensor, float64 accumulators whatever the input dtype):

    1. the channel means: the row statistics kernel of GroupNorm (one channel per group,
       :func:`~npnorm.kernels.statistics.groupnorm.group_stats`), merged over ``n``;
    2. :func:`_cov_rows` - the covariance :math:`\Sigma_g = \frac1m X_c X_c^\top` of every group, each
       block centred once into a small float64 scratch (two-pass: no :math:`E[xx^\top] - \mu\mu^\top`
       cancellation), cross products summed per thread, the per-thread sums added at the end;
    3. :func:`_whiten_rows` - :math:`y = \gamma\,W (x - \mu) + \beta`, which also writes the private
       copy of ``x`` the backward pass reads while it reads ``x`` (never the caller's array);
    4. backward, :func:`_bwd_sums_rows` - one pass for every sum the parameters and the whitening
       matrix need: :math:`M_g = \sum_{n,s} dy\,(x - \mu)^\top` (d x d) and :math:`\sum dy` (C,).
       From them :math:`d\gamma_i = \sum_j W_{ij} M_{ij}`, :math:`d\beta = \sum dy` and
       :math:`dW = \operatorname{diag}(\gamma) M` (because :math:`d\hat X = \gamma\,dY`);
    5. backward, :func:`_bwd_dx_rows` - :math:`dx = A\,dy + B (x - \mu) + c` per group with
       :math:`A = W^\top\operatorname{diag}(\gamma)`, :math:`B = (d\Sigma + d\Sigma^\top)/m` and
       :math:`c = -A \sum dy / m` (the reference's :math:`dX_c - \overline{dX_c}`, with
       :math:`\overline{X_c} = 0`).

    Left in NumPy: the Newton iterations and their reverse mode on the ``G`` small ``d x d`` matrices
    (:func:`~npnorm.statistics.iternorm.newton_whitening` and
    :func:`~npnorm.statistics.iternorm.newton_whitening_backward`, the reference's own functions).
    They cost :math:`O(G d^3 T)` flops, independent of the batch (batched ``matmul``, BLAS, on
    ``(G, d, d)`` stacks), against :math:`O(d)` flops per element for each pass over the batch: a
    count, not a timing (no script in the repository times the two parts separately), by which the
    matrices are the small part as soon as the batch holds many more than :math:`G d^2 T` elements.
    Compiling them would duplicate the reference's derivation for little gain.

Evaluation mode is pass 3 with the running mean and whitening matrix; its backward is pass 4 (for
:math:`d\gamma, d\beta`) and pass 5 with :math:`B = 0, c = 0`. Each pass costs :math:`O(d)` flops
per element (the matrix-vector product of every column): for large groups it is compute-bound, not
memory-bound as BatchNorm's passes are.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from ..._checks import check_cache, check_channel_groups
from .. import _common as C
from .._common import jit, pjit
from .groupnorm import group_stats

__all__ = ["iter_norm_forward", "iter_norm_backward", "iter_norm_eval_forward", "iter_norm_eval_backward"]


@jit
def _centre_block(x, n, c0, mean, xc):  # pragma: no cover - compiled
    """``xc[i, s] = x[n, c0 + i, s] - mean[c0 + i]`` in float64 (``xc`` is (d, S))."""
    d, s_len = xc.shape
    for i in range(d):
        xr = x[n, c0 + i]
        mu = mean[c0 + i]
        for s in range(s_len):
            xc[i, s] = xr[s] - mu


@jit
def _cov_rows(x, groups, mean, acc, n0, n1):  # pragma: no cover - compiled
    """Add :math:`\\sum_s x_c x_c^\\top` of samples ``n0 <= n < n1`` to ``acc`` (G, d, d), lower
    triangle and diagonal only (the caller mirrors it)."""
    s_len = x.shape[2]
    d = x.shape[1] // groups
    xc = np.empty((d, s_len))
    for n in range(n0, n1):
        for g in range(groups):
            _centre_block(x, n, g * d, mean, xc)
            for i in range(d):
                for j in range(i + 1):
                    a = np.float64(0.0)
                    for s in range(s_len):
                        a += xc[i, s] * xc[j, s]
                    acc[g, i, j] += a


@pjit
def _cov_parallel(x, groups, mean, acc, nchunks):  # pragma: no cover - compiled
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _cov_rows(x, groups, mean, acc[t], t * n // nchunks, (t + 1) * n // nchunks)


@jit
def _whiten_rows(x, groups, mean, wmat, scale, shift, out, keep, do_keep, n0, n1):  # pragma: no cover
    """``out[n, c0 + i] = scale_i * sum_j wmat[g, i, j] (x[n, c0 + j] - mean_j) + shift_i`` for samples
    ``n0 <= n < n1``; with ``do_keep``, also copy each block of ``x`` into ``keep`` while it is in
    the cache."""
    s_len = x.shape[2]
    d = x.shape[1] // groups
    xc = np.empty((d, s_len))
    acc = np.empty(s_len)
    for n in range(n0, n1):
        for g in range(groups):
            c0 = g * d
            _centre_block(x, n, c0, mean, xc)
            if do_keep:
                for i in range(d):
                    xr, kr = x[n, c0 + i], keep[n, c0 + i]
                    for s in range(s_len):
                        kr[s] = xr[s]
            for i in range(d):
                acc[:] = 0.0
                for j in range(d):
                    wij = wmat[g, i, j]
                    for s in range(s_len):
                        acc[s] += wij * xc[j, s]
                a, b = scale[c0 + i], shift[c0 + i]
                orow = out[n, c0 + i]
                for s in range(s_len):
                    orow[s] = acc[s] * a + b


@pjit
def _whiten_parallel(x, groups, mean, wmat, scale, shift, out, keep, do_keep, nchunks):  # pragma: no cover
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _whiten_rows(x, groups, mean, wmat, scale, shift, out, keep, do_keep, t * n // nchunks,
                     (t + 1) * n // nchunks)


@jit
def _bwd_sums_rows(dy, x, groups, mean, macc, sdy, n0, n1):  # pragma: no cover - compiled
    """Add ``M[g, i, j] = sum_s dy[n, c0 + i, s] (x[n, c0 + j, s] - mean_j)`` to ``macc`` (G, d, d) and
    ``sum_s dy`` to ``sdy`` (C,), samples ``n0 <= n < n1``."""
    s_len = x.shape[2]
    d = x.shape[1] // groups
    xc = np.empty((d, s_len))
    for n in range(n0, n1):
        for g in range(groups):
            c0 = g * d
            _centre_block(x, n, c0, mean, xc)
            for i in range(d):
                dr = dy[n, c0 + i]
                t = np.float64(0.0)
                for s in range(s_len):
                    t += dr[s]
                sdy[c0 + i] += t
                for j in range(d):
                    a = np.float64(0.0)
                    for s in range(s_len):
                        a += dr[s] * xc[j, s]
                    macc[g, i, j] += a


@pjit
def _bwd_sums_parallel(dy, x, groups, mean, macc, sdy, nchunks):  # pragma: no cover - compiled
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _bwd_sums_rows(dy, x, groups, mean, macc[t], sdy[t], t * n // nchunks, (t + 1) * n // nchunks)


@jit
def _bwd_dx_rows(dy, x, groups, mean, amat, bmat, cvec, dx, n0, n1):  # pragma: no cover - compiled
    """``dx[n, c0 + i] = sum_j (amat[g, i, j] dy[n, c0 + j] + bmat[g, i, j] (x[n, c0 + j] - mean_j))
    + cvec[c0 + i]`` for samples ``n0 <= n < n1``."""
    s_len = x.shape[2]
    d = x.shape[1] // groups
    xc = np.empty((d, s_len))
    acc = np.empty(s_len)
    for n in range(n0, n1):
        for g in range(groups):
            c0 = g * d
            _centre_block(x, n, c0, mean, xc)
            for i in range(d):
                acc[:] = cvec[c0 + i]
                for j in range(d):
                    aij, bij = amat[g, i, j], bmat[g, i, j]
                    dr = dy[n, c0 + j]
                    for s in range(s_len):
                        acc[s] += aij * dr[s] + bij * xc[j, s]
                orow = dx[n, c0 + i]
                for s in range(s_len):
                    orow[s] = acc[s]


@pjit
def _bwd_dx_parallel(dy, x, groups, mean, amat, bmat, cvec, dx, nchunks):  # pragma: no cover - compiled
    n = x.shape[0]
    for t in numba.prange(nchunks):
        _bwd_dx_rows(dy, x, groups, mean, amat, bmat, cvec, dx, t * n // nchunks, (t + 1) * n // nchunks)


#: The compiled functions of this module (for the warm-up and the cache checks).
DISPATCHERS = (_centre_block, _cov_rows, _cov_parallel, _whiten_rows, _whiten_parallel, _bwd_sums_rows,
               _bwd_sums_parallel, _bwd_dx_rows, _bwd_dx_parallel)


# -- Python-level drivers -----------------------------------------------------------------------------
def _covariance(x3: np.ndarray, groups: int, mean: np.ndarray) -> np.ndarray:
    """:math:`\\sum_{n,s} x_c x_c^\\top` per group, (G, d, d), symmetric (pass 2)."""
    n, c = x3.shape[:2]
    d = c // groups
    if C.use_parallel(x3.size):
        k = C.num_chunks(n)
        acc = np.zeros((k, groups, d, d))
        _cov_parallel(x3, groups, mean, acc, k)
        acc = acc.sum(axis=0)
    else:
        acc = np.zeros((groups, d, d))
        _cov_rows(x3, groups, mean, acc, 0, n)
    lower = np.tril(acc)
    return lower + np.tril(acc, -1).transpose(0, 2, 1)


def _whiten(x3, groups, mean, wmat, scale, shift, out, keep, do_keep):
    """Pass 3 into ``out`` (and the copy into ``keep`` when ``do_keep``,
    :func:`~npnorm.kernels._common.keep_args`)."""
    args = (x3, groups, mean, np.ascontiguousarray(wmat, dtype=np.float64), scale, shift, out, keep, do_keep)
    if C.use_parallel(x3.size):
        _whiten_parallel(*args, C.num_chunks(x3.shape[0]))
    else:
        _whiten_rows(*args, 0, x3.shape[0])


def _bwd_sums(dy3, x3, groups, mean):
    """Pass 4: ``(M, sum dy)`` of shapes (G, d, d) and (C,)."""
    n, c = x3.shape[:2]
    d = c // groups
    if C.use_parallel(x3.size):
        k = C.num_chunks(n)
        macc, sdy = np.zeros((k, groups, d, d)), np.zeros((k, c))
        _bwd_sums_parallel(dy3, x3, groups, mean, macc, sdy, k)
        return macc.sum(axis=0), sdy.sum(axis=0)
    macc, sdy = np.zeros((groups, d, d)), np.zeros(c)
    _bwd_sums_rows(dy3, x3, groups, mean, macc, sdy, 0, n)
    return macc, sdy


def _bwd_dx(dy3, x3, groups, mean, amat, bmat, cvec, dx):
    """Pass 5 into ``dx``."""
    args = (dy3, x3, groups, mean, np.ascontiguousarray(amat), np.ascontiguousarray(bmat),
            np.ascontiguousarray(cvec), dx)
    if C.use_parallel(x3.size):
        _bwd_dx_parallel(*args, C.num_chunks(x3.shape[0]))
    else:
        _bwd_dx_rows(*args, 0, x3.shape[0])


# -- entry points with the reference's signatures -----------------------------------------------------
def iter_norm_forward(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, groups: int = 1,
                      T: int = 5, eps: float = 1e-5, *, out: np.ndarray | None = None,
                      keep_out: np.ndarray | None = None):
    """Fused training-mode IterNorm of ``(N, C, *)`` input (more than one value per channel): same
    arguments and results as the reference :func:`npnorm.statistics.iternorm.iter_norm_forward`,
    plus ``out=`` and ``keep_out=`` (a buffer for the private copy of ``x``). The cache holds the
    batch ``mean`` (C,) and the whitening matrices ``wm`` (G, d, d) for the running averages."""
    from ...statistics.iternorm import newton_whitening   # here, not at the top: no import cycle

    n, c, s_len = C.ncs(x.shape)
    groups = check_channel_groups(x, groups, "iter_norm_forward")
    x3 = C.as_input(x, (n, c, s_len))
    d, m = c // groups, n * s_len
    row_mean, _ = group_stats(x3, c)                                      # pass 1
    mean = row_mean.mean(axis=0)                                          # every row holds S values
    sigma = _covariance(x3, groups, mean) / m + eps * np.eye(d)           # pass 2, eq. (iternorm-forward)
    wm, ps, s_n, tr = newton_whitening(sigma, T)                          # NumPy: (G, d, d) matrices
    gamma, beta = C.as_f64(weight, (c,), 1.0), C.as_f64(bias, (c,), 0.0)
    y = C.check_out(out, x3.shape, x3.dtype)
    keep, kbuf, do_keep = C.keep_args(x, x3, keep_out)
    _whiten(x3, groups, mean, wm, gamma, beta, y, kbuf, do_keep)         # pass 3
    cache = {"backend": "numba", "x": x3 if keep is None else keep, "owns_x": keep is not None,
             "mean": mean, "wm": wm, "ps": ps, "s_n": s_n, "sigma": sigma, "tr": tr, "gamma": gamma,
             "has_weight": weight is not None, "has_bias": bias is not None, "groups": groups, "m": m,
             "shape": x.shape, "out_shape": x.shape, "dtype": x.dtype}
    return C.restore(y, x.shape, x.dtype), cache


def iter_norm_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused backward of :func:`iter_norm_forward`: returns ``(dx, dweight, dbias)`` (``None`` for an
    absent parameter), as the reference, through passes 4 and 5 and the reference's
    :func:`~npnorm.statistics.iternorm.newton_whitening_backward` in between."""
    from ...statistics.iternorm import newton_whitening_backward

    dout = check_cache(dout, cache, "iter_norm_backward")
    x3, groups, mean, wm, gamma = cache["x"], cache["groups"], cache["mean"], cache["wm"], cache["gamma"]
    n, c, _ = x3.shape
    d, m = c // groups, cache["m"]
    dy3 = C.as_upstream(dout, x3.dtype, x3.shape)
    macc, sdy = _bwd_sums(dy3, x3, groups, mean)                          # pass 4
    dweight = np.sum(wm * macc, axis=2).reshape(c)                        # sum dy * x_hat
    g = gamma.reshape(groups, d)
    dsigma = newton_whitening_backward(g[:, :, None] * macc, cache["ps"], cache["s_n"], cache["sigma"],
                                       cache["tr"])                       # NumPy: dW -> dSigma
    amat = wm.transpose(0, 2, 1) * g[:, None, :]                          # W^T diag(gamma)
    bmat = (dsigma + dsigma.transpose(0, 2, 1)) / m
    cvec = -(amat @ (sdy.reshape(groups, d, 1) / m)).reshape(c)
    dx = C.check_out(dx_out, x3.shape, x3.dtype, "dx_out")
    _bwd_dx(dy3, x3, groups, mean, amat, bmat, cvec, dx)                  # pass 5
    return (C.restore(dx, cache["shape"], cache["dtype"]), dweight if cache["has_weight"] else None,
            sdy if cache["has_bias"] else None)


def iter_norm_eval_forward(x: np.ndarray, running_mean: np.ndarray, running_wm: np.ndarray,
                           weight: np.ndarray | None, bias: np.ndarray | None, groups: int = 1, *,
                           out: np.ndarray | None = None, keep_out: np.ndarray | None = None):
    """Fused evaluation-mode IterNorm (pass 3 with the running statistics): same arguments and
    results as the reference :func:`npnorm.statistics.iternorm.iter_norm_eval_forward`. The cache
    holds copies of the running statistics and the weight, and a private copy of ``x`` (the weight's
    gradient needs it)."""
    n, c, s_len = C.ncs(x.shape)
    groups = check_channel_groups(x, groups, "iter_norm_eval_forward")
    x3 = C.as_input(x, (n, c, s_len))
    mean = np.array(running_mean, dtype=np.float64).reshape(c)
    wm = np.array(running_wm, dtype=np.float64).reshape(groups, c // groups, c // groups)
    gamma, beta = C.as_f64(weight, (c,), 1.0), C.as_f64(bias, (c,), 0.0)
    y = C.check_out(out, x3.shape, x3.dtype)
    keep, kbuf, do_keep = C.keep_args(x, x3, keep_out)
    _whiten(x3, groups, mean, wm, gamma, beta, y, kbuf, do_keep)
    cache = {"backend": "numba", "x": x3 if keep is None else keep, "owns_x": keep is not None,
             "mean": mean, "wm": wm, "gamma": gamma, "groups": groups, "shape": x.shape,
             "out_shape": x.shape, "dtype": x.dtype}
    return C.restore(y, x.shape, x.dtype), cache


def iter_norm_eval_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Backward of :func:`iter_norm_eval_forward`: :math:`dx = W^\\top(\\gamma\\,dy)` (pass 5 with
    ``B = 0``, ``c = 0``) and the parameter sums of pass 4; returns ``(dx, dweight, dbias)``."""
    dout = check_cache(dout, cache, "iter_norm_eval_backward")
    x3, groups, mean, wm, gamma = cache["x"], cache["groups"], cache["mean"], cache["wm"], cache["gamma"]
    n, c, _ = x3.shape
    d = c // groups
    dy3 = C.as_upstream(dout, x3.dtype, x3.shape)
    macc, sdy = _bwd_sums(dy3, x3, groups, mean)
    amat = wm.transpose(0, 2, 1) * gamma.reshape(groups, 1, d)
    dx = C.check_out(dx_out, x3.shape, x3.dtype, "dx_out")
    _bwd_dx(dy3, x3, groups, mean, amat, np.zeros_like(amat), np.zeros(c), dx)
    return C.restore(dx, cache["shape"], cache["dtype"]), np.sum(wm * macc, axis=2).reshape(c), sdy
