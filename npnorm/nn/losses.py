r"""Loss functions: softmax cross-entropy from logits, and mean squared error.

**Contract.** A loss is not a layer (it ends the network, and its targets are data, not something
to differentiate), so it has its own two-call interface::

    loss = criterion(logits, target)   # a Python float
    dlogits = criterion.backward()     # dL/dlogits, shape and dtype of logits

``backward(scale=1.0)`` returns ``scale * dL/dlogits`` (useful for weighting several losses).

**Cross-entropy** (``torch.nn.CrossEntropyLoss``, mean reduction) for logits :math:`z` of shape
``(N, K)`` and integer labels :math:`t_n \in \{0..K-1\}`:

.. math::
   p = \mathrm{softmax}(z), \qquad
   L = -\frac{1}{N}\sum_n \log p_{n, t_n}
     = \frac{1}{N}\sum_n \Big(\log\sum_k e^{z_{n,k}} - z_{n,t_n}\Big),               \tag{CE}
.. math::
   \frac{\partial L}{\partial z} = \frac{1}{N}\,\big(p - \mathrm{onehot}(t)\big).

The log-sum-exp is computed after subtracting each row's maximum, so large logits do not overflow.

**MSE** (``torch.nn.MSELoss``, mean reduction): :math:`L = \frac{1}{M}\sum (y - t)^2` over all
:math:`M` elements; :math:`\partial L/\partial y = \frac{2}{M}(y - t)`.
"""

from __future__ import annotations

import numpy as np

from .._checks import as_float_array

__all__ = ["Loss", "CrossEntropyLoss", "MSELoss", "softmax", "log_softmax",
           "cross_entropy_forward", "cross_entropy_backward", "mse_forward", "mse_backward"]

_REDUCTIONS = ("mean", "sum")


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """:math:`z - \\log\\sum e^z`, stable for large :math:`|z|`."""
    z = np.asarray(z, dtype=np.float64)
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """:math:`e^{z}/\\sum e^{z}` along ``axis``."""
    return np.exp(log_softmax(z, axis))


def cross_entropy_forward(logits: np.ndarray, target: np.ndarray, reduction: str = "mean"):
    """Equation (CE). Returns ``(loss, cache)``."""
    logp = log_softmax(logits, axis=1)
    n = logits.shape[0]
    picked = logp[np.arange(n), target]
    total = -picked.sum()
    loss = total / n if reduction == "mean" else total
    return float(loss), {"logp": logp, "target": target, "reduction": reduction, "dtype": logits.dtype}


def cross_entropy_backward(cache, scale: float = 1.0) -> np.ndarray:
    """:math:`(p - \\mathrm{onehot}(t))/N` (without the 1/N for ``reduction='sum'``)."""
    p = np.exp(cache["logp"])
    n = p.shape[0]
    p[np.arange(n), cache["target"]] -= 1.0
    if cache["reduction"] == "mean":
        p /= n
    return (scale * p).astype(cache["dtype"], copy=False)


def mse_forward(pred: np.ndarray, target: np.ndarray, reduction: str = "mean"):
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    total = float(np.sum(diff * diff))
    loss = total / diff.size if reduction == "mean" else total
    return loss, {"diff": diff, "reduction": reduction, "dtype": pred.dtype}


def mse_backward(cache, scale: float = 1.0) -> np.ndarray:
    diff = cache["diff"]
    g = 2.0 * diff / (diff.size if cache["reduction"] == "mean" else 1.0)
    return (scale * g).astype(cache["dtype"], copy=False)


class Loss:
    """Base class of the losses: ``loss = crit(pred, target)``, ``dpred = crit.backward()``."""

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self._cache = None

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> float:
        return self.forward(pred, target)

    def backward(self, scale: float = 1.0) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before the loss was computed: "
                               "run loss = criterion(pred, target) first")
        return self._backward(self._cache, scale)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy from raw logits ``(N, K)`` and integer class labels ``(N,)``, as
    ``torch.nn.CrossEntropyLoss(reduction='mean')`` (no class weights, label smoothing or
    ``ignore_index``). ``forward`` returns the loss as a float; ``backward()`` returns dL/dlogits."""

    _backward = staticmethod(cross_entropy_backward)

    def forward(self, logits: np.ndarray, target: np.ndarray) -> float:
        logits = as_float_array(logits, "logits", "CrossEntropyLoss")
        target = np.asarray(target)
        if logits.ndim != 2:
            raise ValueError(f"CrossEntropyLoss: expected logits of shape (N, num_classes), got shape {logits.shape}")
        if not np.issubdtype(target.dtype, np.integer):
            raise TypeError(f"CrossEntropyLoss: target must hold integer class labels, got dtype {target.dtype}")
        if target.shape != logits.shape[:1]:
            raise ValueError(f"CrossEntropyLoss: target of shape {target.shape} does not match logits of shape "
                             f"{logits.shape}; expected target shape ({logits.shape[0]},)")
        k = logits.shape[1]
        if target.size and (target.min() < 0 or target.max() >= k):
            raise ValueError(f"CrossEntropyLoss: labels must be in 0..{k - 1} for {k} logits per sample, got "
                             f"labels in {target.min()}..{target.max()}")
        loss, self._cache = cross_entropy_forward(logits, target, self.reduction)
        return loss


class MSELoss(Loss):
    """Mean squared error, as ``torch.nn.MSELoss(reduction='mean')``; ``pred`` and ``target`` have
    the same shape."""

    _backward = staticmethod(mse_backward)

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        pred = as_float_array(pred, "pred", "MSELoss")
        target = np.asarray(target)
        if target.shape != pred.shape:
            raise ValueError(f"MSELoss: pred of shape {pred.shape} and target of shape {target.shape} differ")
        loss, self._cache = mse_forward(pred, target, self.reduction)
        return loss
