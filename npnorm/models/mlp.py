"""A deep MLP whose initial weight scale is a parameter: the model of the initialization experiments."""

from __future__ import annotations

import numpy as np

from .. import nn
from .norms import norm_layer

__all__ = ["deep_mlp"]


def deep_mlp(norm: str = "none", depth: int = 10, width: int = 64,
             in_features: int = 2, n_classes: int = 3,
             init_scale: float = 1.0, seed: int = 0) -> nn.Sequential:
    """A stem Linear-ReLU, then ``depth`` hidden blocks Linear-Norm-ReLU of
    ``width`` units, then a Linear classifier.

    A hidden Linear layer has a bias only without normalization: a
    normalizer would subtract a bias (BN) or, worse, mix it into the
    statistics (LN normalizes :math:`Wh + b` per sample, and when
    :math:`Wh` is small the output is dominated by the constant :math:`b`).
    The hidden weights are drawn from
    :math:`N(0, (\\text{init\\_scale}\\cdot\\sqrt{2/\\text{fan\\_in}})^2)`:
    ``init_scale = 1`` is Kaiming initialization, which keeps the
    activation scale roughly constant through ReLU layers; any other scale
    multiplies the activations by roughly ``init_scale`` per layer. The
    stem keeps PyTorch's default initialization and has no normalizer: a
    normalizer right after a Linear map of 2-D points would erase the
    points' distance from the origin (LayerNorm of :math:`Wx` does not
    depend on :math:`\\|x\\|`), which the spirals need.
    """
    rng = np.random.default_rng(seed)
    layers: list[nn.Module] = [nn.Linear(in_features, width, rng=rng),
                               nn.ReLU()]
    for _ in range(depth):
        lin = nn.Linear(width, width, bias=norm == "none", rng=rng)
        nn.init.kaiming_normal_(lin.params["weight"], nonlinearity="relu",
                                rng=rng)
        lin.params["weight"] *= init_scale
        layers += [lin, norm_layer(norm, width), nn.ReLU()]
    layers.append(nn.Linear(width, n_classes, rng=rng))
    return nn.Sequential(*layers)
