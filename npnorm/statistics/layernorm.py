r"""Layer normalization (Ba, Kiros & Hinton, 2016) and RMSNorm (Zhang & Sennrich, 2019).

**LayerNorm** standardizes each sample over its trailing ``normalized_shape`` dimensions (the set
:math:`S`, :math:`m = |S|` elements) and applies an elementwise affine map:

.. math::
   \mu = \frac{1}{m}\sum_S x, \quad \sigma^2 = \frac{1}{m}\sum_S (x-\mu)^2, \quad
   \hat x = \frac{x-\mu}{\sqrt{\sigma^2+\epsilon}}, \quad y = \gamma\odot\hat x + \beta     \tag{LN}

with :math:`\gamma, \beta` of shape ``normalized_shape``. Backward, with :math:`g = \gamma\odot dy`:

.. math:: dx = r\,(g - \overline{g} - \hat x\,\overline{g\hat x}), \quad
          d\gamma = \textstyle\sum_{\text{batch}} dy\odot\hat x, \quad d\beta = \sum_{\text{batch}} dy .

**RMSNorm** drops the centring and the shift:

.. math::
   r = \Big(\frac{1}{m}\sum_S x^2 + \epsilon\Big)^{-1/2}, \quad \hat x = x\,r, \quad y = \gamma\odot\hat x
   \tag{RMS}

.. math:: dx = r\,(g - \hat x\,\overline{g\hat x}).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import (as_float_array, check_cache, check_device, check_eps, check_rows_input, check_trailing,
                       normalize_shape, resolve_dtype)
from ..backend import check_backend, pick, pick_for_cache
from ..base import Module
from ..kernels._common import run_reusing
from ..kernels.statistics import layernorm as _kernels
from .standardize import standardize_backward, standardize_forward

__all__ = [
    "layer_norm_forward",
    "layer_norm_backward",
    "rms_norm_forward",
    "rms_norm_backward",
    "LayerNorm",
    "RMSNorm",
]


def _trailing_axes(x: np.ndarray, normalized_shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    return check_trailing(x, normalized_shape, where)


def layer_norm_forward(
    x: np.ndarray,
    normalized_shape: tuple[int, ...],
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    eps: float = 1e-5,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Layer norm over the trailing ``normalized_shape`` dims, equation (LN).

    Returns ``out`` (shape and dtype of ``x``; computed in float64) and the cache for
    :func:`layer_norm_backward`. Raises ``TypeError`` for a non-floating ``x`` or parameter and
    ``ValueError`` when the trailing dimensions of ``x`` are not ``normalized_shape``, a parameter
    does not have that shape, or ``eps <= 0``. Any number of rows, also 0.
    """
    where = "layer_norm_forward"
    x, normalized_shape, p, eps = check_rows_input(x, normalized_shape, {"weight": weight, "bias": bias}, eps,
                                                   where)
    weight, bias = p["weight"], p["bias"]
    axes = _trailing_axes(x, normalized_shape, where)
    x_hat, cache = standardize_forward(x, axes, eps)
    out = x_hat.copy() if weight is None else x_hat * weight
    if bias is not None:
        out = out + bias
    cache.update(weight=weight, has_bias=bias is not None, dtype=x.dtype, out_shape=x.shape,
                 batch_axes=tuple(range(x.ndim - len(axes))))
    return out.astype(x.dtype, copy=False), cache


