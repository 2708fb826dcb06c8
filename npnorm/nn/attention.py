r"""Softmax and multi-head (causal) self-attention, forward and backward by hand.

**Softmax** along an axis, :math:`p = e^{z}/\sum e^{z}`, has the Jacobian
:math:`\mathrm{diag}(p) - p p^\top`, so the backward pass never builds it:

.. math:: \frac{\partial L}{\partial z} = p \odot \big(g - \langle g, p\rangle\big).      \tag{softmax-back}

**Self-attention** of :math:`x` (shape :math:`(N, L, D)`) with :math:`H` heads of size
:math:`d_h = D/H`:

.. math::
   [Q, K, V] = x W_{in}^\top + b_{in}, \qquad
   S = \frac{Q K^\top}{\sqrt{d_h}} + M, \qquad P = \mathrm{softmax}(S), \qquad
   y = (P V) W_{out}^\top + b_{out},                                                    \tag{attn}

per head, with the causal mask :math:`M_{ij} = -\infty` for :math:`j > i` (position :math:`i` sees
only :math:`0..i`). Backward, with :math:`G = \partial L/\partial (PV)`:
:math:`\partial L/\partial V = P^\top G`, :math:`\partial L/\partial P = G V^\top`,
:math:`\partial L/\partial S` from (softmax-back) (zero on the masked entries, where :math:`p = 0`),
:math:`\partial L/\partial Q = \partial_S K/\sqrt{d_h}`, :math:`\partial L/\partial K =
\partial_S^\top Q/\sqrt{d_h}`, then the two linear maps. With ``qk_norm=`` the logits come from
:class:`npnorm.transformer.QKNorm` instead (normalized queries and keys).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .._checks import as_float_array, check_dout, check_positive_int
from ..base import Module
from . import init
from .composite import Composite
from .layers import Linear

__all__ = ["softmax_forward", "softmax_backward", "Softmax", "MultiheadSelfAttention"]


def softmax_forward(z: np.ndarray, axis: int = -1) -> tuple[np.ndarray, dict[str, Any]]:
    """:math:`e^{z}/\\sum e^{z}` along ``axis``, stable (the row maximum is subtracted); ``-inf``
    entries (masked) get probability 0."""
    z64 = np.asarray(z, dtype=np.float64)
    p = np.subtract(z64, np.max(z64, axis=axis, keepdims=True))     # the one new array: shifted,
    np.exp(p, out=p)                                                # then e, then p, in place
    p /= np.sum(p, axis=axis, keepdims=True)
    return p.astype(z.dtype, copy=False), {"p": p, "axis": axis, "dtype": z.dtype}


def softmax_backward(dout: np.ndarray, cache: dict[str, Any]) -> np.ndarray:
    """Equation (softmax-back): :math:`p\\odot(g - \\langle g, p\\rangle)`."""
    p, axis = cache["p"], cache["axis"]
    g = np.asarray(dout, dtype=np.float64)
    dz = np.subtract(g, np.sum(g * p, axis=axis, keepdims=True))
    dz *= p
    return dz.astype(cache["dtype"], copy=False)


class Softmax(Module):
    """Softmax along ``dim``, as ``torch.nn.Softmax(dim=None)``.

    ``dim=None`` is PyTorch's (deprecated) implicit choice, reproduced exactly: axis 0 for inputs
    with 0, 1 or 3 dimensions, axis 1 otherwise. Pass ``dim`` explicitly (``dim=-1`` for the last
    axis) as PyTorch recommends.
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, numbers.Integral)):
            raise TypeError(f"Softmax: dim must be an int or None, got {dim!r}")
        self.dim = None if dim is None else int(dim)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "Softmax")
        dim = self.dim if self.dim is not None else (0 if x.ndim in (0, 1, 3) else 1)  # PyTorch's implicit dim
        if not -x.ndim <= dim < max(x.ndim, 1):
            raise ValueError(f"Softmax: dim={dim} is out of range for x of shape {x.shape}")
        out, self._cache = softmax_forward(x, dim)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._require_cache()
        return softmax_backward(check_dout(dout, cache["p"].shape, "Softmax.backward"), cache)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def _causal_mask(L: int) -> np.ndarray:
    """``True`` where position i may attend to position j (j <= i)."""
    return np.tril(np.ones((L, L), dtype=bool))


