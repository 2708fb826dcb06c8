"""Numba twins of :mod:`npnorm.statistics`: one module per layer, same function signatures."""

from . import (batchnorm, batchrenorm, evonorm, frn, ghostbatchnorm, grn, groupnorm, instancenorm, iternorm,
               layernorm, switchnorm)

__all__ = ["batchnorm", "batchrenorm", "evonorm", "frn", "ghostbatchnorm", "grn", "groupnorm", "instancenorm",
           "iternorm", "layernorm", "switchnorm"]
