"""Data-parallel training over MPI (``mpi4py``), the CPU counterpart of PyTorch's
``DistributedDataParallel``, and the checks that it equals training on one process.

The recipe, for ``W`` processes started by ``mpiexec -n W python train.py``:

1. every process builds the same model (same seed; or call :func:`broadcast_parameters`);
2. each process takes its shard of the global batch (:func:`shard`: contiguous, sizes differ by at
   most one, a shard may be empty);
3. each process runs forward and backward on its shard - *every* process, also one with an empty
   shard, because :class:`~npnorm.statistics.syncbatchnorm.SyncBatchNorm` communicates in both - with
   the loss scaled by its share ``n_r / N`` of the global batch, so that the local gradients add up to
   the gradient of the global mean loss;
4. :func:`allreduce_gradients` sums them (one ``Allreduce`` for all parameters; with equal shards
   this is the plain average of the per-process gradients, as DistributedDataParallel computes) and
   every process takes the same optimizer step, so the parameters stay identical.

:func:`train_step` does 2-4. The same program runs across machines by giving ``mpiexec`` a host
file (MPICH's Hydra launcher; one host per line, ``host:slots``)::

    $ cat hosts
    node1:2
    node2:2
    $ mpiexec -f hosts -n 4 python train.py

(the project directory and its ``.venv`` at the same path on every host, password-less ``ssh``
between them; Open MPI's ``mpiexec`` spells it ``--hostfile hosts``).

``python -m npnorm.nn.parallel`` (under ``mpiexec``) runs :func:`verify_sync_batchnorm` and
:func:`verify_data_parallel_training` and prints their worst errors as JSON on rank 0; the test
suite and the book launch it with ``mpiexec -n 2`` and ``-n 3``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from ..base import Module
from ..statistics.batchnorm import BatchNorm1d, BatchNorm2d
from ..statistics.syncbatchnorm import SyncBatchNorm, default_comm

__all__ = ["shard_sizes", "shard", "broadcast_parameters", "allreduce_gradients", "train_step",
           "parameters_identical", "verify_sync_batchnorm", "verify_data_parallel_training"]


def _leaf_modules(model: Module) -> list[Module]:
    # containers whose params are views of their children's (Sequential) are skipped
    return [m for m in model.modules() if not isinstance(getattr(type(m), "params", None), property)]


def shard_sizes(n: int, world_size: int) -> list[int]:
    """Sizes of the contiguous shards of ``n`` samples over ``world_size`` processes, in rank order
    (as ``np.array_split``: the first ``n % world_size`` shards have one more)."""
    q, r = divmod(int(n), int(world_size))
    return [q + (i < r) for i in range(world_size)]


def shard(array: np.ndarray, comm: Any = None, sizes: list[int] | None = None) -> np.ndarray:
    """This process's contiguous shard (a copy) of ``array`` along axis 0; ``sizes`` overrides
    :func:`shard_sizes` (one entry per process, any split, zeros allowed)."""
    comm = default_comm() if comm is None else comm
    sizes = shard_sizes(len(array), comm.Get_size()) if sizes is None else list(sizes)
    if len(sizes) != comm.Get_size() or sum(sizes) != len(array) or min(sizes) < 0:
        raise ValueError(f"shard: sizes must be {comm.Get_size()} non-negative numbers adding up to "
                         f"{len(array)}, got {sizes}")
    start = sum(sizes[:comm.Get_rank()])
    return np.array(array[start:start + sizes[comm.Get_rank()]])


def broadcast_parameters(model: Module, comm: Any = None, root: int = 0) -> None:
    """Copy ``root``'s parameters and running statistics to every process (one ``Bcast`` each)."""
    comm = default_comm() if comm is None else comm
    for m in _leaf_modules(model):
        for value in m.params.values():
            comm.Bcast(value, root=root)
        for buf in ("running_mean", "running_var"):
            if getattr(m, buf, None) is not None:
                comm.Bcast(getattr(m, buf), root=root)


