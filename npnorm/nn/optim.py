r"""Optimizers with PyTorch's update equations: ``SGD`` (momentum, dampening, Nesterov, weight decay)
and ``Adam`` (L2 weight decay, as ``torch.optim.Adam``) / ``AdamW`` (decoupled weight decay).

An optimizer holds references to ``(layer, name)`` pairs, reads ``layer.grads[name]`` after a
backward pass and updates ``layer.params[name]`` **in place**. Build it from a model (all its
parameters) or from a list of layers::

    opt = SGD(model, lr=0.1, momentum=0.9)
    loss = crit(model(x), y); model.backward(crit.backward()); opt.step(); opt.zero_grad()

SGD, with gradient :math:`g_t` and weight decay :math:`\lambda`:

.. math::
   g \leftarrow g_t + \lambda\theta, \quad
   b_t = \begin{cases} g & t = 1 \\ \mu b_{t-1} + (1-\tau) g & t > 1\end{cases}, \quad
   \theta \leftarrow \theta - \eta\,(g + \mu b_t \text{ if Nesterov else } b_t).

Adam:

.. math::
   g \leftarrow g_t + \lambda\theta,\ m_t = \beta_1 m_{t-1} + (1-\beta_1) g,\
   v_t = \beta_2 v_{t-1} + (1-\beta_2) g^2,\
   \theta \leftarrow \theta - \eta\,\frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}.

AdamW replaces the first step by :math:`\theta \leftarrow \theta(1 - \eta\lambda)`.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np

from ..base import Module

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm_", "grad_norm"]


def _leaf_params(modules: Module | Iterable[Module]) -> list[tuple[Module, str]]:
    if isinstance(modules, Module):
        modules = [modules]
    seen: set[int] = set()
    pairs = []
    for top in modules:
        if not isinstance(top, Module):
            raise TypeError(f"optimizers take npnorm Modules (or a list of them), got {type(top).__name__}")
        for m in top.modules():
            if isinstance(getattr(type(m), "params", None), property):
                continue              # a container whose params are a view of its children's (Sequential)
            if id(m) in seen:
                continue
            seen.add(id(m))
            pairs.extend((m, k) for k in m.params)
    return pairs


def _check_nonneg(value, name, where):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{where}: {name} must be a number >= 0, got {value!r}")
    return float(value)


class Optimizer:
    """Shared bookkeeping: the ``(layer, name)`` pairs, per-parameter state, ``zero_grad``."""

    def __init__(self, modules: Module | Iterable[Module], lr: float) -> None:
        self.targets = _leaf_params(modules)
        if not self.targets:
            raise ValueError(f"{type(self).__name__}: the model has no parameters to optimize")
        self.lr = _check_nonneg(lr, "lr", type(self).__name__)
        self.state: dict[tuple[int, str], dict] = {}
        self.steps = 0

    def zero_grad(self) -> None:
        for m, _ in self.targets:
            m.grads = {}

    def _pairs(self):
        for m, k in self.targets:
            g = m.grads.get(k)
            if g is None:      # no gradient (parameter unused in the last backward): skip, as PyTorch
                continue
            yield m.params[k], np.asarray(g, dtype=np.float64), self.state.setdefault((id(m), k), {})

    def step(self) -> None:
        self.steps += 1
        for p, g, st in self._pairs():
            p[...] = (p - self._update(p.astype(np.float64), g, st)).astype(p.dtype)

    def _update(self, p, g, st):  # pragma: no cover - abstract
        raise NotImplementedError


class SGD(Optimizer):
    """``torch.optim.SGD(params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False)``."""

    def __init__(self, modules, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(modules, lr)
        self.momentum = _check_nonneg(momentum, "momentum", "SGD")
        self.dampening = _check_nonneg(dampening, "dampening", "SGD")
        self.weight_decay = _check_nonneg(weight_decay, "weight_decay", "SGD")
        if nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires momentum > 0 and dampening = 0")
        self.nesterov = bool(nesterov)

    def _update(self, p, g, st):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            if "momentum_buffer" not in st:
                buf = g.copy()
            else:
                buf = self.momentum * st["momentum_buffer"] + (1.0 - self.dampening) * g
            st["momentum_buffer"] = buf
            g = g + self.momentum * buf if self.nesterov else buf
        return self.lr * g


class Adam(Optimizer):
    """``torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)`` (L2 penalty
    added to the gradient, as PyTorch's Adam; see :class:`AdamW` for the decoupled form)."""

    decoupled = False

    def __init__(self, modules, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(modules, lr)
        name = type(self).__name__
        b1, b2 = betas
        for b in (b1, b2):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{name}: betas must be in [0, 1), got {betas!r}")
        self.betas = (float(b1), float(b2))
        self.eps = _check_nonneg(eps, "eps", name)
        self.weight_decay = _check_nonneg(weight_decay, "weight_decay", name)

    def _update(self, p, g, st):
        b1, b2 = self.betas
        step = 0.0
        if self.weight_decay:
            if self.decoupled:
                step = self.lr * self.weight_decay * p
            else:
                g = g + self.weight_decay * p
        t = st["step"] = st.get("step", 0) + 1
        m = st["exp_avg"] = b1 * st.get("exp_avg", 0.0) + (1.0 - b1) * g
        v = st["exp_avg_sq"] = b2 * st.get("exp_avg_sq", 0.0) + (1.0 - b2) * g * g
        m_hat = m / (1.0 - b1**t)
        v_hat = v / (1.0 - b2**t)
        return step + self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class AdamW(Adam):
    """``torch.optim.AdamW``: decoupled weight decay :math:`\\theta \\leftarrow \\theta(1-\\eta\\lambda)`
    before the Adam step (PyTorch's default ``weight_decay=0.01``)."""

    decoupled = True

    def __init__(self, modules, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01) -> None:
        super().__init__(modules, lr, betas, eps, weight_decay)


def _leaf_grads(modules: Module | Iterable[Module]) -> list[tuple[Module, str]]:
    return [(m, k) for m, k in _leaf_params(modules) if m.grads.get(k) is not None]


def grad_norm(modules: Module | Iterable[Module], norm_type: float = 2.0) -> float:
    """The norm of all the gradients of the last backward pass taken together, as one vector."""
    pairs = _leaf_grads(modules)
    if not pairs:
        return 0.0
    norms = np.array([np.linalg.norm(np.ravel(np.asarray(m.grads[k], dtype=np.float64)), ord=norm_type)
                      for m, k in pairs])
    return float(np.linalg.norm(norms, ord=norm_type))


def clip_grad_norm_(modules: Module | Iterable[Module], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    r"""Rescale every gradient in place so that their total norm is at most ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_``.

    .. math:: \lVert g\rVert = \Big\lVert \big(\lVert g_1\rVert, \ldots, \lVert g_P\rVert\big)\Big\rVert, \qquad
              g_i \leftarrow g_i \cdot \min\Big(1, \frac{c}{\lVert g\rVert + 10^{-6}}\Big)

    over all the parameters' gradients (one vector, not layer by layer; the direction is kept).
    Returns the total norm *before* clipping (PyTorch returns it as a tensor; here a float).
    ``error_if_nonfinite=True`` raises if the total norm is NaN or infinite (PyTorch's default is
    False: then the gradients become NaN as in PyTorch).
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real) or not max_norm >= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be a number >= 0, got {max_norm!r}")
    total = grad_norm(modules, norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is {total}")
    coef = min(float(max_norm) / (total + 1e-6), 1.0)
    for m, k in _leaf_grads(modules):
        m.grads[k] = (np.asarray(m.grads[k]) * coef).astype(np.asarray(m.grads[k]).dtype)
    return total
