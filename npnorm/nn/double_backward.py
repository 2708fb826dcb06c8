r"""The double backward of an MLP critic: its input gradient :math:`\nabla_x D(x)` and the gradient of
the WGAN-GP penalty :math:`\lambda(\lVert\nabla_x D(x)\rVert - 1)^2` with respect to every parameter.

The critic is an MLP with :math:`K` hidden layers and a scalar output, in the row convention of
:class:`npnorm.nn.Linear` (``W_k`` has shape ``(out, in)``):

.. math::
   h_0 = x,\quad z_k = h_{k-1} W_k^\top + b_k,\quad h_k = \varphi(z_k)\ (k = 1..K),\quad
   D = h_K w^\top + c                                                  \tag{gp-forward}

with :math:`w = W_{K+1}` of shape ``(1, n_K)`` and :math:`c = b_{K+1}`. Its input gradient is a
second, *linear* backward pass, with :math:`m_k = \varphi'(z_k)`:

.. math::
   s_K = w,\quad r_k = m_k \odot s_k,\quad s_{k-1} = r_k W_k,\quad
   g = \nabla_x D = s_0                                             \tag{gp-input-grad}

The penalty, per sample, and its derivative with respect to :math:`g`:

.. math::
   p = \lambda(\lVert g\rVert - 1)^2, \qquad
   \delta = \frac{\partial p}{\partial g}
          = 2\lambda(\lVert g\rVert - 1)\frac{g}{\lVert g\rVert}               \tag{gp-delta}

**Double backward** (reverse mode through eqs. (gp-forward) and (gp-input-grad); the labels are
those of the book's chapter on the Lipschitz critic). Going back through eq. (gp-input-grad) runs
*forwards* through the layers - a Jacobian-vector product of :math:`\delta`, eq. (gp-jvp), and the
second-derivative term of eq. (gp-second):

.. math::
   u_0 = \delta,\quad v_k = u_{k-1} W_k^\top,\quad u_k = m_k \odot v_k        \tag{gp-jvp}

.. math::
   e_k = \varphi''(z_k) \odot s_k \odot v_k                                 \tag{gp-second}

.. math::
   \frac{\partial p}{\partial W_k} \mathrel{+}= r_k^\top u_{k-1}, \qquad
   \frac{\partial p}{\partial w} = \textstyle\sum_n u_K                   \tag{gp-outer}

:math:`e_k = \partial p/\partial z_k` through the slopes :math:`m_k`, which depend on :math:`z_k`. It is
then sent back through the ordinary forward graph, eq. (gp-forward), with
:math:`\bar z_k = e_k + (\bar z_{k+1} W_{k+1}) \odot m_k` (and :math:`\bar z_K = e_K`, since :math:`h_K`
reaches :math:`p` only through the constant-in-:math:`h_K` output layer):

.. math::
   \frac{\partial p}{\partial W_k} \mathrel{+}= \bar z_k^\top h_{k-1},\quad
   \frac{\partial p}{\partial b_k} = \textstyle\sum_n \bar z_k,\quad
   \frac{\partial p}{\partial x} = \bar z_1 W_1,\quad
   \frac{\partial p}{\partial c} = 0                                      \tag{gp-chain}

**What vanishes.** For a piecewise-linear activation (ReLU, LeakyReLU) :math:`\varphi'' = 0` almost
everywhere, so every :math:`e_k = 0`: eq. (gp-chain) disappears, the bias gradients and the gradient
with respect to :math:`x` are zero (biases only move the kinks; :math:`g` is piecewise constant in
:math:`x`), and only the outer products of eq. (gp-outer) remain. The output bias :math:`c` never
matters. For a smooth activation (Tanh, SiLU) nothing but :math:`\partial p/\partial c` vanishes.

Two versions of the backward pass are given: :func:`gradient_penalty_backward_staged`, one node of
the graph at a time, and :func:`gradient_penalty_backward`, the simplified form, eqs. (gp-jvp) to
(gp-chain), that skips eq. (gp-chain) for piecewise-linear activations. They are compared in the
tests, and both are checked against central differences in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._checks import as_float_array, check_dout
from .._numerics import sigmoid

__all__ = [
    "ACTIVATIONS",
    "PIECEWISE_LINEAR",
    "activation_derivatives",
    "critic_forward",
    "critic_input_gradient",
    "gradient_penalty_forward",
    "gradient_penalty_backward_staged",
    "gradient_penalty_backward",
]

#: Activations the double backward supports.
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "silu")
#: The ones whose second derivative is zero almost everywhere.
PIECEWISE_LINEAR = ("relu", "leaky_relu")


def activation_derivatives(name: str, z: np.ndarray, negative_slope: float = 0.2
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r""":math:`(\varphi(z), \varphi'(z), \varphi''(z))` for ``name`` in :data:`ACTIVATIONS`.

    * relu: :math:`\max(z, 0)`, :math:`[z > 0]`, 0;
    * leaky_relu (slope :math:`a`): :math:`z` or :math:`az`, 1 or :math:`a`, 0;
    * tanh: :math:`t = \tanh z`, :math:`1 - t^2`, :math:`-2t(1 - t^2)`;
    * silu: :math:`z\sigma`, :math:`\sigma(1 + z(1-\sigma))`, :math:`\sigma(1-\sigma)(2 + z(1 - 2\sigma))`.
    """
    if name == "relu":
        pos = z > 0
        return np.where(pos, z, 0.0), pos.astype(np.float64), np.zeros_like(z)
    if name == "leaky_relu":
        pos = z > 0
        return np.where(pos, z, negative_slope * z), np.where(pos, 1.0, negative_slope), np.zeros_like(z)
    if name == "tanh":
        t = np.tanh(z)
        d1 = 1.0 - t * t
        return t, d1, -2.0 * t * d1
    if name == "silu":
        s = sigmoid(z)
        return z * s, s * (1.0 + z * (1.0 - s)), s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def _check_critic(x, weights, biases, where):
    x = np.asarray(as_float_array(x, "x", where), dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{where}: x must have shape (N, in_features), got shape {x.shape}")
    if len(weights) < 1 or len(weights) != len(biases):
        raise ValueError(f"{where}: need one bias per weight and at least one layer, got "
                         f"{len(weights)} weights and {len(biases)} biases")
    Ws = [np.array(as_float_array(W, f"weights[{k}]", where), dtype=np.float64) for k, W in enumerate(weights)]
    bs = [np.array(as_float_array(b, f"biases[{k}]", where), dtype=np.float64) for k, b in enumerate(biases)]
    fan_in = x.shape[1]
    for k, (W, b) in enumerate(zip(Ws, bs)):
        if W.ndim != 2 or W.shape[1] != fan_in or b.shape != (W.shape[0],):
            raise ValueError(f"{where}: layer {k} needs weights[{k}] of shape (out, {fan_in}) and biases[{k}] "
                             f"of shape (out,), got {W.shape} and {b.shape}")
        fan_in = W.shape[0]
    if Ws[-1].shape[0] != 1:
        raise ValueError(f"{where}: the last layer must have one output (a scalar critic), got {Ws[-1].shape}")
    return x, Ws, bs


def critic_forward(x: np.ndarray, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray],
                   activation: str = "relu", negative_slope: float = 0.2) -> tuple[np.ndarray, dict[str, Any]]:
    """Eq. (gp-forward): the critic's values ``D`` of shape ``(N,)`` and a cache (copies, float64).

    ``weights[k]`` has shape ``(out, in)`` as in :class:`npnorm.nn.Linear`; the last one ``(1, n_K)``.
    """
    x, Ws, bs = _check_critic(x, weights, biases, "critic_forward")
    if activation not in ACTIVATIONS:
        raise ValueError(f"critic_forward: activation must be one of {ACTIVATIONS}, got {activation!r}")
    hs, zs, d1s, d2s = [x], [], [], []
    for W, b in zip(Ws[:-1], bs[:-1]):
        z = hs[-1] @ W.T + b
        h, d1, d2 = activation_derivatives(activation, z, negative_slope)
        zs.append(z)
        hs.append(h)
        d1s.append(d1)
        d2s.append(d2)
    out = (hs[-1] @ Ws[-1].T + bs[-1])[:, 0]
    cache = {"hs": hs, "zs": zs, "d1s": d1s, "d2s": d2s, "weights": Ws, "biases": bs,
             "activation": activation, "n": x.shape[0]}
    return out, cache


def critic_input_gradient(cache: dict[str, Any]) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Eq. (gp-input-grad): ``(g, ss, rs)`` with ``g = dD/dx`` of shape ``(N, in)`` per sample, and
    the backward signals ``ss[k] = s_k`` (``k = 0..K``) and ``rs[k] = r_{k+1}`` (``k = 0..K-1``)."""
    Ws, d1s, n = cache["weights"], cache["d1s"], cache["n"]
    K = len(Ws) - 1
    ss: list[np.ndarray] = [None] * (K + 1)  # type: ignore[list-item]
    rs: list[np.ndarray] = [None] * K        # type: ignore[list-item]
    ss[K] = np.broadcast_to(Ws[-1], (n, Ws[-1].shape[1])).copy()     # s_K = w
    for k in range(K, 0, -1):
        rs[k - 1] = d1s[k - 1] * ss[k]                                # r_k = m_k * s_k
        ss[k - 1] = rs[k - 1] @ Ws[k - 1]                             # s_{k-1} = r_k W_k
    return ss[0], ss, rs


