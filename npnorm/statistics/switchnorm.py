r"""Switchable normalization (Luo et al., 2019): ``SwitchNorm2d``, a learned mixture of the statistics
of InstanceNorm, LayerNorm and BatchNorm, with the reference implementation's names and conventions.

Per sample :math:`n` and channel :math:`c`, over the :math:`M = HW` positions (the reference code's
instance variance is the **unbiased** one):

.. math::
   \mu^{in}_{nc} = \frac{1}{M}\sum_{h,w} x, \qquad
   v^{in}_{nc} = \frac{1}{M-1}\sum_{h,w}(x - \mu^{in}_{nc})^2, \qquad t_{nc} = v^{in}_{nc} + (\mu^{in}_{nc})^2  \tag{SN1}
.. math::
   \mu^{ln}_n = \overline{\mu^{in}_{n\cdot}}, \ v^{ln}_n = \overline{t_{n\cdot}} - (\mu^{ln}_n)^2, \qquad
   \mu^{bn}_c = \overline{\mu^{in}_{\cdot c}}, \ v^{bn}_c = \overline{t_{\cdot c}} - (\mu^{bn}_c)^2           \tag{SN2}
.. math::
   \mu = \sum_k w_k \mu^k, \quad \sigma^2 = \sum_k w'_k v^k, \quad w = \operatorname{softmax}(\lambda),\ w' = \operatorname{softmax}(\lambda')  \tag{SN3}
.. math::
   y = \gamma\,\frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta                                        \tag{SN4}

(bars are means over the dotted index), :math:`k \in \{in, ln, bn\}`. In evaluation the BN branch uses
``running_mean`` / ``running_var``, updated in training as
:math:`\hat\mu \leftarrow m\hat\mu + (1 - m)\mu^{bn}` with ``momentum`` :math:`m = 0.997` (the fraction
*kept*, unlike PyTorch's BatchNorm).

Backward: from :math:`g = \gamma\,dy` and :math:`r = (\sigma^2+\epsilon)^{-1/2}`,
:math:`\partial L/\partial \mu_{nc} = -\sum_{h,w} g r` and
:math:`\partial L/\partial \sigma^2_{nc} = -\tfrac12 \sum_{h,w} g (x - \mu) r^3`; these flow to the
branch statistics through (SN3) (and to :math:`\lambda, \lambda'` through the softmax), through (SN2)
to :math:`\mu^{in}` and :math:`t`, and through (SN1) to :math:`x`:
:math:`\partial \mu^{in}/\partial x = 1/M` and :math:`\partial v^{in}/\partial x = 2(x - \mu^{in})/(M-1)`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import as_float_array, check_cache, check_channels, check_dout, check_eps, check_ndim, check_positive_int
from ..backend import check_backend, pick, pick_for_cache
from ..base import Module
from ..kernels._common import run_reusing
from ..kernels.statistics import switchnorm as _kernels

__all__ = ["switch_norm_forward", "switch_norm_backward", "switch_mixture", "switch_mixture_backward",
           "SwitchNorm2d"]

_V = (1, -1, 1, 1)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def switch_mixture(mu: np.ndarray, v: np.ndarray, mean_weight: np.ndarray, var_weight: np.ndarray,
                   running: tuple[np.ndarray, np.ndarray] | None = None):
    """Equations (SN2)-(SN3): the mixed ``(mean, var)`` from the instance statistics ``mu``, ``v``
    (the unbiased variance of (SN1)), arrays of shape (N, C) or (N, C, 1, 1), and the logits
    ``mean_weight`` / ``var_weight`` (3: IN, LN, BN; 2: no BN branch). ``running=(mean, var)``
    replaces the BN branch's batch statistics (evaluation). Returns ``(mean, var, mix)``, ``mix``
    the dict :func:`switch_mixture_backward` needs (the branch statistics ``means`` / ``vars``,
    the softmax weights ``wm`` / ``wv``, ``mu``, ``mu_ln``, ``train_bn``); shared by the NumPy
    reference and the Numba twin."""
    t = v + mu * mu
    mu_ln = mu.mean(axis=1, keepdims=True)
    v_ln = t.mean(axis=1, keepdims=True) - mu_ln * mu_ln                             # (SN2)
    means, vars_ = [mu, mu_ln], [v, v_ln]
    use_bn = len(mean_weight) == 3
    if use_bn:
        if running is None:
            mu_bn = mu.mean(axis=0, keepdims=True)
            v_bn = t.mean(axis=0, keepdims=True) - mu_bn * mu_bn
        else:                           # private copies, in the layout of mu: (1, C) or (1, C, 1, 1)
            view = (1, -1) + (1,) * (mu.ndim - 2)
            mu_bn = np.array(running[0], dtype=np.float64).reshape(view)
            v_bn = np.array(running[1], dtype=np.float64).reshape(view)
        means.append(mu_bn)
        vars_.append(v_bn)
    wm, wv = _softmax(np.asarray(mean_weight, dtype=np.float64)), _softmax(np.asarray(var_weight, dtype=np.float64))
    mean = sum(a * s for a, s in zip(wm, means))                                      # (SN3)
    var = sum(b * s for b, s in zip(wv, vars_))
    mix = {"mu": mu, "mu_ln": mu_ln, "means": means, "vars": vars_, "wm": wm, "wv": wv,
           "train_bn": use_bn and running is None}
    return mean, var, mix


def switch_mixture_backward(dmean: np.ndarray, dvar: np.ndarray, mix: dict[str, Any]):
    """Backward of :func:`switch_mixture`: from ``dL/dmean`` and ``dL/dvar`` (the shape of ``mu``)
    to ``(dmu, dv, dmean_weight, dvar_weight)``: the gradients of the instance statistics ``mu``
    and ``v`` (through (SN3), (SN2) and (SN1)'s ``t = v + mu^2``) and of the logits (through the
    softmax). ``mix`` is the dict :func:`switch_mixture` returned (or a cache holding its keys)."""
    n, c = dmean.shape[:2]
    wm, wv, means, vars_ = mix["wm"], mix["wv"], mix["means"], mix["vars"]
    # (SN3): to the branch statistics and to the mixture weights (then through the softmax)
    dwm = np.array([np.sum(dmean * s) for s in means])
    dwv = np.array([np.sum(dvar * s) for s in vars_])
    dlam_m = wm * (dwm - np.sum(wm * dwm))
    dlam_v = wv * (dwv - np.sum(wv * dwv))
    mu, mu_ln = mix["mu"], mix["mu_ln"]
    dmu = wm[0] * dmean
    dv = wv[0] * dvar
    # (SN2), LN branch
    dmu_ln = wm[1] * dmean.sum(axis=1, keepdims=True)
    dv_ln = wv[1] * dvar.sum(axis=1, keepdims=True)
    dt = np.broadcast_to(dv_ln / c, dmu.shape).copy()
    dmu_ln = dmu_ln - 2.0 * mu_ln * dv_ln
    dmu = dmu + dmu_ln / c
    # BN branch (only when its statistics come from this batch)
    if mix["train_bn"]:
        mu_bn = means[2]
        dmu_bn = wm[2] * dmean.sum(axis=0, keepdims=True)
        dv_bn = wv[2] * dvar.sum(axis=0, keepdims=True)
        dt = dt + dv_bn / n
        dmu_bn = dmu_bn - 2.0 * mu_bn * dv_bn
        dmu = dmu + dmu_bn / n
    # (SN1): t = v + mu^2
    dv = dv + dt
    dmu = dmu + 2.0 * mu * dt
    return dmu, dv, dlam_m, dlam_v


def switch_norm_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, mean_weight: np.ndarray,
                        var_weight: np.ndarray, eps: float = 1e-5, running: tuple[np.ndarray, np.ndarray] | None = None):
    """Equations (SN1)-(SN4) for ``(N, C, H, W)`` input. ``mean_weight``/``var_weight`` hold 3 logits
    (IN, LN, BN) or 2 (IN, LN: no BN branch). ``running=(mean, var)`` makes the BN branch use them
    (evaluation). Returns ``(out, cache)``; the cache has ``mean_bn`` / ``var_bn`` in training."""
    x64 = np.asarray(x, dtype=np.float64)
    n, c, h, w = x64.shape
    m = h * w
    mu = x64.mean(axis=(2, 3), keepdims=True)
    xc_in = x64 - mu
    v = np.sum(xc_in * xc_in, axis=(2, 3), keepdims=True) / (m - 1)                 # (SN1)
    mean, var, mix = switch_mixture(mu, v, mean_weight, var_weight, running)   # (SN2)-(SN3)
    r = 1.0 / np.sqrt(var + eps)
    xc = x64 - mean
    x_hat = xc * r
    out = x_hat * weight.reshape(_V) + bias.reshape(_V)                              # (SN4)
    cache = {"x_hat": x_hat, "xc": xc, "r": r, "xc_in": xc_in, **mix, "weight": weight,
             "m": m, "dtype": x.dtype, "out_shape": x64.shape}
    if len(mix["means"]) == 3:
        cache["mean_bn"], cache["var_bn"] = mix["means"][2].reshape(-1), mix["vars"][2].reshape(-1)
    return out.astype(x.dtype, copy=False), cache


def switch_norm_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Backward of :func:`switch_norm_forward` (module docstring). Returns
    ``(dx, dweight, dbias, dmean_weight, dvar_weight)``."""
    dy = np.asarray(check_cache(dout, cache, "switch_norm_backward"), dtype=np.float64)
    x_hat, xc, r = cache["x_hat"], cache["xc"], cache["r"]
    m = cache["m"]
    dweight, dbias = np.sum(dy * x_hat, axis=(0, 2, 3)), dy.sum(axis=(0, 2, 3))
    g = dy * cache["weight"].reshape(_V)
    dx = g * r
    dmean = -np.sum(g * r, axis=(2, 3), keepdims=True)
    dvar = -0.5 * np.sum(g * xc, axis=(2, 3), keepdims=True) * r**3
    dmu, dv, dlam_m, dlam_v = switch_mixture_backward(dmean, dvar, cache)   # (SN3)-(SN1)
    dx = dx + dmu / m + dv * 2.0 * cache["xc_in"] / (m - 1)
    return dx.astype(cache["dtype"], copy=False), dweight, dbias, dlam_m, dlam_v


