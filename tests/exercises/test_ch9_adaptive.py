"""Chapter 9 tasks: AdaGN forward/backward (9.1), the sinusoidal timestep embedding (9.2) and one
adaLN-Zero block with its gradient to the condition (9.3). Forwards against npnorm.adaptive, backwards
by a gradient check of the learner's own pair; the catalogue of common mistakes (MISTAKES) and the
mutation tests that plant each of them."""

from __future__ import annotations

import numpy as np
import pytest
from task_helpers import (Mistake, expect_close, expect_gradients, failure_message, mentions, mutated_solution, rand,
                          unpack)

from npnorm.adaptive._modulation import modulate_forward, project_forward
from npnorm.adaptive.adagroupnorm import ada_group_norm_forward
from npnorm.adaptive.embeddings import timestep_embedding_forward
from npnorm.statistics.standardize import standardize_backward, standardize_forward

CHAPTER = "ch9_adaptive"


@pytest.fixture(scope="module")
def ch9(load):
    return load(CHAPTER)


# -- 9.1 AdaGN -------------------------------------------------------------------------------------

def _adagn_inputs(seed):
    return (rand((2, 4, 3, 2), seed, offset=3.0, scale=2.0), rand((2, 4), seed + 1, scale=0.6),
            rand((2, 4), seed + 2))


def check_9_1_forward(mod) -> None:
    for groups, eps, seed in ((2, 1e-5, 0), (4, 1e-2, 1), (1, 1e-5, 2)):
        x, scale, shift = _adagn_inputs(seed)
        out, _ = unpack(mod.adagn_forward(x, scale, shift, groups, eps), ("out", "cache"), "adagn_forward")
        # npnorm's AdaGroupNorm with an identity projection: emb = [scale, shift]
        ref, _ = ada_group_norm_forward(x, np.concatenate([scale, shift], axis=1), np.eye(8), np.zeros(8), groups, eps)
        expect_close(f"out (num_groups={groups}, eps={eps})", out, ref, rtol=1e-9, atol=1e-10,
                     hint="statistics per (sample, group) over its C/G channels and H, W; then x_hat * (1 + scale) "
                          "+ shift with scale[:, :, None, None].")


def check_9_1_backward(mod) -> None:
    for groups, seed in ((2, 10), (1, 11)):
        x, scale, shift = _adagn_inputs(seed)
        expect_gradients(f"your adagn_backward (num_groups={groups})",
                         lambda x, scale, shift: mod.adagn_forward(x, scale, shift, groups),
                         mod.adagn_backward, {"x": x, "scale": scale, "shift": shift},
                         forward_name="adagn_forward", backward_name="adagn_backward", seed=seed)


@pytest.mark.task("9.1")
def test_adagn_forward_matches_reference(ch9):
    """adagn_forward matches npnorm's AdaGroupNorm"""
    check_9_1_forward(ch9)


@pytest.mark.task("9.1")
def test_adagn_backward_gradcheck(ch9):
    """adagn_backward passes the gradient check (dx, dscale, dshift)"""
    check_9_1_backward(ch9)


# -- 9.2 timestep embedding ------------------------------------------------------------------------

def check_9_2(mod) -> None:
    t = np.array([0, 1, 5, 17, 250, 999])
    for dim, period in ((8, 10000.0), (9, 10000.0), (6, 100.0)):
        got = mod.timestep_embedding(t, dim, period)
        ref, _ = timestep_embedding_forward(t, dim, period)
        expect_close(f"timestep_embedding(t, dim={dim}, max_period={period:g})", got, ref, rtol=1e-9, atol=1e-12,
                     hint="half = dim // 2 frequencies max_period ** (-j / half); cos first, then sin; "
                          "a zero last column when dim is odd.")


@pytest.mark.task("9.2")
def test_timestep_embedding_matches_adm(ch9):
    """timestep_embedding matches ADM/DiT's (cos first, max_period 10000)"""
    check_9_2(ch9)


# -- 9.3 one adaLN-Zero block ------------------------------------------------------------------------

def _block_inputs(seed, n=3, d=4, e=5):
    return {"x": rand((n, d), seed, offset=1.0, scale=2.0), "c": rand((n, e), seed + 1),
            "w_mod": rand((3 * d, e), seed + 2, scale=0.5), "b_mod": rand((3 * d,), seed + 3, scale=0.5),
            "w": rand((d, d), seed + 4, scale=0.5), "b": rand((d,), seed + 5, scale=0.5)}