def gradient_penalty_forward(x: np.ndarray, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray],
                             activation: str = "relu", lam: float = 10.0, negative_slope: float = 0.2,
                             eps: float = 1e-12) -> tuple[np.ndarray, dict[str, Any]]:
    r"""Per-sample penalty :math:`p_n = \lambda(\lVert\nabla_x D(x_n)\rVert - 1)^2`, shape ``(N,)``
    (eqs. (gp-forward), (gp-input-grad), (gp-delta)). The WGAN-GP loss term is its mean over
    interpolates.

    Returns ``(p, cache)``; ``cache["g"]`` is the input gradient and ``cache["grad_norm"]`` its norm.
    ``eps`` floors :math:`\lVert g\rVert` in :math:`g/\lVert g\rVert` (a zero gradient gets
    :math:`\delta = 0` direction-wise, as :math:`g/\max(\lVert g\rVert, \epsilon)`).
    """
    _, cache = critic_forward(x, weights, biases, activation, negative_slope)
    g, ss, rs = critic_input_gradient(cache)
    norm = np.sqrt(np.sum(g * g, axis=1))
    cache.update(g=g, ss=ss, rs=rs, grad_norm=norm, lam=float(lam), eps=float(eps))
    return float(lam) * (norm - 1.0) ** 2, cache


