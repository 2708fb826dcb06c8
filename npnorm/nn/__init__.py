"""``npnorm.nn``: the small network library the normalizers are trained inside.

Layers (the :class:`npnorm.Module` contract: ``y = layer(x)``, ``dx = layer.backward(dy)``,
``params`` / ``grads``, ``train()`` / ``eval()``), each registered and gradient-checked:
:class:`Linear`, :class:`Conv2d`, :class:`MaxPool2d`, :class:`AvgPool2d`, :class:`Flatten`,
:class:`Identity`, :class:`ReLU`, :class:`LeakyReLU`, :class:`GELU`, :class:`Tanh`, :class:`SiLU`,
:class:`Dropout`, :class:`Sequential`, :class:`Embedding` (class labels, token ids); for transformers
:class:`PositionalEmbedding`, :class:`Softmax`, :class:`MultiheadSelfAttention` (causal, optional
QK-norm), :class:`FeedForward`, and :class:`Composite` (a layer wired from named children). Losses
(``loss = crit(logits, y)``, ``dlogits = crit.backward()``):
:class:`CrossEntropyLoss`, :class:`MSELoss`. Initializers in :mod:`npnorm.nn.init`; optimizers
:class:`SGD`, :class:`Adam`, :class:`AdamW`.

The normalizers themselves (``npnorm.BatchNorm2d``, ...) are re-exported here for convenience, so
``from npnorm import nn`` is all a model needs.
"""

from . import init
from .conv import AvgPool2d, Conv2d, MaxPool2d
from .embedding import Embedding
from .init import manual_seed
from .layers import GELU, Dropout, Flatten, Identity, LeakyReLU, Linear, ReLU, Sequential, SiLU, Tanh
from .losses import CrossEntropyLoss, MSELoss
from .optim import SGD, Adam, AdamW, clip_grad_norm_, grad_norm
from .composite import Composite
from .embedding import Embedding, PositionalEmbedding
from .attention import MultiheadSelfAttention, Softmax
from .feedforward import FeedForward
from .gradnorm import GradNorm
from ..statistics.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from ..statistics.layernorm import LayerNorm, RMSNorm
from ..statistics.groupnorm import GroupNorm
from ..statistics.instancenorm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d

__all__ = [
    "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "Identity",
    "ReLU", "LeakyReLU", "GELU", "Tanh", "SiLU", "Dropout", "Sequential",
    "Embedding", "PositionalEmbedding", "Softmax", "MultiheadSelfAttention", "FeedForward",
    "CrossEntropyLoss", "MSELoss",
    "SGD", "Adam", "AdamW", "clip_grad_norm_", "grad_norm", "GradNorm",
    "init", "manual_seed",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "RMSNorm", "GroupNorm", "InstanceNorm1d",
    "InstanceNorm2d", "InstanceNorm3d",
]


# -- registry: the weight normalizers wrapped around real layers --------------------------------------
# (as torch.nn.utils.parametrizations does), so the registry gradient-checks both the functional
# form (npnorm.SpectralNorm, ...) and the wrapped form.
from ..weights.parametrize import spectral_norm as _spectral_norm, weight_norm as _weight_norm  # noqa: E402
from ..weights.parametrize import weight_standardization as _weight_standardization, wrapper_spec as _wrapper_spec  # noqa: E402
from ..registry import Case as _Case, register as _register  # noqa: E402

_register(_wrapper_spec(
    "spectral_norm(Linear)", _spectral_norm, lambda case, rng, dtype: Linear(6, 4, rng=rng),
    cases=(_Case("linear", {}, ((5, 6),)), _Case("2-iterations", {"n_power_iterations": 2}, ((3, 6),))),
    pytorch="torch.nn.utils.parametrizations.spectral_norm(nn.Linear(6, 4))", reference="Miyato et al., 2018"))
_register(_wrapper_spec(
    "spectral_norm(Conv2d)", _spectral_norm,
    lambda case, rng, dtype: Conv2d(2, 3, 3, padding=1, rng=rng),
    cases=(_Case("conv", {}, ((2, 2, 4, 4),)),),
    pytorch="torch.nn.utils.parametrizations.spectral_norm(nn.Conv2d(2, 3, 3, padding=1))",
    reference="Miyato et al., 2018"))
_register(_wrapper_spec(
    "weight_norm(Linear)", _weight_norm, lambda case, rng, dtype: Linear(5, 3, rng=rng),
    cases=(_Case("dim0", {}, ((4, 5),)), _Case("whole", {"dim": None}, ((4, 5),))),
    pytorch="torch.nn.utils.parametrizations.weight_norm(nn.Linear(5, 3))", reference="Salimans & Kingma, 2016"))
_register(_wrapper_spec(
    "weight_norm(Conv2d)", _weight_norm, lambda case, rng, dtype: Conv2d(2, 3, 3, stride=2, rng=rng),
    cases=(_Case("conv", {}, ((2, 2, 5, 5),)),),
    pytorch="torch.nn.utils.parametrizations.weight_norm(nn.Conv2d(2, 3, 3, stride=2))",
    reference="Salimans & Kingma, 2016"))
_register(_wrapper_spec(
    "weight_standardization(Conv2d)", _weight_standardization,
    lambda case, rng, dtype: Conv2d(2, 3, 3, padding=1, rng=rng),
    cases=(_Case("timm", {}, ((2, 2, 4, 4),)), _Case("paper", {"convention": "paper"}, ((2, 2, 4, 4),))),
    pytorch=None, reference="Qiao et al., 2019"))
