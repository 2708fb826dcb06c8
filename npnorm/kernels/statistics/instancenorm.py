r"""InstanceNorm on the GroupNorm kernels (one channel per group, ``G = C``).

InstanceNorm is GroupNorm with ``G = C``: every (sample, channel) of ``S`` contiguous elements is a
row. (AdaIN, which reuses the same kernels, is in :mod:`npnorm.kernels.adaptive.adain`.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._checks import check_min_ndim, check_nc_input, check_spatial
from .groupnorm import group_norm_backward, group_norm_forward

__all__ = ["instance_norm_forward", "instance_norm_backward"]


def instance_norm_forward(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
                          eps: float = 1e-5, *, out: np.ndarray | None = None,
                          keep_out: np.ndarray | None = None):
    """Fused InstanceNorm forward of ``x`` (N, C, *spatial): GroupNorm with one channel per group.
    The cache holds the instance ``mean`` and biased ``var`` of shape (N, C), as the reference's does
    (for the running statistics). Same checks and errors as the reference
    :func:`npnorm.statistics.instancenorm.instance_norm_forward`."""
    where = "instance_norm_forward"
    x, weight, bias, eps = check_nc_input(x, weight, bias, eps, where)
    check_min_ndim(x, 3, "(N, C, *spatial)", "x", where)
    check_spatial(x, where)
    return group_norm_forward(x, x.shape[1], weight, bias, eps, out=out, keep_out=keep_out)


def instance_norm_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused InstanceNorm backward: returns ``(dx, dweight, dbias)`` (GroupNorm's, with ``G = C``)."""
    return group_norm_backward(dout, cache, dx_out=dx_out, where="instance_norm_backward")
