r"""Weight standardization (Qiao et al., 2019): every output channel's weights get zero mean and unit spread.

For a weight of shape ``(out, in, kh, kw)`` (or ``(out, in)``), each output channel :math:`o` is
standardized over its :math:`m = \text{in}\cdot kh\cdot kw` fan-in values. Two conventions exist,
and both are offered (``convention=``):

``"timm"`` (default; timm's ``StdConv2d``, used by BiT and NF-Nets), biased variance, eps inside the root:

.. math::
   \mu_o = \frac1m \sum W_{o,\cdot}, \qquad
   \sigma_o^2 = \frac1m \sum (W_{o,\cdot} - \mu_o)^2, \qquad
   \hat W_{o,\cdot} = \frac{W_{o,\cdot} - \mu_o}{\sqrt{\sigma_o^2 + \epsilon}}, \quad \epsilon = 10^{-6}   \tag{ws-timm}

``"paper"`` (the authors' official code), unbiased standard deviation, eps added to it:

.. math::
   s_o = \sqrt{\frac{1}{m-1} \sum (W_{o,\cdot} - \mu_o)^2}, \qquad
   \hat W_{o,\cdot} = \frac{W_{o,\cdot} - \mu_o}{s_o + \epsilon}, \quad \epsilon = 10^{-5}        \tag{ws-paper}

Backward, with :math:`G = \partial L/\partial \hat W` and :math:`\overline{(\cdot)}` the mean over
the fan-in of one channel:

.. math::
   \text{timm:}\quad \frac{\partial L}{\partial W} = r\bigl(G - \overline{G}
   - \hat W\,\overline{G\hat W}\bigr), \qquad r = (\sigma_o^2+\epsilon)^{-1/2}                     \tag{ln-backward}
.. math::
   \text{paper:}\quad \frac{\partial L}{\partial W} = \frac{1}{s_o+\epsilon}\Bigl(G - \overline{G}
   - \hat W\,\frac{m\,\overline{G\hat W}}{m-1}\cdot\frac{s_o+\epsilon}{s_o}\Bigr)                \tag{ws-paper-backward}

eq. (ln-backward) is the standardization backward shared with layer and group norm;
eq. (ws-paper-backward) differs by the factor :math:`m/(m-1)` of the unbiased estimate and by
:math:`(s+\epsilon)/s`, because eps sits outside the root. For :math:`\epsilon \ll s` and large :math:`m` the two agree closely.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import check_cache, check_eps
from ._checks import as_weight_gradient, as_weight
from ..base import Module
from ..statistics.standardize import standardize_backward, standardize_forward

__all__ = ["weight_standardization_forward", "weight_standardization_backward", "WeightStandardization",
           "WS_CONVENTIONS"]

#: convention -> default eps.
WS_CONVENTIONS = {"timm": 1e-6, "paper": 1e-5}


def weight_standardization_forward(
    weight: np.ndarray, eps: float | None = None, convention: str = "timm"
) -> tuple[np.ndarray, dict[str, Any]]:
    """eq. (ws-timm) or eq. (ws-paper) per output channel (axis 0) over all the other axes.

    Returns ``(w_hat, cache)``, ``w_hat`` in ``weight.dtype`` (computed in float64). Raises
    ``TypeError`` for a non-floating weight, ``ValueError`` for a weight that is not at least 2-D,
    empty or not finite, an unknown convention, ``eps <= 0``, or a fan-in of 1 with ``"paper"``.
    """
    where = "weight_standardization_forward"
    weight = as_weight(weight, where, 2, what="at least 2-D ((out, in) or (out, in, kh, kw))")
    if convention not in WS_CONVENTIONS:
        raise ValueError(f"{where}: convention must be one of {sorted(WS_CONVENTIONS)}, got {convention!r}")
    eps = check_eps(WS_CONVENTIONS[convention] if eps is None else eps, where=where)
    w64 = np.asarray(weight, dtype=np.float64)
    axes = tuple(range(1, w64.ndim))
    m = w64.size // w64.shape[0]
    if convention == "timm":
        w_hat, cache = standardize_forward(w64, axes, eps)                        # eq. (ws-timm)
    else:
        if m < 2:
            raise ValueError("weight standardization (convention='paper'): the unbiased standard deviation "
                             f"needs at least 2 fan-in values per output channel, got {m} (weight shape "
                             f"{w64.shape}); use convention='timm'")
        xc = w64 - w64.mean(axis=axes, keepdims=True)
        s = np.sqrt(np.sum(xc * xc, axis=axes, keepdims=True) / (m - 1))      # unbiased std
        d = s + eps
        w_hat = xc / d                                                        # eq. (ws-paper)
        cache = {"w_hat": w_hat, "s": s, "d": d, "axes": axes}
    cache.update({"convention": convention, "m": m, "dtype": np.asarray(weight).dtype, "out_shape": w64.shape})
    return w_hat.astype(np.asarray(weight).dtype), cache          # a copy: the cache keeps its own w_hat


def weight_standardization_backward(dw_hat: np.ndarray,
                                    cache: dict[str, Any]) -> np.ndarray:
    """eq. (ln-backward) or eq. (ws-paper-backward); returns the gradient in
    the weight's dtype."""
    G = np.asarray(check_cache(dw_hat, cache,
                               "weight_standardization_backward"),
                   dtype=np.float64)
    if cache["convention"] == "timm":
        dw = standardize_backward(G, cache)         # eq. (ln-backward)
    else:
        w_hat, s, d, axes, m = (cache["w_hat"], cache["s"], cache["d"],
                                cache["axes"], cache["m"])
        g_mean = G.mean(axis=axes, keepdims=True)
        gw_mean = np.mean(G * w_hat, axis=axes, keepdims=True)
        # d/s is infinite for a constant channel (s = 0), where w_hat = 0:
        # that term is then 0.
        ratio = np.divide(d, s, out=np.zeros_like(s), where=s > 0)
        # eq. (ws-paper-backward)
        dw = (G - g_mean - w_hat * (m / (m - 1)) * gw_mean * ratio) / d
    return dw.astype(cache["dtype"], copy=False)


