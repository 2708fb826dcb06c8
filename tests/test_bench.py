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
    assert "DRAM (" in res.stdout and "in-cache (" in res.stdout and "preallocated" in res.stdout \
        and "allocated per call" in res.stdout and "threads=" in res.stdout and "machine:" in res.stdout
    data = json.loads(out_json.read_text())
    assert data["meta"]["threads"] >= 1 and data["meta"]["copy_bandwidth_GBps"] > 0
    got = {(r["case"], r["dtype"], r["pass"], r["impl"]) for r in data["results"]}
    cases = {r["case"] for r in data["results"]}
    assert cases == {"LayerNorm", "RMSNorm", "GroupNorm G=32", "InstanceNorm2d", "BatchNorm2d train",
                     "PatchNormConv2d 3x3", "AdaGroupNorm G=32", "ScaleNorm", "L2Norm", "QK RMSNorm per head",
                     "DyT", "SwitchNorm2d", "IterNorm G=8", "BatchRenorm2d train", "GRN channels-last",
                     "GRN channels-first", "EvoNorm-B0 train", "EvoNorm-S0 G=32"}
    for case in cases:
        for dtype in ("float32", "float64"):
            for pss in ("forward", "forward+backward"):
                for impl in ("textbook", "reference", "numba", "layer"):
                    assert (case, dtype, pss, impl) in got
    for r in data["results"]:
        assert len(r["times"]) == 2 and r["min"] <= r["median"] <= r["max"]
    # every percentage can be recomputed from what the output states: streams, MiB, time, bound
    bnds = data["meta"]["bounds_GBps"]
    for lvl in ("DRAM", "cache"):
        assert set(bnds[lvl]) == {"memcpy", "store", "read"} and all(v > 0 for v in bnds[lvl].values())
    assert data["meta"]["copy_bandwidth_GBps"] == bnds["DRAM"]["store"]
    for r in data["results"]:
        rd, wr = r["streams"]
        assert (rd, wr) == bench.streams(r["family"], r["impl"], r["pass"])
        gbps = (rd + wr) * r["MiB"] * 2**20 / r["median"] / 1e9
        assert np.isclose(r["GBps"], gbps) and np.isclose(r["bound_GBps"], bnds[r["bound"]]["store"])
        assert np.isclose(r["roofline"], gbps / bnds[r["bound"]]["store"])
    assert "store" in res.stdout and "memcpy" in res.stdout and "r+w" in res.stdout \
        and "torch.no_grad()" in res.stdout and "ordinary stores" in res.stdout \
        and data["meta"]["torch_forward"] == "no_grad"
    assert out_png.stat().st_size > 1000 and out_png.read_bytes()[:4] == b"\x89PNG"
    steps = {(r["case"], r["dtype"], r["impl"]) for r in data["training_step"]}
    assert steps == {(f"CNN step ({n})", d, "layer") for n in ("bn", "gn") for d in ("float32", "float64")}
    assert "training step of the chapter-8 CNN" in res.stdout


