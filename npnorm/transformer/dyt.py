r"""Dynamic Tanh, DyT (Zhu, Chen, He, LeCun & Liu, 2025): a normalizer-free drop-in for LayerNorm.

.. math:: y = \gamma \odot \tanh(\alpha x) + \beta                                      \tag{DyT}

with one learned **scalar** :math:`\alpha` (initial value :math:`\alpha_0 = 0.5`, the default of
the reference ``DynamicTanh(normalized_shape, channels_last, alpha_init_value=0.5)``), and
per-channel :math:`\gamma` (ones) and :math:`\beta` (zeros). No statistics: every element is
squashed on its own, so it is the same in train and eval mode and it does not couple the features.
Backward, with :math:`t = \tanh(\alpha x)` and :math:`u = \gamma\odot dy\odot(1 - t^2)`:

.. math:: \frac{\partial L}{\partial x} = \alpha\,u, \quad
          \frac{\partial L}{\partial \alpha} = \sum x\odot u, \quad
          \frac{\partial L}{\partial \gamma} = \sum_{\text{batch}} dy\odot t, \quad
          \frac{\partial L}{\partial \beta} = \sum_{\text{batch}} dy .                  \tag{DyT-back}

For large language models the paper uses other :math:`\alpha_0` (smaller for wider models, and
different before attention); 0.5 is its default elsewhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import as_float_array, check_cache, check_dout, check_positive_int
from ..backend import check_backend, pick, pick_for_cache
from ..base import Module
from ..kernels._common import run_reusing
from ..kernels.transformer import dyt as _kernels

__all__ = ["dyt_forward", "dyt_backward", "DyT"]


def _param_view(p: np.ndarray, ndim: int, channels_last: bool) -> np.ndarray:
    """``p`` (shape (C,)) shaped to broadcast against a ``ndim``-D input."""
    if channels_last or ndim <= 2:
        return p
    return p.reshape((-1,) + (1,) * (ndim - 2))


def dyt_forward(x: np.ndarray, alpha: np.ndarray | float, weight: np.ndarray, bias: np.ndarray,
                channels_last: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Equation (DyT). ``weight``/``bias`` of shape ``(C,)``: the last axis of ``x`` when
    ``channels_last``, else axis 1 of ``(N, C, *spatial)``."""
    x = as_float_array(x, "x", "dyt_forward")
    x64 = np.asarray(x, dtype=np.float64)
    a = float(np.asarray(alpha, dtype=np.float64).reshape(-1)[0])
    t = np.tanh(a * x64)
    w = _param_view(np.asarray(weight, dtype=np.float64), x.ndim, channels_last)
    b = _param_view(np.asarray(bias, dtype=np.float64), x.ndim, channels_last)
    out = w * t + b
    if channels_last or x.ndim <= 2:
        red = tuple(range(x.ndim - 1)) if channels_last else (0,)
    else:
        red = (0,) + tuple(range(2, x.ndim))
    cache = {"x": x64.copy(), "t": t, "alpha": a, "weight": w, "reduce": red, "dtype": x.dtype,
             "out_shape": x.shape}
    return out.astype(x.dtype, copy=False), cache


def dyt_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Equation (DyT-back): returns ``(dx, dalpha, dweight, dbias)``;
    ``dalpha`` has shape ``(1,)``."""
    dy = np.asarray(check_cache(dout, cache, "dyt_backward"),
                    dtype=np.float64)
    t, red = cache["t"], cache["reduce"]
    u = cache["weight"] * dy * (1.0 - t * t)
    dx = cache["alpha"] * u
    dalpha = np.array([np.sum(cache["x"] * u)])
    dweight = np.sum(dy * t, axis=red)
    dbias = np.sum(dy, axis=red)
    return dx.astype(cache["dtype"], copy=False), dalpha, dweight, dbias


class DyT(Module):
    """Dynamic Tanh ``weight * tanh(alpha * x) + bias``, the reference ``DynamicTanh``.

    Parameters
    ----------
    normalized_shape : int
        Number of channels :math:`C`.
    channels_last : bool, default True
        ``True``: channels are the last axis (tokens ``(N, L, C)``); ``False``: axis 1 of
        ``(N, C, *spatial)``.
    alpha_init_value : float, default 0.5
        The paper's :math:`\\alpha_0`.
    dtype : default float64
    backend : {"numba", "numpy"} or None, default None
        Fused kernel (:mod:`npnorm.kernels.transformer.dyt`, channels-last; channels-first inputs
        always use the NumPy reference), NumPy reference, or the global default.

    Learned: ``alpha`` (shape ``(1,)``), ``weight`` (ones, ``(C,)``), ``bias`` (zeros, ``(C,)``).
    PyTorch has no DyT (the names and defaults follow the paper's code).
    """

    def __init__(self, normalized_shape: int, channels_last: bool = True, alpha_init_value: float = 0.5, *,
                 dtype: Any = np.float64, backend: str | None = None) -> None:
        super().__init__()
        self.backend = check_backend(backend, "DyT", allow_none=True)
        self.normalized_shape = check_positive_int(normalized_shape, "normalized_shape", "DyT")
        self.channels_last = bool(channels_last)
        self.alpha_init_value = float(alpha_init_value)
        self.dtype = np.dtype(dtype)
        self.params["alpha"] = np.full(1, self.alpha_init_value, dtype=self.dtype)
        self.params["weight"] = np.ones(self.normalized_shape, dtype=self.dtype)
        self.params["bias"] = np.zeros(self.normalized_shape, dtype=self.dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "DyT")
        axis = -1 if self.channels_last else 1
        if x.ndim < (1 if self.channels_last else 2) or x.shape[axis] != self.normalized_shape:
            where = "last axis" if self.channels_last else "axis 1"
            raise ValueError(f"DyT: expected {self.normalized_shape} channels on the {where} of x, "
                             f"got shape {x.shape}")
        forward = pick(self.backend if self.channels_last else "numpy", dyt_forward, _kernels.dyt_forward)
        # the Numba kernel may write its private copy of x into the one of the cache it replaces
        out, self._cache = run_reusing(forward, _kernels.dyt_forward, self._cache, x, self.params["alpha"],
                                       self.params["weight"], self.params["bias"], self.channels_last)
        self._shape = x.shape
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._require_cache()
        check_dout(dout, self._shape, "DyT.backward")
        dx, dalpha, dweight, dbias = pick_for_cache(cache, dyt_backward, _kernels.dyt_backward)(dout, cache)
        self.grads["alpha"] = dalpha.astype(self.dtype)
        self.grads["weight"] = dweight.astype(self.dtype)
        self.grads["bias"] = dbias.astype(self.dtype)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, channels_last={self.channels_last}, "
                f"alpha_init_value={self.alpha_init_value}")


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="DyT", cls=DyT, pytorch=None, reference="Zhu et al., 2025",
    reduces_over="nothing (elementwise, no statistics)", input_offset=0.3, input_scale=2.0,
    backends=("numpy", "numba"),
    cases=(
        Case("tokens", {"normalized_shape": 5}, ((2, 3, 5),), modes=("train",)),
        Case("NCHW", {"normalized_shape": 3, "channels_last": False}, ((2, 3, 2, 2),), modes=("train",)),
    ),
))
