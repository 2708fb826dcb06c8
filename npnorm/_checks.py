"""Argument validation shared by every layer.

Every check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind, wrong value)
with a message that names the argument, what was expected and what was received, so that a learner
can fix the call without reading the library's source.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

__all__ = [
    "as_float_array",
    "check_eps",
    "check_momentum",
    "check_positive_int",
    "check_ndim",
    "check_channels",
    "normalize_shape",
    "check_dout",
]


def as_float_array(x: object, name: str = "x", where: str = "") -> np.ndarray:
    """Return ``x`` as a floating-point NumPy array, or raise a clear ``TypeError``.

    Integer, boolean, complex and object arrays are rejected rather than silently cast: normalizing
    integers almost always means the caller forgot to convert images or labels to float.
    """
    prefix = f"{where}: " if where else ""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"{prefix}{name} must be a floating-point array (float32 or float64), "
            f"got dtype {arr.dtype}; convert it first, e.g. {name}.astype(np.float32)"
        )
    return arr


def check_eps(eps: object, name: str = "eps", where: str = "") -> float:
    """``eps`` must be a finite real number > 0."""
    prefix = f"{where}: " if where else ""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{prefix}{name} must be a positive float, got {eps!r}")
    value = float(eps)
    if not np.isfinite(value) or value <= 0.0:
        raise ValueError(f"{prefix}{name} must be > 0 (it keeps the division finite), got {eps!r}")
    return value


def check_momentum(momentum: object, where: str = "") -> float | None:
    """``momentum`` must be ``None`` (cumulative average) or a number in [0, 1]."""
    prefix = f"{where}: " if where else ""
    if momentum is None:
        return None
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"{prefix}momentum must be a float in [0, 1] or None, got {momentum!r}")
    value = float(momentum)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{prefix}momentum must be in [0, 1] or None, got {momentum!r}")
    return value


def check_positive_int(value: object, name: str, where: str = "") -> int:
    """``value`` must be an integer >= 1 (bools are not integers here)."""
    prefix = f"{where}: " if where else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{prefix}{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{prefix}{name} must be >= 1, got {value!r}")
    return int(value)


def check_ndim(x: np.ndarray, allowed: Sequence[int], layout: str, name: str = "x", where: str = "") -> None:
    """Raise ``ValueError`` unless ``x.ndim`` is one of ``allowed``.

    ``layout`` describes the expected shapes in words, e.g. ``"(N, C, H, W)"``.
    """
    prefix = f"{where}: " if where else ""
    allowed = tuple(allowed)
    if x.ndim not in allowed:
        dims = " or ".join(map(str, allowed)) if len(allowed) <= 2 else f"{allowed[0]}-{allowed[-1]}"
        raise ValueError(f"{prefix}expected {name} of shape {layout} ({dims}-D), got a {x.ndim}-D array of shape {x.shape}")


def check_channels(x: np.ndarray, expected: int, arg: str, axis: int = 1, name: str = "x", where: str = "") -> None:
    """Raise ``ValueError`` unless ``x.shape[axis] == expected``; ``arg`` names the constructor argument."""
    prefix = f"{where}: " if where else ""
    if x.shape[axis] != expected:
        raise ValueError(
            f"{prefix}{name} has {x.shape[axis]} channels (shape {x.shape}, axis {axis}) "
            f"but the layer was built with {arg}={expected}"
        )


def normalize_shape(shape: object, name: str = "normalized_shape", where: str = "") -> tuple[int, ...]:
    """Turn an int or a sequence of ints into a tuple of positive ints, as PyTorch does."""
    prefix = f"{where}: " if where else ""
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{prefix}{name} must be an int or a tuple of ints, got {shape!r}") from None
    if len(dims) == 0:
        raise ValueError(f"{prefix}{name} must have at least one dimension, got {shape!r}")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1:
            raise ValueError(f"{prefix}{name} must contain positive ints, got {shape!r}")
    return tuple(int(d) for d in dims)


def check_dout(dout: object, shape: tuple[int, ...], where: str = "", name: str = "dout") -> np.ndarray:
    """The upstream gradient of a backward pass: a real floating array of exactly ``shape`` (the shape
    of the forward pass's output), or a clear ``ValueError`` / ``TypeError`` naming the layer, the
    expected shape and the given one. Never broadcast or reshaped silently."""
    arr = as_float_array(dout, name, where)
    if arr.shape != tuple(shape):
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}{name} must have the shape of the forward output {tuple(shape)}, "
                         f"got {arr.shape}")
    return arr
