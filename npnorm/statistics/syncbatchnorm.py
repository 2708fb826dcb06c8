r"""Synchronized batch normalization over MPI: ``SyncBatchNorm``, as ``torch.nn.SyncBatchNorm``.

When data-parallel training splits a batch over :math:`W` processes, process :math:`r` holds
:math:`n_r` samples (any :math:`n_r \ge 0`, uneven allowed). ``SyncBatchNorm`` normalizes with the
statistics of the **union** of the local batches, so that its outputs, gradients and running
statistics equal single-process :class:`~npnorm.statistics.batchnorm.BatchNorm2d` on the
concatenated batch.

Forward: each process reduces its local input to three numbers per channel - the count
:math:`n_r`, the mean :math:`\mu_r` and the sum of squared deviations
:math:`M_r = \sum (x - \mu_r)^2` - and **one** collective (``Allgather`` of :math:`1 + 2C` doubles)
gives every process every triple. Each process then merges them in rank order with the exact
pairwise update of Chan, Golub & LeVeque (1983), for two sets :math:`A, B`:

.. math::
   n = n_A + n_B, \quad \delta = \mu_B - \mu_A                                    \tag{chan-merge}
.. math::
   \mu = \mu_A + \delta\,\frac{n_B}{n}                                            \tag{chan-merge}
.. math::
   M = M_A + M_B + \delta^2\,\frac{n_A n_B}{n}                                    \tag{chan-merge}

so :math:`\sigma^2 = M / n` is the biased variance of the union (no sum of squares, so no
cancellation), and the running variance is updated with the unbiased :math:`M / (n - 1)`.
Processes with :math:`n_r = 0` send zeros and are skipped by the merge, but still take part in the
collective. All processes merge the same table in the same order, so their statistics (and running
buffers) are bit-for-bit identical.

Backward: with :math:`g = \gamma\, dy`, BatchNorm's input gradient needs two sums over the *whole*
batch, :math:`\sum dy` and :math:`\sum dy\,\hat x` (per channel). They are exactly
:math:`\partial L/\partial\beta` and :math:`\partial L/\partial\gamma`; one ``Allreduce`` (sum) of
:math:`2C` doubles gives all three:

.. math::
   \frac{\partial L}{\partial x} = \gamma\, r\left(dy - \frac{1}{N}\sum dy
        - \hat x\,\frac{1}{N}\sum dy\,\hat x\right), \qquad r = (\sigma^2 + \epsilon)^{-1/2},
   \quad N = \sum_r n_r .                                                          \tag{syncbn-backward}

Deliberate differences from PyTorch (documented in the class): PyTorch gathers (mean, invstd,
count) and recovers :math:`M` as :math:`(1/\mathrm{invstd}^2 - \epsilon) n`, which loses precision
when the variance is far below ``eps``; here :math:`M` is sent directly. PyTorch leaves
``weight.grad`` / ``bias.grad`` local (DistributedDataParallel averages them later); here they are
the global sums (free: they are the reduced sums), so the layer alone equals BatchNorm on the full
batch and :func:`npnorm.nn.parallel.allreduce_gradients` skips them. PyTorch needs CUDA; this runs
on CPUs over any MPI.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import as_float_array, check_channels, check_dout
from ..base import Module
from .batchnorm import (_BatchNorm, _channel_view, _reduce_axes, batch_norm_eval_backward,
                        batch_norm_eval_forward)

__all__ = ["chan_merge", "local_moments", "sync_batch_norm_forward", "sync_batch_norm_backward",
           "SyncBatchNorm", "default_comm"]


def default_comm() -> Any:
    """``mpi4py.MPI.COMM_WORLD`` (imported on first use: a plain ``python`` process is an MPI world
    of size 1, no ``mpiexec`` needed)."""
    try:
        from mpi4py import MPI
    except ImportError as err:  # pragma: no cover - mpi4py is pinned in requirements.txt
        raise ImportError("SyncBatchNorm needs mpi4py and an MPI library (pip install -r "
                          "requirements.txt installs mpi4py and MPICH)") from err
    return MPI.COMM_WORLD


def _sum_op() -> Any:
    from mpi4py import MPI
    return MPI.SUM


def local_moments(x: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """The per-channel ``(count, mean, M2)`` of an ``(N, C, *)`` array, computed in float64.

    ``M2`` is the sum of squared deviations from the local mean (not the variance), so that sets of
    any size merge exactly with :func:`chan_merge`. An empty array gives ``(0, zeros, zeros)``.
    """
    c = x.shape[1]
    n = x.size // c if c else 0
    if n == 0:
        return 0, np.zeros(c), np.zeros(c)
    x64 = np.asarray(x, dtype=np.float64)
    axes = _reduce_axes(x.ndim)
    mean = x64.mean(axis=axes)
    xc = x64 - mean.reshape(_channel_view(x.ndim))
    return n, mean, np.sum(xc * xc, axis=axes)


def chan_merge(
    counts: np.ndarray, means: np.ndarray, m2s: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray]:
    """Merge per-set ``(count, mean, M2)`` triples into those of the union,
    eq. (chan-merge).

    Parameters
    ----------
    counts : array, shape (W,)
        Elements per channel in each set (0 allowed: that set is skipped).
    means, m2s : arrays, shape (W, C)
        Each set's per-channel mean and sum of squared deviations from it.

    Returns
    -------
    (n, mean, M2) of the union: an int and two ``(C,)`` float64 arrays
    (zeros when ``n == 0``). The sets are merged in the order given, so
    every process that merges the same table gets the same bits.
    """
    counts = np.asarray(counts, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    m2s = np.asarray(m2s, dtype=np.float64)
    n = 0.0
    mean = np.zeros(means.shape[1])
    m2 = np.zeros(means.shape[1])
    for n_b, mean_b, m2_b in zip(counts, means, m2s):
        if n_b == 0:
            continue
        total = n + n_b
        # eq. (chan-merge)
        delta = mean_b - mean
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta * delta * (n * n_b / total)
        n = total
    return int(n), mean, m2


def _allgather_moments(comm: Any, n: int, mean: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """The one forward collective: every process's ``[n, mean (C), M2 (C)]`` -> a (W, 1 + 2C) table."""
    packet = np.concatenate(([float(n)], mean, m2))
    table = np.empty((comm.Get_size(), packet.size))
    comm.Allgather(packet, table)
    return table