def _delta(dout: np.ndarray, cache: dict[str, Any], where: str) -> np.ndarray:
    dp = np.asarray(check_dout(dout, (cache["n"],), where), dtype=np.float64)
    norm, g, lam = cache["grad_norm"], cache["g"], cache["lam"]
    return (dp * 2.0 * lam * (norm - 1.0) / np.maximum(norm, cache["eps"]))[:, None] * g  # (gp-delta)


def gradient_penalty_backward_staged(dout: np.ndarray,
                                     cache: dict[str, Any]) -> dict[str, Any]:
    """Reverse mode through the graph of eqs. (gp-forward), (gp-input-grad)
    and (gp-delta), one node (F1)-(F2), (B1)-(B4), (P) of the graph below
    at a time, always including the second-derivative terms.

    Graph (forward, then the input-gradient pass)::

        (F1) z_k = h_{k-1} W_k^T + b_k   (F2) h_k = phi(z_k)      k = 1..K
        (B1) s_K = w                     (B2) m_k = phi'(z_k)
        (B3) r_k = m_k * s_k             (B4) s_{k-1} = r_k W_k   k = K..1
        (P)  p = lam (||s_0|| - 1)^2

    Returns ``{"x": dp/dx, "weights": [dp/dW_k], "biases": [dp/db_k]}``.
    """
    Ws, hs, d1s, d2s = (cache["weights"], cache["hs"], cache["d1s"],
                        cache["d2s"])
    ss, rs = cache["ss"], cache["rs"]
    K = len(Ws) - 1
    dW = [np.zeros_like(W) for W in Ws]
    db = [np.zeros_like(b) for b in cache["biases"]]
    dz = [np.zeros_like(z) for z in cache["zs"]]
    # (P): the adjoint of s_0 = g
    ds = _delta(dout, cache, "gradient_penalty_backward_staged")
    for k in range(1, K + 1):
        dW[k - 1] += rs[k - 1].T @ ds         # (B4) W_k path
        dr = ds @ Ws[k - 1].T                 # (B4) r_k path
        dm = dr * ss[k]                       # (B3) m_k path
        ds = dr * d1s[k - 1]                  # (B3) s_k path
        dz[k - 1] += dm * d2s[k - 1]          # (B2) m_k = phi'(z_k)
    dW[K] += ds.sum(axis=0, keepdims=True)    # (B1) s_K = w (every sample)
    dh = np.zeros_like(hs[K])                 # h_K only feeds D, not p
    for k in range(K, 0, -1):
        dz[k - 1] += dh * d1s[k - 1]          # (F2)
        dW[k - 1] += dz[k - 1].T @ hs[k - 1]  # (F1) W_k path
        db[k - 1] += dz[k - 1].sum(axis=0)    # (F1) b_k path
        dh = dz[k - 1] @ Ws[k - 1]            # (F1) h_{k-1} path
    return {"x": dh, "weights": dW, "biases": db}


