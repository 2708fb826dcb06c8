r"""PatchNorm: the affine-like layer at every position of a convolution (Bird, 2025, reconstructed).

**Forward.** A convolution is an affine map applied to every receptive-field patch: at output
position :math:`q` of sample :math:`n` the patch :math:`P_{n,q}` is the im2col column of the
zero-padded input (all :math:`C` input channels, :math:`k_h k_w` pixels, :math:`K = C k_h k_w`
values, padded zeros included), and :math:`a_{n,f,q} = W_f \cdot P_{n,q}`. PatchNorm divides by one
scalar per (sample, position), shared by all output channels :math:`f`:

.. math::
   \text{affine:}\quad z_{n,f,q} = \frac{W_f\cdot P_{n,q} + b_f}{\sqrt{\|P_{n,q}\|^2 + 1}}, \qquad
   \text{l2 / rms:}\quad z_{n,f,q} = \frac{W_f\cdot P_{n,q}}{\sqrt{c\,\|P_{n,q}\|^2 + \epsilon}} + b_f
                                                                                    \tag{PN}

with :math:`c = 1` (l2) or :math:`c = 1/K` (rms). The patch norms are one convolution: summing
:math:`x^2` over the channels and convolving with a :math:`k_h\times k_w` box of ones (same stride
and padding) gives :math:`\|P_{n,q}\|^2` at every position, so the layer is two convolutions and a
division, computed with :mod:`npnorm.nn.conv`'s im2col machinery.

**Backward.** With :math:`G = \partial L/\partial z`, :math:`s` the divisor, :math:`z^w = a/s` the
part of :math:`z` that is divided (:math:`z^w = z` in the affine mode, :math:`z - b` otherwise):

.. math::
   \frac{\partial L}{\partial a} = \frac{G}{s}, \qquad
   \frac{\partial L}{\partial q_{n,q}} = -\frac{c}{2 s_{n,q}^2}\sum_f G_{n,f,q}\,z^w_{n,f,q},
   \qquad \frac{\partial L}{\partial x} = \text{conv}^\top\!\Big(\frac{G}{s}\Big)
          + 2x\odot\text{box}^\top\!\Big(\frac{\partial L}{\partial q}\Big)             \tag{PN-B}

(:math:`\text{conv}^\top` is the convolution's input gradient, :math:`\text{box}^\top` that of the
ones-kernel convolution, broadcast over the channels); the weight gradient is the convolution's,
taken with :math:`G/s`; the bias gradient is :math:`\sum G/s` (affine) or :math:`\sum G` (l2, rms).

**Why it cannot be split** ("compositionally inseparable"): the divisor belongs to the *input patch*
but scales the *output*. Overlapping patches share pixels but have different norms, so no rescaling of
the input pixels followed by a convolution reproduces it; the convolution's output does not determine
:math:`\|P\|`, so no normalization after the convolution does either. Special cases do separate
(tested): a 1x1 kernel (channel-wise L2 at each pixel, then a 1x1 convolution), non-overlapping
patches (stride = kernel), and a kernel covering the whole unpadded input (the affine-like layer on
the flattened input).

**Reconstruction, and its evidence.** The paper's text was not readable when this was written. The
abstract says the affine-like solution "generalises to convolution via a new functional form,
'PatchNorm', a compositionally inseparable normaliser", the author's post calls it "a new family of
normalisers", and a third-party summary speaks of "a patchwise divergence that varies across spatial
locations". Equation (PN) is this library's derivation from those statements: apply the affine-like
layer to every im2col patch, where the divergence factor is :math:`\|P\|^2 + 1` (chapter "The affine
divergence and PatchNorm" derives it). The modes ``"l2"`` and ``"rms"`` are the pre-normalizer
versions of the same idea; which form the paper's experiments used is not known, nor whether the
patch is centred, nor how padding is treated (here: padded zeros count, since they also receive no
weight gradient). The name collides with unrelated layers (B. Killeen's patch-standardizing
convolution; "Dual PatchNorm" for ViTs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import as_float_array, check_dout, check_eps, check_positive_int
from ..backend import check_backend, pick, pick_for_cache
from ..base import Module
from ..kernels.divergence import patchnorm as _kernels
from ..nn import init
from ..nn.conv import _pair, col2im, conv2d_backward, conv2d_forward, conv_output_size, im2col
from .affine_like import affine_like_backward, affine_like_forward
from .prenorm import MODES, radial_coefficients, radial_norm_backward, radial_norm_forward, radial_scale

__all__ = ["patch_sq_norms", "patch_norm_conv2d_forward", "patch_norm_conv2d_backward",
           "patch_norm_conv2d_forward_by_patches", "patch_norm_conv2d_backward_by_patches", "PatchNormConv2d"]


def _check(x, weight, bias, stride, padding, mode, eps, where):
    x = as_float_array(x, "x", where)
    weight = as_float_array(weight, "weight", where)
    if x.ndim != 4:
        raise ValueError(f"{where}: expected x of shape (N, C, H, W), got a {x.ndim}-D array of shape {x.shape}")
    if weight.ndim != 4 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"{where}: weight must have shape (out_channels, C={x.shape[1]}, kh, kw), got "
                         f"{weight.shape}")
    if bias is not None:
        bias = as_float_array(bias, "bias", where)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"{where}: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    if mode not in MODES:
        raise ValueError(f"{where}: mode must be one of {MODES}, got {mode!r}")
    stride, padding = _pair(stride, "stride", where), _pair(padding, "padding", where, minimum=0)
    eps = check_eps(eps, where=where)
    kh, kw = weight.shape[2:]
    oh = conv_output_size(x.shape[2], kh, stride[0], padding[0])
    ow = conv_output_size(x.shape[3], kw, stride[1], padding[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"{where}: input of shape {x.shape} is smaller than the kernel {(kh, kw)} "
                         f"(with padding {padding}); the output would be empty")
    return x, weight, bias, stride, padding, eps


def patch_sq_norms(
    x: np.ndarray, kernel, stride=1, padding=0, backend: str = "numpy"
) -> tuple[np.ndarray, dict[str, Any]]:
    """:math:`\\|P_{n,q}\\|^2` at every output position:
    ``(N, 1, H_out, W_out)`` and the cache of the convolution that made it.

    One convolution: :math:`\\sum_c x_c^2` (shape ``(N, 1, H, W)``) with a
    box of ones of the kernel's size, the same stride and zero padding - the
    channel sum first, so the box has one input channel instead of :math:`C`
    (the same numbers as convolving :math:`x^2` with
    ``ones(1, C, kh, kw)``).
    """
    x64 = np.asarray(as_float_array(x, "x", "patch_sq_norms"),
                     dtype=np.float64)
    kernel = _pair(kernel, "kernel", "patch_sq_norms")
    stride, padding = (_pair(stride, "stride", "patch_sq_norms"),
                       _pair(padding, "padding", "patch_sq_norms", 0))
    xsq = np.sum(x64 * x64, axis=1, keepdims=True)
    return conv2d_forward(xsq, np.ones((1, 1) + kernel), None, stride,
                          padding, backend)


def patch_norm_conv2d_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride=1,
    padding=0, mode: str = "affine", eps: float = 1e-6,
    conv_backend: str = "numpy"
) -> tuple[np.ndarray, dict[str, Any]]:
    """Equation (PN) as two convolutions and a division. Returns
    ``(z, cache)``.

    Parameters
    ----------
    x : (N, C, H, W) floats
    weight : (F, C, kh, kw)
    bias : (F,) or None
    stride, padding : int or pair of ints
    mode : {"affine", "l2", "rms"}
    eps : float > 0
        Used by ``"l2"`` and ``"rms"`` (the affine mode's divisor is at
        least 1).
    conv_backend : {"numpy", "numba"}
        The im2col / col2im implementation of :mod:`npnorm.nn.conv`.

    ``z`` is ``(N, F, H_out, W_out)`` in the dtype of ``x`` (computed in
    float64).
    """
    x, weight, bias, stride, padding, eps = _check(
        x, weight, bias, stride, padding, mode, eps,
        "patch_norm_conv2d_forward")
    x64 = np.array(x, dtype=np.float64)
    w64 = np.asarray(weight, dtype=np.float64)
    K = int(np.prod(weight.shape[1:]))
    inner_bias = bias if mode == "affine" else None
    # W P (+ b)
    a, conv_cache = conv2d_forward(x64, w64, inner_bias, stride, padding,
                                   conv_backend)
    # ||P||^2
    q, box_cache = patch_sq_norms(x64, weight.shape[2:], stride, padding,
                                  conv_backend)
    s = radial_scale(q, mode, K, eps)                   # (N, 1, OH, OW)
    zw = a / s
    z = zw if (mode == "affine" or bias is None) else zw + bias[:, None, None]
    cache = {"x": x64, "conv": conv_cache, "box": box_cache, "s": s,
             "zw": zw, "mode": mode, "K": K, "has_bias": bias is not None,
             "dtype": x.dtype, "out_shape": z.shape}
    return z.astype(x.dtype, copy=False), cache


def patch_norm_conv2d_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Equation (PN-B): returns ``(dx, dweight, dbias)`` (``dbias`` None
    without a bias)."""
    G = np.asarray(check_dout(dout, cache["out_shape"],
                              "patch_norm_conv2d_backward"),
                   dtype=np.float64)
    s, zw, mode = cache["s"], cache["zw"], cache["mode"]
    Gs = G / s
    # through a = W P (+ b)
    dx, dweight, dbias = conv2d_backward(Gs, cache["conv"])
    c, _ = radial_coefficients(mode, cache["K"], 1.0)
    # through s = sqrt(c q + k)
    dq = -c * np.sum(G * zw, axis=1, keepdims=True) / (2.0 * s**2)
    # through q = box * sum_c x^2
    dxsq, _, _ = conv2d_backward(dq, cache["box"])
    dx = dx + 2.0 * cache["x"] * dxsq
    if mode != "affine" and cache["has_bias"]:
        dbias = G.sum(axis=(0, 2, 3))
    return dx.astype(cache["dtype"], copy=False), dweight, dbias


