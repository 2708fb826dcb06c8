"""Numba twins of :mod:`npnorm.adaptive`: one module per layer, same function signatures."""

from . import adain

__all__ = ["adain"]
