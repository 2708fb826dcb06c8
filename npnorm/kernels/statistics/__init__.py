"""Numba twins of :mod:`npnorm.statistics`: one module per layer, same function signatures."""

from . import batchnorm, frn, groupnorm, instancenorm, layernorm

__all__ = ["batchnorm", "frn", "groupnorm", "instancenorm", "layernorm"]
