"""The Numba backend agrees with the NumPy reference.

Relative error of an array ``a`` against the reference ``b``: ``max|a - b| / max|b|`` (one number per
array; the absolute error when ``b`` is all zeros). Tolerances: 1e-12 in float64, 1e-5 in float32 -
for outputs, input gradients, parameter gradients and running statistics.

Registry-driven: every spec listing ``"numba"`` in ``backends``, every case and mode, is built twice
with the same seed (``spec.build(..., backend=...)``) and compared. Then the hard inputs: shapes large
enough to cross the parallel threshold, float32 data with an offset of 1e4, ill-conditioned upstreams
(``dy = y``, a common offset) and inputs near 1e18, one-element sets, constant rows, NaN and inf, and
the running statistics after several training steps.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npnorm
from npnorm import kernels
from npnorm.backend import BACKENDS, get_backend, set_backend, use_backend
from npnorm.kernels import _common
from npnorm.registry import specs

TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
ROOT = Path(__file__).resolve().parents[1]


def rel_error(a, b) -> float:
    """``max|a - b| / max|b|`` in float64 (absolute error if ``b`` is all zeros)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.size == 0:
        return 0.0
    scale = np.max(np.abs(b))
    err = np.max(np.abs(a - b))
    return float(err / scale) if scale > 0 else float(err)


def run_both(make, inputs, dout_seed=5, steps=1):
    """Run forward + backward ``steps`` times on a layer per backend; return {backend: results}."""
    results = {}
    for backend in BACKENDS:
        layer = make(backend)
        rng = np.random.default_rng(dout_seed)
        for _ in range(steps):
            out = layer(*inputs)
            dout = rng.standard_normal(out.shape).astype(out.dtype)
            dx = layer.backward(dout)
        dx = dx if isinstance(dx, tuple) else (dx,)
        buffers = {k: getattr(layer, k) for k in ("running_mean", "running_var", "running_std", "num_batches_tracked",
                                                  "running_wm")
                   if getattr(layer, k, None) is not None}
        results[backend] = {"out": out, "dx": dx, "grads": dict(layer.grads), "buffers": buffers}
    return results


def assert_agree(results, dtype, what=""):
    tol = TOL[np.dtype(dtype)]
    ref, fast = results["numpy"], results["numba"]
    assert fast["out"].dtype == ref["out"].dtype == dtype
    errors = {"out": rel_error(fast["out"], ref["out"])}
    for i, (a, b) in enumerate(zip(fast["dx"], ref["dx"])):
        assert a.dtype == b.dtype and a.shape == b.shape
        errors[f"dx{i}"] = rel_error(a, b)
    assert fast["grads"].keys() == ref["grads"].keys()
    for k in ref["grads"]:
        assert fast["grads"][k].dtype == ref["grads"][k].dtype
        errors[f"d{k}"] = rel_error(fast["grads"][k], ref["grads"][k])
    assert fast["buffers"].keys() == ref["buffers"].keys()
    for k, v in ref["buffers"].items():
        errors[k] = rel_error(fast["buffers"][k], v)
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"{what}: numba vs numpy relative errors above {tol:g}: {bad}"


def _numba_cases():
    for spec in specs():
        if "numba" not in spec.backends:
            continue
        for case in spec.cases:
            for mode in case.modes:
                yield pytest.param(spec, case, mode, id=f"{spec.name}-{case.name}-{mode}")


NUMBA_CASES = list(_numba_cases())


def test_core_families_offer_numba():
    names = {p.values[0].name for p in NUMBA_CASES}
    assert {"BatchNorm1d", "BatchNorm2d", "LayerNorm", "RMSNorm", "GroupNorm", "InstanceNorm1d",
            "InstanceNorm2d", "AdaIN"} <= names


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("spec, case, mode", NUMBA_CASES)
def test_registry_agreement(spec, case, mode, dtype):
    def make(backend):
        return spec.build(case, seed=21, dtype=dtype, mode=mode, backend=backend)[0]

    _, inputs = spec.build(case, seed=21, dtype=dtype, mode=mode)
    assert_agree(run_both(make, inputs, steps=2), dtype, f"{spec.name}/{case.name}/{mode}")


@pytest.mark.parametrize("spec, case, mode", NUMBA_CASES)
def test_registry_agreement_parallel_drivers(spec, case, mode, monkeypatch):
    """The same small cases through the parallel drivers (threshold forced to 0)."""
    monkeypatch.setattr(_common, "PARALLEL_THRESHOLD", 0)

    def make(backend):
        return spec.build(case, seed=22, mode=mode, backend=backend)[0]

    _, inputs = spec.build(case, seed=22, mode=mode)
    assert_agree(run_both(make, inputs), np.float64, f"{spec.name}/{case.name}/{mode} (parallel)")


# -- large shapes, hard inputs ---------------------------------------------------------------------
def _big(shape_jit, shape_nojit):
    """Above the parallel threshold when compiled; a small shape (with the threshold forced down,
    see ``parallel`` fixture) when NUMBA_DISABLE_JIT=1 makes every kernel run as Python loops."""
    return shape_nojit if kernels.JIT_DISABLED else shape_jit


