"""Numba twins of :mod:`npnorm.transformer`: one module per layer, same function signatures.

* :mod:`.l2norm` - L2 normalization and ScaleNorm over the last axis (per row, while it is in the L1
  cache: a pass for the norm, then one that scales it and writes the private copy of the input; the
  backward pass needs one dot product per row, then writes ``dx``). Per-head QK RMSNorm is the
  RMSNorm kernel of :mod:`npnorm.kernels.statistics.layernorm` over the head dimension.
* :mod:`.dyt` - Dynamic Tanh (elementwise forward with vectorizable float32 and float64 ``tanh``; the
  backward pass fuses the input gradient with the reductions for alpha, gamma and beta).
"""

from . import dyt, l2norm

__all__ = ["l2norm", "dyt"]
