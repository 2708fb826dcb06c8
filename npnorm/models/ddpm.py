r"""Denoising diffusion (Ho et al., 2020) around any noise-prediction network: the schedule, one
training step, ancestral sampling, and classifier-free guidance.

Forward process with :math:`T` steps, :math:`\alpha_t = 1 - \beta_t`,
:math:`\bar\alpha_t = \prod_{s \le t} \alpha_s`:

.. math:: x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \varepsilon, \qquad
          \varepsilon \sim N(0, I).                                                    \tag{q}

Training minimises :math:`\| \varepsilon - \hat\varepsilon(x_t, t, y) \|^2` (the "simple" loss).
Sampling starts from :math:`x_T \sim N(0, I)` and steps back with the posterior mean and variance
:math:`\tilde\beta_t = \beta_t (1 - \bar\alpha_{t-1}) / (1 - \bar\alpha_t)`:

.. math:: x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\hat\varepsilon\Big)
          + \sqrt{\tilde\beta_t}\, z .                                                  \tag{p}

**The schedule is scaled with T.** The linear :math:`\beta` from 1e-4 to 0.02 is for :math:`T = 1000`;
with :math:`T = 50` it leaves :math:`\bar\alpha_T \approx 0.6` - the last step is far from noise and
samples started from :math:`N(0, I)` are wrong. :func:`linear_betas` multiplies both ends by
:math:`1000/T` (the same per-unit-time noise), which gives :math:`\bar\alpha_{50} \approx 8\cdot10^{-6}`.

**Classifier-free guidance** (Ho & Salimans, 2021): train with the label replaced by a null class
with probability ``class_dropout``; sample with
:math:`\hat\varepsilon = (1 + w)\,\hat\varepsilon(x, t, y) - w\,\hat\varepsilon(x, t, \varnothing)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["linear_betas", "cosine_betas", "Schedule", "respace", "EMA", "train_step", "sample"]


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02, scale_with_steps: bool = True):
    """Linear betas; ``scale_with_steps`` multiplies both ends by ``1000 / num_steps``."""
    f = 1000.0 / num_steps if scale_with_steps else 1.0
    return np.linspace(beta_start * f, beta_end * f, num_steps)


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    r"""Nichol & Dhariwal's cosine schedule: :math:`\bar\alpha(t) = \cos^2\big(\frac{t/T + s}{1 + s}
    \frac{\pi}{2}\big) / \bar\alpha(0)`, :math:`\beta_t = 1 - \bar\alpha(t)/\bar\alpha(t-1)` clipped to
    ``max_beta``. It destroys the signal more slowly than the linear schedule at small and medium
    :math:`t`, which matters for small images."""
    f = np.cos((np.arange(num_steps + 1) / num_steps + s) / (1 + s) * np.pi / 2) ** 2
    return np.clip(1.0 - f[1:] / f[:-1], 0.0, max_beta)


@dataclass
class Schedule:
    """The DDPM constants for ``betas`` (shape ``(T,)``)."""

    betas: np.ndarray
    alphas: np.ndarray = field(init=False)
    alpha_bar: np.ndarray = field(init=False)
    posterior_var: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.betas = np.asarray(self.betas, dtype=np.float64)
        self.alphas = 1.0 - self.betas
        self.alpha_bar = np.cumprod(self.alphas)
        prev = np.concatenate([[1.0], self.alpha_bar[:-1]])
        self.posterior_var = self.betas * (1.0 - prev) / (1.0 - self.alpha_bar)

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    def q_sample(self, x0: np.ndarray, t: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """Equation (q)."""
        ab = self.alpha_bar[t].reshape((-1,) + (1,) * (np.ndim(x0) - 1))
        return np.sqrt(ab) * x0 + np.sqrt(1.0 - ab) * eps


def respace(schedule: Schedule, num_steps: int) -> tuple[Schedule, np.ndarray]:
    r"""Sample in fewer steps (Nichol & Dhariwal's respacing): ``num_steps`` evenly spaced timesteps
    :math:`S_1 < \dots < S_K` of the ``T`` the network was trained on (first and last included) and
    the schedule with the same :math:`\bar\alpha` at them,
    :math:`\beta'_k = 1 - \bar\alpha_{S_k} / \bar\alpha_{S_{k-1}}`.

    Returns ``(schedule', timesteps)``; pass both to :func:`sample` (``timesteps[k]`` is the
    network's timestep at step ``k`` of ``schedule'``).
    """
    T = schedule.num_steps
    if not 1 <= num_steps <= T:
        raise ValueError(f"respace: num_steps must be in [1, {T}], got {num_steps}")
    steps = np.unique(np.round(np.linspace(0, T - 1, num_steps)).astype(np.int64))
    ab = schedule.alpha_bar[steps]
    return Schedule(1.0 - ab / np.concatenate([[1.0], ab[:-1]])), steps


class EMA:
    """An exponential moving average of a model's parameters, ``avg = decay * avg + (1 - decay) * p``
    after every optimizer step (the weights DDPM samples with). ``decay`` is 0 for the first
    ``start`` updates (the average starts from the trained weights, not the initial ones);
    :meth:`copy_to` writes the average into the model."""

    def __init__(self, model, decay: float = 0.99, start: int = 0) -> None:
        self.leaves = [(m, k) for m in model.modules() for k in m.params]
        self.avg = [m.params[k].copy() for m, k in self.leaves]
        self.decay, self.start, self.updates = float(decay), int(start), 0

    def update(self) -> None:
        d = self.decay if self.updates >= self.start else 0.0
        for a, (m, k) in zip(self.avg, self.leaves):
            a *= d
            a += (1.0 - d) * m.params[k]
        self.updates += 1

    def copy_to(self) -> None:
        for a, (m, k) in zip(self.avg, self.leaves):
            m.params[k][...] = a


def train_step(model, optimizer, schedule: Schedule, x0: np.ndarray, y: np.ndarray | None,
               rng: np.random.Generator, class_dropout: float = 0.0) -> float:
    """One step of the simple loss on the batch ``x0`` (labels ``y``); returns the loss."""
    n = x0.shape[0]
    t = rng.integers(0, schedule.num_steps, n)
    eps = rng.standard_normal(x0.shape)
    xt = schedule.q_sample(x0, t, eps)
    if y is not None and class_dropout > 0:
        y = np.where(rng.random(n) < class_dropout, model.num_classes, y)
    pred = model(xt, t, y)
    diff = pred - eps
    loss = float(np.mean(diff * diff))
    optimizer.zero_grad()
    model.backward(2.0 * diff / diff.size)
    optimizer.step()
    return loss


def sample(model, schedule: Schedule, n: int, y: np.ndarray | None = None, rng: np.random.Generator | None = None,
           guidance: float = 0.0, keep: tuple[int, ...] = (), shape: tuple[int, ...] = (2,),
           clip: float | None = None,
           timesteps: np.ndarray | None = None) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    r"""Ancestral sampling, equation (p), of ``n`` points (classes ``y``; guidance scale ``w``).

    ``clip``: if given, the predicted clean sample
    :math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}` is clipped to
    ``[-clip, clip]`` and the step uses the posterior mean written in :math:`\hat x_0` (DDPM's
    ``clip_denoised``, which clips images to [-1, 1]); without it, equation (p) as written (the two
    agree when nothing is clipped).

    ``shape`` is one sample's shape (``(2,)`` for points, ``(C, H, W)`` for images).
    ``timesteps``: the network's timestep at each step of ``schedule`` (from :func:`respace`);
    by default step ``t`` is timestep ``t``.
    Returns ``(x_0, trajectory)`` where ``trajectory[t]`` is ``x_t`` for every ``t`` in ``keep``
    (``T`` is the starting noise).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    x = rng.standard_normal((n,) + tuple(shape))
    traj: dict[int, np.ndarray] = {}
    T = schedule.num_steps
    if T in keep:
        traj[T] = x.copy()
    null = None if y is None else np.full(n, model.num_classes)
    for t in range(T - 1, -1, -1):
        tt = np.full(n, t if timesteps is None else timesteps[t])
        eps = model(x, tt, y)
        if guidance and y is not None:
            eps = (1.0 + guidance) * eps - guidance * model(x, tt, null)
        a, ab, b = schedule.alphas[t], schedule.alpha_bar[t], schedule.betas[t]
        if clip is None:
            x = (x - b / np.sqrt(1.0 - ab) * eps) / np.sqrt(a)
        else:
            ab_prev = schedule.alpha_bar[t - 1] if t > 0 else 1.0
            x0 = np.clip((x - np.sqrt(1.0 - ab) * eps) / np.sqrt(ab), -clip, clip)
            x = (np.sqrt(ab_prev) * b * x0 + np.sqrt(a) * (1.0 - ab_prev) * x) / (1.0 - ab)
        if t > 0:
            x = x + np.sqrt(schedule.posterior_var[t]) * rng.standard_normal(x.shape)
        if t in keep:
            traj[t] = x.copy()
    return x, traj
