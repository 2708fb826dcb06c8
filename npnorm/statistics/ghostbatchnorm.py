r"""Ghost batch normalization (Hoffer, Hubara & Soudry, 2017): ``GhostBatchNorm``.

Large-batch training loses BatchNorm's regularizing noise and its statistics stop resembling those
of the small batches the model generalized with. Ghost BatchNorm splits the batch of :math:`N` samples
into :math:`K = \lceil N / V \rceil` contiguous *virtual* batches :math:`B_1, \dots, B_K` of nearly
equal size (at most ``virtual_batch_size`` = :math:`V`) and batch-normalizes each with its own
statistics, sharing :math:`\gamma, \beta`:

.. math::
   y_i = \gamma\,\frac{x_i - \mu_{B_k}}{\sqrt{\sigma^2_{B_k} + \epsilon}} + \beta, \qquad i \in B_k.   \tag{GBN1}

The backward pass is BatchNorm's within each virtual batch; :math:`\partial L/\partial\gamma` and
:math:`\partial L/\partial\beta` add up over them. The running statistics are updated once per
forward pass with the averages over the virtual batches of :math:`\mu_{B_k}` and of the unbiased
:math:`\sigma^2_{B_k}`; evaluation is BatchNorm's. With :math:`V \ge N` it is BatchNorm.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import check_dout, check_positive_int
from ..backend import pick, pick_for_cache
from ..kernels.statistics import ghostbatchnorm as _kernels
from .batchnorm import _BatchNorm, batch_norm_backward, batch_norm_eval_backward, batch_norm_eval_forward, batch_norm_forward

__all__ = ["ghost_batch_norm_forward", "ghost_batch_norm_backward", "GhostBatchNorm"]


def _split(n: int, virtual_batch_size: int) -> list[tuple[int, int]]:
    k = max(1, -(-n // virtual_batch_size))
    sizes = [n // k + (i < n % k) for i in range(k)]
    bounds, start = [], 0
    for s in sizes:
        bounds.append((start, start + s))
        start += s
    return bounds


def ghost_batch_norm_forward(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
                             virtual_batch_size: int, eps: float = 1e-5):
    """Equation (GBN1) for ``(N, C, *)`` input. Returns ``(out, cache)``; the cache lists each
    virtual batch's BatchNorm cache and its ``means``, ``vars`` (biased) and ``counts``."""
    out = np.empty(x.shape, dtype=x.dtype)
    caches = []
    for lo, hi in _split(x.shape[0], virtual_batch_size):
        out[lo:hi], cache = batch_norm_forward(x[lo:hi], weight, bias, eps)
        caches.append(((lo, hi), cache))         # the BatchNorm cache has m, mean, batch_var
    return out, {"parts": caches, "shape": x.shape, "dtype": x.dtype, "weight": weight, "has_bias": bias is not None}


def ghost_batch_norm_backward(dout: np.ndarray, cache: dict[str, Any]):
    """BatchNorm's backward in each virtual batch. Returns
    ``(dx, dweight, dbias)``."""
    dout = check_dout(dout, cache["shape"], where="ghost_batch_norm_backward")
    dx = np.empty(cache["shape"], dtype=cache["dtype"])
    dweight = dbias = None
    for (lo, hi), part in cache["parts"]:
        dx[lo:hi], dw, db = batch_norm_backward(dout[lo:hi], part)
        dweight = dw if dweight is None else dweight + dw
        dbias = db if dbias is None else dbias + db
    return dx, dweight, dbias


