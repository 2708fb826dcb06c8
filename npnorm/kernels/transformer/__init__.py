"""Numba twins of :mod:`npnorm.transformer`: one module per layer, same function signatures.

* :mod:`.l2norm` - L2 normalization and ScaleNorm over the last axis (one fused pass per row for the
  norm and the scaling; the backward pass needs one dot product per row). Per-head QK RMSNorm is the
  RMSNorm kernel of :mod:`npnorm.kernels.statistics.layernorm` over the head dimension.
* :mod:`.dyt` - Dynamic Tanh (elementwise forward; the backward pass fuses the input gradient with
  the reductions for alpha, gamma and beta).
"""

from . import dyt, l2norm

__all__ = ["l2norm", "dyt"]
