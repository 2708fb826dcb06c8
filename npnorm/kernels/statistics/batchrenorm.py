r"""Numba twin of :mod:`npnorm.statistics.batchrenorm` (batch renormalization), on BatchNorm's kernels.

Batch renormalization's statistics are BatchNorm's (per channel, over the batch and the positions),
so its twin has the structure of :mod:`npnorm.kernels.statistics.batchnorm`. The input is viewed as
``(N, C, S)``; a channel's values are spread over ``N`` blocks of ``S`` contiguous elements, and the
whole batch rarely fits in the cache, so the statistics and the normalization are two traversals,
each in memory order on all threads:

1. statistics of every (n, c) block, two passes over the cache-resident block in float64
   (:func:`~npnorm.kernels.statistics.groupnorm.group_stats` with one channel per group), merged
   over ``n`` with the law of total variance (equation (BN-merge), no cancellation); then, on
   ``(C,)`` arrays, :math:`\sigma_B = \sqrt{\sigma^2_B + \epsilon}` and the clipped corrections
   :math:`r, d` of equation (brn-forward);
2. the output as one per-channel affine map,
   :math:`y = (x - \mu_B)\,\frac{\gamma r}{\sigma_B} + (\gamma d + \beta)`
   (:func:`~npnorm.kernels.affine.channel_affine`), which also writes the private copy of ``x``
   that the backward pass reads.

Backward, with :math:`r, d` constants exactly as in the reference (eq. (brn-backward)): one pass
for the per-(n, c) sums :math:`\sum dy` and :math:`\sum dy\,(x - \mu_B)`
(:func:`~npnorm.kernels.affine.channel_sums`), reduced over ``n`` to

.. math::
   \frac{\partial L}{\partial\beta} = \sum dy, \qquad
   \frac{\partial L}{\partial\gamma} = \sum dy\,\hat x = \frac{r}{\sigma_B}\sum dy\,(x - \mu_B) + d\sum dy,

and one elementwise pass (:func:`~npnorm.kernels.affine.channel_affine2`) for

.. math::
   dx = dy\,\frac{\gamma r}{\sigma_B} - (x - \mu_B)\,\frac{\gamma r \sum dy\,(x-\mu_B)}{m\,\sigma_B^3}
        - \frac{\gamma r \sum dy}{m\,\sigma_B},

equation (brn-backward) expanded with :math:`g = \gamma r\,dy` and
:math:`\tilde x = (x - \mu_B)/\sigma_B`. Evaluation mode is the affine map
:math:`y = \gamma (x - \mu)/\sigma + \beta` with the running statistics, on the same kernels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._checks import check_cache
from .. import _common as C
from ..affine import channel_affine, channel_affine2, channel_sums
from .groupnorm import group_stats

__all__ = ["batch_renorm_forward", "batch_renorm_backward", "batch_renorm_eval_forward",
           "batch_renorm_eval_backward"]


def batch_renorm_forward(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
                         running_mean: np.ndarray, running_std: np.ndarray, rmax: float = 3.0,
                         dmax: float = 5.0, eps: float = 1e-5, r: np.ndarray | None = None,
                         d: np.ndarray | None = None, *, out: np.ndarray | None = None,
                         keep_out: np.ndarray | None = None):
    """Training-mode batch renormalization of ``x`` (N, C, \\*), equation (brn-forward); same
    arguments and results as the reference :func:`npnorm.statistics.batchrenorm.batch_renorm_forward`,
    plus a preallocated ``out`` and ``keep_out`` (the buffer for the private copy of ``x``).

    Parameters
    ----------
    x : ndarray, shape (N, C, \\*)
    weight, bias : ndarray of shape (C,) or None
    running_mean, running_std : ndarray, shape (C,)
        :math:`\\mu` and :math:`\\sigma` of equation (brn-forward) (read, never written).
    rmax, dmax : float
        Clipping limits of ``r`` and ``d``.
    eps : float
        Added to the batch variance inside the square root.
    r, d : ndarray of shape (C,) or None
        Frozen corrections (computed from the statistics when ``None``).

    Returns
    -------
    out : ndarray, the shape and dtype of ``x``
    cache : dict
        The batch ``mean`` and ``std`` (:math:`\\sigma_B`, eps included), ``r``, ``d`` and ``m`` (as
        the reference's cache: the layer updates its running statistics from them) and a private
        copy of ``x``.
    """
    n, c, s_len = C.ncs(x.shape)
    m = n * s_len
    x3 = C.as_input(x, (n, c, s_len))
    w, b = C.as_f64(weight, (c,), 1.0), C.as_f64(bias, (c,), 0.0)
    cache = {"backend": "numba", "w": w, "m": m, "shape": x.shape, "out_shape": x.shape, "dtype": x.dtype,
             "has_weight": weight is not None, "has_bias": bias is not None}
    if m == 0:                                                   # an empty batch: nothing to normalize
        y = C.check_out(out, x3.shape, x3.dtype)
        nan = np.full(c, np.nan)
        cache.update(x=x3, owns_x=False, mean=nan, std=nan, r=nan, d=nan)
        return C.restore(y, x.shape, x.dtype), cache
    # pass 1: statistics of every (n, c) block, merged over n (BN-merge: no cancellation)
    block_mean, block_var = group_stats(x3, c)
    mean = block_mean.mean(axis=0)
    var = block_var.mean(axis=0) + ((block_mean - mean) ** 2).mean(axis=0)
    std = np.sqrt(var + eps)                                     # sigma_B, eps included
    # the corrections towards the running statistics, constants of the backward pass
    rs = np.asarray(running_std, dtype=np.float64).reshape(c)
    if r is None:
        r = np.clip(std / rs, 1.0 / rmax, rmax)
    if d is None:
        d = np.clip((mean - np.asarray(running_mean, dtype=np.float64).reshape(c)) / rs, -dmax, dmax)
    r = np.array(np.broadcast_to(np.asarray(r, dtype=np.float64), (c,)))
    d = np.array(np.broadcast_to(np.asarray(d, dtype=np.float64), (c,)))
    # pass 2: y = (x - mu_B) gamma r / sigma_B + (gamma d + beta), and the private copy of x
    keep = C.keep_buffer(x, x3, keep_out)
    y = channel_affine(x3, mean, w * r / std, w * d + b, out=out, keep=keep)
    cache.update(x=x3 if keep is None else keep, owns_x=keep is not None, mean=mean, std=std, r=r, d=d)
    return C.restore(y, x.shape, x.dtype), cache


def batch_renorm_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Backward of :func:`batch_renorm_forward`, equation (brn-backward) with ``r`` and ``d``
    constant. Returns ``(dx, dweight, dbias)`` (``None`` for an absent parameter) as the reference."""
    dout = check_cache(dout, cache, "batch_renorm_backward")
    x3, w, m = cache["x"], cache["w"], cache["m"]
    c = x3.shape[1]
    dy3 = C.as_upstream(dout, x3.dtype, x3.shape)
    if m == 0:
        dx = np.zeros(cache["shape"], dtype=cache["dtype"])
        return (dx, np.zeros(c) if cache["has_weight"] else None, np.zeros(c) if cache["has_bias"] else None)
    mean, std, r, d = cache["mean"], cache["std"], cache["r"], cache["d"]
    # pass 1: per-(n, c) sums of dy and dy (x - mu_B), reduced over n
    sdy, sdyx = channel_sums(dy3, x3, mean)
    sum_dy, sum_dyx = sdy.sum(axis=0), sdyx.sum(axis=0)
    dbias = sum_dy
    dweight = r / std * sum_dyx + d * sum_dy                     # sum dy x_hat
    # pass 2: dx = dy a + (x - mu_B) b + c0, BatchNorm's backward with g = gamma r dy
    wr = w * r
    dx = channel_affine2(dy3, x3, mean, wr / std, -wr * sum_dyx / (m * std ** 3), -wr * sum_dy / (m * std),
                         out=dx_out)
    return (C.restore(dx, cache["shape"], cache["dtype"]), dweight if cache["has_weight"] else None,
            dbias if cache["has_bias"] else None)


def batch_renorm_eval_forward(x: np.ndarray, running_mean: np.ndarray, running_std: np.ndarray,
                              weight: np.ndarray | None, bias: np.ndarray | None, *,
                              out: np.ndarray | None = None, keep_out: np.ndarray | None = None):
    """Evaluation mode, :math:`y = \\gamma (x - \\mu)/\\sigma + \\beta` with the running mean and
    running standard deviation, in one pass (:func:`~npnorm.kernels.affine.channel_affine`). The input
    is kept (a private copy written in the same pass) only when there is a ``weight``, whose gradient
    needs it. Returns ``(out, cache)``."""
    n, c, s_len = C.ncs(x.shape)
    x3 = C.as_input(x, (n, c, s_len))
    w, b = C.as_f64(weight, (c,), 1.0), C.as_f64(bias, (c,), 0.0)
    rm = np.array(running_mean, dtype=np.float64).reshape(c)
    rstd = 1.0 / np.asarray(running_std, dtype=np.float64).reshape(c)
    keep = C.keep_buffer(x, x3, keep_out) if weight is not None else None
    y = channel_affine(x3, rm, w * rstd, b, out=out, keep=keep)
    cache = {"backend": "numba", "x": (x3 if keep is None else keep) if weight is not None else None,
             "owns_x": keep is not None, "w": w, "rm": rm, "rstd": rstd, "ncs": (n, c, s_len),
             "kdtype": x3.dtype, "shape": x.shape, "out_shape": x.shape, "dtype": x.dtype,
             "has_weight": weight is not None, "has_bias": bias is not None}
    return C.restore(y, x.shape, x.dtype), cache


def batch_renorm_eval_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Backward of :func:`batch_renorm_eval_forward`: :math:`dx = \\gamma\\,dy/\\sigma`,
    :math:`d\\gamma = \\sum dy\\,(x - \\mu)/\\sigma`, :math:`d\\beta = \\sum dy`. Returns
    ``(dx, dweight, dbias)``."""
    dout = check_cache(dout, cache, "batch_renorm_eval_backward")
    n, c, s_len = cache["ncs"]
    w, rstd = cache["w"], cache["rstd"]
    dy3 = C.as_upstream(dout, cache["kdtype"], (n, c, s_len))
    dx = channel_affine(dy3, np.zeros(c), w * rstd, np.zeros(c))   # one pass: dx = gamma dy / sigma
    dweight = dbias = None
    if cache["has_weight"]:                                      # one pass: sum dy, sum dy (x - mu)
        sdy, sdyx = channel_sums(dy3, cache["x"], cache["rm"])
        dweight, dbias = sdyx.sum(axis=0) * rstd, sdy.sum(axis=0)
    elif cache["has_bias"]:
        dbias = dy3.sum(axis=(0, 2), dtype=np.float64)
    return C.restore(dx, cache["shape"], cache["dtype"]), dweight, (dbias if cache["has_bias"] else None)
