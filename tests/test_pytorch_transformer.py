"""npnorm's transformer pieces against numbers recorded from PyTorch 2.13
(tools/pytorch_ref_transformer.py), in float64: one block (pre-LN and post-LN with
nn.MultiheadAttention and a causal mask; pre-RMSNorm with per-head RMSNorm QK-norm), F.normalize
(with a row below eps), ScaleNorm, DyT and DeepNorm. PyTorch is only needed to regenerate the data."""

from pathlib import Path

import numpy as np
import pytest

import npnorm
from npnorm.models.transformer import Block

DATA = Path(__file__).parent / "data" / "pytorch_transformer.npz"
D, H, FF = 8, 2, 12


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(DATA))


def _load_params(layer, ref, name):
    keys = [k[len(f"{name}/param/"):] for k in ref if k.startswith(f"{name}/param/")]
    assert set(keys) == set(layer.params), (sorted(keys), sorted(layer.params))
    for k in keys:
        layer.params[k][...] = ref[f"{name}/param/{k}"]
    return keys


def _check(layer, ref, name, *extra_inputs, tol=1e-10):
    keys = _load_params(layer, ref, name)
    y = layer(ref[f"{name}/x"], *extra_inputs)
    np.testing.assert_allclose(y, ref[f"{name}/y"], rtol=tol, atol=tol)
    dx = layer.backward(ref[f"{name}/dy"])
    dx = dx[0] if isinstance(dx, tuple) else dx
    np.testing.assert_allclose(dx, ref[f"{name}/dx"], rtol=tol, atol=tol)
    for k in keys:
        np.testing.assert_allclose(layer.grads[k], ref[f"{name}/grad/{k}"], rtol=tol, atol=tol, err_msg=k)


@pytest.mark.parametrize("name, kwargs", [
    ("block-pre-ln", {"placement": "pre", "norm": "ln"}),
    ("block-post-ln", {"placement": "post", "norm": "ln"}),
    ("block-pre-rms-qkrms", {"placement": "pre", "norm": "rms", "qk_norm": "rms"}),
])
def test_block_matches_pytorch(ref, name, kwargs):
    _check(Block(D, H, FF, rng=0, **kwargs), ref, name)


@pytest.mark.parametrize("name, dim", [("normalize-dim-1", -1), ("normalize-dim1", 1)])
def test_l2norm_matches_f_normalize(ref, name, dim):
    _check(npnorm.L2Norm(dim=dim), ref, name)
    assert np.all(ref["normalize-dim-1/x"][0, 0] != 0)      # the floored row is not zero ...
    np.testing.assert_allclose(ref["normalize-dim-1/y"][0, 0], ref["normalize-dim-1/x"][0, 0] / 1e-12)  # ... x/eps


def test_scalenorm_dyt_deepnorm_match_pytorch_compositions(ref):
    _check(npnorm.ScaleNorm(6), ref, "scalenorm")
    _check(npnorm.DyT(6), ref, "dyt")
    _check(npnorm.DeepNorm(6, (2 * 6) ** 0.25), ref, "deepnorm", ref["deepnorm/branch"])