# -- the same layer, computed patch by patch (the definition; a check of the two-convolution form) ---
def patch_norm_conv2d_forward_by_patches(x, weight, bias, stride=1, padding=0, mode="affine", eps=1e-6):
    """Equation (PN) the slow, literal way: materialize every patch (im2col), apply the affine-like
    layer (affine) or the pre-normalizer and an affine map (l2, rms) to each, fold back. Used to check
    :func:`patch_norm_conv2d_forward`; returns ``(z, cache)``."""
    x, weight, bias, stride, padding, eps = _check(x, weight, bias, stride, padding, mode, eps,
                                                   "patch_norm_conv2d_forward_by_patches")
    n, _, h, w = x.shape
    f, _, kh, kw = weight.shape
    oh, ow = conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(w, kw, stride[1], padding[1])
    cols = im2col(np.asarray(x, dtype=np.float64), (kh, kw), stride, padding)       # (N*OH*OW, K)
    w2 = np.asarray(weight, dtype=np.float64).reshape(f, -1)
    if mode == "affine":
        rows, inner = affine_like_forward(cols, w2, bias)
        pre = None
    else:
        p_hat, pre = radial_norm_forward(cols, mode, eps, axis=1)
        rows = p_hat @ w2.T + (0.0 if bias is None else bias)
        inner = p_hat
    z = rows.reshape(n, oh, ow, f).transpose(0, 3, 1, 2)
    cache = {"inner": inner, "pre": pre, "w2": w2, "mode": mode, "has_bias": bias is not None,
             "x_shape": x.shape, "w_shape": weight.shape, "stride": stride, "padding": padding,
             "dtype": x.dtype}
    return np.ascontiguousarray(z).astype(x.dtype, copy=False), cache


