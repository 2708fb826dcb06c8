r"""adaLN and adaLN-Zero: adaptive LayerNorm as diffusion transformers use it (Peebles & Xie, 2023, DiT).

**adaLN.** LayerNorm over the last axis *without* an affine of its own (DiT: ``eps=1e-6``), modulated
by a shift and a scale regressed from the condition :math:`c` (timestep + class embedding, one
vector per sample, broadcast over the tokens):

.. math::
   [\delta, s] = \mathrm{Linear}(\mathrm{SiLU}(c)), \qquad
   \mathrm{adaLN}(x, c) = \mathrm{LN}(x)\,(1 + s) + \delta .                               \tag{adaLN}

DiT chunks the projection in the order **shift, scale** (ADM's AdaGN: scale, shift).

**adaLN-Zero.** The block also regresses a *gate* :math:`\alpha` that scales the residual branch,
and the projection is initialised to **zero** (weight and bias):

.. math::
   [\delta, s, \alpha] = \mathrm{Linear}(\mathrm{SiLU}(c)), \qquad
   y = x + \alpha \odot F\big(\mathrm{LN}(x)(1 + s) + \delta\big),                    \tag{adaLN-Zero}

here with :math:`F` a two-layer MLP (DiT has attention and an MLP, each with its own triple). At
initialisation :math:`\alpha = 0`, so every block is the identity: a deep stack starts as a
shallow network and the residual stream carries the input unchanged. The gradient is not stuck
there: :math:`\partial L/\partial \alpha = g \odot F(\cdot)` is non-zero, so the gate rows of the
projection move at the first step, and the MLP's weights (whose gradient is :math:`\alpha`-scaled,
exactly zero at step 0) start learning at the second.

Backward of (adaLN-Zero), :math:`g = \partial L/\partial y`, sums over tokens:
:math:`\partial L/\partial \alpha = \sum g\,F`, :math:`\partial L/\partial F = g\,\alpha`, then the MLP's,
the modulation's (:mod:`npnorm.adaptive._modulation`) and LayerNorm's backward, plus the identity
path :math:`g`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import as_float_array, check_dout, check_eps, check_positive_int
from .._numerics import sigmoid
from ..base import Module
from ..statistics.standardize import standardize_backward, standardize_forward
from ._modulation import (check_condition, expand, linear_params, modulate_backward, modulate_forward,
                          project_backward, project_forward)

__all__ = ["adaln_forward", "adaln_backward", "adaln_zero_forward", "adaln_zero_backward", "AdaLN",
           "AdaLNZeroBlock"]


def adaln_forward(x: np.ndarray, cond: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-6
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """Equation (adaLN) for ``x`` ``(N, *, D)`` and ``cond`` ``(N, E)``; ``weight`` ``(2D, E)``."""
    d = x.shape[-1]
    x_hat, ln_cache = standardize_forward(x, (x.ndim - 1,), eps)
    p, p_cache = project_forward(cond, weight, bias, "silu")
    out, m_cache = modulate_forward(x_hat, p[:, d:], p[:, :d], channel_axis=-1)     # shift first, then scale
    return out.astype(x.dtype, copy=False), {"ln": ln_cache, "proj": p_cache, "mod": m_cache, "dtype": x.dtype,
                                             "cond_dtype": cond.dtype, "shape": x.shape}


def adaln_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Backward of :func:`adaln_forward`: ``(dx, dcond, dweight, dbias)``."""
    dx_hat, dscale, dshift = modulate_backward(dout, cache["mod"])
    dcond, dw, db = project_backward(np.concatenate([dshift, dscale], axis=1), cache["proj"])
    dx = standardize_backward(dx_hat, cache["ln"])
    return dx.astype(cache["dtype"], copy=False), dcond.astype(cache["cond_dtype"], copy=False), dw, db


