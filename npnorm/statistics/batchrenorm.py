r"""Batch renormalization (Ioffe, 2017): ``BatchRenorm1d`` and ``BatchRenorm2d``.

BatchNorm trains with the statistics of the mini-batch and evaluates with the running averages;
with small or non-i.i.d. batches the two disagree. Batch renormalization corrects the batch-normalized
activations towards what the running statistics would give, with two per-channel numbers computed
from them and treated as **constants** in the backward pass (stop-gradient):

.. math::
   \mu_B, \ \sigma_B = \sqrt{\sigma_B^2 + \epsilon}  \quad\text{(batch statistics, biased variance)}  \tag{brn-forward}
.. math::
   r = \operatorname{clip}_{[1/r_{max},\ r_{max}]}\!\left(\frac{\sigma_B}{\sigma}\right), \qquad
   d = \operatorname{clip}_{[-d_{max},\ d_{max}]}\!\left(\frac{\mu_B - \mu}{\sigma}\right)        \tag{brn-forward}
.. math::
   \hat x = \frac{x - \mu_B}{\sigma_B}\, r + d, \qquad y = \gamma \hat x + \beta                  \tag{brn-forward}

where :math:`\mu, \sigma` are the running mean and running **standard deviation** (the paper tracks
:math:`\sigma`, not the variance), updated after the step with
:math:`\mu \leftarrow \mu + \alpha(\mu_B - \mu)`, :math:`\sigma \leftarrow \sigma + \alpha(\sigma_B - \sigma)`
(:math:`\alpha` = ``momentum``, 0.01). Evaluation: :math:`y = \gamma (x - \mu)/\sigma + \beta`.
With :math:`r_{max} = 1, d_{max} = 0` it is BatchNorm. The paper's schedule
(:func:`batch_renorm_schedule`) starts there and relaxes to :math:`r_{max} = 3` and
:math:`d_{max} = 5`.

Backward: with :math:`r, d` constants, :math:`y = \gamma r \tilde x + \gamma d + \beta` where
:math:`\tilde x = (x - \mu_B)/\sigma_B` is BatchNorm's normalized input, so the input gradient is
BatchNorm's with :math:`g = \gamma r\, dy`:

.. math::
   \frac{\partial L}{\partial x} = \frac{1}{m \sigma_B}\left(m g - \sum g - \tilde x \sum g \tilde x\right),
   \qquad \frac{\partial L}{\partial \gamma} = \sum dy\, \hat x, \qquad
   \frac{\partial L}{\partial \beta} = \sum dy.                                                    \tag{brn-backward}

(This is the true gradient of the forward wherever :math:`r` and :math:`d` are clipped, and a
deliberate approximation elsewhere, as the paper specifies.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import (as_float_array, check_cache, check_channels, check_dout,
                       check_eps, check_momentum, check_ndim, check_positive_int)
from ..backend import check_backend, pick, pick_for_cache
from ..base import Module
from ..kernels._common import run_reusing
from ..kernels.statistics import batchrenorm as _kernels
from .batchnorm import _channel_view, _reduce_axes

__all__ = ["batch_renorm_forward", "batch_renorm_backward", "batch_renorm_schedule", "BatchRenorm1d", "BatchRenorm2d"]


def batch_renorm_schedule(step: int, rmax: float = 3.0, dmax: float = 5.0, warmup: int = 5000,
                          r_ramp_end: int = 40000, d_ramp_end: int = 25000) -> tuple[float, float]:
    """The paper's schedule: ``(rmax, dmax) = (1, 0)`` for the first ``warmup`` steps, then linear
    ramps reaching ``rmax`` at ``r_ramp_end`` and ``dmax`` at ``d_ramp_end``, constant after.
    (Ioffe 2017, section 4: 5k steps of BatchNorm, r_max to 3 by 40k, d_max to 5 by 25k.)"""
    def ramp(start: float, end: float, stop: int) -> float:
        if step <= warmup:
            return start
        if step >= stop:
            return end
        return start + (end - start) * (step - warmup) / (stop - warmup)
    return ramp(1.0, float(rmax), r_ramp_end), ramp(0.0, float(dmax), d_ramp_end)


def batch_renorm_forward(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
                         running_mean: np.ndarray, running_std: np.ndarray, rmax: float = 3.0,
                         dmax: float = 5.0, eps: float = 1e-5, r: np.ndarray | None = None,
                         d: np.ndarray | None = None):
    """Training-mode batch renormalization, eq. (brn-forward), for ``(N, C, *)`` input.

    ``r`` and ``d`` (shape ``(C,)``) may be given to freeze them (the backward pass treats them as
    constants either way). Returns ``(out, cache)``; the cache has the batch ``mean`` and ``std``
    (:math:`\\sigma_B`, eps included) and the ``r``, ``d`` used.
    """
    axes, view = _reduce_axes(x.ndim), _channel_view(x.ndim)
    x64 = np.asarray(x, dtype=np.float64)
    m = x64.size // x64.shape[1]
    mean = x64.mean(axis=axes)
    xc = x64 - mean.reshape(view)
    std = np.sqrt(np.mean(xc * xc, axis=axes) + eps)                            # eq. (brn-forward)
    rs = np.asarray(running_std, dtype=np.float64)
    if r is None:
        r = np.clip(std / rs, 1.0 / rmax, rmax)                                  # eq. (brn-forward)
    if d is None:
        d = np.clip((mean - np.asarray(running_mean, dtype=np.float64)) / rs, -dmax, dmax)
    x_tilde = xc / std.reshape(view)
    x_hat = x_tilde * np.asarray(r).reshape(view) + np.asarray(d).reshape(view)  # eq. (brn-forward)
    out = x_hat if weight is None else x_hat * weight.reshape(view)
    if bias is not None:
        out = out + bias.reshape(view)
    cache = {"x_tilde": x_tilde, "x_hat": x_hat, "std": std, "mean": mean, "r": np.array(r, dtype=np.float64),
             "d": np.array(d, dtype=np.float64), "m": m, "weight": weight, "has_bias": bias is not None,
             "axes": axes, "view": view, "dtype": x.dtype, "out_shape": x_hat.shape}
    return out.astype(x.dtype, copy=False), cache


def batch_renorm_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Eq. (brn-backward): BatchNorm's backward with
    :math:`g = \\gamma r\\,dy` (``r``, ``d`` constant).
    Returns ``(dx, dweight, dbias)``."""
    dy = np.asarray(check_cache(dout, cache, "batch_renorm_backward"),
                    dtype=np.float64)
    axes, view, m = cache["axes"], cache["view"], cache["m"]
    weight = cache["weight"]
    dbias = dy.sum(axis=axes) if cache["has_bias"] else None
    dweight = (np.sum(dy * cache["x_hat"], axis=axes)
               if weight is not None else None)
    g = dy * cache["r"].reshape(view)
    if weight is not None:
        g = g * weight.reshape(view)
    x_tilde = cache["x_tilde"]
    if m == 0:
        return dy.astype(cache["dtype"], copy=False), dweight, dbias
    g_sum = g.sum(axis=axes, keepdims=True)
    gx_sum = np.sum(g * x_tilde, axis=axes, keepdims=True)
    dx = (m * g - g_sum - x_tilde * gx_sum) / (m * cache["std"].reshape(view))
    return dx.astype(cache["dtype"], copy=False), dweight, dbias