def layer_norm_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Backward pass of :func:`layer_norm_forward`: returns
    ``(dx, dweight, dbias)``."""
    dy = np.asarray(check_cache(dout, cache, "layer_norm_backward"),
                    dtype=np.float64)
    batch_axes, weight = cache["batch_axes"], cache["weight"]
    dbias = dy.sum(axis=batch_axes) if cache["has_bias"] else None
    dweight = ((dy * cache["x_hat"]).sum(axis=batch_axes)
               if weight is not None else None)
    g = dy if weight is None else dy * weight
    dx = standardize_backward(g, cache)
    return dx.astype(cache["dtype"], copy=False), dweight, dbias


def rms_norm_forward(
    x: np.ndarray, normalized_shape: tuple[int, ...], weight: np.ndarray | None, eps: float | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """RMSNorm over the trailing ``normalized_shape`` dims, equation (RMS).

    ``eps=None`` uses ``np.finfo(x.dtype).eps`` (float32 inputs: 1.19e-7, float64: 2.22e-16), as
    PyTorch does; half-precision inputs use float32's eps, as PyTorch's CPU kernel does. Same
    argument checks as :func:`layer_norm_forward`.
    """
    where = "rms_norm_forward"
    x, normalized_shape, p, eps = check_rows_input(x, normalized_shape, {"weight": weight}, eps, where,
                                                   eps_none=True)
    weight = p["weight"]
    axes = _trailing_axes(x, normalized_shape, where)
    if eps is None:
        eps = float(np.finfo(np.promote_types(x.dtype, np.float32)).eps)
    x64 = np.asarray(x, dtype=np.float64)
    rstd = 1.0 / np.sqrt(np.mean(x64 * x64, axis=axes, keepdims=True) + eps)
    x_hat = x64 * rstd
    out = x_hat.copy() if weight is None else x_hat * weight
    cache = {"x_hat": x_hat, "rstd": rstd, "axes": axes, "weight": weight, "dtype": x.dtype,
             "batch_axes": tuple(range(x.ndim - len(axes))), "eps": eps, "out_shape": x.shape}
    return out.astype(x.dtype, copy=False), cache


def rms_norm_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Backward pass of :func:`rms_norm_forward`: returns
    ``(dx, dweight)``."""
    dy = np.asarray(check_cache(dout, cache, "rms_norm_backward"),
                    dtype=np.float64)
    x_hat, rstd, axes, weight = (cache["x_hat"], cache["rstd"],
                                 cache["axes"], cache["weight"])
    dweight = ((dy * x_hat).sum(axis=cache["batch_axes"])
               if weight is not None else None)
    g = dy if weight is None else dy * weight
    dx = rstd * (g - x_hat * np.mean(g * x_hat, axis=axes, keepdims=True))
    return dx.astype(cache["dtype"], copy=False), dweight


class LayerNorm(Module):
    """Layer normalization over the trailing ``normalized_shape`` dims, as ``torch.nn.LayerNorm``.

    Parameters
    ----------
    normalized_shape : int or tuple of int
        The trailing dimensions to normalize over, e.g. ``D`` for ``(N, L, D)`` tokens or
        ``(C, H, W)`` for images.
    eps : float, default 1e-5
    elementwise_affine : bool, default True
        Learnable ``weight`` (ones) of shape ``normalized_shape``.
    bias : bool, default True
        Learnable ``bias`` (zeros) as well (only with ``elementwise_affine``).
    device : None or "cpu"
        Accepted for PyTorch's signature; npnorm computes with NumPy on the CPU.
    dtype : default None (float64)
        Dtype of the parameters. Deliberate difference: PyTorch defaults to float32. The output
        always has the input's dtype.
    backend : {"numba", "numpy"} or None, default None (keyword-only)
        ``"numba"``: the fused kernel (:mod:`npnorm.kernels.statistics.layernorm`); ``"numpy"``: the
        reference :func:`layer_norm_forward`; ``None``: the global default (:func:`npnorm.get_backend`).

    Same computation in train and eval mode; no running statistics. The constructor has PyTorch
    2.13's full signature. Any number of rows, also an empty batch; a ``normalized_shape`` of one
    element normalizes every row to 0 (``y = bias``), as in PyTorch.

    Deliberate differences from PyTorch: ``eps <= 0`` is rejected (``ValueError``); float64
    parameters by default; ``device`` only ``None`` or ``"cpu"``.
    """

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, device: Any = None, dtype: Any = None, *,
                 backend: str | None = None) -> None:
        super().__init__()
        self.backend = check_backend(backend, "LayerNorm", allow_none=True)
        check_device(device, "LayerNorm")
        self.normalized_shape = normalize_shape(normalized_shape, where="LayerNorm")
        self.eps = check_eps(eps, where="LayerNorm")
        self.elementwise_affine = bool(elementwise_affine)
        self.dtype = resolve_dtype(dtype, "LayerNorm")
        if self.elementwise_affine:
            self.params["weight"] = np.ones(self.normalized_shape, dtype=self.dtype)
            if bias:
                self.params["bias"] = np.zeros(self.normalized_shape, dtype=self.dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "LayerNorm")
        _trailing_axes(x, self.normalized_shape, "LayerNorm")
        forward = pick(self.backend, layer_norm_forward, _kernels.layer_norm_forward)
        out, self._cache = run_reusing(forward, _kernels.layer_norm_forward, self._cache, x, self.normalized_shape,
                                       self.params.get("weight"), self.params.get("bias"), self.eps)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._require_cache()
        dx, dweight, dbias = pick_for_cache(cache, layer_norm_backward, _kernels.layer_norm_backward)(dout, cache)
        if dweight is not None:
            self.grads["weight"] = dweight.astype(self.dtype, copy=False)
        if dbias is not None:
            self.grads["bias"] = dbias.astype(self.dtype, copy=False)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
                + (f", backend={self.backend!r}" if self.backend else ""))


