"""Adaptive (conditional) normalizers: the scale and shift come from a conditioning signal.

A base normalization removes a feature map's own statistics; the affine map that follows is not a
learned constant but a function of something else - another image's statistics (AdaIN), a class
label (conditional BatchNorm), a style vector, or a diffusion timestep embedding (FiLM, AdaGN,
adaLN). Their backward passes reach the conditioning signal too.

* :mod:`.adain` - adaptive instance normalization from a style image (Huang & Belongie 2017).
* :mod:`.film` - FiLM, the general form: a per-channel scale and shift projected from a condition.
* :mod:`.conditional` - conditional BatchNorm and conditional InstanceNorm (a table row per class/style).
* :mod:`.adagroupnorm` - AdaGN (diffusers' ``AdaGroupNorm``, ADM's ``ScaleShiftGroupNorm``) and
  StyleGAN's AdaIN from a style vector (``StyleAdaIN``).
* :mod:`.adaln` - adaLN and the adaLN-Zero block of diffusion transformers.
* :mod:`.embeddings` - the conditioning encoders: sinusoidal timestep embedding, Linear-SiLU-Linear.
* :mod:`._modulation` - the shared projection and ``(1 + scale), shift`` steps.

Numba twins are in :mod:`npnorm.kernels.adaptive`.
"""

from .adain import AdaIN
from .film import FiLM
from .conditional import ConditionalBatchNorm2d, ConditionalInstanceNorm2d
from .adagroupnorm import AdaGroupNorm, ScaleShiftGroupNorm, StyleAdaIN
from .adaln import AdaLN, AdaLNZeroBlock
from .embeddings import SinusoidalTimestepEmbedding, TimestepEmbedding

__all__ = ["AdaIN", "FiLM", "ConditionalBatchNorm2d", "ConditionalInstanceNorm2d", "AdaGroupNorm",
           "ScaleShiftGroupNorm", "StyleAdaIN", "AdaLN", "AdaLNZeroBlock", "SinusoidalTimestepEmbedding",
           "TimestepEmbedding"]
