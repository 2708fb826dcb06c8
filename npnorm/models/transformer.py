r"""A small decoder-only transformer language model, every backward pass by hand.

:class:`TransformerLM` - token embeddings (or FixNorm), learned positions, ``n_layers`` blocks,
an optional final normalizer, a tied or untied output layer. The block's wiring is the
**placement** of its normalizers, and the normalizer is any of LayerNorm, RMSNorm, ScaleNorm, DyT:

===========  =========================================================  ===========
placement    one block (A = attention, F = feed-forward, N = normalizer)  final norm
===========  =========================================================  ===========
post         h = N(x + A(x));            y = N(h + F(h))                    no
pre          h = x + A(N(x));            y = h + F(N(h))                    yes
sandwich     h = x + N(A(N(x)));         y = h + N(F(N(h)))  (peri-LN)      yes
deepnorm     h = LN(a x + A(x));         y = LN(a h + F(h)), beta-scaled init   no
===========  =========================================================  ===========

:class:`NGPT` - the normalized transformer: hidden states, embeddings and weight rows on the unit
sphere (:mod:`npnorm.transformer.ngpt`).

Both are :class:`npnorm.nn.composite.Composite` s: ``logits = model(ids)`` for integer ``ids`` of
shape ``(N, L)`` gives ``(N, L, vocab)``; ``model.backward(dlogits)`` fills every parameter's
gradient (and returns ``None``: ids are not differentiable). :func:`lm_step` computes the masked
cross-entropy and its gradient.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import nn
from ..nn import init
from ..nn.composite import Composite
from ..nn.losses import cross_entropy_backward, cross_entropy_forward
from ..statistics.layernorm import LayerNorm, RMSNorm
from ..transformer.deepnorm import DeepNorm, deepnorm_constants
from ..transformer.dyt import DyT
from ..transformer.fixnorm import FixNorm
from ..transformer.l2norm import ScaleNorm, l2_normalize_backward, l2_normalize_forward
from ..transformer.ngpt import NGPTMLP, NGPTResidual, NGPTScale, normalize_matrices_

__all__ = ["PLACEMENTS", "NORMS", "make_norm", "Block", "TransformerLM", "NGPTBlock", "NGPT", "lm_step"]

PLACEMENTS = ("post", "pre", "sandwich", "deepnorm")
NORMS = ("ln", "rms", "scale", "dyt")


def make_norm(kind: str, d: int, backend: str | None = "numpy") -> nn.Module:
    """A normalizer over ``d`` features: ``"ln"`` LayerNorm, ``"rms"`` RMSNorm, ``"scale"``
    ScaleNorm (:math:`g_0 = \\sqrt d`), ``"dyt"`` DyT (:math:`\\alpha_0 = 0.5`)."""
    if kind == "ln":
        return LayerNorm(d, backend=backend)
    if kind == "rms":
        return RMSNorm(d, backend=backend)
    if kind == "scale":
        return ScaleNorm(d, backend=backend)
    if kind == "dyt":
        return DyT(d, backend=backend)
    raise ValueError(f"make_norm: norm must be one of {NORMS}, got {kind!r}")


class Block(Composite):
    """One transformer block: causal self-attention and a GELU feed-forward network, wired by
    ``placement`` (see the module docstring) with normalizer ``norm``.

    Children: ``attn``, ``mlp`` and the normalizers ``norm1``, ``norm2`` (post, pre), plus
    ``norm1_out``, ``norm2_out`` (sandwich), or ``res1``, ``res2`` (:class:`DeepNorm`, deepnorm).
    For deepnorm, ``alpha``/``beta`` default to :func:`deepnorm_constants` of ``n_layers``; the
    value and output projections and both feed-forward weights are re-initialized Xavier-normal with
    gain ``beta`` (the query and key projections with gain 1).
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None, placement: str = "pre",
                 norm: str = "ln", qk_norm: str | None = None, qk_norm_kwargs: dict | None = None,
                 n_layers: int = 1, *, rng: np.random.Generator | int | None = None,
                 backend: str | None = "numpy") -> None:
        super().__init__()
        if placement not in PLACEMENTS:
            raise ValueError(f"Block: placement must be one of {PLACEMENTS}, got {placement!r}")
        gen = init.get_rng(rng)
        self.placement, self.norm_kind = placement, norm
        if placement == "deepnorm" and norm != "ln":
            raise ValueError("Block: DeepNorm is defined with LayerNorm (norm='ln')")
        self.add("attn", nn.MultiheadSelfAttention(d_model, n_heads, qk_norm=qk_norm,
                                                   qk_norm_kwargs=qk_norm_kwargs, rng=gen))
        self.add("mlp", nn.FeedForward(d_model, d_ff, rng=gen))
        if placement == "deepnorm":
            self.alpha, self.beta = deepnorm_constants(n_layers, "decoder")
            self.add("res1", DeepNorm(d_model, self.alpha))
            self.add("res2", DeepNorm(d_model, self.alpha))
            D = d_model
            w_in = self.attn.in_proj.params["weight"]
            w_in[:D] = init.xavier_normal_(np.empty((D, D)), 1.0, gen)
            w_in[D:2 * D] = init.xavier_normal_(np.empty((D, D)), 1.0, gen)
            w_in[2 * D:] = init.xavier_normal_(np.empty((D, D)), self.beta, gen)
            for w in (self.attn.out_proj.params["weight"], self.mlp.linear1.params["weight"],
                      self.mlp.linear2.params["weight"]):
                init.xavier_normal_(w, self.beta, gen)
        else:
            self.add("norm1", make_norm(norm, d_model, backend))
            if placement == "sandwich":
                self.add("norm1_out", make_norm(norm, d_model, backend))
            self.add("norm2", make_norm(norm, d_model, backend))
            if placement == "sandwich":
                self.add("norm2_out", make_norm(norm, d_model, backend))

    def forward(self, x: np.ndarray) -> np.ndarray:
        p = self.placement
        if p == "post":
            h = self.norm1(x + self.attn(x))
            y = self.norm2(h + self.mlp(h))
        elif p == "pre":
            h = x + self.attn(self.norm1(x))
            y = h + self.mlp(self.norm2(h))
        elif p == "sandwich":
            h = x + self.norm1_out(self.attn(self.norm1(x)))
            y = h + self.norm2_out(self.mlp(self.norm2(h)))
        else:
            h = self.res1(x, self.attn(x))
            y = self.res2(h, self.mlp(h))
        self._cache = (np.shape(x),)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self._require_cache()
        p = self.placement
        if p == "post":
            ds2 = self.norm2.backward(dy)                     # into h + F(h)
            dh = ds2 + self.mlp.backward(ds2)
            ds1 = self.norm1.backward(dh)                     # into x + A(x)
            return ds1 + self.attn.backward(ds1)
        if p == "pre":
            dh = dy + self.norm2.backward(self.mlp.backward(dy))
            return dh + self.norm1.backward(self.attn.backward(dh))
        if p == "sandwich":
            dh = dy + self.norm2.backward(
                self.mlp.backward(self.norm2_out.backward(dy)))
            return dh + self.norm1.backward(
                self.attn.backward(self.norm1_out.backward(dh)))
        dh_skip, dbranch = self.res2.backward(dy)
        dh = dh_skip + self.mlp.backward(dbranch)
        dx_skip, dbranch = self.res1.backward(dh)
        return dx_skip + self.attn.backward(dbranch)

    def extra_repr(self) -> str:
        return f"placement={self.placement!r}, norm={self.norm_kind!r}"


