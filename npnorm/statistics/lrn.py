r"""Local response normalization (Krizhevsky et al., 2012): ``LocalResponseNorm`` and ``CrossMapLRN2d``.

Each activation is divided by a power of the energy of its neighbours *across channels*, at the same
sample and position (no statistics over the batch or space, no parameters, no train/eval
difference). For an input ``(N, C, *)`` and channel :math:`c`, with a window of ``size`` = :math:`n`
channels :math:`W(c) = [c - \lfloor n/2 \rfloor,\ c + \lfloor (n-1)/2 \rfloor]` (zero-padded at the
edges, so the divisor stays :math:`n` there):

.. math::
   s_c = k + \frac{\alpha}{n} \sum_{c' \in W(c)} x_{c'}^2                        \tag{lrn-forward}
.. math::
   y_c = x_c\, s_c^{-\beta}                                                      \tag{lrn-forward}

This is PyTorch's ``LocalResponseNorm(size, alpha=1e-4, beta=0.75, k=1.0)``: :math:`\alpha` is
divided by :math:`n` (AlexNet's paper does not divide, so AlexNet's :math:`k=2, n=5, \alpha=10^{-4}`
is ``LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)``), and an even ``size`` gives an asymmetric
window (one more channel below than above).

Backward: :math:`x_j` appears in its own numerator and in :math:`s_c` for every :math:`c` whose window
holds :math:`j`, i.e. :math:`c \in W^T(j) = [j - \lfloor (n-1)/2 \rfloor,\ j + \lfloor n/2 \rfloor]`:

.. math::
   \frac{\partial L}{\partial x_j} = g_j s_j^{-\beta}
       - \frac{2\alpha\beta}{n}\, x_j \sum_{c \in W^T(j)} g_c\, x_c\, s_c^{-\beta - 1},
   \qquad g = \frac{\partial L}{\partial y}.                                     \tag{lrn-backward}

``CrossMapLRN2d`` is the older Lua-Torch/Caffe form: 4-D input only and a symmetric window of
half-width :math:`\lfloor (n-1)/2 \rfloor` (so :math:`n` channels for an odd ``size`` - then it equals
``LocalResponseNorm`` - and :math:`n - 1` for an even one, still divided by :math:`n`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import as_float_array, check_dout, check_positive_int
from ..base import Module

__all__ = ["local_response_norm_forward", "local_response_norm_backward", "LocalResponseNorm", "CrossMapLRN2d"]


def _check_real(value: object, name: str, where: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{where}: {name} must be a real number, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{where}: {name} must be {'> 0' if positive else 'finite'}, got {value!r}")
    return v


def _window_sum(a: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``out[:, c] = sum(a[:, c + d] for d in lo..hi)`` along axis 1, zero outside ``0..C-1``."""
    out = np.zeros_like(a)
    c = a.shape[1]
    for d in range(lo, hi + 1):
        if d >= 0:
            if d < c:
                out[:, : c - d] += a[:, d:]
        elif -d < c:
            out[:, -d:] += a[:, : c + d]
    return out


