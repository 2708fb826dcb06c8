r"""A DDPM noise-prediction network for 2-D points, with the timestep and class entering every block
through adaptive normalization (hierarchical injection), built from :mod:`npnorm.nn` and
:mod:`npnorm.adaptive`.

::

    t --sinusoid(32)--> TimestepEmbedding (Linear-SiLU-Linear) --+
                                                                 +--> emb (N, E)   (ADM/DiT: a sum)
    y --------------------> Embedding(num_classes + 1, E) -------+
                                                                  |    |    |
    x (N, 2) -> Linear(2, H) -> [block] -> [block] -> [block] -> GroupNorm -> SiLU -> Linear(H, 2) -> eps_hat
                                  ^ emb      ^ emb      ^ emb

    block (ADM's ResBlock on vectors):  h + fc2(SiLU(fc1(norm(h, emb))))   fc2 zero-initialised
    norm: AdaGroupNorm(E, H, G, act_fn="silu")  |  AdaLN(E, H)  |  GroupNorm(G, H) when not conditioned
    "adaln-zero": the block is AdaLNZeroBlock (gate; zero-initialised modulation unless zero_init=False)

Ablation switches: ``t_mode`` - ``"adaptive"`` (the timestep embedding is part of ``emb``),
``"concat"`` (the sinusoid is concatenated to the input point instead), ``"none"`` (the network is
not told ``t``); ``class_cond`` - the class embedding is part of ``emb`` or not; ``inject`` -
``"all"`` blocks read ``emb`` or only the ``"first"``. The class table has one extra row, the
*null class* ``num_classes``, for classifier-free guidance (DiT's ``LabelEmbedding``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import nn
from ..adaptive import AdaGroupNorm, AdaLN, AdaLNZeroBlock, SinusoidalTimestepEmbedding, TimestepEmbedding
from ..base import Module

__all__ = ["ResBlock", "Denoiser2D", "NORMS", "T_MODES"]

NORMS = ("adagn", "adaln", "adaln-zero")
T_MODES = ("adaptive", "concat", "none")


def _zero(layer: nn.Linear) -> nn.Linear:
    for v in layer.params.values():
        v[...] = 0.0
    return layer


class ResBlock(Module):
    """``h + fc2(SiLU(fc1(norm(h, emb))))`` (or with a plain norm when ``emb_dim`` is None).

    ``forward(h, emb)``; ``backward(dh) -> (dh_in, demb)`` (``demb`` None without conditioning).
    """

    def __init__(self, width: int, emb_dim: int | None, norm: str = "adagn", groups: int = 8,
                 rng: np.random.Generator | None = None) -> None:
        super().__init__()
        self.conditioned = emb_dim is not None
        if not self.conditioned:
            self.norm: Module = nn.GroupNorm(groups, width) if norm == "adagn" else nn.LayerNorm(width)
        elif norm == "adagn":
            self.norm = AdaGroupNorm(emb_dim, width, groups, act_fn="silu", rng=rng)
        else:
            self.norm = AdaLN(emb_dim, width, rng=rng)
        self.fc1 = nn.Linear(width, 2 * width, rng=rng)
        self.act = nn.SiLU()
        self.fc2 = _zero(nn.Linear(2 * width, width, rng=rng))   # ADM's zero_module: the block starts as identity

    def children(self) -> list[Module]:
        return [self.norm, self.fc1, self.act, self.fc2]

    def forward(self, h: np.ndarray, emb: np.ndarray | None = None) -> np.ndarray:
        n = self.norm(h, emb) if self.conditioned else self.norm(h)
        return h + self.fc2(self.act(self.fc1(n)))

    def backward(self, dout: np.ndarray):
        dn = self.fc1.backward(self.act.backward(self.fc2.backward(dout)))
        if self.conditioned:
            dh, demb = self.norm.backward(dn)
            return dout + dh, demb
        return dout + self.norm.backward(dn), None


class _ZeroBlock(Module):
    """An :class:`AdaLNZeroBlock` with the ``(dh, demb)`` backward of :class:`ResBlock`."""

    def __init__(self, width: int, emb_dim: int, zero_init: bool, rng) -> None:
        super().__init__()
        self.block = AdaLNZeroBlock(width, emb_dim, mlp_ratio=2.0, zero_init=zero_init, rng=rng)
        self.conditioned = True

    def children(self) -> list[Module]:
        return [self.block]

    def forward(self, h, emb=None):
        return self.block(h, emb)

    def backward(self, dout):
        return self.block.backward(dout)


class Denoiser2D(Module):
    """Predicts the noise in a noised 2-D point ``x_t`` given ``t`` (and a class ``y``).

    ``eps_hat = model(x, t, y)`` with ``x`` ``(N, 2)`` float, ``t`` ``(N,)`` integer steps in
    ``[0, T)`` (fed to the sinusoid as ``t * 1000 / T``, ADM's ``rescale_timesteps``), ``y`` ``(N,)``
    integers in ``[0, num_classes]`` (``num_classes`` = the null class). ``backward(d eps_hat)`` fills
    every layer's ``grads`` and returns the gradient with respect to ``x``.
    """

    def __init__(self, num_classes: int = 4, width: int = 64, depth: int = 3, emb_dim: int = 64,
                 norm: str = "adagn", t_mode: str = "adaptive", class_cond: bool = True, inject: str = "all",
                 zero_init: bool = True, groups: int = 8, freq_dim: int = 32, num_steps: int = 50,
                 seed: int = 0) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"Denoiser2D: norm must be one of {NORMS}, got {norm!r}")
        if t_mode not in T_MODES:
            raise ValueError(f"Denoiser2D: t_mode must be one of {T_MODES}, got {t_mode!r}")
        if inject not in ("all", "first"):
            raise ValueError(f"Denoiser2D: inject must be 'all' or 'first', got {inject!r}")
        rng = np.random.default_rng(seed)
        self.num_classes, self.t_mode, self.class_cond, self.inject = num_classes, t_mode, class_cond, inject
        self.norm_kind, self.t_scale = norm, 1000.0 / num_steps
        self.uses_emb = t_mode == "adaptive" or class_cond
        self.sinusoid = SinusoidalTimestepEmbedding(freq_dim)
        self.time_mlp = TimestepEmbedding(freq_dim, emb_dim, rng=rng) if t_mode == "adaptive" else None
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim, rng=rng) if class_cond else None
        if self.class_emb is not None:
            self.class_emb.params["weight"] *= 0.02          # N(0, 0.02^2), DiT's label-table init
        self.inp = nn.Linear(2 + (freq_dim if t_mode == "concat" else 0), width, rng=rng)
        self.blocks: list[Module] = []
        for i in range(depth):
            emb_i = emb_dim if self.uses_emb and (inject == "all" or i == 0) else None
            if norm == "adaln-zero" and emb_i is not None:
                self.blocks.append(_ZeroBlock(width, emb_i, zero_init, rng))
            else:
                self.blocks.append(ResBlock(width, emb_i, "adaln" if norm == "adaln-zero" else norm, groups, rng))
        self.out_norm = nn.GroupNorm(groups, width) if norm == "adagn" else nn.LayerNorm(width)
        self.out_act = nn.SiLU()
        self.out = _zero(nn.Linear(width, 2, rng=rng))

    def children(self) -> list[Module]:
        mods = [m for m in (self.time_mlp, self.class_emb) if m is not None]
        return mods + [self.inp, *self.blocks, self.out_norm, self.out_act, self.out]

    def embed(self, t: np.ndarray, y: np.ndarray | None) -> np.ndarray | None:
        emb = None
        if self.time_mlp is not None:
            emb = self.time_mlp(self.sinusoid(np.asarray(t, dtype=np.float64) * self.t_scale))
        if self.class_emb is not None:
            if y is None:
                y = np.full(np.shape(t), self.num_classes)
            c = self.class_emb(np.asarray(y))
            emb = c if emb is None else emb + c
        return emb

    def forward(self, x: np.ndarray, t: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        emb = self.embed(t, y)
        if self.t_mode == "concat":
            x = np.concatenate([x, self.sinusoid(np.asarray(t, dtype=np.float64) * self.t_scale)], axis=1)
        h = self.inp(x)
        for b in self.blocks:
            h = b(h, emb) if b.conditioned else b(h)
        return self.out(self.out_act(self.out_norm(h)))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dh = self.out_norm.backward(self.out_act.backward(self.out.backward(dout)))
        demb = None
        for b in reversed(self.blocks):
            dh, de = b.backward(dh)
            if de is not None:
                demb = de if demb is None else demb + de
        dx = self.inp.backward(dh)[:, :2]
        if demb is not None:                      # the shared embedding: gradients of all blocks summed
            if self.time_mlp is not None:
                self.time_mlp.backward(demb)
            if self.class_emb is not None:
                self.class_emb.backward(demb)
        return dx

    def num_parameters(self) -> int:
        return sum(int(v.size) for m in self.modules() if not isinstance(getattr(type(m), "params", None), property)
                   for v in m.params.values())

    def extra_repr(self) -> str:
        return (f"norm={self.norm_kind!r}, t_mode={self.t_mode!r}, class_cond={self.class_cond}, "
                f"inject={self.inject!r}")
