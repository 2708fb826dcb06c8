r"""Dense layers, activations, dropout and the ``Sequential`` container.

Every layer follows the npnorm contract (:mod:`npnorm.base`): ``y = layer(x)`` computes in float64
and returns the input's dtype; ``dx = layer.backward(dy)`` returns the input gradient and fills
``layer.grads``. Each layer is a thin class around a pure ``*_forward`` / ``*_backward`` pair.

Equations (:math:`g = \partial L/\partial y`):

* Linear: :math:`y = x W^\top + b`; :math:`\partial L/\partial x = g W`,
  :math:`\partial L/\partial W = g^\top x`, :math:`\partial L/\partial b = \sum_n g`.
* ReLU: :math:`y = \max(x, 0)`; :math:`dx = g\,[x > 0]` (the subgradient 0 at :math:`x = 0`, as PyTorch).
* LeakyReLU: :math:`y = x` for :math:`x > 0`, :math:`a x` otherwise; :math:`dx = g\,([x > 0] + a[x \le 0])`.
* Tanh: :math:`dx = g\,(1 - y^2)`.
* SiLU: :math:`y = x\,\sigma(x)`; :math:`dx = g\,\sigma(x)\,(1 + x(1 - \sigma(x)))`.
* GELU (exact): :math:`y = x\,\Phi(x) = \tfrac{x}{2}(1 + \mathrm{erf}(x/\sqrt2))`;
  :math:`dx = g\,(\Phi(x) + x\,\varphi(x))`, :math:`\varphi(x) = e^{-x^2/2}/\sqrt{2\pi}`.
* Dropout (inverted): :math:`y = x \odot m / (1-p)`, :math:`m_i \sim \text{Bernoulli}(1-p)`;
  :math:`dx = g \odot m / (1-p)`; identity in eval mode.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numba
import numpy as np

from .._checks import as_float_array, check_cache, check_device, check_param, check_positive_int, resolve_dtype
from .._numerics import sigmoid
from ..base import Module
from . import init

__all__ = [
    "linear_forward", "linear_backward", "Linear", "Flatten", "Identity",
    "ReLU", "LeakyReLU", "Tanh", "SiLU", "GELU", "erf", "Dropout", "Sequential",
]


# -- Linear ---------------------------------------------------------------------------------------
def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """:math:`y = x W^\\top + b` for ``x`` of shape ``(*, in)``, ``W`` of shape ``(out, in)``, computed in
    float32 when ``x`` and the parameters are float32, else float64 (:func:`npnorm.nn.conv.compute_dtype`).

    The cache holds private copies of ``x`` and ``W`` (never the caller's arrays)."""
    where = "linear_forward"
    x = as_float_array(x, "x", where)
    weight = as_float_array(weight, "weight", where)
    if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{where}: expected x of shape (*, in) and weight of shape (out, in) with the same "
                         f"in, got x {x.shape} and weight {weight.shape}")
    ct = np.result_type(np.float32, x.dtype, weight.dtype, *(() if bias is None else (np.asarray(bias).dtype,)))
    bias = check_param(bias, (weight.shape[0],), "bias", where)      # a private float64 copy
    xc = np.array(x, dtype=ct)
    wc = np.array(weight, dtype=ct)
    out = xc @ wc.T
    if bias is not None:
        out += bias
    return out.astype(x.dtype, copy=False), {"x": xc, "weight": wc, "has_bias": bias is not None,
                                             "dtype": x.dtype, "out_shape": out.shape}


