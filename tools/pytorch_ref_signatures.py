"""Record the constructor signatures of PyTorch's layers (the twins of npnorm's; diffusers' for
AdaGroupNorm and TimestepEmbedding) into
tests/data/pytorch_signatures.json, so tests/test_reliability.py can check, without PyTorch, that
every npnorm layer accepts its twin's full signature: names, order, kinds and defaults.

Run it from the separate environment that has PyTorch (never a dependency of npnorm):

    /work/torchenv/bin/python tools/pytorch_ref_signatures.py tests/data/pytorch_signatures.json

Defaults are stored as ``repr`` strings (``"1e-05"``, ``"None"``, ``"'zeros'"``), required parameters
as ``"<required>"``.
"""

from __future__ import annotations

import inspect
import json
import sys

import torch

NAMES = [
    "torch.nn.BatchNorm1d", "torch.nn.BatchNorm2d", "torch.nn.BatchNorm3d", "torch.nn.SyncBatchNorm",
    "torch.nn.LayerNorm", "torch.nn.RMSNorm", "torch.nn.GroupNorm",
    "torch.nn.InstanceNorm1d", "torch.nn.InstanceNorm2d", "torch.nn.InstanceNorm3d",
    "torch.nn.LocalResponseNorm", "torch.nn.CrossMapLRN2d",
    "torch.nn.Linear", "torch.nn.Conv1d", "torch.nn.Conv2d", "torch.nn.Conv3d", "torch.nn.ConvTranspose2d",
    "torch.nn.MaxPool2d", "torch.nn.AvgPool2d", "torch.nn.AdaptiveAvgPool2d",
    "torch.nn.Flatten", "torch.nn.Identity", "torch.nn.ReLU", "torch.nn.LeakyReLU", "torch.nn.Tanh",
    "torch.nn.Sigmoid", "torch.nn.SiLU", "torch.nn.GELU", "torch.nn.Softmax", "torch.nn.Dropout",
    "torch.nn.Sequential", "torch.nn.Embedding", "torch.nn.MultiheadAttention",
    "torch.nn.utils.parametrizations.weight_norm", "torch.nn.utils.parametrizations.spectral_norm",
    "torch.nn.utils.parametrize.register_parametrization",
    # twins from diffusers (the reference implementation of the diffusion-model layers), recorded from
    # the same environment; the diffusers version is stored next to torch's
    "diffusers.models.normalization.AdaGroupNorm", "diffusers.models.embeddings.TimestepEmbedding",
]


def resolve(name: str):
    if name.startswith("diffusers."):
        import importlib
        module, _, attr = name.rpartition(".")
        return getattr(importlib.import_module(module), attr)
    obj = torch
    for part in name.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


def parameters(obj) -> list[dict[str, str]]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    out = []
    for p in inspect.signature(target).parameters.values():
        if p.name == "self":
            continue
        out.append({"name": p.name, "kind": p.kind.name,
                    "default": "<required>" if p.default is inspect.Parameter.empty else repr(p.default)})
    return out


def main(path: str) -> None:
    signatures = {}
    for name in NAMES:
        try:
            signatures[name] = parameters(resolve(name))
        except (AttributeError, ImportError):
            print(f"skipped {name}: not in torch {torch.__version__} / the installed diffusers")
    with open(path, "w") as f:
        try:
            import diffusers
            versions = {"diffusers_version": diffusers.__version__}
        except ImportError:
            versions = {}
        json.dump({"torch_version": torch.__version__, **versions, "signatures": signatures}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(signatures)} signatures to {path} (torch {torch.__version__})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/pytorch_signatures.json")
