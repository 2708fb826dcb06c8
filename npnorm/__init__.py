"""npnorm: neural-network normalization layers in NumPy, with hand-derived backward passes.

Every layer is a thin class around a pair of pure functions (``*_forward`` returning ``(out, cache)``
and ``*_backward`` taking ``(dout, cache)``), named and defaulted like PyTorch, registered in
:mod:`npnorm.registry` and gradient-checked by :mod:`npnorm.gradcheck`.
"""

from . import gradcheck, registry
# Import order is registration order, which is the order of the book's tables.
from .backend import get_backend, set_backend, use_backend
from .base import Module
from .batchnorm import BatchNorm1d, BatchNorm2d
from .layernorm import LayerNorm, RMSNorm
from .groupnorm import GroupNorm
from .instancenorm import InstanceNorm1d, InstanceNorm2d
from .adain import AdaIN
from .weightnorm import WeightNorm
from .spectralnorm import SpectralNorm
from .weightstd import WeightStandardization
from . import parametrize
from .gradcheck import check_gradients, check_layer
from . import nn  # noqa: E402  (registers the network layers after the normalizers)

__version__ = "0.1.0"

__all__ = [
    "Module",
    "get_backend",
    "set_backend",
    "use_backend",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm",
    "RMSNorm",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "AdaIN",
    "WeightNorm",
    "SpectralNorm",
    "WeightStandardization",
    "parametrize",
    "check_layer",
    "check_gradients",
    "gradcheck",
    "registry",
    "nn",
]
