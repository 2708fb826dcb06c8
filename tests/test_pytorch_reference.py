"""npnorm against numbers recorded from PyTorch 2.13 (tools/pytorch_reference.py), in float64.
Normalizers:
outputs, input and parameter gradients, and running statistics after every training step, then
evaluation steps. Weight side: weight_norm and spectral_norm parametrizations (given g, v and u, v;
training and evaluation mode). Layers: Linear and Conv2d with stride and padding. PyTorch is not
needed to run this test - only to regenerate the data."""

from pathlib import Path

import numpy as np
import pytest

import npnorm

DATA = Path(__file__).parent / "data" / "pytorch_reference.npz"
#: BatchNorm3d, InstanceNorm3d and bias=False (tools/pytorch_ref_reliability.py, issue 11)
DATA_ISSUE11 = Path(__file__).parent / "data" / "pytorch_reliability.npz"

# the same constructors as in tools/pytorch_reference.py, with npnorm's classes
LAYERS = {
    "BatchNorm1d-NC": lambda: npnorm.BatchNorm1d(4),
    "BatchNorm1d-NCL": lambda: npnorm.BatchNorm1d(3),
    "BatchNorm1d-momentum-None": lambda: npnorm.BatchNorm1d(3, momentum=None),
    "BatchNorm1d-no-affine": lambda: npnorm.BatchNorm1d(3, affine=False),
    "BatchNorm2d": lambda: npnorm.BatchNorm2d(3),
    "BatchNorm2d-no-running-stats": lambda: npnorm.BatchNorm2d(3, track_running_stats=False),
    "BatchNorm2d-momentum-0.3": lambda: npnorm.BatchNorm2d(2, momentum=0.3, eps=1e-3),
    "LayerNorm-tokens": lambda: npnorm.LayerNorm(8),
    "LayerNorm-CHW": lambda: npnorm.LayerNorm((3, 4, 4)),
    "LayerNorm-no-bias": lambda: npnorm.LayerNorm(6, bias=False),
    "RMSNorm": lambda: npnorm.RMSNorm(8),
    "RMSNorm-eps": lambda: npnorm.RMSNorm((2, 8), eps=1e-3),
    "GroupNorm": lambda: npnorm.GroupNorm(2, 6),
    "GroupNorm-1d": lambda: npnorm.GroupNorm(3, 6, eps=1e-4),
    "InstanceNorm1d": lambda: npnorm.InstanceNorm1d(3),
    "InstanceNorm2d-affine": lambda: npnorm.InstanceNorm2d(3, affine=True),
    "InstanceNorm2d-running-stats": lambda: npnorm.InstanceNorm2d(3, affine=True, track_running_stats=True),
}


# the same constructors as GOLDEN in tools/pytorch_ref_reliability.py
LAYERS_ISSUE11 = {
    "BatchNorm3d": lambda: npnorm.BatchNorm3d(3),
    "BatchNorm3d-momentum-None-no-bias": lambda: npnorm.BatchNorm3d(2, momentum=None, bias=False),
    "BatchNorm3d-no-running-stats": lambda: npnorm.BatchNorm3d(2, track_running_stats=False),
    "InstanceNorm3d": lambda: npnorm.InstanceNorm3d(3),
    "InstanceNorm3d-affine-running-stats": lambda: npnorm.InstanceNorm3d(2, affine=True, track_running_stats=True),
    "BatchNorm1d-no-bias": lambda: npnorm.BatchNorm1d(3, bias=False),
    "GroupNorm-no-bias": lambda: npnorm.GroupNorm(2, 4, bias=False),
    "InstanceNorm2d-affine-no-bias": lambda: npnorm.InstanceNorm2d(3, affine=True, bias=False),
}


@pytest.fixture(scope="module")
def reference():
    data = {}
    for path in (DATA, DATA_ISSUE11):
        with np.load(path) as f:
            data.update({k: f[k] for k in f.files if not k.startswith("probe/")})
    return data


WEIGHT_NORM = {"weight_norm-linear-dim0": 0, "weight_norm-conv-dim0": 0, "weight_norm-linear-whole": None}
SPECTRAL_NORM = ("spectral_norm-linear", "spectral_norm-conv")
NN_LAYERS = {
    "Linear": lambda: npnorm.nn.Linear(5, 3),
    "Conv2d-k3-s1-p1": lambda: npnorm.nn.Conv2d(2, 3, 3, padding=1),
    "Conv2d-k3-s2-p0": lambda: npnorm.nn.Conv2d(2, 4, 3, stride=2),
    "Conv2d-k23-s21-p10": lambda: npnorm.nn.Conv2d(3, 2, (2, 3), stride=(2, 1), padding=(1, 0)),
}