LARGE = [  # (name, constructor, input shapes)
    ("LayerNorm", lambda b: npnorm.LayerNorm(768, backend=b), [_big((520, 768), (6, 768))]),
    ("LayerNorm-CHW", lambda b: npnorm.LayerNorm((8, 7, 7), backend=b), [_big((1100, 8, 7, 7), (5, 8, 7, 7))]),
    ("RMSNorm", lambda b: npnorm.RMSNorm(1024, backend=b), [_big((400, 1024), (3, 1024))]),
    ("GroupNorm", lambda b: npnorm.GroupNorm(8, 32, backend=b), [_big((8, 32, 40, 40), (3, 32, 4, 4))]),
    ("InstanceNorm2d", lambda b: npnorm.InstanceNorm2d(16, affine=True, backend=b),
     [_big((8, 16, 56, 56), (3, 16, 5, 5))]),
    ("InstanceNorm1d", lambda b: npnorm.InstanceNorm1d(24, affine=True, track_running_stats=True, backend=b),
     [_big((16, 24, 1100), (3, 24, 20))]),
    ("BatchNorm2d", lambda b: npnorm.BatchNorm2d(32, backend=b), [_big((16, 32, 28, 28), (4, 32, 3, 3))]),
    ("BatchNorm1d", lambda b: npnorm.BatchNorm1d(100, backend=b), [_big((4100, 100), (50, 100))]),
    ("AdaIN", lambda b: npnorm.AdaIN(backend=b),
     [_big((8, 16, 56, 56), (3, 16, 5, 5)), _big((1, 16, 30, 30), (1, 16, 4, 6))]),
    ("SwitchNorm2d", lambda b: npnorm.SwitchNorm2d(16, backend=b), [_big((16, 16, 40, 40), (3, 16, 4, 4))]),
    ("IterNorm", lambda b: npnorm.IterNorm(32, num_channels=8, backend=b), [_big((16, 32, 28, 28), (3, 32, 3, 3))]),
    ("AdaGroupNorm", lambda b: npnorm.AdaGroupNorm(12, 32, 8, act_fn="silu", rng=0, backend=b),
     [_big((8, 32, 40, 40), (3, 32, 4, 4)), _big((8, 12), (3, 12))]),
    ("ScaleNorm", lambda b: npnorm.ScaleNorm(1024, backend=b), [_big((400, 1024), (3, 1024))]),
    ("L2Norm", lambda b: npnorm.L2Norm(backend=b), [_big((400, 1024), (3, 1024))]),
    ("DyT", lambda b: npnorm.DyT(1024, backend=b), [_big((400, 1024), (3, 1024))]),
    ("GlobalResponseNorm", lambda b: npnorm.GlobalResponseNorm(96, backend=b), [_big((8, 28, 28, 96), (3, 4, 5, 96))]),
    ("GlobalResponseNorm-CF", lambda b: npnorm.GlobalResponseNorm(32, channels_last=False, backend=b),
     [_big((4, 32, 56, 56), (3, 32, 5, 5))]),
    ("BatchRenorm2d", lambda b: npnorm.BatchRenorm2d(32, backend=b), [_big((16, 32, 28, 28), (4, 32, 3, 3))]),
    ("EvoNorm2dB0", lambda b: npnorm.EvoNorm2dB0(32, backend=b), [_big((16, 32, 28, 28), (4, 32, 3, 3))]),
    ("EvoNorm2dS0", lambda b: npnorm.EvoNorm2dS0(64, groups=8, backend=b), [_big((8, 64, 28, 28), (3, 64, 3, 3))]),
]


@pytest.fixture
def parallel(monkeypatch):
    """Without JIT, force the (small) inputs through the parallel drivers' chunking code."""
    if kernels.JIT_DISABLED:
        monkeypatch.setattr(_common, "PARALLEL_THRESHOLD", 64)
    return _common


def _randomized(make, seed=3):
    def build(backend):
        layer = make(backend)
        npnorm.registry.randomize_layer(layer, np.random.default_rng(seed))
        return layer
    return build


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name, make, shapes", LARGE, ids=[c[0] for c in LARGE])
def test_large_shapes_agree(name, make, shapes, dtype, parallel):
    rng = np.random.default_rng(4)
    inputs = [(2.0 + 3.0 * rng.standard_normal(s)).astype(dtype) for s in shapes]
    assert inputs[0].size >= parallel.PARALLEL_THRESHOLD   # the parallel driver runs
    assert_agree(run_both(_randomized(make), inputs, steps=2), dtype, name)


@pytest.mark.parametrize("upstream", ["random", "along x"])
@pytest.mark.parametrize("name, make, shapes", LARGE, ids=[c[0] for c in LARGE])
def test_float32_large_offset_matches_float64(name, make, shapes, upstream, parallel):
    """float32 data around 1e4 with unit spread: the numba float32 result is within 1e-5 of the float64
    reference on the same values (one-pass E[x^2] - E[x]^2 would lose every digit of the variance;
    DyT's tanh saturates there, and must give exactly +-1, so that 1 - t^2 = 0 as in float64).

    Upstream "along x" (dout = x - 1e4 plus noise) makes the mean of ``dout x_hat`` of order 1, so that
    an error in ``x_hat`` reaches ``dx`` in full (with a random dout that term averages out)."""
    rng = np.random.default_rng(6)
    x32 = [(1e4 + rng.standard_normal(s)).astype(np.float32) for s in shapes]
    dout = rng.standard_normal(shapes[0])
    if upstream == "along x":
        dout = (x32[0].astype(np.float64) - 1e4) + 0.1 * dout
    fast = _randomized(make)("numba")
    ref = _randomized(make)("numpy")
    out32 = fast(*x32)
    out64 = ref(*[x.astype(np.float64) for x in x32])
    assert out32.dtype == np.float32
    assert rel_error(out32, out64) <= 1e-5
    g32 = fast.backward(dout.astype(np.float32))
    g64 = ref.backward(dout)
    for a, b in zip(g32 if isinstance(g32, tuple) else (g32,), g64 if isinstance(g64, tuple) else (g64,)):
        assert rel_error(a, b) <= 1e-5
    for k in ref.grads:
        assert rel_error(fast.grads[k], ref.grads[k]) <= 1e-5, k


