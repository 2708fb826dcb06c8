"""The small CNN of the chapter "Why normalization helps": two conv blocks and an MLP head."""

from __future__ import annotations

import numpy as np

from .. import nn
from .norms import NORM_ACTIVATIONS, norm_layer

__all__ = ["small_cnn"]


def small_cnn(norm: str = "bn", width: int = 8, hidden: int = 64,
              size: int = 16, n_classes: int = 10, seed: int = 0,
              bn_momentum: float | None = 0.1,
              total_steps: int | None = None,
              dtype=np.float64) -> nn.Sequential:
    """Two blocks Conv3x3-Norm-ReLU-MaxPool, then a hidden Linear-Norm-ReLU
    and a Linear classifier: ``(N, 1, size, size)`` images to
    ``n_classes`` logits.

    Layers followed by a normalizer have no bias (the normalizer would
    subtract it). InstanceNorm has nothing to normalize over in a feature
    vector (one value per channel), so with ``norm="in"`` the hidden Linear
    layer is not normalized; nor is it with the image-only
    normalization-activation layers (FRN, EvoNorm), which replace the ReLU
    after each convolution. ``total_steps`` is passed to
    :func:`norm_layer` (batch renormalization's schedule).

    ``dtype`` is the dtype of every parameter: ``np.float32`` with float32
    images is the float32 path end to end (every layer computes in float32,
    as PyTorch does); the default float64 parameters make every layer
    compute in float64.
    """
    rng = np.random.default_rng(seed)
    bias = norm == "none"
    s2, s4 = size // 2, size // 4
    head_norm = "none" if norm == "in" or norm in NORM_ACTIVATIONS else norm
    act = nn.Identity if norm in NORM_ACTIVATIONS else nn.ReLU
    steps = total_steps
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=bias, dtype=dtype, rng=rng),
        norm_layer(norm, width, (size, size), bn_momentum, steps, dtype),
        act(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=bias, dtype=dtype,
                  rng=rng),
        norm_layer(norm, 2 * width, (s2, s2), bn_momentum, steps, dtype),
        act(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * s4 * s4, hidden, bias=head_norm == "none",
                  dtype=dtype, rng=rng),
        norm_layer(head_norm, hidden, (), bn_momentum, steps, dtype),
        nn.ReLU(),
        nn.Linear(hidden, n_classes, dtype=dtype, rng=rng),
    )
