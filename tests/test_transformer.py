"""The transformer chapter's layers and models beyond the registry's gradient checks: the model
gradient-checked end to end for every placement and normalizer, the paper constants, F.normalize's
eps, the staged and simplified backward passes, causality, and the properties every backward owes
(dout validated, no view of the input kept)."""

import math

import numpy as np
import pytest

import npnorm
from npnorm.gradcheck import check_layer
from npnorm.models.transformer import NGPT, NORMS, TransformerLM, lm_step
from npnorm.registry import randomize_layer
from npnorm.transformer.deepnorm import deepnorm_constants
from npnorm.transformer.l2norm import l2_normalize_backward, l2_normalize_backward_staged, l2_normalize_forward
from npnorm.transformer.qknorm import QKNorm, henry_g0

TINY = dict(d_model=8, n_layers=2, n_heads=2, max_len=6, d_ff=12)
CONFIGS = ([{"placement": p, "norm": n} for p in ("post", "pre", "sandwich") for n in NORMS]
           + [{"placement": "deepnorm", "norm": "ln"},
              {"placement": "pre", "norm": "ln", "tied": True},
              {"placement": "pre", "norm": "scale", "tied": True, "fixnorm": True},
              {"placement": "pre", "norm": "rms", "qk_norm": "l2"},
              {"placement": "pre", "norm": "ln", "qk_norm": "rms"},
              {"placement": "post", "norm": "ln", "qk_norm": "layer"}])


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_whole_model_gradient_check(cfg):
    """Every parameter array of the whole model (4 random elements of each), float64, random
    upstream gradient on the logits, random non-trivial parameters."""
    model = TransformerLM(5, rng=1, **TINY, **cfg)
    randomize_layer(model, np.random.default_rng(3))
    ids = np.random.default_rng(0).integers(0, 5, (2, 4))
    report = check_layer(model, ids, seed=1, samples=4, h=2e-4, raise_on_failure=False)
    assert {c.name for c in report.comparisons} == set(model.params)
    assert report.passed and report.max_rel_error < 1e-7, str(report)


def test_ngpt_gradient_check_and_unit_norms():
    model = NGPT(5, rng=1, **TINY)
    for w, axis in [(model.tok.params["weight"], -1), *model.blocks[0].matrices()]:
        np.testing.assert_allclose(np.linalg.norm(w, axis=axis), 1.0)
    randomize_layer(model, np.random.default_rng(3))
    ids = np.random.default_rng(0).integers(0, 5, (2, 4))
    report = check_layer(model, ids, seed=1, samples=4, h=2e-4, raise_on_failure=False)
    assert report.passed and report.max_rel_error < 1e-7, str(report)


def test_ngpt_effective_initial_values():
    model = NGPT(5, rng=1, **TINY)
    b = model.blocks[0]
    np.testing.assert_allclose(b.res_attn.alpha(), 0.05)                   # eigen learning rate
    np.testing.assert_allclose(b.attn.qk_norm.params["s_qk"] * b.attn.qk_norm.sqk_factor, 1.0)
    np.testing.assert_allclose(model.s_z.effective(), 1.0)
    np.testing.assert_allclose(b.res_attn.params["alpha"], 1 / math.sqrt(8))   # stored at 1/sqrt(d)


def test_paper_constants():
    assert float(npnorm.ScaleNorm(16).params["scale"]) == 4.0               # g0 = sqrt(d)
    assert float(npnorm.DyT(4).params["alpha"][0]) == 0.5                   # alpha0
    assert henry_g0(16) == math.log2(16 * 16 - 16)
    assert float(QKNorm(4, "l2", seq_len=16).params["g"]) == math.log2(240)
    a, b = deepnorm_constants(6)
    assert a == pytest.approx(12 ** 0.25) and b == pytest.approx(48 ** -0.25)
    fix = npnorm.FixNorm(7, 9, rng=0)
    assert np.abs(fix.params["weight"]).max() <= 0.01 and float(fix.params["scale"]) == 3.0


def test_deepnorm_puts_alpha_on_the_skip_not_the_branch():
    x, g = np.random.default_rng(0).normal(size=(2, 3, 4)), np.random.default_rng(1).normal(size=(2, 3, 4))
    dn = npnorm.DeepNorm(4, 2.0)
    ref = npnorm.LayerNorm(4, backend="numpy")(2.0 * x + g)
    np.testing.assert_allclose(dn(x, g), ref, atol=1e-12)


