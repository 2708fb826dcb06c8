r"""Conditioning encoders: what turns a timestep (and a class) into the vector every block reads.

**Sinusoidal timestep embedding** (the transformer's positional encoding applied to the diffusion
step; ADM's and DiT's ``timestep_embedding``). For ``dim`` channels, ``half = dim // 2`` frequencies
spaced geometrically from 1 down to (almost) ``1 / max_period``:

.. math::
   f_j = \exp\!\Big(-\ln(\text{max\_period}) \frac{j}{\text{half} - \text{shift}}\Big), \quad
   e(t) = [\cos(t f_0), \dots, \cos(t f_{\text{half}-1}), \sin(t f_0), \dots, \sin(t f_{\text{half}-1})] \tag{TE}

with ``max_period = 10000`` and **cos first** (ADM, DiT; diffusers' ``flip_sin_to_cos=True``) and
``shift = downscale_freq_shift = 0`` (ADM, DiT; diffusers' function defaults to ``shift=1`` and sin
first, its UNets pass ``flip_sin_to_cos=True, downscale_freq_shift=0``). An odd ``dim`` gets a zero
last column. The embedding is differentiable in :math:`t`:
:math:`\partial \cos(t f)/\partial t = -f \sin(t f)`, :math:`\partial \sin(t f)/\partial t = f\cos(t f)`.

**TimestepEmbedding** (diffusers' name; ADM's ``time_embed``): ``Linear -> SiLU -> Linear`` from the
sinusoid to the embedding width. The class embedding is a table (:class:`npnorm.nn.Embedding`); ADM
and DiT **add** the two: ``emb = time_embed(e(t)) + label_emb(y)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._checks import as_float_array, check_dout, check_positive_int
from .._numerics import sigmoid
from ..base import Module
from ._modulation import linear_params

__all__ = ["timestep_embedding_forward", "timestep_embedding_backward", "SinusoidalTimestepEmbedding",
           "TimestepEmbedding"]


def timestep_embedding_forward(t: np.ndarray, dim: int, max_period: float = 10000.0, flip_sin_to_cos: bool = True,
                               downscale_freq_shift: float = 0.0) -> tuple[np.ndarray, dict[str, Any]]:
    """Equation (TE): ``t`` ``(N,)`` (float; integer steps are cast) to ``(N, dim)``, float64."""
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(half, dtype=np.float64) / (half - downscale_freq_shift))
    args = np.asarray(t, dtype=np.float64)[:, None] * freqs[None, :]
    cos, sin = np.cos(args), np.sin(args)
    parts = [cos, sin] if flip_sin_to_cos else [sin, cos]
    if dim % 2:
        parts.append(np.zeros((args.shape[0], 1)))
    return np.concatenate(parts, axis=1), {"freqs": freqs, "cos": cos, "sin": sin, "flip": flip_sin_to_cos,
                                           "half": half}


def timestep_embedding_backward(dout: np.ndarray, cache: dict[str, Any]) -> np.ndarray:
    """``dL/dt`` ``(N,)`` from ``dL/de`` ``(N, dim)``."""
    g = np.asarray(dout, dtype=np.float64)
    h = cache["half"]
    g_first, g_second = g[:, :h], g[:, h:2 * h]
    g_cos, g_sin = (g_first, g_second) if cache["flip"] else (g_second, g_first)
    f = cache["freqs"]
    return (g_cos * (-cache["sin"]) * f).sum(axis=1) + (g_sin * cache["cos"] * f).sum(axis=1)


class SinusoidalTimestepEmbedding(Module):
    """``e = layer(t)``: the sinusoidal embedding (TE) of timesteps ``t`` ``(N,)``, shape ``(N, dim)``.

    Defaults are ADM's and DiT's: ``max_period=10000``, cos first, no frequency shift (diffusers'
    ``Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)``). ``t`` may be integer steps or
    floats; ``backward(de)`` returns ``dL/dt`` (float64 for integer ``t``). No parameters. The
    output is float64, or ``t``'s dtype when ``t`` is floating.
    """

    def __init__(self, dim: int, max_period: float = 10000.0, flip_sin_to_cos: bool = True,
                 downscale_freq_shift: float = 0.0) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim", "SinusoidalTimestepEmbedding")
        if not max_period > 1:
            raise ValueError(f"SinusoidalTimestepEmbedding: max_period must be > 1, got {max_period!r}")
        half = self.dim // 2
        if half and not half - downscale_freq_shift > 0:
            raise ValueError(f"SinusoidalTimestepEmbedding: downscale_freq_shift must be < dim // 2 = {half}, "
                             f"got {downscale_freq_shift!r}")
        self.max_period = float(max_period)
        self.flip_sin_to_cos = bool(flip_sin_to_cos)
        self.downscale_freq_shift = float(downscale_freq_shift)

    def forward(self, t: np.ndarray) -> np.ndarray:
        arr = np.asarray(t)
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"SinusoidalTimestepEmbedding: t must be a real array of timesteps, got dtype {arr.dtype}")
        if arr.ndim != 1:
            raise ValueError(f"SinusoidalTimestepEmbedding: expected t of shape (N,), got shape {arr.shape}")
        dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float64)
        out, cache = timestep_embedding_forward(arr, self.dim, self.max_period, self.flip_sin_to_cos,
                                                self.downscale_freq_shift)
        self._cache = (cache, out.shape, dtype)
        return out.astype(dtype, copy=False)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache, shape, dtype = self._require_cache()
        dout = check_dout(dout, shape, "SinusoidalTimestepEmbedding.backward")
        return timestep_embedding_backward(dout, cache).astype(dtype, copy=False)

    def extra_repr(self) -> str:
        return (f"{self.dim}, max_period={self.max_period:g}, flip_sin_to_cos={self.flip_sin_to_cos}, "
                f"downscale_freq_shift={self.downscale_freq_shift:g}")


class TimestepEmbedding(Module):
    """``Linear -> SiLU -> Linear``, as diffusers' ``TimestepEmbedding(in_channels, time_embed_dim, act_fn="silu", out_dim=None)``.

    Input ``(N, in_channels)`` (the sinusoid), output ``(N, out_dim or time_embed_dim)``. Parameters
    ``linear_1.weight``/``.bias`` and ``linear_2.weight``/``.bias`` (``torch.nn.Linear`` initialisation).
    ``act_fn`` must be "silu" (or "swish"). Same in train and eval.

    diffusers' full signature is accepted (same names, order, defaults); ``post_act_fn``,
    ``cond_proj_dim`` and ``sample_proj_bias`` only at their defaults (None, None, True): anything
    else is a clear ``ValueError``. Deliberate differences: float64 parameters (``dtype``), ``rng``.
    """

    def __init__(self, in_channels: int, time_embed_dim: int, act_fn: str = "silu", out_dim: int | None = None,
                 post_act_fn: str | None = None, cond_proj_dim: int | None = None, sample_proj_bias: bool = True, *,
                 dtype: Any = np.float64, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        from ..nn import init

        for name, value, default in (("post_act_fn", post_act_fn, None), ("cond_proj_dim", cond_proj_dim, None),
                                     ("sample_proj_bias", sample_proj_bias, True)):
            if value is not default and value != default:
                raise ValueError(f"TimestepEmbedding: only {name}={default!r} is implemented, got {value!r}")

        self.in_channels = check_positive_int(in_channels, "in_channels", "TimestepEmbedding")
        self.time_embed_dim = check_positive_int(time_embed_dim, "time_embed_dim", "TimestepEmbedding")
        self.out_dim = check_positive_int(out_dim if out_dim is not None else time_embed_dim, "out_dim",
                                          "TimestepEmbedding")
        if act_fn not in ("silu", "swish"):
            raise ValueError(f"TimestepEmbedding: act_fn must be 'silu' (or 'swish'), got {act_fn!r}")
        self.act_fn = act_fn
        self.dtype = np.dtype(dtype)
        gen = init.get_rng(rng)
        self.params["linear_1.weight"], self.params["linear_1.bias"] = linear_params(
            self.in_channels, self.time_embed_dim, gen, self.dtype)
        self.params["linear_2.weight"], self.params["linear_2.bias"] = linear_params(
            self.time_embed_dim, self.out_dim, gen, self.dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "TimestepEmbedding")
        if x.ndim != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"TimestepEmbedding: expected x of shape (N, in_channels={self.in_channels}), "
                             f"got shape {x.shape}")
        p = self.params
        x64 = np.array(x, dtype=np.float64)
        h = x64 @ p["linear_1.weight"].T + p["linear_1.bias"]
        s = sigmoid(h)
        a = h * s
        out = a @ p["linear_2.weight"].T + p["linear_2.bias"]
        # the weights used here, copied: an optimizer step before backward must not change the gradient
        w1, w2 = np.array(p["linear_1.weight"], dtype=np.float64), np.array(p["linear_2.weight"], dtype=np.float64)
        self._cache = (x64, h, s, a, w1, w2, out.shape, x.dtype)
        return out.astype(x.dtype, copy=False)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        x64, h, s, a, w1, w2, shape, dtype = self._require_cache()
        g = np.asarray(check_dout(dout, shape, "TimestepEmbedding.backward"), dtype=np.float64)
        grads = {"linear_2.weight": g.T @ a, "linear_2.bias": g.sum(axis=0)}
        dh = (g @ w2) * s * (1.0 + h * (1.0 - s))       # through SiLU
        grads["linear_1.weight"] = dh.T @ x64
        grads["linear_1.bias"] = dh.sum(axis=0)
        self.grads = {k: v.astype(self.dtype, copy=False) for k, v in grads.items()}
        return (dh @ w1).astype(dtype, copy=False)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.time_embed_dim}, out_dim={self.out_dim}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="SinusoidalTimestepEmbedding", cls=SinusoidalTimestepEmbedding, pytorch=None,
    reference="Ho et al., 2020", reduces_over="nothing (an encoder, no statistics)",
    differences="diffusers' Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0) = ADM/DiT's "
                "timestep_embedding; float64 for integer timesteps.",
    input_names=("t",), input_offset=3.0, input_scale=2.0,
    cases=(Case("even", {"dim": 6}, ((4,),), modes=("train",)),
           Case("odd-sin-first", {"dim": 7, "flip_sin_to_cos": False, "downscale_freq_shift": 1.0, "max_period": 100.0},
                ((3,),), modes=("train",))),
))
register(Spec(
    name="TimestepEmbedding", cls=TimestepEmbedding, pytorch="diffusers.models.embeddings.TimestepEmbedding",
    reference="Dhariwal & Nichol, 2021", reduces_over="nothing (an encoder, no statistics)",
    differences="act_fn silu only; post_act_fn, cond_proj_dim, sample_proj_bias at diffusers' defaults "
                "only; float64 parameters.", input_offset=0.0, input_scale=1.0,
    cases=(Case("N-C", {"in_channels": 4, "time_embed_dim": 5}, ((3, 4),), modes=("train",)),
           Case("out_dim", {"in_channels": 3, "time_embed_dim": 4, "out_dim": 2}, ((2, 3),), modes=("train",))),
))
