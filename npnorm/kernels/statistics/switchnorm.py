r"""Fused Numba twin of :mod:`npnorm.statistics.switchnorm` (switchable normalization, SwitchNorm2d).

The input is viewed as ``(N, C, S)``, ``S = H W``: one *row* per (sample, channel), ``S`` contiguous
elements. Every statistic of the three branches is a function of the per-row mean
:math:`\mu^{in}_{nc}` and variance :math:`v^{in}_{nc}`, so the big tensor is walked only by

1. **the statistics pass** (in memory order, all threads): mean and variance of every row, two
   passes over the cache-resident row in float64 (the GroupNorm statistics kernel with one channel
   per group, :func:`~npnorm.kernels.statistics.groupnorm.group_stats`); the biased variance is
   rescaled by :math:`S/(S-1)` to the reference's unbiased one;
2. **the output pass**: :math:`y = (x - \mu_{nc})\,r_{nc}\gamma_c + \beta_c`, a per-(sample,
   channel) affine map (:func:`~npnorm.kernels.affine.channel_affine`), which also writes the private
   copy of ``x`` that the backward pass reads while it reads ``x`` (never the caller's array).

Between them, equations (SN2)-(SN3) - the LN and BN branches, the softmax mixture - run in NumPy on
``(N, C)`` arrays: a few thousand numbers, by the reference's own
:func:`~npnorm.statistics.switchnorm.switch_mixture`.

The backward pass has the same shape. Every gradient of (SN1)-(SN4) reaches ``x`` through three
per-row numbers, because :math:`\partial L/\partial\mu_{nc}` and
:math:`\partial L/\partial\sigma^2_{nc}` need only the row sums

.. math:: \Sigma^{dy}_{nc} = \sum_s dy, \qquad \Sigma^{dy\,x}_{nc} = \sum_s dy\,(x - \mu_{nc})

(pass 1, :func:`~npnorm.kernels.affine.channel_sums`), and then, with the per-row coefficients
computed from them on ``(N, C)`` arrays (the chain through the mixture is the reference's
:func:`~npnorm.statistics.switchnorm.switch_mixture_backward`),

.. math:: dx = \gamma_c r_{nc}\,dy + \frac{2\,\partial L/\partial v^{in}_{nc}}{S-1}(x - \mu^{in}_{nc})
          + \frac{1}{S}\frac{\partial L}{\partial \mu^{in}_{nc}}                                 \tag{SN-dx}

(pass 2, :func:`_dx_rows`: read ``dy`` and ``x``, write ``dx``). Accumulation in float64 whatever the
input dtype; float16 input is computed as float32.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from ..._checks import check_cache
from .. import _common as C
from .._common import jit, pjit
from ..affine import channel_affine, channel_sums
from .groupnorm import group_stats

__all__ = ["switch_norm_forward", "switch_norm_backward"]


@jit
def _dx_rows(dy, x, center, a, b, c0, dx, r0, r1):  # pragma: no cover - compiled
    """Equation (SN-dx), rows ``r0 <= n C + c < r1``: ``dx = dy a + (x - center) b + c0`` with every
    coefficient given per (sample, channel), arrays of shape (N, C)."""
    nc = x.shape[1]
    s_len = x.shape[2]
    for r in range(r0, r1):
        n, c = r // nc, r % nc
        mu, ac, bc, cc = center[n, c], a[n, c], b[n, c], c0[n, c]
        xr, dr, orow = x[n, c], dy[n, c], dx[n, c]
        for j in range(s_len):
            orow[j] = dr[j] * ac + (xr[j] - mu) * bc + cc


@pjit
def _dx_parallel(dy, x, center, a, b, c0, dx, nchunks):  # pragma: no cover - compiled
    nr = x.shape[0] * x.shape[1]
    for t in numba.prange(nchunks):
        _dx_rows(dy, x, center, a, b, c0, dx, t * nr // nchunks, (t + 1) * nr // nchunks)


#: The compiled functions of this module (for the warm-up and the cache checks).
DISPATCHERS = (_dx_rows, _dx_parallel)


def switch_norm_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, mean_weight: np.ndarray,
                        var_weight: np.ndarray, eps: float = 1e-5,
                        running: tuple[np.ndarray, np.ndarray] | None = None, *,
                        out: np.ndarray | None = None, keep_out: np.ndarray | None = None):
    """Fused forward of ``(N, C, H, W)`` input, ``N >= 1``, ``H W > 1``: same arguments and results as
    the reference :func:`npnorm.statistics.switchnorm.switch_norm_forward` (plus ``out=`` and
    ``keep_out=``, a buffer for the private copy of ``x``). The cache holds ``mean_bn`` / ``var_bn``
    (C,) when there is a BN branch, as the reference's does, the per-row statistics (N, C) and a
    private copy of ``x``, never the caller's array."""
    from ...statistics.switchnorm import switch_mixture   # here, not at the top: no import cycle

    n, c, h, w = x.shape
    m = h * w
    x3 = C.as_input(x, (n, c, m))
    mu, var_biased = group_stats(x3, c)                                   # pass 1: (N, C) row statistics
    v = var_biased * (m / (m - 1))                                        # (SN1), unbiased as the reference
    mean, var, mix = switch_mixture(mu, v, mean_weight, var_weight, running)   # (SN2)-(SN3), (N, C)
    r = 1.0 / np.sqrt(var + eps)
    gamma = np.array(weight, dtype=np.float64).reshape(1, c)
    beta = np.array(bias, dtype=np.float64).reshape(1, c)
    keep = C.keep_buffer(x, x3, keep_out)
    y = channel_affine(x3, mean, r * gamma, beta, out=out, keep=keep)     # pass 2: (SN4)
    cache = {"backend": "numba", "x": x3 if keep is None else keep, "owns_x": keep is not None,
             "mean": mean, "r": r, **mix, "gamma": gamma, "m": m, "shape": x.shape,
             "out_shape": x.shape, "dtype": x.dtype}
    if len(mix["means"]) == 3:
        cache["mean_bn"] = mix["means"][2].reshape(-1).copy()
        cache["var_bn"] = mix["vars"][2].reshape(-1).copy()
    return C.restore(y, x.shape, x.dtype), cache


