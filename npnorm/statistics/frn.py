r"""Filter response normalization with a thresholded linear unit (Singh & Krishnan, 2020):
``FilterResponseNormTlu2d`` (timm's name).

Per sample and channel, divide by the root mean square over the spatial positions - no mean is
subtracted and no batch statistic is used - then an affine map and a learned threshold (TLU), which
takes the place of ReLU and keeps the output from being stuck at zero:

.. math::
   \nu^2_{nc} = \frac{1}{HW}\sum_{h,w} x_{nchw}^2                           \tag{frn-forward}
.. math::
   \hat x = x\,(\nu^2_{nc} + \epsilon)^{-1/2}, \qquad y = \gamma_c \hat x + \beta_c    \tag{frn-forward}
.. math::
   z = \max(y, \tau_c)                                                      \tag{frn-forward}

Backward: the TLU routes :math:`dz` to :math:`y` where :math:`y \ge \tau` and to :math:`\tau`
elsewhere; with :math:`g = \gamma\, dy` and :math:`r = (\nu^2 + \epsilon)^{-1/2}`, as RMSNorm over
the positions,

.. math::
   \frac{\partial L}{\partial x} = r\left(g - \hat x\,\frac{1}{HW}\sum_{h,w} g\,\hat x\right).    \tag{frn-backward}

Identical in training and evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import as_float_array, check_channels, check_dout, check_eps, check_ndim, check_positive_int
from ..backend import check_backend, pick, pick_for_cache
from ..base import Module
from ..kernels.statistics import frn as _kernels

__all__ = ["frn_tlu_forward", "frn_tlu_backward", "FilterResponseNormTlu2d"]

_V = (1, -1, 1, 1)


def frn_tlu_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, tau: np.ndarray | None,
                    eps: float = 1e-5):
    """Eq. (frn-forward) for ``(N, C, H, W)`` input; ``tau=None`` skips the TLU.
    Returns ``(out, cache)``."""
    x64 = np.asarray(x, dtype=np.float64)
    r = 1.0 / np.sqrt(np.mean(x64 * x64, axis=(2, 3), keepdims=True) + eps)    # eq. (frn-forward)
    x_hat = x64 * r
    y = x_hat * weight.reshape(_V) + bias.reshape(_V)                          # eq. (frn-forward)
    if tau is None:
        out, passed = y, None
    else:
        passed = y >= tau.reshape(_V)
        out = np.where(passed, y, tau.reshape(_V))                               # eq. (frn-forward)
    cache = {"x_hat": x_hat, "r": r, "passed": passed, "weight": weight, "dtype": x.dtype}
    return out.astype(x.dtype, copy=False), cache


def frn_tlu_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Eq. (frn-backward) and the TLU's routing. Returns
    ``(dx, dweight, dbias, dtau)`` (``dtau`` None without the TLU)."""
    x_hat, r, passed = cache["x_hat"], cache["r"], cache["passed"]
    dz = np.asarray(check_dout(dout, x_hat.shape, where="frn_tlu_backward"),
                    dtype=np.float64)
    if passed is None:
        dy, dtau = dz, None
    else:
        dy = np.where(passed, dz, 0.0)
        dtau = np.where(passed, 0.0, dz).sum(axis=(0, 2, 3))
    dweight = np.sum(dy * x_hat, axis=(0, 2, 3))
    dbias = dy.sum(axis=(0, 2, 3))
    g = dy * cache["weight"].reshape(_V)
    # eq. (frn-backward)
    dx = r * (g - x_hat * np.mean(g * x_hat, axis=(2, 3), keepdims=True))
    return dx.astype(cache["dtype"], copy=False), dweight, dbias, dtau


class FilterResponseNormTlu2d(Module):
    """Filter response normalization followed by a TLU, as timm's
    ``FilterResponseNormTlu2d(num_features, apply_act=True, eps=1e-5)``.

    Input ``(N, C, H, W)``. ``backend`` (keyword-only): ``"numba"`` (the fused kernels of
    :mod:`npnorm.kernels.statistics.frn`), ``"numpy"`` or ``None`` (the global default). Parameters ``weight`` (ones), ``bias`` (zeros) and, with
    ``apply_act=True``, ``tau`` (zeros), all of shape ``(C,)``. No buffers; training and evaluation
    are the same; no batch statistic (any batch size, also 1). Equations in the module docstring.

    Differences: the paper makes ``eps`` learnable (useful for 1x1 feature maps); timm and npnorm
    keep it fixed. timm's unused ``rms`` argument is left out. Computed in float64. ``eps <= 0`` is
    rejected on purpose (``ValueError``; timm accepts it): it keeps the division finite for an
    all-zero channel.
    """

    def __init__(self, num_features: int, apply_act: bool = True, eps: float = 1e-5, *,
                 dtype: Any = np.float64, backend: str | None = None) -> None:
        super().__init__()
        self.backend = check_backend(backend, "FilterResponseNormTlu2d", allow_none=True)
        self.num_features = check_positive_int(num_features, "num_features", "FilterResponseNormTlu2d")
        self.eps = check_eps(eps, where="FilterResponseNormTlu2d")
        self.apply_act = bool(apply_act)
        self.dtype = np.dtype(dtype)
        self.params["weight"] = np.ones(num_features, dtype=self.dtype)
        self.params["bias"] = np.zeros(num_features, dtype=self.dtype)
        if self.apply_act:
            self.params["tau"] = np.zeros(num_features, dtype=self.dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "FilterResponseNormTlu2d")
        check_ndim(x, (4,), "(N, C, H, W)", "x", "FilterResponseNormTlu2d")
        check_channels(x, self.num_features, "num_features", 1, "x", "FilterResponseNormTlu2d")
        p = self.params
        forward = pick(self.backend, frn_tlu_forward, _kernels.frn_tlu_forward)
        out, cache = forward(x, p["weight"], p["bias"], p.get("tau"), self.eps)
        self._cache = (x.shape, cache)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        shape, cache = self._require_cache()
        check_dout(dout, shape, where="FilterResponseNormTlu2d.backward")
        dx, dweight, dbias, dtau = pick_for_cache(cache, frn_tlu_backward, _kernels.frn_tlu_backward)(dout, cache)
        self.grads["weight"] = dweight.astype(self.dtype, copy=False)
        self.grads["bias"] = dbias.astype(self.dtype, copy=False)
        if dtau is not None:
            self.grads["tau"] = dtau.astype(self.dtype, copy=False)
        return dx

    def extra_repr(self) -> str:
        return f"{self.num_features}, apply_act={self.apply_act}, eps={self.eps}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="FilterResponseNormTlu2d", cls=FilterResponseNormTlu2d, pytorch=None,
    reference="Singh & Krishnan, 2020", reduces_over="H, W per sample and channel (mean square only)",
    differences="timm's layer (no PyTorch one); eps fixed (learnable in the paper)",
    input_offset=0.3, input_scale=1.0, backends=("numpy", "numba"),
    cases=(
        Case("tlu", {"num_features": 3}, ((2, 3, 3, 4),)),
        Case("no-act", {"num_features": 2, "apply_act": False}, ((2, 2, 3, 3),)),
        Case("batch-1", {"num_features": 2, "eps": 1e-3}, ((1, 2, 2, 3),), modes=("eval",)),
    ),
))
