"""Record PyTorch's numbers for the transformer chapter, so the test suite can check npnorm against
them without PyTorch (tests/test_pytorch_transformer.py).

Run it from a separate environment that has PyTorch (never a dependency of npnorm):

    python tools/pytorch_ref_transformer.py tests/data/pytorch_transformer.npz

Every case draws its input, parameters and upstream gradient from a seeded NumPy generator and
stores, in float64: the parameters (under npnorm's names), the input, the upstream gradient, the
output, and the gradients of the input and of every parameter, computed by autograd.

Cases: one transformer block (causal ``nn.MultiheadAttention``, ``nn.LayerNorm``, Linear-GELU-Linear)
in the pre-LN and post-LN placements; a pre-RMSNorm block with per-head RMSNorm QK-norm written with
``F.rms_norm``; ``F.normalize`` (including a row below eps); ScaleNorm, DyT and DeepNorm written as
PyTorch compositions.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)

D, H, FF, N, L = 8, 2, 12, 2, 5


def block_params(rng, norm="ln", qk=False):
    p = {}
    for n in ("norm1", "norm2"):
        p[f"{n}.weight"] = rng.normal(1.0, 0.3, D)
        if norm == "ln":
            p[f"{n}.bias"] = rng.normal(0.0, 0.3, D)
    p["attn.in_proj.weight"] = rng.normal(0, 0.4, (3 * D, D))
    p["attn.in_proj.bias"] = rng.normal(0, 0.2, 3 * D)
    p["attn.out_proj.weight"] = rng.normal(0, 0.4, (D, D))
    p["attn.out_proj.bias"] = rng.normal(0, 0.2, D)
    p["mlp.linear1.weight"] = rng.normal(0, 0.4, (FF, D))
    p["mlp.linear1.bias"] = rng.normal(0, 0.2, FF)
    p["mlp.linear2.weight"] = rng.normal(0, 0.4, (D, FF))
    p["mlp.linear2.bias"] = rng.normal(0, 0.2, D)
    if qk:
        p["attn.qk_norm.q_weight"] = rng.normal(1.0, 0.3, D // H)
        p["attn.qk_norm.k_weight"] = rng.normal(1.0, 0.3, D // H)
    return p


def torch_block(x, t, placement, norm="ln", qk=False):
    """The block with torch modules (LayerNorm, MultiheadAttention) or functional ops (RMS, QK-norm)."""
    def nrm(z, name):
        if norm == "ln":
            return F.layer_norm(z, (D,), t[f"{name}.weight"], t[f"{name}.bias"], 1e-5)
        return F.rms_norm(z, (D,), t[f"{name}.weight"], None)

    mask = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)        # True = not allowed

    def attn(z):
        if not qk:
            mha = torch.nn.MultiheadAttention(D, H, batch_first=True, bias=True)
            del mha.in_proj_weight, mha.in_proj_bias
            mha.in_proj_weight, mha.in_proj_bias = t["attn.in_proj.weight"], t["attn.in_proj.bias"]
            del mha.out_proj.weight, mha.out_proj.bias
            mha.out_proj.weight, mha.out_proj.bias = t["attn.out_proj.weight"], t["attn.out_proj.bias"]
            return mha(z, z, z, attn_mask=mask, need_weights=False)[0]
        qkv = z @ t["attn.in_proj.weight"].T + t["attn.in_proj.bias"]
        q, k, v = (u.reshape(N, L, H, D // H).transpose(1, 2) for u in qkv.split(D, -1))
        q = F.rms_norm(q, (D // H,), t["attn.qk_norm.q_weight"], 1e-6)
        k = F.rms_norm(k, (D // H,), t["attn.qk_norm.k_weight"], 1e-6)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(D // H)
        s = s.masked_fill(mask, float("-inf"))
        ctx = (s.softmax(-1) @ v).transpose(1, 2).reshape(N, L, D)
        return ctx @ t["attn.out_proj.weight"].T + t["attn.out_proj.bias"]

    def mlp(z):
        h = F.gelu(z @ t["mlp.linear1.weight"].T + t["mlp.linear1.bias"])
        return h @ t["mlp.linear2.weight"].T + t["mlp.linear2.bias"]

    if placement == "pre":
        h = x + attn(nrm(x, "norm1"))
        return h + mlp(nrm(h, "norm2"))
    h = nrm(x + attn(x), "norm1")
    return nrm(h + mlp(h), "norm2")


def run(name, fn, x, params, rng, store):
    tx = torch.tensor(x, requires_grad=True)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    y = fn(tx, t)
    dy = rng.standard_normal(tuple(y.shape))
    y.backward(torch.tensor(dy))
    store[f"{name}/x"] = x
    store[f"{name}/dy"] = dy
    store[f"{name}/y"] = y.detach().numpy()
    store[f"{name}/dx"] = tx.grad.numpy()
    for k, v in params.items():
        store[f"{name}/param/{k}"] = v
        store[f"{name}/grad/{k}"] = t[k].grad.numpy()


def main(path):
    rng = np.random.default_rng(2026)
    store = {}
    x = rng.normal(0.5, 1.5, (N, L, D))
    run("block-pre-ln", lambda a, t: torch_block(a, t, "pre"), x, block_params(rng), rng, store)
    run("block-post-ln", lambda a, t: torch_block(a, t, "post"), x, block_params(rng), rng, store)
    run("block-pre-rms-qkrms", lambda a, t: torch_block(a, t, "pre", "rms", True), x,
        block_params(rng, "rms", True), rng, store)
    xt = rng.normal(0.0, 1.0, (3, 4, 5))
    xt[0, 0] *= 1e-14                                   # a row whose norm is below eps = 1e-12
    run("normalize-dim-1", lambda a, t: F.normalize(a, p=2, dim=-1, eps=1e-12), xt, {}, rng, store)
    run("normalize-dim1", lambda a, t: F.normalize(a, p=2, dim=1, eps=1e-12), rng.normal(0, 1, (3, 4, 5)), {},
        rng, store)
    run("scalenorm", lambda a, t: t["scale"] * F.normalize(a, p=2, dim=-1, eps=1e-5), rng.normal(1, 2, (2, 3, 6)),
        {"scale": np.array(2.3)}, rng, store)
    run("dyt", lambda a, t: t["weight"] * torch.tanh(t["alpha"] * a) + t["bias"], rng.normal(0.3, 2, (2, 3, 6)),
        {"alpha": np.array([0.7]), "weight": rng.normal(1, 0.3, 6), "bias": rng.normal(0, 0.3, 6)}, rng, store)
    alpha = (2 * 6) ** 0.25
    g = rng.normal(0, 1, (2, 3, 6))
    store["deepnorm/branch"] = g
    run("deepnorm", lambda a, t: F.layer_norm(alpha * a + torch.tensor(g), (6,), t["weight"], t["bias"], 1e-5),
        rng.normal(0, 1, (2, 3, 6)), {"weight": rng.normal(1, 0.3, 6), "bias": rng.normal(0, 0.3, 6)}, rng, store)
    store["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(path, **store)
    print(f"wrote {len(store)} arrays to {path} (torch {torch.__version__})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/pytorch_transformer.npz")
