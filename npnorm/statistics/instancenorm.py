r"""Instance normalization (Ulyanov, Vedaldi & Lempitsky, 2016): ``InstanceNorm1d``, ``2d`` and ``3d``.

Every (sample, channel) pair of an ``(N, C, L)`` or ``(N, C, H, W)`` input is standardized over its
spatial positions (:math:`m = L` or :math:`H W`), then an optional per-channel affine map follows:

.. math::
   \hat x_{n,c} = \frac{x_{n,c} - \mu_{n,c}}{\sqrt{\sigma^2_{n,c} + \epsilon}}, \qquad
   y_{n,c} = \gamma_c\,\hat x_{n,c} + \beta_c .                                   \tag{IN}

PyTorch's defaults are kept: ``affine=False`` and ``track_running_stats=False``, so the instance
statistics are used in training **and** in evaluation. With ``track_running_stats=True`` training
still normalizes with instance statistics and updates

.. math::
   \hat\mu_c \leftarrow (1-\alpha)\hat\mu_c + \alpha\,\tfrac{1}{N}\textstyle\sum_n \mu_{n,c}, \qquad
   \hat\sigma^2_c \leftarrow (1-\alpha)\hat\sigma^2_c + \alpha\,\tfrac{1}{N}\sum_n \tfrac{m}{m-1}\sigma^2_{n,c},

and evaluation then uses the running statistics (the same affine map as batch norm in eval mode).
Unbatched input ``(C, L)`` / ``(C, H, W)`` is accepted, as in PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import (as_float_array, check_cache, check_channels, check_min_ndim, check_nc_input, check_ndim,
                       check_spatial)
from ..backend import pick, pick_for_cache
from ..base import Module
from ..kernels.statistics import batchnorm as _bn_kernels
from ..kernels._common import run_reusing
from ..kernels.statistics import instancenorm as _kernels
from .batchnorm import batch_norm_eval_backward, batch_norm_eval_forward, init_norm_state
from .standardize import standardize_backward, standardize_forward

__all__ = ["instance_norm_forward", "instance_norm_backward", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"]


def instance_norm_forward(
    x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float = 1e-5
) -> tuple[np.ndarray, dict[str, Any]]:
    """Instance norm of ``x`` of shape ``(N, C, *spatial)``, equation (IN). Returns ``(out, cache)``.

    The cache also holds the instance ``mean`` and biased ``var`` of shape ``(N, C)``.

    Raises
    ------
    TypeError
        ``x`` or a parameter is not a floating-point array.
    ValueError
        ``x`` has fewer than 3 dimensions, a parameter's shape is not ``(C,)``, ``eps <= 0``, or
        there is exactly one spatial element per channel (PyTorch raises too). An empty batch gives
        an empty output.
    """
    where = "instance_norm_forward"
    x, weight, bias, eps = check_nc_input(x, weight, bias, eps, where)
    check_min_ndim(x, 3, "(N, C, *spatial)", "x", where)
    check_spatial(x, where)
    axes = tuple(range(2, x.ndim))
    view = (1, -1) + (1,) * (x.ndim - 2)
    x_hat, cache = standardize_forward(x, axes, eps)
    out = x_hat.copy() if weight is None else x_hat * weight.reshape(view)
    if bias is not None:
        out = out + bias.reshape(view)
    cache.update(weight=weight, has_bias=bias is not None, view=view, dtype=x.dtype,
                 param_axes=(0,) + axes, out_shape=x.shape)
    return out.astype(x.dtype, copy=False), cache


def instance_norm_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Backward pass of :func:`instance_norm_forward`: returns ``(dx, dweight, dbias)``."""
    dy = np.asarray(check_cache(dout, cache, "instance_norm_backward"), dtype=np.float64)
    axes, weight = cache["param_axes"], cache["weight"]
    dbias = dy.sum(axis=axes) if cache["has_bias"] else None
    dweight = (dy * cache["x_hat"]).sum(axis=axes) if weight is not None else None
    g = dy if weight is None else dy * weight.reshape(cache["view"])
    dx = standardize_backward(g, cache)
    return dx.astype(cache["dtype"], copy=False), dweight, dbias