def allreduce_gradients(model: Module, comm: Any = None, extra: np.ndarray | None = None) -> np.ndarray | None:
    """Sum every parameter gradient of ``model`` over the processes, in place, in **one**
    ``Allreduce`` of a single flat float64 buffer.

    Gradients a layer already reduced itself (``SyncBatchNorm``'s, listed in its ``synced_grads``)
    are left alone. Each process's loss must have been scaled by its share ``n_r / N`` of the global
    batch (as :func:`train_step` does), so that the sum is the gradient of the global mean loss.
    ``extra`` (a small float64 vector, e.g. the local loss) rides along in the same message; its sum
    over the processes is returned.
    """
    comm = default_comm() if comm is None else comm
    from mpi4py import MPI
    slots = []
    for m in _leaf_modules(model):
        skip = set(getattr(m, "synced_grads", ()))
        for k in m.params:
            if k not in skip and k in m.grads:
                slots.append((m, k))
    parts = [np.asarray(m.grads[k], dtype=np.float64).ravel() for m, k in slots]
    if extra is not None:
        parts.append(np.asarray(extra, dtype=np.float64).ravel())
    local = np.concatenate(parts) if parts else np.zeros(0)
    total = np.empty_like(local)
    comm.Allreduce(local, total, op=MPI.SUM)
    offset = 0
    for m, k in slots:
        g = m.grads[k]
        m.grads[k] = total[offset:offset + g.size].reshape(g.shape).astype(g.dtype, copy=False)
        offset += g.size
    return total[offset:] if extra is not None else None


def train_step(model: Module, criterion: Any, optimizer: Any, x_local: np.ndarray, y_local: np.ndarray,
               comm: Any = None, global_batch: int | None = None) -> float:
    """One data-parallel step on this process's shard; returns the loss of the global batch.

    Every process must call it (with an empty shard too). ``global_batch`` is ``N``, the number of
    samples over all processes; when None it is found with one extra ``Allreduce`` of the counts.
    ``criterion`` must average over the samples (``reduction='mean'``).
    """
    comm = default_comm() if comm is None else comm
    n_local = len(x_local)
    if global_batch is None:
        from mpi4py import MPI
        global_batch = comm.allreduce(n_local, op=MPI.SUM)
    optimizer.zero_grad()
    out = model(x_local)
    if n_local:
        loss = criterion(out, y_local)
        dout = criterion.backward(scale=n_local / global_batch)
        local_loss = loss * n_local / global_batch
    else:
        dout, local_loss = np.zeros_like(out), 0.0
    model.backward(dout)
    total_loss = allreduce_gradients(model, comm, extra=np.array([local_loss]))
    optimizer.step()
    return float(total_loss[0])


def _flat_state(model: Module) -> np.ndarray:
    parts = []
    for m in _leaf_modules(model):
        parts += [np.asarray(v, dtype=np.float64).ravel() for v in m.params.values()]
        parts += [np.asarray(getattr(m, b), dtype=np.float64).ravel() for b in ("running_mean", "running_var")
                  if getattr(m, b, None) is not None]
    return np.concatenate(parts) if parts else np.zeros(0)


def parameters_identical(model: Module, comm: Any = None) -> bool:
    """True when every process holds bit-identical parameters and running statistics."""
    comm = default_comm() if comm is None else comm
    state = _flat_state(model)
    table = np.empty((comm.Get_size(), state.size))
    comm.Allgather(state, table)
    return bool(np.array_equal(table, np.broadcast_to(table[0], table.shape)))


# -- checks: SyncBatchNorm on shards == BatchNorm on the whole batch ---------------------------------

def _max_over_ranks(comm: Any, errors: dict[str, float]) -> dict[str, float]:
    gathered = comm.allgather(errors)
    return {k: max(e[k] for e in gathered) for k in errors}


