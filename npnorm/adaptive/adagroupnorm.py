r"""Adaptive group normalization (AdaGN): GroupNorm whose scale and shift come from an embedding.

Diffusion U-Nets (Dhariwal & Nichol, 2021, "ADM"; diffusers' ``AdaGroupNorm``) read the timestep
(and class) embedding in every residual block through this layer. With :math:`\hat x` the group-
normalized input (statistics per sample and group of ``C/G`` channels, biased variance, ``eps``
inside the square root) and :math:`e` the embedding of shape ``(N, E)``:

.. math::
   [s, t] = \mathrm{Linear}(\phi(e)) \in \mathbb{R}^{N \times 2C}
   \quad (\text{first } C \text{ columns } s, \text{ last } C \text{ columns } t),          \tag{AdaGN1}

.. math::
   y_{n,c} = \hat x_{n,c}\,(1 + s_{n,c}) + t_{n,c} .                                    \tag{AdaGN2}

``AdaGroupNorm`` is diffusers' layer: GroupNorm **without** an affine of its own, :math:`\phi` =
``act_fn`` (None or SiLU). :class:`ScaleShiftGroupNorm` is the variant inside ADM's ``ResBlock``
(``use_scale_shift_norm=True``): GroupNorm **keeps** its affine, :math:`\hat x \to \gamma \hat x + \beta`
before (AdaGN2), and :math:`\phi` is always SiLU.

Backward (derived in the book's adaptive-normalization chapter), with :math:`g = \partial L/\partial y`
and sums over the spatial positions:

.. math::
   \frac{\partial L}{\partial s_{n,c}} = \sum g\,\hat x, \quad
   \frac{\partial L}{\partial t_{n,c}} = \sum g, \quad
   \frac{\partial L}{\partial \hat x} = g\,(1 + s),

then the GroupNorm backward to :math:`x`, and the projection's backward to :math:`e` and the
Linear's parameters (:mod:`npnorm.adaptive._modulation`). Why ``1 + s``: with a zero-mean projection the
block starts as the plain normalization (scale 1), and weight decay pulls the modulation towards the
identity instead of towards switching channels off.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import as_float_array, check_cache, check_dout, check_eps, check_ndim, check_positive_int
from ..backend import check_backend, pick, pick_for_cache
from ..base import Module
from ..kernels._common import run_reusing
from ..kernels.adaptive import adagroupnorm as _kernels
from ..statistics.standardize import standardize_backward, standardize_forward
from ._modulation import (check_act, check_condition, linear_params, modulate_backward, modulate_forward,
                          project_backward, project_forward)

__all__ = ["ada_group_norm_forward", "ada_group_norm_backward", "AdaGroupNorm", "ScaleShiftGroupNorm", "StyleAdaIN"]


def ada_group_norm_forward(
    x: np.ndarray, emb: np.ndarray, linear_weight: np.ndarray,
    linear_bias: np.ndarray, num_groups: int, eps: float = 1e-5,
    act: str | None = None, weight: np.ndarray | None = None,
    bias: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """AdaGN of ``x`` ``(N, C, *)`` conditioned on ``emb`` ``(N, E)``,
    equations (AdaGN1)-(AdaGN2).

    ``linear_weight`` ``(2C, E)`` and ``linear_bias`` ``(2C,)`` project
    ``act(emb)`` to (scale, shift); ``weight``/``bias`` ``(C,)`` are
    GroupNorm's own affine (None: none, as diffusers).
    Returns ``(out, cache)``; ``out`` has ``x``'s shape and dtype.
    """
    n, c = x.shape[:2]
    if c % num_groups:
        raise ValueError(f"ada_group_norm_forward: num_groups={num_groups} "
                         f"must divide the {c} channels")
    view = (1, c) + (1,) * (x.ndim - 2)
    # elements per (sample, group)
    m = (c // num_groups) * int(np.prod(x.shape[2:]))
    grouped = np.asarray(x, dtype=np.float64).reshape(n, num_groups, m)
    x_hat_g, gn_cache = standardize_forward(grouped, (2,), eps)
    x_hat = x_hat_g.reshape(x.shape)
    # GroupNorm's own affine (ADM)
    h = x_hat if weight is None else x_hat * weight.reshape(view)
    if bias is not None:
        h = h + bias.reshape(view)
    # (AdaGN1)
    p, p_cache = project_forward(emb, linear_weight, linear_bias, act)
    # (AdaGN2)
    out, m_cache = modulate_forward(h, p[:, :c], p[:, c:])
    cache = {"gn": gn_cache, "x_hat": x_hat, "proj": p_cache,
             "mod": m_cache, "weight": weight,
             "has_bias": bias is not None, "view": view,
             "shape": x.shape, "groups": num_groups, "m": m,
             "dtype": x.dtype, "emb_dtype": emb.dtype}
    return out.astype(x.dtype, copy=False), cache


def ada_group_norm_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Backward of :func:`ada_group_norm_forward`.

    Returns ``(dx, demb, dlinear_weight, dlinear_bias, dweight, dbias)``
    (the last two None without GroupNorm's own affine).
    """
    dout = check_cache(dout, cache, "ada_group_norm_backward", key="shape")
    # to h, s and t
    dh, dscale, dshift = modulate_backward(dout, cache["mod"])
    demb, dlw, dlb = project_backward(
        np.concatenate([dscale, dshift], axis=1), cache["proj"])
    axes = (0,) + tuple(range(2, len(cache["shape"])))
    weight = cache["weight"]
    dweight = ((dh * cache["x_hat"]).sum(axis=axes)
               if weight is not None else None)
    dbias = dh.sum(axis=axes) if cache["has_bias"] else None
    # to x_hat
    g = dh if weight is None else dh * weight.reshape(cache["view"])
    grouped = g.reshape(cache["shape"][0], cache["groups"], cache["m"])
    dx = standardize_backward(grouped, cache["gn"]).reshape(cache["shape"])
    return (dx.astype(cache["dtype"], copy=False),
            demb.astype(cache["emb_dtype"], copy=False),
            dlw, dlb, dweight, dbias)


