r"""EvoNorm (Liu, Brock, Simonyan & Le, 2020): normalization and activation found by search, as one
layer. ``EvoNorm2dB0`` (uses the batch) and ``EvoNorm2dS0`` (per sample), with timm's names,
arguments and defaults.

B0 divides by the larger of the batch standard deviation and an instance-dependent term:

.. math::
   \sigma_{B,c} = \sqrt{\operatorname{Var}_{N,H,W}(x) + \epsilon}, \qquad
   s_{nc} = \sqrt{\operatorname{Var}_{H,W}(x) + \epsilon}                                    \tag{EB1}
.. math::
   y = \gamma\, \frac{x}{\max(\sigma_B,\ v x + s)} + \beta                                    \tag{EB2}

(biased variances; in evaluation :math:`\sigma_B` comes from ``running_var``, updated with the
unbiased batch variance and ``momentum`` as BatchNorm). S0 multiplies by a learned sigmoid gate and
divides by the group standard deviation (as GroupNorm, without centring the numerator):

.. math::
   y = \gamma\, \frac{x\, \operatorname{sigmoid}(v x)}{\sqrt{\operatorname{Var}_{C/G,H,W}(x) + \epsilon}} + \beta .   \tag{ES1}

With ``apply_act=False`` both are only the affine map :math:`\gamma x + \beta` (timm's behaviour).

Backward (B0): let :math:`u = \max(\sigma_B, vx + s)` and :math:`g = \gamma\,dy`. Then
:math:`\partial L/\partial u = -g x / u^2`, routed to :math:`\sigma_B` where it is the larger and to
:math:`vx + s` elsewhere; :math:`s` and :math:`\sigma_B` pass it on through
:math:`\partial\sqrt{\operatorname{Var}+\epsilon}/\partial x = (x - \mu)/(M\sqrt{\operatorname{Var}+\epsilon})`
over their own sets (M elements). S0: with :math:`a = x\,\operatorname{sigmoid}(vx)`,
:math:`\partial a/\partial x = \sigma + v x \sigma(1-\sigma)`, :math:`\partial a/\partial v = x^2\sigma(1-\sigma)`,
and the group standard deviation as in B0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import (as_float_array, check_cache, check_channel_groups, check_channels,
                       check_dout, check_eps, check_momentum, check_ndim, check_positive_int)
from .._numerics import sigmoid
from ..backend import check_backend, pick, pick_for_cache
from ..base import Module
from ..kernels._common import run_reusing
from ..kernels.statistics import evonorm as _kernels

__all__ = ["evonorm_b0_forward", "evonorm_b0_backward", "evonorm_s0_forward", "evonorm_s0_backward",
           "EvoNorm2dB0", "EvoNorm2dS0"]

_V = (1, -1, 1, 1)


def _std_grad(dstd: np.ndarray, xc: np.ndarray, std: np.ndarray, m: int) -> np.ndarray:
    """dL/dx from dL/dstd, std = sqrt(mean(xc^2) + eps) over a set of m elements (broadcast)."""
    return dstd * xc / (m * std)


def evonorm_b0_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, v: np.ndarray,
                       running_var: np.ndarray | None = None, eps: float = 1e-3):
    """Equations (EB1)-(EB2) for ``(N, C, H, W)`` input. ``running_var=None``: training (batch
    variance); otherwise evaluation with that variance. Returns ``(out, cache)``; the cache holds the
    batch ``batch_var`` (biased) in training."""
    x64 = np.array(x, dtype=np.float64)  # a copy: the cache never follows edits of x
    if running_var is None:
        mu_b = x64.mean(axis=(0, 2, 3), keepdims=True)
        xc_b = x64 - mu_b
        var_b = np.mean(xc_b * xc_b, axis=(0, 2, 3), keepdims=True)
    else:
        xc_b, var_b = None, np.asarray(running_var, dtype=np.float64).reshape(_V)
    left = np.sqrt(var_b + eps)                                                 # (EB1)
    mu_i = x64.mean(axis=(2, 3), keepdims=True)
    xc_i = x64 - mu_i
    s = np.sqrt(np.mean(xc_i * xc_i, axis=(2, 3), keepdims=True) + eps)
    right = x64 * v.reshape(_V) + s
    use_left = left >= right
    u = np.where(use_left, left, right)
    z = x64 / u
    out = z * weight.reshape(_V) + bias.reshape(_V)                             # (EB2)
    cache = {"x": x64, "z": z, "u": u, "use_left": use_left, "left": left, "s": s, "xc_i": xc_i, "xc_b": xc_b,
             "weight": weight, "v": v, "dtype": x.dtype, "batch_var": var_b.reshape(-1), "out_shape": x64.shape}
    return out.astype(x.dtype, copy=False), cache


def evonorm_b0_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Returns ``(dx, dweight, dbias, dv)``; see the module docstring."""
    dy = np.asarray(check_cache(dout, cache, "evonorm_b0_backward"),
                    dtype=np.float64)
    x, z, u = cache["x"], cache["z"], cache["u"]
    dweight, dbias = np.sum(dy * z, axis=(0, 2, 3)), dy.sum(axis=(0, 2, 3))
    g = dy * cache["weight"].reshape(_V)
    dx = g / u
    du = -g * x / (u * u)
    d_right = np.where(cache["use_left"], 0.0, du)
    d_left = du - d_right
    dv = np.sum(d_right * x, axis=(0, 2, 3))
    dx = dx + d_right * cache["v"].reshape(_V)
    n, _, h, w = x.shape
    ds = d_right.sum(axis=(2, 3), keepdims=True)
    dx = dx + _std_grad(ds, cache["xc_i"], cache["s"], h * w)
    # training: the batch std depends on x
    if cache["xc_b"] is not None:
        dleft = d_left.sum(axis=(0, 2, 3), keepdims=True)
        dx = dx + _std_grad(dleft, cache["xc_b"], cache["left"], n * h * w)
    return dx.astype(cache["dtype"], copy=False), dweight, dbias, dv


