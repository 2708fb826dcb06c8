"""Record PyTorch's gradient penalty (WGAN-GP) and its double backward for small MLP critics, so the
test suite can check npnorm.nn.double_backward against autograd without PyTorch installed
(tests/test_double_backward.py).

Run it from a separate environment that has PyTorch (never a dependency of npnorm):

    python tools/pytorch_ref_gan.py tests/data/pytorch_gan.npz

For every activation it draws a critic 2 -> 7 -> 6 -> 5 -> 1 (weights (out, in) as nn.Linear), points
x and an upstream gradient over the samples from a seeded NumPy generator, then computes in float64

    g = autograd.grad(D(x).sum(), x, create_graph=True)    (the input gradient)
    p = lam * (||g|| - 1)**2                                  (per sample)
    (p * dout).sum().backward()                              (the double backward)

and stores x, the parameters, dout, g, p and the gradients of every parameter and of x.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
SIZES = (2, 7, 6, 5, 1)
LAM = 3.0
ACTIVATIONS = {"relu": torch.nn.ReLU(), "leaky_relu": torch.nn.LeakyReLU(0.2), "tanh": torch.nn.Tanh(),
               "silu": torch.nn.SiLU()}


def record(name: str, act, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((o, i)) * 1.3 / np.sqrt(i) for i, o in zip(SIZES[:-1], SIZES[1:])]
    bs = [rng.uniform(-0.5, 0.5, o) for o in SIZES[1:]]
    x = rng.normal(0.0, 1.5, (6, 2))
    dout = rng.standard_normal(6)
    tW = [torch.tensor(W, requires_grad=True) for W in Ws]
    tb = [torch.tensor(b, requires_grad=True) for b in bs]
    tx = torch.tensor(x, requires_grad=True)
    h = tx
    for k in range(len(tW)):
        h = h @ tW[k].T + tb[k]
        if k < len(tW) - 1:
            h = act(h)
    g = torch.autograd.grad(h.sum(), tx, create_graph=True)[0]
    p = LAM * (g.norm(dim=1) - 1.0) ** 2
    (p * torch.tensor(dout)).sum().backward()
    out = {"x": x, "dout": dout, "g": g.detach().numpy(), "p": p.detach().numpy(), "dx": tx.grad.numpy()}
    for k in range(len(Ws)):
        out[f"W{k}"], out[f"b{k}"] = Ws[k], bs[k]
        out[f"dW{k}"] = tW[k].grad.numpy()
        out[f"db{k}"] = tb[k].grad.numpy() if tb[k].grad is not None else np.zeros_like(bs[k])
    return {f"{name}/{k}": v for k, v in out.items()}


def main(path: str) -> None:
    data = {"lam": np.array(LAM), "torch_version": np.array(torch.__version__)}
    for i, (name, act) in enumerate(ACTIVATIONS.items()):
        data.update(record(name, act, 100 + i))
    np.savez(path, **data)
    print(f"wrote {path}: {len(ACTIVATIONS)} critics, torch {torch.__version__}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/pytorch_gan.npz")