class AdaGroupNorm(Module):
    """Adaptive GroupNorm, as diffusers' ``AdaGroupNorm(embedding_dim, out_dim, num_groups, act_fn=None, eps=1e-5)``.

    ``y = layer(x, emb)`` with ``x`` of shape ``(N, out_dim, *)`` and ``emb`` of shape
    ``(N, embedding_dim)``; ``backward(dy)`` returns ``(dx, demb)``. Parameters, under diffusers'
    names: ``linear.weight`` ``(2 out_dim, embedding_dim)`` and ``linear.bias`` ``(2 out_dim,)``,
    initialised as ``torch.nn.Linear``. The first ``out_dim`` outputs are the scale, the rest the
    shift; ``y = GroupNorm(x) * (1 + scale) + shift``, GroupNorm without affine. Same in train and eval.

    Parameters
    ----------
    embedding_dim, out_dim, num_groups : int
        ``num_groups`` must divide ``out_dim`` (the channels of ``x``).
    act_fn : {None, "silu", "swish"}
        Applied to ``emb`` before the Linear (diffusers also accepts "mish" and "gelu"; not here).
    eps : float
        Inside the square root of the group variance (biased).
    affine : bool, keyword-only
        Give GroupNorm its own per-channel ``norm.weight`` (ones) and ``norm.bias`` (zeros), as ADM's
        ResBlock does (:class:`ScaleShiftGroupNorm`). Not in diffusers (there it is always False).
    rng, dtype, backend : keyword-only
        Seed or Generator for the Linear's initialisation; parameter dtype (float64 by default,
        PyTorch float32); ``"numba"`` (the fused kernel, :mod:`npnorm.kernels.adaptive.adagroupnorm`),
        ``"numpy"`` or None (the global default).

    Raises
    ------
    TypeError, ValueError
        For non-float ``x`` or ``emb``, a wrong channel count, an ``emb`` that is not ``(N, embedding_dim)``,
        a ``num_groups`` that does not divide ``out_dim``, a bad ``act_fn`` or ``eps``.

    Notes
    -----
    Inputs of any ``(N, C, *)`` shape are accepted (diffusers reshapes the modulation to 4-D only):
    ``(N, C)`` is a vector of ``C`` features in ``num_groups`` groups, as in the 2-D denoiser.
    Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis", NeurIPS 2021.
    """

    _where = "AdaGroupNorm"

    def __init__(self, embedding_dim: int, out_dim: int, num_groups: int, act_fn: str | None = None,
                 eps: float = 1e-5, *, affine: bool = False, dtype: Any = np.float64,
                 rng: np.random.Generator | int | None = None, backend: str | None = None) -> None:
        super().__init__()
        where = self._where
        self.backend = check_backend(backend, where, allow_none=True)
        self.embedding_dim = check_positive_int(embedding_dim, "embedding_dim", where)
        self.out_dim = check_positive_int(out_dim, "out_dim", where)
        self.num_groups = check_positive_int(num_groups, "num_groups", where)
        if self.out_dim % self.num_groups:
            raise ValueError(f"{where}: num_groups={num_groups} must divide out_dim={out_dim} "
                             "(each group holds out_dim / num_groups channels)")
        self.act_fn = act_fn
        self._act = check_act(act_fn, where)
        self.eps = check_eps(eps, where=where)
        self.affine = bool(affine)
        self.dtype = np.dtype(dtype)
        w, b = linear_params(self.embedding_dim, 2 * self.out_dim, rng, self.dtype)
        self.params["linear.weight"], self.params["linear.bias"] = w, b
        if self.affine:
            self.params["norm.weight"] = np.ones(self.out_dim, dtype=self.dtype)
            self.params["norm.bias"] = np.zeros(self.out_dim, dtype=self.dtype)

    def forward(self, x: np.ndarray, emb: np.ndarray) -> np.ndarray:
        where = self._where
        x = as_float_array(x, "x", where)
        check_ndim(x, range(2, 9), "(N, C, *)", "x", where)
        if x.shape[1] != self.out_dim:
            raise ValueError(f"{where}: x has {x.shape[1]} channels (shape {x.shape}) but the layer was "
                             f"built with out_dim={self.out_dim}")
        emb = check_condition(emb, x.shape[0], self.embedding_dim, "emb", "embedding_dim", where)
        fwd = pick(self.backend, ada_group_norm_forward, _kernels.ada_group_norm_forward)
        # the Numba kernel may write its private copy of x into the one of the cache it replaces
        out, self._cache = run_reusing(fwd, _kernels.ada_group_norm_forward, self._cache, x, emb,
                                       self.params["linear.weight"], self.params["linear.bias"], self.num_groups,
                                       self.eps, self._act, self.params.get("norm.weight"), self.params.get("norm.bias"))
        return out

    def backward(self, dout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cache = self._require_cache()
        dout = check_dout(dout, cache["shape"], f"{self._where}.backward")
        bwd = pick_for_cache(cache, ada_group_norm_backward, _kernels.ada_group_norm_backward)
        dx, demb, dlw, dlb, dw, db = bwd(dout, cache)
        self.grads["linear.weight"] = dlw.astype(self.dtype, copy=False)
        self.grads["linear.bias"] = dlb.astype(self.dtype, copy=False)
        if self.affine:
            self.grads["norm.weight"] = dw.astype(self.dtype, copy=False)
            self.grads["norm.bias"] = db.astype(self.dtype, copy=False)
        return dx, demb

    def extra_repr(self) -> str:
        return (f"{self.embedding_dim}, {self.out_dim}, num_groups={self.num_groups}, act_fn={self.act_fn!r}, "
                f"eps={self.eps}" + (", affine=True" if self.affine else "")
                + (f", backend={self.backend!r}" if self.backend else ""))


class ScaleShiftGroupNorm(AdaGroupNorm):
    """The AdaGN inside ADM's ``ResBlock`` (guided-diffusion, ``use_scale_shift_norm=True``).

    ``y = (gamma * GN(x) + beta) * (1 + scale) + shift`` with ``[scale, shift] = Linear(SiLU(emb))``:
    GroupNorm keeps its own affine (``norm.weight`` ones, ``norm.bias`` zeros), the embedding always
    goes through SiLU first. ``num_groups`` defaults to ADM's 32. Equivalent to
    ``AdaGroupNorm(emb_channels, channels, num_groups, act_fn="silu", eps=eps, affine=True)``.
    (ADM computes the GroupNorm in float32; here float64.)
    """

    _where = "ScaleShiftGroupNorm"

    def __init__(self, emb_channels: int, channels: int, num_groups: int = 32, eps: float = 1e-5, *,
                 dtype: Any = np.float64, rng: np.random.Generator | int | None = None,
                 backend: str | None = None) -> None:
        super().__init__(emb_channels, channels, num_groups, "silu", eps, affine=True, dtype=dtype, rng=rng,
                         backend=backend)

    def extra_repr(self) -> str:
        return (f"{self.embedding_dim}, {self.out_dim}, num_groups={self.num_groups}, eps={self.eps}"
                + (f", backend={self.backend!r}" if self.backend else ""))


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402


def _x_and_emb(case: Case, rng: np.random.Generator, dtype: Any) -> tuple[np.ndarray, ...]:
    xs, es = case.input_shapes
    return 5.0 + 3.0 * rng.standard_normal(xs), 0.5 + rng.standard_normal(es)


register(Spec(
    name="AdaGroupNorm", cls=AdaGroupNorm, pytorch="diffusers.models.normalization.AdaGroupNorm",
    reduces_over="C/G channels and H, W, per sample and group; modulation per sample and channel",
    differences="Inputs of any (N, C, *) shape; act_fn None or silu only; keyword affine=True adds "
                "GroupNorm's own affine (ADM); float64 parameters by default.",
    input_names=("x", "emb"), make_inputs=_x_and_emb, reference="Dhariwal & Nichol, 2021",
    backends=("numpy", "numba"),
    cases=(
        Case("NCHW", {"embedding_dim": 3, "out_dim": 4, "num_groups": 2}, ((2, 4, 3, 2), (2, 3)),
             modes=("train",)),
        Case("silu-NC", {"embedding_dim": 4, "out_dim": 8, "num_groups": 2, "act_fn": "silu"},
             ((3, 8), (3, 4)), modes=("train",)),
        Case("affine-G=C", {"embedding_dim": 2, "out_dim": 3, "num_groups": 3, "act_fn": "silu",
                            "affine": True, "eps": 1e-3}, ((2, 3, 2, 2), (2, 2)), modes=("train",)),
    ),
))
register(Spec(
    name="ScaleShiftGroupNorm", cls=ScaleShiftGroupNorm, pytorch=None,
    reduces_over="C/G channels and H, W, per sample and group; modulation per sample and channel",
    differences="Not a separate PyTorch module: the out_norm + emb_layers pair of guided-diffusion's "
                "ResBlock; GroupNorm in float64 (ADM: float32).",
    input_names=("x", "emb"), make_inputs=_x_and_emb, reference="Dhariwal & Nichol, 2021",
    backends=("numpy", "numba"),
    cases=(
        Case("NCHW", {"emb_channels": 3, "channels": 4, "num_groups": 2}, ((2, 4, 3, 2), (2, 3)),
             modes=("train",)),
    ),
))


class StyleAdaIN(AdaGroupNorm):
    """StyleGAN-style AdaIN: instance-normalized features modulated by an affine map of a style vector.

    ``y = layer(x, w) = IN(x) * (1 + scale) + shift`` with ``[scale, shift] = Linear(w)``: a learned
    affine layer ``A`` maps the style vector ``w`` ``(N, style_dim)`` to one scale and one shift per
    channel of ``x`` ``(N, num_features, H, W)`` (StyleGAN1's ``style_mod``: ``x * (style[:, 0] + 1) +
    style[:, 1]``). Instance statistics (biased variance, ``eps`` inside the root; StyleGAN1's 1e-8),
    no affine of their own. It is :class:`AdaGroupNorm` with one channel per group and no activation;
    unlike :class:`npnorm.AdaIN`, the statistics come from a vector through learned weights, not
    from a style image. Difference from StyleGAN: a plain ``torch.nn.Linear`` initialisation instead
    of the equalized learning rate (weights N(0, 1) scaled by ``1/sqrt(style_dim)`` at run time).
    Karras, Laine & Aila, "A Style-Based Generator Architecture for GANs", CVPR 2019.
    """

    _where = "StyleAdaIN"

    def __init__(self, style_dim: int, num_features: int, eps: float = 1e-8, *, dtype: Any = np.float64,
                 rng: np.random.Generator | int | None = None, backend: str | None = None) -> None:
        super().__init__(style_dim, num_features, num_features, None, eps, dtype=dtype, rng=rng, backend=backend)

    def forward(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "StyleAdaIN")
        check_ndim(x, (3, 4, 5), "(N, C, *spatial)", "x", "StyleAdaIN")
        if int(np.prod(x.shape[2:])) < 2:
            raise ValueError(f"StyleAdaIN: expected more than 1 spatial element per channel, got x of shape {x.shape}")
        return super().forward(x, w)

    def extra_repr(self) -> str:
        return f"{self.embedding_dim}, {self.out_dim}, eps={self.eps}" + (f", backend={self.backend!r}"
                                                                          if self.backend else "")


register(Spec(
    name="StyleAdaIN", cls=StyleAdaIN, pytorch=None, reference="Karras et al., 2019",
    reduces_over="H, W, per sample and channel; modulation per sample and channel from a style vector",
    differences="Not in PyTorch (StyleGAN1's style_mod after instance norm); plain Linear init instead of "
                "the equalized learning rate.",
    input_names=("x", "w"), make_inputs=_x_and_emb, backends=("numpy", "numba"),
    cases=(Case("NCHW", {"style_dim": 3, "num_features": 2, "eps": 1e-5}, ((2, 2, 3, 3), (2, 3)),
                modes=("train",)),),
))
