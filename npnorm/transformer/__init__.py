"""Normalizers of the transformer era (to be filled).

What belongs here: the layers that came with transformers and whose point is where and how they
sit in a residual stream - ScaleNorm and FixNorm, L2 normalization (``F.normalize``), QK-norm,
Dynamic Tanh (DyT), DeepNorm's residual scaling and the normalized transformer (nGPT). LayerNorm
and RMSNorm themselves are statistics normalizers and live in :mod:`npnorm.statistics`.
"""

__all__: list[str] = []
