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


def main(path: str) -> None:
    rng = np.random.default_rng(20261124)
    store: dict[str, np.ndarray] = {"torch_version": np.array(torch.__version__)}
    for name, (make, shape, train_steps, eval_steps) in CASES.items():
        record(name, make, shape, train_steps, eval_steps, rng, store)
    np.savez_compressed(path, **store)
    print(f"wrote {len(store)} arrays for {len(CASES)} cases to {path} (torch {torch.__version__})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/pytorch_reference.npz")
