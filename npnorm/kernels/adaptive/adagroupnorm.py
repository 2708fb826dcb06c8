r"""Fused AdaGN (adaptive GroupNorm) on the GroupNorm kernels.

The GroupNorm kernels (:mod:`npnorm.kernels.statistics.groupnorm`) already take a scale and a shift
per (sample, channel). AdaGN's output

.. math:: y = (\gamma_c \hat x + \beta_c)(1 + s_{n,c}) + t_{n,c}
            = (x - \mu_{n,g})\, r_{n,g}\, a_{n,c} + b_{n,c},
   \qquad a = \gamma (1 + s), \quad b = \beta (1 + s) + t

is one pass of that kernel after the group statistics (:math:`\gamma = 1, \beta = 0` without
GroupNorm's own affine): statistics and modulation fused. Each group's block (``C/G`` channels of one
sample, 32 KiB for 8 channels of 32 x 32 float32) is read from memory once and stays in the cache for
the two statistics passes and the output pass, which also writes the private copy of ``x`` that the
backward pass reads (``keep_out=``: a layer passes the copy of its previous cache). Memory traffic:
read ``x``, write ``y`` and the copy (3 ``x``-sized streams; 2 when ``x`` had to be converted to a
private contiguous array anyway). The backward kernel with the same :math:`a` writes :math:`dx` and returns the per-(n, c) sums
:math:`\Sigma^{dy}` and :math:`\Sigma^{dy(x-\mu)}` (per group: one pass for the sums, one for
:math:`dx`, over a block that stays in the cache, so ``x`` and ``dy`` are read from memory once and
``dx`` written once: 3 streams), from which every other gradient is a few
``(N, C)`` operations:

.. math:: \partial L/\partial t = \Sigma^{dy}, \quad
          \partial L/\partial s = \gamma\, r\, \Sigma^{dy(x-\mu)} + \beta\, \Sigma^{dy}, \quad
          \partial L/\partial \gamma = \textstyle\sum_n (1+s)\, r\, \Sigma^{dy(x-\mu)}, \quad
          \partial L/\partial \beta = \textstyle\sum_n (1+s)\, \Sigma^{dy}.

The projection of the embedding (a small matrix product) stays in NumPy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._checks import check_cache
from .. import _common as C
from ..statistics.groupnorm import grouped_backward, grouped_forward

__all__ = ["ada_group_norm_forward", "ada_group_norm_backward"]


def _shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return shape[0], shape[1], int(np.prod(shape[2:]))


def _dscale_per_element(dy3: np.ndarray, x3: np.ndarray, cache: dict[str, Any]) -> np.ndarray:
    """``sum_s dy (gamma x_hat + beta)`` per (n, c) in float64, element by element (the reference's
    order of operations, for an upstream with inf or NaN)."""
    n, c, s = x3.shape
    g = cache["groups"]
    xg = x3.reshape(n, g, (c // g) * s).astype(np.float64)
    x_hat = ((xg - cache["mean"].reshape(n, g, 1)) * cache["rstd"].reshape(n, g, 1)).reshape(n, c, s)
    h = x_hat * cache["gamma"].reshape(1, c, 1) + cache["beta"].reshape(1, c, 1)
    with np.errstate(invalid="ignore", over="ignore"):
        return (dy3.astype(np.float64) * h).sum(axis=2)


def ada_group_norm_forward(x: np.ndarray, emb: np.ndarray, linear_weight: np.ndarray, linear_bias: np.ndarray,
                           num_groups: int, eps: float = 1e-5, act: str | None = None,
                           weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                           *, out: np.ndarray | None = None, keep_out: np.ndarray | None = None):
    """Fused AdaGN forward, same signature and result as the NumPy reference (plus ``out=`` and
    ``keep_out=``, a buffer the private copy of ``x`` may be written to)."""
    from ...adaptive._modulation import project_forward  # here, not at the top: no import cycle

    n, c, s = _shape3(x.shape)
    if c % num_groups:
        raise ValueError(f"ada_group_norm_forward: num_groups={num_groups} must divide the {c} channels")
    p, p_cache = project_forward(emb, linear_weight, linear_bias, act)
    one_s, shift = 1.0 + p[:, :c], p[:, c:]
    gamma = C.as_f64(weight, (1, c), 1.0)
    beta = C.as_f64(bias, (1, c), 0.0)
    a = np.ascontiguousarray(gamma * one_s)
    b = np.ascontiguousarray(beta * one_s + shift)
    x3 = C.as_input(x, (n, c, s))
    y = C.check_out(out, x3.shape, x3.dtype)
    # the cache never aliases the caller's array (editing x must not change dx): when x3 is a view of
    # x, the forward kernel copies each block into `keep` while the block is in the cache
    keep = C.keep_buffer(x, x3, keep_out) if x3.size else None
    mean, _, rstd = grouped_forward(x3, num_groups, a, b, eps, y, keep)
    cache = {"backend": "numba", "x": x3 if keep is None else keep, "owns_x": keep is not None,
             "groups": num_groups, "a": a, "one_s": one_s, "gamma": gamma,
             "beta": beta, "mean": mean, "rstd": rstd, "proj": p_cache, "shape": x.shape,
             "out_shape": x.shape, "dtype": x.dtype,
             "emb_dtype": emb.dtype, "has_weight": weight is not None, "has_bias": bias is not None}
    return C.restore(y, x.shape, x.dtype), cache


def ada_group_norm_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused AdaGN backward: ``(dx, demb, dlinear_weight, dlinear_bias, dweight, dbias)``."""
    from ...adaptive._modulation import project_backward

    dout = check_cache(dout, cache, "ada_group_norm_backward")
    x3, groups = cache["x"], cache["groups"]
    dy3 = C.as_upstream(dout, x3.dtype, x3.shape)
    dx = C.check_out(dx_out, x3.shape, x3.dtype, "dx_out")
    sdy, sdyx = grouped_backward(dy3, x3, groups, cache["a"], cache["mean"], cache["rstd"], dx)
    n, c = sdy.shape
    r = np.repeat(cache["rstd"].reshape(n, groups), c // groups, axis=1)   # (N, C)
    sdxh = sdyx * r                                                         # sum dy * x_hat
    dscale = cache["gamma"] * sdxh + cache["beta"] * sdy
    if not np.isfinite(dscale).all():
        # an inf (or NaN) in dout: gamma sum(dy x_hat) + beta sum(dy) can be inf - inf = NaN where the
        # reference's sum of dy (gamma x_hat + beta) is +-inf; then sum per element as it does
        dscale = _dscale_per_element(dy3, x3, cache)
    demb, dlw, dlb = project_backward(np.concatenate([dscale, sdy], axis=1), cache["proj"])
    dweight = (cache["one_s"] * sdxh).sum(axis=0) if cache["has_weight"] else None
    dbias = (cache["one_s"] * sdy).sum(axis=0) if cache["has_bias"] else None
    return (C.restore(dx, cache["shape"], cache["dtype"]), demb.astype(cache["emb_dtype"], copy=False),
            dlw, dlb, dweight, dbias)
