"""The experiments of the chapter "Normalization in transformers", as functions that return data.

Every experiment trains or probes the NumPy transformer of :mod:`npnorm.models.transformer` on data
that ships with the package (:mod:`npnorm.data.sequences`): the sequence-reversal task or the
character corpus. ``quick=True`` is the setting the book executes (:data:`QUICK_STEPS`: few steps,
but enough for every effect the chapter states to show); ``quick=False`` the longer one (more
depths, seeds and steps). Every run is seeded. BLAS runs on one thread inside these functions (on these small matrices a second
thread made a training step about 7x *slower* on the 2-core machine they were written on).

* :func:`grad_norms_at_init` - per-layer gradient norms at initialization, post-LN vs pre-LN, by depth.
* :func:`warmup_post_pre` - post-LN vs pre-LN at a large learning rate, with and without warm-up.
* :func:`qk_norm_high_lr` - QK-norm vs none at a high learning rate: largest logit, entropy, spikes.
* :func:`norm_compare` - LayerNorm vs RMSNorm vs ScaleNorm vs DyT in the pre-LN model, and time per step.
* :func:`ngpt_vs_pre` - nGPT vs the pre-LN baseline: steps to a target loss.
* :func:`clip_rescue` - clipping the global gradient norm (``clip_grad_norm_``) on a run that needs it.
* :func:`gradnorm_toy` - GradNorm's task weights on a two-task regression.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from .. import nn
from ..data.sequences import CharVocab, char_lm_batch, load_corpus, reversal_batch
from ..models.transformer import NGPT, TransformerLM, lm_step
from ._framework import experiment, one_blas_thread, progress

__all__ = ["grad_norms_at_init", "warmup_post_pre", "qk_norm_high_lr", "norm_compare", "ngpt_vs_pre",
           "clip_rescue", "gradnorm_toy", "train_lm", "one_blas_thread", "REVERSAL"]

CHAPTER = "Normalization in transformers"

#: Training steps of the quick settings (the ones the book executes). norm-compare and ngpt-vs-pre
#: take the same number so that their shared pre-LN runs are trained once (:func:`_train`).
QUICK_STEPS = {"warmup-post-pre": 250, "qk-norm-high-lr": 100, "norm-compare": 200, "ngpt-vs-pre": 200}

#: The reversal task: symbols 0..9 (+ the separator), n = 6 symbols to reverse.
REVERSAL = {"vocab": 10, "n": 6}


# -- tasks ----------------------------------------------------------------------------------------
def _reversal_task(batch: int):
    V, n = REVERSAL["vocab"], REVERSAL["n"]
    return {"vocab_size": V + 1, "max_len": 2 * n, "sample": lambda rng: reversal_batch(batch, n, V, rng),
            "eval": reversal_batch(512, n, V, np.random.default_rng(12345)), "metric": "accuracy"}


def _char_task(batch: int, length: int = 32):
    text = load_corpus()
    vocab = CharVocab(text)
    data = vocab.encode(text)
    split = int(0.9 * len(data))
    train, val = data[:split], data[split:]
    return {"vocab_size": len(vocab), "max_len": length,
            "sample": lambda rng: char_lm_batch(train, batch, length, rng),
            "eval": char_lm_batch(val, 64, length, np.random.default_rng(12345)), "metric": "loss"}


def _evaluate(model, task) -> float:
    ids, tg, mask = task["eval"]
    if task["metric"] == "accuracy":
        return float((model(ids).argmax(-1) == tg)[mask].mean())
    return lm_step(model, ids, tg, mask, backward=False)


def _build(kind: str, task, d_model: int, n_layers: int, seed: int, **kw):
    if kind == "ngpt":
        return NGPT(task["vocab_size"], d_model, n_layers, 4, task["max_len"], rng=seed)
    return TransformerLM(task["vocab_size"], d_model, n_layers, 4, task["max_len"], rng=seed, **kw)


def train_lm(model, task, steps: int, lr: float, warmup: int = 0, seed: int = 0, clip: float | None = None,
             record_attention: bool = False) -> dict[str, Any]:
    """Adam (betas 0.9, 0.98; eps 1e-9, the original transformer's) for ``steps`` steps, with a
    linear warm-up over ``warmup`` steps (0: none) and optional clipping of the global gradient norm.

    Returns per-step ``loss`` and ``grad_norm`` (before clipping), ``max_logit`` and ``entropy``
    (largest attention logit and mean attention entropy over the layers, if ``record_attention``),
    the final ``metric`` on the fixed evaluation batch, and ``seconds`` per step. A run whose loss
    becomes non-finite stops there (``diverged=True``).
    """
    rng = np.random.default_rng(seed + 1000)
    opt = nn.Adam(model, lr=lr, betas=(0.9, 0.98), eps=1e-9)
    out: dict[str, Any] = {"loss": [], "grad_norm": [], "max_logit": [], "entropy": [], "diverged": False}
    ngpt = isinstance(model, NGPT)
    t0 = time.perf_counter()
    with np.errstate(all="ignore"):
        for step in range(steps):
            opt.lr = lr * min(1.0, (step + 1) / warmup) if warmup else lr
            ids, tg, mask = task["sample"](rng)
            loss = lm_step(model, ids, tg, mask)
            if not np.isfinite(loss):
                out["diverged"] = True
                break
            out["loss"].append(loss)
            out["grad_norm"].append(nn.clip_grad_norm_(model, clip) if clip else nn.grad_norm(model))
            if record_attention:
                attn = model.attention_layers()
                out["max_logit"].append(max(a.last_max_logit for a in attn))
                out["entropy"].append(float(np.mean([a.last_entropy for a in attn])))
            opt.step()
            opt.zero_grad()
            if ngpt:
                model.normalize_matrices()
    out["seconds_per_step"] = (time.perf_counter() - t0) / max(1, len(out["loss"]))
    out["metric"] = float("nan") if out["diverged"] else _evaluate(model, task)
    return out


#: Finished runs of this process by configuration (:func:`_train`): a seeded run is a pure function
#: of its configuration, so a run two experiments share (norm-compare's LayerNorm model is
#: ngpt-vs-pre's baseline) is trained once. Bounded: the oldest entries are dropped.
_RUNS: dict[tuple, dict[str, Any]] = {}
_RUNS_MAX = 64


def _train(kind: str, task_key: tuple, task, d_model: int, n_layers: int, seed: int, steps: int, lr: float,
           warmup: int = 0, record_attention: bool = False, **kw) -> dict[str, Any]:
    """:func:`train_lm` of ``_build(kind, task, d_model, n_layers, seed, **kw)``, or a copy of the
    result of the identical run made earlier in this process (``task_key`` names ``task``; its
    ``seconds_per_step`` is that run's)."""
    key = (kind, task_key, d_model, n_layers, seed, steps, lr, warmup, record_attention, tuple(sorted(kw.items())))
    if key not in _RUNS:
        model = _build(kind, task, d_model, n_layers, seed, **kw)
        _RUNS[key] = train_lm(model, task, steps, lr, warmup, seed, record_attention=record_attention)
        while len(_RUNS) > _RUNS_MAX:
            del _RUNS[next(iter(_RUNS))]
    return copy.deepcopy(_RUNS[key])


def _smooth(values, k: int = 10) -> list[float]:
    v = np.asarray(values, dtype=np.float64)
    if len(v) < k:
        return v.tolist()
    return (np.convolve(v, np.ones(k) / k, mode="valid")).tolist()


# -- 1. gradient norms at initialization ----------------------------------------------------------
@experiment("grad-norms-at-init", "per-layer gradient norms at initialization: post-LN vs pre-LN across "
            "depths (Xiong et al. 2020)", CHAPTER)
def grad_norms_at_init(quick: bool = True, seed: int = 0, depths: tuple[int, ...] | None = None,
                       d_model: int = 32, emb_stds: tuple[float, ...] = (1.0, 0.1)) -> dict[str, Any]:
    """One backward pass at initialization on a reversal batch (64 sequences) for post-LN and pre-LN
    models of each depth, several seeds, and two scales of the embedding tables (``emb_std``: 1 is
    ``nn.Embedding``'s N(0, 1); 0.1 makes the residual stream start small, closer to the regime of
    Xiong et al.'s analysis, where every block adds a comparable amount of variance). Per layer, the
    Frobenius norm of the gradient of the feed-forward output weight :math:`W^{2,l}`
    (``mlp.linear2.weight``), the quantity Xiong et al. bound.

    Returns ``{"depths", "seeds", "emb_stds", "norms": {(emb_std, placement, depth): [[norm per layer]
    per seed]}}``.
    """
    depths = depths or ((2, 8, 24) if quick else (2, 4, 8, 16, 32))
    seeds = list(range(seed, seed + (3 if quick else 5)))
    task = _reversal_task(64)
    norms: dict[tuple, list] = {}
    configs = [(e, p, L) for e in emb_stds for p in ("post", "pre") for L in depths]
    with one_blas_thread():
        for e, placement, L in progress(configs, "models (emb_std, placement, depth)"):
            per_seed = []
            for s in seeds:
                model = _build(placement, task, d_model, L, s, placement=placement, emb_std=e)
                ids, tg, mask = task["sample"](np.random.default_rng(s))
                lm_step(model, ids, tg, mask)
                per_seed.append([float(np.linalg.norm(b.mlp.linear2.grads["weight"])) for b in model.blocks])
            norms[(e, placement, L)] = per_seed
    return {"depths": list(depths), "seeds": seeds, "d_model": d_model, "emb_stds": list(emb_stds), "norms": norms}


# -- 2. warm-up ------------------------------------------------------------------------------------
@experiment("warmup-post-pre", "post-LN vs pre-LN at Adam lr 3e-2, with and without linear warm-up, at "
            "several depths (reversal task)", CHAPTER)
def warmup_post_pre(quick: bool = True, seed: int = 0, depths: tuple[int, ...] | None = None, lr: float = 3e-2,
                    d_model: int = 32, steps: int | None = None) -> dict[str, Any]:
    """Train each (placement, depth, warm-up) on sequence reversal for several seeds. The quick
    setting runs the warm-up only at the deepest depth (where the run without it fails); the full
    setting at every depth.

    Returns ``{"runs": {(placement, depth, warmup): {"acc": [per seed], "loss": [smoothed curve per
    seed]}}, ...}`` with the final token accuracy on 512 held-out sequences (chance 0.1).
    """
    depths = depths or ((2, 4) if quick else (2, 4, 6))
    steps = steps or (QUICK_STEPS["warmup-post-pre"] if quick else 1000)
    warm = steps // 3 if quick else steps // 5
    seeds = list(range(seed, seed + (2 if quick else 3)))
    task = _reversal_task(32)
    runs: dict[tuple, dict] = {}
    configs = [(p, L, w) for L in depths for p in ("post", "pre") for w in (0, warm)
               if not (quick and w and L != max(depths))]
    with one_blas_thread():
        for p, L, w in progress(configs, "runs (placement, depth, warm-up)"):
            accs, curves = [], []
            for s in seeds:
                r = train_lm(_build(p, task, d_model, L, s, placement=p), task, steps, lr, w, s)
                accs.append(r["metric"])
                curves.append(_smooth(r["loss"], 20))
            runs[(p, L, w)] = {"acc": accs, "loss": curves}
    return {"depths": list(depths), "steps": steps, "warmup": warm, "lr": lr, "seeds": seeds, "runs": runs,
            "chance_loss": float(np.log(REVERSAL["vocab"]))}


# -- 3. QK-norm at a high learning rate --------------------------------------------------------------
def _spikes(loss, window: int = 10, factor: float = 1.5) -> int:
    """Steps whose loss exceeds ``factor`` times the mean of the previous ``window`` steps."""
    v = np.asarray(loss)
    return int(sum(v[t] > factor * v[t - window:t].mean() for t in range(window, len(v))))


@experiment("qk-norm-high-lr", "QK-norm (none / Henry l2 / per-head RMSNorm) at a high learning rate: "
            "largest attention logit, attention entropy, loss spikes", CHAPTER)
def qk_norm_high_lr(quick: bool = True, seed: int = 0, lr: float = 3e-2, d_model: int = 32,
                    steps: int | None = None) -> dict[str, Any]:
    """A 2-layer pre-LN model on the character corpus at a high Adam learning rate, with each form
    of QK-norm; per step the largest attention logit, the mean attention entropy and the loss.

    Returns ``{"variants", "runs": {variant: {"max_logit", "entropy", "loss": [per seed],
    "spikes": [per seed], "val_loss": [per seed]}}}``.
    """
    steps = steps or (QUICK_STEPS["qk-norm-high-lr"] if quick else 1000)
    seeds = list(range(seed, seed + (2 if quick else 3)))
    task = _char_task(32)
    variants = ("none", "l2", "rms")
    runs: dict[str, dict] = {}
    with one_blas_thread():
        for v in progress(variants, "QK-norm variants"):
            rec: dict[str, list] = {"max_logit": [], "entropy": [], "loss": [], "spikes": [], "val_loss": []}
            for s in seeds:
                model = _build("pre", task, d_model, 2, s, placement="pre", qk_norm=None if v == "none" else v)
                r = train_lm(model, task, steps, lr, 0, s, record_attention=True)
                rec["max_logit"].append(r["max_logit"])
                rec["entropy"].append(r["entropy"])
                rec["loss"].append(r["loss"])
                rec["spikes"].append(_spikes(r["loss"]))
                rec["val_loss"].append(r["metric"])
            runs[v] = rec
    return {"variants": list(variants), "steps": steps, "lr": lr, "seeds": seeds, "runs": runs}


# -- 4. normalizers in the pre-LN model ----------------------------------------------------------------
@experiment("norm-compare", "LayerNorm vs RMSNorm vs ScaleNorm vs DyT in the pre-LN model: loss curves "
            "and time per step (character corpus)", CHAPTER)
def norm_compare(quick: bool = True, seed: int = 0, lr: float = 3e-3, d_model: int = 32,
                 steps: int | None = None) -> dict[str, Any]:
    """Train the 2-layer pre-LN model with each normalizer on the character corpus.

    Returns ``{"norms", "runs": {norm: {"loss": [smoothed per seed], "val_loss": [per seed],
    "ms_per_step": [per seed]}}}``. Times are wall-clock per training step (forward, backward,
    Adam) with the NumPy reference layers, on whatever else the machine was doing.
    """
    steps = steps or (QUICK_STEPS["norm-compare"] if quick else 1500)
    seeds = list(range(seed, seed + (2 if quick else 3)))
    task = _char_task(32)
    norms = ("ln", "rms", "scale", "dyt")
    runs: dict[str, dict] = {}
    with one_blas_thread():
        for norm in progress(norms, "normalizers"):
            rec: dict[str, list] = {"loss": [], "val_loss": [], "ms_per_step": []}
            for s in seeds:
                r = _train("pre", ("char", 32), task, d_model, 2, s, steps, lr, placement="pre", norm=norm)
                rec["loss"].append(_smooth(r["loss"], 20))
                rec["val_loss"].append(r["metric"])
                rec["ms_per_step"].append(1000 * r["seconds_per_step"])
            runs[norm] = rec
    return {"norms": list(norms), "steps": steps, "lr": lr, "seeds": seeds, "runs": runs}


# -- 5. nGPT ---------------------------------------------------------------------------------------
def _steps_to(curve, target: float):
    hit = np.nonzero(np.asarray(curve) <= target)[0]
    return int(hit[0]) + 1 if hit.size else None


@experiment("ngpt-vs-pre", "nGPT vs the pre-LN baseline on the character corpus: steps to reach a target "
            "training loss", CHAPTER)
def ngpt_vs_pre(quick: bool = True, seed: int = 0, target: float = 2.4, lrs: tuple[float, ...] | None = None,
                d_model: int = 32, steps: int | None = None) -> dict[str, Any]:
    """Train nGPT and the pre-LN (LayerNorm) model on the character corpus at each learning rate;
    count the steps until the 20-step moving average of the training loss first reaches ``target``.

    Returns ``{"runs": {(model, lr): {"steps_to_target": [per seed, None if never], "loss": [...],
    "val_loss": [...]}}}``.
    """
    steps = steps or (QUICK_STEPS["ngpt-vs-pre"] if quick else 1500)
    lrs = lrs or ((3e-3,) if quick else (1e-3, 3e-3, 1e-2))
    seeds = list(range(seed, seed + (2 if quick else 3)))
    task = _char_task(32)
    runs: dict[tuple, dict] = {}
    with one_blas_thread():
        for kind, lr in progress([(k, lr) for k in ("pre", "ngpt") for lr in lrs], "runs (model, lr)"):
            rec: dict[str, list] = {"steps_to_target": [], "loss": [], "val_loss": []}
            for s in seeds:
                kw = {} if kind == "ngpt" else {"placement": "pre", "norm": "ln"}   # = norm-compare's "ln"
                r = _train(kind, ("char", 32), task, d_model, 2, s, steps, lr, **kw)
                curve = _smooth(r["loss"], 20)
                rec["loss"].append(curve)
                rec["steps_to_target"].append(_steps_to(curve, target) and _steps_to(curve, target) + 19)
                rec["val_loss"].append(r["metric"])
            runs[(kind, lr)] = rec
    return {"target": target, "steps": steps, "lrs": list(lrs), "seeds": seeds, "runs": runs}


# -- gradient clipping -----------------------------------------------------------------------------
@experiment("clip-rescue", "clip_grad_norm_ on a run that diverges without it (a deep MLP without "
            "normalization, initialized too large, SGD)", CHAPTER)
def clip_rescue(quick: bool = True, seed: int = 0, max_norm: float = 1.0, init_scale: float = 1.6,
                lr: float = 0.05) -> dict[str, Any]:
    """A 10-layer ReLU MLP without normalization (:func:`npnorm.models.deep_mlp`), its weights
    ``init_scale`` times the Kaiming scale, trained on the three spirals with SGD (momentum 0.9,
    batch 64), with and without clipping the global gradient norm to ``max_norm``.

    Returns ``{"runs": {"none"|"clip": {"acc": [per seed, NaN if diverged], "diverged": [...],
    "grad_norm": [curve per seed, before clipping]}}}``.
    """
    from ..data import make_spirals
    from ..models import deep_mlp
    steps = 400 if quick else 2000
    seeds = list(range(seed, seed + (3 if quick else 5)))
    X, y = make_spirals(600, seed=0)
    runs: dict[str, dict] = {}
    with one_blas_thread(), np.errstate(all="ignore"):
        for variant in progress(("none", "clip"), "runs"):
            rec: dict[str, list] = {"acc": [], "diverged": [], "grad_norm": []}
            for s in seeds:
                model = deep_mlp("none", depth=10, init_scale=init_scale, seed=s)
                opt = nn.SGD(model, lr=lr, momentum=0.9)
                crit = nn.CrossEntropyLoss()
                rng = np.random.default_rng(s)
                norms, diverged = [], False
                for _ in range(steps):
                    idx = rng.integers(0, len(X), 64)
                    loss = crit(model(X[idx]), y[idx])
                    if not np.isfinite(loss):
                        diverged = True
                        break
                    model.backward(crit.backward())
                    norms.append(nn.clip_grad_norm_(model, max_norm) if variant == "clip" else nn.grad_norm(model))
                    opt.step()
                    opt.zero_grad()
                rec["acc"].append(float("nan") if diverged else float((model(X).argmax(1) == y).mean()))
                rec["diverged"].append(diverged)
                rec["grad_norm"].append(norms)
            runs[variant] = rec
    return {"steps": steps, "lr": lr, "max_norm": max_norm, "init_scale": init_scale, "seeds": seeds, "runs": runs}


# -- GradNorm -------------------------------------------------------------------------------------
def _gradnorm_run(method: str, steps: int, seed: int, sigmas=(1.0, 10.0), alpha: float = 1.5) -> dict[str, Any]:
    from ..nn.losses import mse_backward, mse_forward
    rng = np.random.default_rng(seed)
    D_in, H, D_out = 16, 32, 4
    B = rng.normal(0.0, 1.0 / np.sqrt(D_in), (D_out, D_in))
    Bs = [B + rng.normal(0.0, 0.3 / np.sqrt(D_in), B.shape) for _ in sigmas]

    def data(n, r):
        x = r.normal(size=(n, D_in))
        return x, [s * np.tanh(x @ Bi.T) for s, Bi in zip(sigmas, Bs)]

    trunk = nn.Sequential(nn.Linear(D_in, H, rng=rng), nn.Tanh(), nn.Linear(H, H, rng=rng), nn.Tanh())
    heads = [nn.Linear(H, D_out, rng=rng) for _ in sigmas]
    opt = nn.Adam([trunk, *heads], lr=1e-3)
    gn = nn.GradNorm(len(sigmas), alpha=alpha, lr=0.025)
    shared = trunk[2]
    hist: dict[str, list] = {"weights": [], "loss_ratio": []}
    L0 = None
    for _ in range(steps):
        x, ys = data(64, rng)
        h = trunk(x)
        losses, dhs, grad_norms = [], [], []
        for head, y in zip(heads, ys):
            loss, cache = mse_forward(head(h), y)
            losses.append(loss)
            dh = head.backward(mse_backward(cache))
            dhs.append(dh)
            trunk.backward(dh)
            grad_norms.append(float(np.linalg.norm(shared.grads["weight"])))
        w = gn.weights.copy() if method == "gradnorm" else np.ones(len(sigmas))
        for head, wi in zip(heads, w):
            for k in head.grads:
                head.grads[k] = wi * head.grads[k]
        trunk.backward(sum(wi * dh for wi, dh in zip(w, dhs)))
        opt.step()
        opt.zero_grad()
        if method == "gradnorm":
            gn.step(losses, grad_norms)
        L0 = np.array(losses) if L0 is None else L0
        hist["weights"].append(w.tolist())
        hist["loss_ratio"].append((np.array(losses) / L0).tolist())
    x, ys = data(2000, np.random.default_rng(777))
    h = trunk(x)
    test = [mse_forward(head(h), y)[0] / s**2 for head, y, s in zip(heads, ys, sigmas)]
    return {"test_loss_over_sigma2": test, **hist}


@experiment("gradnorm-toy", "GradNorm vs equal task weights on a two-task regression whose tasks differ "
            "100x in loss scale", CHAPTER)
def gradnorm_toy(quick: bool = True, seed: int = 0, alpha: float = 1.5) -> dict[str, Any]:
    """Two regression tasks ``y_i = sigma_i tanh((B + e_i) x)`` with ``sigma = (1, 10)`` (so their
    losses differ 100x), a shared 2-layer tanh trunk and one linear head per task, trained with Adam
    on ``w_1 L_1 + w_2 L_2``: equal weights vs GradNorm (:class:`npnorm.nn.GradNorm`, the last shared
    layer, ``alpha``). Returns, per method, the task weights and loss ratios :math:`L_i(t)/L_i(0)` per
    step (per seed) and the final test loss of each task divided by :math:`\\sigma_i^2`."""
    steps = 1000 if quick else 5000
    seeds = list(range(seed, seed + (3 if quick else 5)))
    runs: dict[str, dict] = {}
    with one_blas_thread():
        for method in progress(("equal", "gradnorm"), "methods"):
            rs = [_gradnorm_run(method, steps, s, alpha=alpha) for s in seeds]
            runs[method] = {k: [r[k] for r in rs] for k in rs[0]}
    return {"steps": steps, "seeds": seeds, "sigmas": [1.0, 10.0], "alpha": alpha, "runs": runs}
