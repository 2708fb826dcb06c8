r"""Spectral normalization (Miyato et al., 2018): divide a weight by its largest singular value.

The weight :math:`W` (any shape with at least 2 dimensions) is seen as a matrix by moving axis
``dim`` to the front and flattening the rest, exactly as PyTorch does:
:math:`M = \operatorname{mat}(W) \in \mathbb{R}^{h \times w}` with :math:`h = W.\text{shape}[\text{dim}]`.
For a ``Linear`` weight ``(out, in)`` that is the weight itself; for a ``Conv2d`` weight
``(out, in, kh, kw)`` it is ``(out, in*kh*kw)``.

Forward, with persistent unit vectors :math:`u \in \mathbb{R}^h`, :math:`v \in \mathbb{R}^w`:

.. math::
   u \leftarrow \frac{M v}{\max(\lVert M v\rVert, \epsilon)}, \qquad
   v \leftarrow \frac{M^\top u}{\max(\lVert M^\top u\rVert, \epsilon)}
   \quad\text{(training mode only, } n \text{ times)}                       \tag{sn-power}
.. math::
   \sigma = u^\top M v                                                       \tag{sn-sigma}
.. math::
   W_{SN} = W / \sigma                                                       \tag{sn-forward}

Backward, with :math:`u, v` held constant (as PyTorch does) and :math:`G = \partial L/\partial W_{SN}`:

.. math::
   \frac{\partial L}{\partial W} = \frac{1}{\sigma}\Bigl(G - \langle G, W_{SN}\rangle\,
   \operatorname{mat}^{-1}(u v^\top)\Bigr)                                   \tag{sn-backward}

where :math:`\langle A, B\rangle = \sum_{ij} A_{ij}B_{ij}`. When :math:`u, v` are the top singular
vectors (the fixed point of eq. (sn-power)), :math:`u v^\top` is the true gradient of :math:`\sigma_1(M)`, so
eq. (sn-backward) is then the exact gradient of :math:`W / \sigma_1(W)`; the ``exact`` mode takes them from an SVD.

This module also holds a small 2-D convolution, its adjoint, and the true operator norm of a
convolution (:func:`conv2d_operator_norm`), which is *not* the largest singular value of the
reshaped ``(out, in*kh*kw)`` matrix.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .._checks import as_float_array, check_cache, check_eps, check_positive_int
from ._checks import as_weight_gradient, as_rng, as_weight, check_dim
from ..base import Module

__all__ = [
    "weight_to_matrix",
    "l2_normalize",
    "power_iteration",
    "spectral_norm_forward",
    "spectral_norm_backward",
    "spectral_norm_exact_forward",
    "SpectralNorm",
    "conv2d",
    "conv2d_adjoint",
    "conv2d_output_size",
    "conv2d_operator_norm",
]

#: Power iterations run when a SpectralNorm is created (PyTorch: 15).
WARMUP_ITERATIONS = 15


def weight_to_matrix(weight: np.ndarray, dim: int = 0) -> np.ndarray:
    """Move axis ``dim`` to the front and flatten the rest: shape ``(weight.shape[dim], -1)``."""
    return np.moveaxis(weight, dim, 0).reshape(weight.shape[dim], -1)


def _matrix_to_weight(mat: np.ndarray, shape: tuple[int, ...], dim: int) -> np.ndarray:
    """Inverse of :func:`weight_to_matrix`."""
    moved = (shape[dim],) + tuple(s for i, s in enumerate(shape) if i != dim)
    return np.moveaxis(mat.reshape(moved), 0, dim)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    r""":math:`x / \max(\lVert x\rVert_2, \epsilon)` (PyTorch's ``F.normalize``): a zero vector stays zero."""
    x = np.asarray(x, dtype=np.float64)
    return x / max(float(np.linalg.norm(x)), eps)


def power_iteration(
    mat: np.ndarray, u: np.ndarray, v: np.ndarray, n_iterations: int = 1,
    eps: float = 1e-12,
) -> tuple[np.ndarray, np.ndarray]:
    r"""``n_iterations`` steps of eq. (sn-power) on the matrix ``mat``, in
    PyTorch's order: first :math:`u \leftarrow \mathrm{normalize}(M v)`,
    then :math:`v \leftarrow \mathrm{normalize}(M^\top u)`.

    Returns new float64 arrays ``(u, v)``; the inputs are not modified. Each
    step multiplies the error in the direction of :math:`v` by about
    :math:`(\sigma_2/\sigma_1)^2`.
    """
    mat = np.asarray(mat, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    for _ in range(int(n_iterations)):
        u = l2_normalize(mat @ v, eps)
        v = l2_normalize(mat.T @ u, eps)
    return u, v


def spectral_norm_forward(
    weight: np.ndarray, u: np.ndarray, v: np.ndarray, dim: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Eq. (sn-sigma) and eq. (sn-forward) with the given ``u`` and ``v``
    (no power iteration).

    Parameters
    ----------
    weight : ndarray, at least 2-D
    u : ndarray, shape (weight.shape[dim],)
    v : ndarray, shape (prod of the other dimensions,)
    dim : int
        The axis that becomes the rows of the matrix.

    Returns
    -------
    w_sn : ndarray
        ``weight / sigma`` in ``weight.dtype`` (computed in float64).
    cache : dict
        ``w_sn`` (float64), ``u``, ``v``, ``sigma`` and what the backward
        pass needs.
    """
    where = "spectral_norm_forward"
    weight = as_weight(weight, where, 2,
                       what="at least 2-D (a matrix or a higher-rank weight)")
    dim = check_dim(dim, weight.ndim, where)
    w64 = np.asarray(weight, dtype=np.float64)
    h = weight.shape[dim]
    u = _vector(u, "u", h, where)
    v = _vector(v, "v", weight.size // h, where)
    sigma = float(u @ weight_to_matrix(w64, dim) @ v)     # eq. (sn-sigma)
    _check_sigma(sigma)
    w_sn = w64 / sigma                                    # eq. (sn-forward)
    cache = {"w_sn": w_sn, "u": u, "v": v, "sigma": sigma, "dim": dim,
             "dtype": weight.dtype, "out_shape": weight.shape}
    # astype makes a copy: the cache keeps its own
    return w_sn.astype(weight.dtype), cache


def _vector(value: object, name: str, size: int, where: str) -> np.ndarray:
    """``u`` or ``v``: a floating vector of ``size`` elements, as a private float64 copy."""
    arr = as_float_array(value, name, where)
    if arr.shape != (size,):
        raise ValueError(f"{where}: {name} must have shape ({size},), got {arr.shape}")
    return np.array(arr, dtype=np.float64)


def spectral_norm_exact_forward(weight: np.ndarray, dim: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    r"""``weight / sigma_1`` with the top singular triple from an SVD (for teaching and comparison).

    The cache has the same form as :func:`spectral_norm_forward`'s, with ``u``, ``v`` the top
    singular vectors, so :func:`spectral_norm_backward` gives the exact gradient (when
    :math:`\sigma_1` is a simple singular value; at a tie the function is not differentiable).
    """
    where = "spectral_norm_exact_forward"
    weight = as_weight(weight, where, 2, what="at least 2-D (a matrix or a higher-rank weight)")
    dim = check_dim(dim, weight.ndim, where)
    w64 = np.asarray(weight, dtype=np.float64)
    left, s, right_t = np.linalg.svd(weight_to_matrix(w64, dim), full_matrices=False)
    u, v, sigma = left[:, 0], right_t[0], float(s[0])
    _check_sigma(sigma)
    w_sn = w64 / sigma
    cache = {"w_sn": w_sn, "u": u, "v": v, "sigma": sigma, "dim": dim, "dtype": weight.dtype,
             "out_shape": weight.shape}
    return w_sn.astype(weight.dtype), cache


def spectral_norm_backward(dw_sn: np.ndarray,
                           cache: dict[str, Any]) -> np.ndarray:
    r"""Eq. (sn-backward): :math:`\partial L/\partial W
    = (G - \langle G, W_{SN}\rangle\, u v^\top)/\sigma`, with
    :math:`u v^\top` reshaped back to the weight's shape.

    A cache whose ``u`` is ``None`` comes from a *pinned* sigma (a
    constant), where the gradient is just :math:`G/\sigma`. Returned in the
    weight's dtype.
    """
    g = np.asarray(check_cache(dw_sn, cache, "spectral_norm_backward"),
                   dtype=np.float64)
    sigma, u, v = cache["sigma"], cache["u"], cache["v"]
    if u is None:
        return (g / sigma).astype(cache["dtype"], copy=False)
    w_sn = cache["w_sn"]
    inner = float(np.sum(g * w_sn))                         # <G, W_SN>
    # d sigma / dW
    d_sigma = _matrix_to_weight(np.outer(u, v), w_sn.shape, cache["dim"])
    dw = (g - inner * d_sigma) / sigma
    return dw.astype(cache["dtype"], copy=False)


def _check_sigma(sigma: float) -> None:
    if not np.isfinite(sigma) or sigma == 0.0:
        raise ValueError(
            f"spectral norm: sigma = u^T W v is {sigma}, so W / sigma is undefined "
            "(is the weight all zeros, or were u and v set to vectors orthogonal to it?)"
        )


class SpectralNorm(Module):
    r"""Spectral normalization of a weight array, as ``torch.nn.utils.parametrizations.spectral_norm``.

    ``sn = SpectralNorm(W)``; ``W_sn = sn()`` returns :math:`W/\sigma`; ``sn.backward(dW_sn)`` fills
    ``sn.grads["weight"]`` (and returns ``()``: the layer has no inputs).

    Parameters
    ----------
    weight : ndarray, at least 2-D
        The raw weight, copied into ``params["weight"]`` (dtype kept: float32 or float64).
    n_power_iterations : int, default 1
        Steps of eq. (sn-power) run by every forward pass in training mode (none in eval mode).
    eps : float, default 1e-12
        Floor of the norms in the normalization of ``u`` and ``v``.
    dim : int, default 0
        The axis of output channels (use 1 for a transposed-convolution weight ``(in, out, kh, kw)``).
    exact : bool, default False
        Take sigma from an SVD at every forward pass instead of from ``u`` and ``v`` (which are then
        neither used nor updated). For teaching and comparison; the gradient is then exact.
    seed : int, numpy Generator or None
        Random source of the initial ``u`` and ``v`` (reproducible runs).

    Attributes
    ----------
    u, v : ndarray (float64), settable
        The persistent power-iteration vectors, shapes ``(h,)`` and ``(w,)``. Created from N(0, 1),
        normalized, then refined by 15 power iterations on ``weight`` (PyTorch's warm-up). Setting
        them (e.g. to PyTorch's ``_u`` and ``_v``) reproduces a run exactly.
    sigma : float, settable
        The sigma of the last forward pass (before the first one: the sigma an eval-mode forward
        would use now). Setting a positive number *pins* sigma: forward returns ``W / sigma``
        without power iteration and backward treats sigma as a constant (``dW = G / sigma``);
        ``sn.sigma = None`` un-pins it.

    Notes
    -----
    Training vs evaluation mode follows PyTorch: in training mode every call runs
    ``n_power_iterations`` steps, updating ``u`` and ``v`` in place of the old ones, and *then*
    computes :math:`\sigma = u^\top M v`; calling ``sn()`` twice runs two steps. The backward pass
    treats the updated ``u`` and ``v`` as constants, eq. (sn-backward). That is the exact gradient of the
    training-mode forward only when ``u`` and ``v`` sit at the fixed point (the top singular
    vectors); elsewhere it ignores how the power-iteration step depends on :math:`W` - exactly
    as PyTorch does.

    Creation runs 15 power iterations, as PyTorch's parametrization does in its constructor. Note
    that ``torch.nn.utils.parametrizations.spectral_norm(module)`` on a module in *training* mode
    ends with 16: registering the parametrization evaluates it once, which runs one more step. To
    reproduce a PyTorch run, copy its ``_u`` and ``_v`` into :attr:`u` and :attr:`v`.

    Deliberate differences from PyTorch: computations run in float64 (``u`` and ``v`` are float64
    whatever the weight's dtype; PyTorch keeps them in the weight's dtype); 1-D weights are
    rejected (PyTorch silently normalizes them by their exact norm); a zero sigma raises instead of
    returning NaN; ``exact`` mode and a pinned ``sigma`` do not exist in PyTorch.
    """

    def __init__(
        self,
        weight: np.ndarray,
        n_power_iterations: int = 1,
        eps: float = 1e-12,
        dim: int = 0,
        *,
        exact: bool = False,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        where = "SpectralNorm"
        w = as_weight(weight, where, 2, what="a matrix or a higher-rank weight (at least 2-D: "
                      "(out, in) for Linear, (out, in, kh, kw) for Conv2d)")
        self.dim = check_dim(dim, w.ndim, where)
        self.n_power_iterations = check_positive_int(n_power_iterations, "n_power_iterations", where)
        self.eps = check_eps(eps, where=where)
        self.exact = bool(exact)
        self.params["weight"] = np.array(w, copy=True)
        self.shape = w.shape
        mat = weight_to_matrix(np.asarray(w, dtype=np.float64), self.dim)
        rng = as_rng(seed)
        u = l2_normalize(rng.standard_normal(mat.shape[0]), self.eps)
        v = l2_normalize(rng.standard_normal(mat.shape[1]), self.eps)
        self._u, self._v = power_iteration(mat, u, v, WARMUP_ITERATIONS, self.eps)
        self._pinned_sigma: float | None = None
        self._last_sigma: float | None = None

    # -- state -----------------------------------------------------------------------------
    def _matrix(self) -> np.ndarray:
        w = self._weight()
        return weight_to_matrix(np.asarray(w, dtype=np.float64), self.dim)

    def _weight(self) -> np.ndarray:
        w = as_weight(self.params["weight"], "SpectralNorm", 2, name='params["weight"]')
        if w.shape != self.shape:
            raise ValueError(f'SpectralNorm: params["weight"] has shape {w.shape}, but the layer was '
                             f"built for shape {self.shape} (u and v have matching sizes)")
        return w

    def _set_vector(self, value: object, name: str, size: int) -> np.ndarray:
        arr = as_float_array(value, name, "SpectralNorm")
        if arr.shape != (size,):
            raise ValueError(f"SpectralNorm: {name} must have shape ({size},) for a weight of shape "
                             f"{self.shape} with dim={self.dim}, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"SpectralNorm: {name} contains NaN or Inf")
        return np.array(arr, dtype=np.float64, copy=True)

    @property
    def u(self) -> np.ndarray:
        """Left power-iteration vector, shape ``(weight.shape[dim],)``."""
        return self._u

    @u.setter
    def u(self, value: np.ndarray) -> None:
        self._u = self._set_vector(value, "u", self._u.size)

    @property
    def v(self) -> np.ndarray:
        """Right power-iteration vector, shape ``(weight.size // weight.shape[dim],)``."""
        return self._v

    @v.setter
    def v(self, value: np.ndarray) -> None:
        self._v = self._set_vector(value, "v", self._v.size)

    @property
    def sigma(self) -> float:
        """The pinned sigma, else the sigma of the last forward pass, else ``u^T M v`` now."""
        if self._pinned_sigma is not None:
            return self._pinned_sigma
        if self._last_sigma is not None:
            return self._last_sigma
        if self.exact:
            return float(np.linalg.norm(self._matrix(), 2))
        return float(self._u @ self._matrix() @ self._v)

    @sigma.setter
    def sigma(self, value: float | None) -> None:
        if value is None:
            self._pinned_sigma = None
            return
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"SpectralNorm: sigma must be a positive number (pins it) or None (un-pins), got {value!r}")
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"SpectralNorm: a pinned sigma must be finite and > 0, got {value!r}")
        self._pinned_sigma = float(value)

    @property
    def sigma_pinned(self) -> bool:
        """True while a number assigned to :attr:`sigma` replaces the estimate."""
        return self._pinned_sigma is not None

    # -- running ---------------------------------------------------------------------------
    def forward(self) -> np.ndarray:
        w = self._weight()
        if self._pinned_sigma is not None:
            sigma = self._pinned_sigma
            out = np.asarray(w, dtype=np.float64) / sigma
            cache = {"u": None, "v": None, "sigma": sigma, "dtype": w.dtype,
                     "out_shape": w.shape}
            out = out.astype(w.dtype, copy=False)
        elif self.exact:
            out, cache = spectral_norm_exact_forward(w, self.dim)
        else:
            if self.training:                           # eq. (sn-power)
                self._u, self._v = power_iteration(
                    self._matrix(), self._u, self._v,
                    self.n_power_iterations, self.eps)
            # eq. (sn-sigma), eq. (sn-forward)
            out, cache = spectral_norm_forward(w, self._u, self._v, self.dim)
        self._last_sigma = cache["sigma"]
        self._cache = cache
        return out

    def backward(self, dout: np.ndarray) -> tuple[()]:
        cache = self._require_cache()
        g = as_weight_gradient(dout, self.shape, "SpectralNorm.backward")
        dw = spectral_norm_backward(g, cache)                                                # eq. (sn-backward)
        self.grads["weight"] = dw.astype(self.params["weight"].dtype, copy=False)
        return ()

    def extra_repr(self) -> str:
        extra = ", exact=True" if self.exact else ""
        return (f"weight_shape={self.shape}, n_power_iterations={self.n_power_iterations}, "
                f"eps={self.eps}, dim={self.dim}{extra}")


# -- the true operator norm of a 2-D convolution -----------------------------------------------
def conv2d_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """``floor((size + 2 padding - kernel) / stride) + 1`` (PyTorch's formula, dilation 1)."""
    return (size + 2 * padding - kernel) // stride + 1


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value), int(value)
    try:
        a, b = value  # type: ignore[misc]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    return int(a), int(b)


def conv2d(x: np.ndarray, weight: np.ndarray, stride: int | tuple[int, int] = 1,
           padding: int | tuple[int, int] = 0) -> np.ndarray:
    r"""Cross-correlation as in ``torch.nn.functional.conv2d`` (no bias, dilation 1, groups 1).

    :math:`y_{n,o,i,j} = \sum_{c,p,q} W_{o,c,p,q}\, x^{pad}_{n,c,\,s_h i + p,\, s_w j + q}`.
    ``x`` has shape ``(N, C, H, W)``, ``weight`` ``(O, C, kh, kw)``; float64 result.
    """
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    n, c, h, w = x.shape
    o, c2, kh, kw = weight.shape
    if c != c2:
        raise ValueError(f"conv2d: x has {c} channels but weight expects {c2} (weight shape {weight.shape})")
    ho, wo = conv2d_output_size(h, kh, sh, ph), conv2d_output_size(w, kw, sw, pw)
    if ho < 1 or wo < 1:
        raise ValueError(f"conv2d: input {h}x{w} with padding {(ph, pw)} is smaller than the kernel {kh}x{kw}")
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((n, o, ho, wo))
    for p in range(kh):
        for q in range(kw):
            patch = xp[:, :, p:p + sh * (ho - 1) + 1:sh, q:q + sw * (wo - 1) + 1:sw]   # (N, C, Ho, Wo)
            y += np.einsum("oc,nchw->nohw", weight[:, :, p, q], patch)
    return y


def conv2d_adjoint(y: np.ndarray, weight: np.ndarray, input_size: tuple[int, int],
                   stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0) -> np.ndarray:
    r"""The adjoint (transpose) of :func:`conv2d` as a linear map of ``x``: the unique map with
    :math:`\langle \mathrm{conv}(x), y\rangle = \langle x, \mathrm{conv}^\top(y)\rangle`.

    Each output value sends its weight back to the input pixels it read; padding is cropped.
    (This is also the input gradient of a convolution, and a transposed convolution.)
    """
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    y = np.asarray(y, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    h, w = input_size
    n, o, ho, wo = y.shape
    _, c, kh, kw = weight.shape
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    for p in range(kh):
        for q in range(kw):
            xp[:, :, p:p + sh * (ho - 1) + 1:sh, q:q + sw * (wo - 1) + 1:sw] += np.einsum(
                "oc,nohw->nchw", weight[:, :, p, q], y)
    return xp[:, :, ph:ph + h, pw:pw + w]


def conv2d_operator_norm(
    weight: np.ndarray,
    input_size: tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    *,
    max_iterations: int = 2000,
    rtol: float = 1e-12,
    seed: int | np.random.Generator | None = 0,
    return_history: bool = False,
) -> float | tuple[float, list[float]]:
    r"""The largest singular value of the convolution
    :math:`x \mapsto \mathrm{conv2d}(x, W)` on ``(C, H, W)`` inputs of the
    given spatial ``input_size``: its true Lipschitz constant in the
    Euclidean norm.

    Power iteration on :math:`A^\top A` through :func:`conv2d` and
    :func:`conv2d_adjoint`,
    :math:`x \leftarrow A^\top A x / \lVert A^\top A x\rVert`, with the
    estimate :math:`\lVert A x\rVert` for unit :math:`x`; it stops when the
    estimate changes by less than ``rtol`` (relative) or after
    ``max_iterations``. This depends on the input size, stride and
    padding - none of which the reshaped ``(out, in*kh*kw)`` matrix of
    spectral normalization sees.
    """
    w = as_weight(weight, "conv2d_operator_norm", 4,
                  what="a 4-D convolution weight (out, in, kh, kw)")
    if w.ndim != 4:
        raise ValueError("conv2d_operator_norm: weight must be 4-D "
                         f"(out, in, kh, kw), got shape {w.shape}")
    h, wd = _pair(input_size, "input_size")
    rng = as_rng(seed)
    x = rng.standard_normal((1, w.shape[1], h, wd))
    x /= np.linalg.norm(x)
    estimate, history = 0.0, []
    n_max = check_positive_int(max_iterations, "max_iterations",
                               "conv2d_operator_norm")
    for _ in range(n_max):
        y = conv2d(x, w, stride, padding)
        new = float(np.linalg.norm(y))
        history.append(new)
        z = conv2d_adjoint(y, w, (h, wd), stride, padding)
        nz = float(np.linalg.norm(z))
        if nz == 0.0:
            break
        x = z / nz
        if abs(new - estimate) <= rtol * new:
            estimate = new
            break
        estimate = new
    return (estimate, history) if return_history else estimate


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402


def _make_spectral_norm(case: Case, rng: np.random.Generator, dtype: Any, kwargs: dict[str, Any]) -> SpectralNorm:
    weight = (0.3 + rng.standard_normal(case.extra["weight_shape"])).astype(dtype)
    return SpectralNorm(weight, seed=rng, **kwargs)


def _setup_spectral_norm(layer: SpectralNorm, rng: np.random.Generator, case: Case) -> None:
    """Put u and v in the state the case asks for, *after* the weight was randomized.

    - ``"converged"``: the exact top singular vectors of the weight (the fixed point of eq. (sn-power)).
      Then the training-mode forward's power-iteration step leaves them where they are, its
      derivative with respect to W does not change sigma to first order, and eq. (sn-backward) is the exact
      gradient of the training-mode forward: the check is honest in both modes.
    - ``"partial"``: one power-iteration step from random vectors (far from converged, sigma > 0).
      Only valid for eval mode, where u and v are constants and eq. (sn-backward) is exact for any u, v.
    - ``"pinned"``: a pinned sigma (a constant).
    """
    state = case.extra.get("uv", "converged")
    mat = layer._matrix()
    if state == "converged":
        left, _, right_t = np.linalg.svd(mat)
        layer.u, layer.v = left[:, 0], right_t[0]
    elif state == "partial":
        u0 = l2_normalize(rng.standard_normal(mat.shape[0]))
        v0 = l2_normalize(rng.standard_normal(mat.shape[1]))
        layer.u, layer.v = power_iteration(mat, u0, v0, 1)
    elif state == "pinned":
        layer.sigma = float(rng.uniform(1.5, 3.0))
    else:  # pragma: no cover - a typo in a case
        raise ValueError(f"unknown u/v state {state!r}")


register(Spec(
    name="SpectralNorm", cls=SpectralNorm,
    pytorch="torch.nn.utils.parametrizations.spectral_norm",
    reduces_over="the largest singular value of the weight reshaped to (W.shape[dim], -1)",
    differences=(
        "Computes in float64 (u, v float64). 1-D weights are rejected (PyTorch normalizes them by "
        "their exact norm). sigma = 0 raises instead of giving NaN. Extras not in PyTorch: exact=True "
        "(sigma from an SVD) and a settable, pinnable sigma. The backward pass treats u and v as "
        "constants, as PyTorch does."
    ),
    input_names=(), reference="Miyato et al., 2018",
    make_layer=_make_spectral_norm, setup=_setup_spectral_norm,
    signature_twin="npnorm.weights.parametrize.spectral_norm",
    cases=(
        # Converged u, v: the constant-(u, v) gradient is the exact gradient in both modes.
        Case("linear-converged", {}, (), extra={"weight_shape": (4, 6), "uv": "converged"}),
        Case("conv-converged", {}, (), extra={"weight_shape": (3, 2, 2, 2), "uv": "converged"}),
        Case("conv-dim1-2-iters", {"dim": 1, "n_power_iterations": 2}, (),
             extra={"weight_shape": (2, 3, 2, 2), "uv": "converged"}),
        Case("wide-converged", {}, (), extra={"weight_shape": (5, 3), "uv": "converged"}),
        # Arbitrary u, v: eq. (sn-backward) holds for any constant u, v, which is what eval mode uses.
        Case("linear-partial-uv", {}, (), modes=("eval",), extra={"weight_shape": (4, 6), "uv": "partial"}),
        Case("conv-partial-uv", {}, (), modes=("eval",), extra={"weight_shape": (3, 2, 3, 2), "uv": "partial"}),
        # Exact mode: sigma from the SVD, the true gradient of W / sigma_1(W); same in both modes.
        Case("exact", {"exact": True}, (), extra={"weight_shape": (3, 2, 2, 2), "uv": "partial"}),
        Case("pinned-sigma", {}, (), extra={"weight_shape": (4, 3), "uv": "pinned"}),
    ),
))
