"""Training utilities: a seeded, reproducible mini-batch loop that returns its history.

::

    from npnorm import nn
    from npnorm.training import fit
    history = fit(model, nn.CrossEntropyLoss(), nn.SGD(model, lr=0.05, momentum=0.9),
                  X_train, y_train, epochs=5, batch_size=32, X_val=X_test, y_val=y_test)
    history.val_acc          # one number per epoch

Reproducible: the only randomness of the loop is the order of the mini-batches, drawn from
``seed``; the model's own randomness (initialization, dropout masks) comes from the generators it was
built with. The same model, data and seed give bit-identical histories.

The progress bar (``tqdm``) is optional: ``progress=False`` (or the environment variable
``NPNORM_PROGRESS=0``, useful in tests and book builds) turns it off, and the loop runs without
tqdm installed.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .base import Module

__all__ = ["History", "fit", "evaluate", "predict", "layer_statistics", "recompute_batchnorm_statistics"]


@dataclass
class History:
    """What :func:`fit` records. Per optimization step: ``step_loss``; per epoch: the rest.

    ``train_loss`` / ``train_acc`` are averages over the epoch's mini-batches, measured in training
    mode *while* the model was changing (PyTorch tutorials report the same). ``val_loss`` /
    ``val_acc`` are measured in eval mode at the end of each epoch (empty without validation data).
    ``stats`` holds :func:`layer_statistics` at the end of each epoch when ``track_stats=True``
    (``stats[0]`` is at initialization). ``diverged`` is True when the loss became NaN or infinite;
    training stopped there.
    """

    step_loss: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    stats: list[list[dict[str, Any]]] = field(default_factory=list)
    diverged: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def final_val_acc(self) -> float:
        return self.val_acc[-1] if self.val_acc else float("nan")


def _use_progress(progress: bool | None) -> bool:
    if progress is None:
        progress = True
    if os.environ.get("NPNORM_PROGRESS", "1") in ("0", "false", "False", "no"):
        return False
    return bool(progress)


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is pinned, but the loop does not need it
        return None
    return tqdm(total=total, desc=desc, leave=False)


def predict(model: Module, X: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The model's outputs on ``X`` in its current mode, computed in chunks (no gradients kept)."""
    outs = [model(X[i:i + batch_size]) for i in range(0, len(X), batch_size)]
    model._cache = None
    return np.concatenate(outs)


def evaluate(model: Module, loss_fn, X: np.ndarray, y: np.ndarray, batch_size: int = 512,
             mode: str = "eval") -> tuple[float, float]:
    """``(mean loss, accuracy)`` of ``model`` on ``(X, y)`` in ``mode`` (``"eval"`` or ``"train"``).

    In ``"train"`` mode a BatchNorm layer normalizes each chunk with the chunk's own statistics and
    would update its running statistics, so the model is evaluated on a copy. The model's mode is left
    as it was.
    """
    if mode not in ("eval", "train"):
        raise ValueError(f"evaluate: mode must be 'eval' or 'train', got {mode!r}")
    m = model if mode == "eval" else copy.deepcopy(model)
    was_training = model.training
    m.train(mode == "train")
    total_loss, correct = 0.0, 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for i in range(0, len(X), batch_size):
            xb, yb = X[i:i + batch_size], y[i:i + batch_size]
            logits = m(xb)
            total_loss += loss_fn(logits, yb) * len(yb)
            correct += int(np.sum(np.argmax(logits, axis=1) == yb))
    model.train(was_training)
    return total_loss / len(y), correct / len(y)


def layer_statistics(model: Module, loss_fn, X: np.ndarray, y: np.ndarray) -> list[dict[str, Any]]:
    """Per layer of a ``Sequential`` model, on one batch ``(X, y)``: the mean and standard deviation of
    the layer's output (``act_mean``, ``act_std``, over all its elements), its spread across the samples
    of the batch (``act_batch_std``: the standard deviation along the batch axis, averaged over the
    features - how much the layer's output still depends on the input), the standard deviation of the loss gradient with respect to that output, and
    for layers with a ``weight`` the norm of the weight and of its gradient.

    Runs on a deep copy in the model's current mode, so running statistics are not disturbed.
    """
    m = copy.deepcopy(model)
    layers = list(m.children()) or [m]
    acts = []
    h = X
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for layer in layers:
            h = layer(h)
            acts.append(np.asarray(h, dtype=np.float64))
        loss_fn(h, y)
        g = loss_fn.backward()
        grads = [None] * len(layers)
        for i in range(len(layers) - 1, -1, -1):
            grads[i] = np.asarray(g, dtype=np.float64)
            g = layers[i].backward(g)
    out = []
    for i, (layer, a, gr) in enumerate(zip(layers, acts, grads)):
        row = {"index": i, "layer": type(layer).__name__, "act_mean": float(a.mean()), "act_std": float(a.std()),
               "act_batch_std": float(a.std(axis=0).mean()), "grad_std": float(gr.std())}
        if "weight" in layer.params and "weight" in layer.grads:
            row["weight_norm"] = float(np.linalg.norm(layer.params["weight"]))
            row["weight_grad_norm"] = float(np.linalg.norm(layer.grads["weight"]))
        out.append(row)
    return out