def verify_sync_batchnorm(comm: Any = None, sizes: list[int] | None = None, seed: int = 0) -> dict[str, float]:
    """Run ``SyncBatchNorm`` on this process's part of a batch split ``sizes`` (one per process) and
    ``BatchNorm`` on the whole batch, and return the worst absolute differences over every process:
    outputs, input gradients, parameter gradients, running statistics (after two training steps),
    evaluation outputs, for an ``(N, 3, 4, 5)`` input (affine, ``momentum=0.1``) and an ``(N, 4)``
    input (no affine, ``momentum=None``), in float64. ``running_stats_identical`` is 1.0 when every
    process ends with the same bits (0.0 otherwise)."""
    comm = default_comm() if comm is None else comm
    world = comm.Get_size()
    sizes = shard_sizes(9, world) if sizes is None else list(sizes)
    errors = {"out": 0.0, "dx": 0.0, "dweight": 0.0, "dbias": 0.0, "running_mean": 0.0, "running_var": 0.0,
              "eval_out": 0.0}
    identical = True
    for shape, kwargs, ref_cls in (((3, 4, 5), {"momentum": 0.1}, BatchNorm2d),
                                   ((4,), {"momentum": None, "affine": False}, BatchNorm1d)):
        rng = np.random.default_rng(seed)
        c = shape[0]
        ref = ref_cls(c, backend="numpy", **kwargs)
        sync = SyncBatchNorm(c, process_group=comm, **kwargs)
        for k in ref.params:
            ref.params[k] = rng.normal(1.0, 0.5, c)
            sync.params[k] = ref.params[k].copy()
        ref.running_mean, ref.running_var = rng.normal(0, 1, c), rng.uniform(0.5, 2, c)
        sync.running_mean, sync.running_var = ref.running_mean.copy(), ref.running_var.copy()
        n = sum(sizes)
        lo = sum(sizes[:comm.Get_rank()])
        hi = lo + sizes[comm.Get_rank()]
        for step in range(2):
            x = 5.0 + 3.0 * rng.standard_normal((n, *shape)) + rng.normal(0, 2, (1, c) + (1,) * (len(shape) - 1))
            dy = rng.standard_normal(x.shape)
            y_ref = ref(x)
            dx_ref = ref.backward(dy)
            y = sync(x[lo:hi].copy())
            dx = sync.backward(dy[lo:hi].copy())
            errors["out"] = max(errors["out"], float(np.max(np.abs(y - y_ref[lo:hi]), initial=0.0)))
            errors["dx"] = max(errors["dx"], float(np.max(np.abs(dx - dx_ref[lo:hi]), initial=0.0)))
            for k in ref.grads:
                errors["d" + k] = max(errors["d" + k], float(np.max(np.abs(sync.grads[k] - ref.grads[k]))))
        for buf in ("running_mean", "running_var"):
            errors[buf] = max(errors[buf], float(np.max(np.abs(getattr(sync, buf) - getattr(ref, buf)))))
        if sync.num_batches_tracked != ref.num_batches_tracked:
            errors["running_mean"] = float("inf")
        mine = np.concatenate([sync.running_mean, sync.running_var])
        table = np.empty((world, mine.size))
        comm.Allgather(mine, table)
        identical &= bool(np.array_equal(table, np.broadcast_to(mine, table.shape)))
        ref.eval()
        sync.eval()
        x = 5.0 + 3.0 * rng.standard_normal((n, *shape))
        errors["eval_out"] = max(errors["eval_out"],
                                 float(np.max(np.abs(sync(x[lo:hi].copy()) - ref(x)[lo:hi]), initial=0.0)))
    result = _max_over_ranks(comm, errors)
    result["running_stats_identical"] = 1.0 if comm.allreduce(identical, op=_land()) else 0.0
    return result


def _land() -> Any:
    from mpi4py import MPI
    return MPI.LAND


def _small_model(norm: Module, seed: int) -> Module:
    from .layers import Linear, ReLU, Sequential
    rng = np.random.default_rng(seed)
    return Sequential(Linear(5, 8, rng=rng), norm, ReLU(), Linear(8, 3, rng=rng))