class _BatchRenorm(Module):
    _ndims: tuple[int, ...] = ()
    _layout = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.01, affine: bool = True,
                 rmax: float = 3.0, dmax: float = 5.0, *, schedule: tuple[int, int, int] | None = None,
                 dtype: Any = np.float64, backend: str | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        self.backend = check_backend(backend, name, allow_none=True)
        self.num_features = check_positive_int(num_features, "num_features", name)
        self.eps = check_eps(eps, where=name)
        self.momentum = check_momentum(momentum, where=name)
        if self.momentum is None:
            raise ValueError(f"{name}: momentum must be a float in [0, 1] (no cumulative average), got None")
        self.rmax, self.dmax = float(rmax), float(dmax)
        if self.rmax < 1.0 or self.dmax < 0.0:
            raise ValueError(f"{name}: need rmax >= 1 and dmax >= 0, got rmax={rmax}, dmax={dmax}")
        self.affine = bool(affine)
        self.dtype = np.dtype(dtype)
        self.schedule = None if schedule is None else tuple(int(s) for s in schedule)
        self._final = (self.rmax, self.dmax)
        if self.affine:
            self.params["weight"] = np.ones(num_features, dtype=self.dtype)
            self.params["bias"] = np.zeros(num_features, dtype=self.dtype)
        self.running_mean = np.zeros(num_features, dtype=self.dtype)
        self.running_std = np.ones(num_features, dtype=self.dtype)
        self.num_batches_tracked = 0

    #: the running statistics are always tracked (there is no ``track_running_stats=False``): a
    #: training batch, an empty one included, counts in ``num_batches_tracked`` as in BatchNorm
    track_running_stats = True

    def set_schedule(self, step: int, **kwargs: Any) -> None:
        """Set ``rmax`` and ``dmax`` from :func:`batch_renorm_schedule` at ``step``."""
        self.rmax, self.dmax = batch_renorm_schedule(step, **kwargs)

    def forward(self, x: np.ndarray) -> np.ndarray:
        name = type(self).__name__
        x = as_float_array(x, "x", name)
        check_ndim(x, self._ndims, self._layout, "x", name)
        check_channels(x, self.num_features, "num_features", 1, "x", name)
        w, b = self.params.get("weight"), self.params.get("bias")
        view = _channel_view(x.ndim)
        if not self.training:
            if pick(self.backend, "numpy", "numba") == "numba":
                out, cache = run_reusing(_kernels.batch_renorm_eval_forward, _kernels.batch_renorm_eval_forward,
                                         self._cache, x, self.running_mean, self.running_std, w, b)
                self._cache = ("eval", cache)
                return out
            rstd = 1.0 / np.asarray(self.running_std, dtype=np.float64)
            x_hat = (np.asarray(x, dtype=np.float64) - self.running_mean.reshape(view)) * rstd.reshape(view)
            out = x_hat if w is None else x_hat * w.reshape(view)
            out = out if b is None else out + b.reshape(view)
            # the weight used here, not the one self.params holds at backward time (an optimizer step
            # or an edit in between must not change this pass's gradient)
            self._cache = ("eval", {"x_hat": x_hat, "rstd": rstd, "dtype": x.dtype,
                                    "weight": None if w is None else np.array(w, dtype=np.float64)})
            return out.astype(x.dtype, copy=False)
        m = x.size // self.num_features
        if m == 1:
            raise ValueError(f"{name}: expected more than 1 value per channel when training, got input of "
                             f"shape {x.shape}; use a larger batch or call .eval()")
        if self.schedule is not None:
            self.rmax, self.dmax = batch_renorm_schedule(self.num_batches_tracked, *self._final, *self.schedule)
        self.num_batches_tracked += 1
        if m == 0:
            self._cache = ("empty", {"shape": x.shape, "dtype": x.dtype})
            return np.array(x, copy=True)
        forward = pick(self.backend, batch_renorm_forward, _kernels.batch_renorm_forward)
        out, cache = run_reusing(forward, _kernels.batch_renorm_forward, self._cache, x, w, b, self.running_mean,
                                 self.running_std, self.rmax, self.dmax, self.eps)
        a = self.momentum
        self.running_mean = (self.running_mean + a * (cache["mean"] - self.running_mean)).astype(self.dtype)
        self.running_std = (self.running_std + a * (cache["std"] - self.running_std)).astype(self.dtype)
        self._cache = ("train", cache)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        mode, cache = self._require_cache()
        where = f"{type(self).__name__}.backward"
        if mode == "train":
            check_dout(dout, cache["out_shape"], where=where)
            backward = pick_for_cache(cache, batch_renorm_backward, _kernels.batch_renorm_backward)
            dx, dweight, dbias = backward(dout, cache)
        elif cache.get("backend") == "numba":                      # evaluation mode, Numba twin
            check_dout(dout, cache["shape"], where=where)
            dx, dweight, dbias = _kernels.batch_renorm_eval_backward(dout, cache)
        elif mode == "empty":
            dy = check_dout(dout, cache["shape"], where=where)
            dx, dweight = np.array(dy, dtype=cache["dtype"]), np.zeros(self.num_features)
            dbias = np.zeros(self.num_features)
        else:
            x_hat, rstd = cache["x_hat"], cache["rstd"]
            dy = np.asarray(check_dout(dout, x_hat.shape, where=where), dtype=np.float64)
            view, axes = _channel_view(dy.ndim), _reduce_axes(dy.ndim)
            w = cache["weight"]
            dx = dy * rstd.reshape(view) * (1.0 if w is None else w.reshape(view))
            dx = dx.astype(cache["dtype"], copy=False)
            dweight, dbias = np.sum(dy * x_hat, axis=axes), dy.sum(axis=axes)
        if self.affine:
            self.grads["weight"] = np.asarray(dweight).astype(self.dtype, copy=False)
            self.grads["bias"] = np.asarray(dbias).astype(self.dtype, copy=False)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"rmax={self.rmax}, dmax={self.dmax}" + (f", backend={self.backend!r}" if self.backend else ""))


