"""Fused Numba kernels (the ``"numba"`` backend), mirroring the families of :mod:`npnorm`.

A layer's NumPy reference in ``npnorm/<family>/<layer>.py`` has its Numba twin in
``npnorm/kernels/<family>/<layer>.py``, exposing functions with the same signatures
(``layer_norm_forward(x, normalized_shape, weight, bias, eps) -> (out, cache)`` and
``layer_norm_backward(dout, cache)``), plus an optional preallocated ``out=`` / ``dx_out=``:

* :mod:`.statistics.layernorm` - LayerNorm and RMSNorm (rows of the trailing dims);
* :mod:`.statistics.groupnorm` - GroupNorm (rows = (sample, group) blocks);
* :mod:`.statistics.instancenorm` - InstanceNorm on the GroupNorm kernels with ``G = C``;
* :mod:`.statistics.batchnorm` - training-mode BatchNorm (block statistics merged per channel) and
  evaluation mode;
* :mod:`.statistics.switchnorm` - SwitchNorm2d: row statistics and output pass, the IN/LN/BN mixture
  on (N, C) arrays in NumPy;
* :mod:`.statistics.iternorm` - IterNorm: centring, covariance, whitening product and their backward
  sums over contiguous (sample, group) blocks; the Newton iterations on the small matrices in NumPy;
* the rest of the statistics catalog: :mod:`.statistics.batchrenorm` (on the BatchNorm kernels),
  :mod:`.statistics.ghostbatchnorm`, :mod:`.statistics.frn`, :mod:`.statistics.evonorm` (B0 and
  S0) and :mod:`.statistics.grn` (channels-last and channels-first);
* :mod:`.adaptive.adain` - AdaIN on the GroupNorm kernels;
* :mod:`.divergence.patchnorm` - PatchNorm: im2col, convolution, patch norm and division fused;
* :mod:`.transformer.l2norm` - L2 normalization and ScaleNorm; :mod:`.transformer.dyt` - DyT;
* :mod:`.affine` and :mod:`._common` - shared by every family: the per-(sample, channel) affine map
  used by evaluation modes and AdaIN, the JIT settings and the input/output helpers.

Nothing is compiled at import: each kernel is compiled (or loaded from ``NUMBA_CACHE_DIR``) the first
time it is called with a new input dtype.
"""

from . import _common, affine
from . import statistics, adaptive, transformer, divergence
from ._common import FASTMATH, JIT_DISABLED, PARALLEL_THRESHOLD

__all__ = ["affine", "statistics", "adaptive", "transformer", "divergence", "all_dispatchers", "FASTMATH",
           "PARALLEL_THRESHOLD",
           "JIT_DISABLED"]


def all_dispatchers() -> tuple:
    """Every Numba dispatcher in the package (for tests: none is compiled after ``import npnorm``)."""
    import sys
    mods = [m for name, m in sorted(sys.modules.items())
            if name.startswith(__name__ + ".") and hasattr(m, "DISPATCHERS")]
    return tuple(d for mod in mods for d in mod.DISPATCHERS)
