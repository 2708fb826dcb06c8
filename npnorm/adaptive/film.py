r"""FiLM: feature-wise linear modulation (Perez et al., 2018) - the general form of every adaptive norm.

A condition :math:`c` (a question encoding, a style, a timestep embedding) is projected to one scale
and one shift per channel, which act on the features :math:`x` of shape ``(N, C, *)``:

.. math::
   [\Delta\gamma, \beta] = c\,W^\top + b, \qquad \gamma = \gamma_0 + \Delta\gamma,          \tag{FiLM1}

.. math::
   y_{n,c} = \gamma_{n,c}\, x_{n,c} + \beta_{n,c} .                                        \tag{FiLM2}

:math:`\gamma_0` is ``gamma_baseline``. The default, 1, is the FiLM authors' code (``gamma_baseline=1``):
the projection predicts the *deviation* :math:`\Delta\gamma` from the identity. With PyTorch's
default initialisation :math:`\Delta\gamma` starts small and zero-mean, so the layer starts close to the
identity instead of multiplying every feature by a random number near zero; and weight decay on
:math:`W` pulls towards "no modulation" rather than towards "switch the channel off".
``gamma_baseline=0`` predicts :math:`\gamma` directly (the paper's equation). Both are the same set of
functions: they differ only by the initial point and where regularization pulls.

FiLM has no statistics: it is the conditioning half of conditional BN, AdaGN and adaLN, which apply
it to a normalized :math:`\hat x`. Backward, with :math:`g = \partial L/\partial y`:

.. math::
   \frac{\partial L}{\partial x} = g\,\gamma, \quad
   \frac{\partial L}{\partial \Delta\gamma_{n,c}} = \sum g\,x, \quad
   \frac{\partial L}{\partial \beta_{n,c}} = \sum g,

then the projection's backward to :math:`c`, :math:`W` and :math:`b`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import as_float_array, check_dout, check_ndim, check_positive_int
from ..base import Module
from ._modulation import check_condition, linear_params, modulate_backward, modulate_forward, project_backward, \
    project_forward

__all__ = ["film_forward", "film_backward", "FiLM"]


def film_forward(x: np.ndarray, cond: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                 gamma_baseline: float = 1.0) -> tuple[np.ndarray, dict[str, Any]]:
    """FiLM of ``x`` ``(N, C, *)`` by ``cond`` ``(N, D)``, equations (FiLM1)-(FiLM2).

    ``weight`` ``(2C, D)``, ``bias`` ``(2C,)``: the first C outputs are :math:`\\Delta\\gamma`, the last
    C are :math:`\\beta`. Returns ``(out, cache)``, ``out`` in ``x``'s dtype.
    """
    c = x.shape[1]
    p, p_cache = project_forward(cond, weight, bias, None)                         # (FiLM1)
    x64 = np.array(x, dtype=np.float64)                                            # a copy, not a view
    out, m_cache = modulate_forward(x64, p[:, :c], p[:, c:], base=gamma_baseline)  # (FiLM2)
    return out.astype(x.dtype, copy=False), {"proj": p_cache, "mod": m_cache, "dtype": x.dtype,
                                             "cond_dtype": cond.dtype, "shape": x.shape}


def film_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Backward of :func:`film_forward`: ``(dx, dcond, dweight, dbias)``."""
    dx, dgamma, dbeta = modulate_backward(dout, cache["mod"])
    dcond, dweight, dbias = project_backward(np.concatenate([dgamma, dbeta], axis=1), cache["proj"])
    return dx.astype(cache["dtype"], copy=False), dcond.astype(cache["cond_dtype"], copy=False), dweight, dbias


class FiLM(Module):
    """Feature-wise linear modulation: ``y = layer(x, cond)``, ``backward(dy) -> (dx, dcond)``.

    ``x``: ``(N, num_features, *)``; ``cond``: ``(N, cond_dim)``. Parameters ``weight``
    ``(2 num_features, cond_dim)`` and ``bias`` ``(2 num_features,)`` of the projection (``torch.nn.Linear``
    initialisation); :math:`\\gamma = \\text{gamma\\_baseline} + \\Delta\\gamma`. Same in train and eval.
    Not in PyTorch; Perez et al., "FiLM: Visual Reasoning with a General Conditioning Layer", AAAI 2018.

    Parameters
    ----------
    cond_dim, num_features : int
    gamma_baseline : float
        1 (default, the FiLM code): predict :math:`\\gamma - 1`; 0: predict :math:`\\gamma` directly.
    rng, dtype : keyword-only
        Seed or Generator for the projection's initialisation; parameter dtype (float64).

    Raises
    ------
    TypeError, ValueError
        Non-float ``x``/``cond``, wrong channel count, ``cond`` not ``(N, cond_dim)``.
    """

    def __init__(self, cond_dim: int, num_features: int, gamma_baseline: float = 1.0, *,
                 dtype: Any = np.float64, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        self.cond_dim = check_positive_int(cond_dim, "cond_dim", "FiLM")
        self.num_features = check_positive_int(num_features, "num_features", "FiLM")
        self.gamma_baseline = float(gamma_baseline)
        self.dtype = np.dtype(dtype)
        self.params["weight"], self.params["bias"] = linear_params(self.cond_dim, 2 * self.num_features, rng,
                                                                   self.dtype)

    def forward(self, x: np.ndarray, cond: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "FiLM")
        check_ndim(x, range(2, 9), "(N, C, *)", "x", "FiLM")
        if x.shape[1] != self.num_features:
            raise ValueError(f"FiLM: x has {x.shape[1]} channels (shape {x.shape}) but the layer was built "
                             f"with num_features={self.num_features}")
        cond = check_condition(cond, x.shape[0], self.cond_dim, "cond", "cond_dim", "FiLM")
        out, self._cache = film_forward(x, cond, self.params["weight"], self.params["bias"], self.gamma_baseline)
        return out

    def backward(self, dout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cache = self._require_cache()
        dout = check_dout(dout, cache["shape"], "FiLM.backward")
        dx, dcond, dw, db = film_backward(dout, cache)
        self.grads["weight"] = dw.astype(self.dtype, copy=False)
        self.grads["bias"] = db.astype(self.dtype, copy=False)
        return dx, dcond

    def extra_repr(self) -> str:
        return f"{self.cond_dim}, {self.num_features}, gamma_baseline={self.gamma_baseline}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402


def _x_and_cond(case: Case, rng: np.random.Generator, dtype: Any) -> tuple[np.ndarray, ...]:
    xs, cs = case.input_shapes
    return 1.0 + 2.0 * rng.standard_normal(xs), 0.5 + rng.standard_normal(cs)


register(Spec(
    name="FiLM", cls=FiLM, pytorch=None, reference="Perez et al., 2018",
    reduces_over="nothing (no statistics); modulation per sample and channel",
    differences="Not in PyTorch. gamma = gamma_baseline + projection (1 by default, as the FiLM code).",
    input_names=("x", "cond"), make_inputs=_x_and_cond,
    cases=(
        Case("NCHW", {"cond_dim": 3, "num_features": 4}, ((2, 4, 3, 2), (2, 3)), modes=("train",)),
        Case("direct-gamma-NC", {"cond_dim": 2, "num_features": 5, "gamma_baseline": 0.0}, ((3, 5), (3, 2)),
             modes=("train",)),
    ),
))
