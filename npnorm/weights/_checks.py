"""Validation shared by the weight-side normalizers (weight norm, spectral norm, weight standardization)."""

from __future__ import annotations

import numbers

import numpy as np

from .._checks import as_float_array, check_dout

__all__ = ["as_weight", "check_dim", "as_rng", "as_weight_gradient"]


def as_weight(weight: object, where: str, min_ndim: int = 1, name: str = "weight", what: str = "") -> np.ndarray:
    """A finite float32/float64 array with at least ``min_ndim`` dimensions (not copied)."""
    w = as_float_array(weight, name, where)
    if w.ndim < min_ndim:
        need = what or f"an array with at least {min_ndim} dimensions"
        raise ValueError(f"{where}: {name} must be {need}, got a {w.ndim}-D array of shape {w.shape}")
    if w.size == 0:
        raise ValueError(f"{where}: {name} is empty (shape {w.shape})")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{where}: {name} contains NaN or Inf")
    return w


def check_dim(dim: object, ndim: int, where: str, allow_none: bool = False) -> int | None:
    """An axis of an ``ndim``-D weight, in ``[-ndim, ndim)``; returned as a non-negative int."""
    if dim is None and allow_none:
        return None
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        allowed = "an int or None" if allow_none else "an int"
        raise TypeError(f"{where}: dim must be {allowed}, got {dim!r}")
    if not -ndim <= dim < ndim:
        raise ValueError(f"{where}: dim={dim} is out of range for a {ndim}-D weight "
                         f"(expected {-ndim} <= dim < {ndim})")
    return int(dim) % ndim


def as_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """``np.random.default_rng(seed)``, passing a Generator through unchanged."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an int, a numpy Generator or None, got {seed!r}")
    return np.random.default_rng(seed)


def as_weight_gradient(dout: object, shape: tuple[int, ...], where: str) -> np.ndarray:
    """The upstream gradient of a normalized weight: a float array of the weight's ``shape`` (the
    shape of the forward output; :func:`npnorm._checks.check_dout`)."""
    return check_dout(dout, shape, where)
