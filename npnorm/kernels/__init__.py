"""Fused Numba kernels for the core normalizers (the ``"numba"`` backend).

One module per family, each exposing functions with the same signatures as the NumPy reference
(``layer_norm_forward(x, normalized_shape, weight, bias, eps) -> (out, cache)`` and
``layer_norm_backward(dout, cache)``), plus an optional preallocated ``out=`` / ``dx_out=``:

* :mod:`.layernorm` - LayerNorm and RMSNorm (rows of the trailing dims);
* :mod:`.groupnorm` - GroupNorm (rows = (sample, group) blocks);
* :mod:`.instancenorm` - InstanceNorm and AdaIN on the GroupNorm kernels with ``G = C``;
* :mod:`.batchnorm` - training-mode BatchNorm (block statistics merged per channel) and evaluation mode;
* :mod:`.affine` - the per-(sample, channel) affine map used by evaluation modes and AdaIN.

Nothing is compiled at import: each kernel is compiled (or loaded from ``NUMBA_CACHE_DIR``) the first
time it is called with a new input dtype.
"""

from . import _common, affine, batchnorm, groupnorm, instancenorm, layernorm
from ._common import FASTMATH, JIT_DISABLED, PARALLEL_THRESHOLD

__all__ = ["affine", "batchnorm", "groupnorm", "instancenorm", "layernorm", "all_dispatchers",
           "FASTMATH", "PARALLEL_THRESHOLD", "JIT_DISABLED"]


def all_dispatchers() -> tuple:
    """Every Numba dispatcher in the package (for tests: none is compiled after ``import npnorm``)."""
    return tuple(d for mod in (affine, groupnorm, layernorm) for d in mod.DISPATCHERS)
