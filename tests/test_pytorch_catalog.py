"""LocalResponseNorm and CrossMapLRN2d against numbers recorded from PyTorch 2.13
(tools/pytorch_ref_catalog.py), in float64, and the two defects of PyTorch's CrossMapLRN2d that
npnorm deliberately does not reproduce. PyTorch is not needed to run this test."""

from pathlib import Path

import numpy as np
import pytest

import npnorm
from npnorm.statistics.lrn import CrossMapLRN2d, LocalResponseNorm

DATA = Path(__file__).parent / "data" / "pytorch_catalog.npz"


@pytest.fixture(scope="module")
def ref():
    with np.load(DATA) as data:
        return {k: data[k] for k in data.files}


def _cases(ref, prefix):
    return sorted({k.split("/")[0] for k in ref if k.startswith(prefix)})


def _run(cls, ref, name):
    size, alpha, beta, k = ref[f"{name}/args"]
    layer = cls(int(size), alpha=alpha, beta=beta, k=k)
    out = layer(ref[f"{name}/x"])
    return out, layer.backward(ref[f"{name}/dy"])


def test_local_response_norm_matches_pytorch(ref):
    names = _cases(ref, "LocalResponseNorm-")
    assert len(names) == 7
    for name in names:
        out, dx = _run(LocalResponseNorm, ref, name)
        np.testing.assert_allclose(out, ref[f"{name}/out"], rtol=1e-12, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(dx, ref[f"{name}/dx"], rtol=1e-10, atol=1e-13, err_msg=name)


def test_alexnet_setting_is_alpha_times_size():
    """AlexNet's k=2, n=5, alpha=1e-4 (no division by n) is LocalResponseNorm(5, alpha=5e-4, k=2)."""
    x = np.random.default_rng(0).normal(size=(2, 8, 3, 3))
    s = 2.0 + 1e-4 * sum(np.pad(x**2, ((0, 0), (2, 2), (0, 0), (0, 0)))[:, i:i + 8] for i in range(5))
    np.testing.assert_allclose(npnorm.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(x), x * s**-0.75,
                               rtol=1e-13)


def test_cross_map_lrn2d_matches_pytorch_forward_where_pytorch_has_no_defect(ref):
    for name in ("CrossMapLRN2d-small-C", "CrossMapLRN2d-size5-small-C"):
        out, dx = _run(CrossMapLRN2d, ref, name)
        np.testing.assert_allclose(out, ref[f"{name}/out"], rtol=1e-12, err_msg=name)
        # our backward is the gradient of the (shared) forward: PyTorch's numeric gradient agrees
        np.testing.assert_allclose(dx, ref[f"{name}/dx_numeric"], rtol=1e-6, atol=1e-8, err_msg=name)


def test_pytorch_cross_map_lrn2d_defects_are_what_the_docstring_says(ref):
    # (2) PyTorch's backward is not the gradient of its own forward, in every recorded case
    for name in _cases(ref, "CrossMapLRN2d-"):
        assert np.max(np.abs(ref[f"{name}/dx"] - ref[f"{name}/dx_numeric"])) > 1e-3, name
    # (1) its forward = symmetric window + channel 0 for every channel c >= h + 1
    name = "CrossMapLRN2d-leak"
    size, alpha, beta, k = ref[f"{name}/args"]
    x = ref[f"{name}/x"]
    h = (int(size) - 1) // 2
    sq = x**2
    c = x.shape[1]
    window = np.stack([sq[:, max(0, i - h):i + h + 1].sum(axis=1) for i in range(c)], axis=1)
    window[:, h + 1:] += sq[:, :1]
    np.testing.assert_allclose(ref[f"{name}/out"], x * (k + alpha / size * window) ** -beta, rtol=1e-12)
    ours, _ = _run(CrossMapLRN2d, ref, name)
    assert np.max(np.abs(ours - ref[f"{name}/out"])) > 1e-3
    np.testing.assert_allclose(ours[:, : h + 1], ref[f"{name}/out"][:, : h + 1], rtol=1e-12)


def test_odd_cross_map_lrn2d_is_local_response_norm():
    x = np.random.default_rng(3).normal(size=(2, 7, 2, 3))
    np.testing.assert_allclose(CrossMapLRN2d(5, 0.3)(x), LocalResponseNorm(5, 0.3)(x), rtol=1e-14)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        LocalResponseNorm(3)(np.ones((2, 3)))
    with pytest.raises(ValueError, match="CrossMapLRN2d.*4-D"):
        CrossMapLRN2d(3)(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="size must be >= 1"):
        LocalResponseNorm(0)