class WeightStandardization(Module):
    r"""Weight standardization of a weight array: ``ws = WeightStandardization(W)``, ``W_hat = ws()``,
    ``ws.backward(dW_hat)`` fills ``ws.grads["weight"]`` (and returns ``()``).

    Parameters
    ----------
    weight : ndarray, at least 2-D
        ``(out, in, kh, kw)``, ``(out, in)``, ...; copied into ``params["weight"]``. Each output
        channel (axis 0) is standardized over the other axes.
    eps : float, optional
        Default: 1e-6 for ``"timm"``, 1e-5 for ``"paper"`` (each reference's own value).
    convention : {"timm", "paper"}, default "timm"
        ``"timm"``: biased variance with eps inside the square root eq. (ws-timm) - timm's ``StdConv2d`` and
        the same standardization as npnorm's LayerNorm/GroupNorm; well defined even for a fan-in of
        1. ``"paper"``: unbiased standard deviation plus eps eq. (ws-paper) - the official code of Qiao et al.

    Notes
    -----
    PyTorch has no weight standardization. Train and eval modes are identical. No learnable gain
    (Scaled WS of NF-Nets adds one and divides by :math:`\sqrt{m}`).
    """

    def __init__(self, weight: np.ndarray, eps: float | None = None, convention: str = "timm") -> None:
        super().__init__()
        where = "WeightStandardization"
        w = as_weight(weight, where, 2, what="at least 2-D ((out, in) or (out, in, kh, kw)): each output "
                      "channel is standardized over its fan-in")
        if convention not in WS_CONVENTIONS:
            raise ValueError(f"{where}: convention must be 'timm' or 'paper', got {convention!r}")
        self.convention = convention
        self.eps = check_eps(WS_CONVENTIONS[convention] if eps is None else eps, where=where)
        if convention == "paper" and w.size // w.shape[0] < 2:
            raise ValueError(f"{where}: convention='paper' (unbiased std) needs a fan-in of at least 2, got "
                             f"weight shape {w.shape}; use convention='timm'")
        self.shape = w.shape
        self.params["weight"] = np.array(w, copy=True)

    def forward(self) -> np.ndarray:
        w = as_weight(self.params["weight"], "WeightStandardization", 2, name='params["weight"]')
        if w.shape != self.shape:
            raise ValueError(f'WeightStandardization: params["weight"] has shape {w.shape}, expected {self.shape}')
        out, self._cache = weight_standardization_forward(w, self.eps, self.convention)
        return out

    def backward(self, dout: np.ndarray) -> tuple[()]:
        cache = self._require_cache()
        G = as_weight_gradient(dout, self.shape, "WeightStandardization.backward")
        self.grads["weight"] = weight_standardization_backward(G, cache).astype(self.params["weight"].dtype,
                                                                                  copy=False)
        return ()

    def extra_repr(self) -> str:
        return f"weight_shape={self.shape}, eps={self.eps}, convention={self.convention!r}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402


def _make_ws(case: Case, rng: np.random.Generator, dtype: Any, kwargs: dict[str, Any]) -> WeightStandardization:
    # an offset and a scale, as for activations: a non-zero mean must be removed exactly
    weight = 2.0 + 3.0 * rng.standard_normal(case.extra["weight_shape"])
    return WeightStandardization(weight.astype(dtype), **kwargs)


register(Spec(
    name="WeightStandardization", cls=WeightStandardization, pytorch=None,
    reduces_over="in, kh, kw per output channel",
    differences=(
        "Not in PyTorch. Default convention 'timm' (biased variance, eps=1e-6 inside the square root, as "
        "timm's StdConv2d); convention='paper' gives the official code's unbiased std + eps (1e-5)."
    ),
    input_names=(), reference="Qiao et al., 2019", make_layer=_make_ws,
    cases=(
        Case("conv-timm", {}, (), modes=("train",), extra={"weight_shape": (3, 2, 2, 2)}),
        Case("linear-timm-large-eps", {"eps": 0.5}, (), modes=("train",), extra={"weight_shape": (4, 3)}),
        Case("conv-paper", {"convention": "paper"}, (), modes=("train",), extra={"weight_shape": (3, 2, 2, 2)}),
        Case("linear-paper-large-eps", {"convention": "paper", "eps": 0.5}, (), modes=("train",),
             extra={"weight_shape": (4, 3)}),
    ),
))
