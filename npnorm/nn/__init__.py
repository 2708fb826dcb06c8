"""``npnorm.nn``: the small network library the normalizers are trained inside.

Layers (the :class:`npnorm.Module` contract: ``y = layer(x)``, ``dx = layer.backward(dy)``,
``params`` / ``grads``, ``train()`` / ``eval()``), each registered and gradient-checked:
:class:`Linear`, :class:`Conv2d`, :class:`MaxPool2d`, :class:`AvgPool2d`, :class:`Flatten`,
:class:`Identity`, :class:`ReLU`, :class:`GELU`, :class:`Tanh`, :class:`SiLU`, :class:`Dropout`,
:class:`Sequential`. Losses (``loss = crit(logits, y)``, ``dlogits = crit.backward()``):
:class:`CrossEntropyLoss`, :class:`MSELoss`. Initializers in :mod:`npnorm.nn.init`; optimizers
:class:`SGD`, :class:`Adam`, :class:`AdamW`.

The normalizers themselves (``npnorm.BatchNorm2d``, ...) are re-exported here for convenience, so
``from npnorm import nn`` is all a model needs.
"""

from . import init
from .conv import AvgPool2d, Conv2d, MaxPool2d
from .init import manual_seed
from .layers import GELU, Dropout, Flatten, Identity, Linear, ReLU, Sequential, SiLU, Tanh
from .losses import CrossEntropyLoss, MSELoss
from .optim import SGD, Adam, AdamW
from ..batchnorm import BatchNorm1d, BatchNorm2d
from ..layernorm import LayerNorm, RMSNorm
from ..groupnorm import GroupNorm
from ..instancenorm import InstanceNorm1d, InstanceNorm2d

__all__ = [
    "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "Identity",
    "ReLU", "GELU", "Tanh", "SiLU", "Dropout", "Sequential",
    "CrossEntropyLoss", "MSELoss",
    "SGD", "Adam", "AdamW",
    "init", "manual_seed",
    "BatchNorm1d", "BatchNorm2d", "LayerNorm", "RMSNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d",
]
