"""Pick a normalization layer by its short name, so one model definition serves every comparison."""

from __future__ import annotations

import numpy as np

from .. import nn

__all__ = ["NORMALIZERS", "norm_layer"]

#: Short names of the normalizers the experiments compare.
NORMALIZERS = ("none", "bn", "ln", "gn", "in")


def norm_layer(norm: str, channels: int, spatial: tuple[int, ...] = (), bn_momentum: float | None = 0.1,
               dtype=np.float64) -> nn.Module:
    """A normalization layer for ``channels`` features (``spatial`` = (H, W) for images, () for vectors).

    ``dtype`` is the dtype of the parameters and buffers. ``"none"`` is the identity; ``"bn"`` uses ``bn_momentum`` for its running statistics; ``"ln"`` normalizes each sample over all its features (``LayerNorm``
    over ``(C, H, W)``); ``"gn"`` uses groups of 4 channels; ``"in"`` is InstanceNorm with an affine map.
    """
    image = len(spatial) == 2
    if norm == "none":
        return nn.Identity()
    if norm == "bn":
        bn = nn.BatchNorm2d if image else nn.BatchNorm1d
        return bn(channels, momentum=bn_momentum, dtype=dtype)
    if norm == "ln":
        return nn.LayerNorm((channels, *spatial), dtype=dtype)
    if norm == "gn":
        return nn.GroupNorm(max(1, channels // 4), channels, dtype=dtype)
    if norm == "in":
        if not image:
            raise ValueError("norm_layer: InstanceNorm needs spatial positions; use it in the CNN only")
        return nn.InstanceNorm2d(channels, affine=True, dtype=dtype)
    raise ValueError(f"norm_layer: norm must be one of {NORMALIZERS}, got {norm!r}")
