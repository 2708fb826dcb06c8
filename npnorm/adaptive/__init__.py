"""Adaptive (conditional) normalizers: the scale and shift come from a conditioning signal.

A base normalization removes a feature map's own statistics; the affine map that follows is not a
learned constant but a function of something else - another image's statistics (AdaIN), a class
label (conditional BatchNorm), a style vector, or a diffusion timestep embedding (FiLM, AdaGN,
adaLN). Their backward passes reach the conditioning signal too.

* :mod:`.adain` - adaptive instance normalization from a style image (Huang & Belongie 2017).

Numba twins are in :mod:`npnorm.kernels.adaptive`.
"""

from .adain import AdaIN
from .adagroupnorm import AdaGroupNorm, ScaleShiftGroupNorm

__all__ = ["AdaIN", "AdaGroupNorm", "ScaleShiftGroupNorm"]