def _block_reference(x, c, w_mod, b_mod, w, b, eps=1e-6):
    d = x.shape[1]
    p, _ = project_forward(c, w_mod, b_mod, "silu")
    x_hat, _ = standardize_forward(x, (1,), eps)
    u, _ = modulate_forward(x_hat, p[:, d:2 * d], p[:, :d])
    return x + p[:, 2 * d:] * (u @ w.T + b)


def check_9_3_forward(mod) -> None:
    for seed in (0, 1):
        inp = _block_inputs(seed)
        out, _ = unpack(mod.modulated_block_forward(**inp), ("out", "cache"), "modulated_block_forward")
        expect_close(f"out (seed {seed})", out, _block_reference(**inp), rtol=1e-9, atol=1e-10,
                     hint="DiT's chunk order is shift, scale, gate; SiLU(c) before the Linear; "
                          "out = x + gate * (u @ w.T + b).")


def check_9_3_backward(mod) -> None:
    for seed in (20, 21):
        expect_gradients(f"your modulated_block_backward (seed {seed})", mod.modulated_block_forward,
                         mod.modulated_block_backward, _block_inputs(seed), forward_name="modulated_block_forward",
                         backward_name="modulated_block_backward", seed=seed)


@pytest.mark.task("9.3")
def test_modulated_block_forward_matches_reference(ch9):
    """modulated_block_forward matches LN -> (1 + scale), shift -> Linear -> gate, with DiT's chunk order"""
    check_9_3_forward(ch9)


@pytest.mark.task("9.3")
def test_modulated_block_backward_gradcheck(ch9):
    """modulated_block_backward passes the gradient check (dx, dc and every parameter)"""
    check_9_3_backward(ch9)


# -- the catalogue of common mistakes --------------------------------------------------------------
# Each ``wrong`` has the signature of the task's function. A wrong backward takes the cache of the
# reference solution's forward (keys ``x_hat``, ``rstd``, ``scale``, ``num_groups`` for 9.1; those of
# ``modulated_block_forward`` for 9.3).

def _gn(x, groups, eps):
    n = x.shape[0]
    x_hat, cache = standardize_forward(x.reshape(n, groups, -1), (2,), eps)
    return x_hat.reshape(x.shape), cache


def _wrong_scale_without_one(x, scale, shift, num_groups, eps=1e-5):
    x_hat, _ = _gn(x, num_groups, eps)
    return x_hat * scale[:, :, None, None] + shift[:, :, None, None], {"x_hat": x_hat}


def _wrong_instance_statistics(x, scale, shift, num_groups, eps=1e-5):
    x_hat, _ = standardize_forward(x, (2, 3), eps)             # per channel, ignoring the groups
    return x_hat * (1 + scale[:, :, None, None]) + shift[:, :, None, None], {"x_hat": x_hat}


def _wrong_dscale_summed_over_batch(dout, cache):
    dx, dscale, dshift = _right_adagn_backward(dout, cache)
    return dx, np.broadcast_to((dout * cache["x_hat"]).sum(axis=(0, 2, 3)), dscale.shape).copy(), dshift


def _wrong_dx_without_scale(dout, cache):
    _, dscale, dshift = _right_adagn_backward(dout, cache)
    n, groups = dout.shape[0], cache["num_groups"]
    g = dout.reshape(n, groups, -1)                              # forgot the factor (1 + scale)
    xh = cache["x_hat"].reshape(n, groups, -1)
    dx = cache["rstd"] * (g - g.mean(axis=-1, keepdims=True) - xh * np.mean(g * xh, axis=-1, keepdims=True))
    return dx.reshape(dout.shape), dscale, dshift


def _right_adagn_backward(dout, cache):
    n, groups = dout.shape[0], cache["num_groups"]
    dscale, dshift = (dout * cache["x_hat"]).sum(axis=(2, 3)), dout.sum(axis=(2, 3))
    g = (dout * (1 + cache["scale"][:, :, None, None])).reshape(n, groups, -1)
    dx = standardize_backward(g, {"x_hat": cache["x_hat"].reshape(n, groups, -1), "rstd": cache["rstd"],
                                  "axes": (2,)})
    return dx.reshape(dout.shape), dscale, dshift


def _wrong_sin_first(t, dim, max_period=10000.0):
    emb, _ = timestep_embedding_forward(t, dim, max_period, flip_sin_to_cos=False)
    return emb


def _wrong_freq_denominator_dim(t, dim, max_period=10000.0):
    half = dim // 2
    args = np.asarray(t, float)[:, None] * np.exp(-np.log(max_period) * np.arange(half) / dim)[None]
    emb = np.concatenate([np.cos(args), np.sin(args)], axis=1)
    return np.concatenate([emb, np.zeros((len(emb), dim % 2))], axis=1)