def switch_norm_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused backward of :func:`switch_norm_forward`: returns ``(dx, dweight, dbias, dmean_weight,
    dvar_weight)`` as the reference. Pass 1 reads ``x`` and ``dy`` into the (N, C) row sums, the
    chain through (SN3)-(SN1) runs on (N, C) arrays, pass 2 writes ``dx``, equation (SN-dx)."""
    from ...statistics.switchnorm import switch_mixture_backward

    dout = check_cache(dout, cache, "switch_norm_backward")
    x3 = cache["x"]
    n, c, m = x3.shape
    dy3 = C.as_upstream(dout, x3.dtype, x3.shape)
    mean, r, gamma = cache["mean"], cache["r"], cache["gamma"]
    sdy, sdyx = channel_sums(dy3, x3, mean)                               # pass 1
    dweight, dbias = (sdyx * r).sum(axis=0), sdy.sum(axis=0)
    dmean = -gamma * r * sdy                                              # dL/dmu_nc = -sum g r
    dvar = -0.5 * gamma * sdyx * r**3                                     # dL/dsigma^2_nc
    # (SN3)-(SN1): the reference's chain, on (N, C) arrays
    dmu, dv, dlam_m, dlam_v = switch_mixture_backward(dmean, dvar, cache)
    dx = C.check_out(dx_out, x3.shape, x3.dtype, "dx_out")
    args = (np.ascontiguousarray(cache["mu"]), np.ascontiguousarray(np.broadcast_to(gamma * r, (n, c))),
            2.0 * dv / (m - 1), dmu / m)                                  # equation (SN-dx)
    if C.use_parallel(x3.size):
        _dx_parallel(dy3, x3, *args, dx, C.num_chunks(n * c))
    else:
        _dx_rows(dy3, x3, *args, dx, 0, n * c)
    return C.restore(dx, cache["shape"], cache["dtype"]), dweight, dbias, dlam_m, dlam_v
