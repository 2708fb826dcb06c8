"""Small complete networks that the experiments train, built only from :mod:`npnorm.nn` and the
normalizers - one module per model:

* :mod:`.cnn` - :func:`small_cnn`, the chapter-8 CNN for the procedural shapes, with any normalizer;
* :mod:`.mlp` - :func:`deep_mlp`, a deep ReLU MLP whose initial weight scale is a parameter;
* :mod:`.norms` - :func:`norm_layer`, a normalizer chosen by its short name (``"bn"``, ``"ln"``, ...);
* :mod:`.transformer` - :class:`TransformerLM` (post/pre/sandwich/DeepNorm with LayerNorm, RMSNorm,
  ScaleNorm or DyT) and :class:`NGPT`, with :func:`lm_step`.
"""

from .cnn import small_cnn
from .mlp import deep_mlp
from .norms import NORMALIZERS, norm_layer
from .transformer import NGPT, TransformerLM, lm_step

__all__ = ["small_cnn", "deep_mlp", "norm_layer", "NORMALIZERS", "TransformerLM", "NGPT", "lm_step"]