class RMSNorm(Module):
    """Root-mean-square normalization over the trailing ``normalized_shape`` dims, as ``torch.nn.RMSNorm``.

    Parameters
    ----------
    normalized_shape : int or tuple of int
    eps : float or None, default None
        ``None`` means ``np.finfo(x.dtype).eps`` of the input (as PyTorch).
    elementwise_affine : bool, default True
        Learnable ``weight`` (ones); there is no bias, as in PyTorch.
    device : None or "cpu"
        Accepted for PyTorch's signature; npnorm computes with NumPy on the CPU.
    dtype : default None (float64)
        Parameter dtype (PyTorch: float32); the output has the input's dtype.
    backend : {"numba", "numpy"} or None, default None (keyword-only)
        Fused kernel, NumPy reference, or the global default (see :mod:`npnorm.backend`).

    The constructor has PyTorch 2.13's full signature. Any number of rows, also an empty batch.
    Deliberate differences from PyTorch: an explicit ``eps <= 0`` is rejected (``ValueError``);
    float64 parameters by default; ``device`` only ``None`` or ``"cpu"``.
    """

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float | None = None,
                 elementwise_affine: bool = True, device: Any = None, dtype: Any = None, *,
                 backend: str | None = None) -> None:
        super().__init__()
        self.backend = check_backend(backend, "RMSNorm", allow_none=True)
        check_device(device, "RMSNorm")
        self.normalized_shape = normalize_shape(normalized_shape, where="RMSNorm")
        self.eps = None if eps is None else check_eps(eps, where="RMSNorm")
        self.elementwise_affine = bool(elementwise_affine)
        self.dtype = resolve_dtype(dtype, "RMSNorm")
        if self.elementwise_affine:
            self.params["weight"] = np.ones(self.normalized_shape, dtype=self.dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "RMSNorm")
        _trailing_axes(x, self.normalized_shape, "RMSNorm")
        forward = pick(self.backend, rms_norm_forward, _kernels.rms_norm_forward)
        out, self._cache = run_reusing(forward, _kernels.rms_norm_forward, self._cache, x, self.normalized_shape,
                                       self.params.get("weight"), self.eps)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._require_cache()
        dx, dweight = pick_for_cache(cache, rms_norm_backward, _kernels.rms_norm_backward)(dout, cache)
        if dweight is not None:
            self.grads["weight"] = dweight.astype(self.dtype, copy=False)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
                + (f", backend={self.backend!r}" if self.backend else ""))


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="LayerNorm", cls=LayerNorm, pytorch="torch.nn.LayerNorm",
    reduces_over="the trailing normalized_shape dims, per sample",
    differences="Parameters are float64 by default (dtype=None); PyTorch uses float32. eps <= 0 is rejected. "
                "device: None or 'cpu' only.",
    reference="Ba, Kiros & Hinton, 2016", backends=("numpy", "numba"),
    cases=(
        Case("tokens", {"normalized_shape": 6}, ((2, 3, 6),), modes=("train",)),
        Case("CHW", {"normalized_shape": (2, 3, 3)}, ((3, 2, 3, 3),), modes=("train",)),
        Case("no-bias", {"normalized_shape": 5, "bias": False}, ((4, 5),), modes=("train",)),
        Case("no-affine", {"normalized_shape": 5, "elementwise_affine": False}, ((4, 5),), modes=("train",)),
    ),
))
register(Spec(
    name="RMSNorm", cls=RMSNorm, pytorch="torch.nn.RMSNorm",
    reduces_over="the trailing normalized_shape dims, per sample (no centring)",
    differences="Parameters are float64 by default (dtype=None); PyTorch uses float32. An explicit eps <= 0 "
                "is rejected. device: None or 'cpu' only.",
    reference="Zhang & Sennrich, 2019", backends=("numpy", "numba"),
    cases=(
        Case("tokens", {"normalized_shape": 6}, ((2, 3, 6),), modes=("train",)),
        Case("eps", {"normalized_shape": (2, 4), "eps": 1e-3}, ((3, 2, 4),), modes=("train",)),
        Case("no-affine", {"normalized_shape": 5, "elementwise_affine": False}, ((4, 5),), modes=("train",)),
    ),
))
