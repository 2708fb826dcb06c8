"""Small complete networks that the experiments train, built only from :mod:`npnorm.nn` and the
normalizers - one module per model:

* :mod:`.cnn` - :func:`small_cnn`, the chapter-8 CNN for the procedural shapes, with any normalizer;
* :mod:`.mlp` - :func:`deep_mlp`, a deep ReLU MLP whose initial weight scale is a parameter;
* :mod:`.norms` - :func:`norm_layer`, a normalizer chosen by its short name (``"bn"``, ``"ln"``, ...);
* :mod:`.denoiser` - :class:`Denoiser2D`, the DDPM noise predictor for 2-D points with adaptive
  normalization in every block; :mod:`.conv_denoiser` - :class:`ConvDenoiser`, its 16x16 image
  counterpart; :mod:`.ddpm` - the schedule, the training step, ancestral sampling, guidance.
"""

from .cnn import small_cnn
from .mlp import deep_mlp
from .norms import NORMALIZERS, norm_layer
from .denoiser import Denoiser2D
from .conv_denoiser import ConvDenoiser

__all__ = ["small_cnn", "deep_mlp", "norm_layer", "NORMALIZERS", "Denoiser2D", "ConvDenoiser"]
