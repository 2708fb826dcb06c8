r"""Normalization with a learned affine map per class (or per style), looked up by an integer label.

**Conditional batch normalization** as class-conditional GANs use it (Miyato & Koyama, 2018; BigGAN
generalizes the table to a projection): BatchNorm *without* its own affine, then the row of a
``(num_classes, C)`` table of scales (initialised to 1) and shifts (initialised to 0) chosen by each
sample's label :math:`y_n`:

.. math:: \mathrm{CBN}(x, y)_{n,c} = \gamma_{y_n, c}\, \hat x_{n,c} + \beta_{y_n, c}, \tag{CBN}

where :math:`\hat x` is the batch-normalized input (batch statistics in training, running
statistics in evaluation, updated exactly as ``BatchNorm2d``). **Conditional instance
normalization** (Dumoulin et al., 2017: one table row per painting style) is the same with instance
statistics (per sample and channel over H, W).

The labels are integers: they receive no gradient. The table's gradient only reaches the rows that
occur in the batch, accumulated over the samples that share a label:

.. math:: \frac{\partial L}{\partial \gamma_{k,c}} = \sum_{n: y_n = k} \sum_{h,w} g_{n,c,h,w}\,\hat x_{n,c,h,w},
   \qquad \frac{\partial L}{\partial \beta_{k,c}} = \sum_{n: y_n = k} \sum_{h,w} g_{n,c,h,w},

and :math:`\partial L/\partial \hat x = g\,\gamma_{y_n}`, then the normalization's own backward.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import as_float_array, check_dout, check_eps, check_ndim, check_positive_int
from ..base import Module
from ..statistics.batchnorm import BatchNorm2d
from ..statistics.standardize import standardize_backward, standardize_forward
from ._modulation import check_labels

__all__ = ["class_affine_forward", "class_affine_backward", "ConditionalBatchNorm2d", "ConditionalInstanceNorm2d"]


def class_affine_forward(x_hat: np.ndarray, labels: np.ndarray, weight: np.ndarray, bias: np.ndarray
                         ) -> tuple[np.ndarray, dict[str, Any]]:
    """``y = weight[labels] * x_hat + bias[labels]`` per channel (axis 1), equation (CBN) after the norm."""
    x_hat = np.array(x_hat, dtype=np.float64)
    labels = np.array(labels, dtype=np.int64)
    view = x_hat.shape[:2] + (1,) * (x_hat.ndim - 2)
    gamma = np.asarray(weight, dtype=np.float64)[labels].reshape(view)
    out = x_hat * gamma + np.asarray(bias, dtype=np.float64)[labels].reshape(view)
    return out, {"x_hat": x_hat, "labels": labels, "gamma": gamma, "table": np.shape(weight)}


def class_affine_backward(dout: np.ndarray, cache: dict[str, Any]):
    """``(dx_hat, dweight, dbias)``; the tables' gradients are scattered to
    the labels' rows."""
    g = np.asarray(dout, dtype=np.float64)
    axes = tuple(range(2, g.ndim))
    dweight = np.zeros(cache["table"])
    dbias = np.zeros(cache["table"])
    np.add.at(dweight, cache["labels"], (g * cache["x_hat"]).sum(axis=axes))
    np.add.at(dbias, cache["labels"], g.sum(axis=axes))
    return g * cache["gamma"], dweight, dbias


