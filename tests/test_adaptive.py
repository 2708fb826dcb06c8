"""Properties of the adaptive layers beyond the registry's gradient check: identities between them,
the zero init, the cache never aliasing an input, empty batches, clear errors, and the two-stage
(staged vs fused) AdaGN backward."""

import copy

import numpy as np
import pytest

import npnorm
from npnorm.adaptive._modulation import modulate_backward, modulate_forward
from npnorm.adaptive.adagroupnorm import ada_group_norm_backward, ada_group_norm_forward
from npnorm.registry import specs

ADAPTIVE = [s for s in specs("adaptive") if s.name != "AdaIN"] + [s for s in specs("nn") if s.name == "Embedding"]


@pytest.mark.parametrize("spec", ADAPTIVE, ids=lambda s: s.name)
def test_editing_inputs_after_forward_does_not_change_gradients(spec):
    layer, inputs = spec.build(spec.cases[0], seed=1)
    dout = None
    results = []
    for edit in (False, True):
        work = copy.deepcopy(layer)
        ins = [np.array(a) for a in inputs]
        out = work(*ins)
        dout = np.random.default_rng(0).standard_normal(out.shape) if dout is None else dout
        if edit:
            for a, name in zip(ins, spec.input_names):
                if name not in spec.constant_inputs and np.issubdtype(a.dtype, np.floating):
                    a += 1.0
        g = work.backward(dout)
        results.append((g if isinstance(g, tuple) else (g,), dict(work.grads)))
    (g0, p0), (g1, p1) = results
    for a, b in zip(g0, g1):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    for k in p0:
        np.testing.assert_array_equal(p0[k], p1[k])


@pytest.mark.parametrize("spec", [s for s in ADAPTIVE if s.name != "ConditionalBatchNorm2d"], ids=lambda s: s.name)
def test_empty_batch(spec):
    """N = 0: an empty output, zero parameter gradients (ConditionalBatchNorm2d behaves as BatchNorm2d)."""
    layer, inputs = spec.build(spec.cases[0], seed=2)
    out = layer(*[a[:0] for a in inputs])
    assert out.shape[0] == 0
    layer.backward(np.zeros(out.shape))
    for k, g in layer.grads.items():
        assert g.shape == layer.params[k].shape and not g.any(), k


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_adagn_identities(backend):
    rng = np.random.default_rng(0)
    x, e = rng.normal(2, 3, (3, 6, 4, 4)), rng.standard_normal((3, 5))
    ss = npnorm.ScaleShiftGroupNorm(5, 6, num_groups=3, rng=1, backend=backend)
    ada = npnorm.AdaGroupNorm(5, 6, 3, act_fn="silu", affine=True, rng=1, backend=backend)
    for k in ss.params:
        ss.params[k] = ada.params[k] = rng.standard_normal(ss.params[k].shape)
    np.testing.assert_allclose(ss(x, e), ada(x, e), rtol=1e-12)
    # StyleAdaIN is AdaGN with one channel per group and no activation
    st = npnorm.StyleAdaIN(5, 6, eps=1e-5, rng=2, backend=backend)
    gn = npnorm.AdaGroupNorm(5, 6, 6, rng=2, backend=backend)
    np.testing.assert_allclose(st(x, e), gn(x, e), rtol=1e-12)
    # a zero projection leaves plain GroupNorm (the point of 1 + scale)
    for k in gn.params:
        gn.params[k][...] = 0.0
    ref = npnorm.GroupNorm(6, 6, affine=False)(x)
    np.testing.assert_allclose(gn(x, e), ref, rtol=1e-10, atol=1e-12)


def test_adagn_backward_staged_equals_fused():
    """The backward written twice: staged through the graph (modulation, then GroupNorm as a layer,
    then the projection) and the fused reference; they agree to round-off."""
    rng = np.random.default_rng(3)
    x, e = rng.normal(1, 2, (2, 4, 3, 3)), rng.standard_normal((2, 3))
    w, b = rng.standard_normal((8, 3)), rng.standard_normal(8)
    dy = rng.standard_normal(x.shape)
    out, cache = ada_group_norm_forward(x, e, w, b, 2, 1e-5, "silu")
    dx, de, dw, db, _, _ = ada_group_norm_backward(dy, cache)
    # staged
    gn = npnorm.GroupNorm(2, 4, affine=False, backend="numpy")
    xh = gn(x)
    a = e / (1 + np.exp(-e))
    p = a @ w.T + b
    y, mc = modulate_forward(xh, p[:, :4], p[:, 4:])
    np.testing.assert_allclose(y, out, rtol=1e-12)
    dxh, ds, dt = modulate_backward(dy, mc)
    dx_staged = gn.backward(dxh)
    dp = np.concatenate([ds, dt], axis=1)
    sig = 1 / (1 + np.exp(-e))
    np.testing.assert_allclose(dx, dx_staged, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dw, dp.T @ a, rtol=1e-12)
    np.testing.assert_allclose(db, dp.sum(0), rtol=1e-12)
    np.testing.assert_allclose(de, (dp @ w) * sig * (1 + e * (1 - sig)), rtol=1e-12)