def _wrong_diffusers_shift(t, dim, max_period=10000.0):
    emb, _ = timestep_embedding_forward(t, dim, max_period, downscale_freq_shift=1.0)
    return emb


def _wrong_adm_chunk_order(x, c, w_mod, b_mod, w, b, eps=1e-6):
    d = x.shape[1]
    p, _ = project_forward(c, w_mod, b_mod, "silu")
    x_hat, _ = standardize_forward(x, (1,), eps)
    u = x_hat * (1 + p[:, :d]) + p[:, d:2 * d]                   # scale first, as ADM's AdaGN
    return x + p[:, 2 * d:] * (u @ w.T + b), {}


def _wrong_gate_on_everything(x, c, w_mod, b_mod, w, b, eps=1e-6):
    d = x.shape[1]
    p, _ = project_forward(c, w_mod, b_mod, "silu")
    x_hat, _ = standardize_forward(x, (1,), eps)
    u = x_hat * (1 + p[:, d:2 * d]) + p[:, :d]
    return p[:, 2 * d:] * (x + u @ w.T + b), {}                 # gates the identity path too


def _solution():
    from npnorm.exercises import SOLUTIONS_DIR, load_module
    return load_module(SOLUTIONS_DIR / f"{CHAPTER}.py")


def _wrong_no_identity_path(dout, cache):
    dx, *rest = _solution().modulated_block_backward(dout, cache)
    return (dx - dout, *rest)                                    # forgot the "x +" of the residual


def _wrong_dc_without_silu_derivative(dout, cache):
    dx, dc, *rest = _solution().modulated_block_backward(dout, cache)
    c, sig = cache["c"], cache["sig"]
    return (dx, dc / (sig * (1 + c * (1 - sig))), *rest)         # dc = dp @ w_mod, the SiLU skipped


MISTAKES: list[Mistake] = [
    Mistake("9.1", "scale-without-one", "adagn_forward", _wrong_scale_without_one,
            "You multiply by scale instead of (1 + scale). AdaGN predicts the deviation from the identity: "
            "out = x_hat * (1 + scale) + shift, so that a zero projection leaves the normalization unchanged."),
    Mistake("9.1", "instance-statistics", "adagn_forward", _wrong_instance_statistics,
            "Your statistics are per channel (InstanceNorm), not per group: reshape x to (N, G, -1) and take "
            "the mean and variance over the last axis, which holds C/G channels and all of H, W."),
    Mistake("9.1", "dscale-summed-over-batch", "adagn_backward", _wrong_dscale_summed_over_batch,
            "dscale is summed over the batch too. Each sample has its own scale (it comes from that sample's "
            "embedding): sum dout * x_hat over H and W only, keeping shape (N, C)."),
    Mistake("9.1", "dx-without-scale", "adagn_backward", _wrong_dx_without_scale,
            "dx ignores the modulation: the gradient reaching x_hat is dout * (1 + scale), not dout, before "
            "the group-standardization backward."),
    Mistake("9.2", "sin-first", "timestep_embedding", _wrong_sin_first,
            "Your embedding puts sin before cos. ADM and DiT put cos first (diffusers: flip_sin_to_cos=True); "
            "the order only matters for matching pretrained weights, but it must match."),
    Mistake("9.2", "frequency-over-dim", "timestep_embedding", _wrong_freq_denominator_dim,
            "Your frequencies are max_period ** (-j / dim); they should be max_period ** (-j / half) with "
            "half = dim // 2, so that the slowest one reaches about 1 / max_period."),
    Mistake("9.2", "diffusers-default-shift", "timestep_embedding", _wrong_diffusers_shift,
            "You divide by half - 1 (diffusers' default downscale_freq_shift=1); ADM and DiT divide by half."),
    Mistake("9.3", "adm-chunk-order", "modulated_block_forward", _wrong_adm_chunk_order,
            "You split the modulation as scale, shift (ADM's AdaGN order). DiT's adaLN-Zero order is shift, "
            "scale, gate."),
    Mistake("9.3", "gate-on-identity", "modulated_block_forward", _wrong_gate_on_everything,
            "The gate multiplies the identity path too. Only the branch is gated: out = x + gate * f(u), so "
            "that a zero gate makes the block the identity."),
    Mistake("9.3", "no-identity-path", "modulated_block_backward", _wrong_no_identity_path,
            "dx misses the residual connection's term: out = x + ..., so dout itself is added to the gradient "
            "that comes back through LayerNorm."),
    Mistake("9.3", "dc-without-silu", "modulated_block_backward", _wrong_dc_without_silu_derivative,
            "dc skips the SiLU: the projection reads SiLU(c), so dc = (dp @ w_mod) * SiLU'(c) with "
            "SiLU'(c) = sigmoid(c) (1 + c (1 - sigmoid(c)))."),
]