class TransformerLM(Composite):
    """A decoder-only transformer language model (see the module docstring).

    Parameters
    ----------
    vocab_size, d_model, n_layers, n_heads, max_len : int
    d_ff : int or None
        Feed-forward width (default ``4 * d_model``).
    placement : {"post", "pre", "sandwich", "deepnorm"}, default "pre"
    norm : {"ln", "rms", "scale", "dyt"}, default "ln"
        The normalizer of every block and of the final normalization (pre, sandwich).
    qk_norm : {None, "l2", "rms", "layer"}, default None
        QK-norm in every attention layer (``"l2"`` uses ``seq_len = max_len`` for its :math:`g_0`).
    tied : bool, default False
        Output layer = the (normalized, with FixNorm) embedding matrix transposed; else a separate
        ``Linear(d_model, vocab_size, bias=False)``.
    fixnorm : bool, default False
        FixNorm token embeddings instead of ``nn.Embedding``.
    emb_std : float, default 1.0
        Standard deviation of the token and position tables (``nn.Embedding``'s N(0, 1)).
    rng : Generator or int
    """

    def __init__(self, vocab_size: int, d_model: int = 32, n_layers: int = 2, n_heads: int = 4, max_len: int = 64,
                 d_ff: int | None = None, placement: str = "pre", norm: str = "ln", qk_norm: str | None = None,
                 tied: bool = False, fixnorm: bool = False, emb_std: float = 1.0, *,
                 rng: np.random.Generator | int | None = 0, backend: str | None = "numpy") -> None:
        super().__init__()
        gen = init.get_rng(rng)
        self.vocab_size, self.d_model, self.n_layers = vocab_size, d_model, n_layers
        self.placement, self.norm_kind, self.tied, self.fixnorm = placement, norm, bool(tied), bool(fixnorm)
        if fixnorm:
            self.add("tok", FixNorm(vocab_size, d_model, rng=gen))
        else:
            self.add("tok", nn.Embedding(vocab_size, d_model, rng=gen))
            self.tok.params["weight"] *= emb_std
        self.add("pos", nn.PositionalEmbedding(max_len, d_model, std=emb_std, rng=gen))
        qk_kwargs = {"seq_len": max_len} if qk_norm == "l2" else None
        self.blocks = []
        for i in range(n_layers):
            self.blocks.append(self.add(f"block{i}", Block(d_model, n_heads, d_ff, placement, norm, qk_norm, qk_kwargs,
                                                           n_layers, rng=gen, backend=backend)))
        self.has_final_norm = placement in ("pre", "sandwich")
        if self.has_final_norm:
            self.add("final_norm", make_norm(norm, d_model, backend))
        if not self.tied:
            self.add("head", nn.Linear(d_model, vocab_size, bias=False, rng=gen))

    def attention_layers(self) -> list[nn.MultiheadSelfAttention]:
        return [b.attn for b in self.blocks]

    def forward(self, ids: np.ndarray) -> np.ndarray:
        x = self.pos(self.tok(ids))
        for b in self.blocks:
            x = b(x)
        if self.has_final_norm:
            x = self.final_norm(x)
        if self.tied:
            W = self.tok.params["weight"].astype(np.float64)
            wcache = None
            if self.fixnorm:
                W, wcache = l2_normalize_forward(W, -1, self.tok.eps)
            logits = x @ W.T
            self._cache = (np.array(x), W, wcache)
        else:
            logits = self.head(x)
            self._cache = (None, None, None)
        return logits

    def backward(self, dlogits: np.ndarray) -> None:
        xf, W, wcache = self._require_cache()
        dlogits = np.asarray(dlogits, dtype=np.float64)
        if self.tied:
            dW = dlogits.reshape(-1, self.vocab_size).T @ xf.reshape(-1, self.d_model)
            if self.fixnorm:
                dW = l2_normalize_backward(dW, wcache)
            dx = dlogits @ W
        else:
            dx = self.head.backward(dlogits)
        if self.has_final_norm:
            dx = self.final_norm.backward(dx)
        for b in reversed(self.blocks):
            dx = b.backward(dx)
        self.tok.backward(self.pos.backward(dx))
        if self.tied:
            self.tok.grads["weight"] = self.tok.grads["weight"] + dW
        return None

    def extra_repr(self) -> str:
        return (f"vocab={self.vocab_size}, d_model={self.d_model}, n_layers={self.n_layers}, "
                f"placement={self.placement!r}, norm={self.norm_kind!r}, tied={self.tied}")


