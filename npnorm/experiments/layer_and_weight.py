"""Experiments of the chapters "Layer normalization and RMSNorm" and "Weight normalization and
spectral normalization", as functions that return data.

* :func:`ln_vs_bn_batch_size` - a deep MLP with LayerNorm or BatchNorm trained at small and large
  batch sizes, several seeds: what per-example statistics buy.
* :func:`weight_norm_training` - a ReLU MLP with and without weight normalization, from a good and
  from a badly scaled initialization, several seeds; and the norm of one ``v`` during training with
  and without weight decay.

Both are quick (a few seconds) in the setting the book executes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import nn
from ..data import make_spirals, train_test_split
from ..models import deep_mlp
from ..training import fit
from ..weights.parametrize import weight_norm
from ._framework import experiment, progress

__all__ = ["ln_vs_bn_batch_size", "weight_norm_training"]


def _spirals(n: int, seed: int):
    X, y = make_spirals(n, n_classes=3, noise=0.15, seed=seed)
    return train_test_split(X, y, 0.25, seed=seed)


@experiment("ln-vs-bn-batch-size", "a deep MLP with LayerNorm or BatchNorm at "
            "batch sizes from 2, several seeds",
            "Layer normalization and RMSNorm")
def ln_vs_bn_batch_size(quick: bool = True,
                        batch_sizes: tuple[int, ...] | None = None,
                        norms=("ln", "bn"),
                        seeds: tuple[int, ...] | None = None,
                        seed: int = 0) -> dict[str, Any]:
    """Test accuracy (eval mode) of :func:`deep_mlp` (4 hidden layers of 32
    in the quick setting) on three spirals with each normalizer and batch
    size, once per seed. SGD with momentum 0.9 and a learning rate
    proportional to the batch size (0.03 at 32), the same number of epochs
    for every batch size. ``seeds`` defaults to three (five in the full
    setting) starting at ``seed``.

    Returns ``{"batch_sizes", "seeds",
    "acc": {norm: [[per seed] per batch size]}}``.
    """
    if batch_sizes is None:
        batch_sizes = (2, 8, 32) if quick else (2, 4, 8, 16, 32)
    if seeds is None:
        seeds = tuple(seed + k for k in range(3 if quick else 5))
    n, epochs, depth, width = ((480, 4, 4, 32) if quick
                               else (2000, 12, 8, 64))
    Xtr, ytr, Xte, yte = _spirals(n, seed)
    acc: dict[str, list[list[float]]] = {m: [[] for _ in batch_sizes]
                                         for m in norms}
    runs = [(m, i, s) for m in norms for i in range(len(batch_sizes))
            for s in seeds]
    for norm, i, s in progress(runs, "runs (norm, batch, seed)"):
        b = batch_sizes[i]
        model = deep_mlp(norm, depth=depth, width=width, seed=s)
        opt = nn.SGD(model, lr=0.03 * b / 32, momentum=0.9)
        hist = fit(model, nn.CrossEntropyLoss(), opt, Xtr, ytr,
                   epochs=epochs, batch_size=b, seed=s,
                   X_val=Xte, y_val=yte, progress=False)
        acc[norm][i].append(float("nan") if hist.diverged
                            else float(hist.final_val_acc))
    return {"batch_sizes": list(batch_sizes), "seeds": list(seeds),
            "acc": acc, "epochs": epochs, "depth": depth, "width": width}


def _mlp(seed: int, scale: float, wn: bool, width: int) -> nn.Sequential:
    r = np.random.default_rng(seed)
    lins = [nn.Linear(2, width, rng=r), nn.Linear(width, width, rng=r), nn.Linear(width, 3, rng=r)]
    for lin in lins[:2]:
        nn.init.kaiming_normal_(lin.params["weight"], nonlinearity="relu", rng=r)
    for lin in lins:
        lin.params["weight"] *= scale
    if wn:
        lins = [weight_norm(lin) for lin in lins]
    return nn.Sequential(lins[0], nn.ReLU(), lins[1], nn.ReLU(), lins[2])


@experiment("weight-norm-training", "an MLP with and without weight "
            "normalization from a good and a bad initial scale; the norm of "
            "v with and without weight decay",
            "Weight normalization and spectral normalization")
def weight_norm_training(
    quick: bool = True, scales: tuple[float, ...] = (1.0, 4.0),
    lrs: tuple[float, ...] = (0.05, 0.2),
    seeds: tuple[int, ...] | None = None,
    weight_decays: tuple[float, ...] = (0.0, 1e-2), seed: int = 0,
) -> dict[str, Any]:
    """Train a three-layer ReLU MLP on three spirals with plain SGD (no
    momentum), once with ordinary weights and once with every weight
    weight-normalized (``parametrize.weight_norm``, which starts from the
    same weights, so both compute the same function at step 0), from
    Kaiming-scaled weights multiplied by each of ``scales``, at each
    learning rate, once per seed.

    Then, for the weight-normalized network at scale 1, the first learning
    rate and the first seed, the mean row norm of the hidden layer's ``v``
    after every step, for each weight decay.

    Returns ``{"scales", "lrs", "seeds",
    "step_loss": {"plain"|"wn": {lr: {scale: [[per step] per seed]}}},
    "final_loss": {...: {lr: {scale: [per seed]}}},
    "v_norm": {weight_decay: [per step]}}``.
    """
    if seeds is None:
        seeds = tuple(seed + k for k in range(3 if quick else 5))
    n, epochs, width = (600, 8, 32) if quick else (2000, 30, 64)
    Xtr, ytr, _, _ = _spirals(n, seed)
    out: dict[str, Any] = {"scales": list(scales), "lrs": list(lrs),
                           "seeds": list(seeds), "epochs": epochs,
                           "step_loss": {"plain": {}, "wn": {}},
                           "final_loss": {"plain": {}, "wn": {}},
                           "v_norm": {}}
    runs = [(k, lr, sc) for k in ("plain", "wn") for lr in lrs
            for sc in scales]
    for kind, lr, scale in progress(runs, "runs (kind, lr, scale)"):
        curves, finals = [], []
        for s in seeds:
            model = _mlp(s, scale, kind == "wn", width)
            hist = fit(model, nn.CrossEntropyLoss(), nn.SGD(model, lr=lr),
                       Xtr, ytr, epochs=epochs, batch_size=32, seed=s,
                       progress=False)
            curves.append([float(v) for v in hist.step_loss])
            finals.append(float("nan") if hist.diverged
                          else float(hist.train_loss[-1]))
        out["step_loss"][kind].setdefault(lr, {})[scale] = curves
        out["final_loss"][kind].setdefault(lr, {})[scale] = finals
    for wd in weight_decays:
        model = _mlp(seeds[0], 1.0, True, width)
        opt = nn.SGD(model, lr=lrs[0], weight_decay=wd)
        loss_fn = nn.CrossEntropyLoss()
        rng = np.random.default_rng(seeds[0])
        norms = []
        for _ in range(epochs):
            order = rng.permutation(len(Xtr))
            for i in range(0, len(Xtr), 32):
                idx = order[i:i + 32]
                loss_fn(model(Xtr[idx]), ytr[idx])
                opt.zero_grad()
                model.backward(loss_fn.backward())
                opt.step()
                v = model.params["2.parametrizations.weight.original1"]
                norms.append(float(np.linalg.norm(v, axis=1).mean()))
        out["v_norm"][wd] = norms
    return out