def test_adaln_zero_block_is_identity_at_init_and_gate_learns_first():
    blk = npnorm.AdaLNZeroBlock(4, 3, rng=0)
    rng = np.random.default_rng(0)
    x, c = rng.standard_normal((5, 2, 4)), rng.standard_normal((5, 3))
    np.testing.assert_array_equal(blk(x, c), x)
    dx, dc = blk.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx, np.ones_like(x))
    assert not dc.any() and not blk.grads["mlp.fc2.weight"].any()
    assert blk.grads["adaLN_modulation.1.weight"][8:].any() and not blk.grads["adaLN_modulation.1.weight"][:8].any()
    assert npnorm.AdaLNZeroBlock(4, 3, zero_init=False, rng=0)(x, c).shape == x.shape


def test_timestep_embedding_layout():
    e = npnorm.SinusoidalTimestepEmbedding(8)(np.array([0.0, 3.0]))
    np.testing.assert_array_equal(e[0], [1, 1, 1, 1, 0, 0, 0, 0])          # cos first
    np.testing.assert_allclose(e[1, 0], np.cos(3.0)) and np.testing.assert_allclose(e[1, 4], np.sin(3.0))
    odd = npnorm.SinusoidalTimestepEmbedding(5)(np.array([2]))
    assert odd.shape == (1, 5) and odd[0, -1] == 0 and odd.dtype == np.float64


@pytest.mark.parametrize("call, match", [
    (lambda: npnorm.AdaGroupNorm(3, 4, 3), "num_groups=3 must divide out_dim=4"),
    (lambda: npnorm.AdaGroupNorm(3, 4, 2, act_fn="relu"), "act_fn must be one of"),
    (lambda: npnorm.AdaGroupNorm(3, 4, 2)(np.zeros((2, 4, 3)), np.zeros((2, 5))), r"emb of shape \(N=2, embedding_dim=3\)"),
    (lambda: npnorm.AdaGroupNorm(3, 4, 2)(np.zeros((2, 5, 3)), np.zeros((2, 3))), "out_dim=4"),
    (lambda: npnorm.FiLM(3, 4)(np.zeros((2, 4)), np.zeros((3, 3))), r"cond of shape \(N=2, cond_dim=3\)"),
    (lambda: npnorm.ConditionalBatchNorm2d(3, 2)(np.zeros((2, 3, 2, 2)), np.array([0, 2])), r"y must be in \[0, num_classes=2\)"),
    (lambda: npnorm.ConditionalBatchNorm2d(3, 2)(np.zeros((2, 3, 2, 2)), np.array([0.0, 1.0])), "integer array of labels"),
    (lambda: npnorm.ConditionalInstanceNorm2d(3, 2)(np.zeros((2, 3, 2, 2)), np.array([0])), r"styles? of shape \(N=2,\)"),
    (lambda: npnorm.AdaLN(3, 4)(np.zeros((2, 5)), np.zeros((2, 3))), r"dim=4"),
    (lambda: npnorm.nn.Embedding(3, 2)(np.array([3])), r"Embedding: ids must be in \[0, num_embeddings=3\), got values in \[3, 3\]"),
    (lambda: npnorm.SinusoidalTimestepEmbedding(4)(np.zeros((2, 1))), r"t of shape \(N,\)"),
    (lambda: npnorm.TimestepEmbedding(4, 3)(np.zeros((2, 3))), "in_channels=4"),
])
def test_clear_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_backward_rejects_a_wrong_upstream_shape():
    layer = npnorm.AdaGroupNorm(3, 4, 2)
    layer(np.zeros((2, 4, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"AdaGroupNorm.backward: dout must have the shape of the forward output"):
        layer.backward(np.zeros((2, 4, 4)))