def test_l2_eps_floors_the_norm_like_f_normalize():
    x = np.array([[3.0, 4.0], [3e-14, 4e-14]])
    y, cache = l2_normalize_forward(x, -1, 1e-12)
    np.testing.assert_allclose(y[0], [0.6, 0.8])
    np.testing.assert_allclose(y[1], x[1] / 1e-12)           # x / eps, not x / sqrt(|x|^2 + eps)
    g = np.array([[1.0, -2.0], [0.5, 0.25]])
    dx = l2_normalize_backward(g, cache)
    np.testing.assert_allclose(dx[1], g[1] / 1e-12)          # the floored branch: g / eps
    np.testing.assert_allclose(dx[0] @ y[0], 0.0, atol=1e-15)   # the radial part is removed


def test_l2_staged_backward_equals_the_simplified_one():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 5, 6))
    x[0, 0] *= 1e-3
    _, cache = l2_normalize_forward(x, -1, 1e-2)            # row (0, 0) below eps: both branches
    g = rng.normal(size=x.shape)
    np.testing.assert_allclose(l2_normalize_backward_staged(g, cache), l2_normalize_backward(g, cache),
                               rtol=1e-12, atol=1e-14)


def test_attention_is_causal():
    attn = npnorm.nn.MultiheadSelfAttention(8, 2, rng=0)
    x = np.random.default_rng(0).normal(size=(1, 5, 8))
    y = attn(x)
    x2 = x.copy()
    x2[0, 3:] += 10.0                                        # change the future of position 2
    np.testing.assert_allclose(attn(x2)[0, :3], y[0, :3], atol=1e-12)
    assert not np.allclose(attn(x2)[0, 3:], y[0, 3:])


def test_attention_diagnostics_are_those_of_the_last_forward_pass():
    """last_max_logit / last_entropy (computed when read) describe the last forward pass only."""
    attn = npnorm.nn.MultiheadSelfAttention(8, 2, rng=0)
    assert np.isnan(attn.last_max_logit) and np.isnan(attn.last_entropy)
    rng = np.random.default_rng(0)
    for scale in (1.0, 3.0):
        attn(scale * rng.normal(size=(2, 5, 8)))
        c = attn._cache
        S = c["q"] @ c["k"].transpose(0, 1, 3, 2) / np.sqrt(4)
        keep = np.tril(np.ones((5, 5), dtype=bool))
        P = c["P"]
        assert attn.last_max_logit == pytest.approx(np.abs(S[..., keep]).max(), rel=1e-12)
        rows = [-(P[n, h, i, :i + 1] * np.log(P[n, h, i, :i + 1])).sum()
                for n in range(2) for h in range(2) for i in range(5)]
        assert attn.last_entropy == pytest.approx(np.mean(rows), rel=1e-12)


def test_qk_norm_bounds_the_logits():
    """Henry et al.: every logit lies in [-g, g], whatever the size of q and k."""
    qk = QKNorm(4, "l2", seq_len=8)
    rng = np.random.default_rng(0)
    S = qk(1e3 * rng.normal(size=(1, 2, 5, 4)), 1e3 * rng.normal(size=(1, 2, 5, 4)))
    assert np.abs(S).max() <= float(qk.params["g"]) + 1e-9


def test_embedding_scatter_adds_repeated_ids():
    emb = npnorm.nn.Embedding(4, 2, rng=0)
    ids = np.array([[1, 1, 3]])
    emb(ids)
    assert emb.backward(np.ones((1, 3, 2))) is None
    np.testing.assert_allclose(emb.grads["weight"], [[0, 0], [2, 2], [0, 0], [1, 1]])
    with pytest.raises(TypeError, match="integer"):
        emb(np.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"ids must be in \[0, num_embeddings=4\)"):
        emb(np.array([[4]]))


