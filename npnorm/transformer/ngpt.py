r"""The pieces of nGPT, the normalized transformer (Loshchilov, Hsieh, Sun & Ginsburg, 2024).

nGPT keeps every hidden state on the unit sphere and has no LayerNorm/RMSNorm at all. Written here
after the authors' code (``NVIDIA/ngpt``, ``model.py``), with :math:`\mathrm{N}(x) = x/\lVert x\rVert_2`
over the embedding dimension:

* **Residual update** (:class:`NGPTResidual`): a step from :math:`h` towards the normalized
  sub-layer output, of per-dimension size :math:`\alpha` (the "eigen learning rates"), then back to
  the sphere:

  .. math:: h \leftarrow \mathrm{N}\big(\mathrm{N}(h) + \alpha\odot(\mathrm{N}(h_{sub}) - \mathrm{N}(h))\big). \tag{nGPT-res}

* **Scaled parameters** (:class:`NGPTScale`): a learned vector :math:`s` is stored as
  :math:`s_{\text{scale}}\cdot\mathbf 1` and used as :math:`s_{\text{stored}}\,(s_{\text{init}}/
  s_{\text{scale}})`: the effective value starts at :math:`s_{\text{init}}` while Adam, whose steps
  are about the same size for every parameter, moves it :math:`s_{\text{init}}/s_{\text{scale}}`
  times faster or slower. :math:`\alpha_A, \alpha_M`: init 0.05, scale :math:`1/\sqrt{d}` (and the
  absolute value is taken); :math:`s_{qk}`: init 1, scale :math:`1/\sqrt d` (in
  :class:`~npnorm.transformer.QKNorm` ``norm="ngpt"``, with softmax scale :math:`\sqrt{d_h}`);
  :math:`s_{uv}`: init 1, scale 1, times :math:`\sqrt d` (in :class:`NGPTMLP`); :math:`s_z` on the
  logits: init 1, scale :math:`1/\sqrt d`.

* **SwiGLU MLP** (:class:`NGPTMLP`): :math:`[u, v] = s_{uv}\sqrt d\odot(W_{fc} h)`,
  :math:`y = W_{proj}\,(u\odot\mathrm{SiLU}(v))`, no biases.

* **Normalized weights** (:func:`normalize_matrices_`): after every optimizer step each weight
  matrix is renormalized along its embedding dimension (rows of :math:`W_q, W_k, W_v, W_{fc}`, the
  embedding tables and the output layer; columns of the two output projections).

Differences from the authors' code: :math:`\mathrm{N}` has ``F.normalize``'s floor
:math:`\epsilon = 10^{-12}` (theirs has none); a learned absolute position embedding replaces
RoPE (see :class:`npnorm.models.transformer.NGPT`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._checks import as_float_array, check_dout, check_positive_int
from .._numerics import sigmoid
from ..base import Module
from ..nn import init
from .l2norm import l2_normalize_backward, l2_normalize_forward

__all__ = ["NGPTResidual", "NGPTScale", "NGPTMLP", "normalize_matrices_", "ngpt_normalize_rows_"]

_EPS = 1e-12


def ngpt_normalize_rows_(w: np.ndarray, axis: int = -1) -> np.ndarray:
    """Divide ``w`` in place by its L2 norms along ``axis`` (floored at 1e-12); returns ``w``."""
    n = np.sqrt(np.sum(np.asarray(w, dtype=np.float64) ** 2, axis=axis, keepdims=True))
    w[...] = (w / np.maximum(n, _EPS)).astype(w.dtype)
    return w


def normalize_matrices_(pairs) -> None:
    """Renormalize ``(array, axis)`` pairs in place (what nGPT does after every optimizer step)."""
    for w, axis in pairs:
        ngpt_normalize_rows_(w, axis)


class NGPTScale(Module):
    """An elementwise learned scale with nGPT's stored/effective split: ``y = x * s_eff`` with
    ``s_eff = s * (init / scale) * extra`` over the last axis.

    Parameters
    ----------
    dim : int
    init_value : float, default 1.0
    init_scaling : float or None, default None
        ``None``: :math:`1/\\sqrt{\\text{dim}}`. The parameter ``s`` is stored as ``init_scaling``.
    extra : float, default 1.0
        A constant factor (``sqrt(d)`` for :math:`s_{uv}`).
    """

    def __init__(self, dim: int, init_value: float = 1.0, init_scaling: float | None = None, extra: float = 1.0,
                 *, dtype: Any = np.float64) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim", "NGPTScale")
        self.init_value = float(init_value)
        self.init_scaling = 1.0 / math.sqrt(self.dim) if init_scaling is None else float(init_scaling)
        self.factor = self.init_value / self.init_scaling * float(extra)
        self.dtype = np.dtype(dtype)
        self.params["s"] = np.full(self.dim, self.init_scaling, dtype=self.dtype)

    def effective(self) -> np.ndarray:
        return self.params["s"].astype(np.float64) * self.factor

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "NGPTScale")
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"NGPTScale: expected x of shape (*, {self.dim}), got {x.shape}")
        x64 = np.array(x, dtype=np.float64)
        scale = self.effective()                     # a fresh array: the value backward must use
        self._cache = (x64, scale, x.dtype)
        return (x64 * scale).astype(x.dtype, copy=False)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        x64, scale, dtype = self._require_cache()
        dy = np.asarray(check_dout(dout, x64.shape, "NGPTScale.backward"), dtype=np.float64)
        self.grads["s"] = (np.sum((dy * x64).reshape(-1, self.dim), axis=0) * self.factor).astype(self.dtype)
        return (dy * scale).astype(dtype, copy=False)

    def extra_repr(self) -> str:
        return f"{self.dim}, init_value={self.init_value}, init_scaling={self.init_scaling:.4g}"


class NGPTResidual(Module):
    """nGPT's residual update (nGPT-res): ``layer(h, h_sub)`` with both ``(*, dim)``; ``backward``
    returns ``(dh, dh_sub)``.

    Parameters
    ----------
    dim : int
    alpha_init : float, default 0.05
        Effective initial eigen learning rate.
    alpha_scale : float or None, default None
        Stored scale (``None``: :math:`1/\\sqrt{\\text{dim}}`); effective
        :math:`\\alpha = |\\alpha_{\\text{stored}}\\,\\alpha_{\\text{init}}/\\alpha_{\\text{scale}}|`.
    """

    def __init__(self, dim: int, alpha_init: float = 0.05, alpha_scale: float | None = None, *,
                 dtype: Any = np.float64) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim", "NGPTResidual")
        self.alpha_init = float(alpha_init)
        self.alpha_scale = 1.0 / math.sqrt(self.dim) if alpha_scale is None else float(alpha_scale)
        self.factor = self.alpha_init / self.alpha_scale
        self.dtype = np.dtype(dtype)
        self.params["alpha"] = np.full(self.dim, self.alpha_scale, dtype=self.dtype)

    def alpha(self) -> np.ndarray:
        """The effective eigen learning rates :math:`|\\alpha_{stored}\\cdot\\text{factor}|`."""
        return np.abs(self.params["alpha"].astype(np.float64) * self.factor)

    def forward(self, h: np.ndarray, h_sub: np.ndarray) -> np.ndarray:
        h = as_float_array(h, "h", "NGPTResidual")
        h_sub = as_float_array(h_sub, "h_sub", "NGPTResidual")
        if h.shape != h_sub.shape or h.ndim < 1 or h.shape[-1] != self.dim:
            raise ValueError(f"NGPTResidual: h and h_sub must both have shape (*, {self.dim}), got {h.shape} "
                             f"and {h_sub.shape}")
        hn, ch = l2_normalize_forward(np.asarray(h, dtype=np.float64), -1, _EPS)
        sn, cs = l2_normalize_forward(np.asarray(h_sub, dtype=np.float64), -1, _EPS)
        a = self.alpha()
        z = hn + a * (sn - hn)
        out, cz = l2_normalize_forward(z, -1, _EPS)
        self._cache = {"ch": ch, "cs": cs, "cz": cz, "diff": sn - hn, "a": a, "dtype": h.dtype,
                       "sign": np.sign(self.params["alpha"].astype(np.float64) * self.factor)}
        return out.astype(h.dtype, copy=False)

    def backward(self, dout: np.ndarray):
        c = self._require_cache()
        dout = check_dout(dout, c["diff"].shape, "NGPTResidual.backward")
        dz = l2_normalize_backward(np.asarray(dout, dtype=np.float64), c["cz"])
        da = np.sum((dz * c["diff"]).reshape(-1, self.dim), axis=0)
        self.grads["alpha"] = (da * c["sign"] * self.factor).astype(self.dtype)
        dh = l2_normalize_backward(dz * (1.0 - c["a"]), c["ch"])
        dsub = l2_normalize_backward(dz * c["a"], c["cs"])
        return (dh.astype(c["dtype"], copy=False),
                dsub.astype(c["dtype"], copy=False))

    def extra_repr(self) -> str:
        return f"{self.dim}, alpha_init={self.alpha_init}"


def _silu(v):
    s = sigmoid(v)
    return v * s, s


class NGPTMLP(Module):
    """nGPT's SwiGLU MLP on ``(*, d_model)``: ``[u, v] = s_uv * sqrt(d) * (h W_fc^T)``,
    ``y = (u * SiLU(v)) W_proj^T``.

    Parameters (learned): ``c_fc`` ``(2F, d)``, ``c_proj`` ``(d, F)`` (both :math:`N(0, 1/d)`, then
    renormalized by the model), ``s_uv`` ``(2F,)`` stored as 1 (init 1, scale 1).
    """

    def __init__(self, d_model: int, d_ff: int, *, dtype: Any = np.float64,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        self.d_model = check_positive_int(d_model, "d_model", "NGPTMLP")
        self.d_ff = check_positive_int(d_ff, "d_ff", "NGPTMLP")
        gen = init.get_rng(rng)
        std = 1.0 / math.sqrt(self.d_model)
        self.dtype = np.dtype(dtype)
        self.params["c_fc"] = gen.normal(0.0, std, (2 * self.d_ff, self.d_model)).astype(self.dtype)
        self.params["c_proj"] = gen.normal(0.0, std, (self.d_model, self.d_ff)).astype(self.dtype)
        self.params["s_uv"] = np.ones(2 * self.d_ff, dtype=self.dtype)
        self.suv_factor = math.sqrt(self.d_model)          # init 1 / scale 1, times sqrt(d_model)

    def forward(self, h: np.ndarray) -> np.ndarray:
        h = as_float_array(h, "h", "NGPTMLP")
        if h.ndim < 1 or h.shape[-1] != self.d_model:
            raise ValueError(f"NGPTMLP: expected h of shape (*, {self.d_model}), got {h.shape}")
        h64 = np.array(h, dtype=np.float64)
        w_fc = np.array(self.params["c_fc"], dtype=np.float64)        # copies: the weights of this pass
        w_proj = np.array(self.params["c_proj"], dtype=np.float64)
        a = h64 @ w_fc.T
        s = self.params["s_uv"].astype(np.float64) * self.suv_factor
        z = a * s
        u, v = z[..., :self.d_ff], z[..., self.d_ff:]
        sv, sig = _silu(v)
        m = u * sv
        out = m @ w_proj.T
        self._cache = {"h": h64, "a": a, "s": s, "w_fc": w_fc, "w_proj": w_proj, "u": u, "v": v, "sv": sv, "sig": sig, "m": m, "dtype": h.dtype}
        return out.astype(h.dtype, copy=False)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        c = self._require_cache()
        dy = np.asarray(check_dout(dout, c["h"].shape, "NGPTMLP.backward"), dtype=np.float64)
        F, D = self.d_ff, self.d_model
        self.grads["c_proj"] = (dy.reshape(-1, D).T @ c["m"].reshape(-1, F)).astype(self.dtype)
        dm = dy @ c["w_proj"]
        du = dm * c["sv"]
        dv = dm * c["u"] * c["sig"] * (1.0 + c["v"] * (1.0 - c["sig"]))
        dz = np.concatenate([du, dv], axis=-1)
        self.grads["s_uv"] = (np.sum((dz * c["a"]).reshape(-1, 2 * F), axis=0) * self.suv_factor).astype(self.dtype)
        da = dz * c["s"]
        self.grads["c_fc"] = (da.reshape(-1, 2 * F).T @ c["h"].reshape(-1, D)).astype(self.dtype)
        return (da @ c["w_fc"]).astype(c["dtype"], copy=False)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_ff={self.d_ff}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

_REF = "Loshchilov et al., 2024"
register(Spec(
    name="NGPTResidual", cls=NGPTResidual, pytorch=None, reference=_REF, input_names=("h", "h_sub"),
    reduces_over="each token's features (L2 norms of h, h_sub and the update)",
    differences="N(x) floors the norm at 1e-12 (the authors' justnorm has no eps).",
    input_offset=0.3, input_scale=1.0,
    cases=(Case("tokens", {"dim": 4}, ((2, 3, 4), (2, 3, 4)), modes=("train",)),),
))
register(Spec(
    name="NGPTScale", cls=NGPTScale, pytorch=None, reference=_REF, reduces_over="nothing (elementwise)",
    cases=(Case("logits", {"dim": 5}, ((2, 3, 5),), modes=("train",)),),
))
register(Spec(
    name="NGPTMLP", cls=NGPTMLP, pytorch=None, reference=_REF, reduces_over="nothing (position-wise MLP)",
    input_offset=0.1, input_scale=0.5,
    cases=(Case("swiglu", {"d_model": 4, "d_ff": 3, "rng": 1}, ((2, 3, 4),), modes=("train",)),),
))
