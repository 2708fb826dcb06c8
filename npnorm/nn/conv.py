r"""2-D convolution (im2col / col2im) and pooling.

**Convolution as one matrix product.** For input :math:`x` of shape ``(N, C, H, W)``, weight
:math:`W` of shape ``(O, C, k_h, k_w)``, stride :math:`s` and zero padding :math:`p`
(PyTorch's ``Conv2d``, which computes a cross-correlation):

.. math::
   y_{n,o,a,b} = b_o + \sum_{c,i,j} W_{o,c,i,j}\; x^{\text{pad}}_{n,c,\,a s_h + i,\,b s_w + j},
   \qquad H_{out} = \lfloor (H + 2p_h - k_h)/s_h \rfloor + 1 .                       \tag{CONV}

``im2col`` copies every receptive field into a row of a matrix
:math:`X_{col}` of shape :math:`(N H_{out} W_{out},\ C k_h k_w)`; then
:math:`Y = X_{col} W_{2d}^\top + b` with :math:`W_{2d}` of shape :math:`(O, C k_h k_w)` - a
Linear layer applied to every patch. The backward pass is that Linear layer's backward pass,

.. math::
   \frac{\partial L}{\partial W_{2d}} = G^\top X_{col}, \quad
   \frac{\partial L}{\partial b} = \textstyle\sum_{rows} G, \quad
   \frac{\partial L}{\partial X_{col}} = G\,W_{2d},

followed by ``col2im``, the adjoint of im2col: every entry of :math:`\partial L/\partial X_{col}` is
**added** back to the input pixel it was copied from (overlapping patches accumulate), and the
padding is cropped.

Two implementations of im2col/col2im: the readable NumPy one (``sliding_window_view`` for im2col, a
loop over the :math:`k_h k_w` kernel offsets for col2im) and a Numba-compiled one (explicit loops,
``cache=True``); the tests check that they agree, ``Conv2d(backend=...)`` picks one.

**Pooling.** ``MaxPool2d`` passes each window's gradient to the position of its maximum (the first
one on ties, as PyTorch); ``AvgPool2d`` spreads it evenly over the window (``count_include_pad=True``,
PyTorch's default, divides by :math:`k_h k_w` also at padded borders).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numba
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .._checks import as_float_array, check_cache, check_device, check_positive_int, resolve_dtype
from ..base import Module
from . import init

__all__ = [
    "conv_output_size", "im2col", "col2im", "im2col_numba", "col2im_numba",
    "conv2d_forward", "conv2d_backward", "Conv2d",
    "compute_dtype", "max_pool2d_forward", "max_pool2d_backward", "max_pool2d_forward_numba",
    "max_pool2d_backward_numba", "MaxPool2d",
    "avg_pool2d_forward", "avg_pool2d_backward", "AvgPool2d",
]

BACKENDS = ("numpy", "numba")


def _pair(value: Any, name: str, where: str, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints (>= minimum) as a pair, like PyTorch's ``_pair``."""
    vals = (value, value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    try:
        a, b = vals  # type: ignore[misc]
    except (TypeError, ValueError):
        raise TypeError(f"{where}: {name} must be an int or a pair of ints, got {value!r}") from None
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
            raise ValueError(f"{where}: {name} must contain ints >= {minimum}, got {value!r}")
    return int(a), int(b)


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """:math:`\\lfloor (size + 2p - k)/s \\rfloor + 1`."""
    return (size + 2 * padding - kernel) // stride + 1


# -- im2col / col2im: NumPy reference -------------------------------------------------------------
def im2col(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> np.ndarray:
    """Receptive fields as rows: ``(N*OH*OW, C*kh*kw)``, rows ordered ``(n, a, b)``, columns ``(c, i, j)``."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c = x.shape[:2]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    windows = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]   # (N, C, OH, OW, kh, kw)
    oh, ow = windows.shape[2:4]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)


def col2im(cols: np.ndarray, x_shape: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int],
           padding: tuple[int, int]) -> np.ndarray:
    """Adjoint of :func:`im2col`: add every row entry back onto the pixel it came from."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x_shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    cols6 = cols.reshape(n, oh, ow, c, kh, kw)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += cols6[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return xp[:, :, ph:ph + h, pw:pw + w]


# -- im2col / col2im: Numba kernels ---------------------------------------------------------------
@numba.njit(cache=True)
def _im2col_kernel(x, kh, kw, sh, sw, ph, pw, oh, ow):  # pragma: no cover - compiled
    n, c, h, w = x.shape
    cols = np.zeros((n * oh * ow, c * kh * kw), dtype=x.dtype)
    for b in range(n):
        for a in range(oh):
            for e in range(ow):
                row = (b * oh + a) * ow + e
                for ch in range(c):
                    for i in range(kh):
                        y = a * sh + i - ph
                        if y < 0 or y >= h:
                            continue
                        for j in range(kw):
                            z = e * sw + j - pw
                            if 0 <= z < w:
                                cols[row, (ch * kh + i) * kw + j] = x[b, ch, y, z]
    return cols


@numba.njit(cache=True)
def _col2im_kernel(cols, n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow):  # pragma: no cover - compiled
    dx = np.zeros((n, c, h, w), dtype=cols.dtype)
    for b in range(n):
        for a in range(oh):
            for e in range(ow):
                row = (b * oh + a) * ow + e
                for ch in range(c):
                    for i in range(kh):
                        y = a * sh + i - ph
                        if y < 0 or y >= h:
                            continue
                        for j in range(kw):
                            z = e * sw + j - pw
                            if 0 <= z < w:
                                dx[b, ch, y, z] += cols[row, (ch * kh + i) * kw + j]
    return dx


def im2col_numba(x, kernel, stride, padding):
    """Numba version of :func:`im2col` (same layout; padding handled by bounds checks, not copies)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    h, w = x.shape[2:]
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    return _im2col_kernel(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw, oh, ow)


def col2im_numba(cols, x_shape, kernel, stride, padding):
    """Numba version of :func:`col2im`."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x_shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    return _col2im_kernel(np.ascontiguousarray(cols), n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow)


_IM2COL = {"numpy": (im2col, col2im), "numba": (im2col_numba, col2im_numba)}


# -- the transposed layout the numba convolution uses ---------------------------------------------
# ``cols_t`` = ``im2col(x).T``: one row per (c, i, j), one column per output position (n, a, b). Filling
# it walks the padded input row by row and writes contiguous memory (a copy loop the compiler
# vectorizes), where the row-per-position layout scatters every write C*kh*kw apart.
@numba.njit(cache=True)
def _im2col_t_kernel(xp, kh, kw, sh, sw, oh, ow):  # pragma: no cover - compiled
    n, c = xp.shape[0], xp.shape[1]
    cols = np.empty((c * kh * kw, n * oh * ow), dtype=xp.dtype)
    for ch in range(c):
        for i in range(kh):
            for j in range(kw):
                r = (ch * kh + i) * kw + j
                for b in range(n):
                    for a in range(oh):
                        src = xp[b, ch, a * sh + i]
                        base = (b * oh + a) * ow
                        for e in range(ow):
                            cols[r, base + e] = src[e * sw + j]
    return cols


@numba.njit(cache=True)
def _col2im_t_kernel(cols, n, c, hp, wp, kh, kw, sh, sw, oh, ow):  # pragma: no cover - compiled
    dxp = np.zeros((n, c, hp, wp), dtype=cols.dtype)
    for b in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    r = (ch * kh + i) * kw + j
                    for a in range(oh):
                        dst = dxp[b, ch, a * sh + i]
                        base = (b * oh + a) * ow
                        for e in range(ow):
                            dst[e * sw + j] += cols[r, base + e]
    return dxp


def _conv2d_forward_t(x, weight, bias, stride, padding, ct):
    """The numba backend's convolution: ``W2 @ cols_t`` (same numbers as the reference's ``cols @ W2.T``)."""
    (sh, sw), (ph, pw) = stride, padding
    n, _, h, w = x.shape
    o, _, kh, kw = weight.shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    xp = np.pad(np.asarray(x, dtype=ct), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols_t = _im2col_t_kernel(xp, kh, kw, sh, sw, oh, ow)             # (C*kh*kw, N*OH*OW)
    w2 = np.array(weight, dtype=ct).reshape(o, -1)                    # (O, C*kh*kw), a copy
    out_t = w2 @ cols_t                                                 # (O, N*OH*OW)
    if bias is not None:
        out_t += np.asarray(bias, dtype=ct)[:, None]
    out = out_t.reshape(o, n, oh, ow).transpose(1, 0, 2, 3)
    cache = {"cols_t": cols_t, "w2": w2, "x_shape": x.shape, "w_shape": weight.shape, "stride": stride,
             "padding": padding, "has_bias": bias is not None, "dtype": x.dtype, "backend": "numba",
             "out_shape": out.shape}
    return np.ascontiguousarray(out, dtype=x.dtype), cache


def _conv2d_backward_t(dout, cache):
    cols_t, w2 = cache["cols_t"], cache["w2"]
    o, c, kh, kw = cache["w_shape"]
    n, _, h, w = cache["x_shape"]
    (sh, sw), (ph, pw) = cache["stride"], cache["padding"]
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    g_t = np.ascontiguousarray(np.asarray(dout, dtype=cols_t.dtype).transpose(1, 0, 2, 3)).reshape(o, -1)
    dweight = (g_t @ cols_t.T).reshape(cache["w_shape"])
    dbias = g_t.sum(axis=1) if cache["has_bias"] else None
    dcols_t = w2.T @ g_t                                                # (C*kh*kw, N*OH*OW)
    dxp = _col2im_t_kernel(dcols_t, n, c, h + 2 * ph, w + 2 * pw, kh, kw, sh, sw, oh, ow)
    dx = dxp[:, :, ph:ph + h, pw:pw + w]
    return dx.astype(cache["dtype"]), dweight, dbias


# -- convolution ----------------------------------------------------------------------------------
def compute_dtype(x: np.ndarray, *params: np.ndarray | None) -> np.dtype:
    """The dtype a network layer computes in: float32 only when the input and every parameter are
    float32 (the float32 path, as PyTorch computes), float64 otherwise (npnorm's default float64
    parameters make every layer compute in float64, whatever the input's dtype)."""
    return np.result_type(np.float32, x.dtype, *(p.dtype for p in params if p is not None))


def conv2d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride=(1, 1), padding=(0, 0),
                   backend: str = "numpy") -> tuple[np.ndarray, dict]:
    """Equation (CONV) as ``im2col`` + one matrix product, computed in :func:`compute_dtype`. Returns
    ``(out, cache)``.

    Checked like the class: ``x`` (N, C, H, W) and ``weight`` (O, C, kh, kw) floating, ``bias`` None
    or (O,), stride and padding ints or pairs, the output not empty."""
    where = "conv2d_forward"
    if backend not in _IM2COL:
        raise ValueError(f"{where}: backend must be one of {tuple(_IM2COL)}, got {backend!r}")
    x = as_float_array(x, "x", where)
    weight = as_float_array(weight, "weight", where)
    stride, padding = _pair(stride, "stride", where), _pair(padding, "padding", where, minimum=0)
    if x.ndim != 4 or weight.ndim != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"{where}: expected x of shape (N, C, H, W) and weight of shape (O, C, kh, kw) with the "
                         f"same C, got x {x.shape} and weight {weight.shape}")
    ct = compute_dtype(x, weight, None if bias is None else np.asarray(bias))
    if bias is not None:
        bias = np.array(as_float_array(bias, "bias", where), dtype=np.float64)     # a private copy
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"{where}: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    if min(conv_output_size(x.shape[2], weight.shape[2], stride[0], padding[0]),
           conv_output_size(x.shape[3], weight.shape[3], stride[1], padding[1])) < 1:
        raise ValueError(f"{where}: input of shape {x.shape} is smaller than the kernel {weight.shape[2:]} "
                         f"(with padding {padding}); the output would be empty")
    if backend == "numba":
        return _conv2d_forward_t(x, weight, bias, stride, padding, ct)
    to_cols = _IM2COL[backend][0]
    n, _, h, w = x.shape
    o, _, kh, kw = weight.shape
    oh, ow = conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(w, kw, stride[1], padding[1])
    cols = to_cols(np.asarray(x, dtype=ct), (kh, kw), stride, padding)   # (N*OH*OW, C*kh*kw), a new array
    w2 = np.array(weight, dtype=ct).reshape(o, -1)                  # (O, C*kh*kw), a private copy
    out = cols @ w2.T                                                # (N*OH*OW, O)
    if bias is not None:
        out += bias
    out = out.reshape(n, oh, ow, o).transpose(0, 3, 1, 2)
    cache = {"cols": cols, "w2": w2, "x_shape": x.shape, "w_shape": weight.shape, "stride": stride,
             "padding": padding, "has_bias": bias is not None, "dtype": x.dtype, "backend": backend,
             "out_shape": out.shape}
    return np.ascontiguousarray(out, dtype=x.dtype), cache


