r"""The transformer's position-wise feed-forward network (the "MLP" of a block).

.. math:: y = W_2\,\mathrm{GELU}(W_1 x + b_1) + b_2, \qquad W_1 \in \mathbb R^{F\times D},
          W_2 \in \mathbb R^{D\times F},                                                  \tag{FFN}

applied to every position independently (``(N, L, D) -> (N, L, D)``); :math:`F = 4D` by default.
Backward is the chain of :class:`~npnorm.nn.Linear`, :class:`~npnorm.nn.GELU`,
:class:`~npnorm.nn.Linear` in reverse.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import check_dout, check_positive_int
from . import init
from .composite import Composite
from .layers import GELU, Linear, ReLU

__all__ = ["FeedForward"]


class FeedForward(Composite):
    """``linear2(activation(linear1(x)))`` on the last axis, as the feed-forward half of
    ``torch.nn.TransformerEncoderLayer`` (children ``linear1``, ``activation``, ``linear2``; no dropout).

    Parameters
    ----------
    d_model : int
    dim_feedforward : int or None, default None
        :math:`F`; ``None`` gives ``4 * d_model``. (PyTorch's layer defaults to 2048.)
    activation : {"gelu", "relu"}, default "gelu"
    bias : bool, default True
    rng : Generator or int, optional
    """

    def __init__(self, d_model: int, dim_feedforward: int | None = None, activation: str = "gelu",
                 bias: bool = True, *, dtype: Any = np.float64, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        self.d_model = check_positive_int(d_model, "d_model", "FeedForward")
        self.dim_feedforward = (4 * self.d_model if dim_feedforward is None
                                else check_positive_int(dim_feedforward, "dim_feedforward", "FeedForward"))
        if activation not in ("gelu", "relu"):
            raise ValueError(f"FeedForward: activation must be 'gelu' or 'relu', got {activation!r}")
        gen = init.get_rng(rng)
        self.add("linear1", Linear(self.d_model, self.dim_feedforward, bias=bias, dtype=dtype, rng=gen))
        self.add("activation", GELU() if activation == "gelu" else ReLU())
        self.add("linear2", Linear(self.dim_feedforward, self.d_model, bias=bias, dtype=dtype, rng=gen))

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = self.linear2(self.activation(self.linear1(np.array(x))))   # a copy: no view of the caller's x
        self._cache = (np.shape(x),)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        (shape,) = self._require_cache()
        dout = check_dout(dout, shape, "FeedForward.backward")
        return self.linear1.backward(self.activation.backward(self.linear2.backward(dout)))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, dim_feedforward={self.dim_feedforward}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="FeedForward", cls=FeedForward, pytorch=None,
    differences="No PyTorch module: it is the linear1 -> activation -> linear2 part of "
                "torch.nn.TransformerEncoderLayer (no dropout), so there is no constructor signature to mirror.",
    input_offset=0.2, input_scale=1.0,
    cases=(Case("gelu", {"d_model": 4, "dim_feedforward": 6, "rng": 1}, ((2, 3, 4),), modes=("train",)),),
))
