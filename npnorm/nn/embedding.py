r"""An embedding table: integer indices in, rows of a learned matrix out.

:math:`y_{i} = W_{\text{idx}_i}` for a table :math:`W` of shape ``(num_embeddings, embedding_dim)``.
The indices are integers and get no gradient; the table's gradient scatters the upstream rows back
to the rows that were read, **accumulating** over repeated indices:
:math:`\partial L/\partial W_k = \sum_{i: \text{idx}_i = k} g_i` (``np.add.at``, not ``dW[idx] += g``,
which would keep only the last of the repeated rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import check_dout, check_positive_int
from ..base import Module
from . import init

__all__ = ["Embedding"]


class Embedding(Module):
    """A lookup table, as ``torch.nn.Embedding(num_embeddings, embedding_dim)``.

    ``y = layer(idx)`` for integer ``idx`` of any shape, values in ``[0, num_embeddings)``; ``y`` has
    shape ``idx.shape + (embedding_dim,)``. ``backward(dy)`` fills ``grads["weight"]`` and returns
    ``None`` (indices are not differentiable). ``weight`` is initialised from N(0, 1) (PyTorch's
    default). Differences: float64 by default (``dtype``); ``rng`` instead of the global generator;
    no ``padding_idx``, ``max_norm`` or sparse gradients.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, dtype: Any = np.float64,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        self.num_embeddings = check_positive_int(num_embeddings, "num_embeddings", "Embedding")
        self.embedding_dim = check_positive_int(embedding_dim, "embedding_dim", "Embedding")
        self.dtype = np.dtype(dtype)
        self.params["weight"] = init.normal_(np.empty((self.num_embeddings, self.embedding_dim), self.dtype),
                                             0.0, 1.0, init.get_rng(rng))

    def forward(self, idx: np.ndarray) -> np.ndarray:
        arr = np.asarray(idx)
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"Embedding: idx must be an integer array of indices, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.num_embeddings):
            raise ValueError(f"Embedding: idx must be in [0, num_embeddings={self.num_embeddings}), "
                             f"got values in [{arr.min()}, {arr.max()}]")
        idx = arr.astype(np.int64, copy=True)
        out = self.params["weight"][idx]
        self._cache = (idx, out.shape)
        return out

    def backward(self, dout: np.ndarray) -> None:
        idx, shape = self._require_cache()
        g = np.asarray(check_dout(dout, shape, "Embedding.backward"), dtype=np.float64)
        dweight = np.zeros((self.num_embeddings, self.embedding_dim))
        np.add.at(dweight, idx.reshape(-1), g.reshape(-1, self.embedding_dim))
        self.grads["weight"] = dweight.astype(self.dtype, copy=False)
        return None

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402


def _indices(case: Case, rng: np.random.Generator, dtype: Any) -> tuple[np.ndarray, ...]:
    (shape,) = case.input_shapes
    n = case.kwargs["num_embeddings"]
    return (rng.integers(0, n, size=shape),)


register(Spec(
    name="Embedding", cls=Embedding, pytorch="torch.nn.Embedding",
    differences="Parameters are float64 by default (dtype argument); no padding_idx / max_norm / sparse.",
    input_names=("idx",), constant_inputs=("idx",), make_inputs=_indices,
    make_layer=lambda case, rng, dtype, kwargs: Embedding(**kwargs, dtype=dtype, rng=rng),
    cases=(Case("labels", {"num_embeddings": 3, "embedding_dim": 4}, ((6,),)),
           Case("2-D-indices", {"num_embeddings": 4, "embedding_dim": 2}, ((2, 5),))),
))
