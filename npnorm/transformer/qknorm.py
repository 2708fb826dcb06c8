r"""QK-norm: normalize the queries and keys of attention before their dot products.

The attention logits of one head are :math:`S = c\,\tilde q\,\tilde k^\top` for
:math:`q, k` of shape :math:`(L, d_h)`. Plain attention has :math:`\tilde q = q`,
:math:`\tilde k = k`, :math:`c = 1/\sqrt{d_h}`; without a bound on :math:`\lVert q\rVert
\lVert k\rVert` a large learning rate can grow the logits until the softmax saturates (one-hot
rows, "attention entropy collapse"). QK-norm bounds them. Four forms, one layer
(:class:`QKNorm`, ``norm=``):

``"l2"`` - Henry et al. (2020), the original: unit-length queries and keys and a learned scalar
temperature :math:`g` in place of :math:`1/\sqrt{d_h}`,

.. math:: S = g\,\hat q\,\hat k^\top, \quad \hat q = q/\max(\lVert q\rVert,\epsilon), \quad
          g_0 = \log_2(L^2 - L),                                                      \tag{QK-l2}

so every logit lies in :math:`[-|g|, |g|]`. :math:`L` is a training sequence length (the paper
takes the 97.5th percentile of its training lengths; here ``seq_len``).

``"rms"`` / ``"layer"`` - the modern form (ViT-22B, OLMo 2, Qwen3-style): RMSNorm or LayerNorm over
the head dimension, with a learned per-dimension weight shared by the heads, and the usual scale,

.. math:: S = \frac{1}{\sqrt{d_h}}\,\mathrm{N}_q(q)\,\mathrm{N}_k(k)^\top .         \tag{QK-rms}

``"ngpt"`` - nGPT (Loshchilov et al., 2024): unit-length queries and keys times a learned
per-head, per-dimension scale :math:`s_{qk}` (stored as :math:`s_{qk}^{\text{init}}\cdot` ``sqk_scale``
and used as ``stored * (1 / sqk_scale)``, effective initial value 1), and the softmax scale
:math:`\sqrt{d_h}` instead of :math:`1/\sqrt{d_h}`:

.. math:: S = \sqrt{d_h}\,(s_{qk}\odot\hat q)(s_{qk}\odot\hat k)^\top .               \tag{QK-ngpt}

Backward of :math:`S = c\,A B^\top` with :math:`G = \partial L/\partial S`:
:math:`\partial L/\partial A = c\,G B`, :math:`\partial L/\partial B = c\,G^\top A`,
:math:`\partial L/\partial c = \sum G\odot A B^\top`; then through the normalizer of each side
(:mod:`npnorm.transformer.l2norm`, :mod:`npnorm.statistics.layernorm`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._checks import as_float_array, check_dout, check_eps, check_positive_int
from ..base import Module
from ..statistics.layernorm import layer_norm_backward, layer_norm_forward, rms_norm_backward, rms_norm_forward
from .l2norm import l2_normalize_backward, l2_normalize_forward

__all__ = ["QK_NORMS", "qk_logits_forward", "qk_logits_backward", "QKNorm", "henry_g0"]

QK_NORMS = ("l2", "rms", "layer", "ngpt")
_DEFAULT_EPS = {"l2": 1e-12, "rms": 1e-6, "layer": 1e-5, "ngpt": 1e-12}


def henry_g0(seq_len: int) -> float:
    """Initial temperature of Henry et al.'s QK-norm, :math:`\\log_2(L^2 - L)` (``seq_len`` >= 2)."""
    L = check_positive_int(seq_len, "seq_len", "henry_g0")
    if L < 2:
        raise ValueError(f"henry_g0: seq_len must be >= 2 (log2(L^2 - L) needs L^2 > L), got {L}")
    return math.log2(L * L - L)


