r"""Token and positional embeddings.

**Embedding** (``torch.nn.Embedding``): a table :math:`E` of shape ``(num_embeddings,
embedding_dim)``; ``y = E[ids]``. The ids are data, not something to differentiate: ``backward``
returns ``None`` for them and scatter-adds the upstream gradient into the rows that were used,

.. math:: \frac{\partial L}{\partial E_i} = \sum_{t:\ i_t = i} dy_t ,

so a token that occurs twice in the batch gets both contributions (``np.add.at``, not a plain
fancy-index assignment, which would keep only one).

**PositionalEmbedding**: a learned absolute position table :math:`P` of shape ``(num_positions,
embedding_dim)`` added to a sequence ``x`` of shape ``(N, L, D)``: :math:`y = x + P_{0..L-1}`;
:math:`\partial L/\partial x = dy`, :math:`\partial L/\partial P_t = \sum_n dy_{n,t}`. (GPT-2's
``wpe``; PyTorch has no module for it - it is ``nn.Embedding`` applied to ``arange(L)`` and added.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

import numbers

from .._checks import as_float_array, check_device, check_dout, check_positive_int, resolve_dtype
from ..base import Module
from . import init

__all__ = ["check_token_ids", "Embedding", "PositionalEmbedding"]


def check_token_ids(ids: object, num_embeddings: int, where: str) -> np.ndarray:
    """``ids`` as an integer array with every value in ``0..num_embeddings-1``, or a clear error."""
    arr = np.asarray(ids)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{where}: ids must be an integer array of token indices, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_embeddings):
        raise ValueError(f"{where}: ids must be in [0, num_embeddings={num_embeddings}), "
                         f"got values in [{arr.min()}, {arr.max()}]")
    return arr


class Embedding(Module):
    """A lookup table, as ``torch.nn.Embedding(num_embeddings, embedding_dim, padding_idx=None,
    max_norm=None, norm_type=2.0, scale_grad_by_freq=False, sparse=False, _weight=None,
    _freeze=False, device=None, dtype=None)`` (PyTorch's full signature, same order and defaults).

    ``weight`` starts from :math:`N(0, 1)` (PyTorch's default) or is a copy of ``_weight``
    (shape ``(num_embeddings, embedding_dim)``). Input: integer ids of any shape, in
    ``[0, num_embeddings)``; output ``ids.shape + (embedding_dim,)`` in the parameters' dtype.
    ``backward(dy)`` returns ``None`` (ids are not differentiable) and fills ``grads["weight"]``.

    ``padding_idx`` (in ``[-num_embeddings, num_embeddings)``, negative counted from the end) as
    PyTorch: that row starts at zero and never receives a gradient.

    Deliberate differences: float64 parameters by default (``dtype=None``); ``device`` only ``None``
    or ``"cpu"``; npnorm's keyword-only ``rng``. Rejected with a clear error (not implemented):
    ``max_norm`` other than None (PyTorch renormalizes the table in place during the forward
    pass), ``scale_grad_by_freq=True``, ``sparse=True``, ``_freeze=True``; ``norm_type`` is
    accepted (it only matters with ``max_norm``).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 max_norm: float | None = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, _weight: np.ndarray | None = None, _freeze: bool = False,
                 device: Any = None, dtype: Any = None, *, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        check_device(device, "Embedding")
        self.num_embeddings = check_positive_int(num_embeddings, "num_embeddings", "Embedding")
        self.embedding_dim = check_positive_int(embedding_dim, "embedding_dim", "Embedding")
        self.dtype = resolve_dtype(dtype, "Embedding")
        for name, value, default in (("max_norm", max_norm, None), ("scale_grad_by_freq", scale_grad_by_freq, False),
                                     ("sparse", sparse, False), ("_freeze", _freeze, False)):
            if value is not default and value != default:
                raise ValueError(f"Embedding: only {name}={default!r} is implemented, got {value!r}")
        self.norm_type = float(norm_type)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral) \
                    or not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Embedding: padding_idx must be an int in [-num_embeddings, num_embeddings) = "
                                 f"[{-self.num_embeddings}, {self.num_embeddings}) or None, got {padding_idx!r}")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        shape = (self.num_embeddings, self.embedding_dim)
        if _weight is not None:
            w = np.array(_weight, dtype=self.dtype)            # a copy: the caller's array stays theirs
            if w.shape != shape:
                raise ValueError(f"Embedding: _weight must have shape {shape}, got {w.shape}")
            self.params["weight"] = w
        else:
            self.params["weight"] = init.normal_(np.empty(shape, dtype=self.dtype), 0.0, 1.0, init.get_rng(rng))
            if self.padding_idx is not None:
                self.params["weight"][self.padding_idx] = 0.0

    def forward(self, ids: np.ndarray) -> np.ndarray:
        ids = check_token_ids(ids, self.num_embeddings, "Embedding")
        self._cache = ids.copy()
        return self.params["weight"][ids]             # fancy indexing: a copy, not a view

    def backward(self, dout: np.ndarray) -> None:
        ids = self._require_cache()
        dout = check_dout(dout, ids.shape + (self.embedding_dim,), "Embedding.backward")
        dweight = np.zeros((self.num_embeddings, self.embedding_dim))
        np.add.at(dweight, ids.reshape(-1), np.asarray(dout, dtype=np.float64).reshape(-1, self.embedding_dim))
        if self.padding_idx is not None:
            dweight[self.padding_idx] = 0.0           # the padding row gets no gradient (PyTorch)
        self.grads["weight"] = dweight.astype(self.dtype)
        return None

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class PositionalEmbedding(Module):
    """Learned absolute positions added to a sequence: ``y = x + weight[:L]`` for ``x`` of shape
    ``(N, L, embedding_dim)`` with ``L <= num_positions``.

    ``weight`` starts from :math:`N(0, \\text{std}^2)` (``std=1.0``, as ``nn.Embedding``; GPT-2 uses
    0.01). PyTorch has no such module.
    """

    def __init__(self, num_positions: int, embedding_dim: int, std: float = 1.0, *, dtype: Any = np.float64,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        self.num_positions = check_positive_int(num_positions, "num_positions", "PositionalEmbedding")
        self.embedding_dim = check_positive_int(embedding_dim, "embedding_dim", "PositionalEmbedding")
        self.dtype = np.dtype(dtype)
        self.params["weight"] = init.normal_(np.empty((self.num_positions, self.embedding_dim), dtype=self.dtype),
                                             0.0, float(std), init.get_rng(rng))

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "PositionalEmbedding")
        if x.ndim != 3 or x.shape[2] != self.embedding_dim or x.shape[1] > self.num_positions:
            raise ValueError(f"PositionalEmbedding: expected x of shape (N, L <= {self.num_positions}, "
                             f"{self.embedding_dim}), got {x.shape}")
        self._cache = (x.shape, x.dtype)
        out = np.asarray(x, dtype=np.float64) + self.params["weight"][: x.shape[1]]
        return out.astype(x.dtype, copy=False)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        shape, dtype = self._require_cache()
        dout = check_dout(dout, shape, "PositionalEmbedding.backward")
        dweight = np.zeros((self.num_positions, self.embedding_dim))
        dweight[: shape[1]] = np.asarray(dout, dtype=np.float64).sum(axis=0)
        self.grads["weight"] = dweight.astype(self.dtype)
        return np.array(dout, dtype=dtype)

    def extra_repr(self) -> str:
        return f"{self.num_positions}, {self.embedding_dim}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402