class _InstanceNorm(Module):
    _spatial_dims = 1
    _layout = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = False, track_running_stats: bool = False, device: Any = None, dtype: Any = None,
                 *, bias: bool = True, backend: str | None = None) -> None:
        super().__init__()
        init_norm_state(self, num_features, eps, momentum, affine, track_running_stats, device, dtype, bias,
                        backend)

    @property
    def uses_instance_stats(self) -> bool:
        return self.training or not self.track_running_stats

    def forward(self, x: np.ndarray) -> np.ndarray:
        name = type(self).__name__
        x = as_float_array(x, "x", name)
        batched = self._spatial_dims + 2
        check_ndim(x, (batched - 1, batched), self._layout, "x", name)
        unbatched = x.ndim == batched - 1
        if unbatched:
            x = x[None]
        check_channels(x, self.num_features, "num_features", 1, "x", name)
        w, b = self.params.get("weight"), self.params.get("bias")
        if self.uses_instance_stats:
            m = check_spatial(x, name, x.shape[1:] if unbatched else x.shape)
            forward = pick(self.backend, instance_norm_forward, _kernels.instance_norm_forward)
            out, cache = run_reusing(forward, _kernels.instance_norm_forward, self._cache, x, w, b, self.eps)
            if self.training and self.track_running_stats:
                self.num_batches_tracked += 1
                if x.shape[0] and m:          # an empty batch counts but leaves the statistics alone
                    f = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
                    mean = cache["mean"].reshape(x.shape[:2]).mean(axis=0)
                    var = (cache["var"].reshape(x.shape[:2]) * (m / (m - 1))).mean(axis=0)
                    self.running_mean = ((1 - f) * self.running_mean + f * mean).astype(self.dtype)
                    self.running_var = ((1 - f) * self.running_var + f * var).astype(self.dtype)
            self._cache = ("instance", cache, unbatched)
        else:
            forward = pick(self.backend, batch_norm_eval_forward, _bn_kernels.batch_norm_eval_forward)
            out, cache = run_reusing(forward, _bn_kernels.batch_norm_eval_forward, self._cache,
                                     x, self.running_mean, self.running_var, w, b, self.eps)
            self._cache = ("running", cache, unbatched)
        return out[0] if unbatched else out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        mode, cache, unbatched = self._require_cache()
        dout = np.asarray(dout)
        if unbatched:
            dout = dout[None]
        if mode == "instance":
            fn = pick_for_cache(cache, instance_norm_backward, _kernels.instance_norm_backward)
        else:
            fn = pick_for_cache(cache, batch_norm_eval_backward, _bn_kernels.batch_norm_eval_backward)
        dx, dweight, dbias = fn(dout, cache)
        if "weight" in self.params:
            self.grads["weight"] = dweight.astype(self.dtype, copy=False)
        if "bias" in self.params:
            self.grads["bias"] = dbias.astype(self.dtype, copy=False)
        return dx[0] if unbatched else dx

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                + ("bias=False, " if self.affine and "bias" not in self.params else "")
                + f"track_running_stats={self.track_running_stats}"
                + (f", backend={self.backend!r}" if self.backend else ""))


_IN_DOC = """
    Constructor: PyTorch 2.13's full signature ``(num_features, eps=1e-5, momentum=0.1,
    affine=False, track_running_stats=False, device=None, dtype=None, *, bias=True)``, plus
    npnorm's keyword-only ``backend``; ``bias=False`` (with ``affine=True``) keeps ``weight`` only.

    Degenerate input, as PyTorch 2.13: instance statistics over one spatial element raise
    ``ValueError`` (training, or evaluation without running statistics); an empty batch gives an
    empty output and zero parameter gradients.

    Deliberate differences from PyTorch (2.13):

    * ``eps <= 0`` is rejected (``ValueError``), and ``momentum`` outside [0, 1] is rejected;
    * a channel count different from ``num_features`` is an error even when ``affine=False``
      (PyTorch only warns);
    * ``momentum=None`` is a cumulative average, as in batch norm (PyTorch passes momentum 0 to
      ``F.instance_norm``, so its running statistics silently never change);
    * ``num_batches_tracked`` counts training batches (PyTorch's buffer stays 0);
    * an empty batch with ``affine=True`` or ``track_running_stats=True`` works like the plain
      layer (PyTorch 2.13 fails there with an internal ``IndexError``);
    * ``dtype=None`` means float64 parameters and buffers; ``device``: only ``None`` or ``"cpu"``.

    ``backend`` (keyword-only): ``"numba"`` (the GroupNorm kernels with one channel per group, see
    :mod:`npnorm.kernels.statistics.instancenorm`), ``"numpy"`` (the reference) or ``None`` (the
    global default).
"""


