r"""Adaptive instance normalization (Huang & Belongie, 2017).

AdaIN normalizes the content features per (sample, channel) over space, then gives them the
per-channel mean and standard deviation of the style features:

.. math::
   \mathrm{AdaIN}(x, s) = \sigma(s)\,\frac{x - \mu(x)}{\sigma(x)} + \mu(s), \qquad
   \sigma(z) = \sqrt{\tfrac{1}{m}\textstyle\sum (z - \mu(z))^2 + \epsilon} .          \tag{AdaIN}

Both statistics use the **biased** variance with ``eps`` inside the square root, like InstanceNorm.
(The widely used reference implementation, pytorch-AdaIN's ``calc_mean_std``, uses the unbiased
variance; the difference is a factor :math:`m/(m-1)` inside the square root.) There are no learnable
parameters. The gradient flows to **both** inputs: with :math:`\hat x` the normalized content,

.. math::
   \frac{\partial L}{\partial x} = \text{standardize-backward}(\sigma(s)\,dy), \quad
   \frac{\partial L}{\partial s} = \frac{1}{m_s}\sum dy + \frac{s - \mu(s)}{m_s\,\sigma(s)}\sum dy\,\hat x .

PyTorch has no AdaIN layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import check_adain_input, check_cache, check_eps
from ..backend import check_backend, pick, pick_for_cache
from ..base import Module
from ..kernels._common import run_reusing
from ..kernels.adaptive import adain as _kernels
from ..statistics.standardize import standardize_backward, standardize_forward

__all__ = ["adain_forward", "adain_backward", "AdaIN"]


def adain_forward(content: np.ndarray, style: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, dict[str, Any]]:
    """AdaIN of ``content`` ``(N, C, *)`` with the statistics of ``style`` ``(N or 1, C, *)``.

    The spatial sizes of content and style may differ. A style batch of 1 is broadcast over the
    content batch. Returns ``(out, cache)``; ``out`` has the content's shape and dtype. The
    arguments are checked as the class checks them (:func:`npnorm._checks.check_adain_input`:
    ``TypeError`` for non-floating arrays, ``ValueError`` naming the mismatch).
    """
    content, style, eps = check_adain_input(content, style, eps, "adain_forward")
    c_axes = tuple(range(2, content.ndim))
    s_axes = tuple(range(2, style.ndim))
    x_hat, c_cache = standardize_forward(content, c_axes, eps)
    s64 = np.asarray(style, dtype=np.float64)
    s_mean = s64.mean(axis=s_axes, keepdims=True)
    s_c = s64 - s_mean
    s_std = np.sqrt(np.mean(s_c * s_c, axis=s_axes, keepdims=True) + eps)
    out = s_std * x_hat + s_mean
    cache = {"content": c_cache, "x_hat": x_hat, "s_c": s_c, "s_std": s_std, "s_axes": s_axes,
             "s_m": int(np.prod(style.shape[2:])), "broadcast_style": style.shape[0] != content.shape[0],
             "content_dtype": content.dtype, "style_dtype": style.dtype, "out_shape": content.shape}
    return out.astype(content.dtype, copy=False), cache


def adain_backward(
    dout: np.ndarray, cache: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Backward pass of :func:`adain_forward`: returns
    ``(dcontent, dstyle)``."""
    dy = np.asarray(check_cache(dout, cache, "adain_backward"),
                    dtype=np.float64)
    x_hat, s_std, s_c, m = (cache["x_hat"], cache["s_std"], cache["s_c"],
                            cache["s_m"])
    c_axes = cache["content"]["axes"]
    dcontent = standardize_backward(dy * s_std, cache["content"])
    # d out / d mu(s) = 1 and d out / d sigma(s) = x_hat
    dmean = dy.sum(axis=c_axes, keepdims=True)
    dstd = np.sum(dy * x_hat, axis=c_axes, keepdims=True)
    if cache["broadcast_style"]:
        dmean = dmean.sum(axis=0, keepdims=True)
        dstd = dstd.sum(axis=0, keepdims=True)
    # d mu / ds = 1/m and d sigma / ds = (s - mu) / (m sigma)
    dstyle = dmean / m + dstd * s_c / (m * s_std)
    return (dcontent.astype(cache["content_dtype"], copy=False),
            dstyle.astype(cache["style_dtype"], copy=False))


class AdaIN(Module):
    """Adaptive instance normalization: ``y = layer(content, style)``.

    ``content`` has shape ``(N, C, *spatial)`` (e.g. ``(N, C, H, W)``), ``style`` has shape
    ``(N, C, *spatial')`` or ``(1, C, *spatial')`` - the spatial sizes may differ. ``backward(dy)``
    returns ``(dcontent, dstyle)``. No parameters; same in train and eval. Not in PyTorch.
    An empty batch (content and style with ``N = 0``) gives an empty output; ``eps <= 0`` is
    rejected (``ValueError``).

    ``backend`` (keyword-only): ``"numba"`` (the instance-statistics kernels, see
    :mod:`npnorm.kernels.adaptive.adain`), ``"numpy"`` (the reference) or ``None`` (the global default).
    """

    def __init__(self, eps: float = 1e-5, *, backend: str | None = None) -> None:
        super().__init__()
        self.backend = check_backend(backend, "AdaIN", allow_none=True)
        self.eps = check_eps(eps, where="AdaIN")

    def forward(self, content: np.ndarray, style: np.ndarray) -> np.ndarray:
        content, style, _ = check_adain_input(content, style, self.eps, "AdaIN")
        forward = pick(self.backend, adain_forward, _kernels.adain_forward)
        out, self._cache = run_reusing(forward, _kernels.adain_forward, self._cache, content, style, self.eps)
        return out

    def backward(self, dout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cache = self._require_cache()
        return pick_for_cache(cache, adain_backward, _kernels.adain_backward)(dout, cache)

    def extra_repr(self) -> str:
        return f"eps={self.eps}" + (f", backend={self.backend!r}" if self.backend else "")


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="AdaIN", cls=AdaIN, pytorch=None,
    reduces_over="H, W, per sample and channel (content and style separately)",
    differences="Not in PyTorch. Biased variance with eps inside the square root (pytorch-AdaIN uses the unbiased one).",
    input_names=("content", "style"), reference="Huang & Belongie, 2017",
    backends=("numpy", "numba"),
    cases=(
        Case("same-size", {}, ((2, 3, 3, 3), (2, 3, 3, 3)), modes=("train",)),
        Case("style-other-size", {}, ((2, 2, 3, 2), (2, 2, 4, 4)), modes=("train",)),
        Case("one-style", {"eps": 1e-3}, ((3, 2, 2, 3), (1, 2, 3, 3)), modes=("train",)),
    ),
))