def gradient_penalty_backward(dout: np.ndarray,
                              cache: dict[str, Any]) -> dict[str, Any]:
    """Simplified double backward: one forward sweep of :math:`\\delta`
    through the linearized network, eq. (gp-jvp), and outer products,
    eq. (gp-outer); the second-derivative terms, eq. (gp-second), sent back
    by eq. (gp-chain) only for a smooth activation (for ReLU / LeakyReLU
    the bias and input gradients are exactly zero).

    Returns ``{"x": dp/dx, "weights": [dp/dW_k], "biases": [dp/db_k]}``;
    the output bias's gradient is always zero.
    """
    Ws, hs, d1s, d2s, ss, rs = (cache[k] for k in ("weights", "hs", "d1s",
                                                    "d2s", "ss", "rs"))
    K = len(Ws) - 1
    u = _delta(dout, cache, "gradient_penalty_backward")  # u_0 = delta
    dW, es = [], []
    for k in range(1, K + 1):
        dW.append(rs[k - 1].T @ u)          # eq. (gp-outer): r_k^T u_{k-1}
        v = u @ Ws[k - 1].T                 # eq. (gp-jvp)
        es.append(d2s[k - 1] * ss[k] * v)   # eq. (gp-second)
        u = d1s[k - 1] * v                  # eq. (gp-jvp)
    # eq. (gp-outer): dp/dw = sum_n u_K
    dW.append(u.sum(axis=0, keepdims=True))
    db = [np.zeros_like(b) for b in cache["biases"]]
    dx = np.zeros_like(hs[0])
    if cache["activation"] not in PIECEWISE_LINEAR:     # eq. (gp-chain)
        dz = es[K - 1]
        for k in range(K, 0, -1):
            dW[k - 1] += dz.T @ hs[k - 1]
            db[k - 1] = dz.sum(axis=0)
            dh = dz @ Ws[k - 1]
            if k > 1:
                dz = es[k - 2] + dh * d1s[k - 2]
            else:
                dx = dh
    return {"x": dx, "weights": dW, "biases": db}
