"""Pick a normalization layer by its short name, so one model definition serves every comparison."""

from __future__ import annotations

import numpy as np

import numpy as np

from .. import nn

__all__ = ["NORMALIZERS", "CATALOG_NORMALIZERS", "NORM_ACTIVATIONS", "norm_layer"]

#: Short names of the normalizers the experiments compare.
NORMALIZERS = ("none", "bn", "ln", "gn", "in")
#: More of the catalog (chapter 13): batch renormalization, ghost BatchNorm (virtual batches of 8),
#: FRN + TLU, EvoNorm-B0 and -S0. The last three are image-only; on feature vectors they are "none".
CATALOG_NORMALIZERS = ("brn", "ghost", "frn", "evob0", "evos0")
#: Normalizers that include their activation (the model leaves out the ReLU after them).
NORM_ACTIVATIONS = ("frn", "evob0", "evos0")


def norm_layer(norm: str, channels: int, spatial: tuple[int, ...] = (), bn_momentum: float | None = 0.1,
               total_steps: int | None = None, dtype=np.float64) -> nn.Module:
    """A normalization layer for ``channels`` features (``spatial`` = (H, W) for images, () for vectors).

    ``"none"`` is the identity; ``"bn"`` uses ``bn_momentum`` for its running statistics; ``"ln"`` normalizes each sample over all its features (``LayerNorm``
    over ``(C, H, W)``); ``"gn"`` uses groups of 4 channels; ``"in"`` is InstanceNorm with an affine map.
    :data:`CATALOG_NORMALIZERS`: ``"brn"`` is batch renormalization with the paper's rmax/dmax
    schedule compressed to ``total_steps`` (BatchNorm for the first 10%, rmax reaching 3 at 60% and
    dmax reaching 5 at 40%; without ``total_steps``, fixed rmax=3, dmax=5); ``"ghost"`` is ghost
    BatchNorm with virtual batches of 8; ``"frn"``, ``"evob0"``, ``"evos0"`` (groups of 4 channels)
    include their activation. ``dtype`` is the parameter dtype of the core normalizers
    (``none``/``bn``/``ln``/``gn``/``in``); the catalog layers keep float64 parameters.
    """
    from .. import statistics as st
    if norm in CATALOG_NORMALIZERS:
        image = len(spatial) == 2
        if norm == "brn":
            cls = st.BatchRenorm2d if image else st.BatchRenorm1d
            sched = None if not total_steps else (total_steps // 10, total_steps * 6 // 10, total_steps * 4 // 10)
            return cls(channels, schedule=sched)
        if norm == "ghost":
            return st.GhostBatchNorm(channels, virtual_batch_size=8, momentum=bn_momentum)
        if not image:
            return nn.Identity()
        if norm == "frn":
            return st.FilterResponseNormTlu2d(channels)
        if norm == "evob0":
            return st.EvoNorm2dB0(channels)
        return st.EvoNorm2dS0(channels, group_size=4)
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
    raise ValueError(f"norm_layer: norm must be one of {NORMALIZERS + CATALOG_NORMALIZERS}, got {norm!r}")
