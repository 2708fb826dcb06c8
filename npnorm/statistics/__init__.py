"""Statistics normalizers: standardize activations over a set, then apply a learned affine map.

Every member computes a mean (or only a second moment) over a *normalization set* of the
activations, divides by the matching standard deviation (or root mean square), and applies a
per-channel scale and shift. The members differ in the set:

========================  ==========================================================
layer                     the set its statistics are taken over
========================  ==========================================================
BatchNorm1d/2d/3d         the batch and every spatial position, per channel
LayerNorm                 each sample's trailing ``normalized_shape`` dims
RMSNorm                   the same, root mean square only (no centring)
GroupNorm                 each sample's group of channels and their positions
InstanceNorm1d/2d/3d      each sample's channel, over its positions
SyncBatchNorm             BatchNorm's set, over the local batches of all MPI processes
LocalResponseNorm         a window of neighbouring channels at each position (no statistics)
BatchRenorm1d/2d          BatchNorm's set, corrected towards the running statistics
GhostBatchNorm            BatchNorm's set within each virtual sub-batch
FilterResponseNormTlu2d   each sample's channel over its positions (mean square only)
EvoNorm2dB0 / S0          batch and instance std (B0); each sample's channel group (S0)
GlobalResponseNorm        each sample's channel norm relative to the mean over channels
SwitchNorm2d              a learned mixture of the IN, LN and BN statistics
IterNorm                  BatchNorm's set, whitening each group of channels jointly
========================  ==========================================================

Shared by all: :mod:`.standardize` (the centring-and-scaling step and its backward).
Their Numba twins are in :mod:`npnorm.kernels.statistics`.
"""

from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .layernorm import LayerNorm, RMSNorm
from .groupnorm import GroupNorm
from .instancenorm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from .syncbatchnorm import SyncBatchNorm
from .lrn import CrossMapLRN2d, LocalResponseNorm
from .batchrenorm import BatchRenorm1d, BatchRenorm2d
from .ghostbatchnorm import GhostBatchNorm
from .frn import FilterResponseNormTlu2d
from .evonorm import EvoNorm2dB0, EvoNorm2dS0
from .grn import GlobalResponseNorm
from .switchnorm import SwitchNorm2d
from .iternorm import IterNorm

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "RMSNorm", "GroupNorm", "InstanceNorm1d",
           "InstanceNorm2d", "InstanceNorm3d", "SyncBatchNorm", "LocalResponseNorm",
           "CrossMapLRN2d", "BatchRenorm1d", "BatchRenorm2d", "GhostBatchNorm",
           "FilterResponseNormTlu2d", "EvoNorm2dB0", "EvoNorm2dS0", "GlobalResponseNorm", "SwitchNorm2d", "IterNorm"]
