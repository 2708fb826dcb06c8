r"""The L2 and RMS pre-normalizers, and the one radial-scaling step every divergence layer shares.

**Why these appear in the affine-divergence argument.** One gradient step on an affine map
:math:`z = Wx + b` moves that sample's output by :math:`(\|x\|^2 + 1)` times the ideal step
:math:`-\eta\,\partial L/\partial z` (see :mod:`npnorm.divergence.measure`). Rescale the map's
*input* so that :math:`\|\hat x\|^2` is the same for every sample, and the factor becomes one
constant of the whole network, which the learning rate absorbs (Bird, 2025). Two rescalings do it:

.. math::
   \text{L2:}\quad \hat x = \frac{x}{\sqrt{\|x\|^2 + \epsilon}}
   \;\;(\|\hat x\|^2 \approx 1), \qquad
   \text{RMS:}\quad \hat x = \frac{x}{\sqrt{\|x\|^2/D + \epsilon}}
   \;\;(\|\hat x\|^2 \approx D).                                                    \tag{PRE}

Both are one **radial scaling** :math:`\hat x = x/s` with :math:`s = \sqrt{c\,\|x\|^2 + k}`
(L2: :math:`c = 1, k = \epsilon`; RMS: :math:`c = 1/D, k = \epsilon`). The affine-like layer
divides by the same kind of :math:`s` with :math:`c = 1, k = 1`, and PatchNorm by it per patch, so
this module holds that step once:

* :func:`radial_scale` - :math:`s` from a squared norm :math:`q`, and :func:`radial_scale_grad` -
  :math:`\partial s/\partial q = c/(2s)`;
* :func:`radial_norm_forward` / :func:`radial_norm_backward` - :math:`\hat x = x/s` over one axis,
  with the backward pass

  .. math:: \frac{\partial L}{\partial x} = \frac{1}{s}\Big(g - c\,\hat x\,\sum_i g_i\hat x_i\Big),
            \qquad g = \frac{\partial L}{\partial \hat x};                              \tag{PRE-B}

* :func:`l2_prenorm_forward`, :func:`rms_prenorm_forward` - the two named cases, and the layers
  :class:`L2PreNorm` and :class:`RMSPreNorm`.

**One L2 normalization for the library.** The arithmetic is not repeated here: the radial scaling of
an input (the pre-normalizers and PatchNorm's patch-by-patch form) is computed by the transformer
family's :func:`npnorm.transformer.l2norm.l2_normalize_forward` /
:func:`~npnorm.transformer.l2norm.l2_normalize_backward` (the functions behind ``L2Norm``,
``ScaleNorm``, QK-norm and nGPT), called with ``eps_mode="sqrt"``:
:math:`x/\sqrt{c q + k} = c^{-1/2}\,x/\sqrt{q + k/c}`, an L2 normalization with :math:`k/c` under the
root times a constant gain. The transformer layers use the same function with PyTorch's convention
(``F.normalize``: :math:`\epsilon` floors the norm). The divergence layers use eps *under the root*
because (i) the affine-like layer's divisor must be exactly :math:`\|[x;1]\| = \sqrt{\|x\|^2+1}` -
a floor, :math:`\max(\|x\|, 1)`, would leave the factor :math:`\|x\|^2 + 1` uncorrected for every
:math:`\|x\| < 1`, and the measured divergence ratio would not be 1; (ii) PatchNorm obtains
:math:`\|P\|^2` (not :math:`\|P\|`) from its convolution of :math:`x^2` and adds :math:`k`; (iii) the
map is smooth, so (PRE-B) holds everywhere, with no branch; and (iv) it is the form the
reconstruction of the paper this package follows writes, :math:`s = \sqrt{\sum x^2 + \epsilon}`
(the paper's own :math:`\epsilon` convention is not known). For L2 and RMS with the default small :math:`\epsilon` the
two conventions agree to about :math:`\epsilon/(2\|x\|^2)` relative, so this choice matters only for
the affine mode and for vectors near zero.

**Reconstruction.** The paper's text was not readable when this was written; the abstract and the
author's post name "L2 and RMS normalisers" as derived from first principles. That they are applied
per sample over the features, *before* the affine map, with no learnable gain (the following
:math:`W` absorbs one) and a small :math:`\epsilon`, is this library's reading, not the paper's
statement. ``RMSPreNorm`` computes exactly ``RMSNorm(D, elementwise_affine=False)`` (tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import as_float_array, check_dout, check_eps
from ..base import Module
from ..transformer.l2norm import l2_normalize_backward, l2_normalize_forward

__all__ = ["MODES", "radial_coefficients", "radial_scale", "radial_scale_grad", "radial_norm_forward", "radial_norm_backward",
           "l2_prenorm_forward", "rms_prenorm_forward", "prenorm_backward", "L2PreNorm", "RMSPreNorm"]

#: The three radial scalings: name -> (c as a function of the length n of the normalized vector, k).
MODES = ("affine", "l2", "rms")


def _check_mode(mode: object, where: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{where}: mode must be one of {MODES}, got {mode!r}")
    return mode  # type: ignore[return-value]


def radial_coefficients(mode: str, n: int, eps: float) -> tuple[float, float]:
    """``(c, k)`` of :math:`s = \\sqrt{c q + k}` for ``mode``: affine ``(1, 1)``, l2 ``(1, eps)``,
    rms ``(1/n, eps)``, where ``n`` is the length of the vector whose squared norm is ``q``."""
    _check_mode(mode, "radial_coefficients")
    if mode == "affine":
        return 1.0, 1.0
    return (1.0 / n if mode == "rms" else 1.0), float(eps)


def radial_scale(q: np.ndarray, mode: str, n: int, eps: float = 1e-12) -> np.ndarray:
    """:math:`s = \\sqrt{c\\,q + k}` from squared norms ``q`` (any shape), see :func:`radial_coefficients`."""
    c, k = radial_coefficients(mode, n, eps)
    return np.sqrt(c * q + k)


def radial_scale_grad(s: np.ndarray, mode: str, n: int) -> np.ndarray:
    """:math:`\\partial s / \\partial q = c / (2 s)`."""
    c, _ = radial_coefficients(mode, n, 1.0)
    return c / (2.0 * s)


def radial_norm_forward(x: np.ndarray, mode: str = "l2", eps: float = 1e-12, axis: int = -1,
                        where: str = "radial_norm_forward") -> tuple[np.ndarray, dict[str, Any]]:
    """:math:`\\hat x = x / s` with :math:`s = \\sqrt{c\\|x\\|^2 + k}` over ``axis`` (equation PRE).

    Computed by the library's one L2 normalization,
    :func:`npnorm.transformer.l2norm.l2_normalize_forward` with ``eps_mode="sqrt"`` (eps under the
    root), using :math:`x/\\sqrt{c q + k} = c^{-1/2}\\,x/\\sqrt{q + k/c}`:

    * ``"l2"``: :math:`c = 1, k = \\epsilon` - the L2 normalization itself;
    * ``"rms"``: :math:`c = 1/n` - the L2 normalization with :math:`\\epsilon n` under the root, times
      :math:`\\sqrt n`;
    * ``"affine"``: :math:`c = k = 1` - the L2 normalization with 1 under the root (:math:`x` divided
      by the norm of :math:`[x; 1]`).

    Why eps under the root and not ``F.normalize``'s floor :math:`\\max(\\|x\\|, \\epsilon)`: the
    affine-like layer's divisor must be exactly :math:`\\|[x;1]\\| = \\sqrt{\\|x\\|^2 + 1}` for the
    divergence factor to cancel (a floor of 1 would leave :math:`\\|x\\|^2 + 1` uncorrected for
    :math:`\\|x\\| < 1`); PatchNorm gets :math:`\\|P\\|^2` from a convolution of :math:`x^2` and adds
    :math:`k` to it; and the map is smooth, so its backward pass (PRE-B) has no branch. With the small
    default eps the two conventions differ by about :math:`\\epsilon/(2\\|x\\|^2)` relative.

    Parameters
    ----------
    x : array of floats, any shape with at least one dimension
    mode : {"l2", "rms", "affine"}
        ``"affine"`` divides by :math:`\\sqrt{\\|x\\|^2 + 1}` (the affine-like layer's divisor).
    eps : float > 0
        Unused by ``"affine"``.
    axis : int
        The feature axis the norm is taken over.

    Returns ``(x_hat, cache)``; ``x_hat`` has the shape and dtype of ``x`` (computed in float64).
    Raises ``TypeError`` for non-float input, ``ValueError`` for a bad mode, eps or axis.
    """
    x = as_float_array(x, "x", where)
    _check_mode(mode, where)
    eps = check_eps(eps, where=where)
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{where}: axis {axis} is out of range for x of shape {x.shape}")
    axis = axis % x.ndim
    n = x.shape[axis]
    c, k = radial_coefficients(mode, n, eps)
    _, l2 = l2_normalize_forward(x, axis, k / c, eps_mode="sqrt", where=where)   # y = x / sqrt(q + k/c)
    gain = 1.0 / np.sqrt(c)                                                         # x_hat = y / sqrt(c)
    x_hat = gain * l2["y"] if gain != 1.0 else l2["y"].copy()
    cache = {"l2": l2, "gain": gain, "axis": axis, "c": c, "dtype": x.dtype, "shape": x.shape}
    return x_hat.astype(x.dtype, copy=False), cache


def radial_norm_backward(dout: np.ndarray, cache: dict[str, Any],
                         where: str = "radial_norm_backward") -> np.ndarray:
    """Equation (PRE-B):
    :math:`dx = (g - c\\,\\hat x\\,\\langle g, \\hat x\\rangle)/s`.
    Returns ``dx``.

    Through the shared L2 backward: :math:`\\hat x = y/\\sqrt c` with
    :math:`y` the L2 normalization of :func:`radial_norm_forward`, so
    ``dx = l2_normalize_backward(g / sqrt(c))``; expanding
    :func:`~npnorm.transformer.l2norm.l2_normalize_backward` with
    :math:`y = \\sqrt c\\,\\hat x` and divisor :math:`s/\\sqrt c` gives
    (PRE-B).
    """
    g = np.asarray(check_dout(dout, cache["shape"], where), dtype=np.float64)
    dx = l2_normalize_backward(cache["gain"] * g, cache["l2"], where=where)
    return dx.astype(cache["dtype"], copy=False)


def l2_prenorm_forward(x: np.ndarray, eps: float = 1e-12, axis: int = -1) -> tuple[np.ndarray, dict[str, Any]]:
    """L2 pre-normalizer :math:`x/\\sqrt{\\|x\\|^2 + \\epsilon}` over ``axis``: ``(out, cache)``."""
    return radial_norm_forward(x, "l2", eps, axis, where="l2_prenorm_forward")


def rms_prenorm_forward(x: np.ndarray, eps: float = 1e-12, axis: int = -1) -> tuple[np.ndarray, dict[str, Any]]:
    """RMS pre-normalizer :math:`x/\\sqrt{\\|x\\|^2/D + \\epsilon}` over ``axis``: ``(out, cache)``."""
    return radial_norm_forward(x, "rms", eps, axis, where="rms_prenorm_forward")


def prenorm_backward(dout: np.ndarray, cache: dict[str, Any]) -> np.ndarray:
    """Backward pass of :func:`l2_prenorm_forward` and :func:`rms_prenorm_forward`: returns ``dx``."""
    return radial_norm_backward(dout, cache, where="prenorm_backward")


class _PreNorm(Module):
    _mode = "l2"

    def __init__(self, eps: float = 1e-12, dim: int = -1) -> None:
        super().__init__()
        name = type(self).__name__
        self.eps = check_eps(eps, where=name)
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"{name}: dim must be an int (the feature axis), got {dim!r}")
        self.dim = int(dim)

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self._cache = radial_norm_forward(x, self._mode, self.eps, self.dim, where=type(self).__name__)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return radial_norm_backward(dout, self._require_cache(), where=f"{type(self).__name__}.backward")

    def extra_repr(self) -> str:
        return f"eps={self.eps}, dim={self.dim}"


class L2PreNorm(_PreNorm):
    """L2 pre-normalizer: :math:`\\hat x = x/\\sqrt{\\|x\\|^2 + \\epsilon}` over ``dim`` (equation PRE).

    Put it before an affine map (``Linear(L2PreNorm(x))``): every sample then enters the map with
    :math:`\\|\\hat x\\|^2 \\approx 1`, so a gradient step moves every sample's output by the same factor
    (about 2) times the ideal step, instead of the sample-dependent :math:`\\|x\\|^2 + 1`.

    Parameters
    ----------
    eps : float, default 1e-12
        Added to :math:`\\|x\\|^2` under the root (keeps :math:`x = 0` finite).
    dim : int, default -1
        The feature axis.

    No parameters, no running statistics, same in train and eval mode. Computed by
    :func:`npnorm.transformer.l2norm.l2_normalize_forward` with ``eps_mode="sqrt"`` (the same
    function as :class:`npnorm.L2Norm`, which uses ``eps_mode="floor"``); the module docstring says
    why the divergence layers put eps under the root. PyTorch's nearest relative is
    ``torch.nn.functional.normalize(x, dim=dim, eps=eps)`` (``npnorm.L2Norm``), which divides by
    :math:`\\max(\\|x\\|, \\epsilon)` instead of :math:`\\sqrt{\\|x\\|^2 + \\epsilon}` (the two agree
    whenever :math:`\\|x\\|^2 \\gg \\epsilon`).

    Reconstruction: Bird (2025) names L2 normalizers as derived from the divergence; the placement
    (per sample, before the affine map) and the absence of a gain are this library's reading.
    """

    _mode = "l2"


class RMSPreNorm(_PreNorm):
    """RMS pre-normalizer: :math:`\\hat x = x/\\sqrt{\\|x\\|^2/D + \\epsilon}` over ``dim`` (equation PRE).

    The same as :class:`L2PreNorm` times :math:`\\sqrt D` (for :math:`\\epsilon \\to 0`):
    :math:`\\|\\hat x\\|^2 \\approx D`, so after the following affine map the weights contribute
    :math:`D` and the bias 1 to the factor :math:`\\|\\hat x\\|^2 + 1` - the :math:`\\sqrt D` sets that
    ratio. Numerically identical to ``npnorm.RMSNorm(D, eps=eps, elementwise_affine=False)``
    (``torch.nn.RMSNorm`` without its weight), which is tested.

    Parameters
    ----------
    eps : float, default 1e-12
    dim : int, default -1

    Reconstruction: as :class:`L2PreNorm`.
    """

    _mode = "rms"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

_REF = "Bird, 2025 (reconstruction)"
register(Spec(
    name="L2PreNorm", cls=L2PreNorm, pytorch=None,
    reduces_over="each sample's feature axis (dim)", reference=_REF,
    differences="No PyTorch module; closest is the function torch.nn.functional.normalize, which divides "
                "by max(||x||, eps) where this layer divides by sqrt(||x||^2 + eps).",
    cases=(Case("N-D", {}, ((5, 6),)), Case("tokens", {"eps": 1e-3}, ((2, 3, 4),)),
           Case("dim1", {"dim": 1}, ((3, 4, 2),))),
))
register(Spec(
    name="RMSPreNorm", cls=RMSPreNorm, pytorch=None,
    reduces_over="each sample's feature axis (dim)", reference=_REF,
    differences="Computes what torch.nn.RMSNorm(D, eps, elementwise_affine=False) computes over the last "
                "axis, but is not its twin: built from (eps, dim), not normalized_shape, and has no weight; "
                "eps default 1e-12 (torch.nn.RMSNorm: the dtype's machine epsilon).",
    cases=(Case("N-D", {}, ((5, 6),)), Case("tokens", {"eps": 1e-3}, ((2, 3, 4),))),
))