def patch_norm_conv2d_backward_by_patches(dout, cache):
    """Backward pass of :func:`patch_norm_conv2d_forward_by_patches`: the affine-like (or
    pre-normalizer + affine) backward on every patch, then col2im. Returns ``(dx, dweight, dbias)``."""
    f = cache["w_shape"][0]
    G = np.asarray(dout, dtype=np.float64).transpose(0, 2, 3, 1).reshape(-1, f)
    if cache["mode"] == "affine":
        dcols, dw2, dbias = affine_like_backward(G, cache["inner"])
    else:
        dw2 = G.T @ cache["inner"]
        dbias = G.sum(axis=0) if cache["has_bias"] else None
        dcols = radial_norm_backward(G @ cache["w2"], cache["pre"])
    dx = col2im(dcols, cache["x_shape"], cache["w_shape"][2:], cache["stride"], cache["padding"])
    return dx.astype(cache["dtype"], copy=False), dw2.reshape(cache["w_shape"]), dbias


class PatchNormConv2d(Module):
    """A convolution with PatchNorm built in (equation PN; Bird, 2025, reconstructed - see the module
    docstring for the evidence).

    Parameters
    ----------
    in_channels, out_channels : int >= 1
    kernel_size, stride, padding : int or pair of ints
        As ``torch.nn.Conv2d`` (zero padding; no dilation or groups).
    mode : {"affine", "l2", "rms"}, default "affine"
        ``"affine"``: the affine-like layer on every patch, :math:`(W P + b)/\\sqrt{\\|P\\|^2 + 1}`;
        ``"l2"`` / ``"rms"``: :math:`W P/\\sqrt{c\\|P\\|^2 + \\epsilon} + b` with :math:`c = 1` or
        :math:`1/K`, :math:`K = C k_h k_w`.
    bias : bool, default True
    eps : float, default 1e-6
        Used by ``"l2"`` and ``"rms"``.
    dtype : default float64
        Parameter dtype; the output has the input's dtype.
    rng : numpy Generator or int, optional
    backend : {"numba", "numpy"} or None, default None
        ``"numba"``: the fused kernel (:mod:`npnorm.kernels.divergence.patchnorm`); ``"numpy"``: two
        convolutions through :mod:`npnorm.nn.conv` and a division; ``None``: the global default.

    Initialization (a reconstruction): ``"affine"`` and ``"l2"`` feed a vector of norm about 1 to the
    weight, so weight entries start as :math:`N(0, 1)`; ``"rms"`` feeds a vector of norm
    :math:`\\sqrt K`, so :math:`N(0, 1/K)`. The bias starts as :math:`N(0, 1)` in the affine mode (it is
    part of :math:`[W\\;b]`) and at zero otherwise.

    Input ``(N, C_in, H, W)``, output ``(N, C_out, H_out, W_out)``. No running statistics; the same in
    train and eval mode. PyTorch has no such layer; its composition is
    ``conv2d(x, W, b) / sqrt(conv2d(x**2, ones(1, C, kh, kw), stride, padding) + 1)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 mode: str = "affine", bias: bool = True, eps: float = 1e-6, *, dtype: Any = np.float64,
                 rng: np.random.Generator | int | None = None, backend: str | None = None) -> None:
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels", "PatchNormConv2d")
        self.out_channels = check_positive_int(out_channels, "out_channels", "PatchNormConv2d")
        self.kernel_size = _pair(kernel_size, "kernel_size", "PatchNormConv2d")
        self.stride = _pair(stride, "stride", "PatchNormConv2d")
        self.padding = _pair(padding, "padding", "PatchNormConv2d", minimum=0)
        if mode not in MODES:
            raise ValueError(f"PatchNormConv2d: mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.eps = check_eps(eps, where="PatchNormConv2d")
        self.backend = check_backend(backend, "PatchNormConv2d", allow_none=True)
        self.dtype = np.dtype(dtype)
        gen = init.get_rng(rng)
        K = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        std = 1.0 / np.sqrt(K) if mode == "rms" else 1.0
        shape = (self.out_channels, self.in_channels) + self.kernel_size
        self.params["weight"] = (std * gen.standard_normal(shape)).astype(self.dtype)
        if bias:
            b = gen.standard_normal(self.out_channels) if mode == "affine" else np.zeros(self.out_channels)
            self.params["bias"] = b.astype(self.dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "PatchNormConv2d")
        if x.ndim != 4:
            raise ValueError(f"{self!r}: expected input of shape (N, C, H, W), got a {x.ndim}-D array of shape "
                             f"{x.shape}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{self!r}: expected input with in_channels={self.in_channels} channels (axis 1), "
                             f"got shape {x.shape}")
        forward = pick(self.backend, patch_norm_conv2d_forward, _kernels.patch_norm_conv2d_forward)
        out, self._cache = forward(x, self.params["weight"], self.params.get("bias"), self.stride, self.padding,
                                   self.mode, self.eps)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._require_cache()
        check_dout(dout, cache["out_shape"], "PatchNormConv2d.backward")
        backward = pick_for_cache(cache, patch_norm_conv2d_backward, _kernels.patch_norm_conv2d_backward)
        dx, dweight, dbias = backward(dout, cache)
        self.grads["weight"] = dweight.astype(self.dtype, copy=False)
        if dbias is not None:
            self.grads["bias"] = dbias.astype(self.dtype, copy=False)
        return dx

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
             f"mode={self.mode!r}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if "bias" not in self.params:
            s += ", bias=False"
        return s + (f", backend={self.backend!r}" if self.backend else "")


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="PatchNormConv2d", cls=PatchNormConv2d, pytorch=None, reference="Bird, 2025 (reconstruction)",
    reduces_over="each receptive-field patch (all input channels x kernel window), per output position",
    differences="No PyTorch layer (composition: conv2d(x,W,b)/sqrt(conv2d(x^2,ones)+1)); "
                "weights initialized N(0, 1) (affine, l2) or N(0, 1/K) (rms) (reconstruction).",
    backends=("numpy", "numba"), input_offset=0.5, input_scale=1.0,
    cases=(
        Case("affine-3x3-pad", {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1},
             ((2, 2, 4, 5),), modes=("train",)),
        Case("affine-stride2", {"in_channels": 2, "out_channels": 2, "kernel_size": (2, 3), "stride": 2},
             ((2, 2, 5, 6),), modes=("train",)),
        Case("l2", {"in_channels": 3, "out_channels": 2, "kernel_size": 2, "mode": "l2", "padding": 1},
             ((2, 3, 3, 4),), modes=("train",)),
        Case("rms-no-bias", {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "mode": "rms",
                             "bias": False}, ((2, 2, 4, 4),), modes=("train",)),
    ),
))