def verify_data_parallel_training(comm: Any = None, sizes: list[int] | None = None, steps: int = 5,
                                  seed: int = 0) -> dict[str, float]:
    """Train ``Linear -> SyncBatchNorm -> ReLU -> Linear`` data-parallel (:func:`train_step`, SGD
    with momentum) on batches split ``sizes`` over the processes, and the same network with
    ``BatchNorm1d`` on the whole batches in one process; return the worst parameter and running
    statistic difference after ``steps`` steps, the worst loss difference, and
    ``parameters_identical`` (1.0 when every process holds the same bits after every step)."""
    from .losses import CrossEntropyLoss
    from .optim import SGD
    comm = default_comm() if comm is None else comm
    world = comm.Get_size()
    sizes = shard_sizes(12, world) if sizes is None else list(sizes)
    n = sum(sizes)
    ref = _small_model(BatchNorm1d(8, backend="numpy"), seed)
    dp = SyncBatchNorm.convert_sync_batchnorm(_small_model(BatchNorm1d(8, backend="numpy"), seed), comm)
    opt_ref, opt_dp = SGD(ref, lr=0.1, momentum=0.9), SGD(dp, lr=0.1, momentum=0.9)
    crit_ref, crit_dp = CrossEntropyLoss(), CrossEntropyLoss()
    data = np.random.default_rng(seed + 1)
    loss_err, identical = 0.0, True
    for _ in range(steps):
        x = data.normal(0.0, 2.0, (n, 5)) + 1.0
        y = data.integers(0, 3, n)
        opt_ref.zero_grad()
        loss_ref = crit_ref(ref(x), y)
        ref.backward(crit_ref.backward())
        opt_ref.step()
        loss = train_step(dp, crit_dp, opt_dp, shard(x, comm, sizes), shard(y, comm, sizes), comm, global_batch=n)
        loss_err = max(loss_err, abs(loss - loss_ref))
        identical &= parameters_identical(dp, comm)
    param_err = float(np.max(np.abs(_flat_state(dp) - _flat_state(ref))))
    result = _max_over_ranks(comm, {"parameters": param_err, "loss": loss_err})
    result["parameters_identical"] = 1.0 if comm.allreduce(identical, op=_land()) else 0.0
    return result


def main(argv: list[str] | None = None) -> int:
    """``mpiexec -n W python -m npnorm.nn.parallel [--sizes 3,0,5 ...]``: run both checks for each
    split and print one JSON object per split on rank 0 (exit status 1 if any error exceeds 1e-12)."""
    parser = argparse.ArgumentParser(prog="python -m npnorm.nn.parallel", description=main.__doc__)
    parser.add_argument("--sizes", action="append", default=[],
                        help="comma-separated local batch sizes, one per process (repeatable)")
    parser.add_argument("--tol", type=float, default=1e-12)
    args = parser.parse_args(argv)
    comm = default_comm()
    splits = [[int(s) for s in arg.split(",")] for arg in args.sizes] or [None]
    ok = True
    for sizes in splits:
        if sizes is not None and len(sizes) != comm.Get_size():
            raise SystemExit(f"--sizes {sizes}: one size per process expected ({comm.Get_size()} processes)")
        bn = verify_sync_batchnorm(comm, sizes)
        dp = verify_data_parallel_training(comm, sizes)
        worst = max(max(v for k, v in bn.items() if k != "running_stats_identical"), dp["parameters"], dp["loss"])
        passed = worst <= args.tol and bn["running_stats_identical"] == 1.0 and dp["parameters_identical"] == 1.0
        ok &= passed
        if comm.Get_rank() == 0:
            print(json.dumps({"world_size": comm.Get_size(), "sizes": sizes or shard_sizes(9, comm.Get_size()),
                              "sync_batchnorm": bn, "data_parallel": dp, "passed": passed}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
