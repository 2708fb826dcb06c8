"""The adaptive layers against numbers recorded from PyTorch 2.13 and diffusers 0.42
(tools/pytorch_ref_adaptive.py), in float64: diffusers' AdaGroupNorm, get_timestep_embedding,
TimestepEmbedding and AdaLayerNormZero (DiT's adaLN chunk order), torch.nn.Embedding, and the
formulas of FiLM, StyleGAN's AdaIN, the adaLN-Zero block and conditional BatchNorm (train and eval
steps, running statistics). Neither library is needed to run this test."""

from pathlib import Path

import numpy as np
import pytest

import npnorm
from npnorm.adaptive.embeddings import timestep_embedding_forward

DATA = Path(__file__).parent / "data" / "pytorch_adaptive.npz"
TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def ref():
    with np.load(DATA) as data:
        return {k: data[k] for k in data.files}


def _params(ref, name):
    prefix = f"{name}/param/"
    return {k[len(prefix):]: v for k, v in ref.items() if k.startswith(prefix)}


def _check(ref, name, layer, input_keys, param_map=None, tol=TOL):
    param_map = param_map or {}
    for k, v in _params(ref, name).items():
        layer.params[param_map.get(k, k)][...] = v
    inputs = [ref[f"{name}/input/{k}"] for k in input_keys]
    out = layer(*inputs)
    np.testing.assert_allclose(out, ref[f"{name}/out"], **tol)
    grads = layer.backward(ref[f"{name}/dy"])
    grads = grads if isinstance(grads, tuple) else (grads,)
    for k, g in zip(input_keys, grads):
        np.testing.assert_allclose(g, ref[f"{name}/grad/{k}"], **tol, err_msg=f"{name}: d{k}")
    for k in _params(ref, name):
        np.testing.assert_allclose(layer.grads[param_map.get(k, k)], ref[f"{name}/pgrad/{k}"], **tol,
                                   err_msg=f"{name}: d{k}")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name, act", [("AdaGroupNorm", None), ("AdaGroupNorm-silu", "silu")])
def test_ada_group_norm_matches_diffusers(ref, name, act, backend):
    _check(ref, name, npnorm.AdaGroupNorm(3, 6, 2, act_fn=act, backend=backend), ["x", "emb"])


@pytest.mark.parametrize("name, kwargs, dim", [
    ("timestep-adm", {}, 8),
    ("timestep-diffusers-default", {"flip_sin_to_cos": False, "downscale_freq_shift": 1.0}, 8),
    ("timestep-odd", {}, 9),
])
def test_timestep_embedding_matches_diffusers(ref, name, kwargs, dim):
    """diffusers computes the frequencies and t * f in float32 even for float64 timesteps (an absolute
    error of about 1e-7 * t in the argument, 5e-6 at t = 999); npnorm in float64. Hence the tolerance."""
    layer = npnorm.SinusoidalTimestepEmbedding(dim, **kwargs)
    _check(ref, name, layer, ["t"], tol=dict(rtol=0, atol=2e-5))
    out, _ = timestep_embedding_forward(ref[f"{name}/input/t"], dim, **kwargs)
    np.testing.assert_allclose(out, ref[f"{name}/out"], rtol=0, atol=2e-5)
    assert np.abs(out - ref[f"{name}/out"]).max() > 1e-9     # the float32 difference is really there


def test_timestep_mlp_matches_diffusers(ref):
    _check(ref, "TimestepEmbedding", npnorm.TimestepEmbedding(8, 6), ["x"])


def test_adaln_matches_dit_chunk_order(ref):
    """diffusers' AdaLayerNormZero: its first output is adaLN with the first 2D rows (shift, scale)."""
    name, d = "AdaLayerNormZero", 4
    w, b = ref[f"{name}/param/linear.weight"], ref[f"{name}/param/linear.bias"]
    layer = npnorm.AdaLN(4, d)
    layer.params["adaLN_modulation.1.weight"][...] = w[:2 * d]
    layer.params["adaLN_modulation.1.bias"][...] = b[:2 * d]
    x, emb = ref[f"{name}/input/x"], ref[f"{name}/input/emb"]
    np.testing.assert_allclose(layer(x, emb), ref[f"{name}/out"], **TOL)
    dx, demb = layer.backward(ref[f"{name}/dy"])
    np.testing.assert_allclose(dx, ref[f"{name}/grad/x"], **TOL)
    np.testing.assert_allclose(demb, ref[f"{name}/grad/emb"], **TOL)
    np.testing.assert_allclose(layer.grads["adaLN_modulation.1.weight"], ref[f"{name}/pgrad/linear.weight"][:2 * d],
                               **TOL)
    # the gate is the third chunk
    silu = emb / (1 + np.exp(-emb))
    np.testing.assert_allclose((silu @ w.T + b)[:, 2 * d:3 * d], ref[f"{name}/gate"], **TOL)


def test_adaln_zero_block_matches_formula(ref):
    _check(ref, "AdaLNZeroBlock", npnorm.AdaLNZeroBlock(4, 3, mlp_ratio=1.5), ["x", "cond"])


def test_film_matches_formula(ref):
    _check(ref, "FiLM", npnorm.FiLM(3, 4), ["x", "cond"])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_style_adain_matches_formula(ref, backend):
    _check(ref, "StyleAdaIN", npnorm.StyleAdaIN(4, 3, backend=backend), ["x", "w"])


def test_embedding_matches_torch(ref):
    layer = npnorm.nn.Embedding(4, 3)
    layer.params["weight"][...] = ref["Embedding/param/weight"]
    np.testing.assert_array_equal(layer(ref["Embedding/input/idx"]), ref["Embedding/out"])
    assert layer.backward(ref["Embedding/dy"]) is None
    np.testing.assert_allclose(layer.grads["weight"], ref["Embedding/pgrad/weight"], **TOL)


def test_conditional_batchnorm_matches_formula_over_train_and_eval(ref):
    layer = npnorm.ConditionalBatchNorm2d(3, 4, momentum=0.1)
    layer.params["weight"][...] = ref["CBN/param/weight"]
    layer.params["bias"][...] = ref["CBN/param/bias"]
    for k, mode in enumerate(["train", "train", "train", "eval"]):
        layer.train(mode == "train")
        name = f"CBN/step{k}"
        out = layer(ref[f"{name}/input/x"], ref[f"{name}/input/y"])
        np.testing.assert_allclose(out, ref[f"{name}/out"], **TOL)
        np.testing.assert_allclose(layer.backward(ref[f"{name}/dy"]), ref[f"{name}/grad/x"], **TOL)
        np.testing.assert_allclose(layer.grads["weight"], ref[f"{name}/pgrad/weight"], **TOL)
        np.testing.assert_allclose(layer.grads["bias"], ref[f"{name}/pgrad/bias"], **TOL)
        np.testing.assert_allclose(layer.running_mean, ref[f"{name}/running_mean"], **TOL)
        np.testing.assert_allclose(layer.running_var, ref[f"{name}/running_var"], **TOL)