def adaln_zero_forward(x: np.ndarray, cond: np.ndarray, params: dict[str, np.ndarray], eps: float = 1e-6
                       ) -> tuple[np.ndarray, dict[str, Any]]:
    """Equation (adaLN-Zero) with ``F(u) = fc2(SiLU(fc1(u)))``; ``params`` under :class:`AdaLNZeroBlock`'s names."""
    d = x.shape[-1]
    x64 = np.asarray(x, dtype=np.float64)
    x_hat, ln_cache = standardize_forward(x64, (x.ndim - 1,), eps)
    p, p_cache = project_forward(cond, params["adaLN_modulation.1.weight"], params["adaLN_modulation.1.bias"], "silu")
    shift, scale, gate = p[:, :d], p[:, d:2 * d], p[:, 2 * d:]                     # DiT's chunk order
    u, m_cache = modulate_forward(x_hat, scale, shift, channel_axis=-1)
    w1, w2 = (np.asarray(params[k], dtype=np.float64) for k in ("mlp.fc1.weight", "mlp.fc2.weight"))
    h1 = u @ w1.T + params["mlp.fc1.bias"]
    sig = sigmoid(h1)
    a = h1 * sig                                                                    # SiLU
    f = a @ w2.T + params["mlp.fc2.bias"]
    g_e = expand(gate, x.ndim, -1)
    out = x64 + g_e * f
    cache = {"ln": ln_cache, "proj": p_cache, "mod": m_cache, "u": u, "h1": h1, "sig": sig, "a": a, "f": f,
             "gate": g_e, "w1": w1, "w2": w2, "dtype": x.dtype, "cond_dtype": cond.dtype, "shape": x.shape}
    return out.astype(x.dtype, copy=False), cache


