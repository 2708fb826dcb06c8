r"""Group normalization (Wu & He, 2018).

The ``C`` channels of an ``(N, C, *)`` input are split into ``G`` contiguous groups of ``C/G``
channels. Each (sample, group) block - ``C/G`` channels times every spatial position, :math:`m`
elements - is standardized on its own, then a per-channel affine map is applied:

.. math::
   \hat x_{n,g} = \frac{x_{n,g} - \mu_{n,g}}{\sqrt{\sigma^2_{n,g} + \epsilon}}, \qquad
   y_{n,c} = \gamma_c\,\hat x_{n,c} + \beta_c .                                    \tag{GN}

Implementation: reshape to ``(N, G, m)``, standardize over the last axis (the same operation as
LayerNorm), reshape back. ``G = 1`` is LayerNorm over ``(C, H, W)`` with a per-channel affine;
``G = C`` is InstanceNorm.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import (as_float_array, check_cache, check_channels, check_device, check_eps, check_groups,
                       check_nc_input, check_ndim, check_positive_int, resolve_dtype)
from ..backend import check_backend, pick, pick_for_cache
from ..base import Module
from ..kernels._common import run_reusing
from ..kernels.statistics import groupnorm as _kernels
from .standardize import standardize_backward, standardize_forward

__all__ = ["group_norm_forward", "group_norm_backward", "GroupNorm"]


def group_norm_forward(
    x: np.ndarray, num_groups: int, weight: np.ndarray | None,
    bias: np.ndarray | None, eps: float = 1e-5,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Group norm of ``x`` of shape ``(N, C, *)``, equation (GN). Returns
    ``(out, cache)``.

    Raises
    ------
    TypeError
        ``x`` or a parameter is not a floating-point array; ``num_groups``
        is not an int.
    ValueError
        ``x`` has fewer than 2 dimensions, ``num_groups`` does not divide
        ``C``, a parameter's shape is not ``(C,)``, ``eps <= 0``, or the
        input holds one value per group in total (PyTorch's rule, see
        :func:`npnorm._checks.check_groups`). An empty batch gives an
        empty output.
    """
    where = "group_norm_forward"
    x, weight, bias, eps = check_nc_input(x, weight, bias, eps, where)
    num_groups = check_groups(x, num_groups, where)
    n, c = x.shape[:2]
    view = (1, c) + (1,) * (x.ndim - 2)
    per_group = ((c // num_groups)
                 * int(np.prod(x.shape[2:], dtype=np.int64)))
    grouped = np.asarray(x, dtype=np.float64).reshape(
        n, num_groups, per_group)
    x_hat_g, cache = standardize_forward(grouped, (2,), eps)
    x_hat = x_hat_g.reshape(x.shape)
    out = x_hat.copy() if weight is None else x_hat * weight.reshape(view)
    if bias is not None:
        out = out + bias.reshape(view)
    cache.update(x_hat_full=x_hat, weight=weight, has_bias=bias is not None,
                 view=view, dtype=x.dtype, shape=x.shape, out_shape=x.shape,
                 param_axes=(0,) + tuple(range(2, x.ndim)),
                 num_groups=num_groups)
    return out.astype(x.dtype, copy=False), cache


def group_norm_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Backward pass of :func:`group_norm_forward`: returns
    ``(dx, dweight, dbias)``."""
    dy = np.asarray(check_cache(dout, cache, "group_norm_backward"),
                    dtype=np.float64)
    axes, weight, shape = cache["param_axes"], cache["weight"], cache["shape"]
    dbias = dy.sum(axis=axes) if cache["has_bias"] else None
    dweight = ((dy * cache["x_hat_full"]).sum(axis=axes)
               if weight is not None else None)
    g = dy if weight is None else dy * weight.reshape(cache["view"])
    dx = standardize_backward(g.reshape(cache["x_hat"].shape),
                              cache).reshape(shape)
    return dx.astype(cache["dtype"], copy=False), dweight, dbias


class GroupNorm(Module):
    """Group normalization, as ``torch.nn.GroupNorm``.

    Constructor: PyTorch 2.13's full signature ``(num_groups, num_channels, eps=1e-5, affine=True,
    device=None, dtype=None, *, bias=True)``, plus npnorm's keyword-only ``backend``.

    Input ``(N, C, *)`` with ``C == num_channels``; ``num_groups`` must divide ``num_channels``.
    Parameters ``weight`` (ones) and ``bias`` (zeros, absent with ``bias=False``) of shape ``(C,)``.
    Same in train and eval.

    Empty and degenerate input, as PyTorch 2.13: an empty batch gives an empty output and zero
    parameter gradients. PyTorch's rule for one-element groups is odd and followed exactly: it
    raises only when the whole input has one value per group (one sample, ``C/G = 1``, one
    spatial position); with several samples such groups normalize to 0 and ``y = bias``.

    Deliberate differences from PyTorch:

    * ``eps <= 0`` is rejected (``ValueError``);
    * ``dtype=None`` means float64 parameters (PyTorch: float32); the output has the input's dtype;
    * ``device``: only ``None`` or ``"cpu"``;
    * groups with no element (a zero spatial size) give a zero ``weight`` gradient (PyTorch: NaN).

    ``backend`` (keyword-only): ``"numba"`` (fused kernel, :mod:`npnorm.kernels.statistics.groupnorm`),
    ``"numpy"`` (the reference :func:`group_norm_forward`) or ``None`` (the global default).
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device: Any = None, dtype: Any = None, *, bias: bool = True, backend: str | None = None) -> None:
        super().__init__()
        self.backend = check_backend(backend, "GroupNorm", allow_none=True)
        check_device(device, "GroupNorm")
        self.num_groups = check_positive_int(num_groups, "num_groups", "GroupNorm")
        self.num_channels = check_positive_int(num_channels, "num_channels", "GroupNorm")
        if self.num_channels % self.num_groups:
            raise ValueError(
                f"GroupNorm: num_groups={num_groups} must divide num_channels={num_channels} "
                "(each group holds num_channels / num_groups channels)"
            )
        self.eps = check_eps(eps, where="GroupNorm")
        self.affine = bool(affine)
        self.dtype = resolve_dtype(dtype, "GroupNorm")
        if self.affine:
            self.params["weight"] = np.ones(num_channels, dtype=self.dtype)
            if bias:
                self.params["bias"] = np.zeros(num_channels, dtype=self.dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "GroupNorm")
        check_ndim(x, range(2, 9), "(N, C, *)", "x", "GroupNorm")
        check_channels(x, self.num_channels, "num_channels", 1, "x", "GroupNorm")
        check_groups(x, self.num_groups, "GroupNorm")
        forward = pick(self.backend, group_norm_forward, _kernels.group_norm_forward)
        out, self._cache = run_reusing(forward, _kernels.group_norm_forward, self._cache, x, self.num_groups,
                                       self.params.get("weight"), self.params.get("bias"), self.eps)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._require_cache()
        dx, dweight, dbias = pick_for_cache(cache, group_norm_backward, _kernels.group_norm_backward)(dout, cache)
        if "weight" in self.params:
            self.grads["weight"] = dweight.astype(self.dtype, copy=False)
        if "bias" in self.params:
            self.grads["bias"] = dbias.astype(self.dtype, copy=False)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
                + (", bias=False" if self.affine and "bias" not in self.params else "")
                + (f", backend={self.backend!r}" if self.backend else ""))


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="GroupNorm", cls=GroupNorm, pytorch="torch.nn.GroupNorm",
    reduces_over="C/G channels and H, W, per sample and group",
    differences="Parameters are float64 by default (dtype=None); PyTorch uses float32. eps <= 0 is rejected. "
                "device: None or 'cpu' only. Empty groups give a zero weight gradient (PyTorch: NaN).",
    reference="Wu & He, 2018", backends=("numpy", "numba"),
    cases=(
        Case("NCHW", {"num_groups": 2, "num_channels": 4}, ((2, 4, 3, 2),), modes=("train",)),
        Case("G=1", {"num_groups": 1, "num_channels": 3}, ((2, 3, 4),), modes=("train",)),
        Case("G=C", {"num_groups": 3, "num_channels": 3}, ((2, 3, 2, 2),), modes=("train",)),
        Case("no-affine", {"num_groups": 2, "num_channels": 4, "affine": False}, ((2, 4, 3),), modes=("train",)),
        Case("no-bias", {"num_groups": 2, "num_channels": 4, "bias": False}, ((3, 4, 2),), modes=("train",)),
    ),
))