def qk_logits_forward(q: np.ndarray, k: np.ndarray, norm: str, params: dict[str, np.ndarray],
                      eps: float, sqk_factor: float = 1.0) -> tuple[np.ndarray, dict[str, Any]]:
    """Logits :math:`S = c\\,\\tilde q\\,\\tilde k^\\top` of shape ``(*, Lq, Lk)`` for ``q`` of shape
    ``(*, Lq, dh)`` and ``k`` of shape ``(*, Lk, dh)``; equations (QK-l2), (QK-rms), (QK-ngpt).
    ``params``: ``g`` (l2); ``q_weight``, ``k_weight`` (rms; + ``q_bias``, ``k_bias`` for layer);
    ``s_qk`` of shape ``(H, dh)`` for ngpt (``q`` then ``(N, H, L, dh)``), used as
    ``s_qk * sqk_factor``. No mask: the caller masks."""
    dh = q.shape[-1]
    q64, k64 = np.asarray(q, dtype=np.float64), np.asarray(k, dtype=np.float64)
    cache: dict[str, Any] = {"norm": norm, "dtype": q.dtype, "qshape": q.shape, "kshape": k.shape}
    if norm in ("l2", "ngpt"):
        qh, cache["nq"] = l2_normalize_forward(q64, -1, eps)
        kh, cache["nk"] = l2_normalize_forward(k64, -1, eps)
    elif norm == "rms":
        qh, cache["nq"] = rms_norm_forward(q64, (dh,), params["q_weight"], eps)
        kh, cache["nk"] = rms_norm_forward(k64, (dh,), params["k_weight"], eps)
    elif norm == "layer":
        qh, cache["nq"] = layer_norm_forward(q64, (dh,), params["q_weight"], params["q_bias"], eps)
        kh, cache["nk"] = layer_norm_forward(k64, (dh,), params["k_weight"], params["k_bias"], eps)
    else:
        raise ValueError(f"qk_logits_forward: norm must be one of {QK_NORMS}, got {norm!r}")
    if norm == "ngpt":
        s = np.asarray(params["s_qk"], dtype=np.float64)[:, None, :] * sqk_factor    # (H, 1, dh)
        cache.update(qh=qh, kh=kh, s=s, sqk_factor=sqk_factor)
        qh, kh = qh * s, kh * s
        c = math.sqrt(dh)
    elif norm == "l2":
        c = float(np.asarray(params["g"], dtype=np.float64))
    else:
        c = 1.0 / math.sqrt(dh)
    cos = qh @ np.swapaxes(kh, -1, -2)
    cache.update(A=qh, B=kh, c=c, cos=cos)
    return (c * cos).astype(q.dtype, copy=False), cache