HARD = {  # id: (input scale, upstream from the float32 output)
    "dy_eq_y": (3.0, lambda out, rng: out.copy()),               # the loss 0.5 sum y^2
    "dy_offset_1e4": (3.0, lambda out, rng: (1e4 + rng.standard_normal(out.shape)).astype(np.float32)),
    "x_1e18": (1e18, lambda out, rng: rng.standard_normal(out.shape).astype(np.float32)),
}
# Layers whose dx nearly cancels for the first two upstreams (with their default parameters): checked to
# stay hard, i.e. a relative change of 1e-7 in dout moves the float64 reference's dx by more than 1e-4
CANCELLING = {"LayerNorm", "LayerNorm-CHW", "GroupNorm", "InstanceNorm2d", "InstanceNorm1d", "BatchNorm2d",
              "BatchNorm1d", "AdaIN", "IterNorm", "BatchRenorm2d"}
# Left out of dy_eq_y: 0.5 sum y^2 does not depend on x when the output is L2-normalized (ScaleNorm,
# L2Norm), so dx is pure round-off there; and RMSNorm's default eps is the dtype's machine epsilon, so
# the float32 layer and the float64 reference are different functions, and with dy = y their dx,
# about eps / mean(x^2) of its terms, is exactly that difference
HARD_CASES = [pytest.param(name, make, shapes, hard, id=f"{name}-{hard}") for name, make, shapes in LARGE
              for hard in HARD if not (hard == "dy_eq_y" and name in ("ScaleNorm", "L2Norm", "RMSNorm"))]


def _first(g):
    return g[0] if isinstance(g, tuple) else g


@pytest.mark.parametrize("name, make, shapes, hard", HARD_CASES)
def test_float32_ill_conditioned_inputs_match_float64(name, make, shapes, hard, parallel):
    """Inputs for which float32 arithmetic would fail, each within 1e-5 of the float64 reference on
    the same float32 values (input and upstream), with the layers' default parameters (a weight that
    varies inside a normalized set keeps the terms of ``dx`` from cancelling; random parameters are
    in the tests above):

    * ``dy_eq_y``: the plainest loss, 0.5 sum y^2. For the normalizers in ``CANCELLING``, ``dx`` is then
      about ``eps / var`` of the terms of its formula, so a kernel that subtracted them in float32
      would keep only a few of its digits;
    * ``dy_offset_1e4``: a common offset of the upstream, which such a ``dx`` does not depend on;
    * ``x_1e18``: squares beyond float32's range (3.4e38).
    (A float32-arithmetic version of the LayerNorm and GroupNorm kernels failed these by up to 6e-2,
    and by 1 on the third, silently; the float64-arithmetic kernels pass.)"""
    scale, upstream = HARD[hard]
    rng = np.random.default_rng(7)
    x32 = [(scale * (0.5 + rng.standard_normal(s))).astype(np.float32) for s in shapes]
    fast, ref = make("numba"), make("numpy")
    out32 = fast(*x32)
    out64 = ref(*[x.astype(np.float64) for x in x32])
    assert rel_error(out32, out64) <= 1e-5
    dout32 = upstream(out32, rng)
    g32 = fast.backward(dout32)
    g64 = ref.backward(dout32.astype(np.float64))
    for a, b in zip(g32 if isinstance(g32, tuple) else (g32,), g64 if isinstance(g64, tuple) else (g64,)):
        assert rel_error(a, b) <= 1e-5
    for k in ref.grads:
        assert rel_error(fast.grads[k], ref.grads[k]) <= 1e-5, k
    if name in CANCELLING and hard != "x_1e18":       # the input really is hard for these
        nudged = dout32.astype(np.float64) * (1 + 1e-7 * rng.standard_normal(dout32.shape))
        assert rel_error(_first(ref.backward(nudged)), _first(g64)) > 1e-4


