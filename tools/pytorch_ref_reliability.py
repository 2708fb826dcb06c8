"""Record what PyTorch 2.13 does on empty batches and one-element normalization sets, plus golden
data for the layers and arguments added with issue 11 (BatchNorm3d, InstanceNorm3d, ``bias=False``),
into tests/data/pytorch_reliability.npz (read by tests/test_reliability.py and
tests/test_pytorch_reference.py without PyTorch).

    /work/torchenv/bin/python tools/pytorch_ref_reliability.py tests/data/pytorch_reliability.npz

Probes (``probe/<name>/...``): the constructor as a string (``nn.BatchNorm1d(3)``, evaluated by the
test with npnorm's classes), the mode, random parameters and running statistics, an input, and
either PyTorch's error (``error``: message, ``error_type``) or its output, input and parameter
gradients and buffers after the step. Golden cases (``<name>/...``) have the layout of
tools/pytorch_reference.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pytorch_reference import record  # noqa: E402

torch.set_default_dtype(torch.float64)
nn = torch.nn

# name: (constructor, input shape, mode)
PROBES = {
    # empty batches
    "BatchNorm1d-N0-train": ("nn.BatchNorm1d(3)", (0, 3), "train"),
    "BatchNorm1d-N0-eval": ("nn.BatchNorm1d(3)", (0, 3), "eval"),
    "BatchNorm1d-NCL-N0-train": ("nn.BatchNorm1d(3)", (0, 3, 4), "train"),
    "BatchNorm1d-L0-train": ("nn.BatchNorm1d(3)", (2, 3, 0), "train"),
    "BatchNorm1d-momentum-None-N0": ("nn.BatchNorm1d(3, momentum=None)", (0, 3), "train"),
    "BatchNorm2d-N0-train": ("nn.BatchNorm2d(3)", (0, 3, 2, 2), "train"),
    "BatchNorm2d-no-track-N0-train": ("nn.BatchNorm2d(3, track_running_stats=False)", (0, 3, 2, 2), "train"),
    "BatchNorm2d-no-track-N0-eval": ("nn.BatchNorm2d(3, track_running_stats=False)", (0, 3, 2, 2), "eval"),
    "BatchNorm3d-N0-train": ("nn.BatchNorm3d(2)", (0, 2, 2, 2, 2), "train"),
    "LayerNorm-N0": ("nn.LayerNorm(4)", (0, 4), "train"),
    "RMSNorm-N0": ("nn.RMSNorm(4)", (0, 3, 4), "train"),
    "GroupNorm-N0": ("nn.GroupNorm(2, 4)", (0, 4, 3, 3), "train"),
    "GroupNorm-HW0": ("nn.GroupNorm(1, 2)", (2, 2, 0), "train"),
    "InstanceNorm1d-N0": ("nn.InstanceNorm1d(3)", (0, 3, 4), "train"),
    "InstanceNorm1d-affine-N0": ("nn.InstanceNorm1d(3, affine=True)", (0, 3, 4), "train"),
    "InstanceNorm2d-running-N0": ("nn.InstanceNorm2d(2, affine=True, track_running_stats=True)", (0, 2, 3, 3), "train"),
    "InstanceNorm3d-N0": ("nn.InstanceNorm3d(2)", (0, 2, 2, 2, 2), "train"),
    # one-element normalization sets
    "BatchNorm1d-one-value-train": ("nn.BatchNorm1d(3)", (1, 3), "train"),
    "BatchNorm1d-one-value-eval": ("nn.BatchNorm1d(3)", (1, 3), "eval"),
    "BatchNorm1d-no-track-one-value-eval": ("nn.BatchNorm1d(3, track_running_stats=False)", (1, 3), "eval"),
    "BatchNorm2d-one-value-train": ("nn.BatchNorm2d(3)", (1, 3, 1, 1), "train"),
    "BatchNorm2d-N1-train": ("nn.BatchNorm2d(2)", (1, 2, 2, 1), "train"),
    "BatchNorm3d-one-value-train": ("nn.BatchNorm3d(2)", (1, 2, 1, 1, 1), "train"),
    "LayerNorm-one-element": ("nn.LayerNorm(1)", (3, 1), "train"),
    "RMSNorm-one-element": ("nn.RMSNorm(1)", (3, 1), "train"),
    "GroupNorm-one-per-group-N2": ("nn.GroupNorm(2, 2)", (2, 2), "train"),
    "GroupNorm-one-per-group-N1": ("nn.GroupNorm(2, 2)", (1, 2), "train"),
    "GroupNorm-one-per-group-N1-L1": ("nn.GroupNorm(3, 3)", (1, 3, 1), "eval"),
    "GroupNorm-two-per-group-N1": ("nn.GroupNorm(1, 2)", (1, 2), "train"),
    "InstanceNorm1d-L1-train": ("nn.InstanceNorm1d(2)", (3, 2, 1), "train"),
    "InstanceNorm1d-L1-eval": ("nn.InstanceNorm1d(2)", (3, 2, 1), "eval"),
    "InstanceNorm1d-L1-running-eval": ("nn.InstanceNorm1d(2, affine=True, track_running_stats=True)", (3, 2, 1), "eval"),
    "InstanceNorm1d-unbatched-L1": ("nn.InstanceNorm1d(2)", (2, 1), "train"),
    "InstanceNorm2d-1x1": ("nn.InstanceNorm2d(2, affine=True)", (2, 2, 1, 1), "train"),
    "InstanceNorm3d-1x1x1": ("nn.InstanceNorm3d(2)", (2, 2, 1, 1, 1), "train"),
}

# golden data for the new layers and arguments: (torch constructor, input shape, train steps, eval steps)
GOLDEN = {
    "BatchNorm3d": (lambda: nn.BatchNorm3d(3), (3, 3, 2, 3, 4), 3, 2),
    "BatchNorm3d-momentum-None-no-bias": (lambda: nn.BatchNorm3d(2, momentum=None, bias=False), (2, 2, 3, 2, 2), 3, 1),
    "BatchNorm3d-no-running-stats": (lambda: nn.BatchNorm3d(2, track_running_stats=False), (2, 2, 2, 2, 3), 1, 1),
    "InstanceNorm3d": (lambda: nn.InstanceNorm3d(3), (2, 3, 2, 3, 4), 1, 1),
    "InstanceNorm3d-affine-running-stats": (lambda: nn.InstanceNorm3d(2, affine=True, track_running_stats=True),
                                            (2, 2, 3, 2, 2), 3, 2),
    "BatchNorm1d-no-bias": (lambda: nn.BatchNorm1d(3, bias=False), (5, 3, 4), 2, 1),
    "GroupNorm-no-bias": (lambda: nn.GroupNorm(2, 4, bias=False), (3, 4, 5), 1, 1),
    "InstanceNorm2d-affine-no-bias": (lambda: nn.InstanceNorm2d(3, affine=True, bias=False), (2, 3, 4, 4), 1, 1),
}


def probe(name, ctor, shape, mode, rng, store):
    layer = eval(ctor, {"nn": nn})  # noqa: S307 - our own strings
    p = f"probe/{name}/"
    store[p + "ctor"], store[p + "mode"] = np.array(ctor), np.array(mode)
    for key, par in layer.named_parameters():
        value = rng.normal(1.0 if key == "weight" else 0.0, 0.5, tuple(par.shape))
        par.data = torch.tensor(value)
        store[p + f"param/{key}"] = value
    if getattr(layer, "running_mean", None) is not None:
        rm, rv = rng.normal(0, 1, layer.running_mean.shape), rng.uniform(0.5, 2.0, layer.running_var.shape)
        layer.running_mean.copy_(torch.tensor(rm))
        layer.running_var.copy_(torch.tensor(rv))
        store[p + "running_mean0"], store[p + "running_var0"] = rm, rv
    layer.train(mode == "train")
    x = rng.standard_normal(shape) * 3 + 2
    store[p + "x"] = x
    tx = torch.tensor(x, requires_grad=True)
    try:
        y = layer(tx)
    except Exception as err:  # noqa: BLE001 - recorded, not handled
        store[p + "error"], store[p + "error_type"] = np.array(str(err)), np.array(type(err).__name__)
        return
    dy = rng.standard_normal(tuple(y.shape))
    y.backward(torch.tensor(dy))
    store[p + "y"], store[p + "dy"], store[p + "dx"] = y.detach().numpy(), dy, tx.grad.numpy()
    for key, par in layer.named_parameters():
        store[p + f"d{key}"] = par.grad.numpy().copy()
    if getattr(layer, "running_mean", None) is not None:
        store[p + "running_mean"] = layer.running_mean.numpy().copy()
        store[p + "running_var"] = layer.running_var.numpy().copy()
        store[p + "num_batches_tracked"] = np.array(int(layer.num_batches_tracked))


def main(path: str) -> None:
    store: dict[str, np.ndarray] = {"torch_version": np.array(torch.__version__)}
    rng = np.random.default_rng(11)
    for name, (ctor, shape, mode) in PROBES.items():
        probe(name, ctor, shape, mode, rng, store)
    rng = np.random.default_rng(12)
    for name, (make, shape, train_steps, eval_steps) in GOLDEN.items():
        record(name, make, shape, train_steps, eval_steps, rng, store)
    np.savez_compressed(path, **store)
    errors = {k.split("/")[1]: str(store[k]) for k in store if k.endswith("/error_type")}
    print(f"wrote {len(store)} arrays to {path} (torch {torch.__version__}); PyTorch raised in: {errors}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/pytorch_reliability.npz")