def test_torch_forward_option_is_stated(tmp_path):
    """Which PyTorch forward the 'fwd' rows time (inference under no_grad, or the training forward with
    autograd) is an option, recorded in the JSON and said in the legend."""
    out_json = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(
        [sys.executable, "-m", "npnorm.bench", "--sizes", "tiny", "--repeats", "1", "--no-torch", "--cases",
         "LayerNorm", "--dtypes", "float32", "--no-train-step", "--torch-forward", "autograd",
         "--json", str(out_json)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "with autograd recording" in res.stdout and "torch.no_grad()" not in res.stdout
    assert json.loads(out_json.read_text())["meta"]["torch_forward"] == "autograd"
    with pytest.raises(ValueError, match="torch_forward"):
        bench.run(torch_forward="grad")


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


def test_traffic_model_counts_the_private_copy():
    """npnorm's fused kernels write a private copy of x in the forward pass: 3 streams forward, 6 for
    forward + backward, plus one read of every input per extra traversal (BatchNorm-like layers read
    their inputs twice per pass, IterNorm three times forward). PatchNorm's kernel copies x and keeps
    an output-sized z^w for the backward pass. PyTorch (a reference to x) and the NumPy versions are
    counted at the minimum."""
    traversals = {"batchnorm": (2, 2), "switchnorm": (2, 2), "batchrenorm": (2, 2), "evonorm_b0": (2, 2),
                  "iternorm": (3, 2)}
    for fam in bench.KEEPS:
        for impl in ("torch", "textbook", "reference"):
            assert bench.streams(fam, impl, "forward") == (1, 1)
            assert bench.streams(fam, impl, "forward+backward") == (3, 2)
        if fam == "patchnorm":
            # forward: read x, write the copy; read the copy, write y and z^w. backward: read the copy,
            # dy and z^w, write dx. (Output-sized = x-sized: the case has F = C and stride 1.)
            for impl in ("numba", "layer"):
                assert bench.streams(fam, impl, "forward") == (2, 3)
                assert bench.streams(fam, impl, "forward+backward") == (2 + 3, 3 + 1)
            continue
        fwd_reads, bwd_reads = traversals.get(fam, (1, 1))
        for impl in ("numba", "layer"):
            assert bench.streams(fam, impl, "forward") == (fwd_reads, 2)
            assert bench.streams(fam, impl, "forward+backward") == (fwd_reads + 2 * bwd_reads, 3)
    assert set(bench.KEEPS) == {c.family for c in bench.CASES}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pattern_loops_move_the_bytes_they_claim(dtype, monkeypatch):
    """The memory-pattern loops (``--patterns``) really move their streams: the forward writes the output
    (and, for ``pattern``, the private copy) from x, forward + backward writes dx from the saved array
    and dy; the loops each pass calls move (reads, writes) as counted by ``streams``, which are the
    kernel's with and without the copy; families whose traffic kind has no pattern loop get none."""
    from npnorm.kernels import affine
    moved = []

    def recording(fn, reads, writes):
        def wrapper(*args):
            moved.append((reads, writes))
            return fn(*args)
        return wrapper
    for name, rd, wr in (("parallel_read", 1, 0), ("parallel_copy", 1, 1), ("stream_copy2", 1, 2),
                         ("stream_add", 2, 1), ("stream_read2", 2, 0)):
        monkeypatch.setattr(affine, name, recording(getattr(affine, name), rd, wr))
    rng = np.random.default_rng(0)
    for case in bench.CASES:
        x = rng.standard_normal(case.sized("tiny")).astype(dtype)
        dy = rng.standard_normal(x.shape).astype(dtype)
        impls = bench.pattern_impls(case.family, x, dy)
        kind = bench.KEEPS[case.family]
        if kind not in bench.PATTERN_MIN:
            assert impls == {}
            continue
        assert set(impls) == set(bench.PATTERNS)
        for name in bench.PATTERNS:
            for pss in bench.PASSES:                   # the loops called move the counted streams
                moved.clear()
                impls[name][pss]()
                assert tuple(map(sum, zip(*moved))) == bench.streams(case.family, name, pss), (case.name, name)
            y, saved = impls[name]["forward"]()
            np.testing.assert_array_equal(y, x.reshape(-1))
            np.testing.assert_array_equal(saved, x.reshape(-1))
            assert np.shares_memory(saved, x) == (name == "pattern_min")
            dx = impls[name]["forward+backward"]()
            np.testing.assert_array_equal(dx, (x + dy).reshape(-1))
            for pss in bench.PASSES:
                rd, wr = bench.streams(case.family, name, pss)
                krd, kwr = bench.streams(case.family, "numba", pss)
                assert (rd, wr) == (krd, kwr - (name == "pattern_min"))     # the copy: one write
    from npnorm.kernels.affine import stream_read2
    a, b = np.arange(100.0), np.ones(100)
    assert stream_read2(a, b) == a.sum() + b.sum()


def test_bench_patterns_option_adds_the_columns(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    out_json = tmp_path / "bench.json"
    res = subprocess.run(
        [sys.executable, "-m", "npnorm.bench", "--sizes", "tiny", "--repeats", "2", "--no-torch", "--dtypes",
         "float32", "--cases", "LayerNorm,BatchNorm2d,IterNorm", "--no-train-step", "--patterns",
         "--json", str(out_json)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "pattern ms" in res.stdout and "pattern_min ms" in res.stdout and "pattern/kernel" in res.stdout
    got = {(r["case"], r["impl"]) for r in json.loads(out_json.read_text())["results"]}
    assert {("LayerNorm", "pattern"), ("LayerNorm", "pattern_min"), ("BatchNorm2d train", "pattern")} <= got
    assert not any(impl in bench.PATTERNS for case, impl in got if case.startswith("IterNorm"))


def test_round_robin_varies_the_order():
    """Every round runs each implementation once, in a new order: over the rounds, each one follows
    several different predecessors (a fixed or merely rotated order keeps the same predecessor)."""
    calls = []
    fns = [lambda k=k: calls.append(k) for k in range(5)]
    times = bench._time_round_robin(fns, repeats=8, warmup_seconds=0.0)
    assert [len(t) for t in times] == [8] * 5
    timed = calls[-40:]
    rounds = [timed[i:i + 5] for i in range(0, 40, 5)]
    assert all(sorted(r) == list(range(5)) for r in rounds)
    before = {k: {timed[i - 1] for i in range(1, 40) if timed[i] == k} for k in range(5)}
    assert all(len(p) >= 3 for p in before.values()), before


def test_patchnorm_traffic_units_fit_the_case():
    """PatchNorm's streams count its output-sized arrays (y, z^w, dy) as x.nbytes: true for the case."""
    case = next(c for c in bench.CASES if c.family == "patchnorm")
    x = np.ones(case.sized("tiny"), dtype=np.float32)
    out, cache = bench._implementations(case, x, x.copy(), None)["numba"]["forward"]()
    assert out.nbytes == cache["zw"].nbytes == cache["x"].nbytes == x.nbytes


def test_stream_bandwidths_measures_three_kinds():
    bw = bench.stream_bandwidths(1 << 20, repeats=2)
    assert set(bw) == {"memcpy", "store", "read"} and all(v > 0 for v in bw.values())
    from npnorm.kernels.affine import parallel_read
    a = np.arange(1000.0)
    assert parallel_read(a) == a.sum()


@pytest.mark.parametrize("torch_forward", bench.TORCH_FORWARDS)
@pytest.mark.parametrize("case", bench.CASES, ids=lambda c: f"{c.name}-{'x'.join(map(str, c.shape))}")
def test_torch_compositions_match_the_reference(case, torch_forward):
    """The PyTorch column (where PyTorch has no layer, a composition of its operations) computes the
    reference's output and dx, in both forward modes. Skipped where torch is not installed."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    shape = case.sized("tiny")
    x = 3.0 + 2.0 * rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    impls = bench._implementations(case, x, dy, torch, torch_forward)
    out = impls["torch"]["forward"]()[0].detach().numpy()
    np.testing.assert_allclose(out, impls["reference"]["forward"]()[0], rtol=1e-9, atol=1e-9)
    dx = impls["torch"]["forward+backward"]()[0].numpy()
    np.testing.assert_allclose(dx, impls["reference"]["forward+backward"]()[0], rtol=1e-9, atol=1e-9)