class BatchRenorm1d(_BatchRenorm):
    """Batch renormalization of ``(N, C)`` or ``(N, C, L)`` input (Ioffe, 2017); equations in the
    module docstring.

    Arguments ``(num_features, eps=1e-5, momentum=0.01, affine=True, rmax=3.0, dmax=5.0)``; set
    ``layer.rmax`` / ``layer.dmax`` during training (or :meth:`set_schedule`) for the paper's
    schedule, or pass ``schedule=(warmup, r_ramp_end, d_ramp_end)`` (keyword-only, in training
    steps) to have each training forward set them from :func:`batch_renorm_schedule` at
    ``num_batches_tracked``, ramping to the ``rmax`` and ``dmax`` given. Parameters ``weight``,
    ``bias``; buffers ``running_mean``, ``running_std`` (the running standard deviation, eps
    included, as in the paper), ``num_batches_tracked``. ``backend`` (keyword-only): ``"numba"``
    (the kernels of :mod:`npnorm.kernels.statistics.batchrenorm`, training and evaluation),
    ``"numpy"`` (the reference functions of this module) or ``None`` (the global default).

    PyTorch has no batch renormalization. Differences from the other references: Keras
    (``BatchNormalization(renorm=True)``) and torchrl (``BatchRenorm1d``) track the running
    *variance* and torchrl warms up with plain BatchNorm by a step count; here the running standard
    deviation is tracked as in the paper and the schedule is explicit. Raises ``ValueError`` for
    one value per channel in training. An empty batch (``N = 0``) follows PyTorch 2.13's BatchNorm:
    an empty output, zero parameter gradients, the running statistics left alone while
    ``num_batches_tracked`` (the schedule's step) still counts it in training.

    Rejected on purpose (``ValueError``): ``eps <= 0`` (it keeps the division finite),
    ``momentum`` outside [0, 1] or ``None`` (no cumulative average), ``rmax < 1`` and ``dmax < 0``.
    """

    _ndims = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchRenorm2d(_BatchRenorm):
    """Batch renormalization of ``(N, C, H, W)`` input; arguments, parameters, buffers, empty
    batches and differences as :class:`BatchRenorm1d`.

    Rejected on purpose (``ValueError``): ``eps <= 0``, ``momentum`` outside [0, 1] or ``None``,
    ``rmax < 1`` and ``dmax < 0``.
    """

    _ndims = (4,)
    _layout = "(N, C, H, W)"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402


