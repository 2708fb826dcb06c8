"""Small complete networks that the experiments train, built only from :mod:`npnorm.nn` and the
normalizers - one module per model:

* :mod:`.cnn` - :func:`small_cnn`, the chapter-8 CNN for the procedural shapes, with any normalizer;
* :mod:`.mlp` - :func:`deep_mlp`, a deep ReLU MLP whose initial weight scale is a parameter;
* :mod:`.gan` - :func:`mlp_generator`, :class:`MLPCritic` (with its Lipschitz diagnostics and the
  gradient penalty's double backward) and :class:`GAN` (losses, clipping / penalty / spectral norm);
* :mod:`.divergence` - :func:`divergence_mlp` and :func:`divergence_cnn`, the affine-divergence ablations;
* :mod:`.norms` - :func:`norm_layer`, a normalizer chosen by its short name (``"bn"``, ``"ln"``, ...);
* :mod:`.denoiser` - :class:`Denoiser2D`, the DDPM noise predictor for 2-D points with adaptive
  normalization in every block; :mod:`.conv_denoiser` - :class:`ConvDenoiser`, its 16x16 image
  counterpart; :mod:`.ddpm` - the schedules, the training step, ancestral sampling (respaced or not),
  guidance, the weights' moving average.
* :mod:`.transformer` - :class:`TransformerLM` (post/pre/sandwich/DeepNorm with LayerNorm, RMSNorm,
  ScaleNorm or DyT) and :class:`NGPT`, with :func:`lm_step`.
"""

from .cnn import small_cnn
from .mlp import deep_mlp
from .gan import GAN, MLPCritic, mlp_generator
from .norms import NORMALIZERS, norm_layer
from .divergence import CNN_METHODS, MLP_METHODS, divergence_cnn, divergence_mlp
from .denoiser import Denoiser2D
from .conv_denoiser import ConvDenoiser
from .transformer import NGPT, TransformerLM, lm_step

__all__ = ["small_cnn", "deep_mlp", "GAN", "MLPCritic", "mlp_generator", "norm_layer", "NORMALIZERS",
           "divergence_mlp", "divergence_cnn", "MLP_METHODS", "CNN_METHODS", "Denoiser2D", "ConvDenoiser",
           "TransformerLM", "NGPT", "lm_step"]
