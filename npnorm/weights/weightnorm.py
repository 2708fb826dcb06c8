r"""Weight normalization (Salimans & Kingma, 2016): a weight's direction and length, learned apart.

The weight is written as :math:`w = g\, v / \lVert v\rVert`, with one norm per slice along ``dim``
(per output channel for ``dim=0``), taken over all the *other* axes, or one norm over the whole
tensor for ``dim=None``:

.. math::
   n = \lVert v\rVert = \sqrt{\textstyle\sum_{\text{other axes}} v^2}     \tag{wn-norm}
.. math::
   w = g\,\frac{v}{n}                                                    \tag{wn-forward}

``g`` and ``n`` have the weight's number of dimensions, with size 1 on every axis but ``dim``
(shape ``(out, 1, ..., 1)`` for ``dim=0``, ``()`` for ``dim=None``), so they broadcast against ``v``.

Backward, for an upstream gradient :math:`G = \partial L/\partial w` and sums over the other axes:

.. math::
   \frac{\partial L}{\partial g} = \frac{1}{n}\sum G\, v                         \tag{wn-dg}
.. math::
   \frac{\partial L}{\partial v} = \frac{g}{n}\Bigl(G - \frac{v}{n}\,
   \frac{\partial L}{\partial g}\Bigr)
   = \frac{g}{n}\,G - \frac{g}{n^2}\frac{\partial L}{\partial g}\, v                 \tag{wn-dv}

eq. (wn-dv) is :math:`g/n` times :math:`G` with its component along :math:`v` removed: the gradient of
:math:`v` is orthogonal to :math:`v`, so plain gradient descent can only grow :math:`\lVert v\rVert`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import as_float_array, check_cache
from ._checks import as_weight_gradient, as_weight, check_dim
from ..base import Module

__all__ = ["weight_norm_forward", "weight_norm_backward", "norm_except_dim", "WeightNorm"]


def _other_axes(ndim: int, dim: int | None) -> tuple[int, ...]:
    return tuple(range(ndim)) if dim is None else tuple(a for a in range(ndim) if a != dim)


def norm_except_dim(v: np.ndarray, dim: int | None) -> np.ndarray:
    """eq. (wn-norm): the 2-norm over every axis except ``dim`` (all axes for ``None``), dims kept (float64)."""
    v = np.asarray(v, dtype=np.float64)
    return np.sqrt(np.sum(v * v, axis=_other_axes(v.ndim, dim), keepdims=dim is not None))


def weight_norm_forward(
    v: np.ndarray, g: np.ndarray, dim: int | None = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Eq. (wn-norm) and eq. (wn-forward): ``w = g * v / ||v||``.

    Parameters
    ----------
    v : ndarray
        The direction, any shape (at least 1-D).
    g : ndarray
        The length: shape ``norm_except_dim(v, dim).shape`` (size 1 on
        every axis but ``dim``).
    dim : int or None
        The axis whose slices are normalized separately (non-negative);
        ``None`` for the whole tensor.

    Returns
    -------
    w : ndarray in ``v.dtype`` (computed in float64)
    cache : dict

    Raises
    ------
    TypeError
        ``v`` or ``g`` is not a floating-point array; ``dim`` is not an int
        or None.
    ValueError
        ``v`` is not at least 1-D, empty or not finite; ``dim`` is out of
        range; ``g`` does not have the shape above; or a slice of ``v`` is
        all zeros: its direction is undefined (PyTorch returns NaN).
    """
    where = "weight_norm_forward"
    v = as_weight(v, where, 1, name="v")
    dim = check_dim(dim, v.ndim, where, allow_none=True)
    g = as_float_array(g, "g", where)
    g_shape = () if dim is None else tuple(s if a == dim else 1
                                           for a, s in enumerate(v.shape))
    if g.shape != g_shape:
        raise ValueError(f"{where}: g must have shape {g_shape} (size 1 on "
                         f"every axis but dim={dim}), got {g.shape}")
    v64 = np.asarray(v, dtype=np.float64)
    # a private copy: the cache must not follow the caller's g
    g64 = np.array(g, dtype=np.float64)
    n = norm_except_dim(v64, dim)                   # eq. (wn-norm)
    if np.any(n == 0.0):
        if dim is None:
            raise ValueError("weight norm: v is all zeros, so its direction "
                             "v / ||v|| is undefined")
        bad = [int(i) for i in np.flatnonzero(n.reshape(-1) == 0.0)]
        raise ValueError("weight norm: v has all-zero slices along "
                         f"dim={dim} at indices {bad}, so their direction "
                         "v / ||v|| is undefined")
    direction = v64 / n
    w = g64 * direction                             # eq. (wn-forward)
    cache = {"direction": direction, "n": n, "g": g64, "dim": dim,
             "dtype": np.asarray(v).dtype, "g_dtype": np.asarray(g).dtype,
             "out_shape": v.shape}
    return w.astype(np.asarray(v).dtype, copy=False), cache


