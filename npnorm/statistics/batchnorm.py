r"""Batch normalization (Ioffe & Szegedy, 2015): ``BatchNorm1d``, ``BatchNorm2d`` and ``BatchNorm3d``.

For an input with channels on axis 1 - ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)`` - every channel
:math:`c` is standardized over all the other axes (the set :math:`S`, with :math:`m = |S|`
elements: :math:`m = N`, :math:`N L` or :math:`N H W`):

.. math::
   \mu_c = \frac{1}{m}\sum_{S} x                                   \tag{bn-mean}
.. math::
   \sigma_c^2 = \frac{1}{m}\sum_{S} (x - \mu_c)^2                  \tag{bn-var}
.. math::
   \hat x = \frac{x - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}}          \tag{bn-xhat}
.. math::
   y = \gamma_c \hat x + \beta_c                                   \tag{bn-affine}

The variance used to normalize is the **biased** one (divide by :math:`m`). In training mode the
running statistics are updated with

.. math::
   \hat\mu \leftarrow (1 - \alpha)\hat\mu + \alpha\mu_c, \qquad
   \hat\sigma^2 \leftarrow (1 - \alpha)\hat\sigma^2 + \alpha\,\frac{m}{m-1}\sigma_c^2 ,

where :math:`\alpha` is ``momentum`` (0.1) - note that the **unbiased** variance is stored, exactly as
PyTorch does - or :math:`\alpha = 1/t` after the :math:`t`-th batch when ``momentum=None``
(a cumulative average). In evaluation mode the running statistics replace :math:`\mu_c, \sigma_c^2`.

The backward pass is written twice: :func:`batch_norm_backward_staged` walks back through the
computational graph one node at a time; :func:`batch_norm_backward` is the simplified result

.. math::
   \frac{\partial L}{\partial x} = \frac{r}{m}\left(m\,g - \sum_S g - \hat x \sum_S g\,\hat x\right),
   \qquad g = \gamma_c\,\frac{\partial L}{\partial y}, \quad r = (\sigma_c^2 + \epsilon)^{-1/2}.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import (as_float_array, check_batch_stats, check_cache, check_channels, check_device, check_eps,
                       check_momentum, check_nc_input, check_ndim, check_positive_int, check_running_stats,
                       resolve_dtype)
from ..backend import check_backend, pick, pick_for_cache
from ..base import Module
from ..kernels._common import run_reusing
from ..kernels.statistics import batchnorm as _kernels

__all__ = [
    "batch_norm_forward",
    "batch_norm_backward",
    "batch_norm_backward_staged",
    "batch_norm_eval_forward",
    "batch_norm_eval_backward",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
]


def _channel_view(shape_ndim: int) -> tuple[int, ...]:
    """Shape that broadcasts a (C,) vector against an (N, C, ...) array."""
    return (1, -1) + (1,) * (shape_ndim - 2)


def _reduce_axes(ndim: int) -> tuple[int, ...]:
    return (0,) + tuple(range(2, ndim))


def batch_norm_forward(
    x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float = 1e-5
) -> tuple[np.ndarray, dict[str, Any]]:
    """Training-mode batch norm over every axis but 1, eq. (bn-mean) to eq. (bn-affine).

    Parameters
    ----------
    x : ndarray, shape (N, C, *)
        Input; float32 or float64 (computed in float64, returned in ``x.dtype``). ``N = 0`` (or an
        empty spatial size) gives an empty output.
    weight, bias : ndarray, shape (C,), or None
        :math:`\\gamma` and :math:`\\beta`; ``None`` means no affine transform.
    eps : float
        Added to the variance inside the square root; must be > 0.

    Returns
    -------
    out : ndarray, same shape and dtype as ``x``
    cache : dict
        Everything both backward passes need (copies and derived values, never a view of ``x`` or
        of the parameters), plus the batch ``mean`` and biased ``var`` (shape (C,); NaN for an
        empty batch) that the layer uses to update its running statistics.

    Raises
    ------
    TypeError
        ``x`` (or a parameter) is not a floating-point array.
    ValueError
        ``x`` has fewer than 2 dimensions or no channel, a parameter's shape is not ``(C,)``,
        ``eps <= 0``, or there is exactly one value per channel (as PyTorch's training mode).
    """
    where = "batch_norm_forward"
    x, weight, bias, eps = check_nc_input(x, weight, bias, eps, where)
    m = check_batch_stats(x, where)
    axes = _reduce_axes(x.ndim)
    view = _channel_view(x.ndim)
    x64 = np.asarray(x, dtype=np.float64)
    mean = x64.sum(axis=axes, keepdims=True) / max(m, 1)    # eq. (bn-mean)
    xc = x64 - mean
    var = np.sum(xc * xc, axis=axes, keepdims=True) / max(m, 1)   # eq. (bn-var), biased
    std = np.sqrt(var + eps)
    rstd = 1.0 / std
    x_hat = xc * rstd                                    # eq. (bn-xhat)
    out = x_hat.copy() if weight is None else x_hat * weight.reshape(view)   # never the cached x_hat
    if bias is not None:
        out = out + bias.reshape(view)                   # eq. (bn-affine)
    batch_mean, batch_var = mean.reshape(-1), var.reshape(-1)
    if m == 0:                                           # the statistics of an empty set are undefined
        batch_mean, batch_var = np.full_like(batch_mean, np.nan), np.full_like(batch_var, np.nan)
    cache = {
        "x_hat": x_hat, "xc": xc, "var": var, "std": std, "rstd": rstd, "m": m,
        "weight": weight, "has_bias": bias is not None, "axes": axes, "view": view, "dtype": x.dtype,
        "mean": batch_mean, "batch_var": batch_var, "out_shape": x.shape,
    }
    return out.astype(x.dtype, copy=False), cache


def _affine_grads(dy: np.ndarray, cache: dict[str, Any]) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Return ``(dweight, dbias, g)`` where ``g = dL/dx_hat``."""
    axes, view, weight = cache["axes"], cache["view"], cache["weight"]
    dbias = dy.sum(axis=axes) if cache["has_bias"] else None
    dweight = (dy * cache["x_hat"]).sum(axis=axes) if weight is not None else None
    g = dy if weight is None else dy * weight.reshape(view)
    return dweight, dbias, g


def batch_norm_backward_staged(dout: np.ndarray, cache: dict[str, Any]):
    """Backward pass through the graph of :func:`batch_norm_forward`, one
    node at a time.

    Forward graph (per channel, sums over the batch axes S, m elements)::

        mu    = sum(x) / m             (1)
        xc    = x - mu                 (2)
        var   = sum(xc**2) / m         (3)
        std   = sqrt(var + eps)        (4)
        rstd  = 1 / std                (5)
        x_hat = xc * rstd              (6)
        y     = gamma * x_hat + beta   (7)

    Returns ``(dx, dweight, dbias)`` (``None`` for a missing parameter).
    """
    dy = np.asarray(check_cache(dout, cache, "batch_norm_backward_staged"),
                    dtype=np.float64)
    # max(m, 1): an empty batch, every sum below is empty
    axes, m = cache["axes"], max(cache["m"], 1)
    xc, std, rstd = cache["xc"], cache["std"], cache["rstd"]
    dweight, dbias, dx_hat = _affine_grads(dy, cache)       # (7)
    # (6) x_hat = xc * rstd: the xc path, then the rstd path
    dxc = dx_hat * rstd
    drstd = np.sum(dx_hat * xc, axis=axes, keepdims=True)
    dstd = -drstd / std**2             # (5) d(1/s)/ds = -1/s^2
    dvar = dstd * 0.5 / std            # (4) d sqrt(v+eps)/dv = 1/(2 std)
    dxc = dxc + dvar * 2.0 * xc / m    # (3) d var/d xc = 2 xc / m
    dmu = -np.sum(dxc, axis=axes, keepdims=True)    # (2) xc = x - mu
    dx = dxc + dmu / m                 # (1) d mu/dx = 1/m
    return dx.astype(cache["dtype"], copy=False), dweight, dbias


def batch_norm_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Simplified (fused) backward pass of :func:`batch_norm_forward`.

    .. math:: dx = \\frac{r}{m}\\left(m g - \\sum_S g
              - \\hat x \\sum_S g \\hat x\\right)

    Returns ``(dx, dweight, dbias)`` (``None`` for a missing parameter).
    ``dout`` must have the forward output's shape (``ValueError``) and a
    floating dtype (``TypeError``).
    """
    dy = np.asarray(check_cache(dout, cache, "batch_norm_backward"),
                    dtype=np.float64)
    axes, m, x_hat, rstd = (cache["axes"], cache["m"], cache["x_hat"],
                            cache["rstd"])
    dweight, dbias, g = _affine_grads(dy, cache)
    g_sum = g.sum(axis=axes, keepdims=True)
    gx_sum = np.sum(g * x_hat, axis=axes, keepdims=True)
    dx = (rstd / max(m, 1)) * (m * g - g_sum - x_hat * gx_sum)
    return dx.astype(cache["dtype"], copy=False), dweight, dbias


def batch_norm_eval_forward(
    x: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    eps: float = 1e-5,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Evaluation-mode batch norm: an affine map with frozen statistics,
    :math:`y = \\gamma (x - \\hat\\mu) / \\sqrt{\\hat\\sigma^2 + \\epsilon} + \\beta`.

    Same argument checks as :func:`batch_norm_forward`; ``running_mean`` and ``running_var`` must
    have shape ``(C,)`` and the variance be >= 0. Any batch size is fine (also 0 and 1)."""
    where = "batch_norm_eval_forward"
    x, weight, bias, eps = check_nc_input(x, weight, bias, eps, where)
    running_mean, running_var = check_running_stats(x, running_mean, running_var, where)
    axes = _reduce_axes(x.ndim)
    view = _channel_view(x.ndim)
    rstd = (1.0 / np.sqrt(running_var + eps)).reshape(view)
    x_hat = (np.asarray(x, dtype=np.float64) - running_mean.reshape(view)) * rstd
    out = x_hat.copy() if weight is None else x_hat * weight.reshape(view)
    if bias is not None:
        out = out + bias.reshape(view)
    cache = {"x_hat": x_hat, "rstd": rstd, "weight": weight, "has_bias": bias is not None,
             "axes": axes, "view": view, "dtype": x.dtype, "out_shape": x.shape}
    return out.astype(x.dtype, copy=False), cache


def batch_norm_eval_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Backward of :func:`batch_norm_eval_forward`: the statistics are constants, so
    :math:`dx = \\gamma\\, r\\, dy`. Returns ``(dx, dweight, dbias)``."""
    dy = np.asarray(check_cache(dout, cache, "batch_norm_eval_backward"), dtype=np.float64)
    dweight, dbias, g = _affine_grads(dy, cache)
    dx = g * cache["rstd"]
    return dx.astype(cache["dtype"], copy=False), dweight, dbias


def init_norm_state(layer: Module, num_features: object, eps: object, momentum: object, affine: object,
                    track_running_stats: object, device: object, dtype: object, bias: object,
                    backend: object) -> None:
    """The checked constructor state BatchNorm and InstanceNorm share (PyTorch's arguments): backend,
    ``num_features``, ``eps``, ``momentum``, ``affine`` parameters (weight ones, bias zeros unless
    ``bias=False``) and, with ``track_running_stats``, the running statistics at PyTorch's initial
    state (mean 0, variance 1, no batches tracked)."""
    name = type(layer).__name__
    layer.backend = check_backend(backend, name, allow_none=True)
    check_device(device, name)
    layer.num_features = check_positive_int(num_features, "num_features", name)
    layer.eps = check_eps(eps, where=name)
    layer.momentum = check_momentum(momentum, where=name)
    layer.affine = bool(affine)
    layer.track_running_stats = bool(track_running_stats)
    layer.dtype = resolve_dtype(dtype, name)
    n = layer.num_features
    if layer.affine:
        layer.params["weight"] = np.ones(n, dtype=layer.dtype)
        if bias:
            layer.params["bias"] = np.zeros(n, dtype=layer.dtype)
    if layer.track_running_stats:
        layer.running_mean = np.zeros(n, dtype=layer.dtype)
        layer.running_var = np.ones(n, dtype=layer.dtype)
        layer.num_batches_tracked = 0
    else:
        layer.running_mean = layer.running_var = None
        layer.num_batches_tracked = None


class _BatchNorm(Module):
    """Shared bookkeeping of ``BatchNorm1d``, ``BatchNorm2d`` and ``BatchNorm3d``."""

    _ndims: tuple[int, ...] = ()
    _layout: str = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        bias: bool = True,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        init_norm_state(self, num_features, eps, momentum, affine, track_running_stats, device, dtype, bias,
                        backend)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches tracked (PyTorch's initial state)."""
        if self.track_running_stats:
            self.running_mean = np.zeros(self.num_features, dtype=self.dtype)
            self.running_var = np.ones(self.num_features, dtype=self.dtype)
            self.num_batches_tracked = 0

    def _validate(self, x: object) -> np.ndarray:
        name = type(self).__name__
        x = as_float_array(x, "x", name)
        check_ndim(x, self._ndims, self._layout, "x", name)
        check_channels(x, self.num_features, "num_features", 1, "x", name)
        return x

    @property
    def uses_batch_stats(self) -> bool:
        """True when the forward pass normalizes with the statistics of the current batch."""
        return self.training or not self.track_running_stats

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._validate(x)
        w, b = self.params.get("weight"), self.params.get("bias")
        if not self.uses_batch_stats:
            forward = pick(self.backend, batch_norm_eval_forward, _kernels.batch_norm_eval_forward)
            out, cache = run_reusing(forward, _kernels.batch_norm_eval_forward, self._cache,
                                     x, self.running_mean, self.running_var, w, b, self.eps)
            self._cache = ("eval", cache)
            return out
        m = check_batch_stats(x, type(self).__name__)
        forward = pick(self.backend, batch_norm_forward, _kernels.batch_norm_forward)
        out, cache = run_reusing(forward, _kernels.batch_norm_forward, self._cache, x, w, b, self.eps)
        if self.training and self.track_running_stats:
            self._update_running_stats(cache["mean"], cache["batch_var"], m)
        self._cache = ("train", cache)
        return out

    def _update_running_stats(self, mean: np.ndarray, var: np.ndarray, m: int) -> None:
        self.num_batches_tracked += 1
        if m == 0:   # PyTorch 2.13: an empty batch counts, but leaves the statistics as they are
            return
        factor = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
        unbiased = var * (m / (m - 1))
        self.running_mean = ((1 - factor) * self.running_mean + factor * mean).astype(self.dtype)
        self.running_var = ((1 - factor) * self.running_var + factor * unbiased).astype(self.dtype)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        mode, cache = self._require_cache()
        if mode == "eval":
            fn = pick_for_cache(cache, batch_norm_eval_backward, _kernels.batch_norm_eval_backward)
        else:
            fn = pick_for_cache(cache, batch_norm_backward, _kernels.batch_norm_backward)
        dx, dweight, dbias = fn(dout, cache)
        if "weight" in self.params:
            self.grads["weight"] = dweight.astype(self.dtype, copy=False)
        if "bias" in self.params:
            self.grads["bias"] = dbias.astype(self.dtype, copy=False)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                + ("bias=False, " if self.affine and "bias" not in self.params else "")
                + f"track_running_stats={self.track_running_stats}"
                + (f", backend={self.backend!r}" if self.backend else ""))


_BN_DOC = """
    Constructor: PyTorch 2.13's full signature ``(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, device=None, dtype=None, *, bias=True)``, plus npnorm's keyword-only
    ``backend``. ``bias=False`` (with ``affine=True``) keeps the learnable ``weight`` only.

    Empty and degenerate batches, as PyTorch 2.13: ``N = 0`` (or an empty spatial size) gives an
    empty output, empty input gradient and zero parameter gradients; in training the running
    statistics stay as they are while ``num_batches_tracked`` still increments. Batch statistics of
    exactly one value per channel raise ``ValueError`` (training mode, or evaluation without running
    statistics); evaluation with running statistics accepts any batch size.

    Deliberate differences from PyTorch:

    * ``eps <= 0`` is rejected (``ValueError``; PyTorch accepts it and divides by zero on a
      constant channel), and ``momentum`` outside [0, 1] is rejected (PyTorch accepts any float);
    * ``dtype=None`` means float64 for the parameters and buffers (PyTorch: float32); the output
      always has the input's dtype;
    * ``device``: only ``None`` or ``"cpu"`` (npnorm computes with NumPy on the CPU).

    ``backend`` (keyword-only): ``"numba"`` (fused kernels, :mod:`npnorm.kernels.statistics.batchnorm`;
    evaluation mode uses the affine-map kernel), ``"numpy"`` (the reference functions of this module)
    or ``None`` (the global default, :func:`npnorm.get_backend`).
"""


class BatchNorm1d(_BatchNorm):
    __doc__ = """Batch normalization of ``(N, C)`` or ``(N, C, L)`` input, as ``torch.nn.BatchNorm1d``.

    Statistics per channel over ``N`` (and ``L``); see the module docstring for the equations,
    running statistics and conventions. Parameters ``weight`` (ones) and ``bias`` (zeros) of shape
    ``(C,)``; buffers ``running_mean``, ``running_var``, ``num_batches_tracked``.
""" + _BN_DOC

    _ndims = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    __doc__ = """Batch normalization of ``(N, C, H, W)`` input, as ``torch.nn.BatchNorm2d``.

    Statistics per channel over ``(N, H, W)``; see the module docstring. Same parameters and buffers
    as :class:`BatchNorm1d`.
""" + _BN_DOC

    _ndims = (4,)
    _layout = "(N, C, H, W)"


class BatchNorm3d(_BatchNorm):
    __doc__ = """Batch normalization of ``(N, C, D, H, W)`` input (volumes, video), as
    ``torch.nn.BatchNorm3d``.

    Statistics per channel over ``(N, D, H, W)``; see the module docstring. Same parameters and
    buffers as :class:`BatchNorm1d`.
""" + _BN_DOC

    _ndims = (5,)
    _layout = "(N, C, D, H, W)"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

_BN_DIFF = ("Parameters and buffers are float64 by default (dtype=None); PyTorch uses float32. eps <= 0 and "
            "momentum outside [0, 1] are rejected. device: None or 'cpu' only.")
register(Spec(
    name="BatchNorm1d", cls=BatchNorm1d, pytorch="torch.nn.BatchNorm1d",
    reduces_over="N (and L), per channel", differences=_BN_DIFF, reference="Ioffe & Szegedy, 2015",
    backends=("numpy", "numba"),
    cases=(
        Case("NC", {"num_features": 3}, ((6, 3),)),
        Case("NCL", {"num_features": 3}, ((4, 3, 5),)),
        Case("no-affine", {"num_features": 3, "affine": False}, ((4, 3, 5),)),
        Case("no-running-stats", {"num_features": 3, "track_running_stats": False}, ((5, 3),)),
        Case("cumulative", {"num_features": 2, "momentum": None}, ((4, 2, 3),)),
        Case("no-bias", {"num_features": 3, "bias": False}, ((5, 3, 2),)),
    ),
))
register(Spec(
    name="BatchNorm2d", cls=BatchNorm2d, pytorch="torch.nn.BatchNorm2d",
    reduces_over="N, H, W per channel", differences=_BN_DIFF, reference="Ioffe & Szegedy, 2015",
    backends=("numpy", "numba"),
    cases=(
        Case("NCHW", {"num_features": 3}, ((4, 3, 3, 2),)),
        Case("batch-1", {"num_features": 2}, ((1, 2, 3, 3),)),
        Case("no-affine", {"num_features": 2, "affine": False}, ((3, 2, 2, 3),)),
        Case("no-running-stats", {"num_features": 2, "track_running_stats": False}, ((3, 2, 2, 2),)),
    ),
))
register(Spec(
    name="BatchNorm3d", cls=BatchNorm3d, pytorch="torch.nn.BatchNorm3d",
    reduces_over="N, D, H, W per channel", differences=_BN_DIFF, reference="Ioffe & Szegedy, 2015",
    backends=("numpy", "numba"),
    cases=(
        Case("NCDHW", {"num_features": 3}, ((3, 3, 2, 2, 3),)),
        Case("no-bias-cumulative", {"num_features": 2, "momentum": None, "bias": False}, ((2, 2, 2, 3, 2),)),
        Case("no-running-stats", {"num_features": 2, "track_running_stats": False}, ((2, 2, 1, 2, 2),)),
    ),
))
