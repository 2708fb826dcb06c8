r"""Global response normalization (Woo et al., 2023, ConvNeXt V2): ``GlobalResponseNorm``, with timm's
name and arguments, for channels-last ``(N, H, W, C)`` (the default, as in ConvNeXt V2's blocks) and
channels-first ``(N, C, H, W)`` input.

Each channel's spatial L2 norm, divided by the mean of these norms over the channels, says how
strongly the channel responds relative to the others; the layer adds a learned multiple of the
input rescaled by it, so it starts as the identity (``weight`` and ``bias`` are zeros):

.. math::
   G_{nc} = \Big(\sum_{h,w} x_{nhwc}^2\Big)^{1/2}, \qquad
   N_{nc} = \frac{G_{nc}}{\frac{1}{C}\sum_{c'} G_{nc'} + \epsilon}                 \tag{grn-forward}
.. math::
   y = x + \gamma_c\, x\, N_{nc} + \beta_c                                         \tag{grn-forward}

Backward, with :math:`q_{nc} = \sum_{h,w} \gamma_c\, dy\, x` and :math:`D = \bar G + \epsilon`:
:math:`\partial L/\partial G_{nc} = q_{nc}/D - \frac{1}{C D^2}\sum_{c'} q_{nc'} G_{nc'}` and
:math:`\partial G_{nc}/\partial x = x / G_{nc}` (0 where :math:`G = 0`), so

.. math::
   \frac{\partial L}{\partial x} = dy\,(1 + \gamma N) + \frac{\partial L}{\partial G}\,\frac{x}{G}.   \tag{grn-backward}

Per sample; identical in training and evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import (as_float_array, check_cache, check_channels, check_dout,
                       check_eps, check_ndim, check_positive_int)
from ..backend import check_backend, pick, pick_for_cache
from ..base import Module
from ..kernels._common import run_reusing
from ..kernels.statistics import grn as _kernels

__all__ = ["grn_forward", "grn_backward", "GlobalResponseNorm"]


def _layout(channels_last: bool) -> tuple[tuple[int, int], int, tuple[int, ...]]:
    """(spatial axes, channel axis, parameter shape) of a 4-D input."""
    return ((1, 2), 3, (1, 1, 1, -1)) if channels_last else ((2, 3), 1, (1, -1, 1, 1))


def grn_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-6,
                channels_last: bool = True):
    """Eq. (grn-forward). Returns ``(out, cache)``."""
    spatial, chan, view = _layout(channels_last)
    x64 = np.array(x, dtype=np.float64)
    g = np.sqrt(np.sum(x64 * x64, axis=spatial, keepdims=True))              # eq. (grn-forward)
    d = g.mean(axis=chan, keepdims=True) + eps
    nrm = g / d
    out = x64 + weight.reshape(view) * (x64 * nrm) + bias.reshape(view)        # eq. (grn-forward)
    cache = {"x": x64, "g": g, "d": d, "n": nrm, "weight": weight, "channels_last": channels_last,
             "dtype": x.dtype, "out_shape": x64.shape}
    return out.astype(x.dtype, copy=False), cache


def grn_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Eq. (grn-backward). Returns ``(dx, dweight, dbias)``."""
    dy = np.asarray(check_cache(dout, cache, "grn_backward"), dtype=np.float64)
    x, g, d, nrm = cache["x"], cache["g"], cache["d"], cache["n"]
    spatial, chan, view = _layout(cache["channels_last"])
    param_axes = tuple(a for a in range(4) if a != chan)
    dweight = np.sum(dy * x * nrm, axis=param_axes)
    dbias = dy.sum(axis=param_axes)
    w = cache["weight"].reshape(view)
    q = np.sum(dy * w * x, axis=spatial, keepdims=True)        # dL/dN
    c = x.shape[chan]
    dg = q / d - np.sum(q * g, axis=chan, keepdims=True) / (c * d * d)
    safe = np.where(g > 0, g, 1.0)
    # eq. (grn-backward)
    dx = dy * (1.0 + w * nrm) + np.where(g > 0, dg / safe, 0.0) * x
    return dx.astype(cache["dtype"], copy=False), dweight, dbias


