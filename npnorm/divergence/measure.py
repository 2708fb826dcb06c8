r"""The affine divergence, measured: what one SGD step does to a layer's outputs.

For a layer :math:`z = f_\theta(x)` and an upstream gradient :math:`G = \partial L/\partial z`, one
step :math:`\theta' = \theta - \eta\,\partial L/\partial\theta` moves the outputs by
:math:`\Delta z = f_{\theta'}(x) - f_\theta(x)`; steepest descent on the outputs themselves would move
them by :math:`-\eta G`. For layers linear in their parameters (``Linear``, ``Conv2d``,
:class:`~npnorm.divergence.AffineLike`, :class:`~npnorm.divergence.PatchNormConv2d`) the step is
exactly a kernel applied to :math:`G`:

.. math::
   \text{affine:}\quad \Delta z_t = -\eta\sum_s (x_s^\top x_t + 1)\,G_s, \qquad
   \text{affine-like:}\quad \Delta z_t = -\eta\sum_s \frac{x_s^\top x_t + 1}{s_s\,s_t}\,G_s
                                                                                   \tag{NTK}

whose diagonal - the whole story for one sample - is :math:`\|x_t\|^2 + 1` (the *affine divergence*)
and exactly 1. For a convolution the samples are the (image, position) pairs and :math:`x` the
patches :math:`P`, so the diagonal is the per-position factor :math:`\|P\|^2 + 1`.

The derivation of (NTK) is exact (the layers are linear in their parameters); that the paper means
this and only this by the divergence is this library's reading of its summary (see
:mod:`npnorm.divergence.affine_like`).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .patchnorm import patch_sq_norms

__all__ = ["sgd_step_change", "step_ratio", "affine_kernel", "affine_like_kernel", "conv_divergence_map",
           "position_step_factors"]


def sgd_step_change(layer: Any, x: np.ndarray, dout: np.ndarray, lr: float) -> np.ndarray:
    """:math:`\\Delta z`: the change of ``layer(x)`` after one plain SGD step (learning rate ``lr``)
    taken with the upstream gradient ``dout``. The layer passed in is not changed (a copy steps)."""
    m = copy.deepcopy(layer)
    z0 = np.asarray(m(x), dtype=np.float64)
    m.backward(dout)
    for key, g in m.grads.items():
        m.params[key] = m.params[key] - lr * g
    z1 = np.asarray(m(x), dtype=np.float64)
    return z1 - z0


def step_ratio(layer: Any, X: np.ndarray, lr: float = 1e-3, seed: int = 0) -> dict[str, np.ndarray]:
    """For every sample of ``X`` **on its own** (batch of one), a random upstream gradient :math:`g`
    and one SGD step: the factor :math:`r` with :math:`\\Delta z = r\\,(-\\eta g)` (least squares) and
    the largest deviation from that proportionality (round-off when :math:`\\Delta z \\parallel g`).

    Returns ``{"norm": ||x|| per sample, "ratio": r per sample, "residual": max |dz - r(-eta g)| / |eta g|}``.
    """
    rng = np.random.default_rng(seed)
    norms, ratios, resid = [], [], []
    for x in X:
        xb = x[None]
        out_shape = np.shape(copy.deepcopy(layer)(xb))
        g = rng.standard_normal(out_shape)
        dz = sgd_step_change(layer, xb, g, lr)
        ideal = -lr * g
        r = float(np.sum(dz * ideal) / np.sum(ideal * ideal))
        norms.append(float(np.linalg.norm(x)))
        ratios.append(r)
        resid.append(float(np.max(np.abs(dz - r * ideal)) / np.max(np.abs(ideal))))
    return {"norm": np.array(norms), "ratio": np.array(ratios), "residual": np.array(resid)}


def affine_kernel(X: np.ndarray) -> np.ndarray:
    """:math:`K = XX^\\top + 1` for samples as rows of ``X`` (N, D): the affine layer's step kernel (NTK)."""
    X = np.asarray(X, dtype=np.float64)
    return X @ X.T + 1.0


def affine_like_kernel(X: np.ndarray) -> np.ndarray:
    """:math:`\\tilde K_{st} = (x_s^\\top x_t + 1)/(s_s s_t)`: the cosine of the augmented inputs
    :math:`[x;1]`, the affine-like layer's step kernel; its diagonal is 1."""
    K = affine_kernel(X)
    s = np.sqrt(np.diag(K))
    return K / np.outer(s, s)


def conv_divergence_map(x: np.ndarray, kernel, stride=1, padding=0) -> np.ndarray:
    """:math:`\\|P_{n,q}\\|^2 + 1` at every output position of a convolution: ``(N, H_out, W_out)``,
    the self-term of a plain convolution's step kernel (PatchNorm's is 1 everywhere)."""
    q, _ = patch_sq_norms(x, kernel, stride, padding)
    return q[:, 0] + 1.0


def position_step_factors(layer: Any, x: np.ndarray, positions, lr: float = 1e-3, seed: int = 0) -> np.ndarray:
    """For each output position ``(n, i, j)``: an upstream gradient that is non-zero only there (random
    over the output channels), one SGD step, and the factor :math:`r` with
    :math:`\\Delta z_{n,:,i,j} = r\\,(-\\eta g)` at that position (the diagonal of the convolution's
    step kernel, :math:`\\|P\\|^2 + 1` for a plain convolution)."""
    rng = np.random.default_rng(seed)
    out_shape = np.shape(copy.deepcopy(layer)(x))
    factors = []
    for n, i, j in positions:
        g = np.zeros(out_shape)
        g[n, :, i, j] = rng.standard_normal(out_shape[1])
        dz = sgd_step_change(layer, x, g, lr)[n, :, i, j]
        ideal = -lr * g[n, :, i, j]
        factors.append(float(np.sum(dz * ideal) / np.sum(ideal * ideal)))
    return np.array(factors)
