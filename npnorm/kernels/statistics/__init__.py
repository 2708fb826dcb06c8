"""Numba twins of :mod:`npnorm.statistics`: one module per layer, same function signatures."""

from . import batchnorm, frn, ghostbatchnorm, grn, groupnorm, instancenorm, layernorm

__all__ = ["batchnorm", "frn", "ghostbatchnorm", "grn", "groupnorm", "instancenorm", "layernorm"]
