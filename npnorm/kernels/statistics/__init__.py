"""Numba twins of :mod:`npnorm.statistics`: one module per layer, same function signatures."""

from . import batchnorm, frn, ghostbatchnorm, groupnorm, instancenorm, iternorm, layernorm, switchnorm

__all__ = ["batchnorm", "frn", "ghostbatchnorm", "groupnorm", "instancenorm", "iternorm", "layernorm", "switchnorm"]