@pytest.mark.parametrize("make, shape", [
    (lambda b: npnorm.LayerNorm(1, backend=b), (700, 1)),
    (lambda b: npnorm.GroupNorm(6, 6, backend=b), (120, 6, 1)),
], ids=["LayerNorm(1)", "GroupNorm-one-element-groups"])
@pytest.mark.parametrize("rows", ["serial", "parallel"])
def test_float32_one_element_sets_give_zero_dx(make, shape, rows, parallel):
    """A normalized set of one element is constant: ``x_hat = 0`` and ``dx = 0`` exactly in the
    reference; float32 kernels with random parameters give ``dx`` within 1e-5 of 0 (a float32 kernel
    whose ``w dy - mean(g)`` was fused into one rounding gave 1e-4)."""
    if rows == "parallel":
        shape = (max(shape[0], parallel.PARALLEL_THRESHOLD // int(np.prod(shape[1:])) + 1),) + shape[1:]
    rng = np.random.default_rng(8)
    x32 = rng.standard_normal(shape).astype(np.float32)
    dout32 = rng.standard_normal(shape).astype(np.float32)
    fast = _randomized(make)("numba")
    ref = _randomized(make)("numpy")
    assert rel_error(fast(x32), ref(x32.astype(np.float64))) <= 1e-5
    dx = fast.backward(dout32)
    assert np.all(ref.backward(dout32.astype(np.float64)) == 0.0)
    assert np.max(np.abs(dx)) <= 1e-5
    for k in ref.grads:
        assert rel_error(fast.grads[k], ref.grads[k]) <= 1e-5, k


@pytest.mark.parametrize("make, shape", [
    (lambda b: npnorm.LayerNorm(64, backend=b), (8, 64)),
    (lambda b: npnorm.GroupNorm(4, 8, backend=b), (6, 8, 5, 5)),
    (lambda b: npnorm.InstanceNorm2d(8, affine=True, backend=b), (6, 8, 5, 5)),
], ids=["LayerNorm", "GroupNorm", "InstanceNorm2d"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_inf_in_the_upstream_spreads_as_in_the_reference(make, shape, dtype):
    """An ``inf`` in ``dout`` gives the reference's pattern of NaN and inf in ``dx`` and the parameter
    gradients (a kernel computing ``sum - lo * sum`` turned the whole set into NaN)."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    dout.flat[3] = np.inf
    fast = _randomized(make)("numba")
    ref = _randomized(make)("numpy")
    fast(x)
    ref(x.astype(np.float64))
    with np.errstate(invalid="ignore"):                 # inf - inf in the reference, as intended
        results = [(fast.backward(dout), ref.backward(dout.astype(np.float64)))]
    results += [(fast.grads[k], ref.grads[k]) for k in ref.grads]
    for a, b in results:
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_array_equal(np.isposinf(a), np.isposinf(b))
        np.testing.assert_array_equal(np.isneginf(a), np.isneginf(b))
        finite = np.isfinite(b)
        assert rel_error(np.where(finite, a, 0), np.where(finite, b, 0)) <= TOL[np.dtype(dtype)]


@pytest.mark.parametrize("affine", [False, True], ids=["no_affine", "affine"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_adagroupnorm_inf_in_the_upstream_spreads_as_in_the_reference(affine, dtype):
    """AdaGN with an ``inf`` in ``dout``: every gradient (x, the embedding, the projection, GroupNorm's
    affine) has the reference's NaN/inf pattern. The fused backward's scale gradient
    ``gamma sum(dy x_hat) + beta sum(dy)`` gave inf - inf = NaN where the reference's
    ``sum(dy (gamma x_hat + beta))`` is +-inf."""
    from npnorm.adaptive import adagroupnorm as ref_agn
    from npnorm.kernels.adaptive import adagroupnorm as k_agn
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 7)).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    dout[1, 0, 0] = np.inf
    dout[0, 3, 2] = -np.inf
    emb, lw, lb = rng.standard_normal((2, 5)), rng.standard_normal((8, 5)), rng.standard_normal(8)
    w, b = (1 + 0.3 * rng.standard_normal(4), 0.5 + 0.1 * rng.standard_normal(4)) if affine else (None, None)
    _, cache = k_agn.ada_group_norm_forward(x, emb, lw, lb, 2, 1e-5, "silu", w, b)
    _, cache_ref = ref_agn.ada_group_norm_forward(x.astype(np.float64), emb, lw, lb, 2, 1e-5, "silu", w, b)
    with np.errstate(invalid="ignore"):
        got = k_agn.ada_group_norm_backward(dout, cache)
        want = ref_agn.ada_group_norm_backward(dout.astype(np.float64), cache_ref)
    for name, a, r in zip(("dx", "demb", "dlinear_weight", "dlinear_bias", "dweight", "dbias"), got, want):
        if r is None:
            assert a is None
            continue
        for test in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(test(a), test(r), err_msg=f"{name}: {test.__name__}")
    assert np.isinf(want[3]).any()                    # the case is a real test: infs reach the bias


CONSTANT = [  # constructor, input shape, how to make the input constant over each normalized set
    ("LayerNorm", lambda b: npnorm.LayerNorm(16, backend=b), (6, 16), lambda x: x[..., :1]),
    ("GroupNorm", lambda b: npnorm.GroupNorm(2, 4, backend=b), (3, 4, 5), lambda x: x[:, ::2, :1].repeat(2, axis=1)),
    ("InstanceNorm2d", lambda b: npnorm.InstanceNorm2d(3, affine=True, backend=b), (2, 3, 4, 4),
     lambda x: x[..., :1, :1]),
    ("BatchNorm1d", lambda b: npnorm.BatchNorm1d(3, backend=b), (5, 3, 4), lambda x: x[:1, :, :1]),
    ("BatchNorm2d", lambda b: npnorm.BatchNorm2d(3, backend=b), (4, 3, 2, 2), lambda x: x[:1, :, :1, :1]),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name, make, shape, const", CONSTANT, ids=[c[0] for c in CONSTANT])
def test_constant_rows(name, make, shape, const, dtype, backend):
    """Variance 0: x_hat = 0, so the output is beta, and every gradient is finite."""
    rng = np.random.default_rng(8)
    x = np.broadcast_to(const(np.round(10 * rng.standard_normal(shape)) / 4), shape).astype(dtype)
    layer = _randomized(make)(backend)
    out = layer(x)
    beta = layer.params["bias"]
    beta = beta if name == "LayerNorm" else beta.reshape((1, -1) + (1,) * (len(shape) - 2))
    np.testing.assert_allclose(out, np.broadcast_to(beta, shape), rtol=0, atol=1e-6)
    dx = layer.backward(rng.standard_normal(shape).astype(dtype))
    assert np.all(np.isfinite(dx))
    assert all(np.all(np.isfinite(g)) for g in layer.grads.values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_rmsnorm_zero_rows(backend):
    layer = npnorm.RMSNorm(8, backend=backend)
    x = np.zeros((3, 8))
    x[1] = np.arange(8)
    out = layer(x)
    assert np.all(out[[0, 2]] == 0) and np.all(np.isfinite(out))
    assert np.all(np.isfinite(layer.backward(np.ones_like(x))))


NAN_CASES = [
    ("LayerNorm", lambda b: npnorm.LayerNorm(12, backend=b), (3, 12)),
    ("RMSNorm", lambda b: npnorm.RMSNorm(12, backend=b), (3, 12)),
    ("GroupNorm", lambda b: npnorm.GroupNorm(2, 4, backend=b), (2, 4, 3, 3)),
    ("InstanceNorm2d", lambda b: npnorm.InstanceNorm2d(4, backend=b), (2, 4, 3, 3)),
    ("BatchNorm2d", lambda b: npnorm.BatchNorm2d(4, backend=b), (2, 4, 3, 3)),
    ("ScaleNorm", lambda b: npnorm.ScaleNorm(12, backend=b), (3, 12)),
    ("DyT", lambda b: npnorm.DyT(12, backend=b), (3, 12)),
]


@pytest.mark.parametrize("name, make, shape", NAN_CASES, ids=[c[0] for c in NAN_CASES])
def test_nan_propagates(name, make, shape):
    """fastmath is limited to reassoc/nsz/contract (no 'nnan'): a NaN in a normalized set makes that
    set's outputs NaN, and the other sets stay finite, exactly as in the reference."""
    x = np.random.default_rng(0).standard_normal(shape)
    x.flat[0] = np.nan
    with np.errstate(invalid="ignore"):
        nan_ref = np.isnan(make("numpy")(x))
        nan_fast = np.isnan(make("numba")(x))
    assert nan_ref.any() and not nan_ref.all()
    np.testing.assert_array_equal(nan_fast, nan_ref)


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
@pytest.mark.parametrize("cls", [npnorm.BatchNorm1d, npnorm.BatchNorm2d, npnorm.InstanceNorm1d, npnorm.InstanceNorm2d])
def test_running_statistics_agree(cls, momentum):
    ndim = 3 if cls in (npnorm.BatchNorm1d, npnorm.InstanceNorm1d) else 4
    shape = (4, 3, 7) if ndim == 3 else (4, 3, 5, 3)
    rng = np.random.default_rng(9)
    batches = [(3 + 2 * rng.standard_normal(shape)) for _ in range(5)]
    layers = {b: cls(3, momentum=momentum, affine=True, track_running_stats=True, backend=b) for b in BACKENDS}
    for x in batches:
        for layer in layers.values():
            layer(x)
            layer.backward(np.ones(shape))
    ref, fast = layers["numpy"], layers["numba"]
    assert fast.num_batches_tracked == ref.num_batches_tracked == 5
    assert rel_error(fast.running_mean, ref.running_mean) <= 1e-12
    assert rel_error(fast.running_var, ref.running_var) <= 1e-12
    for layer in layers.values():                           # eval mode uses them: same outputs
        layer.eval()
    assert rel_error(fast(batches[0]), ref(batches[0])) <= 1e-12


@pytest.mark.parametrize("cls, shape", [(npnorm.BatchRenorm1d, (6, 3)), (npnorm.BatchRenorm2d, (4, 3, 3, 2))])
def test_batch_renorm_unclipped_corrections_agree(cls, shape):
    """Running statistics near the batch's: r and d inside their clipping ranges, where the backward
    pass treats them as constants (not the true gradient, so the registry cannot check it): both
    backends make the same approximation, over several steps and in evaluation."""
    rng = np.random.default_rng(13)
    x = 5.0 + 3.0 * rng.standard_normal(shape)

    def make(backend):
        layer = cls(shape[1], backend=backend)
        npnorm.registry.randomize_layer(layer, np.random.default_rng(2))
        layer.running_mean, layer.running_std = np.full(shape[1], 5.1), np.full(shape[1], 2.9)
        return layer

    ref = make("numpy")
    ref(x)
    cache = ref._cache[1]
    assert np.all(np.abs(np.log(cache["r"])) < np.log(3.0)) and np.all(np.abs(cache["d"]) < 5.0)
    assert_agree(run_both(make, [x], steps=3), np.float64, cls.__name__)
    layers = {b: make(b) for b in BACKENDS}
    for layer in layers.values():
        layer(x)
        layer.eval()
    assert rel_error(layers["numba"](x), layers["numpy"](x)) <= 1e-12


#: Layers whose NaN spreads over the whole batch (a BN branch, a covariance): not in NAN_CASES.
LAYOUT_CASES = NAN_CASES + [
    ("SwitchNorm2d", lambda b: npnorm.SwitchNorm2d(4, backend=b), (3, 4, 3, 3)),
    ("IterNorm", lambda b: npnorm.IterNorm(4, num_groups=2, backend=b), (5, 4, 3, 2)),
]


@pytest.mark.parametrize("name, make, shape", LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_float16_and_strided_inputs(name, make, shape):
    """Inputs that are not float32/float64 or not contiguous: same dtype, shape and values as the reference."""
    rng = np.random.default_rng(12)
    x16 = rng.standard_normal(shape).astype(np.float16)
    strided = rng.standard_normal(shape[::-1]).T                        # Fortran order: not C-contiguous
    for x in (x16, strided):
        y_ref, y_fast = make("numpy")(x), make("numba")(x)
        assert y_fast.dtype == y_ref.dtype == x.dtype and y_fast.shape == y_ref.shape
        tol = 1e-3 if x.dtype == np.float16 else 1e-12
        assert rel_error(y_fast, y_ref) <= tol


# -- kernel-level API -------------------------------------------------------------------------------
def test_preallocated_outputs_are_written():
    from npnorm.kernels.statistics import layernorm as k
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    out = np.empty_like(x)
    y, cache = k.layer_norm_forward(x, (8,), None, None, out=out)
    assert np.shares_memory(y, out)
    dx_out = np.empty_like(x)
    dx, _, _ = k.layer_norm_backward(np.ones_like(x), cache, dx_out=dx_out)
    assert np.shares_memory(dx, dx_out)
    with pytest.raises(ValueError, match="out must be a C-contiguous float32"):
        k.layer_norm_forward(x, (8,), None, None, out=np.empty((5, 8)))


# -- the backend switch -----------------------------------------------------------------------------
def test_default_backend_is_numba():
    """The default for layers is the fast backend (unless NPNORM_BACKEND overrides it)."""
    assert get_backend() == os.environ.get("NPNORM_BACKEND", "numba")


def test_backend_switch():
    start = get_backend()
    set_backend("numba")
    try:
        _check_switch()
    finally:
        set_backend(start)


def _check_switch():
    x = np.random.default_rng(0).standard_normal((3, 4))
    layer = npnorm.LayerNorm(4)                             # backend=None: follows the global default
    layer(x)
    assert layer._cache.get("backend") == "numba"
    with use_backend("numpy") as name:
        assert name == "numpy" and get_backend() == "numpy"
        layer(x)
        assert "backend" not in layer._cache
        assert npnorm.LayerNorm(4, backend="numba")(x) is not None
    assert get_backend() == "numba"
    with pytest.raises(RuntimeError), use_backend("numpy"):
        raise RuntimeError
    assert get_backend() == "numba"                        # restored after an exception
    set_backend("numpy")
    try:
        assert get_backend() == "numpy"
    finally:
        set_backend("numba")


@pytest.mark.parametrize("bad", ["cuda", "Numba", 1, None])
def test_bad_backend_names(bad):
    with pytest.raises(ValueError, match="backend must be one of"):
        set_backend(bad)
    with pytest.raises(ValueError, match="backend must be one of"):
        with use_backend(bad):
            pass
    if bad is not None:
        with pytest.raises(ValueError, match="LayerNorm: backend must be one of"):
            npnorm.LayerNorm(4, backend=bad)


def test_backward_uses_the_forward_backend():
    """A backend switch between forward and backward does not mix caches."""
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    layer = npnorm.GroupNorm(1, 3)
    layer(x)
    with use_backend("numpy"):
        dx = layer.backward(np.ones_like(x))
    assert dx.shape == x.shape


@pytest.mark.skipif(kernels.JIT_DISABLED, reason="NUMBA_DISABLE_JIT=1: nothing is ever compiled")
def test_import_compiles_nothing():
    """``import npnorm`` leaves every kernel uncompiled (compiled or loaded from the cache on first use)."""
    code = ("import npnorm, npnorm.kernels as k; d = k.all_dispatchers(); "
            "assert len(d) > 10; print(sum(len(x.signatures) for x in d))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "0"


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "serial"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_batchnorm_kernel_agrees_serial_and_parallel(parallel, dtype, monkeypatch):
    """The fused training-mode BatchNorm, on one thread and on all, agrees with the reference - with the
    private copy of x (float32/float64 input that is the caller's array) and without (float16 input,
    converted to a private float32 array) - and editing x after the forward pass changes nothing."""
    from npnorm.kernels.statistics import batchnorm as kbn
    from npnorm.statistics import batchnorm as bn
    monkeypatch.setattr(_common, "PARALLEL_THRESHOLD", 0 if parallel else 1 << 60)
    rng = np.random.default_rng(3)
    x = (3 + 2 * rng.standard_normal((5, 6, 7, 9))).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    w, b = 1 + 0.1 * rng.standard_normal(6), 0.1 * rng.standard_normal(6)
    y, cache = kbn.batch_norm_forward(x, w, b, 1e-5)
    y_ref, cache_ref = bn.batch_norm_forward(x.astype(np.float64), w, b, 1e-5)
    assert not np.shares_memory(cache["x"], x)
    x[...] = 0                                        # editing x after the forward pass changes nothing
    grads = kbn.batch_norm_backward(dy, cache)
    grads_ref = bn.batch_norm_backward(dy.astype(np.float64), cache_ref)
    tol = {np.float64: 1e-12, np.float32: 1e-5, np.float16: 1e-5}[dtype]
    assert y.dtype == dtype and grads[0].dtype == dtype
    if dtype == np.float16:                           # the result is rounded to float16
        tol = 2e-3
    assert rel_error(y, y_ref) < tol
    for g, r in zip(grads, grads_ref):
        assert rel_error(g, r) < tol
    np.testing.assert_allclose(cache["mean"], cache_ref["mean"], rtol=1e-6 if dtype != np.float64 else 1e-12)


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 7, 8, 11])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_layernorm_backward_bodies_agree(rows, dtype):
    """The LayerNorm backward kernel runs ``_ln_bwd_rows4`` (four rows per pass, the rest row by row
    through ``_ln_bwd_rows``): with every remainder of the row count, and with the one-row body alone
    on the same rows, dx, dweight and dbias agree with the float64 reference."""
    from npnorm.kernels.statistics import layernorm as kln
    from npnorm.statistics import layernorm as ln
    rng = np.random.default_rng(rows)
    m = 37
    x = (3 + 2 * rng.standard_normal((rows, m))).astype(dtype)
    dy = rng.standard_normal((rows, m)).astype(dtype)
    w, b = 1 + 0.3 * rng.standard_normal(m), 0.1 * rng.standard_normal(m)
    _, cache = kln.layer_norm_forward(x, (m,), w, b)
    _, cache_ref = ln.layer_norm_forward(x.astype(np.float64), (m,), w, b)
    ref = ln.layer_norm_backward(dy.astype(np.float64), cache_ref)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for g, r in zip(kln.layer_norm_backward(dy, cache), ref):
        assert rel_error(g, r) < tol
    dx, dw, db = np.empty_like(x), np.zeros(m), np.zeros(m)
    kln._ln_bwd_rows(dy, cache["x"], cache["w"], cache["mean"], cache["rstd"], dx, dw, db, 0, rows)
    for g, r in zip((dx, dw, db), ref):
        assert rel_error(g, r) < tol


@pytest.mark.parametrize("rows", [0, 1, 2, 5])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_layernorm_forward_with_copy_agrees_with_the_plain_body(rows, dtype):
    """``_ln_fwd_keep_rows`` (software-pipelined: pass 3 of a row also sums the next row) gives the
    output, mean and rstd of the one-row-at-a-time ``_ln_fwd_rows`` and an exact copy of x, for any
    number of rows and row ranges that start past the first row, the last row included."""
    from npnorm.kernels.statistics import layernorm as kln
    rng = np.random.default_rng(rows)
    m = 37
    x = (3 + 2 * rng.standard_normal((rows, m))).astype(dtype)
    w, b = 1 + 0.3 * rng.standard_normal(m), 0.1 * rng.standard_normal(m)
    tol = 1e-14 if dtype == np.float64 else 1e-6
    for r0, r1 in {(0, rows), (min(1, rows), rows), (rows // 2, rows), (min(1, rows), max(min(1, rows), rows - 1))}:
        y, mean, rstd = np.zeros_like(x), np.zeros(rows), np.zeros(rows)
        y2, mean2, rstd2, keep = np.zeros_like(x), np.zeros(rows), np.zeros(rows), np.zeros_like(x)
        kln._ln_fwd_rows(x, w, b, 1e-5, y, mean, rstd, r0, r1)
        kln._ln_fwd_keep_rows(x, w, b, 1e-5, y2, mean2, rstd2, keep, r0, r1)
        np.testing.assert_array_equal(keep[r0:r1], x[r0:r1])
        np.testing.assert_allclose(mean2, mean, rtol=tol)
        np.testing.assert_allclose(rstd2, rstd, rtol=1e-12)
        np.testing.assert_allclose(y2, y, rtol=tol, atol=tol)


@pytest.mark.parametrize("groups", [1, 2, 6])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_groupnorm_forward_with_copy_agrees_with_the_plain_body(groups, dtype):
    """``_gn_fwd_keep_rows`` (software-pipelined: writing one (sample, group) block, it sums the next)
    gives the output and statistics of ``_gn_fwd_rows`` and an exact copy, for every row range (one
    row, a range ending mid-sample, the whole array) and a per-sample affine."""
    from npnorm.kernels.statistics import groupnorm as kgn
    rng = np.random.default_rng(groups)
    n, c, s = 3, 6, 7
    x = (3 + 2 * rng.standard_normal((n, c, s))).astype(dtype)
    scale, shift = 1 + 0.3 * rng.standard_normal((n, c)), 0.1 * rng.standard_normal((n, c))
    rows = n * groups
    for r0, r1 in ((0, rows), (0, 1), (rows - 1, rows), (1, max(2, rows - 1))):
        y, y2 = np.zeros_like(x), np.zeros_like(x)
        keep = np.zeros_like(x)
        mean, var, mean2, var2 = (np.zeros(rows) for _ in range(4))
        kgn._gn_fwd_rows(x, groups, scale, shift, 1e-5, y, mean, var, r0, r1)
        kgn._gn_fwd_keep_rows(x, groups, scale, shift, 1e-5, y2, mean2, var2, keep, r0, r1)
        tol = 1e-13 if dtype == np.float64 else 1e-6
        np.testing.assert_allclose(y2, y, rtol=tol, atol=tol)
        np.testing.assert_allclose(mean2, mean, rtol=tol)
        np.testing.assert_allclose(var2, var, rtol=1e-10)
        k = c // groups
        blocks = [(r // groups, (r % groups) * k) for r in range(r0, r1)]
        for b_n, b_c in blocks:
            np.testing.assert_array_equal(keep[b_n, b_c:b_c + k], x[b_n, b_c:b_c + k])


@pytest.mark.parametrize("groups", [1, 2, 6])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_groupnorm_backward_body_on_row_ranges(groups, dtype):
    """``_gn_bwd_rows`` (software-pipelined: writing dx of one block, it takes the sums of the next)
    on any row range gives the sums and dx of the backward formula for exactly the rows of the range,
    and writes nothing outside it (in the parallel driver the next row belongs to another thread)."""
    from npnorm.kernels.statistics import groupnorm as kgn
    rng = np.random.default_rng(groups)
    n, c, s = 3, 6, 7
    k, rows = c // groups, n * groups
    x = (3 + 2 * rng.standard_normal((n, c, s))).astype(dtype)
    dy = rng.standard_normal((n, c, s)).astype(dtype)
    scale = 1 + 0.3 * rng.standard_normal((n, c))
    x64 = x.astype(np.float64).reshape(n, groups, k * s)
    mean, rstd = x64.mean(axis=2).ravel(), 1 / np.sqrt(x64.var(axis=2).ravel() + 1e-5)
    mu = np.repeat(mean.reshape(n, groups), k, axis=1)[..., None]
    r = np.repeat(rstd.reshape(n, groups), k, axis=1)[..., None]
    d64 = dy.astype(np.float64)
    want_sdy, want_sdyx = d64.sum(axis=2), (d64 * (x - mu)).sum(axis=2)
    g = scale[..., None] * d64
    g_mean = np.repeat((scale * want_sdy).reshape(n, groups, k).sum(axis=2) / (k * s), k, axis=1)[..., None]
    gx_mean = np.repeat((scale * want_sdyx).reshape(n, groups, k).sum(axis=2) / (k * s), k, axis=1)[..., None] * r
    want_dx = r * (g - g_mean - (x - mu) * r * gx_mean)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for r0, r1 in ((0, rows), (0, 1), (rows - 1, rows), (1, max(2, rows - 1))):
        dx = np.full_like(x, np.nan)
        sdy, sdyx = np.full((n, c), np.nan), np.full((n, c), np.nan)
        kgn._gn_bwd_rows(dy, x, groups, scale, mean, rstd, dx, sdy, sdyx, r0, r1)
        inside = np.zeros((n, c), dtype=bool)
        for row in range(r0, r1):
            inside[row // groups, (row % groups) * k:(row % groups + 1) * k] = True
        assert np.isnan(sdy[~inside]).all() and np.isnan(sdyx[~inside]).all() and np.isnan(dx[~inside]).all()
        assert rel_error(sdy[inside], want_sdy[inside]) < tol
        assert rel_error(sdyx[inside], want_sdyx[inside]) < tol
        assert rel_error(dx[inside], want_dx[inside]) < tol


# -- review fixes: l2norm out=/keep_out= off the last axis, PatchNorm's weight, private parameters ---
def test_l2norm_twin_out_needs_the_last_axis():
    """``out=`` (and ``dx_out=``) cannot hold rows of another axis: a clear error, not a silent drop."""
    from npnorm.kernels.transformer import l2norm as kl2
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    with pytest.raises(ValueError, match="out= needs dim to be the last axis"):
        kl2.l2_normalize_forward(x, 1, out=np.empty_like(x))
    y, cache = kl2.l2_normalize_forward(x, 1)
    with pytest.raises(ValueError, match="dx_out= needs the normalized axis to be the last one"):
        kl2.l2_normalize_backward(np.ones_like(y), cache, dx_out=np.empty_like(x))
    # on the last axis out= is written
    out = np.empty_like(x)
    y, _ = kl2.l2_normalize_forward(x, -1, out=out)
    assert np.shares_memory(y, out)


def test_l2norm_twin_keep_out_off_the_last_axis():
    """``keep_out=`` is used (not dropped) when the normalized axis is not the last one, and the
    result and gradient are those of a fresh run."""
    from npnorm.kernels.transformer import l2norm as kl2
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 8))        # dim 0 moved last: a (8, 1) view of x, no copy
    dy = rng.standard_normal(x.shape)
    y_ref, c_ref = kl2.l2_normalize_forward(x.copy(), 0)
    keep = np.empty(x.size)
    y, cache = kl2.l2_normalize_forward(x, 0, keep_out=keep)
    assert np.shares_memory(cache["x"], keep) and not np.shares_memory(cache["x"], x)
    x += 5.0                               # the cache holds the copy in keep, not x
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(kl2.l2_normalize_backward(dy, cache), kl2.l2_normalize_backward(dy, c_ref))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("stride", [1, 2])
def test_patchnorm_twin_backward_ignores_weight_edits(dtype, stride):
    """The cache keeps a private copy of the weight: editing the caller's weight between forward and
    backward does not change the gradients (compared with a fresh run)."""
    from npnorm.kernels.divergence import patchnorm as kpn
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4)
    y, cache = kpn.patch_norm_conv2d_forward(x, w.copy(), b, stride, 1)
    dy = rng.standard_normal(y.shape).astype(dtype)
    ref = kpn.patch_norm_conv2d_backward(dy, cache)
    w_edit = w.copy()
    _, cache = kpn.patch_norm_conv2d_forward(x, w_edit, b, stride, 1)
    w_edit *= -3.0
    for got, want in zip(kpn.patch_norm_conv2d_backward(dy, cache), ref):
        np.testing.assert_array_equal(got, want)


def test_as_f64_is_a_private_copy():
    """The kernels' parameter vectors (caches hold them) never alias the caller's array."""
    w = np.arange(3.0)
    for shape in [(3,), (1, 3)]:
        v = _common.as_f64(w, shape, 1.0)
        assert v.shape == shape and v.dtype == np.float64 and v.flags.c_contiguous
        assert not np.shares_memory(v, w)
    np.testing.assert_array_equal(_common.as_f64(None, (2,), 1.0), np.ones(2))