def conv2d_backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Returns ``(dx, dweight, dbias)``: the Linear backward on patches, then ``col2im``."""
    dout = check_cache(dout, cache, "conv2d_backward")
    if "cols_t" in cache:
        return _conv2d_backward_t(dout, cache)
    from_cols = _IM2COL[cache["backend"]][1]
    o = cache["w_shape"][0]
    g = np.asarray(dout, dtype=cache["cols"].dtype).transpose(0, 2, 3, 1).reshape(-1, o)   # (N*OH*OW, O)
    dweight = (g.T @ cache["cols"]).reshape(cache["w_shape"])
    dbias = g.sum(axis=0) if cache["has_bias"] else None
    dcols = g @ cache["w2"]
    kh, kw = cache["w_shape"][2:]
    dx = from_cols(dcols, cache["x_shape"], (kh, kw), cache["stride"], cache["padding"])
    return dx.astype(cache["dtype"], copy=False), dweight, dbias


def _check_image_input(layer: Module, x: object, channels: int | None = None, arg: str = "in_channels") -> np.ndarray:
    x = as_float_array(x, "x", type(layer).__name__)
    if x.ndim != 4:
        raise ValueError(f"{layer!r}: expected input of shape (N, C, H, W), got a {x.ndim}-D array of shape "
                         f"{x.shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{layer!r}: expected input with {arg}={channels} channels (axis 1), got shape {x.shape}")
    return x


class Conv2d(Module):
    """2-D convolution, as ``torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0,
    bias=True)`` (zero padding, no dilation or groups).

    ``weight`` has shape ``(out_channels, in_channels, kh, kw)``, ``bias`` ``(out_channels,)``, both
    initialized from :math:`U(-1/\\sqrt{\\text{fan\\_in}}, 1/\\sqrt{\\text{fan\\_in}})`,
    :math:`\\text{fan\\_in} = \\text{in\\_channels}\\cdot k_h k_w` (PyTorch's default). Input
    ``(N, C_in, H, W)``, output ``(N, C_out, H_out, W_out)`` with
    :math:`H_{out} = \\lfloor (H + 2p - k)/s \\rfloor + 1`.

    ``backend`` selects the im2col/col2im implementation (``"numpy"`` or ``"numba"``); both give the
    same numbers.

    The constructor has PyTorch 2.13's full signature ``(in_channels, out_channels, kernel_size,
    stride=1, padding=0, dilation=1, groups=1, bias=True, padding_mode='zeros', device=None,
    dtype=None)``, plus npnorm's keyword-only ``rng`` and ``backend``. ``padding`` may also be
    ``'valid'`` (0) or ``'same'`` (stride 1, odd kernel sizes).

    Deliberate differences: only ``dilation=1``, ``groups=1`` and ``padding_mode='zeros'`` are
    implemented (other values raise ``ValueError``); float64 parameters by default
    (``dtype=None``); ``device`` only ``None`` or ``"cpu"``; ``rng`` as in :class:`Linear`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device: Any = None,
                 dtype: Any = None, *, rng: np.random.Generator | int | None = None,
                 backend: str = "numba") -> None:
        super().__init__()
        check_device(device, "Conv2d")
        self.in_channels = check_positive_int(in_channels, "in_channels", "Conv2d")
        self.out_channels = check_positive_int(out_channels, "out_channels", "Conv2d")
        self.kernel_size = _pair(kernel_size, "kernel_size", "Conv2d")
        self.stride = _pair(stride, "stride", "Conv2d")
        if _pair(dilation, "dilation", "Conv2d") != (1, 1):
            raise ValueError(f"Conv2d: only dilation=1 is implemented, got dilation={dilation!r}")
        if isinstance(groups, bool) or groups != 1:
            raise ValueError(f"Conv2d: only groups=1 is implemented, got groups={groups!r}")
        if padding_mode != "zeros":
            raise ValueError(f"Conv2d: only padding_mode='zeros' is implemented, got {padding_mode!r}")
        if padding == "valid":
            padding = 0
        elif padding == "same":
            if self.stride != (1, 1) or any(k % 2 == 0 for k in self.kernel_size):
                raise ValueError(f"Conv2d: padding='same' is implemented for stride 1 and odd kernel sizes, got "
                                 f"stride={self.stride}, kernel_size={self.kernel_size}")
            padding = tuple(k // 2 for k in self.kernel_size)
        self.padding = _pair(padding, "padding", "Conv2d", minimum=0)
        if backend not in BACKENDS:
            raise ValueError(f"Conv2d: backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.dtype = resolve_dtype(dtype, "Conv2d")
        gen = init.get_rng(rng)
        w = np.empty((self.out_channels, self.in_channels) + self.kernel_size, dtype=self.dtype)
        self.params["weight"] = init.kaiming_uniform_(w, a=math.sqrt(5), rng=gen)
        if bias:
            bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
            self.params["bias"] = init.uniform_(np.empty(self.out_channels, dtype=self.dtype), -bound, bound, gen)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        n, _, h, w = input_shape
        return (n, self.out_channels,
                conv_output_size(h, self.kernel_size[0], self.stride[0], self.padding[0]),
                conv_output_size(w, self.kernel_size[1], self.stride[1], self.padding[1]))

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _check_image_input(self, x, self.in_channels)
        out_shape = self.output_shape(x.shape)
        if min(out_shape[2:]) < 1:
            raise ValueError(f"{self!r}: input of shape {x.shape} is smaller than the kernel {self.kernel_size} "
                             f"(with padding {self.padding}); the output would be empty")
        out, self._cache = conv2d_forward(x, self.params["weight"], self.params.get("bias"), self.stride,
                                          self.padding, self.backend)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dweight, dbias = conv2d_backward(dout, self._require_cache())
        self.grads["weight"] = dweight.astype(self.dtype, copy=False)
        if dbias is not None:
            self.grads["bias"] = dbias.astype(self.dtype, copy=False)
        return dx

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if "bias" not in self.params:
            s += ", bias=False"
        return s


# -- pooling --------------------------------------------------------------------------------------
def _check_pool(x, kernel, stride, padding, where: str):
    """The pooling functional forms' arguments, checked like the classes'."""
    x = as_float_array(x, "x", where)
    if x.ndim != 4:
        raise ValueError(f"{where}: expected x of shape (N, C, H, W), got a {x.ndim}-D array of shape {x.shape}")
    kernel, stride = _pair(kernel, "kernel", where), _pair(stride, "stride", where)
    padding = _pair(padding, "padding", where, minimum=0)
    if min(conv_output_size(x.shape[2], kernel[0], stride[0], padding[0]),
           conv_output_size(x.shape[3], kernel[1], stride[1], padding[1])) < 1:
        raise ValueError(f"{where}: input of shape {x.shape} is smaller than the window {kernel}")
    return x, kernel, stride, padding


def _windows(x64: np.ndarray, kernel, stride, padding, fill: float) -> np.ndarray:
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = np.pad(x64, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]   # (N, C, OH, OW, kh, kw)


def _scatter(per_offset, x_shape, kernel, stride, padding) -> np.ndarray:
    """Sum ``per_offset(i, j)`` (shape (N, C, OH, OW)) onto the padded input at kernel offset (i, j)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x_shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += per_offset(i, j)
    return dxp[:, :, ph:ph + h, pw:pw + w]


@numba.njit(cache=True)
def _max_pool_fwd_kernel(x, kh, kw, sh, sw, ph, pw, oh, ow):  # pragma: no cover - compiled
    n, c, h, w = x.shape
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    arg = np.empty((n, c, oh, ow), dtype=np.int32)        # flat index y * w + z of the maximum
    for b in range(n):
        for ch in range(c):
            for a in range(oh):
                for e in range(ow):
                    best = -np.inf
                    where = -1
                    for i in range(kh):
                        y = a * sh + i - ph
                        if y < 0 or y >= h:
                            continue
                        for j in range(kw):
                            z = e * sw + j - pw
                            if z < 0 or z >= w:
                                continue
                            v = x[b, ch, y, z]
                            # the first maximum on ties; the first NaN wins and stays (as np.argmax and
                            # PyTorch): once best is NaN, both comparisons are False. A select, not a
                            # branch: on random data a branch is mispredicted half the time.
                            gt = (where < 0) | (v > best) | ((v != v) & (best == best))
                            best = v if gt else best
                            where = (y * w + z) if gt else where
                    out[b, ch, a, e] = best
                    arg[b, ch, a, e] = where
    return out, arg


@numba.njit(cache=True)
def _max_pool_2x2_kernel(x, oh, ow):  # pragma: no cover - compiled
    """The common case, kernel 2, stride 2, no padding, written out: with fixed trip counts LLVM
    vectorizes across the output row (measured about 9x faster than the general loop)."""
    n, c, h, w = x.shape
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    arg = np.empty((n, c, oh, ow), dtype=np.int32)
    for b in range(n):
        for ch in range(c):
            for a in range(oh):
                r0 = x[b, ch, 2 * a]
                r1 = x[b, ch, 2 * a + 1]
                base = 2 * a * w
                for e in range(ow):
                    best = r0[2 * e]
                    where = 0
                    v = r0[2 * e + 1]
                    gt = (v > best) | ((v != v) & (best == best))
                    best = v if gt else best
                    where = 1 if gt else where
                    v = r1[2 * e]
                    gt = (v > best) | ((v != v) & (best == best))
                    best = v if gt else best
                    where = w if gt else where
                    v = r1[2 * e + 1]
                    gt = (v > best) | ((v != v) & (best == best))
                    best = v if gt else best
                    where = w + 1 if gt else where
                    out[b, ch, a, e] = best
                    arg[b, ch, a, e] = base + 2 * e + where
    return out, arg


@numba.njit(cache=True)
def _max_pool_bwd_kernel(g, arg, h, w):  # pragma: no cover - compiled
    n, c, oh, ow = g.shape
    dx = np.zeros((n, c, h * w), dtype=np.float64)       # overlapping windows add up: in float64
    for b in range(n):
        for ch in range(c):
            for a in range(oh):
                for e in range(ow):
                    dx[b, ch, arg[b, ch, a, e]] += g[b, ch, a, e]
    return dx.reshape(n, c, h, w)


def max_pool2d_forward_numba(x, kernel, stride, padding):
    """Numba version of :func:`max_pool2d_forward`: one pass, the maximum and its position, in the
    input's dtype (a maximum is exact in any dtype)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    h, w = x.shape[2:]
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    xc = np.ascontiguousarray(x)
    if (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0):
        out, arg = _max_pool_2x2_kernel(xc, oh, ow)
    else:
        out, arg = _max_pool_fwd_kernel(xc, kh, kw, sh, sw, ph, pw, oh, ow)
    return out, {"arg_flat": arg, "x_shape": x.shape, "dtype": x.dtype, "out_shape": out.shape}


def max_pool2d_backward_numba(dout, cache):
    """Numba version of :func:`max_pool2d_backward`: each window's gradient to its maximum."""
    n, c, h, w = cache["x_shape"]
    g = np.ascontiguousarray(check_cache(dout, cache, "max_pool2d_backward"), dtype=cache["dtype"])
    return _max_pool_bwd_kernel(g, cache["arg_flat"], h, w).astype(cache["dtype"], copy=False)


def max_pool2d_forward(x, kernel, stride, padding):
    """Max over each window (padding counts as :math:`-\\infty`). Returns ``(out, cache)``."""
    x, kernel, stride, padding = _check_pool(x, kernel, stride, padding, "max_pool2d_forward")
    x64 = np.asarray(x, dtype=np.float64)
    win = _windows(x64, kernel, stride, padding, -np.inf)
    flat = win.reshape(win.shape[:4] + (kernel[0] * kernel[1],))    # explicit: an empty batch reshapes too
    arg = flat.argmax(axis=-1)                       # first maximum on ties, like PyTorch
    out = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    cache = {"arg": arg, "x_shape": x.shape, "kernel": kernel, "stride": stride, "padding": padding,
             "dtype": x.dtype, "out_shape": out.shape}
    return out.astype(x.dtype), cache


def max_pool2d_backward(dout, cache):
    """Each window's gradient goes to the position of its maximum."""
    g = np.asarray(check_cache(dout, cache, "max_pool2d_backward"), dtype=np.float64)
    arg, kw = cache["arg"], cache["kernel"][1]
    dx = _scatter(lambda i, j: g * (arg == i * kw + j), cache["x_shape"], cache["kernel"], cache["stride"],
                  cache["padding"])
    return dx.astype(cache["dtype"], copy=False)


def avg_pool2d_forward(x, kernel, stride, padding):
    """Mean over each window, zero padding included in the count. Returns ``(out, cache)``."""
    x, kernel, stride, padding = _check_pool(x, kernel, stride, padding, "avg_pool2d_forward")
    x64 = np.asarray(x, dtype=np.float64)
    out = _windows(x64, kernel, stride, padding, 0.0).mean(axis=(-2, -1))
    cache = {"x_shape": x.shape, "kernel": kernel, "stride": stride, "padding": padding, "dtype": x.dtype,
             "out_shape": out.shape}
    return out.astype(x.dtype), cache


def avg_pool2d_backward(dout, cache):
    """Each window's gradient is spread evenly, :math:`1/(k_h k_w)` to every position."""
    g = np.asarray(check_cache(dout, cache, "avg_pool2d_backward"), dtype=np.float64)
    g = g / (cache["kernel"][0] * cache["kernel"][1])
    dx = _scatter(lambda i, j: g, cache["x_shape"], cache["kernel"], cache["stride"], cache["padding"])
    return dx.astype(cache["dtype"], copy=False)


class _Pool2d(Module):
    _forward = staticmethod(max_pool2d_forward)
    _backward = staticmethod(max_pool2d_backward)
    _numba: tuple | None = None

    def __init__(self, kernel_size, stride=None, padding=0, **pytorch_only) -> None:
        super().__init__()
        name = type(self).__name__
        self.backend = "numpy"
        # PyTorch's further arguments are accepted at their defaults; other values are not implemented
        for arg, value in pytorch_only.items():
            default = self._pytorch_defaults[arg]
            if value != default or isinstance(value, bool) != isinstance(default, bool):
                raise ValueError(f"{name}: only {arg}={default!r} is implemented, got {arg}={value!r}")
        self.kernel_size = _pair(kernel_size, "kernel_size", name)
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride", name)
        self.padding = _pair(padding, "padding", name, minimum=0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{name}: padding {self.padding} must be at most half the kernel size "
                             f"{self.kernel_size} (as in PyTorch)")

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _check_image_input(self, x)
        oh = conv_output_size(x.shape[2], self.kernel_size[0], self.stride[0], self.padding[0])
        ow = conv_output_size(x.shape[3], self.kernel_size[1], self.stride[1], self.padding[1])
        if oh < 1 or ow < 1:
            raise ValueError(f"{self!r}: input of shape {x.shape} is smaller than the window {self.kernel_size}")
        fwd = self._numba[0] if self.backend == "numba" and self._numba else self._forward
        out, self._cache = fwd(x, self.kernel_size, self.stride, self.padding)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._require_cache()
        bwd = self._numba[1] if "arg_flat" in cache else self._backward
        return bwd(dout, cache)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Max pooling, as ``torch.nn.MaxPool2d(kernel_size, stride=None, padding=0, dilation=1,
    return_indices=False, ceil_mode=False)`` (``stride`` defaults to ``kernel_size``). The gradient
    of a window goes to its (first) maximum. ``backend="numba"`` (keyword-only, default) runs one
    compiled pass that finds each maximum and its position; ``"numpy"`` the reference (windows,
    ``argmax``); both give the same numbers.

    Deliberate difference: ``dilation``, ``return_indices`` and ``ceil_mode`` are accepted at their
    defaults only (other values raise ``ValueError``)."""

    _forward = staticmethod(max_pool2d_forward)
    _backward = staticmethod(max_pool2d_backward)
    _numba = (max_pool2d_forward_numba, max_pool2d_backward_numba)
    _pytorch_defaults = {"dilation": 1, "return_indices": False, "ceil_mode": False}

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False, *, backend: str = "numba") -> None:
        super().__init__(kernel_size, stride, padding, dilation=dilation, return_indices=return_indices,
                         ceil_mode=ceil_mode)
        if backend not in BACKENDS:
            raise ValueError(f"MaxPool2d: backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend


class AvgPool2d(_Pool2d):
    """Average pooling, as ``torch.nn.AvgPool2d(kernel_size, stride=None, padding=0, ceil_mode=False,
    count_include_pad=True, divisor_override=None)``.

    Deliberate difference: ``ceil_mode``, ``count_include_pad`` and ``divisor_override`` are accepted
    at their defaults only (other values raise ``ValueError``)."""

    _forward = staticmethod(avg_pool2d_forward)
    _backward = staticmethod(avg_pool2d_backward)
    _pytorch_defaults = {"ceil_mode": False, "count_include_pad": True, "divisor_override": None}

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                         divisor_override=divisor_override)


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402


def _distinct(case: Case, rng: np.random.Generator, dtype: Any) -> tuple[np.ndarray, ...]:
    """Inputs whose values are all at least 0.05 apart (a shuffled grid), so no pooling window has a
    tie or a near-tie that the check's perturbations (at most 2e-3) could flip."""
    out = []
    for s in case.input_shapes:
        size = int(np.prod(s))
        grid = -3.0 + 0.05 * rng.permutation(size) + rng.uniform(0, 0.01, size)
        out.append(grid.reshape(s))
    return tuple(out)


register(Spec(
    name="Conv2d", cls=Conv2d, pytorch="torch.nn.Conv2d", backends=BACKENDS,
    differences="Parameters are float64 by default (dtype=None); PyTorch uses float32. device: None or 'cpu'. "
                "dilation, groups and padding_mode are accepted at their defaults only (zero padding, no "
                "dilation or groups); padding='same' for stride 1 and odd kernels.",
    cases=(
        Case("k3-s1-p1", {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1}, ((2, 2, 4, 5),)),
        Case("k3-s2-p0", {"in_channels": 2, "out_channels": 2, "kernel_size": 3, "stride": 2}, ((2, 2, 7, 6),)),
        Case("k(2,3)-s(2,1)-p(1,0)-no-bias", {"in_channels": 1, "out_channels": 2, "kernel_size": (2, 3),
                                              "stride": (2, 1), "padding": (1, 0), "bias": False}, ((2, 1, 5, 5),)),
    ),
))
register(Spec(
    name="MaxPool2d", cls=MaxPool2d, pytorch="torch.nn.MaxPool2d", make_inputs=_distinct, backends=BACKENDS,
    differences="dilation, return_indices and ceil_mode are accepted at their defaults only.",
    cases=(
        Case("k2", {"kernel_size": 2}, ((2, 2, 4, 5),)),
        Case("k3-s2-p1", {"kernel_size": 3, "stride": 2, "padding": 1}, ((1, 2, 5, 6),)),
    ),
))
register(Spec(
    name="AvgPool2d", cls=AvgPool2d, pytorch="torch.nn.AvgPool2d",
    differences="ceil_mode, count_include_pad and divisor_override are accepted at their defaults only.",
    cases=(
        Case("k2", {"kernel_size": 2}, ((2, 2, 4, 5),)),
        Case("k3-s2-p1", {"kernel_size": 3, "stride": 2, "padding": 1}, ((1, 2, 5, 6),)),
    ),
))
