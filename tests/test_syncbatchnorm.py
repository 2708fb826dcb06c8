"""SyncBatchNorm: the parallel merge, world size 1 (a plain process), and real multi-process runs.

The multi-process tests launch ``mpiexec -n 2`` and ``-n 3`` from the project's environment (the
MPICH wheel pinned in requirements.txt puts ``mpiexec`` next to the venv's ``python``), with uneven
local batches including an empty one, and require every difference from single-process BatchNorm
on the concatenated batch to be at most 1e-12 in float64.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npnorm
from npnorm.nn import parallel
from npnorm.statistics.syncbatchnorm import (SyncBatchNorm, chan_merge, local_moments,
                                             sync_batch_norm_backward, sync_batch_norm_forward)

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"


# --- the merge ----------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [(3, 0, 5), (1, 1, 1, 9), (0, 0, 4), (10,), (2, 0, 0, 1)])
def test_chan_merge_equals_the_statistics_of_the_concatenation(sizes):
    rng = np.random.default_rng(0)
    parts = [rng.normal(rng.normal(0, 10), rng.uniform(0.1, 5), (n, 3, 2)) for n in sizes]
    moments = [local_moments(p) for p in parts]
    n, mean, m2 = chan_merge([m[0] for m in moments], [m[1] for m in moments], [m[2] for m in moments])
    whole = np.concatenate(parts)
    assert n == whole.shape[0] * 2
    np.testing.assert_allclose(mean, whole.mean(axis=(0, 2)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(m2 / n, whole.var(axis=(0, 2)), rtol=1e-13, atol=0)


def test_averaging_the_local_variances_is_wrong():
    """The between-set term delta^2 n_A n_B / n is what a naive average misses."""
    a, b = np.full((4, 1), 0.0) + [[0.0], [1.0], [0.0], [1.0]], np.full((2, 1), 10.0) + [[0.0], [1.0]]
    (na, ma, m2a), (nb, mb, m2b) = local_moments(a), local_moments(b)
    naive = (m2a / na + m2b / nb) / 2
    n, _, m2 = chan_merge([na, nb], [ma, mb], [m2a, m2b])
    assert m2 / n == pytest.approx(np.concatenate([a, b]).var(axis=0))
    assert abs(naive[0] - m2[0] / n) > 10


def test_chan_merge_of_nothing_is_zero():
    n, mean, m2 = chan_merge(np.zeros(2), np.zeros((2, 3)), np.zeros((2, 3)))
    assert n == 0 and not mean.any() and not m2.any()


# --- world size 1: a plain python process --------------------------------------------------------

def _pair(c, **kwargs):
    rng = np.random.default_rng(5)
    ref = npnorm.BatchNorm2d(c, backend="numpy", **kwargs)
    sync = SyncBatchNorm(c, **kwargs)
    for k in ref.params:
        ref.params[k] = rng.normal(1, 0.5, c)
        sync.params[k] = ref.params[k].copy()
    return ref, sync, rng


@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False}])
def test_world_size_one_is_batchnorm(kwargs):
    ref, sync, rng = _pair(3, **kwargs)
    for mode in ("train", "train", "eval"):
        if mode == "eval":
            ref.eval()
            sync.eval()
        x = rng.normal(4, 2, (5, 3, 2, 3))
        dy = rng.standard_normal(x.shape)
        np.testing.assert_allclose(sync(x), ref(x), rtol=0, atol=1e-13)
        np.testing.assert_allclose(sync.backward(dy), ref.backward(dy), rtol=0, atol=1e-13)
        for k in ref.grads:
            np.testing.assert_allclose(sync.grads[k], ref.grads[k], rtol=0, atol=1e-12)
    if ref.track_running_stats:
        np.testing.assert_allclose(sync.running_mean, ref.running_mean, rtol=0, atol=1e-14)
        np.testing.assert_allclose(sync.running_var, ref.running_var, rtol=0, atol=1e-14)
        assert sync.num_batches_tracked == ref.num_batches_tracked == 2


def test_empty_batch_gives_empty_output_zero_grads_and_keeps_running_stats():
    sync = SyncBatchNorm(3)
    rm, rv = sync.running_mean.copy(), sync.running_var.copy()
    out = sync(np.zeros((0, 3, 2, 2)))
    assert out.shape == (0, 3, 2, 2)
    dx = sync.backward(np.zeros((0, 3, 2, 2)))
    assert dx.shape == (0, 3, 2, 2)
    assert not sync.grads["weight"].any() and not sync.grads["bias"].any()
    np.testing.assert_array_equal(sync.running_mean, rm)
    np.testing.assert_array_equal(sync.running_var, rv)
    assert sync.num_batches_tracked == 1          # as PyTorch: counted, statistics unchanged


def test_one_value_per_channel_raises_and_bad_input_is_named():
    sync = SyncBatchNorm(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        sync(np.ones((1, 3)))
    with pytest.raises(ValueError, match="num_features=3"):
        sync(np.ones((4, 2)))
    with pytest.raises(ValueError, match="at least 2-D"):
        sync(np.ones(3))
    with pytest.raises(TypeError, match="floating-point"):
        sync(np.ones((4, 3), dtype=int))
    sync(np.random.default_rng(0).normal(size=(4, 3)))
    with pytest.raises(ValueError, match="SyncBatchNorm.backward.*shape of the forward output"):
        sync.backward(np.ones((4, 2)))


def test_cache_does_not_follow_later_edits_of_the_input():
    x = np.random.default_rng(1).normal(size=(6, 2))
    dy = np.random.default_rng(2).normal(size=(6, 2))
    _, cache = sync_batch_norm_forward(x, np.ones(2) * 1.5, np.zeros(2))
    before = sync_batch_norm_backward(dy, cache)[0]
    x[...] = 0.0
    np.testing.assert_array_equal(sync_batch_norm_backward(dy, cache)[0], before)


def test_convert_sync_batchnorm_keeps_parameters_and_buffers():
    model = npnorm.nn.Sequential(npnorm.nn.Linear(3, 4, rng=0), npnorm.BatchNorm1d(4), npnorm.nn.ReLU())
    model.layers[1].params["weight"][:] = [1, 2, 3, 4]
    model.layers[1].running_var[:] = 7.0
    converted = SyncBatchNorm.convert_sync_batchnorm(model)
    bn = converted.layers[1]
    assert isinstance(bn, SyncBatchNorm)
    np.testing.assert_array_equal(bn.params["weight"], [1, 2, 3, 4])
    np.testing.assert_array_equal(bn.running_var, 7.0)


def test_data_parallel_helpers_in_one_process():
    assert parallel.shard_sizes(7, 3) == [3, 2, 2]
    assert parallel.verify_sync_batchnorm(sizes=[6])["out"] < 1e-12
    result = parallel.verify_data_parallel_training(sizes=[5], steps=2)
    assert result["parameters"] < 1e-12 and result["parameters_identical"] == 1.0


# --- real processes: mpiexec -n 2 and -n 3 ---------------------------------------------------------

def _mpiexec(n: int, *splits: str) -> list[dict]:
    assert MPIEXEC.exists(), (f"{MPIEXEC} is missing: the MPI launcher comes from the project's "
                              "environment (mpich in requirements.txt); run `make test` to build it")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_", "MPIR_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = [str(MPIEXEC), "-n", str(n), sys.executable, "-m", "npnorm.nn.parallel"]
    for s in splits:
        args += ["--sizes", s]
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=180)
    assert r.returncode == 0, f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr[-3000:]}"
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("n, splits", [(2, ("0,7", "2,5", "1,1")), (3, ("3,0,5", "1,1,1", "4,4,3"))],
                         ids=["mpiexec-n2", "mpiexec-n3"])
def test_sync_batchnorm_on_n_processes_equals_batchnorm_on_the_whole_batch(n, splits):
    results = _mpiexec(n, *splits)
    assert len(results) == len(splits)
    for res, split in zip(results, splits):
        assert res["world_size"] == n and res["sizes"] == [int(s) for s in split.split(",")]
        bn, dp = res["sync_batchnorm"], res["data_parallel"]
        for key in ("out", "dx", "dweight", "dbias", "running_mean", "running_var", "eval_out"):
            assert bn[key] <= 1e-12, (split, key, bn)
        assert bn["running_stats_identical"] == 1.0, split
        assert dp["parameters"] <= 1e-12 and dp["loss"] <= 1e-12, (split, dp)
        assert dp["parameters_identical"] == 1.0, split
        assert res["passed"]