def evonorm_s0_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, v: np.ndarray, groups: int,
                       eps: float = 1e-5):
    """Equation (ES1) for ``(N, C, H, W)`` input with ``groups`` contiguous channel groups.
    Returns ``(out, cache)``."""
    x64 = np.array(x, dtype=np.float64)  # a copy (the cache keeps it)
    n, c, h, w = x64.shape
    check_channel_groups(x64, groups, "evonorm_s0_forward")
    xg = x64.reshape(n, groups, c // groups, h, w)
    xc = xg - xg.mean(axis=(2, 3, 4), keepdims=True)
    std = np.sqrt(np.mean(xc * xc, axis=(2, 3, 4), keepdims=True) + eps)
    sig = sigmoid(x64 * v.reshape(_V))
    a = x64 * sig
    z = (a.reshape(xg.shape) / std).reshape(x64.shape)
    out = z * weight.reshape(_V) + bias.reshape(_V)                               # (ES1)
    cache = {"x": x64, "sig": sig, "a": a, "z": z, "xc": xc, "std": std, "weight": weight, "v": v,
             "dtype": x.dtype, "out_shape": x64.shape}
    return out.astype(x.dtype, copy=False), cache


def evonorm_s0_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Returns ``(dx, dweight, dbias, dv)``; see the module docstring."""
    dy = np.asarray(check_cache(dout, cache, "evonorm_s0_backward"), dtype=np.float64)
    x, sig, a, z, xc, std = cache["x"], cache["sig"], cache["a"], cache["z"], cache["xc"], cache["std"]
    dweight, dbias = np.sum(dy * z, axis=(0, 2, 3)), dy.sum(axis=(0, 2, 3))
    g = dy * cache["weight"].reshape(_V)
    shape_g = xc.shape
    da = (g.reshape(shape_g) / std).reshape(x.shape)
    dstd = -np.sum(g.reshape(shape_g) * a.reshape(shape_g), axis=(2, 3, 4), keepdims=True) / (std * std)
    dsig = sig * (1.0 - sig)
    v = cache["v"].reshape(_V)
    dv = np.sum(da * x * x * dsig, axis=(0, 2, 3))
    dx = da * (sig + v * x * dsig)
    m = shape_g[2] * shape_g[3] * shape_g[4]
    dx = dx + _std_grad(dstd, xc, std, m).reshape(x.shape)
    return dx.astype(cache["dtype"], copy=False), dweight, dbias, dv


class _EvoNorm(Module):
    _where = ""

    def _init_params(self, num_features: int, apply_act: bool, dtype: Any, backend: str | None) -> None:
        self.backend = check_backend(backend, self._where, allow_none=True)
        self.num_features = check_positive_int(num_features, "num_features", self._where)
        self.apply_act = bool(apply_act)
        self.dtype = np.dtype(dtype)
        self.params["weight"] = np.ones(num_features, dtype=self.dtype)
        self.params["bias"] = np.zeros(num_features, dtype=self.dtype)
        if self.apply_act:
            self.params["v"] = np.ones(num_features, dtype=self.dtype)

    def _validate(self, x: object) -> np.ndarray:
        x = as_float_array(x, "x", self._where)
        check_ndim(x, (4,), "(N, C, H, W)", "x", self._where)
        check_channels(x, self.num_features, "num_features", 1, "x", self._where)
        return x

    def _affine_only(self, x: np.ndarray) -> np.ndarray:
        x64 = np.array(x, dtype=np.float64)
        # the weight of this pass (a copy): backward must not read self.params, which an optimizer
        # step or an edit may change in between
        weight = np.array(self.params["weight"], dtype=np.float64)
        self._cache = ("affine", {"x": x64, "weight": weight, "dtype": x.dtype})
        out = x64 * weight.reshape(_V) + self.params["bias"].reshape(_V)
        return out.astype(x.dtype, copy=False)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        kind, cache = self._require_cache()
        check_dout(dout, cache.get("shape", cache["x"].shape), where=f"{self._where}.backward")
        if kind == "affine":
            dy = np.asarray(dout, dtype=np.float64)
            dx = (dy * cache["weight"].reshape(_V)).astype(cache["dtype"], copy=False)
            dweight, dbias = np.sum(dy * cache["x"], axis=(0, 2, 3)), dy.sum(axis=(0, 2, 3))
            dv = np.zeros(self.num_features) if "v" in self.params else None   # (an empty batch)
        else:
            backward = pick_for_cache(cache, self._backward_fn, self._kernel_backward)
            dx, dweight, dbias, dv = backward(dout, cache)
        self.grads["weight"] = dweight.astype(self.dtype, copy=False)
        self.grads["bias"] = dbias.astype(self.dtype, copy=False)
        if dv is not None:
            self.grads["v"] = dv.astype(self.dtype, copy=False)
        return dx


class EvoNorm2dB0(_EvoNorm):
    """EvoNorm-B0, as timm's ``EvoNorm2dB0(num_features, apply_act=True, momentum=0.1, eps=1e-3)``.

    Input ``(N, C, H, W)``. Parameters ``weight`` (ones), ``bias`` (zeros), ``v`` (ones, only with
    ``apply_act``); buffer ``running_var`` (ones; updated in training with the unbiased batch
    variance, ``(1 - momentum) * running_var + momentum * var * n / (n - 1)``, used in evaluation).
    Equations (EB1)-(EB2). ``eps`` (1e-3) is used in both square roots, as timm. ``backend``
    (keyword-only): ``"numba"`` (the fused kernels of :mod:`npnorm.kernels.statistics.evonorm`),
    ``"numpy"`` (:func:`evonorm_b0_forward` / :func:`evonorm_b0_backward`) or ``None`` (the global
    default); ``apply_act=False`` and an empty batch use the NumPy affine map either way.

    Differences from timm: none in the values; float64 parameters; ``num_batches_tracked`` is not
    kept (timm has none either). Raises ``ValueError`` for one value per channel in training. An
    empty batch (``N = 0``) gives an empty output, zero parameter gradients and leaves
    ``running_var`` alone.

    Rejected on purpose (``ValueError``; timm accepts them): ``eps <= 0`` (it keeps the square
    roots away from zero) and ``momentum`` outside [0, 1] or ``None``.
    """

    _where = "EvoNorm2dB0"

    def __init__(self, num_features: int, apply_act: bool = True, momentum: float = 0.1, eps: float = 1e-3, *,
                 dtype: Any = np.float64, backend: str | None = None) -> None:
        super().__init__()
        self._init_params(num_features, apply_act, dtype, backend)
        self.momentum = check_momentum(momentum, where=self._where)
        if self.momentum is None:
            raise ValueError("EvoNorm2dB0: momentum must be a float in [0, 1], got None")
        self.eps = check_eps(eps, where=self._where)
        self.running_var = np.ones(num_features, dtype=self.dtype)

    _backward_fn = staticmethod(evonorm_b0_backward)
    _kernel_backward = staticmethod(_kernels.evonorm_b0_backward)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._validate(x)
        if not self.apply_act:
            return self._affine_only(x)
        p = self.params
        if self.training:
            m = x.size // self.num_features
            if m <= 1:
                if m == 0:
                    return self._affine_only(x)
                raise ValueError(f"EvoNorm2dB0: expected more than 1 value per channel when training, got "
                                 f"input of shape {x.shape}")
            forward = pick(self.backend, evonorm_b0_forward, _kernels.evonorm_b0_forward)
            out, cache = run_reusing(forward, _kernels.evonorm_b0_forward, self._cache, x, p["weight"], p["bias"],
                                     p["v"], None, self.eps)
            a = self.momentum
            self.running_var = (self.running_var * (1 - a) + cache["batch_var"] * a * m / (m - 1)).astype(self.dtype)
        else:
            forward = pick(self.backend, evonorm_b0_forward, _kernels.evonorm_b0_forward)
            out, cache = run_reusing(forward, _kernels.evonorm_b0_forward, self._cache, x, p["weight"], p["bias"],
                                     p["v"], self.running_var, self.eps)
        self._cache = ("b0", cache)
        return out

    def extra_repr(self) -> str:
        return (f"{self.num_features}, apply_act={self.apply_act}, momentum={self.momentum}, eps={self.eps}"
                + (f", backend={self.backend!r}" if self.backend else ""))


class EvoNorm2dS0(_EvoNorm):
    """EvoNorm-S0, as timm's ``EvoNorm2dS0(num_features, groups=32, group_size=None, apply_act=True,
    eps=1e-5)``: equation (ES1), per sample (no batch statistic, no buffers, training = evaluation).

    ``group_size`` (channels per group), when given, overrides ``groups``; ``num_features`` must be
    divisible by the number of groups. Parameters ``weight`` (ones), ``bias`` (zeros), ``v`` (ones,
    with ``apply_act``). ``backend`` (keyword-only): ``"numba"`` (the fused kernels of
    :mod:`npnorm.kernels.statistics.evonorm`), ``"numpy"`` or ``None`` (the global default), as
    :class:`EvoNorm2dB0`. Differences from timm: none in the values; float64 parameters; ``eps <= 0``
    is rejected on purpose (``ValueError``; it keeps the division by the group standard deviation
    finite).
    """

    _where = "EvoNorm2dS0"

    def __init__(self, num_features: int, groups: int = 32, group_size: int | None = None, apply_act: bool = True,
                 eps: float = 1e-5, *, dtype: Any = np.float64, backend: str | None = None) -> None:
        super().__init__()
        self._init_params(num_features, apply_act, dtype, backend)
        if group_size:
            group_size = check_positive_int(group_size, "group_size", self._where)
            if num_features % group_size:
                raise ValueError(f"EvoNorm2dS0: num_features={num_features} is not divisible by "
                                 f"group_size={group_size}")
            groups = num_features // group_size
        self.groups = check_positive_int(groups, "groups", self._where)
        if num_features % self.groups:
            raise ValueError(f"EvoNorm2dS0: num_features={num_features} is not divisible by groups={groups}")
        self.eps = check_eps(eps, where=self._where)

    _backward_fn = staticmethod(evonorm_s0_backward)
    _kernel_backward = staticmethod(_kernels.evonorm_s0_backward)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._validate(x)
        if not self.apply_act:
            return self._affine_only(x)
        p = self.params
        forward = pick(self.backend, evonorm_s0_forward, _kernels.evonorm_s0_forward)
        out, cache = run_reusing(forward, _kernels.evonorm_s0_forward, self._cache, x, p["weight"], p["bias"], p["v"],
                                 self.groups, self.eps)
        self._cache = ("s0", cache)
        return out

    def extra_repr(self) -> str:
        return (f"{self.num_features}, groups={self.groups}, apply_act={self.apply_act}, eps={self.eps}"
                + (f", backend={self.backend!r}" if self.backend else ""))


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="EvoNorm2dB0", cls=EvoNorm2dB0, pytorch=None, reference="Liu et al., 2020",
    reduces_over="N, H, W per channel (batch std) and H, W per sample and channel (instance std)",
    differences="timm's layer (no PyTorch one); float64 parameters",
    input_offset=0.5, input_scale=1.5, backends=("numpy", "numba"),
    cases=(
        Case("NCHW", {"num_features": 3}, ((3, 3, 2, 3),)),
        Case("no-act", {"num_features": 2, "apply_act": False}, ((2, 2, 2, 2),)),
    ),
))
register(Spec(
    name="EvoNorm2dS0", cls=EvoNorm2dS0, pytorch=None, reference="Liu et al., 2020",
    reduces_over="each sample's group of channels and their positions (the denominator)",
    differences="timm's layer (no PyTorch one); float64 parameters",
    input_offset=0.5, input_scale=1.5, backends=("numpy", "numba"),
    cases=(
        Case("groups-2", {"num_features": 4, "groups": 2}, ((2, 4, 2, 3),)),
        Case("group-size-1", {"num_features": 3, "group_size": 1}, ((2, 3, 3, 2),), modes=("eval",)),
        Case("no-act", {"num_features": 2, "groups": 1, "apply_act": False}, ((2, 2, 2, 2),), modes=("train",)),
    ),
))