def linear_backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Returns ``(dx, dweight, dbias)``: :math:`gW`, :math:`g^\\top x`, :math:`\\sum g` (over all leading axes)."""
    x, w = cache["x"], cache["weight"]
    g = np.asarray(check_cache(dout, cache, "linear_backward"), dtype=x.dtype)
    g2 = g.reshape(-1, g.shape[-1])
    dweight = g2.T @ x.reshape(-1, x.shape[-1])
    dbias = g2.sum(axis=0) if cache["has_bias"] else None
    dx = g @ w
    return dx.astype(cache["dtype"], copy=False), dweight, dbias


class Linear(Module):
    """Fully connected layer, as ``torch.nn.Linear(in_features, out_features, bias=True)``.

    ``weight`` has shape ``(out_features, in_features)``, ``bias`` ``(out_features,)``; both are
    initialized from :math:`U(-1/\\sqrt{\\text{in}}, 1/\\sqrt{\\text{in}})` (PyTorch's default, which is
    ``kaiming_uniform_(a=sqrt(5))``). Input ``(*, in_features)``, output ``(*, out_features)``.

    The constructor has PyTorch 2.13's full signature ``(in_features, out_features, bias=True,
    device=None, dtype=None)``, plus npnorm's keyword-only ``rng``. An empty batch gives an empty
    output and zero parameter gradients.

    Deliberate differences: float64 parameters by default (``dtype=None``); ``device`` only ``None``
    or ``"cpu"``; ``rng`` (Generator or seed) instead of PyTorch's global generator (without it,
    :func:`npnorm.nn.init.manual_seed` sets the library-wide one).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = None, *, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        check_device(device, "Linear")
        self.in_features = check_positive_int(in_features, "in_features", "Linear")
        self.out_features = check_positive_int(out_features, "out_features", "Linear")
        self.dtype = resolve_dtype(dtype, "Linear")
        gen = init.get_rng(rng)
        self.params["weight"] = np.empty((self.out_features, self.in_features), dtype=self.dtype)
        init.kaiming_uniform_(self.params["weight"], a=math.sqrt(5), rng=gen)
        if bias:
            bound = 1.0 / math.sqrt(self.in_features)
            self.params["bias"] = init.uniform_(np.empty(self.out_features, dtype=self.dtype), -bound, bound, gen)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "Linear")
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"{self!r}: expected input of shape (*, in_features={self.in_features}) - last dimension "
                f"{self.in_features} - got shape {x.shape}"
            )
        out, self._cache = linear_forward(x, self.params["weight"], self.params.get("bias"))
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dweight, dbias = linear_backward(dout, self._require_cache())
        self.grads["weight"] = dweight.astype(self.dtype, copy=False)
        if dbias is not None:
            self.grads["bias"] = dbias.astype(self.dtype, copy=False)
        return dx

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={'bias' in self.params}"


# -- shape layers ---------------------------------------------------------------------------------
class Flatten(Module):
    """Flatten dims ``start_dim..end_dim`` into one, as ``torch.nn.Flatten(start_dim=1, end_dim=-1)``."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        nd = x.ndim
        s = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        e = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not 0 <= s <= e < nd:
            raise ValueError(f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}): input of shape "
                             f"{x.shape} has no dims {self.start_dim}..{self.end_dim}")
        self._cache = x.shape
        merged = int(np.prod(x.shape[s:e + 1], dtype=np.int64))   # explicit: an empty batch reshapes too
        return x.reshape(x.shape[:s] + (merged,) + x.shape[e + 1:])

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return np.asarray(dout).reshape(self._require_cache())

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """:math:`y = x` (a placeholder, e.g. "no normalization" in a model builder). As
    ``torch.nn.Identity(*args, **kwargs)``, any arguments are accepted and ignored."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._cache = True
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self._require_cache()
        return dout


# -- activations ----------------------------------------------------------------------------------
class _Elementwise(Module):
    """An elementwise activation: subclasses give ``_f(x64) -> (y64, saved)`` and ``_df(saved) -> dy/dx``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", type(self).__name__)
        # a private float64 copy: what _f saves must not follow later edits of the caller's x; the
        # returned y is a copy too (Tanh saves y itself, and the caller may edit the output)
        y, saved = self._f(np.array(x, dtype=np.float64))
        self._cache = (saved, x.dtype)
        return y.astype(x.dtype)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        saved, dtype = self._require_cache()
        return (np.asarray(dout, dtype=np.float64) * self._df(saved)).astype(dtype, copy=False)


class _InplaceArg(_Elementwise):
    """An activation whose PyTorch twin takes ``inplace=False``: accepted for the signature, but the
    computation is always out of place (deliberate difference: the caller's array is never modified,
    and the values are the same)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = bool(inplace)