def qk_logits_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Backward of :func:`qk_logits_forward`: ``(dq, dk, dparams)`` with
    ``dparams`` keyed as the params."""
    G = np.asarray(dout, dtype=np.float64)
    A, B, c, norm = cache["A"], cache["B"], cache["c"], cache["norm"]
    dA = c * (G @ B)
    dB = c * (np.swapaxes(G, -1, -2) @ A)
    dparams: dict[str, np.ndarray] = {}
    if norm == "l2":
        dparams["g"] = np.asarray(np.sum(G * cache["cos"]))
    if norm == "ngpt":
        s = cache["s"]
        # (H, dh)
        ds = np.sum(dA * cache["qh"] + dB * cache["kh"], axis=(0, 2))
        dparams["s_qk"] = ds * cache["sqk_factor"]
        dA, dB = dA * s, dB * s
    if norm in ("l2", "ngpt"):
        dq = l2_normalize_backward(dA, cache["nq"])
        dk = l2_normalize_backward(dB, cache["nk"])
    elif norm == "rms":
        dq, dparams["q_weight"] = rms_norm_backward(dA, cache["nq"])
        dk, dparams["k_weight"] = rms_norm_backward(dB, cache["nk"])
    else:
        dq, dparams["q_weight"], dparams["q_bias"] = layer_norm_backward(
            dA, cache["nq"])
        dk, dparams["k_weight"], dparams["k_bias"] = layer_norm_backward(
            dB, cache["nk"])
    dt = cache["dtype"]
    return (np.asarray(dq).astype(dt, copy=False),
            np.asarray(dk).astype(dt, copy=False), dparams)


class QKNorm(Module):
    """Normalized attention logits ``S = qk_norm(q, k)`` of shape ``(*, Lq, Lk)``.

    ``layer(q, k)`` takes queries ``(*, Lq, head_dim)`` and keys ``(*, Lk, head_dim)`` (typically
    ``(N, H, L, head_dim)``) and returns the pre-softmax logits; ``layer.backward(dS)`` returns
    ``(dq, dk)``. Used by :class:`npnorm.nn.MultiheadSelfAttention` (``qk_norm=``).

    Parameters
    ----------
    head_dim : int
    norm : {"l2", "rms", "layer", "ngpt"}, default "l2"
        See the module docstring: Henry et al.'s form (learned scalar ``g``), RMSNorm or LayerNorm
        per head (learned ``q_weight``, ``k_weight`` of shape ``(head_dim,)`` shared by the heads;
        plus ``q_bias``, ``k_bias`` for LayerNorm), or nGPT's (learned ``s_qk``, ``(num_heads,
        head_dim)``).
    seq_len : int, optional
        For ``"l2"``: the :math:`L` of :math:`g_0 = \\log_2(L^2-L)` (required).
    eps : float, optional
        Defaults: 1e-12 (l2, ngpt: ``F.normalize``'s floor), 1e-6 (rms, as most QK-norm code),
        1e-5 (layer).
    num_heads : int, optional
        For ``"ngpt"`` (required).
    sqk_scale : float, optional
        For ``"ngpt"``: the stored scale of :math:`s_{qk}` (the paper: :math:`1/\\sqrt{d_{model}}`);
        the parameter is stored as ``sqk_scale`` and used times ``1/sqk_scale``. Default
        :math:`1/\\sqrt{\\text{num\\_heads}\\cdot\\text{head\\_dim}}`.

    PyTorch has no QK-norm layer; the forms follow the papers.
    """

    def __init__(self, head_dim: int, norm: str = "l2", *, seq_len: int | None = None, eps: float | None = None,
                 num_heads: int | None = None, sqk_scale: float | None = None, dtype: Any = np.float64) -> None:
        super().__init__()
        self.head_dim = check_positive_int(head_dim, "head_dim", "QKNorm")
        if norm not in QK_NORMS:
            raise ValueError(f"QKNorm: norm must be one of {QK_NORMS}, got {norm!r}")
        self.norm = norm
        self.eps = _DEFAULT_EPS[norm] if eps is None else check_eps(eps, where="QKNorm")
        self.dtype = np.dtype(dtype)
        self.sqk_factor = 1.0
        if norm == "l2":
            if seq_len is None:
                raise ValueError("QKNorm(norm='l2') needs seq_len: the initial temperature is log2(L^2 - L)")
            self.params["g"] = np.asarray(henry_g0(seq_len), dtype=self.dtype)
        elif norm in ("rms", "layer"):
            for side in ("q", "k"):
                self.params[f"{side}_weight"] = np.ones(self.head_dim, dtype=self.dtype)
                if norm == "layer":
                    self.params[f"{side}_bias"] = np.zeros(self.head_dim, dtype=self.dtype)
        else:
            if num_heads is None:
                raise ValueError("QKNorm(norm='ngpt') needs num_heads (s_qk has shape (num_heads, head_dim))")
            self.num_heads = check_positive_int(num_heads, "num_heads", "QKNorm")
            scale = 1.0 / math.sqrt(self.num_heads * self.head_dim) if sqk_scale is None else float(sqk_scale)
            self.sqk_factor = 1.0 / scale
            self.params["s_qk"] = np.full((self.num_heads, self.head_dim), scale, dtype=self.dtype)

    def forward(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        q = as_float_array(q, "q", "QKNorm")
        k = as_float_array(k, "k", "QKNorm")
        if q.ndim < 2 or q.shape[-1] != self.head_dim or k.shape[-1] != self.head_dim:
            raise ValueError(f"QKNorm: q and k must have shape (*, L, head_dim={self.head_dim}), "
                             f"got q {q.shape} and k {k.shape}")
        if q.shape[:-2] != k.shape[:-2]:
            raise ValueError(f"QKNorm: q {q.shape} and k {k.shape} must agree on their leading dims")
        if self.norm == "ngpt" and (q.ndim != 4 or q.shape[1] != self.num_heads):
            raise ValueError(f"QKNorm(norm='ngpt'): q must have shape (N, num_heads={self.num_heads}, L, "
                             f"head_dim), got {q.shape}")
        out, self._cache = qk_logits_forward(q, k, self.norm, self.params, self.eps, self.sqk_factor)
        return out

    def backward(self, dout: np.ndarray):
        cache = self._require_cache()
        shape = cache["qshape"][:-1] + (cache["kshape"][-2],)
        dout = check_dout(dout, shape, "QKNorm.backward")
        dq, dk, dparams = qk_logits_backward(dout, cache)
        for key, v in dparams.items():
            self.grads[key] = np.asarray(v, dtype=self.dtype)
        return dq, dk

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, norm={self.norm!r}, eps={self.eps}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="QKNorm", cls=QKNorm, pytorch=None, reference="Henry et al., 2020; Dehghani et al., 2023",
    reduces_over="each query and key vector over the head dimension", input_names=("q", "k"),
    input_offset=0.5, input_scale=1.5,
    differences="Returns the attention logits (the normalized q k^T times the scale), not q and k.",
    cases=(
        Case("l2", {"head_dim": 4, "norm": "l2", "seq_len": 5}, ((2, 2, 5, 4), (2, 2, 5, 4)), modes=("train",)),
        Case("rms", {"head_dim": 4, "norm": "rms"}, ((2, 2, 3, 4), (2, 2, 5, 4)), modes=("train",)),
        Case("layer", {"head_dim": 3, "norm": "layer"}, ((2, 4, 3), (2, 3, 3)), modes=("train",)),
        Case("ngpt", {"head_dim": 3, "norm": "ngpt", "num_heads": 2}, ((2, 2, 4, 3), (2, 2, 4, 3)),
             modes=("train",)),
    ),
))
