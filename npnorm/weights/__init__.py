"""Weight normalizers: reparametrize a layer's *weight* instead of normalizing its activations.

* :mod:`.weightnorm` - weight normalization, ``W = g v / ||v||`` (Salimans & Kingma 2016);
* :mod:`.spectralnorm` - spectral normalization, ``W / sigma(W)`` with sigma from power iteration
  (Miyato et al. 2018);
* :mod:`.weightstd` - weight standardization, zero mean and unit variance per output unit
  (Qiao et al. 2019);
* :mod:`.parametrize` - wrappers that put any of the three in front of a layer with a ``weight``
  (PyTorch's ``torch.nn.utils.parametrizations``).

They have no statistics pass over activations, so they have no Numba twin.
"""

from .weightnorm import WeightNorm
from .spectralnorm import SpectralNorm
from .weightstd import WeightStandardization
from . import parametrize

__all__ = ["WeightNorm", "SpectralNorm", "WeightStandardization", "parametrize"]
