"""Numba twins of :mod:`npnorm.divergence`: one module per layer, same function signatures."""

from . import patchnorm

__all__ = ["patchnorm"]
