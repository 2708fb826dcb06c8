"""Record PyTorch's outputs for the core normalizers, so the test suite can check npnorm against
them without PyTorch installed (tests/test_pytorch_reference.py).

Run it from a separate environment that has PyTorch (never a dependency of npnorm):

    python tools/pytorch_reference.py tests/data/pytorch_reference.npz

For every case it draws the input, parameters and upstream gradients from a seeded NumPy generator,
runs a few training steps (forward and backward) and then evaluation steps through ``torch.nn``, and
stores everything in float64: inputs, parameters, upstream gradients, outputs, input and parameter
gradients, and running statistics after each step.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
nn = torch.nn

# name: (torch constructor, input shape, training steps, eval steps)
CASES = {
    "BatchNorm1d-NC": (lambda: nn.BatchNorm1d(4), (8, 4), 3, 2),
    "BatchNorm1d-NCL": (lambda: nn.BatchNorm1d(3), (5, 3, 7), 3, 2),
    "BatchNorm1d-momentum-None": (lambda: nn.BatchNorm1d(3, momentum=None), (5, 3, 4), 4, 1),
    "BatchNorm1d-no-affine": (lambda: nn.BatchNorm1d(3, affine=False), (6, 3), 2, 1),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(3), (4, 3, 5, 6), 3, 2),
    "BatchNorm2d-no-running-stats": (lambda: nn.BatchNorm2d(3, track_running_stats=False), (4, 3, 2, 3), 2, 2),
    "BatchNorm2d-momentum-0.3": (lambda: nn.BatchNorm2d(2, momentum=0.3, eps=1e-3), (2, 2, 3, 3), 3, 1),
    "LayerNorm-tokens": (lambda: nn.LayerNorm(8), (2, 5, 8), 2, 1),
    "LayerNorm-CHW": (lambda: nn.LayerNorm((3, 4, 4)), (2, 3, 4, 4), 1, 1),
    "LayerNorm-no-bias": (lambda: nn.LayerNorm(6, bias=False), (3, 6), 1, 0),
    "RMSNorm": (lambda: nn.RMSNorm(8), (2, 5, 8), 1, 1),
    "RMSNorm-eps": (lambda: nn.RMSNorm((2, 8), eps=1e-3), (3, 2, 8), 1, 0),
    "GroupNorm": (lambda: nn.GroupNorm(2, 6), (3, 6, 4, 5), 1, 1),
    "GroupNorm-1d": (lambda: nn.GroupNorm(3, 6, eps=1e-4), (3, 6, 7), 1, 0),
    "InstanceNorm1d": (lambda: nn.InstanceNorm1d(3), (2, 3, 6), 1, 1),
    "InstanceNorm2d-affine": (lambda: nn.InstanceNorm2d(3, affine=True), (2, 3, 4, 5), 1, 1),
    "InstanceNorm2d-running-stats": (lambda: nn.InstanceNorm2d(3, affine=True, track_running_stats=True),
                                     (2, 3, 4, 5), 3, 2),
}


def record(name, make, shape, train_steps, eval_steps, rng, store):
    layer = make()
    params = dict(layer.named_parameters())
    for key, p in params.items():
        value = rng.normal(1.0 if key == "weight" else 0.0, 0.5, tuple(p.shape))
        p.data = torch.tensor(value)
        store[f"{name}/param/{key}"] = value
    steps = [("train", i) for i in range(train_steps)] + [("eval", i) for i in range(eval_steps)]
    for k, (mode, _) in enumerate(steps):
        layer.train(mode == "train")
        x = rng.standard_normal(shape) * 3 + 2
        dy = rng.standard_normal(shape)
        tx = torch.tensor(x, requires_grad=True)
        y = layer(tx)
        y.backward(torch.tensor(dy))
        prefix = f"{name}/step{k}/{mode}"
        store[f"{prefix}/x"], store[f"{prefix}/dy"] = x, dy
        store[f"{prefix}/y"], store[f"{prefix}/dx"] = y.detach().numpy(), tx.grad.numpy()
        for key, p in params.items():
            store[f"{prefix}/d{key}"] = p.grad.numpy().copy()
            p.grad = None
        if getattr(layer, "running_mean", None) is not None:
            store[f"{prefix}/running_mean"] = layer.running_mean.numpy().copy()
            store[f"{prefix}/running_var"] = layer.running_var.numpy().copy()


def record_weight_side(rng, store):
    """weight_norm and spectral_norm (parametrizations) on Linear and Conv2d weights, given g, v / u, v."""
    P = nn.utils.parametrizations
    for name, make, dim in [("weight_norm-linear-dim0", lambda: nn.Linear(5, 4), 0),
                            ("weight_norm-conv-dim0", lambda: nn.Conv2d(2, 3, 3), 0),
                            ("weight_norm-linear-whole", lambda: nn.Linear(5, 4), None)]:
        module = P.weight_norm(make(), dim=dim)
        g, v = module.parametrizations.weight.original0, module.parametrizations.weight.original1
        g.data = torch.tensor(rng.uniform(0.5, 2.0, tuple(g.shape)))
        v.data = torch.tensor(rng.standard_normal(tuple(v.shape)))
        w = module.weight
        dw = rng.standard_normal(tuple(w.shape))
        w.backward(torch.tensor(dw))
        store.update({f"{name}/g": g.detach().numpy().copy(), f"{name}/v": v.detach().numpy().copy(),
                      f"{name}/w": w.detach().numpy().copy(), f"{name}/dw": dw,
                      f"{name}/dg": g.grad.numpy().copy(), f"{name}/dv": v.grad.numpy().copy()})
    for name, make in [("spectral_norm-linear", lambda: nn.Linear(6, 4)),
                       ("spectral_norm-conv", lambda: nn.Conv2d(2, 3, 3))]:
        for mode in ("train", "eval"):
            module = P.spectral_norm(make())
            module.train(mode == "train")
            par = module.parametrizations.weight
            W = rng.standard_normal(tuple(par.original.shape))
            par.original.data = torch.tensor(W)
            u0 = rng.standard_normal(tuple(par[0]._u.shape))
            v0 = rng.standard_normal(tuple(par[0]._v.shape))
            par[0]._u.data = torch.tensor(u0 / np.linalg.norm(u0))
            par[0]._v.data = torch.tensor(v0 / np.linalg.norm(v0))
            prefix = f"{name}/{mode}"
            store[f"{prefix}/W"], store[f"{prefix}/u0"], store[f"{prefix}/v0"] = W, u0 / np.linalg.norm(u0), v0 / np.linalg.norm(v0)
            w_sn = module.weight  # one power iteration in training mode, none in eval mode
            dw = rng.standard_normal(tuple(w_sn.shape))
            w_sn.backward(torch.tensor(dw))
            store.update({f"{prefix}/w_sn": w_sn.detach().numpy().copy(), f"{prefix}/dw_sn": dw,
                          f"{prefix}/dW": par.original.grad.numpy().copy(),
                          f"{prefix}/u": par[0]._u.numpy().copy(), f"{prefix}/v": par[0]._v.numpy().copy()})


def record_layers(rng, store):
    """Linear and Conv2d (stride, padding): outputs and every gradient."""
    for name, make, shape in [("Linear", lambda: nn.Linear(5, 3), (4, 2, 5)),
                              ("Conv2d-k3-s1-p1", lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 2, 5, 5)),
                              ("Conv2d-k3-s2-p0", lambda: nn.Conv2d(2, 4, 3, stride=2), (2, 2, 7, 6)),
                              ("Conv2d-k23-s21-p10", lambda: nn.Conv2d(3, 2, (2, 3), stride=(2, 1), padding=(1, 0)),
                               (1, 3, 5, 4))]:
        layer = make()
        for key, p in layer.named_parameters():
            p.data = torch.tensor(rng.standard_normal(tuple(p.shape)))
            store[f"{name}/param/{key}"] = p.data.numpy().copy()
        x = rng.standard_normal(shape)
        tx = torch.tensor(x, requires_grad=True)
        y = layer(tx)
        dy = rng.standard_normal(tuple(y.shape))
        y.backward(torch.tensor(dy))
        store.update({f"{name}/x": x, f"{name}/y": y.detach().numpy(), f"{name}/dy": dy, f"{name}/dx": tx.grad.numpy()})
        for key, p in layer.named_parameters():
            store[f"{name}/d{key}"] = p.grad.numpy().copy()


def main(path: str) -> None:
    rng = np.random.default_rng(20261124)
    store: dict[str, np.ndarray] = {"torch_version": np.array(torch.__version__)}
    for name, (make, shape, train_steps, eval_steps) in CASES.items():
        record(name, make, shape, train_steps, eval_steps, rng, store)
    # separate generators, so adding cases here does not change the normalizer data above
    record_weight_side(np.random.default_rng(1), store)
    record_layers(np.random.default_rng(2), store)
    np.savez_compressed(path, **store)
    print(f"wrote {len(store)} arrays to {path} (torch {torch.__version__})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/pytorch_reference.npz")