class GhostBatchNorm(_BatchNorm):
    """Ghost batch normalization of ``(N, C, *)`` input: ``GhostBatchNorm(num_features,
    virtual_batch_size=32, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)``.

    BatchNorm over each of the :math:`\\lceil N/V \\rceil` contiguous virtual batches of nearly equal
    size (``np.array_split``), equation (GBN1); parameters, buffers and evaluation as BatchNorm. Each
    virtual batch must hold more than one value per channel in training.

    PyTorch has none; Keras has ``BatchNormalization(virtual_batch_size=...)``, which requires ``N``
    divisible by the virtual batch size (here any ``N`` works) and also averages the virtual batches'
    statistics for the moving averages. ``backend`` (keyword-only) selects the BatchNorm kernels
    used for each virtual batch (``"numba"``: :mod:`npnorm.kernels.statistics.ghostbatchnorm`); in
    evaluation mode the NumPy affine map is used. An empty batch (``N = 0``) follows PyTorch 2.13's
    BatchNorm: an empty output, zero parameter gradients, the running statistics left alone while
    ``num_batches_tracked`` still counts it in training.

    Rejected on purpose (``ValueError``), as :class:`~npnorm.BatchNorm1d`: ``eps <= 0`` (it keeps
    the division finite) and ``momentum`` outside [0, 1] (``None``: cumulative average, as
    PyTorch's BatchNorm).
    """

    _ndims = (2, 3, 4, 5)
    _layout = "(N, C, *)"

    def __init__(self, num_features: int, virtual_batch_size: int = 32, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True, track_running_stats: bool = True, *,
                 dtype: Any = np.float64, backend: str | None = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype=dtype, backend=backend)
        self.virtual_batch_size = check_positive_int(virtual_batch_size, "virtual_batch_size", "GhostBatchNorm")

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._validate(x)
        w, b = self.params.get("weight"), self.params.get("bias")
        if not self.uses_batch_stats:
            out, cache = batch_norm_eval_forward(x, self.running_mean, self.running_var, w, b, self.eps)
            self._cache = ("eval", (x.shape, cache))
            return out
        per_sample = x.size // max(1, x.shape[0] * self.num_features)
        bounds = _split(x.shape[0], self.virtual_batch_size)
        if x.shape[0] and min(hi - lo for lo, hi in bounds) * per_sample <= 1:
            raise ValueError(f"GhostBatchNorm: every virtual batch needs more than 1 value per channel; input "
                             f"of shape {x.shape} with virtual_batch_size={self.virtual_batch_size} gives "
                             f"virtual batches of {[hi - lo for lo, hi in bounds]} samples")
        if x.shape[0] == 0:
            if self.training and self.track_running_stats:
                self.num_batches_tracked += 1
            self._cache = ("empty", {"shape": x.shape, "dtype": x.dtype})
            return np.array(x, copy=True)
        forward = pick(self.backend, ghost_batch_norm_forward, _kernels.ghost_batch_norm_forward)
        out, cache = forward(x, w, b, self.virtual_batch_size, self.eps)
        if self.training and self.track_running_stats:
            means = np.mean([p["mean"] for _, p in cache["parts"]], axis=0)
            unbiased = np.mean([p["batch_var"] * p["m"] / (p["m"] - 1) for _, p in cache["parts"]], axis=0)
            self.num_batches_tracked += 1
            factor = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
            self.running_mean = ((1 - factor) * self.running_mean + factor * means).astype(self.dtype)
            self.running_var = ((1 - factor) * self.running_var + factor * unbiased).astype(self.dtype)
        self._cache = ("ghost", cache)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        mode, cache = self._require_cache()
        where = "GhostBatchNorm.backward"
        if mode == "eval":
            check_dout(dout, cache[0], where=where)
            dx, dweight, dbias = batch_norm_eval_backward(dout, cache[1])
        elif mode == "empty":
            dx = np.array(check_dout(dout, cache["shape"], where=where), dtype=cache["dtype"])
            dweight = dbias = np.zeros(self.num_features)
        else:
            check_dout(dout, cache["shape"], where=where)
            backward = pick_for_cache(cache, ghost_batch_norm_backward, _kernels.ghost_batch_norm_backward)
            dx, dweight, dbias = backward(dout, cache)
        if self.affine:
            self.grads["weight"] = np.asarray(dweight).astype(self.dtype, copy=False)
            self.grads["bias"] = np.asarray(dbias).astype(self.dtype, copy=False)
        return dx

    def extra_repr(self) -> str:
        return super().extra_repr() + f", virtual_batch_size={self.virtual_batch_size}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="GhostBatchNorm", cls=GhostBatchNorm, pytorch=None, reference="Hoffer et al., 2017",
    reduces_over="each virtual batch (and every spatial axis), per channel",
    differences="no PyTorch equivalent; any N (Keras: N divisible by the virtual batch size); float64",
    backends=("numpy", "numba"),
    cases=(
        Case("NC-3-ghosts", {"num_features": 3, "virtual_batch_size": 3}, ((8, 3),)),
        Case("NCHW", {"num_features": 2, "virtual_batch_size": 2}, ((4, 2, 2, 3),)),
        Case("one-ghost", {"num_features": 2, "virtual_batch_size": 16, "affine": False}, ((5, 2, 3),)),
        Case("no-running-stats", {"num_features": 2, "virtual_batch_size": 2, "track_running_stats": False},
             ((4, 2, 3),)),
    ),
))
