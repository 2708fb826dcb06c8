r"""Fused BatchNorm: training mode (batch statistics) and evaluation mode, on the shared kernels.

The input is viewed as ``(N, C, S)`` (``S`` = 1 for ``(N, C)``, ``L`` or ``H W`` otherwise). Walking
one channel at a time through an NCHW array would jump between ``N`` blocks ``C S`` elements apart, a
pattern the hardware prefetcher handles badly; every pass here walks the array **in memory order**,
one (n, c) block of ``S`` contiguous elements after the other, on all threads:

1. statistics of every block (the GroupNorm statistics kernel with one channel per group: two passes
   over the cache-resident block, float64);
2. a merge over the ``N`` blocks of each channel, on small ``(N, C)`` arrays. The blocks all hold
   ``S`` elements, so Chan et al.'s pairwise merge reduces to the law of total variance

   .. math::
      \mu_c = \frac{1}{N}\sum_n \mu_{n,c}, \qquad
      \sigma^2_c = \frac{1}{N}\sum_n \sigma^2_{n,c} + \frac{1}{N}\sum_n (\mu_{n,c} - \mu_c)^2
      \tag{BN-merge}

   - a sum of non-negative terms, with no cancellation (never :math:`E[x^2]-E[x]^2`);
3. the per-channel affine map (:func:`~npnorm.kernels.affine.channel_affine`).

The backward pass has the same shape: per-block sums of ``dy`` and ``dy (x - mu)``, a reduction over
``n``, and one elementwise pass (:func:`~npnorm.kernels.affine.channel_affine2`). Traffic: the
forward reads ``x`` twice and writes ``y`` and a private copy of ``x`` (step 3 writes it while it
reads ``x``: the backward pass must not read the caller's array, which the caller may have edited
since); the backward reads that copy and ``dy`` twice and writes ``dx``.

Why not one channel at a time, which would read ``x`` once (a channel's ``N S`` elements, 400 KB for
``(64, 128, 28, 28)`` float64, fit in a 1 MiB L2 cache between a statistics pass and the output pass)?
Measured once, by hand (the plan's code was removed after the measurement, so nothing in the repository
repeats it), on a 2-core AMD EPYC (the machine this project was built on then), 1 thread, forward pass
with the copy, minimum of 20-40 interleaved runs, in 5 runs on a heavily loaded machine (two runs of
this same plan differed by up to 2x there): that plan was slower than the one above in all 5 runs, 1.5
to 4.9 times (float64: 30-55 ms against 11-24 ms; float32: 11-23 ms against 4-13 ms); blocks of
16 channels were slower in 9 of 10 runs. Our hypothesis, not measured: walking ``N`` short runs
``C S`` elements apart restarts the hardware prefetcher at every run, and the cache shared with
other programs does not hold the channel between the passes.

Evaluation mode is an affine map with frozen statistics: the :mod:`~npnorm.kernels.affine` kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._checks import check_batch_stats, check_cache, check_nc_input, check_running_stats
from .. import _common as C
from ..affine import channel_affine, channel_affine2, channel_sums
from .groupnorm import group_stats

__all__ = ["batch_norm_forward", "batch_norm_backward", "batch_norm_eval_forward", "batch_norm_eval_backward"]


def _empty_result(cache: dict[str, Any]):
    """Backward of an empty batch: an empty ``dx``, zero parameter gradients (sums over nothing)."""
    c = cache["shape"][1]
    return (np.zeros(cache["shape"], dtype=cache["dtype"]), np.zeros(c) if cache["has_weight"] else None,
            np.zeros(c) if cache["has_bias"] else None)


def batch_norm_forward(x: np.ndarray, weight: np.ndarray | None,
                       bias: np.ndarray | None, eps: float = 1e-5, *,
                       out: np.ndarray | None = None,
                       keep_out: np.ndarray | None = None):
    """Fused training-mode BatchNorm of ``x`` (N, C, *). Same arguments,
    checks and errors as the reference
    :func:`npnorm.statistics.batchnorm.batch_norm_forward`. The cache holds
    the batch ``mean`` and biased ``batch_var`` (C,), as the reference's does
    (for the running statistics), and a private copy of ``x`` (written by
    pass 2 while it reads ``x``), never the caller's array.

    Pass 1 (one read of ``x``, in memory order): mean and variance of every
    (n, c) block, two passes over the cache-resident block. Merge over ``n``
    (equation (BN-merge), on (N, C) arrays). Pass 2 (read ``x``, write ``y``
    and the copy): the per-channel affine map ``(x - mu) r gamma + beta``.
    """
    where = "batch_norm_forward"
    x, weight, bias, eps = check_nc_input(x, weight, bias, eps, where)
    m = check_batch_stats(x, where)
    n, c, s_len = C.ncs(x.shape)
    x3 = C.as_input(x, (n, c, s_len))
    w, b = C.as_f64(weight, (c,), 1.0), C.as_f64(bias, (c,), 0.0)
    cache = {"backend": "numba", "w": w, "shape": x.shape,
             "out_shape": x.shape, "dtype": x.dtype, "m": m,
             "has_weight": weight is not None, "has_bias": bias is not None}
    # an empty batch: nothing to normalize
    if m == 0:
        y = C.check_out(out, x3.shape, x3.dtype)
        cache.update(x=x3, mean=np.full(c, np.nan),
                     batch_var=np.full(c, np.nan), rstd=np.full(c, np.nan))
        return C.restore(y, x.shape, x.dtype), cache
    # (N, C): statistics of each block
    block_mean, block_var = group_stats(x3, c)
    mean = block_mean.mean(axis=0)
    # (BN-merge): no cancellation
    var = (block_var.mean(axis=0)
           + ((block_mean - mean) ** 2).mean(axis=0))
    rstd = 1.0 / np.sqrt(var + eps)
    keep = C.keep_buffer(x, x3, keep_out)
    y = channel_affine(x3, mean, w * rstd, b, out=out, keep=keep)
    cache.update(x=x3 if keep is None else keep, owns_x=keep is not None,
                 mean=mean, batch_var=var, rstd=rstd)
    return C.restore(y, x.shape, x.dtype), cache


def batch_norm_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    r"""Fused training-mode BatchNorm backward: returns ``(dx, dweight, dbias)``.

    Pass 1 (read ``x`` and ``dy``): per-(n, c) sums of ``dy`` and ``dy (x - mu)``, summed over ``n``
    to :math:`\sum dy = d\beta` and :math:`r\sum dy (x-\mu) = d\gamma`. Pass 2 (read ``x``, ``dy``,
    write ``dx``): :math:`dx = r(\gamma\,dy - \overline{g} - \hat x\,\overline{g\hat x})`, an affine
    function of ``dy`` and ``x - mu`` per channel.
    """
    dout = check_cache(dout, cache, "batch_norm_backward")
    if cache["m"] == 0:
        return _empty_result(cache)
    x3, w, mean, rstd = cache["x"], cache["w"], cache["mean"], cache["rstd"]
    n, c, s_len = x3.shape
    m = n * s_len
    dy3 = C.as_upstream(dout, x3.dtype, x3.shape)
    sdy, sdyx = channel_sums(dy3, x3, mean)
    dbias, sum_dy_xc = sdy.sum(axis=0), sdyx.sum(axis=0)
    dweight = sum_dy_xc * rstd                                   # sum dy * x_hat
    g_mean = w * dbias / m                                       # mean of g = gamma dy
    gx_mean = w * dweight / m                                    # mean of g x_hat
    dx = channel_affine2(dy3, x3, mean, rstd * w, -rstd * rstd * gx_mean, -rstd * g_mean, out=dx_out)
    return (C.restore(dx, cache["shape"], cache["dtype"]), dweight if cache["has_weight"] else None,
            dbias if cache["has_bias"] else None)


def batch_norm_eval_forward(x: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray,
                            weight: np.ndarray | None, bias: np.ndarray | None, eps: float = 1e-5,
                            *, out: np.ndarray | None = None, keep_out: np.ndarray | None = None):
    """Evaluation-mode BatchNorm (an affine map with the running statistics), on the affine kernel.
    The input is kept (a private copy, written in the same pass) only when there is a ``weight``,
    whose gradient needs it."""
    where = "batch_norm_eval_forward"
    x, weight, bias, eps = check_nc_input(x, weight, bias, eps, where)
    rm, rv = check_running_stats(x, running_mean, running_var, where)
    n, c, s_len = C.ncs(x.shape)
    x3 = C.as_input(x, (n, c, s_len))
    rstd = 1.0 / np.sqrt(rv + eps)
    w, b = C.as_f64(weight, (c,), 1.0), C.as_f64(bias, (c,), 0.0)
    keep = C.keep_buffer(x, x3, keep_out) if weight is not None else None
    y = channel_affine(x3, rm, w * rstd, b, out=out, keep=keep)
    cache = {"backend": "numba", "x": (x3 if keep is None else keep) if weight is not None else None,
             "owns_x": keep is not None,
             "w": w, "rm": rm, "rstd": rstd, "shape": x.shape, "out_shape": x.shape, "dtype": x.dtype,
             "ncs": (n, c, s_len), "kdtype": x3.dtype, "has_weight": weight is not None, "has_bias": bias is not None}
    return C.restore(y, x.shape, x.dtype), cache


def batch_norm_eval_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Backward of evaluation-mode BatchNorm: ``dx = gamma r dy``; returns ``(dx, dweight, dbias)``.

    The parameter gradients need :math:`\\sum dy` and :math:`\\sum dy\\,\\hat x` per channel; they are
    computed with NumPy in float64 (evaluation-mode backward is rare: fine-tuning with frozen statistics).
    """
    dout = check_cache(dout, cache, "batch_norm_eval_backward")
    w, rstd = cache["w"], cache["rstd"]
    n, c, s_len = cache["ncs"]
    dy3 = C.as_upstream(dout, cache["kdtype"], (n, c, s_len))
    dx = channel_affine(dy3, np.zeros(c), w * rstd, np.zeros(c))
    dweight = dbias = None
    if cache["has_bias"]:
        dbias = dy3.sum(axis=(0, 2), dtype=np.float64)
    if cache["has_weight"]:
        x3 = cache["x"]
        x_hat = (x3 - cache["rm"].reshape(1, c, 1)) * rstd.reshape(1, c, 1)
        dweight = np.einsum("ncs,ncs->c", dy3.astype(np.float64), x_hat)
    return C.restore(dx, cache["shape"], cache["dtype"]), dweight, dbias
