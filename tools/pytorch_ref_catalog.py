"""Record PyTorch's LocalResponseNorm and CrossMapLRN2d (forward and backward), so that
tests/test_pytorch_catalog.py can check npnorm against them without PyTorch installed.

Run it from a separate environment that has PyTorch (never a dependency of npnorm):

    python tools/pytorch_ref_catalog.py tests/data/pytorch_catalog.npz

Every case draws its input and upstream gradient from a seeded NumPy generator and stores, in
float64: ``<case>/x``, ``<case>/dy``, ``<case>/out``, ``<case>/dx`` (PyTorch's backward) and the
constructor arguments ``<case>/args`` = (size, alpha, beta, k). For CrossMapLRN2d it also stores
``<case>/dx_numeric``: central differences of PyTorch's own forward, which show whether PyTorch's
backward is the gradient of its forward.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
nn = torch.nn

# name: (class, (size, alpha, beta, k), input shape)
CASES = {
    "LocalResponseNorm-3d": (nn.LocalResponseNorm, (3, 1e-4, 0.75, 1.0), (2, 6, 5)),
    "LocalResponseNorm-4d-defaults": (nn.LocalResponseNorm, (5, 1e-4, 0.75, 1.0), (2, 7, 3, 4)),
    "LocalResponseNorm-strong": (nn.LocalResponseNorm, (3, 0.9, 0.75, 1.0), (2, 5, 3, 3)),
    "LocalResponseNorm-even": (nn.LocalResponseNorm, (4, 0.7, 0.6, 2.0), (2, 6, 2, 3)),
    "LocalResponseNorm-wide": (nn.LocalResponseNorm, (9, 1.5, 1.1, 0.5), (2, 4, 3, 2)),
    "LocalResponseNorm-5d": (nn.LocalResponseNorm, (2, 0.5, 0.75, 1.0), (1, 4, 2, 2, 3)),
    "LocalResponseNorm-alexnet": (nn.LocalResponseNorm, (5, 5e-4, 0.75, 2.0), (2, 8, 3, 3)),
    # C <= (size-1)//2 + 1: PyTorch's running window never drops a channel it should
    "CrossMapLRN2d-small-C": (nn.CrossMapLRN2d, (3, 0.8, 0.75, 1.0), (2, 2, 3, 2)),
    "CrossMapLRN2d-size5-small-C": (nn.CrossMapLRN2d, (5, 0.8, 0.75, 1.0), (2, 3, 2, 2)),
    # C larger: PyTorch's forward keeps channel 0 in later windows
    "CrossMapLRN2d-leak": (nn.CrossMapLRN2d, (3, 0.8, 0.75, 1.0), (2, 7, 2, 2)),
}


def numeric_grad(layer, x, dy, h=1e-6):
    flat = x.reshape(-1)
    out = np.zeros_like(flat)
    for i in range(flat.size):
        e = np.zeros_like(flat)
        e[i] = h
        plus = (layer(torch.tensor((flat + e).reshape(x.shape))).detach().numpy() * dy).sum()
        minus = (layer(torch.tensor((flat - e).reshape(x.shape))).detach().numpy() * dy).sum()
        out[i] = (plus - minus) / (2 * h)
    return out.reshape(x.shape)


def main(path: str) -> None:
    rng = np.random.default_rng(2026)
    store = {"torch_version": np.array(torch.__version__)}
    for name, (cls, args, shape) in CASES.items():
        layer = cls(*args)
        x = rng.normal(0.3, 1.5, shape)
        dy = rng.standard_normal(shape)
        xt = torch.tensor(x, requires_grad=True)
        out = layer(xt)
        (dx,) = torch.autograd.grad(out, xt, torch.tensor(dy))
        store.update({f"{name}/x": x, f"{name}/dy": dy, f"{name}/out": out.detach().numpy(),
                      f"{name}/dx": dx.numpy(), f"{name}/args": np.array(args, dtype=np.float64)})
        if cls is nn.CrossMapLRN2d:
            store[f"{name}/dx_numeric"] = numeric_grad(layer, x, dy)
    np.savez_compressed(path, **store)
    print(f"wrote {len(CASES)} cases to {path} (torch {torch.__version__})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/pytorch_catalog.npz")