def _far_running_stats(layer: _BatchRenorm, rng: np.random.Generator, case: Case) -> None:
    """Running statistics far from the batch's (inputs have mean ~5, std ~3) so that r and d are
    clipped - then the stop-gradient backward is the exact gradient and the check is meaningful -
    unless the case asks for them near the batch's (with rmax=1, dmax=0 it is BatchNorm)."""
    c = layer.num_features
    if case.extra.get("near"):
        layer.running_mean = rng.normal(5.0, 0.2, c)
        layer.running_std = rng.uniform(2.5, 3.5, c)
    else:
        layer.running_mean = rng.normal(0.0, 1.0, c)
        layer.running_std = rng.uniform(0.2, 0.4, c)


_BR_DIFF = "no PyTorch equivalent; running std (not var) as in the paper; float64 parameters"
register(Spec(
    name="BatchRenorm1d", cls=BatchRenorm1d, pytorch=None, reference="Ioffe, 2017",
    reduces_over="N (and L), per channel; corrected towards the running statistics by r, d",
    differences=_BR_DIFF, setup=_far_running_stats, backends=("numpy", "numba"),
    cases=(
        Case("clipped", {"num_features": 3}, ((6, 3),)),
        Case("NCL-clipped", {"num_features": 2, "rmax": 2.0, "dmax": 1.0}, ((4, 2, 3),)),
        Case("batchnorm-limit", {"num_features": 3, "rmax": 1.0, "dmax": 0.0}, ((5, 3),), extra={"near": True}),
    ),
))
register(Spec(
    name="BatchRenorm2d", cls=BatchRenorm2d, pytorch=None, reference="Ioffe, 2017",
    reduces_over="N, H, W per channel; corrected towards the running statistics by r, d",
    differences=_BR_DIFF, setup=_far_running_stats, backends=("numpy", "numba"),
    cases=(
        Case("clipped", {"num_features": 2}, ((3, 2, 2, 3),)),
        Case("no-affine", {"num_features": 2, "affine": False}, ((3, 2, 2, 2),)),
    ),
))
