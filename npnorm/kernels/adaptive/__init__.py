"""Numba twins of :mod:`npnorm.adaptive`: one module per layer, same function signatures."""

from . import adagroupnorm, adain

__all__ = ["adain", "adagroupnorm"]
