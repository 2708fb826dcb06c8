"""Numba twins of :mod:`npnorm.statistics`: one module per layer, same function signatures."""

from . import batchnorm, groupnorm, instancenorm, layernorm

__all__ = ["batchnorm", "groupnorm", "instancenorm", "layernorm"]
