"""Every registered layer, every case, every mode: a float64 gradient check with a random upstream
gradient and random non-trivial parameters, for every input and every parameter.

Adding a layer to the registry adds it here; an exported layer missing from the registry fails.
"""

import inspect

import numpy as np
import pytest

import npnorm
from npnorm.base import Module
from npnorm.gradcheck import DEFAULT_TOLERANCE, check_layer
from npnorm.registry import REGISTRY, specs


def _cases():
    for spec in specs():
        for case in spec.cases:
            for mode in case.modes:
                yield pytest.param(spec, case, mode, id=f"{spec.name}-{case.name}-{mode}")


@pytest.mark.parametrize("spec, case, mode", list(_cases()))
def test_gradients(spec, case, mode):
    layer, inputs = spec.build(case, seed=7, mode=mode)
    names = list(spec.input_names) if len(inputs) > 1 or spec.constant_inputs else None
    report = check_layer(layer, *inputs, input_names=names, constant_inputs=spec.constant_inputs, seed=11,
                         raise_on_failure=False, **spec.gradcheck)
    checked = {c.name for c in report.comparisons}
    # every differentiable input and every parameter was compared (constant inputs - labels, token
    # ids - are data)
    expected = {n for n, x in zip(names or ["x"], inputs)
                if n not in spec.constant_inputs and not np.issubdtype(x.dtype, np.integer)}
    assert checked == expected | set(layer.params), report
    assert report.passed, str(report)
    assert report.max_rel_error < DEFAULT_TOLERANCE


@pytest.mark.parametrize("spec, case, mode", list(_cases()))
def test_forward_keeps_dtype_and_shape(spec, case, mode):
    """float32 and float64 inputs both work; the output has the input's dtype."""
    for dtype in (np.float32, np.float64):
        layer, inputs = spec.build(case, seed=3, mode=mode, dtype=dtype)
        out = layer(*inputs)
        assert out.dtype == dtype
        assert np.all(np.isfinite(out))
        dout = np.ones_like(out)
        grads = layer.backward(dout)
        grads = grads if isinstance(grads, tuple) else (() if grads is None else (grads,))
        diff = [x for name, x in zip(spec.input_names, inputs)
                if name not in spec.constant_inputs and not np.issubdtype(x.dtype, np.integer)]
        assert len(grads) == len(diff) or not inputs
        for g, x in zip(grads, diff):
            assert g.shape == x.shape and g.dtype == dtype


def _exported_layers():
    modules = [npnorm] + [getattr(npnorm, sub) for sub in ("nn",) if hasattr(npnorm, sub)]
    for mod in modules:
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isclass(obj) and issubclass(obj, Module) and obj is not Module and not name.startswith("_"):
                yield obj


def test_every_exported_layer_is_registered():
    registered = {s.cls for s in REGISTRY.values()}
    missing = sorted({cls.__name__ for cls in _exported_layers()} - {c.__name__ for c in registered})
    assert not missing, f"exported but not in the registry (so never gradient-checked): {missing}"


def test_every_spec_has_cases_and_documentation():
    for spec in specs():
        assert spec.cases, spec.name
        assert spec.reference or spec.family == "nn", f"{spec.name}: no paper reference"
        if spec.family in ("statistics", "adaptive"):
            assert spec.reduces_over, spec.name