def adaln_zero_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Backward of :func:`adaln_zero_forward`: ``(dx, dcond, grads)``,
    ``grads`` keyed like the params."""
    g = np.asarray(dout, dtype=np.float64)
    tok = tuple(range(1, g.ndim - 1))       # the token axes (none for (N, D))
    dgate = (g * cache["f"]).sum(axis=tok) if tok else g * cache["f"]
    df = g * cache["gate"]
    d = df.shape[-1]
    df2, a2 = df.reshape(-1, d), cache["a"].reshape(-1, cache["a"].shape[-1])
    grads = {"mlp.fc2.weight": df2.T @ a2, "mlp.fc2.bias": df2.sum(axis=0)}
    da = df @ cache["w2"]
    # SiLU'(h1) = sig (1 + h1 (1 - sig))
    dh1 = da * cache["sig"] * (1.0 + cache["h1"] * (1.0 - cache["sig"]))
    dh2, u2 = dh1.reshape(-1, dh1.shape[-1]), cache["u"].reshape(-1, d)
    grads["mlp.fc1.weight"] = dh2.T @ u2
    grads["mlp.fc1.bias"] = dh2.sum(axis=0)
    du = dh1 @ cache["w1"]
    dx_hat, dscale, dshift = modulate_backward(du, cache["mod"])
    dcond, dw, db = project_backward(
        np.concatenate([dshift, dscale, dgate], axis=1), cache["proj"])
    grads["adaLN_modulation.1.weight"] = dw
    grads["adaLN_modulation.1.bias"] = db
    # identity path + normalized branch
    dx = g + standardize_backward(dx_hat, cache["ln"])
    return (dx.astype(cache["dtype"], copy=False),
            dcond.astype(cache["cond_dtype"], copy=False), grads)


def _check_tokens(layer: Module, x: object, cond: object, dim: int, cond_dim: int) -> tuple[np.ndarray, np.ndarray]:
    name = type(layer).__name__
    x = as_float_array(x, "x", name)
    if x.ndim < 2 or x.shape[-1] != dim:
        raise ValueError(f"{name}: expected x of shape (N, *, dim={dim}) - features last - got shape {x.shape}")
    return x, check_condition(cond, x.shape[0], cond_dim, "cond", "cond_dim", name)


class AdaLN(Module):
    """adaLN (DiT): ``y = layer(x, cond) = LN(x) * (1 + scale) + shift``, ``backward(dy) -> (dx, dcond)``.

    ``x``: ``(N, dim)`` or ``(N, L, dim)`` (features last); ``cond``: ``(N, cond_dim)``, broadcast over
    the tokens. LayerNorm without affine (biased variance, ``eps`` inside the root, DiT's 1e-6).
    Parameters ``adaLN_modulation.1.weight`` ``(2 dim, cond_dim)`` and ``.bias`` (DiT's names for
    ``Sequential(SiLU(), Linear(cond_dim, 2 dim))``); outputs chunked **shift, scale**. ``zero_init``
    (keyword-only) zeroes them as DiT does; default: ``torch.nn.Linear``'s initialisation.
    Same in train and eval. Not a PyTorch module (diffusers' ``AdaLayerNorm`` chunks scale first).
    """

    def __init__(self, cond_dim: int, dim: int, eps: float = 1e-6, *, zero_init: bool = False,
                 dtype: Any = np.float64, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        self.cond_dim = check_positive_int(cond_dim, "cond_dim", "AdaLN")
        self.dim = check_positive_int(dim, "dim", "AdaLN")
        self.eps = check_eps(eps, where="AdaLN")
        self.dtype = np.dtype(dtype)
        w, b = linear_params(self.cond_dim, 2 * self.dim, rng, self.dtype, zero=zero_init)
        self.params["adaLN_modulation.1.weight"], self.params["adaLN_modulation.1.bias"] = w, b

    def forward(self, x: np.ndarray, cond: np.ndarray) -> np.ndarray:
        x, cond = _check_tokens(self, x, cond, self.dim, self.cond_dim)
        out, self._cache = adaln_forward(x, cond, self.params["adaLN_modulation.1.weight"],
                                         self.params["adaLN_modulation.1.bias"], self.eps)
        return out

    def backward(self, dout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cache = self._require_cache()
        dout = check_dout(dout, cache["shape"], "AdaLN.backward")
        dx, dcond, dw, db = adaln_backward(dout, cache)
        self.grads["adaLN_modulation.1.weight"] = dw.astype(self.dtype, copy=False)
        self.grads["adaLN_modulation.1.bias"] = db.astype(self.dtype, copy=False)
        return dx, dcond

    def extra_repr(self) -> str:
        return f"{self.cond_dim}, {self.dim}, eps={self.eps}"


class AdaLNZeroBlock(Module):
    """A residual MLP block with adaLN-Zero conditioning (DiT's block without attention).

    ``y = layer(x, cond) = x + gate * MLP(LN(x) * (1 + scale) + shift)`` with
    ``[shift, scale, gate] = Linear(SiLU(cond))``; ``backward(dy) -> (dx, dcond)``.
    ``x``: ``(N, dim)`` or ``(N, L, dim)``; ``cond``: ``(N, cond_dim)``.

    Parameters: ``adaLN_modulation.1.weight`` ``(3 dim, cond_dim)`` and ``.bias`` - **zero** when
    ``zero_init`` (the default, adaLN-Zero), else ``torch.nn.Linear``'s initialisation; the MLP's
    ``mlp.fc1.weight`` ``(hidden, dim)``, ``mlp.fc1.bias``, ``mlp.fc2.weight`` ``(dim, hidden)``,
    ``mlp.fc2.bias`` with ``hidden = int(dim * mlp_ratio)``, Xavier-uniform weights and zero biases
    (DiT's ``initialize_weights``). Difference from DiT: the MLP's activation is SiLU (DiT: GELU,
    tanh approximation), and there is no attention branch. Same in train and eval.
    """

    def __init__(self, dim: int, cond_dim: int, mlp_ratio: float = 4.0, eps: float = 1e-6, *,
                 zero_init: bool = True, dtype: Any = np.float64,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        from ..nn import init

        self.dim = check_positive_int(dim, "dim", "AdaLNZeroBlock")
        self.cond_dim = check_positive_int(cond_dim, "cond_dim", "AdaLNZeroBlock")
        self.hidden = check_positive_int(int(dim * mlp_ratio), "int(dim * mlp_ratio)", "AdaLNZeroBlock")
        self.eps = check_eps(eps, where="AdaLNZeroBlock")
        self.zero_init = bool(zero_init)
        self.dtype = np.dtype(dtype)
        gen = init.get_rng(rng)
        w, b = linear_params(self.cond_dim, 3 * self.dim, gen, self.dtype, zero=self.zero_init)
        self.params["adaLN_modulation.1.weight"], self.params["adaLN_modulation.1.bias"] = w, b
        self.params["mlp.fc1.weight"] = init.xavier_uniform_(np.empty((self.hidden, self.dim), self.dtype), rng=gen)
        self.params["mlp.fc1.bias"] = np.zeros(self.hidden, self.dtype)
        self.params["mlp.fc2.weight"] = init.xavier_uniform_(np.empty((self.dim, self.hidden), self.dtype), rng=gen)
        self.params["mlp.fc2.bias"] = np.zeros(self.dim, self.dtype)

    def forward(self, x: np.ndarray, cond: np.ndarray) -> np.ndarray:
        x, cond = _check_tokens(self, x, cond, self.dim, self.cond_dim)
        out, self._cache = adaln_zero_forward(x, cond, self.params, self.eps)
        return out

    def backward(self, dout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cache = self._require_cache()
        dout = check_dout(dout, cache["shape"], "AdaLNZeroBlock.backward")
        dx, dcond, grads = adaln_zero_backward(dout, cache)
        self.grads = {k: v.astype(self.dtype, copy=False) for k, v in grads.items()}
        return dx, dcond

    def extra_repr(self) -> str:
        return f"{self.dim}, {self.cond_dim}, hidden={self.hidden}, eps={self.eps}, zero_init={self.zero_init}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402


def _x_and_cond(case: Case, rng: np.random.Generator, dtype: Any) -> tuple[np.ndarray, ...]:
    xs, cs = case.input_shapes
    return 2.0 + 3.0 * rng.standard_normal(xs), 0.5 + rng.standard_normal(cs)


register(Spec(
    name="AdaLN", cls=AdaLN, pytorch=None, reference="Peebles & Xie, 2023",
    reduces_over="the last axis (features), per sample and token; modulation per sample and feature",
    differences="Not a PyTorch module (DiT's modulate(norm(x), shift, scale)); float64 parameters.",
    input_names=("x", "cond"), make_inputs=_x_and_cond,
    cases=(Case("N-D", {"cond_dim": 3, "dim": 4}, ((3, 4), (3, 3)), modes=("train",)),
           Case("N-L-D", {"cond_dim": 2, "dim": 5, "eps": 1e-5}, ((2, 3, 5), (2, 2)), modes=("train",))),
))
register(Spec(
    name="AdaLNZeroBlock", cls=AdaLNZeroBlock, pytorch=None, reference="Peebles & Xie, 2023",
    reduces_over="the last axis (features), per sample and token; modulation and gate per sample and feature",
    differences="DiT's block without attention; MLP activation SiLU (DiT: tanh-GELU); float64 parameters. "
                "The zero init is perturbed by the check (a gradient check at exact zero would pass trivially).",
    input_names=("x", "cond"), make_inputs=_x_and_cond,
    cases=(Case("N-D", {"dim": 4, "cond_dim": 3, "mlp_ratio": 1.5}, ((3, 4), (3, 3)), modes=("train",)),
           Case("N-L-D", {"dim": 3, "cond_dim": 2, "mlp_ratio": 2.0}, ((2, 2, 3), (2, 2)), modes=("train",))),
))
