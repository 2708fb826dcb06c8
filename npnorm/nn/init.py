r"""Weight initializers with PyTorch's names, gain conventions and fan computation.

For a weight of shape ``(out, in, *kernel)`` the fans are

.. math:: \text{fan\_in} = \text{in}\cdot\prod\text{kernel}, \qquad
          \text{fan\_out} = \text{out}\cdot\prod\text{kernel}.

* Kaiming (He et al., 2015) keeps the variance of the activations (``mode="fan_in"``) or of the
  gradients (``mode="fan_out"``) constant through ReLU-like layers:
  :math:`\text{std} = \text{gain}/\sqrt{\text{fan}}`; the uniform version draws from
  :math:`U(-b, b)` with :math:`b = \text{gain}\sqrt{3/\text{fan}}`.
* Xavier/Glorot (Glorot & Bengio, 2010) averages the two fans:
  :math:`\text{std} = \text{gain}\sqrt{2/(\text{fan\_in} + \text{fan\_out})}`,
  :math:`b = \text{gain}\sqrt{6/(\text{fan\_in} + \text{fan\_out})}`.

The gains are those of ``torch.nn.init.calculate_gain``: 1 for linear/conv/sigmoid, 5/3 for tanh,
:math:`\sqrt 2` for ReLU, :math:`\sqrt{2/(1+a^2)}` for leaky ReLU with negative slope :math:`a`,
3/4 for SELU.

Random numbers: every function takes ``rng`` (a ``numpy.random.Generator`` or an int seed). Without
it, the library-wide generator set by :func:`manual_seed` is used (the analogue of
``torch.manual_seed``), so ``manual_seed(0)`` before building a model makes it reproducible.
Every function fills its array **in place** and returns it, like PyTorch's trailing-underscore names.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "manual_seed",
    "get_rng",
    "calculate_gain",
    "fan_in_and_fan_out",
    "uniform_",
    "normal_",
    "zeros_",
    "ones_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "xavier_uniform_",
    "xavier_normal_",
]

_GLOBAL_RNG = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Reset the library-wide generator used when no ``rng`` is given; returns it."""
    global _GLOBAL_RNG
    _GLOBAL_RNG = np.random.default_rng(seed)
    return _GLOBAL_RNG


def get_rng(rng: np.random.Generator | int | None = None) -> np.random.Generator:
    """``rng`` itself, a new generator seeded with ``rng`` (an int), or the library-wide one (None)."""
    if rng is None:
        return _GLOBAL_RNG
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, got {rng!r}")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (``torch.nn.init.calculate_gain``)."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, numbers.Real):
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a number")
        return math.sqrt(2.0 / (1.0 + float(slope) ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4.0
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def fan_in_and_fan_out(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of shape ``(out, in, *kernel)`` (at least 2-D)."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a weight with at least 2 dimensions, got shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fan(shape: tuple[int, ...], mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = fan_in_and_fan_out(shape)
    return fan_in if mode == "fan_in" else fan_out


def _fill(array: np.ndarray, values: np.ndarray) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"initializers fill a NumPy array in place, got {type(array).__name__}")
    array[...] = values.astype(array.dtype, copy=False)
    return array


def uniform_(array: np.ndarray, a: float = 0.0, b: float = 1.0, rng=None) -> np.ndarray:
    """Fill with :math:`U(a, b)`."""
    return _fill(array, get_rng(rng).uniform(a, b, array.shape))


def normal_(array: np.ndarray, mean: float = 0.0, std: float = 1.0, rng=None) -> np.ndarray:
    """Fill with :math:`N(\\text{mean}, \\text{std}^2)`."""
    return _fill(array, get_rng(rng).normal(mean, std, array.shape))


def zeros_(array: np.ndarray) -> np.ndarray:
    array[...] = 0
    return array


def ones_(array: np.ndarray) -> np.ndarray:
    array[...] = 1
    return array


def kaiming_uniform_(array: np.ndarray, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", rng=None) -> np.ndarray:
    """He-uniform: :math:`U(-b, b)`, :math:`b = \\text{gain}\\sqrt{3/\\text{fan}}`, gain from
    ``nonlinearity`` (with negative slope ``a`` for leaky ReLU). PyTorch's ``Linear`` and ``Conv2d``
    use ``a = sqrt(5)``, which gives :math:`b = 1/\\sqrt{\\text{fan\\_in}}`."""
    gain = calculate_gain(nonlinearity, a)
    bound = gain * math.sqrt(3.0 / _fan(array.shape, mode))
    return uniform_(array, -bound, bound, rng)


def kaiming_normal_(array: np.ndarray, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", rng=None) -> np.ndarray:
    """He-normal: :math:`N(0, \\text{std}^2)`, :math:`\\text{std} = \\text{gain}/\\sqrt{\\text{fan}}`."""
    gain = calculate_gain(nonlinearity, a)
    return normal_(array, 0.0, gain / math.sqrt(_fan(array.shape, mode)), rng)


def xavier_uniform_(array: np.ndarray, gain: float = 1.0, rng=None) -> np.ndarray:
    """Glorot-uniform: :math:`U(-b, b)`, :math:`b = \\text{gain}\\sqrt{6/(\\text{fan\\_in}+\\text{fan\\_out})}`."""
    fan_in, fan_out = fan_in_and_fan_out(array.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(array, -bound, bound, rng)


def xavier_normal_(array: np.ndarray, gain: float = 1.0, rng=None) -> np.ndarray:
    """Glorot-normal: :math:`\\text{std} = \\text{gain}\\sqrt{2/(\\text{fan\\_in}+\\text{fan\\_out})}`."""
    fan_in, fan_out = fan_in_and_fan_out(array.shape)
    return normal_(array, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng)
