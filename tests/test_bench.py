"""Smoke test of ``python -m npnorm.bench`` on tiny inputs: it runs, prints the table, writes the JSON
and the figure. Timings are never asserted (they depend on the machine and its load)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_cli_writes_json_and_plot(tmp_path):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    res = subprocess.run(
        [sys.executable, "-m", "npnorm.bench", "--sizes", "tiny", "--repeats", "2", "--no-torch",
         "--json", str(out_json), "--plot", str(out_png)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "DRAM copy" in res.stdout and "in-cache copy" in res.stdout and "preallocated" in res.stdout \
        and "allocated per call" in res.stdout and "threads=" in res.stdout and "machine:" in res.stdout
    data = json.loads(out_json.read_text())
    assert data["meta"]["threads"] >= 1 and data["meta"]["copy_bandwidth_GBps"] > 0
    got = {(r["case"], r["dtype"], r["pass"], r["impl"]) for r in data["results"]}
    cases = {r["case"] for r in data["results"]}
    assert cases == {"LayerNorm", "RMSNorm", "GroupNorm G=32", "InstanceNorm2d", "BatchNorm2d train",
                     "PatchNormConv2d 3x3", "AdaGroupNorm G=32", "ScaleNorm", "L2Norm", "QK RMSNorm per head",
                     "DyT", "BatchRenorm2d train", "GRN channels-last", "GRN channels-first", "EvoNorm-B0 train",
                     "EvoNorm-S0 G=32"}
    for case in cases:
        for dtype in ("float32", "float64"):
            for pss in ("forward", "forward+backward"):
                for impl in ("textbook", "reference", "numba", "layer"):
                    assert (case, dtype, pss, impl) in got
    for r in data["results"]:
        assert len(r["times"]) == 2 and r["min"] <= r["median"] <= r["max"]
    assert out_png.stat().st_size > 1000 and out_png.read_bytes()[:4] == b"\x89PNG"
    steps = {(r["case"], r["dtype"], r["impl"]) for r in data["training_step"]}
    assert steps == {(f"CNN step ({n})", d, "layer") for n in ("bn", "gn") for d in ("float32", "float64")}
    assert "training step of the chapter-8 CNN" in res.stdout


def test_bench_rejects_bad_options(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "npnorm.bench", "--dtypes", "float16", "--sizes", "tiny"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "--dtypes" in res.stderr


# --- every implementation the benchmark times computes the same thing -----------------------------
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from npnorm import bench  # noqa: E402


def _as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


@pytest.mark.parametrize("case", bench.CASES, ids=lambda c: f"{c.name}-{'x'.join(map(str, c.shape))}")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_benchmarked_implementation_matches_the_reference(case, dtype):
    """A ratio against a wrong baseline compares different computations: each timed implementation
    (textbook, numba kernel, layer API) gives the reference's output and gradients."""
    rng = np.random.default_rng(1)
    shape = case.sized("tiny")
    x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    impls = bench._implementations(case, x, dy, None)
    ref_out = np.array(impls["reference"]["forward"]()[0], dtype=np.float64)
    ref_grads = [np.asarray(g, dtype=np.float64) for g in impls["reference"]["forward+backward"]() if g is not None]
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == "float64" else dict(rtol=2e-3, atol=2e-3)
    assert set(impls) >= {"textbook", "reference", "numba", "layer"}
    for name in ("textbook", "numba", "layer"):
        out = np.asarray(impls[name]["forward"]()[0], dtype=np.float64)
        np.testing.assert_allclose(out, ref_out, **tol, err_msg=f"{name} forward")
        grads = [np.asarray(g, dtype=np.float64) for g in _as_tuple(impls[name]["forward+backward"]())
                 if g is not None]
        if name == "layer":
            # the layer returns dx and the gradients of the parameters it has (an L2Norm layer has no
            # scale, the functional ScaleNorm reference does): compare those, in the same order
            assert 1 <= len(grads) <= len(ref_grads), f"layer: {len(grads)} gradients, reference {len(ref_grads)}"
        else:
            assert len(grads) == len(ref_grads), f"{name}: {len(grads)} gradients, reference {len(ref_grads)}"
        for k, (g, r) in enumerate(zip(grads, ref_grads)):
            np.testing.assert_allclose(g, r, **tol, err_msg=f"{name} gradient {k}")


def test_the_implementation_check_catches_a_flipped_operator(monkeypatch):
    """The mutation of the issue: an operator flipped in the textbook backward now fails a test."""
    original = bench.textbook_norm_backward

    def flipped(dout, cache, param_axes):
        dx, dg, db = original(dout, cache, param_axes)
        x, xhat, mu, var, gamma, eps, axes = cache
        m = x.size // mu.size
        # the mean term with the wrong sign: what `- dmu / m` instead of `+ dmu / m` gives
        dmu = np.sum(-dout * gamma / np.sqrt(var + eps), axis=axes, keepdims=True)
        return dx - 2 * dmu / m, dg, db

    monkeypatch.setattr(bench, "textbook_norm_backward", flipped)
    with pytest.raises(AssertionError, match="textbook gradient 0"):
        test_every_benchmarked_implementation_matches_the_reference(bench.CASES[0], "float64")