class _ClassTable(Module):
    """Shared bookkeeping: the ``(num, C)`` tables ``weight`` (ones) and ``bias`` (zeros)."""

    _count_arg = "num_classes"
    _label_name = "y"

    def __init__(self, num_features: int, num: int, eps: float, dtype: Any) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_features = check_positive_int(num_features, "num_features", name)
        self._num = check_positive_int(num, self._count_arg, name)
        self.eps = check_eps(eps, where=name)
        self.dtype = np.dtype(dtype)
        self.params["weight"] = np.ones((self._num, self.num_features), dtype=self.dtype)
        self.params["bias"] = np.zeros((self._num, self.num_features), dtype=self.dtype)

    def _validate(self, x: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
        name = type(self).__name__
        x = as_float_array(x, "x", name)
        check_ndim(x, (4,), "(N, C, H, W)", "x", name)
        if x.shape[1] != self.num_features:
            raise ValueError(f"{name}: x has {x.shape[1]} channels (shape {x.shape}) but the layer was built "
                             f"with num_features={self.num_features}")
        return x, check_labels(labels, x.shape[0], self._num, self._label_name, self._count_arg, name)

    def _table_grads(self, dweight: np.ndarray, dbias: np.ndarray) -> None:
        self.grads["weight"] = dweight.astype(self.dtype, copy=False)
        self.grads["bias"] = dbias.astype(self.dtype, copy=False)


class ConditionalBatchNorm2d(_ClassTable):
    """Class-conditional BatchNorm: ``y = layer(x, labels)``; ``backward(dy)`` returns ``dx`` only.

    ``x``: ``(N, num_features, H, W)``; ``labels``: integers ``(N,)`` in ``[0, num_classes)``.
    Parameters ``weight`` ``(num_classes, num_features)`` (ones) and ``bias`` (zeros); buffers
    ``running_mean``, ``running_var``, ``num_batches_tracked`` exactly as ``torch.nn.BatchNorm2d``
    (``momentum``, unbiased running variance, running statistics in eval mode). Not in PyTorch
    itself: BatchNorm2d(affine=False) followed by two ``nn.Embedding`` tables, as in the class-
    conditional GANs (Miyato & Koyama 2018; de Vries et al. 2017 add the table to a pretrained affine).

    Rejected on purpose (as ``BatchNorm2d``): ``eps <= 0`` and ``momentum`` outside [0, 1]
    (``None``: a cumulative average, as PyTorch).
    """

    def __init__(self, num_features: int, num_classes: int, eps: float = 1e-5, momentum: float | None = 0.1, *,
                 dtype: Any = np.float64) -> None:
        super().__init__(num_features, num_classes, eps, dtype)
        self.num_classes = self._num
        self.bn = BatchNorm2d(num_features, eps=eps, momentum=momentum, affine=False, dtype=dtype, backend="numpy")
        self.momentum = self.bn.momentum

    # the running statistics are BatchNorm's: exposed under BatchNorm's names
    running_mean = property(lambda self: self.bn.running_mean,
                            lambda self, v: setattr(self.bn, "running_mean", v))
    running_var = property(lambda self: self.bn.running_var,
                           lambda self, v: setattr(self.bn, "running_var", v))
    num_batches_tracked = property(lambda self: self.bn.num_batches_tracked,
                                   lambda self, v: setattr(self.bn, "num_batches_tracked", v))
    track_running_stats = property(lambda self: self.bn.track_running_stats)

    def children(self) -> list[Module]:
        return [self.bn]

    def forward(self, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        x, labels = self._validate(x, labels)
        x_hat = self.bn(np.array(x, dtype=np.float64))               # a copy: nothing aliases x
        out, cache = class_affine_forward(x_hat, labels, self.params["weight"], self.params["bias"])
        self._cache = (cache, x.shape, x.dtype)
        return out.astype(x.dtype, copy=False)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache, shape, dtype = self._require_cache()
        dout = check_dout(dout, shape, "ConditionalBatchNorm2d.backward")
        dx_hat, dweight, dbias = class_affine_backward(dout, cache)
        self._table_grads(dweight, dbias)
        return np.asarray(self.bn.backward(dx_hat)).astype(dtype, copy=False)

    def extra_repr(self) -> str:
        return f"{self.num_features}, {self.num_classes}, eps={self.eps}, momentum={self.momentum}"


class ConditionalInstanceNorm2d(_ClassTable):
    """Conditional instance normalization (Dumoulin et al., 2017): one (gamma, beta) row per style.

    ``y = layer(x, styles)``; ``backward(dy)`` returns ``dx``. ``x``: ``(N, num_features, H, W)``
    with ``H W > 1``; ``styles``: integers ``(N,)`` in ``[0, num_styles)``. Instance statistics
    (per sample and channel over H, W, biased variance, ``eps`` inside the root), no running
    statistics, same in train and eval. Parameters ``weight`` ``(num_styles, C)`` (ones), ``bias`` (zeros).
    """

    _count_arg = "num_styles"
    _label_name = "styles"

    def __init__(self, num_features: int, num_styles: int, eps: float = 1e-5, *, dtype: Any = np.float64) -> None:
        super().__init__(num_features, num_styles, eps, dtype)
        self.num_styles = self._num

    def forward(self, x: np.ndarray, styles: np.ndarray) -> np.ndarray:
        x, styles = self._validate(x, styles)
        if x.shape[2] * x.shape[3] < 2:
            raise ValueError(f"ConditionalInstanceNorm2d: expected more than 1 spatial element per channel, "
                             f"got x of shape {x.shape}")
        x_hat, n_cache = standardize_forward(x, (2, 3), self.eps)
        out, cache = class_affine_forward(x_hat, styles, self.params["weight"], self.params["bias"])
        self._cache = (n_cache, cache, x.shape, x.dtype)
        return out.astype(x.dtype, copy=False)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        n_cache, cache, shape, dtype = self._require_cache()
        dout = check_dout(dout, shape, "ConditionalInstanceNorm2d.backward")
        dx_hat, dweight, dbias = class_affine_backward(dout, cache)
        self._table_grads(dweight, dbias)
        return standardize_backward(dx_hat, n_cache).astype(dtype, copy=False)

    def extra_repr(self) -> str:
        return f"{self.num_features}, {self.num_styles}, eps={self.eps}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402


def _x_and_labels(case: Case, rng: np.random.Generator, dtype: Any) -> tuple[np.ndarray, ...]:
    xs, ys = case.input_shapes
    num = case.kwargs.get("num_classes", case.kwargs.get("num_styles"))
    labels = np.arange(ys[0]) % num           # every row of the table is used ...
    labels[-1] = 0                            # ... and one twice (the scatter-add must accumulate)
    return 5.0 + 3.0 * rng.standard_normal(xs), rng.permutation(labels)


register(Spec(
    name="ConditionalBatchNorm2d", cls=ConditionalBatchNorm2d, pytorch=None,
    reference="Miyato & Koyama, 2018", reduces_over="N, H, W, per channel; affine per class and channel",
    differences="Not in PyTorch: BatchNorm2d(affine=False) + per-class weight/bias tables (ones/zeros).",
    input_names=("x", "y"), constant_inputs=("y",), make_inputs=_x_and_labels,
    cases=(Case("NCHW", {"num_features": 3, "num_classes": 3}, ((4, 3, 2, 2), (4,))),),
))
register(Spec(
    name="ConditionalInstanceNorm2d", cls=ConditionalInstanceNorm2d, pytorch=None,
    reference="Dumoulin et al., 2017", reduces_over="H, W, per sample and channel; affine per style and channel",
    differences="Not in PyTorch: InstanceNorm2d (no affine) + per-style weight/bias tables (ones/zeros).",
    input_names=("x", "styles"), constant_inputs=("styles",), make_inputs=_x_and_labels,
    cases=(Case("NCHW", {"num_features": 2, "num_styles": 2}, ((3, 2, 3, 2), (3,)), modes=("train",)),),
))