def sync_batch_norm_forward(
    x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float = 1e-5,
    comm: Any = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Training-mode batch norm with statistics over the local batches of every process in ``comm``.

    Every process of ``comm`` must call it (a process with an empty batch too): it runs one
    collective, ``comm.Allgather`` of ``1 + 2C`` float64 numbers per process.

    Parameters
    ----------
    x : ndarray, shape (n_r, C, *)
        This process's input, float32 or float64 (computed in float64); ``n_r = 0`` allowed.
    weight, bias : ndarray, shape (C,), or None
    eps : float
    comm : mpi4py communicator, optional
        Default ``MPI.COMM_WORLD``.

    Returns
    -------
    out : ndarray, the shape and dtype of ``x``
    cache : dict
        For :func:`sync_batch_norm_backward`, plus the global ``mean``, biased ``batch_var`` and
        ``count`` (the number of elements per channel over all processes).
    """
    comm = default_comm() if comm is None else comm
    n, mean_r, m2_r = local_moments(x)
    table = _allgather_moments(comm, n, mean_r, m2_r)
    c = x.shape[1]
    count, mean, m2 = chan_merge(table[:, 0], table[:, 1:1 + c], table[:, 1 + c:])
    var = m2 / count if count else np.zeros(c)
    view = _channel_view(x.ndim)
    rstd = (1.0 / np.sqrt(var + eps)).reshape(view)
    x_hat = (np.asarray(x, dtype=np.float64) - mean.reshape(view)) * rstd
    out = x_hat if weight is None else x_hat * weight.reshape(view)
    if bias is not None:
        out = out + bias.reshape(view)
    cache = {"x_hat": x_hat, "rstd": rstd, "count": count, "weight": weight, "has_bias": bias is not None,
             "axes": _reduce_axes(x.ndim), "view": view, "dtype": x.dtype, "comm": comm,
             "mean": mean, "batch_var": var}
    return out.astype(x.dtype, copy=False), cache


def sync_batch_norm_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Backward of :func:`sync_batch_norm_forward`, eq. (syncbn-backward):
    one ``Allreduce`` (sum) of the per-channel :math:`\\sum dy` and
    :math:`\\sum dy\\,\\hat x` (``2C`` doubles), which are also the
    *global* ``dbias`` and ``dweight``. Every process must call it.

    Returns ``(dx, dweight, dbias)`` (``None`` for a missing parameter);
    ``dx`` has this process's shape.
    """
    x_hat, rstd, count, view, axes = (cache["x_hat"], cache["rstd"],
                                      cache["count"], cache["view"],
                                      cache["axes"])
    dout = check_dout(dout, x_hat.shape, where="sync_batch_norm_backward")
    dy = np.asarray(dout, dtype=np.float64)
    local = np.concatenate((dy.sum(axis=axes),
                            np.sum(dy * x_hat, axis=axes)))
    total = np.empty_like(local)
    cache["comm"].Allreduce(local, total, op=_sum_op())
    c = local.size // 2
    sum_dy, sum_dy_xhat = total[:c], total[c:]
    weight = cache["weight"]
    scale = rstd if weight is None else rstd * weight.reshape(view)
    if count:
        dx = scale * (dy - (sum_dy / count).reshape(view)
                      - x_hat * (sum_dy_xhat / count).reshape(view))
    else:
        dx = dy.copy()
    dweight = sum_dy_xhat.copy() if weight is not None else None
    dbias = sum_dy.copy() if cache["has_bias"] else None
    return dx.astype(cache["dtype"], copy=False), dweight, dbias


class _SelfComm:
    """A communicator of one process that never talks (evaluation with local statistics of an empty
    batch: nothing to share, and no other process is waiting)."""

    def Get_size(self) -> int:  # noqa: N802 - mpi4py's names
        return 1

    def Allgather(self, send, recv) -> None:  # noqa: N802
        recv[...] = np.asarray(send).reshape(recv.shape)

    def Allreduce(self, send, recv, op=None) -> None:  # noqa: N802
        recv[...] = send


class SyncBatchNorm(_BatchNorm):
    """Batch normalization with statistics over every process of an MPI communicator, as
    ``torch.nn.SyncBatchNorm(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, process_group=None, device=None, dtype=None, *, bias=True)`` (PyTorch
    2.13's full signature; ``bias=False`` with ``affine=True`` keeps the learnable ``weight`` only).

    Input ``(N, C, *)`` (at least 2-D); equations in the module docstring. In training mode (and with
    ``track_running_stats=False`` in training mode only) the statistics are those of the union of
    the local batches of all processes in ``process_group`` - an ``mpi4py`` communicator, by default
    ``MPI.COMM_WORLD`` - so every process must call ``forward`` and ``backward`` the same number of
    times, including a process whose local batch is empty. The result equals ``BatchNorm`` on the
    concatenated batch: outputs, input gradients, ``grads['weight']`` / ``grads['bias']`` and the
    running statistics (identical on every process).

    In evaluation mode nothing is communicated: with running statistics it is BatchNorm's evaluation
    mode, and with ``track_running_stats=False`` each process normalizes with its *local* batch
    statistics (as PyTorch, so that one process can evaluate alone). A plain ``python`` process is an
    MPI world of size 1, where the layer is BatchNorm.

    Raises ``ValueError`` in training when the *global* number of values per channel is exactly 1
    (a local batch of one sample is fine when other processes hold more).

    Deliberate differences from PyTorch: ``grads['weight']`` and ``grads['bias']`` are the global
    sums (PyTorch leaves them local for DistributedDataParallel to average), so
    :func:`npnorm.nn.parallel.allreduce_gradients` does not reduce them again (``synced_grads``);
    the merge receives :math:`M_2` itself instead of recovering it from ``invstd`` and ``eps``;
    parameters and buffers are float64 by default (``dtype=None``; PyTorch: float32); ``device``
    is only ``None`` or ``"cpu"``: it runs on CPUs over MPI (PyTorch needs CUDA); ``eps <= 0`` is
    rejected (``ValueError``; PyTorch accepts it and divides by zero on a constant channel), and
    ``momentum`` outside [0, 1] is rejected (``None``: cumulative average, as PyTorch); no Numba
    twin (the statistics pass is BatchNorm's, the cost is the communication).
    """

    _ndims = (2, 3, 4, 5)
    _layout = "(N, C, *)"
    #: parameters whose gradients are already summed over the processes by ``backward``
    synced_grads = ("weight", "bias")

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group: Any = None,
                 device: Any = None, dtype: Any = None, *, bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias,
                         backend="numpy")
        self.process_group = process_group

    @property
    def comm(self) -> Any:
        """The communicator: ``process_group``, or ``MPI.COMM_WORLD`` when it is None."""
        return default_comm() if self.process_group is None else self.process_group

    def forward(self, x: np.ndarray) -> np.ndarray:
        name = type(self).__name__
        x = as_float_array(x, "x", name)
        if x.ndim < 2:
            raise ValueError(f"{name}: expected x of shape (N, C, *) (at least 2-D), got shape {x.shape}")
        check_channels(x, self.num_features, "num_features", 1, "x", name)
        w, b = self.params.get("weight"), self.params.get("bias")
        if not self.training:
            if self.track_running_stats:
                out, cache = batch_norm_eval_forward(x, self.running_mean, self.running_var, w, b, self.eps)
            else:   # local batch statistics, no communication (PyTorch's behaviour)
                out, cache = self._local_forward(x, w, b)
            self._cache = ("eval", cache)
            return out
        out, cache = sync_batch_norm_forward(x, w, b, self.eps, self.comm)
        count = cache["count"]
        if count == 1:
            raise ValueError(
                f"{name}: expected more than 1 value per channel over all processes when training, got "
                f"1 (local input of shape {x.shape}); use a larger batch or call .eval()")
        if self.track_running_stats:
            self.num_batches_tracked += 1
            if count > 1:
                self._update_running_stats(cache["mean"], cache["batch_var"], count, counted=True)
        self._cache = ("train", cache)
        return out

    def _local_forward(self, x, w, b):
        from .batchnorm import batch_norm_forward
        if x.size == 0:
            out, cache = sync_batch_norm_forward(x, w, b, self.eps, _SelfComm())
            return out, cache
        if x.size // self.num_features <= 1:
            raise ValueError(f"{type(self).__name__}: expected more than 1 value per channel when using "
                             f"batch statistics, got input of shape {x.shape}")
        out, cache = batch_norm_forward(x, w, b, self.eps)
        return out, ("local", cache)

    def _update_running_stats(self, mean: np.ndarray, var: np.ndarray, m: int, counted: bool = False) -> None:
        if not counted:
            self.num_batches_tracked += 1
        factor = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
        unbiased = var * (m / (m - 1))
        self.running_mean = ((1 - factor) * self.running_mean + factor * mean).astype(self.dtype)
        self.running_var = ((1 - factor) * self.running_var + factor * unbiased).astype(self.dtype)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        mode, cache = self._require_cache()
        name = f"{type(self).__name__}.backward"
        if mode == "train":
            check_dout(dout, cache["x_hat"].shape, where=name)
            dx, dweight, dbias = sync_batch_norm_backward(dout, cache)
        elif isinstance(cache, dict) and "comm" in cache:   # eval, local statistics, empty batch
            dx, dweight, dbias = sync_batch_norm_backward(dout, cache)
        elif isinstance(cache, tuple):      # eval mode with local batch statistics
            from .batchnorm import batch_norm_backward
            check_dout(dout, cache[1]["x_hat"].shape, where=name)
            dx, dweight, dbias = batch_norm_backward(dout, cache[1])
        else:
            check_dout(dout, cache["x_hat"].shape, where=name)
            dx, dweight, dbias = batch_norm_eval_backward(dout, cache)
        if "weight" in self.params:
            self.grads["weight"] = dweight.astype(self.dtype, copy=False)
        if "bias" in self.params:
            self.grads["bias"] = dbias.astype(self.dtype, copy=False)
        return dx

    @classmethod
    def convert_sync_batchnorm(cls, module: Module, process_group: Any = None) -> Module:
        """Replace every ``BatchNorm1d`` / ``BatchNorm2d`` in ``module`` (itself, or inside a
        ``Sequential``, recursively) by a ``SyncBatchNorm`` with the same arguments, parameters and
        buffers, as ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``. Containers are changed in
        place; the (possibly new) module is returned."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            new = cls(module.num_features, module.eps, module.momentum, module.affine,
                      module.track_running_stats, process_group, dtype=module.dtype,
                      bias=not module.affine or "bias" in module.params)
            new.params = {k: v.copy() for k, v in module.params.items()}
            if module.track_running_stats:
                new.running_mean = module.running_mean.copy()
                new.running_var = module.running_var.copy()
                new.num_batches_tracked = module.num_batches_tracked
            new.training = module.training
            return new
        layers = getattr(module, "layers", None)
        if isinstance(layers, list):
            for i, layer in enumerate(layers):
                layers[i] = cls.convert_sync_batchnorm(layer, process_group)
        return module

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", process_group={self.process_group!r}" if self.process_group else "")


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="SyncBatchNorm", cls=SyncBatchNorm, pytorch="torch.nn.SyncBatchNorm",
    reduces_over="N (and every spatial axis) per channel, over the local batches of all MPI processes",
    reference="Peng et al., 2018 (MegDet); Zhang et al., 2018",
    differences=("grads['weight'] / grads['bias'] are global sums (PyTorch: local, averaged by DDP); "
                 "M2 is sent instead of invstd; runs on CPUs over MPI (mpi4py); float64 parameters"),
    cases=(
        Case("NC", {"num_features": 3}, ((6, 3),)),
        Case("NCHW", {"num_features": 2}, ((3, 2, 2, 3),)),
        Case("no-affine", {"num_features": 2, "affine": False}, ((3, 2, 4),)),
        Case("no-running-stats", {"num_features": 2, "track_running_stats": False}, ((4, 2, 3),)),
    ),
))