def test_reference_covers_every_case(reference):
    recorded = {k.split("/")[0] for k in reference if "/" in k}
    assert recorded == set(LAYERS) | set(LAYERS_ISSUE11) | set(WEIGHT_NORM) | set(SPECTRAL_NORM) | set(NN_LAYERS)


def _close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=1e-11, atol=1e-12, err_msg=what)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", sorted(LAYERS) + sorted(LAYERS_ISSUE11))
def test_matches_pytorch(name, backend, reference):
    layer = {**LAYERS, **LAYERS_ISSUE11}[name]()
    layer.backend = backend
    for key in list(layer.params):
        layer.params[key] = reference[f"{name}/param/{key}"].copy()
    steps = sorted({k.split("/")[1] for k in reference if k.startswith(name + "/step")}, key=lambda s: int(s[4:]))
    assert steps, name
    for step in steps:
        (mode,) = {k.split("/")[2] for k in reference if k.startswith(f"{name}/{step}/")}
        prefix = f"{name}/{step}/{mode}"
        layer.train(mode == "train")
        y = layer(reference[f"{prefix}/x"])
        dx = layer.backward(reference[f"{prefix}/dy"])
        _close(y, reference[f"{prefix}/y"], f"{prefix}: output")
        _close(dx, reference[f"{prefix}/dx"], f"{prefix}: input gradient")
        for key in layer.params:
            _close(layer.grads[key], reference[f"{prefix}/d{key}"], f"{prefix}: gradient of {key}")
        if f"{prefix}/running_mean" in reference:
            _close(layer.running_mean, reference[f"{prefix}/running_mean"], f"{prefix}: running_mean")
            _close(layer.running_var, reference[f"{prefix}/running_var"], f"{prefix}: running_var")
        else:
            assert getattr(layer, "running_mean", None) is None


@pytest.mark.parametrize("name", sorted(WEIGHT_NORM))
def test_weight_norm_matches_pytorch(name, reference):
    g, v = reference[f"{name}/g"], reference[f"{name}/v"]
    wn = npnorm.WeightNorm(v.copy(), dim=WEIGHT_NORM[name])
    assert wn.params["g"].shape == g.shape  # PyTorch's original0 shape
    wn.params["g"], wn.params["v"] = g.copy(), v.copy()
    _close(wn(), reference[f"{name}/w"], f"{name}: weight")
    wn.backward(reference[f"{name}/dw"])
    _close(wn.grads["g"], reference[f"{name}/dg"], f"{name}: gradient of g")
    _close(wn.grads["v"], reference[f"{name}/dv"], f"{name}: gradient of v")


@pytest.mark.parametrize("name", SPECTRAL_NORM)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_spectral_norm_matches_pytorch_given_u_and_v(name, mode, reference):
    """Same u and v as PyTorch: one power iteration (u first) in training mode, none in eval mode."""
    prefix = f"{name}/{mode}"
    sn = npnorm.SpectralNorm(reference[f"{prefix}/W"].copy())
    sn.u, sn.v = reference[f"{prefix}/u0"].copy(), reference[f"{prefix}/v0"].copy()
    sn.train(mode == "train")
    _close(sn(), reference[f"{prefix}/w_sn"], f"{prefix}: normalized weight")
    _close(sn.u, reference[f"{prefix}/u"], f"{prefix}: u after the forward pass")
    _close(sn.v, reference[f"{prefix}/v"], f"{prefix}: v after the forward pass")
    sn.backward(reference[f"{prefix}/dw_sn"])
    _close(sn.grads["weight"], reference[f"{prefix}/dW"], f"{prefix}: gradient of the raw weight")


@pytest.mark.parametrize("name", sorted(NN_LAYERS))
def test_linear_and_conv_match_pytorch(name, reference):
    layer = NN_LAYERS[name]()
    for key in layer.params:
        layer.params[key] = reference[f"{name}/param/{key}"].copy()
    _close(layer(reference[f"{name}/x"]), reference[f"{name}/y"], f"{name}: output")
    _close(layer.backward(reference[f"{name}/dy"]), reference[f"{name}/dx"], f"{name}: input gradient")
    for key in layer.params:
        _close(layer.grads[key], reference[f"{name}/d{key}"], f"{name}: gradient of {key}")
