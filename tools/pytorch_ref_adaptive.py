"""Record the adaptive normalizers' conventions from PyTorch and diffusers, so that the test suite can
check npnorm against them without either installed (tests/test_pytorch_ref_adaptive.py).

Run it from the separate environment that has torch (and diffusers 0.42, installed there with pip):

    python tools/pytorch_ref_adaptive.py tests/data/pytorch_adaptive.npz

Recorded with the library's own modules where one exists:

* ``diffusers.models.normalization.AdaGroupNorm`` (act_fn None and "silu"),
* ``diffusers.models.embeddings.get_timestep_embedding`` (ADM/DiT settings and diffusers' defaults)
  and ``TimestepEmbedding``,
* ``diffusers.models.normalization.AdaLayerNormZero`` (DiT's chunk order: shift, scale, gate; its
  first output is adaLN, its third the gate),
* ``torch.nn.Embedding`` (repeated indices);

and as the documented formula in torch where no library module exists (FiLM with gamma = 1 + delta,
conditional BatchNorm = BatchNorm2d(affine=False) + tables over train and eval steps, StyleGAN's AdaIN
= InstanceNorm2d + Linear with ``x * (1 + s) + t``, the adaLN-Zero block ``x + gate * MLP(adaLN(x))``).
Every case stores inputs, parameters, an upstream gradient, the output and every gradient in float64.
"""

from __future__ import annotations

import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, get_timestep_embedding
from diffusers.models.normalization import AdaGroupNorm, AdaLayerNormZero

torch.set_default_dtype(torch.float64)


def t(a, grad=True):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def set_params(module, rng, store, name):
    for key, p in module.named_parameters():
        value = rng.normal(0.0, 0.5, tuple(p.shape))
        p.data = torch.tensor(value)
        store[f"{name}/param/{key}"] = value