def test_embedding_padding_idx_as_pytorch():
    emb = npnorm.nn.Embedding(4, 2, padding_idx=-1, rng=0)        # -1 is row 3, as PyTorch
    assert emb.padding_idx == 3 and np.all(emb.params["weight"][3] == 0)
    emb(np.array([[1, 3, 3]]))
    emb.backward(np.ones((1, 3, 2)))
    np.testing.assert_allclose(emb.grads["weight"], [[0, 0], [1, 1], [0, 0], [0, 0]])
    with pytest.raises(ValueError, match=r"padding_idx must be an int in \[-num_embeddings"):
        npnorm.nn.Embedding(4, 2, 4)
    for kw in ({"max_norm": 1.0}, {"sparse": True}, {"scale_grad_by_freq": True}, {"_freeze": True}):
        with pytest.raises(ValueError, match=r"Embedding: only .* is implemented"):
            npnorm.nn.Embedding(4, 2, **kw)
    w = np.arange(8.0).reshape(4, 2)
    e2 = npnorm.nn.Embedding(4, 2, _weight=w)
    w[0, 0] = 100.0
    assert e2.params["weight"][0, 0] == 0.0


LAYERS = [
    (lambda: npnorm.L2Norm(), 1), (lambda: npnorm.ScaleNorm(4), 1), (lambda: npnorm.DyT(4), 1),
    (lambda: npnorm.DeepNorm(4, 1.5), 2), (lambda: npnorm.NGPTResidual(4), 2), (lambda: npnorm.NGPTMLP(4, 3, rng=0), 1),
    (lambda: npnorm.NGPTScale(4), 1), (lambda: npnorm.nn.MultiheadSelfAttention(4, 2, rng=0), 1),
    (lambda: npnorm.nn.FeedForward(4, rng=0), 1), (lambda: npnorm.nn.PositionalEmbedding(5, 4, rng=0), 1),
    (lambda: npnorm.nn.Softmax(), 1),
    (lambda: npnorm.L2Norm(backend="numba"), 1), (lambda: npnorm.ScaleNorm(4, backend="numba"), 1),
    (lambda: npnorm.DyT(4, backend="numba"), 1),
]


@pytest.mark.parametrize("make, n_inputs", LAYERS)
def test_backward_validates_dout_and_keeps_no_view_of_the_input(make, n_inputs):
    rng = np.random.default_rng(0)
    xs = [rng.normal(0.3, 1.0, (2, 3, 4)) for _ in range(n_inputs)]
    layer = make()
    y = layer(*[x.copy() for x in xs])
    with pytest.raises(ValueError, match="shape"):
        layer.backward(np.ones(y.shape[:-1] + (y.shape[-1] + 1,)))
    dy = rng.normal(size=y.shape)
    a, b = make(), make()
    args = [x.copy() for x in xs]
    a(*args)
    for arg in args:
        arg += 5.0                                     # edit the caller's arrays after the forward pass
    b(*[x.copy() for x in xs])
    ga, gb = a.backward(dy), b.backward(dy)
    for u, v in zip(ga if isinstance(ga, tuple) else (ga,), gb if isinstance(gb, tuple) else (gb,)):
        np.testing.assert_array_equal(u, v)
    for k in b.grads:                                  # the parameter gradients too
        np.testing.assert_array_equal(a.grads[k], b.grads[k], err_msg=k)


def test_qknorm_rejects_l2_without_seq_len_and_bad_shapes():
    with pytest.raises(ValueError, match="seq_len"):
        QKNorm(4, "l2")
    with pytest.raises(ValueError, match="norm must be one of"):
        QKNorm(4, "batch")
    with pytest.raises(ValueError, match="head_dim=4"):
        QKNorm(4, "rms")(np.ones((1, 2, 3, 5)), np.ones((1, 2, 3, 5)))


def test_pre_ln_learns_to_reverse_in_a_few_steps():
    from npnorm import nn
    from npnorm.data.sequences import reversal_batch
    rng = np.random.default_rng(0)
    model = TransformerLM(5, d_model=16, n_layers=1, n_heads=2, max_len=8, placement="pre", rng=0)
    opt = nn.Adam(model, lr=1e-2)
    losses = []
    for _ in range(60):
        ids, tg, mask = reversal_batch(32, 3, 4, rng)
        losses.append(lm_step(model, ids, tg, mask))
        opt.step()
        opt.zero_grad()
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), losses