class SwitchNorm2d(Module):
    """Switchable normalization of ``(N, C, H, W)`` input, as the reference implementation's
    ``SwitchNorm2d(num_features, eps=1e-5, momentum=0.997, using_bn=True, last_gamma=False)``.

    ``backend`` (keyword-only): ``"numba"`` (the fused kernels of
    :mod:`npnorm.kernels.statistics.switchnorm`), ``"numpy"`` (the reference functions above) or
    ``None`` (the global default when the layer runs).

    Parameters: ``weight`` (ones; zeros with ``last_gamma=True``), ``bias`` (zeros), ``mean_weight``
    and ``var_weight`` (the logits :math:`\\lambda, \\lambda'`, ones: 3 of them, or 2 with
    ``using_bn=False``). Buffers ``running_mean``, ``running_var`` (zeros, as the reference). Equations
    (SN1)-(SN4) in the module docstring; needs ``H * W > 1`` (unbiased instance variance).

    Differences from the reference code: it also offers ``using_moving_average=False`` (average of
    the batch statistics over an epoch), which is left out here; float64 parameters. PyTorch has no
    switchable normalization. An empty batch (``N = 0``) gives an empty output, zero parameter
    gradients and leaves the running statistics alone.

    Rejected on purpose (``ValueError``; the reference code accepts them): ``eps <= 0`` (it keeps
    the division finite) and ``momentum`` outside [0, 1] (here the fraction of the running
    statistics *kept* at each step, as the reference's 0.997 default: the opposite of BatchNorm's).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.997, using_bn: bool = True,
                 last_gamma: bool = False, *, dtype: Any = np.float64, backend: str | None = None) -> None:
        super().__init__()
        self.backend = check_backend(backend, "SwitchNorm2d", allow_none=True)
        self.num_features = check_positive_int(num_features, "num_features", "SwitchNorm2d")
        self.eps = check_eps(eps, where="SwitchNorm2d")
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"SwitchNorm2d: momentum (the fraction kept) must be in [0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        self.using_bn = bool(using_bn)
        self.dtype = np.dtype(dtype)
        k = 3 if self.using_bn else 2
        self.params["weight"] = (np.zeros if last_gamma else np.ones)(num_features, dtype=self.dtype)
        self.params["bias"] = np.zeros(num_features, dtype=self.dtype)
        self.params["mean_weight"] = np.ones(k, dtype=self.dtype)
        self.params["var_weight"] = np.ones(k, dtype=self.dtype)
        if self.using_bn:
            self.running_mean = np.zeros(num_features, dtype=self.dtype)
            self.running_var = np.zeros(num_features, dtype=self.dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "SwitchNorm2d")
        check_ndim(x, (4,), "(N, C, H, W)", "x", "SwitchNorm2d")
        check_channels(x, self.num_features, "num_features", 1, "x", "SwitchNorm2d")
        if x.shape[2] * x.shape[3] <= 1:
            raise ValueError(f"SwitchNorm2d: needs more than one position per channel (H * W > 1) for the "
                             f"unbiased instance variance, got input of shape {x.shape}")
        p = self.params
        if x.shape[0] == 0:
            self._cache = ("empty", {"shape": x.shape, "dtype": x.dtype})
            return np.array(x, copy=True)
        running = None if (self.training or not self.using_bn) else (self.running_mean, self.running_var)
        forward = pick(self.backend, switch_norm_forward, _kernels.switch_norm_forward)
        out, cache = run_reusing(forward, _kernels.switch_norm_forward, self._cache, x, p["weight"], p["bias"],
                                 p["mean_weight"], p["var_weight"], self.eps, running)
        if self.training and self.using_bn:
            k = self.momentum
            self.running_mean = (k * self.running_mean + (1 - k) * cache["mean_bn"]).astype(self.dtype)
            self.running_var = (k * self.running_var + (1 - k) * cache["var_bn"]).astype(self.dtype)
        self._cache = ("sn", cache)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        kind, cache = self._require_cache()
        if kind == "empty":
            dx = np.array(check_dout(dout, cache["shape"], where="SwitchNorm2d.backward"), dtype=cache["dtype"])
            grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        else:
            check_dout(dout, cache["out_shape"], where="SwitchNorm2d.backward")
            backward = pick_for_cache(cache, switch_norm_backward, _kernels.switch_norm_backward)
            dx, dw, db, dlm, dlv = backward(dout, cache)
            grads = {"weight": dw, "bias": db, "mean_weight": dlm, "var_weight": dlv}
        self.grads = {k: np.asarray(v).astype(self.dtype, copy=False) for k, v in grads.items()}
        return dx

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, using_bn={self.using_bn}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402


def _running_near_batch(layer: SwitchNorm2d, rng: np.random.Generator) -> None:
    if layer.using_bn:
        layer.running_mean = rng.normal(5.0, 1.0, layer.num_features)
        layer.running_var = rng.uniform(5.0, 12.0, layer.num_features)


register(Spec(
    name="SwitchNorm2d", cls=SwitchNorm2d, pytorch=None, reference="Luo et al., 2019",
    reduces_over="a softmax mixture of the IN (H, W), LN (C, H, W) and BN (N, H, W) statistics",
    differences="reference implementation's conventions (unbiased instance variance, momentum = fraction kept); "
                "no using_moving_average=False; float64",
    setup=_running_near_batch, backends=("numpy", "numba"),
    cases=(
        Case("in-ln-bn", {"num_features": 3}, ((3, 3, 2, 3),)),
        Case("in-ln", {"num_features": 2, "using_bn": False}, ((2, 2, 3, 2),), modes=("train",)),
    ),
))
