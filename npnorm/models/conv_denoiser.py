r"""A small convolutional DDPM denoiser for 16x16 images: GroupNorm everywhere, AdaGN (ADM's
scale-shift norm) in every residual block, at two resolutions - the image capstone of chapter 9.

::

    x (N, 1, 16, 16) -> Conv3x3 -> [res 16x16] --------------------------+ (skip, added)
                                       -> AvgPool2 -> Conv3x3 -> [res 8x8] -> Upsample2 -> Conv3x3 -+
                                                                                          [res 16x16] -> GN-SiLU-Conv3x3 -> eps
    res block (ADM): h + conv(SiLU(ScaleShiftGroupNorm(conv(SiLU(GN(h))), e)))   last conv zero-initialised
    e = TimestepEmbedding(sinusoid(t)) + Embedding(y)   read by every res block (hierarchical injection)
"""

from __future__ import annotations

import numpy as np

from .. import nn
from ..adaptive import ScaleShiftGroupNorm, SinusoidalTimestepEmbedding, TimestepEmbedding
from ..base import Module

__all__ = ["ConvResBlock", "Upsample2x", "ConvDenoiser"]


def _zero(layer):
    for v in layer.params.values():
        v[...] = 0.0
    return layer


class Upsample2x(Module):
    """Nearest-neighbour upsampling by 2 of ``(N, C, H, W)``; backward sums each 2x2 block."""

    def forward(self, x):
        self._cache = x.shape
        return x.repeat(2, axis=2).repeat(2, axis=3)

    def backward(self, dout):
        n, c, h, w = self._require_cache()
        return dout.reshape(n, c, h, 2, w, 2).sum(axis=(3, 5))


class ConvResBlock(Module):
    """ADM's ResBlock with ``use_scale_shift_norm``: ``h + conv2(SiLU(AdaGN(conv1(SiLU(GN(h))), e)))``."""

    def __init__(self, channels: int, emb_dim: int, groups: int, rng) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.act1 = nn.SiLU()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, rng=rng)
        self.norm2 = ScaleShiftGroupNorm(emb_dim, channels, groups, rng=rng)
        self.act2 = nn.SiLU()
        self.conv2 = _zero(nn.Conv2d(channels, channels, 3, padding=1, rng=rng))

    def children(self):
        return [self.norm1, self.act1, self.conv1, self.norm2, self.act2, self.conv2]

    def forward(self, h, emb):
        u = self.conv1(self.act1(self.norm1(h)))
        return h + self.conv2(self.act2(self.norm2(u, emb)))

    def backward(self, dout):
        du, demb = self.norm2.backward(self.act2.backward(self.conv2.backward(dout)))
        return dout + self.norm1.backward(self.act1.backward(self.conv1.backward(du))), demb


class ConvDenoiser(Module):
    """``eps_hat = model(x, t, y)`` for images ``(N, 1, 16, 16)``; ``backward`` fills every ``grads``."""

    def __init__(self, num_classes: int = 10, channels: int = 16, emb_dim: int = 64, groups: int = 4,
                 freq_dim: int = 32, num_steps: int = 100, seed: int = 0) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        c = channels
        self.num_classes, self.class_cond, self.t_scale = num_classes, True, 1000.0 / num_steps
        self.sinusoid = SinusoidalTimestepEmbedding(freq_dim)
        self.time_mlp = TimestepEmbedding(freq_dim, emb_dim, rng=rng)
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim, rng=rng)     # N(0, 1), as diffusers
        self.conv_in = nn.Conv2d(1, c, 3, padding=1, rng=rng)
        self.res_hi1 = ConvResBlock(c, emb_dim, groups, rng)
        self.pool = nn.AvgPool2d(2)
        self.down = nn.Conv2d(c, 2 * c, 3, padding=1, rng=rng)
        self.res_lo = ConvResBlock(2 * c, emb_dim, groups, rng)
        self.up = Upsample2x()
        self.up_conv = nn.Conv2d(2 * c, c, 3, padding=1, rng=rng)
        self.res_hi2 = ConvResBlock(c, emb_dim, groups, rng)
        self.out_norm = nn.GroupNorm(groups, c)
        self.out_act = nn.SiLU()
        self.conv_out = _zero(nn.Conv2d(c, 1, 3, padding=1, rng=rng))

    def children(self):
        return [self.time_mlp, self.class_emb, self.conv_in, self.res_hi1, self.pool, self.down, self.res_lo,
                self.up, self.up_conv, self.res_hi2, self.out_norm, self.out_act, self.conv_out]

    def forward(self, x, t, y=None):
        if y is None:
            y = np.full(np.shape(t), self.num_classes)
        e = self.time_mlp(self.sinusoid(np.asarray(t, dtype=np.float64) * self.t_scale)) + self.class_emb(y)
        h1 = self.res_hi1(self.conv_in(x), e)
        h2 = self.res_lo(self.down(self.pool(h1)), e)
        h3 = self.res_hi2(self.up_conv(self.up(h2)) + h1, e)
        return self.conv_out(self.out_act(self.out_norm(h3)))

    def backward(self, dout):
        dh3, de = self.res_hi2.backward(self.out_norm.backward(self.out_act.backward(self.conv_out.backward(dout))))
        dh2, de2 = self.res_lo.backward(self.up.backward(self.up_conv.backward(dh3)))
        dh1 = dh3 + self.pool.backward(self.down.backward(dh2))
        dx, de1 = self.res_hi1.backward(dh1)
        demb = de + de1 + de2                         # the shared embedding: every block's gradient, summed
        self.time_mlp.backward(demb)
        self.class_emb.backward(demb)
        return self.conv_in.backward(dx)