def test_clip_grad_norm_has_pytorch_semantics():
    from npnorm import nn
    lin = nn.Linear(3, 2, rng=0)
    lin.grads = {}
    lin.grads["weight"] = np.full((2, 3), 2.0)
    lin.grads["bias"] = np.array([3.0, 4.0])
    total = nn.clip_grad_norm_(lin, 1.0)
    assert total == pytest.approx(np.sqrt(6 * 4 + 9 + 16))          # the norm before clipping
    assert nn.grad_norm(lin) == pytest.approx(1.0, rel=1e-5)          # max_norm / (total + 1e-6)
    np.testing.assert_allclose(lin.grads["bias"] / lin.grads["weight"][0, 0], [1.5, 2.0])  # direction kept
    before = {k: v.copy() for k, v in lin.grads.items()}
    nn.clip_grad_norm_(lin, 10.0)                                   # below the threshold: unchanged
    for k in before:
        np.testing.assert_allclose(lin.grads[k], before[k])
    lin.grads["bias"] = np.array([np.nan, 1.0])
    with pytest.raises(RuntimeError, match="total norm"):
        nn.clip_grad_norm_(lin, 1.0, error_if_nonfinite=True)


def test_gradnorm_weight_gradient_matches_finite_differences():
    from npnorm.nn.gradnorm import gradnorm_weight_grad
    w, g, ratios = np.array([0.7, 1.3]), np.array([2.0, 0.5]), np.array([0.4, 0.9])
    dw, _ = gradnorm_weight_grad(w, g, ratios, 1.5)
    target = np.mean(w * g) * (ratios / ratios.mean()) ** 1.5          # held constant, as in the paper
    for i in range(2):
        e = np.zeros(2)
        e[i] = 1e-6
        num = (np.abs((w + e) * g - target).sum() - np.abs((w - e) * g - target).sum()) / 2e-6
        assert dw[i] == pytest.approx(num, rel=1e-6)
    gn = npnorm.nn.GradNorm(2, lr=0.1)
    gn.step([1.0, 1.0], [2.0, 0.5])
    assert gn.weights.sum() == pytest.approx(2.0)


def test_gradient_norm_experiment_runs_and_is_reproducible():
    from npnorm.experiments import EXPERIMENTS, transformers as T
    assert {"grad-norms-at-init", "warmup-post-pre", "qk-norm-high-lr", "norm-compare", "ngpt-vs-pre",
            "clip-rescue", "gradnorm-toy"} <= set(EXPERIMENTS)
    a = T.grad_norms_at_init(quick=True, depths=(1, 3), d_model=8)
    b = T.grad_norms_at_init(quick=True, depths=(1, 3), d_model=8)
    assert a == b and len(a["norms"][(1.0, "pre", 3)][0]) == 3


@pytest.mark.parametrize("dtype, tol", [(np.float32, 4e-7), (np.float64, 1e-15)], ids=["f32", "f64"])
def test_tanh_of_the_dyt_kernel_matches_numpy(dtype, tol):
    """The vectorizable tanh of the DyT kernels against np.tanh in float64, on a dense grid, random
    and tiny values: float32 within 4e-7 relative (a few float32 ulps), float64 within 1e-15; odd
    symmetry exact; NaN stays NaN; exactly +-1 wherever tanh rounds to +-1 in the dtype (float32:
    |z| > 13 ln 2 = 9.0109), and for +-inf - so that 1 - t^2 is exactly 0 where it rounds to 0."""
    from npnorm.kernels.transformer import dyt as kdyt
    rng = np.random.default_rng(0)
    tiny = np.geomspace(1e-300 if dtype == np.float64 else 1e-30, 1e-2, 2001)
    z = np.concatenate([np.linspace(-25, 25, 100_001), 3 * rng.standard_normal(20_000), tiny, -tiny,
                        [0.0, 7.9053, 7.906, 9.010913, 9.010914, 9.5, 10.0, 19.1, 19.2, 1e30]]).astype(dtype)
    out, out_neg = np.empty_like(z), np.empty_like(z)
    tanh_array = kdyt._tanh32_array if dtype == np.float32 else kdyt._tanh64_array
    tanh_array(z, out)
    ref = np.tanh(z.astype(np.float64))
    assert np.max(np.abs(out - ref) / np.maximum(np.abs(ref), 1e-300)) <= tol
    saturated = np.abs(ref.astype(dtype)) == 1            # tanh rounds to +-1 in this dtype
    assert saturated.sum() > 10_000
    np.testing.assert_array_equal(out[saturated], np.sign(z[saturated]))
    tanh_array(-z, out_neg)
    np.testing.assert_array_equal(out_neg, -out)
    special = np.array([np.nan, np.inf, -np.inf], dtype=dtype)
    out_s = np.empty_like(special)
    tanh_array(special, out_s)
    assert np.isnan(out_s[0]) and out_s[1] == 1 and out_s[2] == -1


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_dyt_kernel_backward_validates_dout_and_cache(dtype):
    """The Numba functional ``dyt_backward``: a ``dout`` of the right size but the wrong shape (a
    transpose, which a reshape would silently accept), a non-float ``dout`` and a missing cache are
    clear errors naming the function; the right ``dout`` still gives the reference's gradients."""
    from npnorm.kernels.transformer import dyt as kdyt
    from npnorm.transformer import dyt as ref
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4)).astype(dtype)
    a, w, b = np.array([0.7]), rng.standard_normal(4), rng.standard_normal(4)
    _, cache = kdyt.dyt_forward(x, a, w, b)
    dout = rng.standard_normal((6, 4)).astype(dtype)
    with pytest.raises(ValueError, match=r"dyt_backward: dout must have the shape of the forward "
                                         r"output \(6, 4\), got \(4, 6\)"):
        kdyt.dyt_backward(np.ascontiguousarray(dout.T), cache)
    with pytest.raises(ValueError, match=r"dyt_backward: dout .*\(6, 4\), got \(24,\)"):
        kdyt.dyt_backward(dout.ravel(), cache)
    with pytest.raises(TypeError, match="dyt_backward.*dout"):
        kdyt.dyt_backward(dout.astype(np.int64), cache)
    with pytest.raises(TypeError, match="dyt_backward: cache must be the dict returned by the matching "
                                        "forward function, got NoneType"):
        kdyt.dyt_backward(dout, None)
    got = kdyt.dyt_backward(dout, cache)
    want = ref.dyt_backward(dout, ref.dyt_forward(x, a, w, b)[1])
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol)