class ReLU(_InplaceArg):
    """:math:`\\max(x, 0)`, as ``torch.nn.ReLU(inplace=False)``; derivative 0 at :math:`x = 0`
    (PyTorch's choice). ``inplace=True`` is accepted but computes out of place."""

    def _f(self, x):
        return np.maximum(x, 0.0), x > 0

    def _df(self, positive):
        return positive.astype(np.float64)


class LeakyReLU(_Elementwise):
    """:math:`x` for :math:`x > 0`, :math:`a x` otherwise, as ``torch.nn.LeakyReLU(negative_slope=0.01)``.

    The derivative is 1 for :math:`x > 0` and :math:`a` otherwise (so :math:`a` at :math:`x = 0`, as
    PyTorch). ``negative_slope`` must be a finite number; with :math:`|a| \\le 1` the activation is
    1-Lipschitz. ``inplace=True`` is accepted but computes out of place (the caller's array is never
    modified; the values are the same).
    """

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = bool(inplace)
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real) \
                or not math.isfinite(negative_slope):
            raise ValueError(f"LeakyReLU: negative_slope must be a finite number, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def _f(self, x):
        positive = x > 0
        return np.where(positive, x, self.negative_slope * x), positive

    def _df(self, positive):
        return np.where(positive, 1.0, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Tanh(_Elementwise):
    """:math:`\\tanh x`, as ``torch.nn.Tanh``; derivative :math:`1 - y^2`. Like PyTorch's, the
    constructor accepts and ignores any arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def _f(self, x):
        y = np.tanh(x)
        return y, y

    def _df(self, y):
        return 1.0 - y * y


class SiLU(_InplaceArg):
    """:math:`x\\,\\sigma(x)` (swish), as ``torch.nn.SiLU(inplace=False)``; derivative
    :math:`\\sigma(x)(1 + x(1-\\sigma(x)))`. ``inplace=True`` is accepted but computes out of place."""

    def _f(self, x):
        s = sigmoid(x)
        return x * s, (x, s)

    def _df(self, saved):
        x, s = saved
        return s * (1.0 + x * (1.0 - s))


@numba.vectorize(["float64(float64)"], cache=True)
def erf(x):  # pragma: no cover - compiled
    """The error function, elementwise: Numba's ``math.erf`` (the C library's ``erf``, accurate to
    about one unit in the last place in float64; NumPy itself has no erf)."""
    return math.erf(x)


_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class GELU(_Elementwise):
    """Exact GELU :math:`x\\,\\Phi(x)`, as ``torch.nn.GELU()`` (``approximate='none'``), or the tanh
    approximation :math:`\\tfrac{x}{2}(1 + \\tanh(\\sqrt{2/\\pi}(x + 0.044715x^3)))` with
    ``approximate='tanh'``.

    The exact form needs erf, which NumPy lacks: :func:`erf` is the C library's ``erf`` compiled by
    Numba (accurate to ~1 ulp, so the forward pass and the analytic derivative
    :math:`\\Phi(x) + x\\varphi(x)` agree to float64 precision in the gradient check).
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def _f(self, x):
        if self.approximate == "tanh":
            k = math.sqrt(2.0 / math.pi)
            t = np.tanh(k * (x + 0.044715 * x**3))
            return 0.5 * x * (1.0 + t), (x, t)
        cdf = 0.5 * (1.0 + erf(x * _INV_SQRT2))
        return x * cdf, (x, cdf)

    def _df(self, saved):
        x, c = saved
        if self.approximate == "tanh":
            k = math.sqrt(2.0 / math.pi)
            return 0.5 * (1.0 + c) + 0.5 * x * (1.0 - c * c) * k * (1.0 + 3 * 0.044715 * x * x)
        return c + x * _INV_SQRT_2PI * np.exp(-0.5 * x * x)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


# -- dropout --------------------------------------------------------------------------------------
class Dropout(Module):
    """Inverted dropout, as ``torch.nn.Dropout(p=0.5)``.

    Training mode: every element is zeroed with probability ``p`` and the survivors are scaled by
    :math:`1/(1-p)`, so the expected output equals the input and eval mode is the identity. The mask
    comes from the layer's own generator (``rng``: a Generator or a seed; default: drawn from the
    library-wide generator, see :func:`npnorm.nn.init.manual_seed`), so a run is reproducible and a
    deep copy of the layer draws the same mask as the original (which is what the gradient check
    relies on). ``inplace=True`` is accepted but computes out of place (the caller's array is never
    modified).
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        self.inplace = bool(inplace)   # accepted for PyTorch's signature; always computed out of place
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"Dropout: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        if rng is None:
            rng = int(init.get_rng().integers(2**63))
        self.rng = init.get_rng(rng) if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "Dropout")
        if not self.training or self.p == 0.0:
            self._cache = (None, x.dtype)
            return x
        if self.p == 1.0:
            scaled_mask = np.zeros(x.shape)
        else:
            scaled_mask = (self.rng.random(x.shape) >= self.p) / (1.0 - self.p)
        self._cache = (scaled_mask, x.dtype)
        return (np.asarray(x, dtype=np.float64) * scaled_mask).astype(x.dtype, copy=False)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        scaled_mask, dtype = self._require_cache()
        if scaled_mask is None:
            return np.asarray(dout).astype(dtype, copy=False)
        return (np.asarray(dout, dtype=np.float64) * scaled_mask).astype(dtype, copy=False)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# -- container ------------------------------------------------------------------------------------
class Sequential(Module):
    """Layers applied in order, as ``torch.nn.Sequential(*layers)``.

    ``backward`` runs the layers' backward passes in reverse order. The container has no parameters
    of its own: ``seq.params`` and ``seq.grads`` are *views* of its layers' arrays under qualified
    names (``"0.weight"``, ``"3.bias"``, nested ``"2.1.weight"``), so ``check_layer(seq, x)`` checks
    every parameter of the whole network, and updating ``seq.params["0.weight"]`` in place updates
    the layer's weight.

    When a layer rejects its input, the error is re-raised naming the layer's index and class and the
    shape that arrived there, so a mismatch in a long model is found at once.
    """

    def __init__(self, *args: Module) -> None:
        self.layers: list[Module] = []
        super().__init__()
        for layer in args:
            self.append(layer)

    # params / grads are views of the children's
    @property
    def params(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}

    @params.setter
    def params(self, value: dict) -> None:
        if value:
            raise AttributeError("Sequential has no parameters of its own; set them on its layers")

    @property
    def grads(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()}

    @grads.setter
    def grads(self, value: dict) -> None:
        if value:
            raise AttributeError("Sequential has no gradients of its own; they live on its layers")
        for layer in self.layers:
            layer.grads = {}

    def named_parameters(self, prefix: str = ""):
        for k, v in self.params.items():
            yield prefix + k, v

    def append(self, layer: Module) -> Sequential:
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential: layer {len(self.layers)} must be an npnorm Module, "
                            f"got {type(layer).__name__}")
        self.layers.append(layer)
        return self

    def children(self) -> list[Module]:
        return list(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*self.layers[i])
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for i, layer in enumerate(self.layers):
            try:
                x = layer(x)
            except (ValueError, TypeError) as err:
                shape = getattr(x, "shape", None)
                raise type(err)(
                    f"Sequential layer {i} ({type(layer).__name__}) cannot take its input of shape {shape}: {err}"
                ) from err
        self._cache = True
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self._require_cache()
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

_F64 = "Parameters are float64 by default (dtype=None); PyTorch uses float32. device: None or 'cpu' only."
_INPLACE = "inplace=True is accepted but computed out of place (the caller's array is never modified)."


def _away_from_zero(case: Case, rng: np.random.Generator, dtype: Any) -> tuple[np.ndarray, ...]:
    """Inputs with |x| in [0.1, 3]: the check's perturbations (at most 2e-3) never cross ReLU's kink."""
    return tuple(rng.choice([-1.0, 1.0], s) * rng.uniform(0.1, 3.0, s) for s in case.input_shapes)


def _build_small_mlp(seq: Sequential, rng: np.random.Generator) -> None:
    """Sequential case: Linear - BatchNorm1d - Tanh - Dropout - Linear, with random parameters."""
    from ..statistics.batchnorm import BatchNorm1d
    from ..registry import randomize_layer
    for layer in (Linear(4, 5, rng=rng), BatchNorm1d(5), Tanh(), Dropout(0.25, rng=rng), Linear(5, 3, rng=rng)):
        randomize_layer(layer, rng)
        seq.append(layer)


register(Spec(
    name="Linear", cls=Linear, pytorch="torch.nn.Linear", differences=_F64,
    cases=(
        Case("N-in", {"in_features": 4, "out_features": 3}, ((5, 4),)),
        Case("N-L-in-no-bias", {"in_features": 3, "out_features": 2, "bias": False}, ((2, 4, 3),)),
    ),
))
register(Spec(
    name="Flatten", cls=Flatten, pytorch="torch.nn.Flatten",
    cases=(Case("NCHW", {}, ((2, 3, 2, 2),)), Case("dims-1-2", {"start_dim": 1, "end_dim": 2}, ((2, 3, 2, 2),))),
))
register(Spec(
    name="Identity", cls=Identity, pytorch="torch.nn.Identity",
    cases=(Case("NC", {}, ((3, 4),)),),
))
register(Spec(
    name="ReLU", cls=ReLU, pytorch="torch.nn.ReLU", make_inputs=_away_from_zero, differences=_INPLACE,
    cases=(Case("NCHW", {}, ((2, 3, 2, 2),)),),
))
register(Spec(
    name="LeakyReLU", cls=LeakyReLU, pytorch="torch.nn.LeakyReLU", make_inputs=_away_from_zero,
    cases=(Case("default", {}, ((4, 5),)), Case("slope-0.2-NCHW", {"negative_slope": 0.2}, ((2, 3, 2, 2),))),
))
register(Spec(
    name="Tanh", cls=Tanh, pytorch="torch.nn.Tanh", input_offset=0.3, input_scale=1.5,
    cases=(Case("NC", {}, ((4, 5),)),),
))
register(Spec(
    name="SiLU", cls=SiLU, pytorch="torch.nn.SiLU", input_offset=0.3, input_scale=3.0, differences=_INPLACE,
    cases=(Case("NC", {}, ((4, 5),)),),
))
register(Spec(
    name="GELU", cls=GELU, pytorch="torch.nn.GELU", input_offset=0.3, input_scale=2.0,
    cases=(Case("exact", {}, ((4, 5),)), Case("tanh", {"approximate": "tanh"}, ((4, 5),))),
))
register(Spec(
    name="Dropout", cls=Dropout, pytorch="torch.nn.Dropout",
    differences="The mask comes from the layer's own seeded generator (rng), not a global one. " + _INPLACE,
    cases=(
        Case("p=0.3", {"p": 0.3, "rng": 5}, ((4, 6),)),
        Case("p=0.5-NCHW", {"rng": 6}, ((2, 3, 2, 2),)),
    ),
))
register(Spec(
    name="Sequential", cls=Sequential, pytorch="torch.nn.Sequential",
    setup=_build_small_mlp, input_offset=1.0, input_scale=2.0,
    cases=(Case("Linear-BN-Tanh-Dropout-Linear", {}, ((6, 4),)),),
))