def local_response_norm_forward(x: np.ndarray, size: int, alpha: float = 1e-4, beta: float = 0.75,
                                k: float = 1.0, window: tuple[int, int] | None = None):
    """Eq. (lrn-forward) over axis 1 of an ``(N, C, *)`` array (at least 3-D).

    ``window = (lo, hi)``: the channel offsets summed, default PyTorch's
    ``(-(size // 2), (size - 1) // 2)``. The divisor of ``alpha`` is always ``size``.
    Returns ``(out, cache)``; computed in float64, ``out`` in ``x.dtype``.
    """
    where = "local_response_norm"
    x = as_float_array(x, "x", where)
    size = check_positive_int(size, "size", where)
    if x.ndim < 3:
        raise ValueError(f"{where}: expected x of shape (N, C, *) with at least 3 dimensions, got shape {x.shape}")
    alpha, beta, k = _check_real(alpha, "alpha", where), _check_real(beta, "beta", where), _check_real(k, "k", where)
    lo, hi = (-(size // 2), (size - 1) // 2) if window is None else window
    x64 = np.array(x, dtype=np.float64)
    s = k + (alpha / size) * _window_sum(x64 * x64, lo, hi)           # eq. (lrn-forward)
    if np.any(s <= 0):
        raise ValueError(f"{where}: k + alpha/size * (sum of squares) must be > 0 everywhere; got k={k}, alpha={alpha}")
    s_pow = s ** (-beta)
    out = x64 * s_pow                                                 # eq. (lrn-forward)
    cache = {"x": x64, "s": s, "s_pow": s_pow, "alpha": alpha, "beta": beta, "size": size,
             "window": (lo, hi), "dtype": x.dtype}
    return out.astype(x.dtype, copy=False), cache


def local_response_norm_backward(dout: np.ndarray,
                                 cache: dict[str, Any]) -> np.ndarray:
    """Eq. (lrn-backward): the window sum of ``g x s^(-beta-1)`` over the
    transposed window."""
    x, s, s_pow = cache["x"], cache["s"], cache["s_pow"]
    g = np.asarray(check_dout(dout, x.shape,
                              where="local_response_norm_backward"),
                   dtype=np.float64)
    lo, hi = cache["window"]
    ratio = g * x * s_pow / s                   # g_c x_c s_c^(-beta-1)
    back = _window_sum(ratio, -hi, -lo)         # c in W^T(j)
    dx = (g * s_pow
          - (2.0 * cache["alpha"] * cache["beta"] / cache["size"]) * x * back)
    return dx.astype(cache["dtype"], copy=False)


class LocalResponseNorm(Module):
    """Local response normalization across channels, as ``torch.nn.LocalResponseNorm(size,
    alpha=1e-4, beta=0.75, k=1.0)``.

    Input ``(N, C, *)`` with at least 3 dimensions (as PyTorch); output of the same shape and dtype.
    No parameters, no buffers; train and eval are the same. eqs. (lrn-forward) and (lrn-backward) in the module
    docstring. Raises ``ValueError`` for ``size < 1`` or fewer than 3 input dimensions.

    Difference from PyTorch: none in the values (checked against numbers recorded from PyTorch
    2.13); computed in float64 whatever the input dtype.
    """

    _where = "LocalResponseNorm"

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> None:
        super().__init__()
        self.size = check_positive_int(size, "size", self._where)
        self.alpha = _check_real(alpha, "alpha", self._where)
        self.beta = _check_real(beta, "beta", self._where)
        self.k = _check_real(k, "k", self._where)

    def _window(self) -> tuple[int, int]:
        return -(self.size // 2), (self.size - 1) // 2

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", self._where)
        self._check_input(x)
        out, self._cache = local_response_norm_forward(x, self.size, self.alpha, self.beta, self.k, self._window())
        return out

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim < 3:
            raise ValueError(f"{self._where}: expected x of shape (N, C, *) with at least 3 dimensions, "
                             f"got shape {x.shape}")

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._require_cache()
        check_dout(dout, cache["x"].shape, where=f"{self._where}.backward")
        return local_response_norm_backward(dout, cache)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class CrossMapLRN2d(LocalResponseNorm):
    """Cross-channel LRN of ``(N, C, H, W)`` input with a symmetric window, the Lua-Torch
    ``SpatialCrossMapLRN`` that ``torch.nn.CrossMapLRN2d(size, alpha=1e-4, beta=0.75, k=1)`` ports.

    The window of channel :math:`c` is :math:`[c - h, c + h]` with :math:`h = \\lfloor(\\text{size} -
    1)/2\\rfloor`, zero-padded, and :math:`\\alpha` is divided by ``size``; for an odd ``size`` this is
    exactly :class:`LocalResponseNorm`.

    Deliberate differences from PyTorch 2.13, whose port has two defects (measured in
    ``tools/pytorch_ref_catalog.py`` and ``tests/test_pytorch_catalog.py``): (1) its forward never
    removes channel 0 from the running window sum, so channel 0 is added to the window of every
    channel ``c >= h + 1``; (2) its backward is the gradient of neither that forward
    nor the symmetric one. Here the forward is the symmetric window everywhere and the backward is
    its exact gradient; they agree with PyTorch's forward wherever its defect does not reach
    (``C <= h + 1``).
    """

    _where = "CrossMapLRN2d"

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1) -> None:
        # PyTorch 2.13's signature, default ``k=1`` (an int there; LocalResponseNorm's is 1.0)
        super().__init__(size, alpha, beta, k)

    def _window(self) -> tuple[int, int]:
        h = (self.size - 1) // 2
        return -h, h

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim != 4:
            raise ValueError(f"CrossMapLRN2d: expected x of shape (N, C, H, W) (4-D), got shape {x.shape}")


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="LocalResponseNorm", cls=LocalResponseNorm, pytorch="torch.nn.LocalResponseNorm",
    reduces_over="a window of `size` neighbouring channels at each sample and position (no statistics)",
    reference="Krizhevsky et al., 2012", differences="",
    input_offset=0.5, input_scale=1.5,
    cases=(
        Case("odd", {"size": 3, "alpha": 0.5, "beta": 0.75, "k": 1.0}, ((2, 5, 3, 2),), modes=("train",)),
        Case("even-asymmetric", {"size": 4, "alpha": 0.8, "beta": 0.6, "k": 2.0}, ((2, 6, 3),), modes=("train",)),
        Case("wider-than-C", {"size": 7, "alpha": 1.0, "beta": 1.2, "k": 1.5}, ((3, 4, 2, 2),), modes=("train",)),
        Case("alexnet", {"size": 5, "alpha": 5e-4, "beta": 0.75, "k": 2.0}, ((2, 6, 2, 2),), modes=("eval",)),
    ),
))
register(Spec(
    name="CrossMapLRN2d", cls=CrossMapLRN2d, pytorch="torch.nn.CrossMapLRN2d",
    reduces_over="a symmetric window of neighbouring channels at each sample and position",
    reference="Krizhevsky et al., 2012 (Lua Torch SpatialCrossMapLRN)",
    differences=("symmetric window everywhere and its exact gradient; PyTorch 2.13's port keeps channel 0 "
                 "in the windows of channels c >= (size-1)//2 + 1 and its backward is not the gradient of its forward"),
    input_offset=0.5, input_scale=1.5,
    cases=(
        Case("odd", {"size": 3, "alpha": 0.5, "beta": 0.75, "k": 1.0}, ((2, 6, 2, 3),), modes=("train",)),
        Case("even", {"size": 4, "alpha": 0.9, "beta": 0.5, "k": 1.0}, ((2, 5, 2, 2),), modes=("eval",)),
    ),
))
