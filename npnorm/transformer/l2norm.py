r"""L2 normalization (PyTorch's ``F.normalize``) and ScaleNorm (Nguyen & Salazar, 2019).

**L2 normalization** divides each vector along ``dim`` by its Euclidean length, with the
:math:`\epsilon` of ``F.normalize``: a *floor on the norm*, not a term under the root,

.. math::
   n = \lVert x\rVert_2 = \Big(\sum_{\text{dim}} x^2\Big)^{1/2}, \qquad
   d = \max(n, \epsilon), \qquad y = x / d .                                           \tag{L2}

Backward, with :math:`g = \partial L/\partial y`. Where :math:`n > \epsilon`, :math:`d = n` moves
with :math:`x` and the Jacobian :math:`(I - y y^\top)/n` removes the radial part of :math:`g`;
where the floor is active, :math:`d = \epsilon` is a constant:

.. math::
   \frac{\partial L}{\partial x} =
   \begin{cases} \big(g - y\,\langle y, g\rangle\big)/n & n > \epsilon \\ g/\epsilon & n \le \epsilon
   \end{cases}                                                                           \tag{L2-back}

(at exactly :math:`n = \epsilon` PyTorch's ``clamp_min`` sends the gradient through the
constant branch; so does this code).

**The other convention, eps under the root.** ``eps_mode="sqrt"`` divides by
:math:`d = \sqrt{\|x\|^2 + \epsilon}` instead (Flax's ``_l2_normalize``):

.. math:: y = \frac{x}{\sqrt{\|x\|^2 + \epsilon}}, \qquad
   \frac{\partial L}{\partial x} = \frac{g - y\,\langle y, g\rangle}{d}           \tag{L2-sqrt}

(:math:`\partial d/\partial x = x/d`, so the Jacobian is :math:`(I - y y^\top)/d`: the first
branch of (L2-back) with :math:`d` in place of :math:`n`, everywhere). The two agree to within
:math:`\epsilon/(2\|x\|^2)` relative when :math:`\|x\|^2 \gg \epsilon`. The transformer layers
keep PyTorch's floor; the affine-divergence layers (:mod:`npnorm.divergence.prenorm`) use this
function with the root convention, for the reasons in :func:`l2_normalize_forward` - one forward,
one backward for both families.

**ScaleNorm** is L2 normalization over the features followed by one learned scalar :math:`g`:

.. math:: y = g\,\frac{x}{\max(\lVert x\rVert_2, \epsilon)}, \qquad g_0 = \sqrt{d},
   \qquad \epsilon = 10^{-5}                                                              \tag{ScaleNorm}

as in the authors' code (``tnq177/transformers_without_tears``: one ``ScaleNorm(sqrt(d))`` per
sub-layer, eps applied as a clamp). It equals RMSNorm with one scalar gain instead of a vector:
:math:`g\,x/\lVert x\rVert = (g/\sqrt d)\,x/\mathrm{RMS}(x)`, so :math:`g_0=\sqrt d` starts it
where an RMSNorm with unit weight starts. Backward:
:math:`\partial L/\partial g = \sum \hat x \odot dy` and :math:`\partial L/\partial x` is
(L2-back) applied to :math:`g\,dy`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .._checks import as_float_array, check_cache, check_dout, check_eps, check_positive_int
from ..backend import check_backend, pick, pick_for_cache
from ..base import Module
from ..kernels._common import run_reusing
from ..kernels.transformer import l2norm as _kernels

__all__ = ["EPS_MODES", "normalize", "l2_normalize_forward", "l2_normalize_backward", "l2_normalize_backward_staged",
           "scale_norm_forward", "scale_norm_backward", "L2Norm", "ScaleNorm"]


def _check_dim(x: np.ndarray, dim: object, where: str) -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{where}: dim must be an int, got {dim!r}")
    if not -x.ndim <= int(dim) < max(x.ndim, 1):
        raise ValueError(f"{where}: dim={dim} is out of range for x of shape {x.shape} ({x.ndim}-D)")
    return int(dim) % x.ndim


#: The two conventions for the epsilon of an L2 normalization (see :func:`l2_normalize_forward`).
EPS_MODES = ("floor", "sqrt")


def l2_normalize_forward(x: np.ndarray, dim: int = -1, eps: float = 1e-12, *, eps_mode: str = "floor",
                         where: str = "l2_normalize_forward") -> tuple[np.ndarray, dict[str, Any]]:
    r"""Equation (L2): ``x / max(||x||_2, eps)`` along ``dim``, or equation (L2-sqrt):
    ``x / sqrt(||x||^2 + eps)`` with ``eps_mode="sqrt"``.

    The one L2 normalization of the library: the transformer layers (L2Norm, ScaleNorm, FixNorm,
    QK-norm, nGPT) use the ``"floor"`` convention of ``F.normalize``; the affine-divergence layers
    (:mod:`npnorm.divergence.prenorm`: L2PreNorm, RMSPreNorm, the patch-by-patch PatchNorm) use
    ``"sqrt"``, because their derivation needs the divisor to be the norm of an augmented vector:
    :math:`\sqrt{\|x\|^2 + k} = \|[x;\sqrt k]\|` is exactly the affine-like layer's
    :math:`\|[x;1]\|` for :math:`k = 1`, is smooth in :math:`x` (no kink where the floor starts),
    and is computed from the squared norm, which is what PatchNorm's convolution of :math:`x^2`
    produces. Both conventions have the same backward formula (L2-back) with :math:`d` the divisor.

    Parameters
    ----------
    x : ndarray, any shape with at least one dimension, floating point
    dim : int, default -1
        The axis whose vectors are normalized.
    eps : float, default 1e-12
        ``"floor"``: floor on the norm (``F.normalize``'s default); ``"sqrt"``: added to the squared
        norm under the root (Flax's ``_l2_normalize``).
    eps_mode : {"floor", "sqrt"}, default "floor"
    where : str
        The name error messages start with (the calling layer's).

    Returns
    -------
    out : ndarray, shape and dtype of ``x`` (computed in float64)
    cache : dict for :func:`l2_normalize_backward` (derived values only, no view of ``x``)

    Raises
    ------
    TypeError : ``x`` is not floating point; ``dim`` is not an int.
    ValueError : ``dim`` out of range; ``eps <= 0``; an unknown ``eps_mode``.
    """
    x = as_float_array(x, "x", where)
    if x.ndim == 0:
        raise ValueError(f"{where}: x must have at least one dimension, got a scalar")
    axis = _check_dim(x, dim, where)
    eps = check_eps(eps, where=where)
    if eps_mode not in EPS_MODES:
        raise ValueError(f"{where}: eps_mode must be one of {EPS_MODES}, got {eps_mode!r}")
    x64 = np.asarray(x, dtype=np.float64)
    sq = np.sum(x64 * x64, axis=axis, keepdims=True)
    if eps_mode == "floor":
        norm = np.sqrt(sq)
        floored = norm <= eps
        denom = np.where(floored, eps, norm)
    else:
        denom = np.sqrt(sq + eps)
        floored = np.zeros(denom.shape, dtype=bool)      # the divisor always moves with x
    y = x64 / denom
    return y.astype(x.dtype, copy=False), {"y": y, "denom": denom, "floored": floored, "axis": axis,
                                           "eps_mode": eps_mode, "dtype": x.dtype,
                                           "out_shape": x.shape}


def l2_normalize_backward(dout: np.ndarray, cache: dict[str, Any], *,
                          where: str = "l2_normalize_backward") -> np.ndarray:
    """Equation (L2-back), simplified: ``(g - y <y, g>) / d`` (or ``g / eps``
    where floored), for both conventions of :func:`l2_normalize_forward`
    (``d`` is the divisor)."""
    g = np.asarray(check_cache(dout, cache, where), dtype=np.float64)
    y, denom, axis = cache["y"], cache["denom"], cache["axis"]
    radial = np.where(cache["floored"], 0.0,
                      np.sum(g * y, axis=axis, keepdims=True))
    return ((g - y * radial) / denom).astype(cache["dtype"], copy=False)


def l2_normalize_backward_staged(dout: np.ndarray,
                                 cache: dict[str, Any]) -> np.ndarray:
    """The same gradient, staged through the graph
    ``s = sum x^2 -> d = max(sqrt(s), eps)`` (or ``d = sqrt(s + eps)``)
    ``-> r = 1/d -> y = x r`` (the book derives it this way, then simplifies
    to :func:`l2_normalize_backward`)."""
    g = np.asarray(check_cache(dout, cache, "l2_normalize_backward_staged"),
                   dtype=np.float64)
    y, d, axis = cache["y"], cache["denom"], cache["axis"]
    x = y * d                                    # the input, recovered
    r = 1.0 / d
    dx = g * r                                   # y = x * r, through x
    dr = np.sum(g * x, axis=axis, keepdims=True)  # ... and through r
    dd = -dr / (d * d)                           # r = 1/d
    # d = max(n, eps): only n > eps passes
    dd = np.where(cache["floored"], 0.0, dd)
    # d = sqrt(s) or sqrt(s + eps): dd/ds = 1/(2d)
    ds = dd / (2.0 * d)
    dx = dx + 2.0 * x * ds                       # s = sum x^2
    return dx.astype(cache["dtype"], copy=False)


def normalize(x: np.ndarray, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> np.ndarray:
    """``torch.nn.functional.normalize`` for ``p = 2`` (the only norm implemented), with its
    defaults: ``dim=1`` and ``eps=1e-12`` as a floor on the norm. Forward only; see
    :func:`l2_normalize_forward` / :func:`l2_normalize_backward` for the pair."""
    if p != 2:
        raise ValueError(f"normalize: only p=2 is implemented, got p={p!r}")
    return l2_normalize_forward(x, dim, eps)[0]


class L2Norm(Module):
    """L2 normalization along ``dim`` as a layer: ``F.normalize(x, p=2, dim=dim, eps=eps)``.

    Parameters
    ----------
    dim : int, default -1
        Deliberate difference: ``F.normalize`` defaults to ``dim=1``, which is the wrong axis for
        ``(N, L, D)`` tokens; this layer defaults to the last axis.
    eps : float, default 1e-12
        Floor on the norm, as ``F.normalize``.

    backend : {"numba", "numpy"} or None, default None
        Fused kernel (:mod:`npnorm.kernels.transformer.l2norm`), NumPy reference, or the global
        default.

    No parameters; same computation in train and eval mode.
    """

    def __init__(self, dim: int = -1, eps: float = 1e-12, *, backend: str | None = None) -> None:
        super().__init__()
        self.backend = check_backend(backend, "L2Norm", allow_none=True)
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
            raise TypeError(f"L2Norm: dim must be an int, got {dim!r}")
        self.dim = int(dim)
        self.eps = check_eps(eps, where="L2Norm")

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "L2Norm")
        if x.ndim == 0:
            raise ValueError("L2Norm: x must have at least one dimension, got a scalar")
        _check_dim(x, self.dim, "L2Norm")
        forward = pick(self.backend, l2_normalize_forward, _kernels.l2_normalize_forward)
        # the Numba kernel may write its private copy of x into the one of the cache it replaces
        out, self._cache = run_reusing(forward, _kernels.l2_normalize_forward, self._cache, x, self.dim, self.eps)
        self._shape = x.shape
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._require_cache()
        check_dout(dout, self._shape, "L2Norm.backward")
        return pick_for_cache(cache, l2_normalize_backward, _kernels.l2_normalize_backward)(dout, cache)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"


def scale_norm_forward(x: np.ndarray, scale: np.ndarray | float, eps: float = 1e-5) -> tuple[np.ndarray, dict[str, Any]]:
    """Equation (ScaleNorm) over the last axis: ``scale * x / max(||x||, eps)``.

    Returns ``out`` (shape and dtype of ``x``) and the cache for :func:`scale_norm_backward`.
    """
    x = as_float_array(x, "x", "scale_norm_forward")
    x_hat, cache = l2_normalize_forward(x, -1, eps)
    g = float(np.asarray(scale, dtype=np.float64))
    out = g * cache["y"]
    return out.astype(x.dtype, copy=False), {"l2": cache, "scale": g, "dtype": x.dtype, "shape": x.shape}


def scale_norm_backward(dout: np.ndarray, cache: dict[str, Any]) -> tuple[np.ndarray, float]:
    """Backward of :func:`scale_norm_forward`: ``(dx, dscale)``."""
    dy = np.asarray(check_cache(dout, cache, "scale_norm_backward", key="shape"),
                    dtype=np.float64)
    l2 = cache["l2"]
    dscale = float(np.sum(dy * l2["y"]))
    dx = l2_normalize_backward(cache["scale"] * dy, l2)
    return dx.astype(cache["dtype"], copy=False), dscale


class ScaleNorm(Module):
    """ScaleNorm (Nguyen & Salazar, 2019): ``scale * x / max(||x||_2, eps)`` over the last axis.

    Parameters
    ----------
    dim : int
        The feature size :math:`d` (the last axis of the input); only used for the initial scale
        and to check the input.
    eps : float, default 1e-5
        Floor on the norm (the authors' clamp).
    scale : float or None, default None
        Initial value of the learned scalar ``scale``; ``None`` gives the paper's :math:`\\sqrt d`.
    dtype : default float64
        Dtype of the parameter; the output has the input's dtype.
    backend : {"numba", "numpy"} or None, default None
        Fused kernel (:mod:`npnorm.kernels.transformer.l2norm`), NumPy reference, or the global
        default.

    Parameters (learned): ``scale``, a 0-d array - one scalar per ScaleNorm instance, as in the
    authors' code (not one shared by all layers). PyTorch has no ScaleNorm.
    """

    def __init__(self, dim: int, eps: float = 1e-5, scale: float | None = None, *, dtype: Any = np.float64,
                 backend: str | None = None) -> None:
        super().__init__()
        self.backend = check_backend(backend, "ScaleNorm", allow_none=True)
        self.dim = check_positive_int(dim, "dim", "ScaleNorm")
        self.eps = check_eps(eps, where="ScaleNorm")
        self.dtype = np.dtype(dtype)
        init = math.sqrt(self.dim) if scale is None else float(scale)
        self.params["scale"] = np.asarray(init, dtype=self.dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "ScaleNorm")
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"ScaleNorm: expected x of shape (*, dim={self.dim}), got shape {x.shape}")
        forward = pick(self.backend, scale_norm_forward, _kernels.scale_norm_forward)
        out, self._cache = run_reusing(forward, _kernels.scale_norm_forward, self._cache, x, self.params["scale"],
                                       self.eps)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._require_cache()
        check_dout(dout, cache["shape"], "ScaleNorm.backward")
        dx, dscale = pick_for_cache(cache, scale_norm_backward, _kernels.scale_norm_backward)(dout, cache)
        self.grads["scale"] = np.asarray(dscale, dtype=self.dtype)
        return dx

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402


def _with_tiny_rows(case: Case, rng: np.random.Generator, dtype: Any) -> tuple[np.ndarray, ...]:
    """Random rows, some scaled far below eps so that the floor branch of (L2-back) is checked."""
    (shape,) = case.input_shapes
    x = 0.5 + 2.0 * rng.standard_normal(shape)
    if case.extra.get("tiny"):
        # row 0 gets ||x|| ~ 0.05, far below the case's eps = 1 even after the check's perturbations
        x[0] = 0.01 * rng.standard_normal(shape[1:])
    return (x,)


register(Spec(
    name="L2Norm", cls=L2Norm, pytorch=None,
    reduces_over="each vector along dim", reference="F.normalize; Nguyen & Chiang, 2018",
    differences="No PyTorch module: it is the function torch.nn.functional.normalize(x, p=2, dim, eps) "
                "(same max(||x||, eps) floor) as a layer, so there is no constructor signature to mirror; "
                "dim defaults to -1 (F.normalize: dim=1).", make_inputs=_with_tiny_rows,
    backends=("numpy", "numba"),
    cases=(
        Case("tokens", {}, ((2, 3, 5),), modes=("train",)),
        Case("dim1", {"dim": 1}, ((3, 4, 2),), modes=("train",)),
        Case("floored-row", {"eps": 1.0}, ((3, 4),), modes=("train",), extra={"tiny": True}),
    ),
))
register(Spec(
    name="ScaleNorm", cls=ScaleNorm, pytorch=None,
    reduces_over="each token's features (the last axis)", reference="Nguyen & Salazar, 2019",
    backends=("numpy", "numba"),
    cases=(
        Case("tokens", {"dim": 6}, ((2, 3, 6),), modes=("train",)),
        Case("NC", {"dim": 4, "eps": 1e-3}, ((5, 4),), modes=("train",)),
    ),
))