# -- mutation tests: each catalogued mistake, planted in a copy of the solutions, is caught -----------

def test_mistakes_are_distinct_from_the_solution():
    """Every catalogued wrong implementation really differs from the solution on the task's inputs."""
    sol = _solution()
    x, scale, shift = _adagn_inputs(0)
    out, cache = sol.adagn_forward(x, scale, shift, 2)
    dout = rand(x.shape, 99)
    right_bwd = sol.adagn_backward(dout, cache)
    t = np.array([0, 3, 999])
    inp = _block_inputs(0)
    bout, bcache = sol.modulated_block_forward(**inp)
    bdout = rand(bout.shape, 98)
    right_block = sol.modulated_block_backward(bdout, bcache)
    for m in MISTAKES:
        if m.function == "adagn_forward":
            got, want = m.wrong(x, scale, shift, 2)[0], out
        elif m.function == "adagn_backward":
            got, want = np.concatenate([g.ravel() for g in m.wrong(dout, cache)]), np.concatenate(
                [g.ravel() for g in right_bwd])
        elif m.function == "timestep_embedding":
            got, want = m.wrong(t, 8), sol.timestep_embedding(t, 8)
        elif m.function == "modulated_block_forward":
            got, want = m.wrong(**inp)[0], bout
        else:
            got, want = np.concatenate([g.ravel() for g in m.wrong(bdout, bcache)]), np.concatenate(
                [g.ravel() for g in right_block])
        assert not np.allclose(got, want), f"{m.task} {m.name} is indistinguishable from the solution"
    assert {m.task for m in MISTAKES} == {"9.1", "9.2", "9.3"}
    assert all(2 <= sum(m.task == t for m in MISTAKES) <= 4 for t in ("9.1", "9.2", "9.3"))


def test_mutation_scale_without_one_fails_9_1(tmp_path):
    mod = mutated_solution(CHAPTER, "out = x_hat * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]",
                           "out = x_hat * scale[:, :, None, None] + shift[:, :, None, None]", tmp_path)
    assert "first mismatch" in failure_message(lambda: check_9_1_forward(mod))


def test_mutation_dscale_over_batch_fails_9_1(tmp_path):
    mod = mutated_solution(CHAPTER, "dscale = (dout * x_hat).sum(axis=(2, 3))",
                           "dscale = (dout * x_hat).sum(axis=(0, 2, 3))", tmp_path)
    msg = failure_message(lambda: check_9_1_backward(mod))
    assert mentions(msg, "scale", r"shape \(4,\), expected \(2, 4\)"), msg


def test_mutation_dx_without_scale_fails_9_1(tmp_path):
    mod = mutated_solution(CHAPTER, "g = (dout * (1.0 + scale[:, :, None, None])).reshape(n, groups, -1)",
                           "g = dout.reshape(n, groups, -1)", tmp_path)
    msg = failure_message(lambda: check_9_1_backward(mod))
    assert mentions(msg, "-> dx is wrong", r"shift .* ok"), msg


def test_mutation_sin_first_fails_9_2(tmp_path):
    mod = mutated_solution(CHAPTER, "emb = np.concatenate([np.cos(args), np.sin(args)], axis=1)",
                           "emb = np.concatenate([np.sin(args), np.cos(args)], axis=1)", tmp_path)
    assert "first mismatch" in failure_message(lambda: check_9_2(mod))


def test_mutation_adm_chunk_order_fails_9_3(tmp_path):
    mod = mutated_solution(CHAPTER, "shift, scale, gate = p[:, :d], p[:, d:2 * d], p[:, 2 * d:]",
                           "scale, shift, gate = p[:, :d], p[:, d:2 * d], p[:, 2 * d:]", tmp_path)
    assert "first mismatch" in failure_message(lambda: check_9_3_forward(mod))


def test_mutation_no_identity_path_fails_9_3(tmp_path):
    mod = mutated_solution(CHAPTER, "dx = dout + cache[\"rstd\"]", "dx = cache[\"rstd\"]", tmp_path)
    msg = failure_message(lambda: check_9_3_backward(mod))
    assert "-> dx is wrong" in msg, msg


def test_mutation_dc_without_silu_fails_9_3(tmp_path):
    mod = mutated_solution(CHAPTER, "dc = (dp @ cache[\"w_mod\"]) * sig * (1.0 + c * (1.0 - sig))",
                           "dc = dp @ cache[\"w_mod\"]", tmp_path)
    msg = failure_message(lambda: check_9_3_backward(mod))
    assert "-> dc is wrong" in msg and "-> dx is wrong" not in msg, msg