class GlobalResponseNorm(Module):
    """Global response normalization, as timm's ``GlobalResponseNorm(dim, eps=1e-6,
    channels_last=True)`` (ConvNeXt V2's ``GRN``).

    Input ``(N, H, W, C)`` with ``channels_last=True`` (default), ``(N, C, H, W)`` otherwise.
    ``backend`` (keyword-only): ``"numba"`` (the fused kernels of :mod:`npnorm.kernels.statistics.grn`),
    ``"numpy"`` (:func:`grn_forward` / :func:`grn_backward`) or ``None`` (the global default).
    Parameters ``weight`` (:math:`\\gamma`) and ``bias`` (:math:`\\beta`), zeros of shape ``(C,)``:
    the layer starts as the identity. Eqs. (grn-forward) and (grn-backward) in the module docstring.

    Differences: ConvNeXt V2's official code names the parameters ``gamma`` and ``beta`` with shape
    ``(1, 1, 1, C)``; timm's names and shapes are used here. PyTorch has no GRN. Float64 parameters.
    ``eps <= 0`` is rejected on purpose (``ValueError``; timm accepts it): it keeps the division by
    the channels' mean norm finite for an all-zero sample.
    """

    def __init__(self, dim: int, eps: float = 1e-6, channels_last: bool = True, *, dtype: Any = np.float64,
                 backend: str | None = None) -> None:
        super().__init__()
        self.backend = check_backend(backend, "GlobalResponseNorm", allow_none=True)
        self.dim = check_positive_int(dim, "dim", "GlobalResponseNorm")
        self.eps = check_eps(eps, where="GlobalResponseNorm")
        self.channels_last = bool(channels_last)
        self.dtype = np.dtype(dtype)
        self.params["weight"] = np.zeros(dim, dtype=self.dtype)
        self.params["bias"] = np.zeros(dim, dtype=self.dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "GlobalResponseNorm")
        layout = "(N, H, W, C)" if self.channels_last else "(N, C, H, W)"
        check_ndim(x, (4,), layout, "x", "GlobalResponseNorm")
        check_channels(x, self.dim, "dim", 3 if self.channels_last else 1, "x", "GlobalResponseNorm")
        forward = pick(self.backend, grn_forward, _kernels.grn_forward)
        out, cache = run_reusing(forward, _kernels.grn_forward, self._cache, x,
                                 self.params["weight"], self.params["bias"], self.eps, self.channels_last)
        self._cache = (x.shape, cache)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        shape, cache = self._require_cache()
        check_dout(dout, shape, where="GlobalResponseNorm.backward")
        dx, dweight, dbias = pick_for_cache(cache, grn_backward, _kernels.grn_backward)(dout, cache)
        self.grads["weight"] = dweight.astype(self.dtype, copy=False)
        self.grads["bias"] = dbias.astype(self.dtype, copy=False)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.dim}, eps={self.eps}, channels_last={self.channels_last}"
                + (f", backend={self.backend!r}" if self.backend else ""))


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="GlobalResponseNorm", cls=GlobalResponseNorm, pytorch=None, reference="Woo et al., 2023",
    reduces_over="H, W per sample and channel (L2 norm), then the mean over channels",
    differences="timm's layer and parameter names (ConvNeXt V2: gamma, beta); float64 parameters",
    input_offset=0.5, input_scale=1.5, backends=("numpy", "numba"),
    cases=(
        Case("channels-last", {"dim": 4}, ((2, 3, 2, 4),), modes=("train",)),
        Case("channels-first", {"dim": 3, "channels_last": False}, ((2, 3, 2, 3),), modes=("eval",)),
    ),
))
