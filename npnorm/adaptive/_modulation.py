r"""The two steps every adaptive normalizer shares: project the condition, then modulate.

**Projection.** A condition vector :math:`c` of shape ``(N, E)`` (a style vector, a timestep + class
embedding) goes through an optional activation and a linear map to ``k`` values per sample:

.. math:: p = \phi(c)\,W^\top + b, \qquad \phi \in \{\text{identity}, \mathrm{SiLU}\}.   \tag{P}

Backward, with :math:`g = \partial L/\partial p`:
:math:`\partial L/\partial W = g^\top \phi(c)`, :math:`\partial L/\partial b = \sum_n g`,
:math:`\partial L/\partial c = (g W) \odot \phi'(c)`.

**Modulation.** A normalized activation :math:`\hat x` of shape ``(N, C, *)`` (channels on axis 1)
or ``(N, *, C)`` (features last) gets a per-sample, per-channel scale and shift, broadcast over the
other axes:

.. math:: y = \hat x\,(\text{base} + s_{n,c}) + t_{n,c}.                             \tag{M}

``base`` is 1 for the ``1 + scale`` parameterisation (AdaGN, adaLN, FiLM's ``gamma_baseline=1``) and
0 when the scale is predicted directly. Backward, with :math:`g = \partial L/\partial y` and the sums
over the broadcast axes:

.. math:: \frac{\partial L}{\partial \hat x} = g\,(\text{base} + s), \qquad
          \frac{\partial L}{\partial s_{n,c}} = \sum g\,\hat x, \qquad
          \frac{\partial L}{\partial t_{n,c}} = \sum g.

Everything is computed in float64. Caches hold copies (never a view of a caller's array).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._numerics import sigmoid

__all__ = ["ACTIVATIONS", "check_act", "project_forward", "project_backward", "modulate_forward",
           "linear_params", "check_condition", "check_labels",
           "modulate_backward", "expand"]

#: Activations a projection may apply to the condition first (diffusers' ``act_fn`` names).
ACTIVATIONS = (None, "silu", "swish")


def check_act(act_fn: object, where: str) -> str | None:
    """``act_fn`` must be None, ``"silu"`` or ``"swish"`` (the same function)."""
    if act_fn not in ACTIVATIONS:
        raise ValueError(f"{where}: act_fn must be one of {list(ACTIVATIONS)}, got {act_fn!r}")
    return "silu" if act_fn == "swish" else act_fn  # type: ignore[return-value]


def project_forward(c: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                    act: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Equation (P): ``(p, cache)`` with ``p = act(c) @ weight.T + bias``, float64."""
    c64 = np.array(c, dtype=np.float64)                      # a copy: the cache never aliases c
    if act == "silu":
        s = sigmoid(c64)
        a = c64 * s
        dact = s * (1.0 + c64 * (1.0 - s))                   # SiLU'(c)
    else:
        a, dact = c64, None
    w = np.array(weight, dtype=np.float64)                   # a copy, like c64
    p = a @ w.T
    if bias is not None:
        p = p + bias
    return p, {"a": a, "dact": dact, "weight": w, "has_bias": bias is not None}


def project_backward(dp: np.ndarray, cache: dict[str, Any]):
    """Backward of (P): ``(dc, dweight, dbias)`` (``dbias`` None without a bias)."""
    g = np.asarray(dp, dtype=np.float64)
    dweight = g.T @ cache["a"]
    dbias = g.sum(axis=0) if cache["has_bias"] else None
    dc = g @ cache["weight"]
    if cache["dact"] is not None:
        dc = dc * cache["dact"]
    return dc, dweight, dbias


def expand(p: np.ndarray, ndim: int, channel_axis: int) -> np.ndarray:
    """A per-(sample, channel) array ``(N, C)`` shaped to broadcast against an ``ndim``-D activation
    whose channels are on ``channel_axis`` (1, or -1 for features last)."""
    n, c = p.shape
    if channel_axis == 1:
        return p.reshape((n, c) + (1,) * (ndim - 2))
    return p.reshape((n,) + (1,) * (ndim - 2) + (c,))


def modulate_forward(x_hat: np.ndarray, scale: np.ndarray, shift: np.ndarray, base: float = 1.0,
                     channel_axis: int = 1) -> tuple[np.ndarray, dict[str, Any]]:
    """Equation (M) for ``x_hat`` (float64) and ``scale``, ``shift`` of shape ``(N, C)``."""
    s = expand(scale, x_hat.ndim, channel_axis)
    t = expand(shift, x_hat.ndim, channel_axis)
    y = x_hat * (base + s) + t
    axes = tuple(i for i in range(1, x_hat.ndim) if i != channel_axis % x_hat.ndim)
    return y, {"x_hat": x_hat, "factor": base + s, "axes": axes, "channel_axis": channel_axis}


def modulate_backward(dy: np.ndarray, cache: dict[str, Any]):
    """Backward of (M): ``(dx_hat, dscale, dshift)``, the last two of shape
    ``(N, C)``."""
    g = np.asarray(dy, dtype=np.float64)
    axes = cache["axes"]
    dshift = g.sum(axis=axes)
    dscale = (g * cache["x_hat"]).sum(axis=axes)
    return g * cache["factor"], dscale, dshift


def linear_params(in_features: int, out_features: int, rng: Any, dtype: Any, zero: bool = False):
    """``(weight (out, in), bias (out,))`` initialised as ``torch.nn.Linear`` does
    (:math:`U(\\pm 1/\\sqrt{\\text{in}})` for both), or zeros (``zero=True``: DiT's adaLN-Zero)."""
    from ..nn import init

    w = np.empty((out_features, in_features), dtype=dtype)
    b = np.empty(out_features, dtype=dtype)
    if zero:
        return init.zeros_(w), init.zeros_(b)
    gen = init.get_rng(rng)
    bound = 1.0 / np.sqrt(in_features)
    return init.uniform_(w, -bound, bound, gen), init.uniform_(b, -bound, bound, gen)


def check_condition(c: object, n: int, dim: int, name: str, arg: str, where: str) -> np.ndarray:
    """A condition vector: a float array of shape ``(n, dim)`` (``dim`` set by constructor ``arg``)."""
    from .._checks import as_float_array

    c = as_float_array(c, name, where)
    if c.ndim != 2 or c.shape[0] != n or c.shape[1] != dim:
        raise ValueError(f"{where}: expected {name} of shape (N={n}, {arg}={dim}) - one vector per sample "
                         f"of x - got shape {c.shape}")
    return c


def check_labels(y: object, n: int, num: int, name: str, arg: str, where: str) -> np.ndarray:
    """Integer labels of shape ``(n,)`` in ``[0, num)``; a copy as int64."""
    arr = np.asarray(y)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{where}: {name} must be an integer array of labels, got dtype {arr.dtype}")
    if arr.shape != (n,):
        raise ValueError(f"{where}: expected {name} of shape (N={n},) - one label per sample - got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= num):
        raise ValueError(f"{where}: {name} must be in [0, {arg}={num}), got values in [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64, copy=True)
