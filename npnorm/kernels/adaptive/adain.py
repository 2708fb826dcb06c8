r"""AdaIN on the GroupNorm kernels (one channel per group, ``G = C``).

AdaIN uses the statistics kernel twice - on the content (fused with the output pass, whose
per-(sample, channel) scale and shift are the style's standard deviation and mean) and on the style
(statistics only) - and its backward reuses the GroupNorm backward, whose per-(n, c) sums
:math:`\sum dy` and :math:`\sum dy\,(x-\mu)` are exactly the gradients with respect to the style's
mean and standard deviation (up to a factor :math:`r`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._checks import check_adain_input, check_cache
from .. import _common as C
from ..affine import channel_affine
from ..statistics.groupnorm import group_stats, grouped_backward, grouped_forward

__all__ = ["adain_forward", "adain_backward"]


def adain_forward(content: np.ndarray, style: np.ndarray, eps: float = 1e-5, *, out: np.ndarray | None = None,
                  keep_out: np.ndarray | None = None):
    """Fused AdaIN: style statistics (stats kernel), then content statistics + output in one kernel.
    Same checks as the reference; the cache holds private copies of the content (written by the
    output kernel while it reads each block) and of the style, never the caller's arrays."""
    content, style, eps = check_adain_input(content, style, eps, "adain_forward")
    n, c, s_len = C.ncs(content.shape)
    x3 = C.as_input(content, (n, c, s_len))
    s3 = C.as_input(style, C.ncs(style.shape))
    if np.may_share_memory(style, s3):
        s3 = s3.copy()
    s_mean, s_var = group_stats(s3, c)                       # (P, C), P = 1 or N
    s_std = np.sqrt(s_var + eps)
    y = C.check_out(out, x3.shape, x3.dtype)
    keep = C.keep_buffer(content, x3, keep_out)
    mean, _, rstd = grouped_forward(x3, c, s_std, s_mean, eps, y, keep)
    cache = {"backend": "numba", "x": x3 if keep is None else keep, "owns_x": keep is not None, "style": s3, "s_mean": s_mean,
             "s_std": s_std, "mean": mean, "rstd": rstd, "shape": content.shape, "style_shape": style.shape,
             "out_shape": content.shape, "dtype": content.dtype, "style_dtype": style.dtype}
    return C.restore(y, content.shape, content.dtype), cache


def adain_backward(dout: np.ndarray, cache: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    r"""Fused AdaIN backward: returns ``(dcontent, dstyle)``.

    ``dcontent`` is the GroupNorm backward with scale :math:`\sigma(s)`; with its per-(n, c) sums,
    :math:`\partial L/\partial\mu(s) = \sum dy` and :math:`\partial L/\partial\sigma(s) = r \sum dy (x-\mu)`,
    and ``dstyle = (s - mu(s)) * dstd / (m sigma(s)) + dmean / m`` is one channel-affine pass.
    """
    dout = check_cache(dout, cache, "adain_backward")
    x3, s3 = cache["x"], cache["style"]
    c = x3.shape[1]
    dy3 = C.as_upstream(dout, x3.dtype, x3.shape)
    dx = np.empty_like(x3)
    sdy, sdyx = grouped_backward(dy3, x3, c, cache["s_std"], cache["mean"], cache["rstd"], dx)
    dmean, dstd = sdy, sdyx * cache["rstd"]
    if s3.shape[0] != x3.shape[0]:                           # one style for the whole batch
        dmean, dstd = dmean.sum(axis=0, keepdims=True), dstd.sum(axis=0, keepdims=True)
    m = s3.shape[2]
    dstyle = channel_affine(s3, cache["s_mean"], dstd / (m * cache["s_std"]), dmean / m)
    return (C.restore(dx, cache["shape"], cache["dtype"]),
            C.restore(dstyle, cache["style_shape"], cache["style_dtype"]))
