r"""FixNorm (Nguyen & Chiang, 2018): word embeddings of one fixed length.

Each looked-up embedding row is L2-normalized and multiplied by a scale :math:`g`,

.. math:: y_t = g\,\frac{E_{i_t}}{\max(\lVert E_{i_t}\rVert_2, \epsilon)}, \qquad g_0 = \sqrt d,   \tag{FixNorm}

so every token enters the network with the same norm and only its direction is learned. In
Nguyen & Salazar's code (used with ScaleNorm) :math:`g = \sqrt d` is a fixed factor, the embedding
table starts from :math:`U(-0.01, 0.01)`, and a tied output layer uses the normalized rows without
:math:`g`. Here :math:`g` is learned by default (``learn_scale=True``, as in Nguyen & Chiang's
description); ``learn_scale=False`` gives the fixed factor.

Backward: the token ids are not differentiable; with :math:`\hat E_i` the normalized row,
:math:`\partial L/\partial g = \sum_t \hat E_{i_t}\cdot dy_t` and every occurrence of row :math:`i`
adds (L2-back) of :math:`g\,dy_t` to :math:`\partial L/\partial E_i`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._checks import check_dout, check_positive_int
from ..base import Module
from ..nn.init import get_rng
from ..nn.embedding import check_token_ids
from .l2norm import l2_normalize_backward, l2_normalize_forward

__all__ = ["FixNorm"]


class FixNorm(Module):
    """Fixed-norm word embeddings: ``scale * normalize(weight[ids])``.

    Parameters
    ----------
    num_embeddings, embedding_dim : int
    scale : float or None, default None
        Initial :math:`g`; ``None`` gives :math:`\\sqrt{d}`.
    learn_scale : bool, default True
        ``scale`` is a learned 0-d parameter; ``False`` keeps it fixed (the authors' code).
    eps : float, default 1e-12
        Floor on the row norm (``F.normalize``).
    rng : Generator or int, optional
        ``weight`` starts from :math:`U(-0.01, 0.01)` (the authors' initialization).

    Input: integer ids of any shape; output ``ids.shape + (embedding_dim,)``. ``backward`` returns
    ``None`` (ids are not differentiable) and fills ``grads["weight"]`` (and ``grads["scale"]``).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, scale: float | None = None,
                 learn_scale: bool = True, eps: float = 1e-12, *, dtype: Any = np.float64,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        self.num_embeddings = check_positive_int(num_embeddings, "num_embeddings", "FixNorm")
        self.embedding_dim = check_positive_int(embedding_dim, "embedding_dim", "FixNorm")
        self.eps = float(eps)
        self.dtype = np.dtype(dtype)
        self.learn_scale = bool(learn_scale)
        g = math.sqrt(self.embedding_dim) if scale is None else float(scale)
        self.params["weight"] = get_rng(rng).uniform(-0.01, 0.01, (self.num_embeddings, self.embedding_dim)
                                                     ).astype(self.dtype)
        if self.learn_scale:
            self.params["scale"] = np.asarray(g, dtype=self.dtype)
        else:
            self.scale = g

    def _g(self) -> float:
        return float(self.params["scale"]) if self.learn_scale else self.scale

    def forward(self, ids: np.ndarray) -> np.ndarray:
        ids = check_token_ids(ids, self.num_embeddings, "FixNorm")
        rows = self.params["weight"][ids]                      # fancy indexing copies
        y, l2 = l2_normalize_forward(rows.astype(np.float64), -1, self.eps)
        self._cache = {"ids": ids.copy(), "l2": l2, "g": self._g()}
        return (self._g() * y).astype(self.dtype, copy=False)

    def backward(self, dout: np.ndarray) -> None:
        cache = self._require_cache()
        dout = check_dout(dout, cache["l2"]["y"].shape, "FixNorm.backward")
        dy = np.asarray(dout, dtype=np.float64)
        drows = l2_normalize_backward(cache["g"] * dy, cache["l2"])
        dweight = np.zeros((self.num_embeddings, self.embedding_dim))
        np.add.at(dweight, cache["ids"].reshape(-1), drows.reshape(-1, self.embedding_dim))
        self.grads["weight"] = dweight.astype(self.dtype)
        if self.learn_scale:
            self.grads["scale"] = np.asarray(np.sum(dy * cache["l2"]["y"]), dtype=self.dtype)
        return None

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, learn_scale={self.learn_scale}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402


def _ids(case: Case, rng: np.random.Generator, dtype: Any) -> tuple[np.ndarray, ...]:
    """Token ids with repeats (so the scatter-add of the backward pass is exercised)."""
    return (rng.integers(0, case.kwargs["num_embeddings"], case.input_shapes[0]),)


def _make_fixnorm(case: Case, rng: np.random.Generator, dtype: Any, kwargs: dict) -> FixNorm:
    kwargs = dict(kwargs)
    kwargs.setdefault("rng", int(rng.integers(2**31)))
    layer = FixNorm(**kwargs, dtype=dtype)
    return layer


register(Spec(
    name="FixNorm", cls=FixNorm, pytorch=None, reference="Nguyen & Chiang, 2018",
    reduces_over="each embedding row", input_names=("ids",), constant_inputs=("ids",), make_inputs=_ids, make_layer=_make_fixnorm,
    differences="The scale g is learned by default (learn_scale=False: the fixed sqrt(d) of the "
                "authors' code).",
    cases=(
        Case("learned-scale", {"num_embeddings": 5, "embedding_dim": 4}, ((3, 6),), modes=("train",)),
        Case("fixed-scale", {"num_embeddings": 4, "embedding_dim": 3, "learn_scale": False}, ((2, 5),),
             modes=("train",)),
    ),
))