def _ids(case: Case, rng: np.random.Generator, dtype: Any) -> tuple[np.ndarray, ...]:
    return (rng.integers(0, case.kwargs["num_embeddings"], case.input_shapes[0]),)


def _make_embedding(case: Case, rng: np.random.Generator, dtype: Any, kwargs: dict) -> Embedding:
    return Embedding(**kwargs, dtype=dtype, rng=int(rng.integers(2**31)))


register(Spec(
    name="Embedding", cls=Embedding, pytorch="torch.nn.Embedding", input_names=("ids",), constant_inputs=("ids",),
    make_inputs=_ids, make_layer=_make_embedding,
    differences="Parameters are float64 by default (dtype=None); max_norm, scale_grad_by_freq, sparse and "
                "_freeze are accepted at their defaults only.",
    # padding_idx is not a registry case: PyTorch withholds that row's gradient on purpose, which a
    # numerical gradient check cannot confirm (tests/test_transformer.py checks it directly)
    cases=(Case("repeated-ids", {"num_embeddings": 4, "embedding_dim": 3}, ((3, 5),), modes=("train",)),),
))
register(Spec(
    name="PositionalEmbedding", cls=PositionalEmbedding, pytorch=None,
    cases=(Case("shorter-than-table", {"num_positions": 6, "embedding_dim": 3}, ((2, 4, 3),), modes=("train",)),),
))
