"""The experiment of chapter 13 ("The rest of the catalog"): chapter 8's small-batch sweep extended to
the normalizers that were designed for small batches.

* :func:`small_batch_catalog` - BatchNorm, batch renormalization, ghost BatchNorm, GroupNorm, FRN + TLU,
  EvoNorm-B0 and EvoNorm-S0 in the same small CNN, at batch sizes from 2 to 64, over several seeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import nn
from ..models import small_cnn
from ..training import fit
from ._framework import experiment, progress
from .why_normalization import LR, shapes_data

__all__ = ["small_batch_catalog", "CATALOG_SWEEP_NORMS"]

CHAPTER = "The rest of the catalog"

#: The normalizers the sweep compares (short names of :func:`npnorm.models.norm_layer`).
CATALOG_SWEEP_NORMS = ("bn", "brn", "ghost", "gn", "frn", "evob0", "evos0")


@experiment("small-batch-catalog", "BN, batch renorm, ghost BN, GN, FRN and "
            "EvoNorm from batch size 2 to 64, several seeds", CHAPTER)
def small_batch_catalog(
    quick: bool = True, seed: int = 0,
    norms: tuple[str, ...] = CATALOG_SWEEP_NORMS,
    batch_sizes: tuple[int, ...] | None = None, seeds: int | None = None,
) -> dict[str, Any]:
    """Test accuracy (eval mode) of :func:`~npnorm.models.small_cnn` on the
    shapes set with each normalizer, for each batch size and seed.

    As chapter 8's sweep: the same number of epochs at every batch size and
    SGD (momentum 0.9) with the learning rate scaled linearly with the batch
    (0.01 at 32), so every run sees the same samples. Batch
    renormalization ramps ``rmax``/``dmax`` over the run
    (:func:`npnorm.models.norm_layer`). Seeds ``seed, seed + 1, ...``
    change the data split, the initialization and the batch order.

    Returns ``{"batch_sizes", "seeds",
    "acc": {norm: [[acc per seed] per batch size]}, "mean", "min",
    "max": {norm: [per batch size]}, "epochs", "n_train"}``.
    """
    if batch_sizes is None:
        batch_sizes = (2, 8, 64) if quick else (2, 4, 8, 16, 32, 64)
    if seeds is None:
        seeds = 2 if quick else 3
    n, epochs = (1200, 3) if quick else (2000, 3)
    acc: dict[str, list[list[float]]] = {m: [[] for _ in batch_sizes]
                                         for m in norms}
    runs = [(s, m, i) for s in range(seed, seed + seeds) for m in norms
            for i in range(len(batch_sizes))]
    data_cache: dict[int, Any] = {}
    for s, norm, i in progress(runs, "runs (seed, norm, batch)"):
        if s not in data_cache:
            data_cache[s] = shapes_data(n, s)
        xtr, ytr, xte, yte = data_cache[s]
        b = batch_sizes[i]
        steps = epochs * (len(xtr) // b)
        model = small_cnn(norm, seed=s, total_steps=steps)
        opt = nn.SGD(model, lr=LR * b / 32, momentum=0.9)
        hist = fit(model, nn.CrossEntropyLoss(), opt, xtr, ytr,
                   epochs=epochs, batch_size=b, seed=s,
                   X_val=xte, y_val=yte, progress=False)
        acc[norm][i].append(float(hist.final_val_acc))
    stats = {k: {m: [float(f(a)) for a in acc[m]] for m in norms}
             for k, f in (("mean", np.mean), ("min", np.min),
                          ("max", np.max))}
    return {"batch_sizes": list(batch_sizes),
            "seeds": list(range(seed, seed + seeds)), "acc": acc, **stats,
            "epochs": epochs, "n_train": len(data_cache[seed][1])}
