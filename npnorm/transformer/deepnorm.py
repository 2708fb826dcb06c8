r"""DeepNorm (Wang et al., 2022, "DeepNet: Scaling Transformers to 1,000 Layers").

Post-LN with the residual branch **up-weighted** by :math:`\alpha > 1`, and the sub-layers'
weights initialized **down-scaled** by :math:`\beta < 1`:

.. math:: x_{l+1} = \mathrm{LN}(\alpha\,x_l + G_l(x_l)),                                 \tag{DeepNorm}

Xavier initialization with gain :math:`\beta` for the feed-forward weights and the value and output
projections of attention (the query and key projections keep gain 1). The constants:

=====================  ==============================  ================================
model                  :math:`\alpha`                  :math:`\beta`
=====================  ==============================  ================================
decoder-only, M layers :math:`(2M)^{1/4}`              :math:`(8M)^{-1/4}`
encoder-only, N layers :math:`(2N)^{1/4}`              :math:`(8N)^{-1/4}`
=====================  ==============================  ================================

Note that :math:`\alpha` multiplies the *skip* :math:`x_l`, not the branch :math:`G_l(x_l)` (one
widely read annotated implementation puts it on the branch). Backward, with :math:`\delta` the
LayerNorm's input gradient: :math:`\partial L/\partial x_l = \alpha\,\delta` (through the skip)
and :math:`\partial L/\partial G = \delta`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._checks import as_float_array, check_dout, check_eps, check_positive_int
from ..base import Module
from ..statistics.layernorm import layer_norm_backward, layer_norm_forward

__all__ = ["deepnorm_constants", "deepnorm_forward", "deepnorm_backward", "DeepNorm"]


def deepnorm_constants(num_layers: int, kind: str = "decoder") -> tuple[float, float]:
    """``(alpha, beta)`` of DeepNorm for a decoder-only or encoder-only stack of ``num_layers``."""
    n = check_positive_int(num_layers, "num_layers", "deepnorm_constants")
    if kind not in ("decoder", "encoder"):
        raise ValueError(f"deepnorm_constants: kind must be 'decoder' or 'encoder', got {kind!r} "
                         "(the encoder-decoder constants are not implemented)")
    return (2.0 * n) ** 0.25, (8.0 * n) ** -0.25


def deepnorm_forward(x: np.ndarray, branch: np.ndarray, alpha: float, weight: np.ndarray | None,
                     bias: np.ndarray | None, eps: float = 1e-5) -> tuple[np.ndarray, dict[str, Any]]:
    """Equation (DeepNorm): ``LayerNorm(alpha * x + branch)`` over the last axis."""
    x64 = np.asarray(x, dtype=np.float64)
    z = alpha * x64 + np.asarray(branch, dtype=np.float64)
    out, cache = layer_norm_forward(z, (x.shape[-1],), weight, bias, eps)
    return out.astype(x.dtype, copy=False), {"ln": cache, "alpha": alpha, "dtype": x.dtype, "shape": x.shape}


def deepnorm_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Returns ``(dx, dbranch, dweight, dbias)``."""
    dout = check_dout(dout, cache["shape"], "deepnorm_backward")
    dz, dweight, dbias = layer_norm_backward(np.asarray(dout, dtype=np.float64), cache["ln"])
    dt = cache["dtype"]
    return (cache["alpha"] * dz).astype(dt, copy=False), dz.astype(dt, copy=False), dweight, dbias


class DeepNorm(Module):
    """``LayerNorm(alpha * x + branch)``: the residual-and-norm step of DeepNet.

    ``layer(x, branch)`` with ``x`` the residual stream and ``branch = G(x)`` the sub-layer's output,
    both ``(*, normalized_shape)``; ``backward(dy)`` returns ``(dx, dbranch)``.

    Parameters
    ----------
    normalized_shape : int
    alpha : float
        The skip weight; :func:`deepnorm_constants` gives the paper's.
    eps : float, default 1e-5
    elementwise_affine : bool, default True
        LayerNorm's ``weight`` (ones) and ``bias`` (zeros).
    """

    def __init__(self, normalized_shape: int, alpha: float, eps: float = 1e-5, elementwise_affine: bool = True,
                 *, dtype: Any = np.float64) -> None:
        super().__init__()
        self.normalized_shape = check_positive_int(normalized_shape, "normalized_shape", "DeepNorm")
        self.alpha = float(alpha)
        if not math.isfinite(self.alpha):
            raise ValueError(f"DeepNorm: alpha must be a finite number, got {alpha!r}")
        self.eps = check_eps(eps, where="DeepNorm")
        self.dtype = np.dtype(dtype)
        if elementwise_affine:
            self.params["weight"] = np.ones(self.normalized_shape, dtype=self.dtype)
            self.params["bias"] = np.zeros(self.normalized_shape, dtype=self.dtype)

    def forward(self, x: np.ndarray, branch: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "DeepNorm")
        branch = as_float_array(branch, "branch", "DeepNorm")
        if x.shape != branch.shape or x.ndim < 1 or x.shape[-1] != self.normalized_shape:
            raise ValueError(f"DeepNorm: x and branch must both have shape (*, {self.normalized_shape}), "
                             f"got {x.shape} and {branch.shape}")
        out, self._cache = deepnorm_forward(x, branch, self.alpha, self.params.get("weight"),
                                            self.params.get("bias"), self.eps)
        return out

    def backward(self, dout: np.ndarray):
        cache = self._require_cache()
        check_dout(dout, cache["shape"], "DeepNorm.backward")
        dx, dbranch, dweight, dbias = deepnorm_backward(dout, cache)
        if dweight is not None:
            self.grads["weight"] = dweight.astype(self.dtype)
            self.grads["bias"] = dbias.astype(self.dtype)
        return dx, dbranch

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, alpha={self.alpha:.4g}, eps={self.eps}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="DeepNorm", cls=DeepNorm, pytorch=None, reference="Wang et al., 2022",
    reduces_over="each token's features, after alpha * x + branch", input_names=("x", "branch"),
    cases=(
        Case("6-layers", {"normalized_shape": 5, "alpha": (2 * 6) ** 0.25}, ((2, 3, 5), (2, 3, 5)),
             modes=("train",)),
    ),
))