class MultiheadSelfAttention(Composite):
    """Multi-head self-attention on ``(N, L, embed_dim)``, equation (attn), causal by default.

    Parameters
    ----------
    embed_dim, num_heads : int
        ``embed_dim`` must be divisible by ``num_heads``.
    bias : bool, default True
        Biases of the input and output projections.
    causal : bool, default True
        Mask the future (a decoder / language model).
    qk_norm : {None, "l2", "rms", "layer", "ngpt"}, default None
        Normalize queries and keys (:class:`npnorm.transformer.QKNorm`); ``qk_norm_kwargs`` are
        passed to it (``seq_len`` for ``"l2"``; ``num_heads`` is filled in for ``"ngpt"``).
    rng : Generator or int, optional

    Children (so parameter names): ``in_proj`` (Linear ``(D, 3D)``: rows ``[0, D)`` give Q,
    ``[D, 2D)`` K, ``[2D, 3D)`` V, the layout of PyTorch's ``in_proj_weight``), ``out_proj``
    (Linear ``(D, D)``), optionally ``qk_norm``. Initialization as ``torch.nn.MultiheadAttention``:
    Xavier-uniform ``in_proj.weight``, zero biases, ``out_proj.weight`` as ``nn.Linear``.

    After each forward pass ``last_max_logit`` (largest :math:`|S_{ij}|` over unmasked entries) and
    ``last_entropy`` (mean entropy of the attention rows, nats) are recorded for diagnostics.

    Deliberate differences from ``torch.nn.MultiheadAttention``: self-attention only, batch first,
    no dropout, parameters under ``in_proj.weight`` instead of ``in_proj_weight``.
    """

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True, causal: bool = True,
                 qk_norm: str | None = None, qk_norm_kwargs: dict | None = None, *, dtype: Any = np.float64,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        self.embed_dim = check_positive_int(embed_dim, "embed_dim", "MultiheadSelfAttention")
        self.num_heads = check_positive_int(num_heads, "num_heads", "MultiheadSelfAttention")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"MultiheadSelfAttention: embed_dim={embed_dim} must be divisible by "
                             f"num_heads={num_heads}")
        self.head_dim = self.embed_dim // self.num_heads
        self.causal = bool(causal)
        gen = init.get_rng(rng)
        self.add("in_proj", Linear(self.embed_dim, 3 * self.embed_dim, bias=bias, dtype=dtype, rng=gen))
        self.add("out_proj", Linear(self.embed_dim, self.embed_dim, bias=bias, dtype=dtype, rng=gen))
        init.xavier_uniform_(self.in_proj.params["weight"], rng=gen)
        for lin in (self.in_proj, self.out_proj):
            if "bias" in lin.params:
                lin.params["bias"][...] = 0.0
        self.qk_norm_kind = qk_norm
        if qk_norm is not None:
            from ..transformer.qknorm import QKNorm
            kw = dict(qk_norm_kwargs or {})
            if qk_norm == "ngpt":
                kw.setdefault("num_heads", self.num_heads)
            self.add("qk_norm", QKNorm(self.head_dim, qk_norm, dtype=dtype, **kw))
        self._diagnostics: tuple | None = None       # (S, P, mask) of the last forward pass

    @property
    def last_max_logit(self) -> float:
        """Largest :math:`|S_{ij}|` over the unmasked logits of the last forward pass (NaN before
        the first one or after an empty one)."""
        if self._diagnostics is None:
            return float("nan")
        S, _, mask = self._diagnostics
        return float(np.max(np.abs(S if mask is None else np.where(mask, S, 0.0))))

    @property
    def last_entropy(self) -> float:
        """Mean entropy (nats) of the attention rows of the last forward pass (NaN before the first
        one or after an empty one)."""
        if self._diagnostics is None:
            return float("nan")
        _, P, _ = self._diagnostics
        logp = np.log(np.where(P > 0, P, 1.0))
        return float(np.mean(-np.sum(P * logp, axis=-1)))

    def _heads(self, t: np.ndarray, N: int, L: int) -> np.ndarray:
        return t.reshape(N, L, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "MultiheadSelfAttention")
        if x.ndim != 3 or x.shape[2] != self.embed_dim:
            raise ValueError(f"MultiheadSelfAttention: expected x of shape (N, L, embed_dim={self.embed_dim}), "
                             f"got {x.shape}")
        N, L, D = x.shape
        # np.array: a copy, so that no layer below keeps a view of the caller's array
        qkv = np.asarray(self.in_proj(np.array(x, dtype=np.float64)), dtype=np.float64)
        q, k, v = (self._heads(qkv[..., i * D:(i + 1) * D], N, L) for i in range(3))
        if self.qk_norm_kind is not None:
            S = self.qk_norm(q, k)
        else:
            S = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(self.head_dim)
        mask = _causal_mask(L) if self.causal else None
        P, _ = softmax_forward(S if mask is None else np.where(mask, S, -np.inf))
        if S.size:      # the diagnostics are computed when read (most training runs never read them)
            self._diagnostics = (S, P, mask)
        ctx = (P @ v).transpose(0, 2, 1, 3).reshape(N, L, D)
        out = self.out_proj(ctx)
        self._cache = {"q": q, "k": k, "v": v, "P": P, "shape": x.shape, "dtype": x.dtype}
        return out.astype(x.dtype, copy=False)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        c = self._require_cache()
        dout = check_dout(dout, c["shape"], "MultiheadSelfAttention.backward")
        N, L, D = c["shape"]
        q, k, v, P = c["q"], c["k"], c["v"], c["P"]
        dctx = self._heads(
            np.asarray(self.out_proj.backward(
                np.asarray(dout, dtype=np.float64)), dtype=np.float64),
            N, L)
        dv = P.transpose(0, 1, 3, 2) @ dctx
        dS = dctx @ v.transpose(0, 1, 3, 2)  # dP, then in place:
        dS -= np.sum(dS * P, axis=-1, keepdims=True)
        dS *= P                              # (softmax-back); 0 where masked
        if self.qk_norm_kind is not None:
            dq, dk = self.qk_norm.backward(dS)
        else:
            dq = (dS @ k) / math.sqrt(self.head_dim)
            dk = (dS.transpose(0, 1, 3, 2) @ q) / math.sqrt(self.head_dim)
        # the three gradients written straight into [dQ, dK, dV]
        # (N, L, 3, H, dh), heads merged
        dqkv = np.empty((N, L, 3 * D))
        parts = dqkv.reshape(N, L, 3, self.num_heads, self.head_dim)
        for i, t in enumerate((dq, dk, dv)):
            parts[:, :, i] = (np.asarray(t, dtype=np.float64)
                              .transpose(0, 2, 1, 3))
        dx = self.in_proj.backward(dqkv)
        return np.asarray(dx).astype(c["dtype"], copy=False)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, causal={self.causal}"
                + (f", qk_norm={self.qk_norm_kind!r}" if self.qk_norm_kind else ""))


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="Softmax", cls=Softmax, pytorch="torch.nn.Softmax", input_offset=0.5, input_scale=2.0,
    cases=(Case("last", {"dim": -1}, ((3, 5),)), Case("dim1", {"dim": 1}, ((2, 4, 3),)),
           Case("implicit-dim", {}, ((2, 4, 3, 2),))),   # dim=None on 4-D input: axis 1
))
register(Spec(
    name="MultiheadSelfAttention", cls=MultiheadSelfAttention,
    pytorch=None,
    differences="Not a signature twin of torch.nn.MultiheadAttention: computes what "
                "MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=True)(x, x, x, "
                "attn_mask=causal) computes, but self-attention only, causal by default, optional QK-norm, "
                "no dropout/add_bias_kv/add_zero_attn/kdim/vdim; parameters under in_proj.weight / "
                "out_proj.weight as PyTorch.",
    input_offset=0.2, input_scale=1.0,
    # normalized q, k of small vectors are strongly curved: a smaller step keeps the h^4 error of
    # the 4-point stencil below round-off
    gradcheck={"h": 2e-4},
    cases=(
        Case("causal", {"embed_dim": 6, "num_heads": 2, "rng": 1}, ((2, 4, 6),), modes=("train",)),
        Case("bidirectional-no-bias", {"embed_dim": 4, "num_heads": 2, "causal": False, "bias": False, "rng": 2},
             ((2, 3, 4),), modes=("train",)),
        Case("qk-l2", {"embed_dim": 6, "num_heads": 2, "qk_norm": "l2", "qk_norm_kwargs": {"seq_len": 4},
                       "rng": 3}, ((2, 4, 6),), modes=("train",)),
        Case("qk-rms", {"embed_dim": 6, "num_heads": 3, "qk_norm": "rms", "rng": 4}, ((2, 3, 6),),
             modes=("train",)),
        Case("qk-ngpt", {"embed_dim": 4, "num_heads": 2, "qk_norm": "ngpt", "bias": False, "rng": 5},
             ((2, 3, 4),), modes=("train",)),
    ),
))