def fit(model: Module, loss_fn, optimizer, X: np.ndarray, y: np.ndarray, *, epochs: int = 1,
        batch_size: int = 32, seed: int = 0, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
        progress: bool | None = True, track_stats: bool = False, stats_batch: int = 256,
        drop_last: bool = True, desc: str = "training") -> History:
    """Train ``model`` with mini-batch gradient descent; return the :class:`History`.

    Each epoch visits the training set once in an order drawn from ``seed``; ``drop_last`` skips a
    final incomplete batch (so a BatchNorm model never sees a batch of one). A NaN or infinite loss
    stops training (``history.diverged``). With ``track_stats``, :func:`layer_statistics` is recorded
    on the first ``stats_batch`` training samples at initialization and after every epoch.
    """
    if len(X) != len(y):
        raise ValueError(f"fit: X has {len(X)} samples but y has {len(y)}")
    if batch_size < 1 or batch_size > len(X):
        raise ValueError(f"fit: batch_size must be in 1..{len(X)} (the number of samples), got {batch_size}")
    rng = np.random.default_rng(seed)
    hist = History()
    n_batches = len(X) // batch_size if drop_last else -(-len(X) // batch_size)
    bar = _progress_bar(epochs * n_batches, desc, _use_progress(progress))
    start = time.perf_counter()
    if track_stats:
        hist.stats.append(layer_statistics(model, loss_fn, X[:stats_batch], y[:stats_batch]))
    model.train()
    try:
        for _ in range(epochs):
            order = rng.permutation(len(X))
            losses, correct, seen = [], 0, 0
            for b in range(n_batches):
                idx = order[b * batch_size:(b + 1) * batch_size]
                xb, yb = X[idx], y[idx]
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    logits = model(xb)
                    loss = loss_fn(logits, yb)
                    if not np.isfinite(loss):
                        hist.diverged = True
                        break
                    optimizer.zero_grad()
                    model.backward(loss_fn.backward())
                    optimizer.step()
                hist.step_loss.append(loss)
                losses.append(loss)
                correct += int(np.sum(np.argmax(logits, axis=1) == yb))
                seen += len(yb)
                if bar is not None:
                    bar.update(1)
                    if b % 10 == 0:
                        bar.set_postfix(loss=f"{loss:.3f}")
            if hist.diverged:
                break
            hist.train_loss.append(float(np.mean(losses)))
            hist.train_acc.append(correct / seen)
            if X_val is not None and y_val is not None:
                vl, va = evaluate(model, loss_fn, X_val, y_val)
                hist.val_loss.append(vl)
                hist.val_acc.append(va)
                if bar is not None:
                    bar.set_postfix(loss=f"{hist.train_loss[-1]:.3f}", val_acc=f"{va:.3f}")
            if track_stats:
                hist.stats.append(layer_statistics(model, loss_fn, X[:stats_batch], y[:stats_batch]))
            model.train()
    finally:
        if bar is not None:
            bar.close()
    hist.seconds = time.perf_counter() - start
    return hist


def recompute_batchnorm_statistics(model: Module, X: np.ndarray,
                                   batch_size: int = 256) -> Module:
    """Replace every BatchNorm layer's running statistics by the exact
    statistics of the trained network on ``X`` ("precise BN"): reset them,
    switch to a cumulative average (``momentum=None``), run the data through
    the model in training mode (no gradient step), restore momentum and
    mode.

    With ``momentum=None`` the running mean after all batches is the average
    of the batch means, which equals the mean over ``X`` when the batches
    have equal size; the running variance is the average of the batches'
    unbiased variances. Returns ``model`` (modified in place).
    """
    from .statistics.batchnorm import BatchNorm1d, BatchNorm2d
    bns = [m for m in model.modules()
           if isinstance(m, (BatchNorm1d, BatchNorm2d))
           and m.track_running_stats]
    saved = [(m, m.momentum) for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    n_full = (len(X) // batch_size) * batch_size or len(X)
    for i in range(0, n_full, batch_size):
        model(X[i:i + batch_size])
    model._cache = None
    for m, momentum in saved:
        m.momentum = momentum
    model.train(was_training)
    return model