def finish(name, store, inputs, out, module=None, extra=None):
    """Backward with a random upstream; store inputs, output and every gradient."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    dy = rng.standard_normal(tuple(out.shape))
    out.backward(torch.tensor(dy))
    store[f"{name}/dy"] = dy
    store[f"{name}/out"] = out.detach().numpy()
    for key, x in inputs.items():
        store[f"{name}/input/{key}"] = x.detach().numpy()
        if x.requires_grad:
            store[f"{name}/grad/{key}"] = x.grad.numpy()
    for key, p in (module.named_parameters() if module is not None else []):
        store[f"{name}/pgrad/{key}"] = p.grad.numpy()
    for key, p in (extra or {}).items():
        store[f"{name}/pgrad/{key}"] = p.grad.numpy()


def main(path: str) -> None:
    rng = np.random.default_rng(0)
    store: dict[str, np.ndarray] = {}

    # diffusers AdaGroupNorm
    for name, act in (("AdaGroupNorm", None), ("AdaGroupNorm-silu", "silu")):
        layer = AdaGroupNorm(3, 6, 2, act_fn=act, eps=1e-5)
        set_params(layer, rng, store, name)
        x, emb = t(rng.standard_normal((2, 6, 3, 4)) * 3 + 2), t(rng.standard_normal((2, 3)))
        finish(name, store, {"x": x, "emb": emb}, layer(x, emb), layer)

    # timestep embeddings: ADM/DiT settings (cos first, no shift) and diffusers' defaults
    steps = np.array([0.0, 1.0, 17.0, 499.0, 999.0])
    for name, kw in (("timestep-adm", dict(flip_sin_to_cos=True, downscale_freq_shift=0)),
                     ("timestep-diffusers-default", {}),
                     ("timestep-odd", dict(flip_sin_to_cos=True, downscale_freq_shift=0))):
        dim = 9 if name == "timestep-odd" else 8
        tt = t(steps)
        finish(name, store, {"t": tt}, get_timestep_embedding(tt, dim, **kw))

    layer = TimestepEmbedding(8, 6)
    set_params(layer, rng, store, "TimestepEmbedding")
    x = t(rng.standard_normal((3, 8)))
    finish("TimestepEmbedding", store, {"x": x}, layer(x), layer)

    # DiT's adaLN-Zero modulation (diffusers AdaLayerNormZero): outputs adaLN(x) and gate_msa
    layer = AdaLayerNormZero(4)
    set_params(layer, rng, store, "AdaLayerNormZero")
    x, emb = t(rng.standard_normal((2, 3, 4)) * 2 + 1), t(rng.standard_normal((2, 4)))
    normed, gate, *_ = layer(x=x, emb=emb)
    finish("AdaLayerNormZero", store, {"x": x, "emb": emb}, normed, layer)
    store["AdaLayerNormZero/gate"] = gate.detach().numpy()

    # the adaLN-Zero block, by its formula: x + gate * fc2(silu(fc1(LN(x) (1 + scale) + shift)))
    d, e, h = 4, 3, 6
    p = {"adaLN_modulation.1.weight": t(rng.normal(0, 0.5, (3 * d, e))),
         "adaLN_modulation.1.bias": t(rng.normal(0, 0.5, 3 * d)),
         "mlp.fc1.weight": t(rng.normal(0, 0.5, (h, d))), "mlp.fc1.bias": t(rng.normal(0, 0.5, h)),
         "mlp.fc2.weight": t(rng.normal(0, 0.5, (d, h))), "mlp.fc2.bias": t(rng.normal(0, 0.5, d))}
    for k, v in p.items():
        store[f"AdaLNZeroBlock/param/{k}"] = v.detach().numpy()
    x, c = t(rng.standard_normal((2, 3, d)) * 2 + 1), t(rng.standard_normal((2, e)))
    mod = F.linear(F.silu(c), p["adaLN_modulation.1.weight"], p["adaLN_modulation.1.bias"])
    shift, scale, gate = mod.chunk(3, dim=1)
    u = F.layer_norm(x, (d,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]
    f = F.linear(F.silu(F.linear(u, p["mlp.fc1.weight"], p["mlp.fc1.bias"])), p["mlp.fc2.weight"], p["mlp.fc2.bias"])
    finish("AdaLNZeroBlock", store, {"x": x, "cond": c}, x + gate[:, None] * f, extra=p)

    # FiLM with gamma = 1 + delta (the FiLM code's gamma_baseline = 1)
    w, b = t(rng.normal(0, 0.5, (8, 3))), t(rng.normal(0, 0.5, 8))
    store["FiLM/param/weight"], store["FiLM/param/bias"] = w.detach().numpy(), b.detach().numpy()
    x, c = t(rng.standard_normal((2, 4, 3, 3))), t(rng.standard_normal((2, 3)))
    dgamma, beta = F.linear(c, w, b).chunk(2, dim=1)
    finish("FiLM", store, {"x": x, "cond": c}, (1 + dgamma)[:, :, None, None] * x + beta[:, :, None, None],
           extra={"weight": w, "bias": b})

    # StyleGAN AdaIN from a vector: IN(x) (1 + s) + t with [s, t] = Linear(w)
    lw, lb = t(rng.normal(0, 0.5, (6, 4))), t(rng.normal(0, 0.5, 6))
    store["StyleAdaIN/param/linear.weight"], store["StyleAdaIN/param/linear.bias"] = lw.detach().numpy(), lb.detach().numpy()
    x, wv = t(rng.standard_normal((2, 3, 4, 4)) * 2 + 3), t(rng.standard_normal((2, 4)))
    s, sh = F.linear(wv, lw, lb).chunk(2, dim=1)
    y = F.instance_norm(x, eps=1e-8) * (1 + s[:, :, None, None]) + sh[:, :, None, None]
    finish("StyleAdaIN", store, {"x": x, "w": wv}, y, extra={"linear.weight": lw, "linear.bias": lb})

    # torch.nn.Embedding with repeated indices
    emb = torch.nn.Embedding(4, 3)
    set_params(emb, rng, store, "Embedding")
    idx = torch.tensor([[0, 2, 2], [3, 0, 2]])
    store["Embedding/input/idx"] = idx.numpy()
    out = emb(idx)
    dy = rng.standard_normal(tuple(out.shape))
    out.backward(torch.tensor(dy))
    store["Embedding/dy"], store["Embedding/out"] = dy, out.detach().numpy()
    store["Embedding/pgrad/weight"] = emb.weight.grad.numpy()

    # conditional BatchNorm: BatchNorm2d(affine=False) + per-class tables; 3 train steps, 1 eval step
    bn = torch.nn.BatchNorm2d(3, affine=False, momentum=0.1)
    gw, gb = rng.normal(1, 0.5, (4, 3)), rng.normal(0, 0.5, (4, 3))
    store["CBN/param/weight"], store["CBN/param/bias"] = gw, gb
    for k, mode in enumerate(["train", "train", "train", "eval"]):
        bn.train(mode == "train")
        x = t(rng.standard_normal((5, 3, 2, 3)) * 2 + 1)
        y = torch.tensor(rng.integers(0, 4, 5))
        tw, tb = t(gw), t(gb)
        out = bn(x) * tw[y][:, :, None, None] + tb[y][:, :, None, None]
        name = f"CBN/step{k}"
        store[f"{name}/input/y"] = y.numpy()
        finish(name, store, {"x": x}, out, extra={"weight": tw, "bias": tb})
        store[f"{name}/running_mean"] = bn.running_mean.numpy().copy()
        store[f"{name}/running_var"] = bn.running_var.numpy().copy()

    store["meta/torch_version"] = np.array(torch.__version__)
    import diffusers
    store["meta/diffusers_version"] = np.array(diffusers.__version__)
    np.savez_compressed(path, **store)
    print(f"wrote {len(store)} arrays to {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/pytorch_adaptive.npz")