def weight_norm_backward(
    dw: np.ndarray, cache: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Eq. (wn-dg) and eq. (wn-dv). Returns ``(dv, dg)`` in the dtypes of
    ``v`` and ``g``."""
    G = np.asarray(check_cache(dw, cache, "weight_norm_backward"),
                   dtype=np.float64)
    direction, n, g, dim = (cache["direction"], cache["n"], cache["g"],
                            cache["dim"])
    axes = _other_axes(G.ndim, dim)
    # eq. (wn-dg): sum(G v) / n
    dg = np.sum(G * direction, axis=axes, keepdims=dim is not None)
    dv = (g / n) * (G - direction * dg)             # eq. (wn-dv)
    return (dv.astype(cache["dtype"], copy=False),
            np.asarray(dg).astype(cache["g_dtype"], copy=False))


class WeightNorm(Module):
    r"""Weight normalization of a weight array, as ``torch.nn.utils.parametrizations.weight_norm``.

    ``wn = WeightNorm(W, dim=0)``; ``w = wn()`` returns :math:`g\,v/\lVert v\rVert`;
    ``wn.backward(dW)`` fills ``wn.grads["g"]`` and ``wn.grads["v"]`` (and returns ``()``).

    Parameters
    ----------
    weight : ndarray, at least 1-D
        The weight to reparameterize. ``params["v"]`` starts as a copy of it and ``params["g"]`` as
        its norm eq. (wn-norm), so ``wn()`` returns the weight unchanged.
    dim : int or None, default 0
        One norm per slice along ``dim`` (``g`` has shape ``(out, 1, ..., 1)`` for ``dim=0``, like
        PyTorch's ``original0``); ``None``: one norm over the whole tensor (``g`` has shape ``()``).
        Negative values count from the end.

    Notes
    -----
    ``params["g"]`` is PyTorch's ``parametrizations.weight.original0`` and ``params["v"]`` its
    ``original1``. Train and eval modes are identical.

    Deliberate differences from PyTorch: a zero slice of ``v`` raises a ``ValueError`` (at creation
    or in forward) instead of producing NaN; ``dim=-1`` means the last axis, as everywhere in NumPy
    (PyTorch's ``weight_norm`` treats ``dim=-1`` like ``dim=None``); computations run in float64 and
    the parameters keep the weight's dtype.
    """

    def __init__(self, weight: np.ndarray, dim: int | None = 0) -> None:
        super().__init__()
        where = "WeightNorm"
        w = as_weight(weight, where, 1)
        self.dim = check_dim(dim, w.ndim, where, allow_none=True)
        self.shape = w.shape
        n = norm_except_dim(w, self.dim)
        if np.any(n == 0.0):
            raise ValueError(f"{where}: the weight has an all-zero slice along dim={self.dim}; its direction "
                             "is undefined, so weight normalization cannot represent it")
        self.params["g"] = np.asarray(n, dtype=w.dtype)
        self.params["v"] = np.array(w, copy=True)

    @property
    def g_shape(self) -> tuple[int, ...]:
        """Shape of ``g``: size 1 on every axis but ``dim`` (``()`` for ``dim=None``)."""
        if self.dim is None:
            return ()
        return tuple(s if a == self.dim else 1 for a, s in enumerate(self.shape))

    def forward(self) -> np.ndarray:
        v = as_float_array(self.params["v"], 'params["v"]', "WeightNorm")
        g = as_float_array(self.params["g"], 'params["g"]', "WeightNorm")
        if v.shape != self.shape or g.shape != self.g_shape:
            raise ValueError(f'WeightNorm: params["v"] must have shape {self.shape} and params["g"] shape '
                             f"{self.g_shape}, got {v.shape} and {g.shape}")
        out, self._cache = weight_norm_forward(v, g, self.dim)
        return out

    def backward(self, dout: np.ndarray) -> tuple[()]:
        cache = self._require_cache()
        G = as_weight_gradient(dout, self.shape, "WeightNorm.backward")
        dv, dg = weight_norm_backward(G, cache)
        self.grads["g"] = dg
        self.grads["v"] = dv
        return ()

    def extra_repr(self) -> str:
        return f"weight_shape={self.shape}, dim={self.dim}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402


def _make_weight_norm(case: Case, rng: np.random.Generator, dtype: Any, kwargs: dict[str, Any]) -> WeightNorm:
    # randomize_layer then adds N(0, 0.5) noise to g and v, so g != ||v|| in the check
    return WeightNorm((0.5 + rng.standard_normal(case.extra["weight_shape"])).astype(dtype), **kwargs)


register(Spec(
    name="WeightNorm", cls=WeightNorm,
    pytorch="torch.nn.utils.parametrizations.weight_norm",
    reduces_over="all axes of the weight except dim (per output channel for dim=0); all of them for dim=None",
    differences=(
        "A zero slice of v raises instead of giving NaN; dim=-1 is the last axis (PyTorch's weight_norm "
        "treats dim=-1 as dim=None); float64 computation, parameters in the weight's dtype."
    ),
    input_names=(), reference="Salimans & Kingma, 2016", make_layer=_make_weight_norm,
    signature_twin="npnorm.weights.parametrize.weight_norm",
    cases=(
        Case("linear-dim0", {}, (), modes=("train",), extra={"weight_shape": (4, 3)}),
        Case("conv-dim0", {}, (), modes=("train",), extra={"weight_shape": (3, 2, 2, 2)}),
        Case("conv-dim1", {"dim": 1}, (), modes=("train",), extra={"weight_shape": (2, 3, 2, 2)}),
        Case("conv-dim-last", {"dim": -1}, (), modes=("train",), extra={"weight_shape": (2, 2, 3)}),
        Case("whole-tensor", {"dim": None}, (), modes=("train",), extra={"weight_shape": (3, 2, 2)}),
        Case("vector", {}, (), modes=("train",), extra={"weight_shape": (5,)}),
    ),
))