class NGPTBlock(Composite):
    """An nGPT block: ``h = R_A(h, A(h))``, ``h = R_M(h, MLP(h))`` with :class:`NGPTResidual`,
    attention with ``qk_norm="ngpt"`` and no biases, and the SwiGLU :class:`NGPTMLP`."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, *, rng=None) -> None:
        super().__init__()
        gen = init.get_rng(rng)
        std = 1.0 / math.sqrt(d_model)
        self.add("attn", nn.MultiheadSelfAttention(d_model, n_heads, bias=False, qk_norm="ngpt",
                                                   qk_norm_kwargs={"sqk_scale": std}, rng=gen))
        for lin in (self.attn.in_proj, self.attn.out_proj):
            lin.params["weight"][...] = gen.normal(0.0, std, lin.params["weight"].shape)
        self.add("res_attn", NGPTResidual(d_model))
        self.add("mlp", NGPTMLP(d_model, d_ff, rng=gen))
        self.add("res_mlp", NGPTResidual(d_model))

    def forward(self, h: np.ndarray) -> np.ndarray:
        h = self.res_attn(h, self.attn(h))
        out = self.res_mlp(h, self.mlp(h))
        self._cache = True
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self._require_cache()
        dh, dsub = self.res_mlp.backward(dy)
        dh = dh + self.mlp.backward(dsub)
        dx, dsub = self.res_attn.backward(dh)
        return dx + self.attn.backward(dsub)

    def matrices(self):
        """``(array, axis)`` of every weight matrix, axis = its embedding dimension."""
        return [(self.attn.in_proj.params["weight"], -1), (self.attn.out_proj.params["weight"], 0),
                (self.mlp.params["c_fc"], -1), (self.mlp.params["c_proj"], 0)]


class NGPT(Composite):
    """The normalized transformer (nGPT) as a language model.

    ``h_0 = N(E[ids] + P)``, then :class:`NGPTBlock` s, then ``logits = s_z * (h W_out^T)`` (no final
    norm, untied output, no biases). Weight matrices are normalized along the embedding dimension
    at construction and should be renormalized after every optimizer step with
    :meth:`normalize_matrices` (:func:`lm_step`'s caller does it). Deliberate difference from the
    paper: a learned absolute position table added before the first normalization replaces RoPE.
    """

    def __init__(self, vocab_size: int, d_model: int = 32, n_layers: int = 2, n_heads: int = 4, max_len: int = 64,
                 d_ff: int | None = None, *, rng: np.random.Generator | int | None = 0) -> None:
        super().__init__()
        gen = init.get_rng(rng)
        std = 1.0 / math.sqrt(d_model)
        self.vocab_size, self.d_model, self.n_layers = vocab_size, d_model, n_layers
        self.placement, self.norm_kind = "ngpt", "ngpt"
        self.add("tok", nn.Embedding(vocab_size, d_model, rng=gen))
        self.tok.params["weight"][...] = gen.normal(0.0, std, self.tok.params["weight"].shape)
        self.add("pos", nn.PositionalEmbedding(max_len, d_model, std=std, rng=gen))
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.blocks = [self.add(f"block{i}", NGPTBlock(d_model, n_heads, d_ff, rng=gen)) for i in range(n_layers)]
        self.add("head", nn.Linear(d_model, vocab_size, bias=False, rng=gen))
        self.head.params["weight"][...] = gen.normal(0.0, std, self.head.params["weight"].shape)
        self.add("s_z", NGPTScale(vocab_size, 1.0, std))
        self.normalize_matrices()

    def attention_layers(self) -> list[nn.MultiheadSelfAttention]:
        return [b.attn for b in self.blocks]

    def normalize_matrices(self) -> None:
        pairs = [(self.tok.params["weight"], -1), (self.pos.params["weight"], -1), (self.head.params["weight"], -1)]
        for b in self.blocks:
            pairs += b.matrices()
        normalize_matrices_(pairs)

    def forward(self, ids: np.ndarray) -> np.ndarray:
        x = self.pos(self.tok(ids))
        h, self._cache = l2_normalize_forward(x, -1, 1e-12)
        for b in self.blocks:
            h = b(h)
        return self.s_z(self.head(h))

    def backward(self, dlogits: np.ndarray) -> None:
        cache = self._require_cache()
        dh = self.head.backward(self.s_z.backward(dlogits))
        for b in reversed(self.blocks):
            dh = b.backward(dh)
        self.tok.backward(self.pos.backward(l2_normalize_backward(dh, cache)))
        return None


def lm_step(model: Composite, ids: np.ndarray, targets: np.ndarray, loss_mask: np.ndarray | None = None,
            backward: bool = True) -> float:
    """Forward, mean cross-entropy over the positions where ``loss_mask`` is true (all if None),
    and (``backward=True``) the backward pass that fills every ``grads``. Returns the loss."""
    logits = model(ids)
    N, L, V = logits.shape
    sel = np.ones((N, L), dtype=bool) if loss_mask is None else np.asarray(loss_mask, dtype=bool)
    loss, cache = cross_entropy_forward(logits[sel], np.asarray(targets)[sel])
    if backward:
        dlogits = np.zeros((N, L, V))
        dlogits[sel] = cross_entropy_backward(cache)
        model.backward(dlogits)
    return loss
