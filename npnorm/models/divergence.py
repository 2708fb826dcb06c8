"""The networks of the chapter "The affine divergence and PatchNorm": an MLP and a small CNN whose
affine maps or normalizers are chosen by name, so that one definition serves every ablation."""

from __future__ import annotations

import numpy as np

from .. import nn
from ..divergence import AffineLike, PatchNormConv2d

__all__ = ["MLP_METHODS", "CNN_METHODS", "divergence_mlp", "divergence_cnn"]

#: ``"none"``: Linear-ReLU; ``"bn"``, ``"ln"``, ``"rms"``: Linear-Norm-ReLU; ``"affine-like"``: every
#: Linear replaced by :class:`~npnorm.divergence.AffineLike` and no normalizer.
MLP_METHODS = ("none", "bn", "ln", "rms", "affine-like")
#: ``"plain"``: Conv-ReLU; ``"bn"``, ``"gn"``: Conv-Norm-ReLU; ``"patchnorm"``: every Conv2d replaced
#: by :class:`~npnorm.divergence.PatchNormConv2d` (``mode="affine"``) and no normalizer.
CNN_METHODS = ("plain", "bn", "gn", "patchnorm")


def _norm(method: str, width: int):
    if method == "bn":
        return nn.BatchNorm1d(width)
    if method == "ln":
        return nn.LayerNorm(width)
    if method == "rms":
        return nn.RMSNorm(width)
    raise ValueError(f"divergence_mlp: unknown method {method!r}; one of {MLP_METHODS}")


def divergence_mlp(method: str = "none", in_features: int = 256, width: int = 64, depth: int = 2,
                   n_classes: int = 10, seed: int = 0) -> nn.Sequential:
    """``depth`` hidden blocks of ``width`` units and a classifier.

    ``"none"``: ``Linear-ReLU`` blocks and a ``Linear`` classifier (PyTorch's default init).
    ``"bn"`` / ``"ln"`` / ``"rms"``: ``Linear(no bias)-Norm-ReLU`` blocks. ``"affine-like"``: every
    ``Linear`` (classifier included) is an :class:`~npnorm.divergence.AffineLike` (its own init, see
    there), no normalizer. The classifier of the other methods is a plain ``Linear``.
    """
    if method not in MLP_METHODS:
        raise ValueError(f"divergence_mlp: method must be one of {MLP_METHODS}, got {method!r}")
    rng = np.random.default_rng(seed)
    layers: list[nn.Module] = []
    d = in_features
    for _ in range(depth):
        if method == "affine-like":
            layers += [AffineLike(d, width, rng=rng), nn.ReLU()]
        elif method == "none":
            layers += [nn.Linear(d, width, rng=rng), nn.ReLU()]
        else:
            layers += [nn.Linear(d, width, bias=False, rng=rng), _norm(method, width), nn.ReLU()]
        d = width
    layers.append(AffineLike(d, n_classes, rng=rng) if method == "affine-like" else nn.Linear(d, n_classes, rng=rng))
    return nn.Sequential(*layers)


def divergence_cnn(method: str = "plain", width: int = 8, size: int = 16, n_classes: int = 10,
                   seed: int = 0) -> nn.Sequential:
    """Two blocks ``Conv3x3(pad 1)-[Norm]-ReLU-MaxPool2``, then a ``Linear`` classifier:
    ``(N, 1, size, size)`` images to logits.

    ``"plain"``: convolutions with bias, no normalizer; ``"bn"`` / ``"gn"`` (groups of 4 channels):
    convolutions without bias, then the normalizer; ``"patchnorm"``: :class:`PatchNormConv2d` (affine
    mode) in place of each convolution, no normalizer.
    """
    if method not in CNN_METHODS:
        raise ValueError(f"divergence_cnn: method must be one of {CNN_METHODS}, got {method!r}")
    rng = np.random.default_rng(seed)
    layers: list[nn.Module] = []
    c_in = 1
    for c_out in (width, 2 * width):
        if method == "patchnorm":
            layers += [PatchNormConv2d(c_in, c_out, 3, padding=1, rng=rng)]
        elif method == "plain":
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, rng=rng)]
        else:
            norm = nn.BatchNorm2d(c_out) if method == "bn" else nn.GroupNorm(max(1, c_out // 4), c_out)
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False, rng=rng), norm]
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        c_in = c_out
    layers += [nn.Flatten(), nn.Linear(2 * width * (size // 4) ** 2, n_classes, rng=rng)]
    return nn.Sequential(*layers)