class InstanceNorm1d(_InstanceNorm):
    __doc__ = """Instance normalization of ``(N, C, L)`` (or unbatched ``(C, L)``) input, as
    ``torch.nn.InstanceNorm1d``. Defaults as PyTorch: ``eps=1e-5, momentum=0.1, affine=False,
    track_running_stats=False``.
""" + _IN_DOC

    _spatial_dims = 1
    _layout = "(N, C, L) or (C, L)"


class InstanceNorm2d(_InstanceNorm):
    __doc__ = """Instance normalization of ``(N, C, H, W)`` (or unbatched ``(C, H, W)``) input, as
    ``torch.nn.InstanceNorm2d``. Same defaults as :class:`InstanceNorm1d`.
""" + _IN_DOC

    _spatial_dims = 2
    _layout = "(N, C, H, W) or (C, H, W)"


class InstanceNorm3d(_InstanceNorm):
    __doc__ = """Instance normalization of ``(N, C, D, H, W)`` (or unbatched ``(C, D, H, W)``) input, as
    ``torch.nn.InstanceNorm3d``. Same defaults as :class:`InstanceNorm1d`.
""" + _IN_DOC

    _spatial_dims = 3
    _layout = "(N, C, D, H, W) or (C, D, H, W)"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

_IN_DIFF = ("A channel count other than num_features is an error even with affine=False (PyTorch warns). "
            "momentum=None is a cumulative average and num_batches_tracked counts training batches "
            "(PyTorch never updates the running statistics with momentum=None and leaves the counter at 0). "
            "Parameters and buffers are float64 by default (dtype=None). eps <= 0 and momentum outside [0, 1] are "
            "rejected; device: None or 'cpu' only. An empty batch with affine or running statistics works "
            "(PyTorch 2.13 raises an internal IndexError).")
register(Spec(
    name="InstanceNorm1d", cls=InstanceNorm1d, pytorch="torch.nn.InstanceNorm1d",
    reduces_over="L, per sample and channel", differences=_IN_DIFF, reference="Ulyanov, Vedaldi & Lempitsky, 2016",
    backends=("numpy", "numba"),
    cases=(
        Case("default", {"num_features": 3}, ((2, 3, 5),), modes=("train",)),
        Case("affine", {"num_features": 3, "affine": True}, ((2, 3, 5),), modes=("train",)),
        Case("unbatched", {"num_features": 2, "affine": True}, ((2, 6),), modes=("train",),
             extra={"batch_axis": None}),
        Case("running-stats", {"num_features": 2, "affine": True, "track_running_stats": True}, ((3, 2, 4),)),
    ),
))
register(Spec(
    name="InstanceNorm2d", cls=InstanceNorm2d, pytorch="torch.nn.InstanceNorm2d",
    reduces_over="H, W, per sample and channel", differences=_IN_DIFF, reference="Ulyanov, Vedaldi & Lempitsky, 2016",
    backends=("numpy", "numba"),
    cases=(
        Case("default", {"num_features": 3}, ((2, 3, 3, 2),), modes=("train",)),
        Case("affine", {"num_features": 2, "affine": True}, ((2, 2, 3, 3),), modes=("train",)),
        Case("running-stats", {"num_features": 2, "affine": True, "track_running_stats": True}, ((2, 2, 2, 3),)),
        Case("no-bias", {"num_features": 2, "affine": True, "bias": False}, ((2, 2, 3, 2),), modes=("train",)),
    ),
))
register(Spec(
    name="InstanceNorm3d", cls=InstanceNorm3d, pytorch="torch.nn.InstanceNorm3d",
    reduces_over="D, H, W, per sample and channel", differences=_IN_DIFF,
    reference="Ulyanov, Vedaldi & Lempitsky, 2016", backends=("numpy", "numba"),
    cases=(
        Case("default", {"num_features": 2}, ((2, 2, 2, 3, 2),), modes=("train",)),
        Case("affine-unbatched", {"num_features": 2, "affine": True}, ((2, 2, 2, 3),), modes=("train",),
             extra={"batch_axis": None}),
        Case("running-stats", {"num_features": 2, "affine": True, "track_running_stats": True}, ((2, 2, 2, 2, 2),)),
    ),
))
