"""npnorm: neural-network normalization layers in NumPy, with hand-derived backward passes.

The layers are grouped by family, one subpackage each: :mod:`npnorm.statistics` (standardize, then
affine: BatchNorm, LayerNorm, RMSNorm, GroupNorm, InstanceNorm), :mod:`npnorm.weights` (weight
normalization, spectral normalization, weight standardization), :mod:`npnorm.adaptive` (the affine
map comes from a condition: AdaIN), :mod:`npnorm.transformer` and :mod:`npnorm.divergence`. Their
Numba twins mirror them under :mod:`npnorm.kernels`; :mod:`npnorm.nn` has the network building
blocks, :mod:`npnorm.models` the small networks the experiments train, :mod:`npnorm.experiments`
the experiments (``python -m npnorm.experiments --list``).

Every layer is a thin class around a pair of pure functions (``*_forward`` returning ``(out, cache)``
and ``*_backward`` taking ``(dout, cache)``), named and defaulted like PyTorch, registered in
:mod:`npnorm.registry` and gradient-checked by :mod:`npnorm.gradcheck`.
"""

from . import gradcheck, registry
# Import order is registration order, which is the order of the book's tables: family by family.
from .backend import get_backend, set_backend, use_backend
from .base import Module
from .statistics import (BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm1d, InstanceNorm2d, LayerNorm,
                         RMSNorm)
from .weights import SpectralNorm, WeightNorm, WeightStandardization, parametrize
from .adaptive import AdaIN
from .transformer import DeepNorm, DyT, FixNorm, L2Norm, NGPTMLP, NGPTResidual, NGPTScale, QKNorm, ScaleNorm
from . import transformer, divergence
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
    "L2Norm",
    "ScaleNorm",
    "FixNorm",
    "QKNorm",
    "DyT",
    "DeepNorm",
    "NGPTResidual",
    "NGPTScale",
    "NGPTMLP",
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
