"""Never a silently wrong gradient (issue 11): registry-driven, so every layer registered later is
covered without editing this file.

1. Aliasing: after the forward pass, the caller edits every input, the returned output, every
   parameter and every running buffer in place; the backward pass gives the same gradients as
   without the edits (or raises a clear error). Every layer, every case and mode, every backend.
2. The upstream gradient: a ``dout`` whose shape differs from the forward output's is a
   ``ValueError`` naming the layer, the expected and the given shape; a non-floating one a
   ``TypeError``. Every layer, case, mode and backend.
3. Empty batches (the batch axis of every input set to 0, ``Spec.batch_axis``): an empty output,
   empty input gradients, zero parameter gradients; running statistics unchanged while
   ``num_batches_tracked`` still counts the batch in training (PyTorch 2.13's rule, recorded in
   ``tests/data/pytorch_reliability.npz``). One-element normalization sets: raise where PyTorch
   raises, PyTorch's values where it does not (recorded probes, both backends).
4. The public functional forms validate their arguments like the classes.
5. Constructor signatures: every layer with a PyTorch twin accepts the twin's full signature
   (names, order, kinds, defaults) as recorded from PyTorch 2.13 in
   ``tests/data/pytorch_signatures.json`` by ``tools/pytorch_ref_signatures.py``.
6. A second ``backward`` with the same ``dout`` replaces the gradients (the same values, not twice
   them): npnorm's documented difference from PyTorch, which accumulates.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest

import npnorm
from npnorm.registry import specs

DATA = Path(__file__).parent / "data"


def _backends(spec):
    return spec.backends if "numba" in spec.backends else (None,)


def _all_cases(only_with_inputs=False):
    for spec in specs():
        for case in spec.cases:
            if only_with_inputs and not case.input_shapes:
                continue
            for mode in case.modes:
                for backend in _backends(spec):
                    tag = f"{spec.name}-{case.name}-{mode}" + (f"-{backend}" if backend else "")
                    yield pytest.param(spec, case, mode, backend, id=tag)


ALL = list(_all_cases())


def _build(spec, case, mode, backend, seed=7, dtype=np.float64, **overrides):
    if backend is not None:
        overrides["backend"] = backend
    return spec.build(case, seed=seed, mode=mode, dtype=dtype, **overrides)


def _is_int(x):
    """Integer inputs (class labels, token ids) are data, not differentiated: edited by permuting."""
    return np.issubdtype(np.asarray(x).dtype, np.integer)


def _as_tuple(g):
    """The input gradients as a tuple (``None``: a layer whose inputs are all constant has none)."""
    return () if g is None else g if isinstance(g, tuple) else (g,)


def _buffers(layer):
    """Every array a module keeps as a public attribute (running statistics, power-iteration vectors,
    running whitening matrices, ...): the caller may edit any of them between forward and backward."""
    out = {}
    for i, m in enumerate(layer.modules()):
        for k, v in vars(m).items():
            if not k.startswith("_") and isinstance(v, np.ndarray) and v.size and np.issubdtype(v.dtype, np.floating):
                out[f"{i}.{k}"] = v
    return out


# -- 1. aliasing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("spec, case, mode, backend", ALL)
def test_editing_arrays_after_forward_does_not_change_the_gradient(spec, case, mode, backend, dtype):
    ref, inputs = _build(spec, case, mode, backend, dtype=dtype)
    out = ref(*[x.copy() for x in inputs])
    dout = np.random.default_rng(3).standard_normal(np.shape(out)).astype(out.dtype)
    dx_ref = _as_tuple(ref.backward(dout.copy()))
    grads_ref = {k: np.array(v) for k, v in ref.grads.items()}

    layer, inputs = _build(spec, case, mode, backend, dtype=dtype)
    inputs = [x.copy() for x in inputs]
    out = layer(*inputs)
    edit = np.random.default_rng(4)
    for arr in [*inputs, out, *layer.params.values(), *_buffers(layer).values()]:
        if isinstance(arr, np.ndarray) and arr.flags.writeable and arr.size and _is_int(arr):
            arr[...] = np.roll(arr, 1) if np.unique(arr).size > 1 else 1 - arr  # other valid ids/labels
        elif isinstance(arr, np.ndarray) and arr.flags.writeable and arr.size:
            arr *= 3.0
            arr += 7.0 + edit.standard_normal(arr.shape).astype(arr.dtype)
    try:
        dx = _as_tuple(layer.backward(dout.copy()))
    except (RuntimeError, ValueError) as err:  # a clear error is acceptable; silence is not
        assert spec.cls.__name__ in str(err) or type(layer).__name__ in str(err), err
        return
    tol = 1e-10 if dtype == np.float64 else 1e-4
    for a, b in zip(dx, dx_ref):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg="input gradient changed")
    for k, v in grads_ref.items():
        np.testing.assert_allclose(layer.grads[k], v, rtol=tol, atol=tol, err_msg=f"gradient of {k} changed")


@pytest.mark.parametrize("spec, case, mode, backend", ALL)
def test_a_second_forward_reuses_buffers_safely(spec, case, mode, backend):
    """The Numba layers reuse the private input copy of the cache a forward pass replaces: two forward
    passes, then an edit of the second input, then backward gives the same gradients as without
    the edit."""
    def run(edit):
        layer, inputs = _build(spec, case, mode, backend, seed=8)
        layer(*[x.copy() for x in inputs])
        # other values, same shapes (integer ids/labels: the same values in another order)
        second = [x[::-1].copy() if _is_int(x) else x[::-1].copy() * 0.5 + 1.0 for x in inputs]
        out = layer(*second)
        if edit:
            for x in second:
                if _is_int(x):
                    x[...] = np.roll(x, 1)
                else:
                    x += 100.0
        dout = np.random.default_rng(5).standard_normal(np.shape(out))
        return _as_tuple(layer.backward(dout)), dict(layer.grads)

    (dx_ref, g_ref), (dx, g) = run(False), run(True)
    for a, b in zip(dx, dx_ref):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    for k in g_ref:
        np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("spec, case, mode, backend", ALL)
def test_a_second_backward_replaces_the_gradients(spec, case, mode, backend):
    """``backward`` replaces ``layer.grads`` (PyTorch would add into ``.grad``; the difference is in
    the book's conventions chapter): a second call with the same ``dout`` gives the same input
    gradients and the same parameter gradients, not twice them."""
    layer, inputs = _build(spec, case, mode, backend, seed=9)
    out = layer(*[x.copy() for x in inputs])
    dout = np.random.default_rng(6).standard_normal(np.shape(out))
    dx1 = _as_tuple(layer.backward(dout.copy()))
    g1 = {k: np.array(v) for k, v in layer.grads.items()}
    try:
        dx2 = _as_tuple(layer.backward(dout.copy()))
    except RuntimeError as err:  # a clear error is acceptable; silently doubled gradients are not
        assert type(layer).__name__ in str(err), err
        return
    for a, b in zip(dx2, dx1):
        np.testing.assert_array_equal(a, b)
    assert set(layer.grads) == set(g1)
    for k, v in g1.items():
        np.testing.assert_array_equal(layer.grads[k], v, err_msg=k)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_issue_example_batchnorm_input_edited(backend, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4)).astype(dtype)
    g = rng.standard_normal((5, 4)).astype(dtype)
    expected = npnorm.BatchNorm1d(4, backend="numpy").train()
    expected(x.copy())
    dx_expected = expected.backward(g)
    bn = npnorm.BatchNorm1d(4, backend=backend)
    bn(x)
    x += 10.0
    np.testing.assert_allclose(bn.backward(g), dx_expected, rtol=1e-5, atol=1e-5)


# -- 2. the upstream gradient -------------------------------------------------------------------------
def _wrong_shapes(shape):
    shape = tuple(shape)
    wrong = [shape + (1,), shape[:-1] + (shape[-1] + 1,) if shape else (2,)]
    if len(shape) >= 2 and shape[::-1] != shape:
        wrong.append(shape[::-1])
    if shape and shape[0] > 1:
        wrong.append((1,) + shape[1:])               # broadcastable: must still be rejected
    return wrong


@pytest.mark.parametrize("spec, case, mode, backend", ALL)
def test_backward_rejects_a_dout_of_the_wrong_shape_or_dtype(spec, case, mode, backend):
    layer, inputs = _build(spec, case, mode, backend)
    out = layer(*inputs)
    name = type(layer).__name__
    for shape in _wrong_shapes(out.shape):
        with pytest.raises(ValueError) as info:
            layer.backward(np.ones(shape))
        msg = str(info.value)
        assert name in msg and str(tuple(out.shape)) in msg and str(tuple(shape)) in msg, msg
    with pytest.raises(TypeError, match=rf"{re.escape(name)}.*dout.*int64"):
        layer.backward(np.ones(out.shape, dtype=np.int64))
    layer.backward(np.ones(out.shape))                   # and the right one still works


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_issue_example_layernorm_transposed_dout(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    ln = npnorm.LayerNorm(4, backend=backend)
    ln(x)
    with pytest.raises(ValueError, match=r"LayerNorm\.backward.*\(3, 4\).*\(4, 3\)"):
        ln.backward(rng.standard_normal((4, 3)))


# -- 3. empty batches ---------------------------------------------------------------------------------
def _batch_axis(spec, case):
    """The spec's ``batch_axis``; a case may override it with ``extra={"batch_axis": ...}`` (``None``
    for unbatched input)."""
    return case.extra.get("batch_axis", spec.batch_axis)


def _empty_cases():
    for p in _all_cases(only_with_inputs=True):
        spec, case = p.values[:2]
        if _batch_axis(spec, case) is not None:
            yield p


@pytest.mark.parametrize("spec, case, mode, backend", list(_empty_cases()))
def test_empty_batch(spec, case, mode, backend):
    layer, inputs = _build(spec, case, mode, backend)
    ax = _batch_axis(spec, case)
    empty = [np.take(x, [], axis=ax) for x in inputs]
    before = {k: v.copy() for k, v in _buffers(layer).items()}
    counts = [getattr(m, "num_batches_tracked", None) for m in layer.modules()]
    out = layer(*empty)
    floating = [x for x in inputs if not _is_int(x)]      # integer ids: the output has the build's dtype
    assert out.shape[ax] == 0 and out.dtype == (floating[0].dtype if floating else np.float64)
    # the output of the same layer on a full batch has the same shape apart from the batch
    full_layer, full_inputs = _build(spec, case, mode, backend)
    full_out = full_layer(*full_inputs)
    assert out.shape[:ax] + out.shape[ax + 1:] == full_out.shape[:ax] + full_out.shape[ax + 1:]
    dx = _as_tuple(layer.backward(np.zeros(out.shape, dtype=out.dtype)))
    differentiable = [x for name, x in zip(spec.input_names, empty) if name in spec.differentiable_inputs]
    assert len(dx) == len(differentiable), f"{len(dx)} input gradients for {spec.differentiable_inputs}"
    for g, x in zip(dx, differentiable):
        assert g.shape == x.shape and g.dtype == x.dtype
    for k, p in layer.params.items():
        g = layer.grads[k]
        assert g.shape == np.shape(p) and np.all(g == 0), f"gradient of {k}: {g}"
    after = _buffers(layer)
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=f"{k} changed on an empty batch")
    for m, c in zip(layer.modules(), counts):
        if c is not None:
            expected = c + 1 if (m.training and getattr(m, "track_running_stats", False)) else c
            assert m.num_batches_tracked == expected, type(m).__name__


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_issue_examples_empty_batch(backend):
    y = npnorm.GroupNorm(2, 4, backend=backend)(np.zeros((0, 4, 3, 3)))
    assert y.shape == (0, 4, 3, 3)
    bn = npnorm.BatchNorm2d(4, backend=backend)
    assert bn.eval()(np.zeros((0, 4, 3, 3))).shape == (0, 4, 3, 3)
    bn.train()
    bn(np.zeros((0, 4, 3, 3)))
    assert bn.num_batches_tracked == 1
    np.testing.assert_array_equal(bn.running_mean, np.zeros(4))
    np.testing.assert_array_equal(bn.running_var, np.ones(4))


# -- 3b. degenerate sets and empty batches, replayed from PyTorch 2.13 -------------------------------
def _probes():
    with np.load(DATA / "pytorch_reliability.npz") as data:
        store = {k: data[k] for k in data.files}
    names = sorted({k.split("/")[1] for k in store if k.startswith("probe/")})
    return store, names


PROBE_STORE, PROBES = _probes()


def _npnorm_twin(torch_ctor: str, backend: str):
    """``nn.BatchNorm1d(2, affine=False)`` -> the npnorm layer with the same arguments."""
    expr = torch_ctor.replace("nn.", "npnorm.", 1)
    layer = eval(expr, {"npnorm": npnorm})  # noqa: S307 - our own recorded strings
    if hasattr(layer, "backend"):
        layer.backend = backend
    return layer


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("probe", PROBES)
def test_probe_matches_pytorch(probe, backend):
    s = PROBE_STORE
    p = f"probe/{probe}/"
    layer = _npnorm_twin(str(s[p + "ctor"]), backend)
    for key in list(layer.params):
        layer.params[key] = s[p + f"param/{key}"].copy()
    if p + "running_mean0" in s:
        layer.running_mean, layer.running_var = s[p + "running_mean0"].copy(), s[p + "running_var0"].copy()
    layer.train(str(s[p + "mode"]) == "train")
    x = s[p + "x"]
    if p + "error" in s and str(s[p + "error_type"]) == "ValueError":
        with pytest.raises(ValueError, match=r"more than 1"):
            layer(x)
        return
    if p + "error" in s:
        # PyTorch 2.13 fails inside its own code (an IndexError for an affine or tracking
        # InstanceNorm on an empty batch): a PyTorch bug, not a rule. npnorm follows the rule the
        # plain layer obeys - an empty output, zero parameter gradients, running statistics kept.
        assert x.shape[0] == 0
        rm0 = getattr(layer, "running_mean", None)
        y = layer(x)
        assert y.shape == x.shape
        assert layer.backward(np.zeros_like(y)).shape == x.shape
        assert all(np.all(g == 0) for g in layer.grads.values()) and set(layer.grads) == set(layer.params)
        if rm0 is not None:
            np.testing.assert_array_equal(layer.running_mean, rm0)
        return
    y = layer(x)
    np.testing.assert_allclose(y, s[p + "y"], rtol=1e-10, atol=1e-12)
    dx = layer.backward(s[p + "dy"])
    np.testing.assert_allclose(dx, s[p + "dx"], rtol=1e-10, atol=1e-10)
    for key in layer.params:
        expected = s[p + f"d{key}"]
        np.testing.assert_allclose(layer.grads[key], np.nan_to_num(expected), rtol=1e-10, atol=1e-10)
    if p + "running_mean" in s:
        np.testing.assert_allclose(layer.running_mean, s[p + "running_mean"], rtol=1e-12)
        np.testing.assert_allclose(layer.running_var, s[p + "running_var"], rtol=1e-12)
        if not type(layer).__name__.startswith("InstanceNorm"):  # npnorm's IN counts (documented)
            assert layer.num_batches_tracked == int(s[p + "num_batches_tracked"])


# -- 4. functional forms ------------------------------------------------------------------------------
from npnorm.statistics import batchnorm as _bn, groupnorm as _gn, instancenorm as _in, layernorm as _ln  # noqa: E402
from npnorm.adaptive import adain as _ada  # noqa: E402
from npnorm.weights import spectralnorm as _sn, weightnorm as _wn, weightstd as _ws  # noqa: E402
from npnorm.kernels.statistics import batchnorm as _kbn, groupnorm as _kgn, instancenorm as _kin  # noqa: E402
from npnorm.kernels.statistics import layernorm as _kln  # noqa: E402
from npnorm.kernels.adaptive import adain as _kada  # noqa: E402
from npnorm.statistics import batchrenorm as _brn, evonorm as _evo, grn as _grn  # noqa: E402
from npnorm.kernels.statistics import batchrenorm as _kbrn, evonorm as _kevo, grn as _kgrn  # noqa: E402
from npnorm.statistics import iternorm as _itn, switchnorm as _swn  # noqa: E402
from npnorm.kernels.statistics import iternorm as _kitn, switchnorm as _kswn  # noqa: E402
from npnorm.kernels.transformer import l2norm as _kl2  # noqa: E402
from npnorm.kernels.adaptive import adagroupnorm as _kagn  # noqa: E402
from npnorm.transformer import l2norm as _l2  # noqa: E402
from npnorm.adaptive import adagroupnorm as _agn  # noqa: E402
from npnorm.transformer import dyt as _dyt  # noqa: E402

X = np.random.default_rng(0).standard_normal((4, 6, 3))
W6 = np.ones(6)
X4 = np.random.default_rng(1).standard_normal((2, 3, 4, 5))
W3 = np.ones(3)
L3 = np.ones(3)                      # SwitchNorm2d's logits (IN, LN, BN)
EMB = np.random.default_rng(2).standard_normal((4, 5))           # AdaGN: embedding of X's 4 samples
LW, LB = np.random.default_rng(3).standard_normal((12, 5)), np.zeros(12)   # projection to 2 C = 12

FUNCTIONAL_BAD = [
    # (callable, args, exception, pattern)
    (_bn.batch_norm_forward, (X.astype(int), W6, W6), TypeError, r"batch_norm_forward: x must be a floating"),
    (_bn.batch_norm_forward, (X[0, 0], None, None), ValueError, r"batch_norm_forward: expected x of shape \(N, C, \*\)"),
    (_bn.batch_norm_forward, (X, np.ones(5), W6), ValueError, r"batch_norm_forward: weight must have shape \(6,\)"),
    (_bn.batch_norm_forward, (X, W6, np.ones((6, 1))), ValueError, r"batch_norm_forward: bias must have shape \(6,\)"),
    (_bn.batch_norm_forward, (X, W6, W6, 0.0), ValueError, r"batch_norm_forward: eps must be > 0"),
    (_bn.batch_norm_forward, (X[:1, :, :1], None, None), ValueError, r"more than 1 value per channel"),
    (_bn.batch_norm_forward, (np.zeros((3, 0)), None, None), ValueError, r"at least one channel"),
    (_bn.batch_norm_eval_forward, (X, np.zeros(5), np.ones(6), None, None), ValueError,
     r"running_mean must have shape \(6,\)"),
    (_bn.batch_norm_eval_forward, (X, np.zeros(6), -np.ones(6), None, None), ValueError,
     r"running_var must be >= 0"),
    (_gn.group_norm_forward, (X, 4, None, None), ValueError, r"group_norm_forward: num_groups=4 must divide"),
    (_gn.group_norm_forward, (X, 0, None, None), ValueError, r"group_norm_forward: num_groups must be >= 1"),
    (_gn.group_norm_forward, (X, 2.0, None, None), TypeError, r"num_groups must be a positive integer"),
    (_gn.group_norm_forward, (X, 2, np.ones(3), None), ValueError, r"weight must have shape \(6,\)"),
    (_ln.layer_norm_forward, (X, (4,), None, None), ValueError, r"normalized_shape=\(4,\)"),
    (_ln.layer_norm_forward, (X, 3, np.ones(4), None), ValueError, r"weight must have shape \(3,\)"),
    (_ln.layer_norm_forward, (X, (3,), None, None, -1.0), ValueError, r"eps must be > 0"),
    (_ln.rms_norm_forward, (X, (3,), np.ones(2)), ValueError, r"rms_norm_forward: weight must have shape \(3,\)"),
    (_ln.rms_norm_forward, (X.astype(np.complex128), (3,), None), TypeError, r"floating"),
    (_in.instance_norm_forward, (X[:, :, :1], None, None), ValueError, r"more than 1 spatial element"),
    (_in.instance_norm_forward, (X[0], None, None), ValueError, r"expected x of shape \(N, C, \*spatial\)"),
    (_ada.adain_forward, (X, X[:, :5]), ValueError, r"adain_forward: content has 6 channels but style has 5"),
    (_ada.adain_forward, (X, X, 0), ValueError, r"eps must be > 0"),
    (_wn.weight_norm_forward, (np.ones((3, 2)), np.ones(3)), ValueError, r"weight_norm_forward: g must have shape \(3, 1\)"),
    (_wn.weight_norm_forward, (np.ones((3, 2)), np.ones((3, 1)), 5), ValueError, r"dim=5 is out of range"),
    (_sn.spectral_norm_forward, (np.ones((3, 2)), np.ones(2), np.ones(2)), ValueError, r"u must have shape \(3,\)"),
    (_sn.spectral_norm_forward, (np.ones(3), np.ones(3), np.ones(1)), ValueError, r"at least 2-D"),
    (_ws.weight_standardization_forward, (np.ones(3),), ValueError, r"at least 2-D"),
    (_ws.weight_standardization_forward, (np.ones((3, 2)), -1.0), ValueError, r"eps must be > 0"),
    # the Numba twins share the checks
    (_kbn.batch_norm_forward, (X, np.ones(5), W6), ValueError, r"weight must have shape \(6,\)"),
    (_kgn.group_norm_forward, (X, 4, None, None), ValueError, r"num_groups=4 must divide"),
    (_kln.layer_norm_forward, (X, 3, np.ones(4), None), ValueError, r"weight must have shape \(3,\)"),
    (_kln.rms_norm_forward, (X, 3, None, 0.0), ValueError, r"eps must be > 0"),
    (_kin.instance_norm_forward, (X[:, :, :1], None, None), ValueError, r"more than 1 spatial element"),
    (_kada.adain_forward, (X, X[:, :5]), ValueError, r"content has 6 channels"),
    # groups must divide the channels (the kernels would leave the last channels of y unwritten)
    (_kevo.evonorm_s0_forward, (X4, W3, W3, W3, 2), ValueError,
     r"evonorm_s0_forward: groups=2 must divide the 3 channels"),
    (_kitn.iter_norm_forward, (X4, W3, W3, 2), ValueError, r"iter_norm_forward: groups=2 must divide the 3 channels"),
    (_kitn.iter_norm_eval_forward, (X4, np.zeros(3), np.ones((2, 1, 1)), W3, W3, 2), ValueError,
     r"iter_norm_eval_forward: groups=2 must divide the 3 channels"),
    (_evo.evonorm_s0_forward, (X4, W3, W3, W3, 2), ValueError,
     r"evonorm_s0_forward: groups=2 must divide the 3 channels"),
    (_itn.iter_norm_forward, (X4, W3, W3, 2), ValueError, r"iter_norm_forward: groups=2 must divide the 3 channels"),
    (_itn.iter_norm_eval_forward, (X4, np.zeros(3), np.ones((2, 1, 1)), W3, W3, 2), ValueError,
     r"iter_norm_eval_forward: groups=2 must divide the 3 channels"),
    # out= cannot be honoured when the normalized axis is not the last one
    (_kl2.l2_normalize_forward, (X, 1, 1e-12, np.empty_like(X)), ValueError,
     r"l2_normalize_forward: out= needs dim to be the last axis"),
]


@pytest.mark.parametrize("fn, args, exc, pattern", FUNCTIONAL_BAD,
                         ids=[f"{f.__module__.split('.')[-2]}.{f.__name__}-{i}" for i, (f, *_) in enumerate(FUNCTIONAL_BAD)])
def test_functional_forms_validate_their_arguments(fn, args, exc, pattern):
    if fn is _kl2.l2_normalize_forward:                  # out= is keyword-only
        *args, out = args
        with pytest.raises(exc, match=pattern):
            fn(*args, out=out)
        return
    with pytest.raises(exc, match=pattern):
        fn(*args)


FUNCTIONAL_PAIRS = [
    (_bn.batch_norm_forward, _bn.batch_norm_backward, (X, W6, W6)),
    (_bn.batch_norm_forward, _bn.batch_norm_backward_staged, (X, W6, W6)),
    (_bn.batch_norm_eval_forward, _bn.batch_norm_eval_backward, (X, np.zeros(6), np.ones(6), W6, W6)),
    (_gn.group_norm_forward, _gn.group_norm_backward, (X, 2, W6, W6)),
    (_ln.layer_norm_forward, _ln.layer_norm_backward, (X, (3,), None, None)),
    (_ln.rms_norm_forward, _ln.rms_norm_backward, (X, (3,), None)),
    (_in.instance_norm_forward, _in.instance_norm_backward, (X, W6, W6)),
    (_ada.adain_forward, _ada.adain_backward, (X, X)),
    (_wn.weight_norm_forward, _wn.weight_norm_backward, (np.ones((3, 2)), np.ones((3, 1)))),
    (_sn.spectral_norm_forward, _sn.spectral_norm_backward, (np.eye(3, 2), np.ones(3), np.ones(2))),
    (_ws.weight_standardization_forward, _ws.weight_standardization_backward, (X,)),
    (_kbn.batch_norm_forward, _kbn.batch_norm_backward, (X, W6, W6)),
    (_kbn.batch_norm_eval_forward, _kbn.batch_norm_eval_backward, (X, np.zeros(6), np.ones(6), W6, W6)),
    (_kgn.group_norm_forward, _kgn.group_norm_backward, (X, 2, W6, W6)),
    (_kln.layer_norm_forward, _kln.layer_norm_backward, (X, (3,), None, None)),
    (_kln.rms_norm_forward, _kln.rms_norm_backward, (X, (3,), None)),
    (_kin.instance_norm_forward, _kin.instance_norm_backward, (X, W6, W6)),
    (_kada.adain_forward, _kada.adain_backward, (X, X)),
    # the catalog layers with a Numba twin (issue 18), both backends
    (_brn.batch_renorm_forward, _brn.batch_renorm_backward, (X, W6, W6, np.zeros(6), np.ones(6))),
    (_kbrn.batch_renorm_forward, _kbrn.batch_renorm_backward, (X, W6, W6, np.zeros(6), np.ones(6))),
    (_kbrn.batch_renorm_eval_forward, _kbrn.batch_renorm_eval_backward, (X, np.zeros(6), np.ones(6), W6, W6)),
    (_grn.grn_forward, _grn.grn_backward, (X4, np.ones(5), np.zeros(5))),
    (_kgrn.grn_forward, _kgrn.grn_backward, (X4, np.ones(5), np.zeros(5))),
    (_kgrn.grn_forward, _kgrn.grn_backward, (X4, np.ones(3), np.zeros(3), 1e-6, False)),
    (_evo.evonorm_b0_forward, _evo.evonorm_b0_backward, (X4, W3, W3, W3)),
    (_kevo.evonorm_b0_forward, _kevo.evonorm_b0_backward, (X4, W3, W3, W3)),
    (_kevo.evonorm_b0_forward, _kevo.evonorm_b0_backward, (X4, W3, W3, W3, W3)),
    (_evo.evonorm_s0_forward, _evo.evonorm_s0_backward, (X4, W3, W3, W3, 3)),
    (_kevo.evonorm_s0_forward, _kevo.evonorm_s0_backward, (X4, W3, W3, W3, 3)),
    (_swn.switch_norm_forward, _swn.switch_norm_backward, (X4, W3, W3, L3, L3)),
    (_swn.switch_norm_forward, _swn.switch_norm_backward, (X4, W3, W3, L3, L3, 1e-5, (np.zeros(3), np.ones(3)))),
    (_kswn.switch_norm_forward, _kswn.switch_norm_backward, (X4, W3, W3, L3, L3)),
    (_kswn.switch_norm_forward, _kswn.switch_norm_backward, (X4, W3, W3, L3, L3, 1e-5, (np.zeros(3), np.ones(3)))),
    (_kitn.iter_norm_forward, _kitn.iter_norm_backward, (X4, W3, W3, 1)),
    (_kitn.iter_norm_eval_forward, _kitn.iter_norm_eval_backward, (X4, np.zeros(3), np.eye(3)[None], W3, W3, 1)),
    # the transformer / adaptive twins
    (_kl2.l2_normalize_forward, _kl2.l2_normalize_backward, (X,)),
    (_kl2.l2_normalize_forward, _kl2.l2_normalize_backward, (X, 1)),
    (_kl2.scale_norm_forward, _kl2.scale_norm_backward, (X, 2.0)),
    (_kagn.ada_group_norm_forward, _kagn.ada_group_norm_backward, (X, EMB, LW, LB, 2)),
    (_kagn.ada_group_norm_forward, _kagn.ada_group_norm_backward, (X, EMB, LW, LB, 2, 1e-5, "silu", W6, W6)),
    (_dyt.dyt_forward, _dyt.dyt_backward, (X, 0.5, W6, W6, False)),
    (_l2.l2_normalize_forward, _l2.l2_normalize_backward, (X,)),
    (_l2.l2_normalize_forward, _l2.l2_normalize_backward_staged, (X, 1)),
    (_l2.scale_norm_forward, _l2.scale_norm_backward, (X, 2.0)),
    (_agn.ada_group_norm_forward, _agn.ada_group_norm_backward, (X, EMB, LW, LB, 2)),
    (_agn.ada_group_norm_forward, _agn.ada_group_norm_backward, (X, EMB, LW, LB, 2, 1e-5, "silu", W6, W6)),
]


@pytest.mark.parametrize("fwd, bwd, args", FUNCTIONAL_PAIRS,
                         ids=[f"{b.__module__.split('.')[-2]}.{b.__name__}" for _, b, _ in FUNCTIONAL_PAIRS])
def test_functional_backward_validates_dout(fwd, bwd, args):
    out, cache = fwd(*args)
    with pytest.raises(ValueError, match=rf"{bwd.__name__}: dout must have the shape of the forward output"):
        bwd(np.ones(out.shape + (1,)), cache)
    with pytest.raises(TypeError, match=rf"{bwd.__name__}: dout must be a floating"):
        bwd(np.ones(out.shape, dtype=int), cache)
    with pytest.raises(TypeError, match=rf"{bwd.__name__}: cache must be"):
        bwd(np.ones(out.shape), None)
    bwd(np.ones(out.shape), cache)


@pytest.mark.parametrize("mod", [_agn, _kagn], ids=["numpy", "numba"])
def test_ada_group_norm_functional_cache_keeps_its_own_projection_weight(mod):
    """Editing the projection weight (an optimizer step) between forward and backward must not change
    the gradient of the embedding: the cache holds a copy."""
    lw = LW.copy()
    out, cache = mod.ada_group_norm_forward(X, EMB, lw, LB, 2, 1e-5, "silu")
    dy = np.random.default_rng(7).standard_normal(out.shape)
    _, cache_ref = mod.ada_group_norm_forward(X, EMB, LW.copy(), LB, 2, 1e-5, "silu")
    lw += 1.0
    got, want = mod.ada_group_norm_backward(dy, cache), mod.ada_group_norm_backward(dy, cache_ref)
    for a, b in zip(got, want):
        if a is not None:
            np.testing.assert_array_equal(a, b)


# -- 5. constructor signatures ------------------------------------------------------------------------
SIGNATURES = json.loads((DATA / "pytorch_signatures.json").read_text())


def _twin_cases():
    for spec in specs():
        if spec.pytorch:
            yield pytest.param(spec, id=spec.name)


def test_signatures_were_recorded_from_pytorch_2_13():
    assert SIGNATURES["torch_version"].startswith("2.13")


@pytest.mark.parametrize("spec", list(_twin_cases()))
def test_constructor_accepts_pytorch_signature(spec):
    torch_name = spec.pytorch.split("(")[0].strip()
    assert torch_name in SIGNATURES["signatures"], (
        f"{spec.name}: no recorded signature for {torch_name}; add it to tools/pytorch_ref_signatures.py")
    theirs = SIGNATURES["signatures"][torch_name]
    twin = spec.twin()
    ours = [p for p in inspect.signature(twin).parameters.values() if p.name != "self"]
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    for i, t in enumerate(theirs):
        if t["kind"] in ("POSITIONAL_OR_KEYWORD", "VAR_POSITIONAL", "POSITIONAL_ONLY"):
            assert i < len(ours), f"{spec.name}: missing {t['name']} (position {i})"
            o = ours[i]
            same_name = o.name == t["name"] or t["kind"] == "VAR_POSITIONAL"   # *args: any name
            assert same_name and o.kind.name == t["kind"], \
                f"{spec.name}: parameter {i} is {o.name} ({o.kind.name}), PyTorch has {t['name']} ({t['kind']})"
        else:
            by_name = {p.name: p for p in ours}
            if t["kind"] == "VAR_KEYWORD":
                assert any(p.kind.name == "VAR_KEYWORD" for p in ours), f"{spec.name}: no **{t['name']}"
                continue
            assert t["name"] in by_name, f"{spec.name}: missing keyword {t['name']}"
            o = by_name[t["name"]]
            assert o.kind in (positional, inspect.Parameter.KEYWORD_ONLY)
        default = "<required>" if o.default is inspect.Parameter.empty else repr(o.default)
        if t["kind"] not in ("VAR_POSITIONAL", "VAR_KEYWORD"):
            assert default == t["default"], f"{spec.name}.{t['name']}: default {default}, PyTorch {t['default']}"
    # npnorm's own extras never shift PyTorch's positions: they come after, keyword-only
    n_pos = sum(t["kind"] == "POSITIONAL_OR_KEYWORD" for t in theirs)
    extra = [p for p in ours[n_pos:] if p.name not in {t["name"] for t in theirs}]
    for p in extra:
        assert p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD), \
            f"{spec.name}: npnorm's extra parameter {p.name} must be keyword-only"


@pytest.mark.parametrize("spec", [s for s in specs() if s.pytorch and "(" not in s.pytorch
                                  and "device" in inspect.signature(s.twin()).parameters],
                         ids=lambda s: s.name)
def test_device_means_cpu(spec):
    case = spec.cases[0]
    for device in (None, "cpu"):
        spec.build(case, device=device)
    with pytest.raises(ValueError, match=r"device must be None or 'cpu'"):
        spec.build(case, device="cuda")


@pytest.mark.parametrize("spec", [s for s in specs() if s.differences or s.pytorch], ids=lambda s: s.name)
def test_rejected_arguments_are_documented(spec):
    """What npnorm rejects on purpose (eps <= 0, momentum outside [0, 1]) is in the docstring."""
    params = inspect.signature(spec.twin()).parameters
    doc = inspect.getdoc(spec.cls) or ""
    if "eps" in params and spec.family == "statistics":
        assert re.search(r"eps\s*<=\s*0", doc), f"{spec.name}: docstring does not say eps <= 0 is rejected"
    if "momentum" in params:
        assert re.search(r"momentum.*\[0, 1\]", doc, re.S), f"{spec.name}: docstring does not say momentum range"


def test_batchnorm_bias_keyword():
    bn = npnorm.BatchNorm1d(10, bias=False)
    assert set(bn.params) == {"weight"}
    gn = npnorm.GroupNorm(2, 4, bias=False)
    assert set(gn.params) == {"weight"}
    inn = npnorm.InstanceNorm2d(3, affine=True, bias=False)
    assert set(inn.params) == {"weight"}
    assert npnorm.InstanceNorm2d(3, bias=False).params == {}


def test_positional_arguments_land_where_pytorch_puts_them():
    conv = npnorm.nn.Conv2d(2, 3, 3, 1, 0, 1, 1, False)          # ..., dilation, groups, bias
    assert "bias" not in conv.params
    assert npnorm.nn.Linear(3, 2, True, None, np.float32).params["weight"].dtype == np.float32
    bn = npnorm.BatchNorm2d(4, 1e-3, None, True, False, "cpu", np.float32)
    assert bn.eps == 1e-3 and bn.momentum is None and bn.running_mean is None and bn.dtype == np.float32
    assert npnorm.nn.Conv2d(2, 3, 3, padding="same")(np.ones((1, 2, 5, 5))).shape == (1, 3, 5, 5)
    assert npnorm.nn.Conv2d(2, 3, 3, padding="valid")(np.ones((1, 2, 5, 5))).shape == (1, 3, 3, 3)


@pytest.mark.parametrize("make, pattern", [
    (lambda: npnorm.nn.Conv2d(2, 3, 3, dilation=2), r"Conv2d: only dilation=1"),
    (lambda: npnorm.nn.Conv2d(2, 4, 3, groups=2), r"Conv2d: only groups=1"),
    (lambda: npnorm.nn.Conv2d(2, 3, 3, padding_mode="reflect"), r"only padding_mode='zeros'"),
    (lambda: npnorm.nn.Conv2d(2, 3, 2, padding="same"), r"padding='same'"),
    (lambda: npnorm.nn.MaxPool2d(2, ceil_mode=True), r"MaxPool2d: only ceil_mode=False"),
    (lambda: npnorm.nn.MaxPool2d(2, return_indices=True), r"only return_indices=False"),
    (lambda: npnorm.nn.AvgPool2d(2, count_include_pad=False), r"AvgPool2d: only count_include_pad=True"),
    (lambda: npnorm.nn.AvgPool2d(2, divisor_override=3), r"only divisor_override=None"),
    (lambda: npnorm.LayerNorm(4, device="cuda:0"), r"LayerNorm: device must be None or 'cpu'"),
    (lambda: npnorm.GroupNorm(2, 4, dtype=np.int32), r"GroupNorm: dtype must be a floating dtype"),
])
def test_unimplemented_pytorch_arguments_are_clear_errors(make, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        make()


from npnorm.nn import conv as _conv, layers as _layers  # noqa: E402


@pytest.mark.parametrize("fn, args, pattern", [
    (_conv.conv2d_forward, (np.ones((1, 2, 4, 4)), np.ones((3, 3, 3, 3)), None), r"conv2d_forward: expected x"),
    (_conv.conv2d_forward, (np.ones((1, 2, 4, 4)), np.ones((3, 2, 3, 3)), np.ones(2)), r"bias must have shape \(3,\)"),
    (_conv.conv2d_forward, (np.ones((1, 2, 2, 2)), np.ones((3, 2, 3, 3)), None), r"smaller than the kernel"),
    (_conv.max_pool2d_forward, (np.ones((2, 4, 4)), 2, 2, 0), r"max_pool2d_forward: expected x"),
    (_conv.avg_pool2d_forward, (np.ones((1, 1, 4, 4)), 5, 1, 0), r"smaller than the window"),
    (_layers.linear_forward, (np.ones((2, 3)), np.ones((4, 2)), None), r"linear_forward: expected x"),
    (_layers.linear_forward, (np.ones((2, 3), dtype=int), np.ones((4, 3)), None), r"x must be a floating"),
])
def test_nn_functional_forms_validate_their_arguments(fn, args, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        fn(*args)


@pytest.mark.parametrize("fwd, bwd, args", [
    (_conv.conv2d_forward, _conv.conv2d_backward, (np.ones((1, 2, 4, 4)), np.ones((3, 2, 3, 3)), None)),
    (_conv.max_pool2d_forward, _conv.max_pool2d_backward, (np.ones((1, 2, 4, 4)), (2, 2), (2, 2), (0, 0))),
    (_conv.avg_pool2d_forward, _conv.avg_pool2d_backward, (np.ones((1, 2, 4, 4)), (2, 2), (2, 2), (0, 0))),
    (_layers.linear_forward, _layers.linear_backward, (np.ones((2, 3)), np.ones((4, 3)), np.ones(4))),
], ids=["conv2d", "max_pool2d", "avg_pool2d", "linear"])
def test_nn_functional_backward_validates_dout(fwd, bwd, args):
    out, cache = fwd(*args)
    with pytest.raises(ValueError, match=rf"{bwd.__name__}: dout must have the shape of the forward output"):
        bwd(np.ones(out.shape[:-1] + (out.shape[-1] + 1,)), cache)
    bwd(np.ones(out.shape), cache)


def test_module_wrapper_checks_every_output_of_a_multi_output_layer():
    class Split(npnorm.Module):
        def forward(self, x):
            self._cache = x.shape
            return x[:, :2].copy(), x[:, 2:].copy()

        def backward(self, dout):
            return np.concatenate(dout, axis=1)

    layer = Split()
    a, b = layer(np.ones((3, 5)))
    assert layer.backward((np.ones((3, 2)), np.ones((3, 3)))).shape == (3, 5)
    with pytest.raises(ValueError, match=r"Split\.backward: dout\[1\] must have the shape of the forward output"):
        layer.backward((np.ones((3, 2)), np.ones((3, 2))))
    with pytest.raises(ValueError, match=r"expected 2 upstream gradients"):
        layer.backward((np.ones((3, 2)),))
