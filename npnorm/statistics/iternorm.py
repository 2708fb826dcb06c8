r"""Iterative normalization (Huang et al., 2019): ``IterNorm``, batch *whitening* - decorrelated
BatchNorm (Huang et al., 2018) with the eigendecomposition replaced by Newton's iterations.

BatchNorm standardizes each channel on its own; whitening also removes the correlations between the
channels of a group. For a group of :math:`d` channels, let :math:`X` be the :math:`d \times m`
matrix of their values over the :math:`m` batch positions (:math:`m = N`, or :math:`NHW`):

.. math::
   X_c = X - \mu \mathbf 1^\top, \qquad \Sigma = \tfrac1m X_c X_c^\top + \epsilon I, \qquad
   \Sigma_N = \Sigma / \operatorname{tr}\Sigma                                              \tag{iternorm-forward}
.. math::
   P_0 = I, \qquad P_k = \tfrac12\left(3 P_{k-1} - P_{k-1}^3 \Sigma_N\right), \quad k = 1..T   \tag{iternorm-forward}
.. math::
   W = P_T / \sqrt{\operatorname{tr}\Sigma} \;\approx\; \Sigma^{-1/2}, \qquad
   \hat X = W X_c, \qquad y = \gamma \hat x + \beta                                          \tag{iternorm-forward}

The iteration converges because the eigenvalues of :math:`\Sigma_N` lie in :math:`(0, 1]`; a
finite :math:`T` (5) whitens only approximately, which is the point of the paper (a little
"stochastic normalization disturbance" is kept). In floating point the iteration is not
self-correcting: round-off breaks the commutation of :math:`P_k` with :math:`\Sigma_N` and grows once
the iterate has converged (measured on a 4-channel batch with condition number 24: 10 iterations
whiten to 2e-10, 20 iterations diverge), so keep :math:`T` small. Running averages of :math:`\mu` and :math:`W`
(``momentum`` 0.1) replace them in evaluation.

Backward: reverse mode through eq. (iternorm-forward), one Newton step at a time. With :math:`Y = ABC` the
rule :math:`dA = dY (BC)^\top`, etc., gives for :math:`P_k = \tfrac32 P - \tfrac12 P P P \Sigma_N`:

.. math::
   dP_{k-1} = \tfrac32 dP_k - \tfrac12\left(dP_k (P^2\Sigma_N)^\top + P^\top dP_k (P\Sigma_N)^\top
             + (P^2)^\top dP_k \Sigma_N^\top\right), \qquad
   d\Sigma_N \mathrel{+}= -\tfrac12 (P^3)^\top dP_k ,                                        \tag{iternorm-backward}

then through the trace, :math:`d X_c = \tfrac1m (d\Sigma + d\Sigma^\top) X_c + W^\top d\hat X` and
:math:`dX = dX_c - \overline{dX_c}` (the mean over the batch positions).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import (as_float_array, check_channel_groups, check_channels, check_dout, check_eps,
                       check_momentum, check_ndim, check_positive_int)
from ..backend import check_backend, pick, pick_for_cache
from ..base import Module
from ..kernels._common import run_reusing
from ..kernels.statistics import iternorm as _kernels

__all__ = ["iter_norm_forward", "iter_norm_backward", "iter_norm_eval_forward", "iter_norm_eval_backward",
           "newton_whitening", "newton_whitening_backward", "IterNorm"]


def _to_groups(x: np.ndarray, groups: int) -> np.ndarray:
    """(N, C, *) -> (G, d, m): each group's channels as rows, every batch position as a column."""
    c = x.shape[1]
    return np.moveaxis(x, 1, 0).reshape(groups, c // groups, -1)


def _from_groups(z: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    moved = (shape[1], shape[0]) + tuple(shape[2:])
    return np.moveaxis(z.reshape(moved), 0, 1)


def newton_whitening(sigma: np.ndarray, T: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
    """Eq. (iternorm-forward) for a stack of covariance matrices ``sigma`` (G, d, d):
    returns ``(W, [P_0, ..., P_T], Sigma_N, tr)``."""
    tr = np.trace(sigma, axis1=1, axis2=2)[:, None, None]
    s_n = sigma / tr
    p = np.broadcast_to(np.eye(sigma.shape[1]), sigma.shape).copy()
    ps = [p]
    for _ in range(T):
        p = 1.5 * p - 0.5 * p @ p @ p @ s_n                                      # eq. (iternorm-forward)
        ps.append(p)
    return p / np.sqrt(tr), ps, s_n, tr


def iter_norm_forward(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, groups: int = 1,
                      T: int = 5, eps: float = 1e-5):
    """Training-mode IterNorm of ``(N, C, *)`` input with ``groups`` groups of channels.
    Returns ``(out, cache)``; the cache has the batch ``mean`` (C,) and whitening matrices ``wm``
    (G, d, d) for the running averages."""
    x64 = np.asarray(x, dtype=np.float64)
    check_channel_groups(x64, groups, "iter_norm_forward")
    xg = _to_groups(x64, groups)
    m = xg.shape[2]
    mean = xg.mean(axis=2, keepdims=True)
    xc = xg - mean
    d = xg.shape[1]
    sigma = xc @ xc.transpose(0, 2, 1) / m + eps * np.eye(d)                     # eq. (iternorm-forward)
    wm, ps, s_n, tr = newton_whitening(sigma, T)
    x_hat = _from_groups(wm @ xc, x64.shape)                                     # eq. (iternorm-forward)
    view = (1, -1) + (1,) * (x64.ndim - 2)
    out = x_hat if weight is None else x_hat * weight.reshape(view)
    if bias is not None:
        out = out + bias.reshape(view)
    cache = {"x_hat": x_hat, "xc": xc, "wm": wm, "ps": ps, "s_n": s_n, "sigma": sigma, "tr": tr,
             "weight": weight, "has_bias": bias is not None, "groups": groups, "dtype": x.dtype,
             "mean": mean.reshape(-1), "out_shape": x64.shape}
    return out.astype(x.dtype, copy=False), cache


def iter_norm_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Reverse mode through :func:`iter_norm_forward`,
    eq. (iternorm-backward). Returns ``(dx, dweight, dbias)``."""
    x_hat = cache["x_hat"]
    dy = np.asarray(check_dout(dout, x_hat.shape, where="iter_norm_backward"),
                    dtype=np.float64)
    axes = (0,) + tuple(range(2, dy.ndim))
    view = (1, -1) + (1,) * (dy.ndim - 2)
    weight = cache["weight"]
    dweight = np.sum(dy * x_hat, axis=axes) if weight is not None else None
    dbias = dy.sum(axis=axes) if cache["has_bias"] else None
    g = dy if weight is None else dy * weight.reshape(view)
    dxh = _to_groups(g, cache["groups"])
    xc, wm = cache["xc"], cache["wm"]
    m = xc.shape[2]
    t_ = lambda a: a.transpose(0, 2, 1)  # noqa: E731
    dwm = dxh @ t_(xc)
    dxc = t_(wm) @ dxh
    dsigma = newton_whitening_backward(dwm, cache["ps"], cache["s_n"],
                                       cache["sigma"], cache["tr"])
    dxc = dxc + (dsigma + t_(dsigma)) @ xc / m
    dxg = dxc - dxc.mean(axis=2, keepdims=True)
    dx = _from_groups(dxg, dy.shape)
    return dx.astype(cache["dtype"], copy=False), dweight, dbias


def newton_whitening_backward(dwm: np.ndarray, ps: list[np.ndarray],
                              s_n: np.ndarray, sigma: np.ndarray,
                              tr: np.ndarray) -> np.ndarray:
    """Reverse mode through :func:`newton_whitening`,
    eq. (iternorm-backward): from the gradient ``dwm`` (G, d, d) of the
    whitening matrix ``W`` to the gradient of the covariance ``Sigma``."""
    t_ = lambda a: a.transpose(0, 2, 1)  # noqa: E731
    # W = P_T / sqrt(tr)
    dp = dwm / np.sqrt(tr)
    dtr = -0.5 * tr ** -1.5 * np.sum(dwm * ps[-1], axis=(1, 2), keepdims=True)
    ds_n = np.zeros_like(s_n)
    # eq. (iternorm-backward)
    for p in reversed(ps[:-1]):
        p2 = p @ p
        ds_n = ds_n - 0.5 * t_(p2 @ p) @ dp
        dp = 1.5 * dp - 0.5 * (dp @ t_(p2 @ s_n)
                               + t_(p) @ dp @ t_(p @ s_n)
                               + t_(p2) @ dp @ t_(s_n))
    # Sigma_N = Sigma / tr, tr = trace(Sigma)
    dsigma = ds_n / tr
    dtr = dtr - np.sum(ds_n * sigma, axis=(1, 2), keepdims=True) / tr**2
    return dsigma + dtr * np.eye(sigma.shape[1])


def iter_norm_eval_forward(x: np.ndarray, running_mean: np.ndarray, running_wm: np.ndarray,
                           weight: np.ndarray | None, bias: np.ndarray | None, groups: int = 1):
    r"""Evaluation-mode IterNorm: :math:`y = \gamma\,\hat W (x - \hat\mu) + \beta` with the running
    mean (C,) and running whitening matrices (G, d, d). Returns ``(out, cache)``; the cache holds
    copies of the whitening matrix and the weight, so that later updates of the buffers or the
    parameters cannot change the gradient."""
    x64 = np.asarray(x, dtype=np.float64)
    check_channel_groups(x64, groups, "iter_norm_eval_forward")
    wm = np.array(running_wm, dtype=np.float64)
    xc = _to_groups(x64, groups) - np.asarray(running_mean, dtype=np.float64).reshape(groups, -1, 1)
    x_hat = _from_groups(wm @ xc, x64.shape)
    view = (1, -1) + (1,) * (x64.ndim - 2)
    out = x_hat if weight is None else x_hat * weight.reshape(view)
    out = out if bias is None else out + bias.reshape(view)
    cache = {"x_hat": x_hat, "dtype": x.dtype, "wm": wm, "groups": groups, "out_shape": x64.shape,
             "weight": None if weight is None else np.array(weight, dtype=np.float64)}
    return out.astype(x.dtype, copy=False), cache


def iter_norm_eval_backward(dout: np.ndarray, cache: dict[str, Any]):
    r"""Backward of :func:`iter_norm_eval_forward`: :math:`dx = \hat W^\top (\gamma\,dy)`; returns
    ``(dx, dweight, dbias)`` (the parameter gradients always, as sums over every axis but C)."""
    x_hat = cache["x_hat"]
    dy = np.asarray(check_dout(dout, x_hat.shape, where="iter_norm_eval_backward"), dtype=np.float64)
    axes = (0,) + tuple(range(2, dy.ndim))
    view = (1, -1) + (1,) * (dy.ndim - 2)
    dweight, dbias = np.sum(dy * x_hat, axis=axes), dy.sum(axis=axes)
    w = cache["weight"]
    g = dy if w is None else dy * w.reshape(view)
    dx = _from_groups(cache["wm"].transpose(0, 2, 1) @ _to_groups(g, cache["groups"]), dy.shape)
    return dx.astype(cache["dtype"], copy=False), dweight, dbias


class IterNorm(Module):
    """Iterative (Newton) batch whitening, as the reference implementation's ``IterNorm(num_features,
    num_groups=1, num_channels=None, T=5, eps=1e-5, momentum=0.1, affine=True)``.

    Input ``(N, C)`` or ``(N, C, *)``; channels in ``num_groups`` contiguous groups (or groups of
    ``num_channels`` channels, which overrides ``num_groups``), each whitened over the batch positions
    with ``T`` Newton iterations, eq. (iternorm-forward). Parameters ``weight`` (ones), ``bias``
    (zeros), per channel; buffers ``running_mean`` (C,) and ``running_wm`` (G, d, d) (identity),
    updated with ``momentum`` as BatchNorm and used in evaluation. ``backend`` (keyword-only):
    ``"numba"`` (the fused passes of :mod:`npnorm.kernels.statistics.iternorm`), ``"numpy"`` (the
    reference functions above) or ``None`` (the global default when the layer runs).

    Differences from the reference code: its ``dim`` argument (2 or 4) is read from the input here;
    the affine parameters are ``(C,)`` vectors (reference: ``(1, C, 1, 1)``); float64. PyTorch has
    no whitening layer. Decorrelated BN's exact ZCA (eigendecomposition) is the ``T -> infinity``
    limit. An empty batch (``N = 0``) gives an empty output, zero parameter gradients and leaves the
    buffers alone.

    Rejected on purpose (``ValueError``; the reference code accepts them): ``eps <= 0`` (it keeps
    the covariance positive definite) and ``momentum`` outside [0, 1] or ``None``.
    """

    def __init__(self, num_features: int, num_groups: int = 1, num_channels: int | None = None, T: int = 5,
                 eps: float = 1e-5, momentum: float = 0.1, affine: bool = True, *, dtype: Any = np.float64,
                 backend: str | None = None) -> None:
        super().__init__()
        name = "IterNorm"
        self.backend = check_backend(backend, name, allow_none=True)
        self.num_features = check_positive_int(num_features, "num_features", name)
        if num_channels is not None:
            num_channels = check_positive_int(num_channels, "num_channels", name)
            if num_features % num_channels:
                raise ValueError(f"IterNorm: num_features={num_features} is not divisible by num_channels={num_channels}")
            num_groups = num_features // num_channels
        self.num_groups = check_positive_int(num_groups, "num_groups", name)
        if num_features % self.num_groups:
            raise ValueError(f"IterNorm: num_features={num_features} is not divisible by num_groups={num_groups}")
        self.T = check_positive_int(T, "T", name)
        self.eps = check_eps(eps, where=name)
        self.momentum = check_momentum(momentum, where=name)
        if self.momentum is None:
            raise ValueError("IterNorm: momentum must be a float in [0, 1], got None")
        self.affine = bool(affine)
        self.dtype = np.dtype(dtype)
        if self.affine:
            self.params["weight"] = np.ones(num_features, dtype=self.dtype)
            self.params["bias"] = np.zeros(num_features, dtype=self.dtype)
        d = num_features // self.num_groups
        self.running_mean = np.zeros(num_features, dtype=self.dtype)
        self.running_wm = np.broadcast_to(np.eye(d), (self.num_groups, d, d)).astype(self.dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "IterNorm")
        check_ndim(x, (2, 3, 4, 5), "(N, C, *)", "x", "IterNorm")
        check_channels(x, self.num_features, "num_features", 1, "x", "IterNorm")
        w, b = self.params.get("weight"), self.params.get("bias")
        if not self.training:
            # the eval functions copy the whitening matrix and the weight: backward must not read
            # self.running_wm or self.params, which may change in between
            forward = pick(self.backend, iter_norm_eval_forward, _kernels.iter_norm_eval_forward)
            out, cache = run_reusing(forward, _kernels.iter_norm_eval_forward, self._cache, x, self.running_mean,
                                     self.running_wm, w, b, self.num_groups)
            self._cache = ("eval", cache)
            return out
        m = x.size // self.num_features
        if m <= 1:
            if m == 0:
                self._cache = ("empty", {"out_shape": x.shape, "dtype": x.dtype})
                return np.array(x, copy=True)
            raise ValueError(f"IterNorm: expected more than 1 value per channel when training, got input of "
                             f"shape {x.shape}")
        forward = pick(self.backend, iter_norm_forward, _kernels.iter_norm_forward)
        out, cache = run_reusing(forward, _kernels.iter_norm_forward, self._cache, x, w, b, self.num_groups,
                                 self.T, self.eps)
        a = self.momentum
        self.running_mean = ((1 - a) * self.running_mean + a * cache["mean"]).astype(self.dtype)
        self.running_wm = ((1 - a) * self.running_wm + a * cache["wm"]).astype(self.dtype)
        self._cache = ("train", cache)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        mode, cache = self._require_cache()
        dy = check_dout(dout, cache["out_shape"], where="IterNorm.backward")
        if mode == "train":
            backward = pick_for_cache(cache, iter_norm_backward, _kernels.iter_norm_backward)
        elif mode == "eval":
            backward = pick_for_cache(cache, iter_norm_eval_backward, _kernels.iter_norm_eval_backward)
        else:                                        # an empty batch: nothing flows anywhere
            c = self.num_features
            dx, dweight, dbias = np.array(dy, dtype=cache["dtype"]), np.zeros(c), np.zeros(c)
            backward = None
        if backward is not None:
            dx, dweight, dbias = backward(dout, cache)
        if self.affine:
            self.grads["weight"] = np.asarray(dweight).astype(self.dtype, copy=False)
            self.grads["bias"] = np.asarray(dbias).astype(self.dtype, copy=False)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.num_features}, num_groups={self.num_groups}, T={self.T}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}")


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402


def _random_whitening(layer: IterNorm, rng: np.random.Generator) -> None:
    g, d, _ = layer.running_wm.shape
    layer.running_wm = np.eye(d) + rng.normal(0, 0.2, (g, d, d))


register(Spec(
    name="IterNorm", cls=IterNorm, pytorch=None, reference="Huang et al., 2019",
    reduces_over="N (and every spatial axis), jointly over each group's channels (covariance)",
    differences="reference implementation's arguments without dim; (C,) affine vectors; float64",
    setup=_random_whitening, backends=("numpy", "numba"),
    cases=(
        Case("NC-one-group", {"num_features": 3}, ((7, 3),)),
        Case("NCHW-2-groups", {"num_features": 4, "num_groups": 2, "T": 3}, ((3, 4, 2, 2),)),
        Case("no-affine-T8", {"num_features": 3, "T": 8, "affine": False}, ((2, 3, 5),), modes=("train",)),
    ),
))
