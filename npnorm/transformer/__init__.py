"""Normalizers of the transformer era.

What belongs here: the layers that came with transformers and whose point is where and how they
sit in a residual stream. LayerNorm and RMSNorm themselves are statistics normalizers and live in
:mod:`npnorm.statistics`; attention, embeddings and the feed-forward block are network building
blocks in :mod:`npnorm.nn`; the transformer itself is :mod:`npnorm.models.transformer`.

==================  ==============================================================
module              layers
==================  ==============================================================
:mod:`.l2norm`      L2Norm (``F.normalize``: eps floors the norm), ScaleNorm
:mod:`.fixnorm`     FixNorm (unit-length word embeddings times a scale)
:mod:`.qknorm`      QKNorm: Henry et al.'s unit q, k with a learned temperature;
                    per-head RMSNorm / LayerNorm on q and k; nGPT's form
:mod:`.dyt`         DyT (Dynamic Tanh)
:mod:`.deepnorm`    DeepNorm: LN(alpha * x + G(x)) and its constants
:mod:`.ngpt`        nGPT: residual update on the sphere, scaled parameters, SwiGLU MLP
==================  ==============================================================
"""

from .l2norm import L2Norm, ScaleNorm, normalize
from .fixnorm import FixNorm
from .qknorm import QKNorm
from .dyt import DyT
from .deepnorm import DeepNorm, deepnorm_constants
from .ngpt import NGPTMLP, NGPTResidual, NGPTScale

__all__ = ["L2Norm", "ScaleNorm", "FixNorm", "QKNorm", "DyT", "DeepNorm", "NGPTResidual", "NGPTScale",
           "NGPTMLP", "normalize", "deepnorm_constants"]