def test_l2_sqrt_convention_puts_eps_under_the_root_and_both_backwards_agree():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 4, 5))
    x[0, 0] *= 1e-3                                          # ||x||^2 << eps: no floor in this mode
    y, cache = l2_normalize_forward(x, -1, 1e-2, eps_mode="sqrt")
    d = np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + 1e-2)
    np.testing.assert_allclose(y, x / d, rtol=1e-14)
    g = rng.normal(size=x.shape)
    dx = l2_normalize_backward(g, cache)
    np.testing.assert_allclose(dx, (g - y * np.sum(g * y, axis=-1, keepdims=True)) / d, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(l2_normalize_backward_staged(g, cache), dx, rtol=1e-12, atol=1e-14)
    xf = x.copy()
    xf[0, 0] *= 1e3                                          # far above eps the conventions agree
    a, _ = l2_normalize_forward(xf, -1, 1e-12, eps_mode="sqrt")
    b, _ = l2_normalize_forward(xf, -1, 1e-12)
    np.testing.assert_allclose(a, b, rtol=1e-10)
    with pytest.raises(ValueError, match="eps_mode"):
        l2_normalize_forward(x, -1, 1e-2, eps_mode="clamp")


def test_a_run_two_experiments_share_is_trained_once(monkeypatch):
    """norm-compare's LayerNorm runs are ngpt-vs-pre's baseline: the second experiment reuses them
    (same numbers), and a reused result is a copy (editing it does not edit the stored run)."""
    from npnorm.experiments import transformers as T
    calls = []
    train = T.train_lm
    monkeypatch.setattr(T, "train_lm", lambda *a, **k: calls.append(1) or train(*a, **k))
    monkeypatch.setattr(T, "_RUNS", {})
    n4 = T.norm_compare(quick=True, steps=3, d_model=8)
    assert len(calls) == 4 * len(n4["seeds"])
    n5 = T.ngpt_vs_pre(quick=True, steps=3, d_model=8)
    assert len(calls) == 5 * len(n4["seeds"])                  # only the nGPT runs are new
    base = n5["runs"][("pre", n5["lrs"][0])]
    assert base["val_loss"] == n4["runs"]["ln"]["val_loss"] and base["loss"] == n4["runs"]["ln"]["loss"]
    task = T._char_task(32)
    first = T._train("pre", ("char", 32), task, 8, 2, 0, 3, 3e-3, placement="pre", norm="ln")
    first["loss"][0] = -1.0
    assert T._train("pre", ("char", 32), task, 8, 2, 0, 3, 3e-3, placement="pre", norm="ln")["loss"][0] != -1.0
    assert len(calls) == 5 * len(n4["seeds"])
