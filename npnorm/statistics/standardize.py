r"""Standardization over a set of axes: the one operation behind LayerNorm, GroupNorm and InstanceNorm.

Given an array :math:`x` and a set :math:`S` of axes with :math:`m` elements per reduced slice,

.. math::
   \mu = \frac{1}{m}\sum_{S} x, \qquad
   \sigma^2 = \frac{1}{m}\sum_{S} (x - \mu)^2 \quad\text{(biased)}, \qquad
   r = (\sigma^2 + \epsilon)^{-1/2}, \qquad
   \hat x = (x - \mu)\, r .

Its backward pass, for an upstream gradient :math:`g = \partial L/\partial \hat x`, is

.. math::
   \frac{\partial L}{\partial x} = r\left(g - \overline{g} - \hat x\,\overline{g \hat x}\right),
   \qquad \overline{(\cdot)} = \frac{1}{m}\sum_S (\cdot),

derived in the book's batch-normalization chapter. Everything here is computed in float64; the
statistics use two passes (mean first, then the mean of squared deviations), never
:math:`E[x^2] - E[x]^2`, which cancels catastrophically when the mean is large.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["standardize_forward", "standardize_backward"]


def standardize_forward(x: np.ndarray, axes: tuple[int, ...], eps: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Return ``(x_hat, cache)`` with ``x_hat`` standardized over ``axes`` (float64).

    The cache holds only new arrays (never a view of ``x``). An empty set (``m = 0``) gets the
    statistics 0 (no division by zero); its ``x_hat`` is empty anyway."""
    x = np.asarray(x, dtype=np.float64)
    m = max(int(np.prod([x.shape[a] for a in axes], dtype=np.int64)), 1)
    mean = x.sum(axis=axes, keepdims=True) / m                # mu
    xc = x - mean                                             # x - mu
    var = np.sum(xc * xc, axis=axes, keepdims=True) / m       # biased variance
    rstd = 1.0 / np.sqrt(var + eps)                           # r = 1 / sqrt(var + eps)
    x_hat = xc * rstd
    return x_hat, {"x_hat": x_hat, "rstd": rstd, "mean": mean, "var": var, "axes": axes}


def standardize_backward(dx_hat: np.ndarray,
                         cache: dict[str, Any]) -> np.ndarray:
    """Gradient with respect to ``x`` given the gradient with respect to
    ``x_hat`` (float64)."""
    x_hat, rstd, axes = cache["x_hat"], cache["rstd"], cache["axes"]
    g = np.asarray(dx_hat, dtype=np.float64)
    m = max(int(np.prod([g.shape[a] for a in axes], dtype=np.int64)), 1)
    g_mean = g.sum(axis=axes, keepdims=True) / m
    gx_mean = np.sum(g * x_hat, axis=axes, keepdims=True) / m
    return rstd * (g - g_mean - x_hat * gx_mean)
