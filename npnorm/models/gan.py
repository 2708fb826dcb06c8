r"""A GAN on 2-D data: an MLP generator, an MLP critic (or discriminator), and the training steps for
two losses and four ways of treating the critic's Lipschitz constant.

Losses, with :math:`D` the critic's raw output (a batch of :math:`B` real :math:`x` and fake
:math:`\tilde x = G(z)`):

* ``"wasserstein"`` (WGAN): critic :math:`\frac1B\sum D(\tilde x) - \frac1B\sum D(x)`, generator
  :math:`-\frac1B\sum D(G(z))`;
* ``"nonsaturating"`` (the standard GAN with the generator's "-log D" trick; :math:`D` is a logit):
  discriminator :math:`\frac1B\sum \mathrm{softplus}(-D(x)) + \frac1B\sum\mathrm{softplus}(D(\tilde x))`,
  generator :math:`\frac1B\sum \mathrm{softplus}(-D(G(z)))`.

Lipschitz methods (``method``):

* ``"none"``: the unconstrained critic (the baseline);
* ``"clip"``: after every critic step every critic parameter is clipped to :math:`[-c, c]` (WGAN);
* ``"gp"``: the penalty :math:`\lambda\,\overline{(\lVert\nabla_{\hat x} D(\hat x)\rVert - 1)^2}` at
  :math:`\hat x = \epsilon x + (1-\epsilon)\tilde x`, :math:`\epsilon \sim U(0, 1)` per sample (WGAN-GP);
  its parameter gradient is the double backward of :mod:`npnorm.nn.double_backward`;
* ``"sn"``: every critic layer wrapped in :func:`npnorm.parametrize.spectral_norm` (SN-GAN), with
  ``n_power_iterations`` steps per critic step and persistent :math:`u, v`.

The critic runs one training-mode forward pass per critic step (on real and fake together), so a
spectrally normalized critic makes exactly ``n_power_iterations`` power steps per critic step; the
generator step runs the critic in eval mode (no power step; PyTorch would run one more).

Deliberate simplification: the WGAN paper trains the clipped critic with RMSProp; here every
method uses Adam (as the issue asks), with the same learning rate and betas.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .. import nn
from .._numerics import sigmoid
from ..base import Module
from ..nn.double_backward import (PIECEWISE_LINEAR, critic_forward, critic_input_gradient,
                                  gradient_penalty_backward, gradient_penalty_forward)
from ..weights.parametrize import ParametrizedModule, spectral_norm as _spectral_norm

__all__ = ["LOSSES", "METHODS", "ACTIVATION_LIPSCHITZ", "mlp_generator", "MLPCritic", "GAN"]

LOSSES = ("wasserstein", "nonsaturating")
METHODS = ("none", "clip", "gp", "sn")
#: Lipschitz constant of each activation (SiLU's largest slope is 1.0998 at z = 2.3994).
ACTIVATION_LIPSCHITZ = {"relu": 1.0, "leaky_relu": 1.0, "tanh": 1.0, "silu": 1.0998393194}


def _act(name: str, negative_slope: float) -> Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    if name == "tanh":
        return nn.Tanh()
    if name == "silu":
        return nn.SiLU()
    raise ValueError(f"activation must be one of {tuple(ACTIVATION_LIPSCHITZ)}, got {name!r}")


def mlp_generator(latent_dim: int = 2, hidden: int = 64, depth: int = 3, out_features: int = 2,
                  seed: int | np.random.Generator = 0) -> nn.Sequential:
    """``depth`` blocks Linear-ReLU of ``hidden`` units, then Linear to ``out_features``: noise to points."""
    rng = np.random.default_rng(seed)
    layers: list[Module] = []
    fan_in = latent_dim
    for _ in range(depth):
        layers += [nn.Linear(fan_in, hidden, rng=rng), nn.ReLU()]
        fan_in = hidden
    layers.append(nn.Linear(fan_in, out_features, rng=rng))
    return nn.Sequential(*layers)


class MLPCritic(nn.Sequential):
    """An MLP critic ``in_features -> hidden x depth -> 1`` with its Lipschitz diagnostics.

    With ``spectral_norm=True`` every Linear layer (the output layer too) is wrapped in
    :func:`npnorm.parametrize.spectral_norm` with ``n_power_iterations``.

    Besides the :class:`~npnorm.nn.Sequential` interface (``forward`` gives shape ``(N, 1)``):

    * :meth:`weights_and_biases` - the weights the critic computes with (for a spectrally normalized
      layer :math:`W/\\hat\\sigma` with :math:`\\hat\\sigma = u^\\top W v` from the current ``u, v``, i.e.
      what an eval-mode forward uses; no power step is run);
    * :meth:`input_gradient` - :math:`\\nabla_x D` per sample, eq. (gp-input-grad) of
      :mod:`npnorm.nn.double_backward`;
    * :meth:`gradient_penalty` - the WGAN-GP term and its parameter gradients (the double backward);
    * :meth:`layer_norms` / :meth:`lipschitz_bound` - exact spectral norms by SVD and their product
      (times the activations' Lipschitz constants);
    * :meth:`sigma_estimates` - for spectral norm, the power-iteration :math:`\\hat\\sigma` and the exact
      :math:`\\sigma_1` of every raw weight.
    """

    def __init__(self, in_features: int = 2, hidden: int = 64, depth: int = 3, activation: str = "relu",
                 negative_slope: float = 0.2, spectral_norm: bool = False, n_power_iterations: int = 1,
                 seed: int | np.random.Generator = 0) -> None:
        super().__init__()
        if activation not in ACTIVATION_LIPSCHITZ:
            raise ValueError(f"MLPCritic: activation must be one of {tuple(ACTIVATION_LIPSCHITZ)}, got {activation!r}")
        rng = np.random.default_rng(seed)
        self.activation, self.negative_slope = activation, float(negative_slope)
        self.spectral = bool(spectral_norm)
        self.depth = int(depth)
        fan_in = in_features
        for k in range(depth + 1):
            out = hidden if k < depth else 1
            lin: Module = nn.Linear(fan_in, out, rng=rng)
            if self.spectral:
                lin = _spectral_norm(lin, n_power_iterations=n_power_iterations, seed=rng)
            self.append(lin)
            if k < depth:
                self.append(_act(activation, negative_slope))
            fan_in = out

    def linear_layers(self) -> list[Module]:
        """The Linear layers (or their spectral-norm wrappers), input to output."""
        return [m for m in self.layers if isinstance(m, (nn.Linear, ParametrizedModule))]

    def raw_weight(self, layer: Module) -> np.ndarray:
        """The trained weight array of a layer (the raw weight under spectral norm)."""
        if isinstance(layer, ParametrizedModule):
            return layer.parametrization.params["weight"]
        return layer.params["weight"]

    def weights_and_biases(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The weights and biases the critic computes with (see the class docstring)."""
        Ws, bs = [], []
        for layer in self.linear_layers():
            if isinstance(layer, ParametrizedModule):
                sn = layer.parametrization
                W = np.asarray(sn.params["weight"], dtype=np.float64)
                Ws.append(W / float(sn.u @ W @ sn.v))
                bs.append(np.asarray(layer.module.params["bias"], dtype=np.float64))
            else:
                Ws.append(np.asarray(layer.params["weight"], dtype=np.float64))
                bs.append(np.asarray(layer.params["bias"], dtype=np.float64))
        return Ws, bs

    def value(self, x: np.ndarray) -> np.ndarray:
        """:math:`D(x)`, shape ``(N,)``, without touching the layers' caches or power iteration."""
        Ws, bs = self.weights_and_biases()
        return critic_forward(x, Ws, bs, self.activation, self.negative_slope)[0]

    def input_gradient(self, x: np.ndarray) -> np.ndarray:
        """:math:`\\nabla_x D(x)` per sample, shape ``(N, in_features)``."""
        Ws, bs = self.weights_and_biases()
        _, cache = critic_forward(x, Ws, bs, self.activation, self.negative_slope)
        return critic_input_gradient(cache)[0]

    def gradient_penalty(self, x_hat: np.ndarray,
                         lam: float) -> tuple[float, np.ndarray]:
        """``(mean penalty, grad norms)``; *adds* the penalty's gradients to
        the Linear layers' ``grads``.

        Only for a critic without spectral norm (WGAN-GP does not combine
        them here)."""
        if self.spectral:
            raise ValueError("MLPCritic.gradient_penalty: not implemented "
                             "for a spectrally normalized critic")
        Ws, bs = self.weights_and_biases()
        n = len(x_hat)
        p, cache = gradient_penalty_forward(x_hat, Ws, bs, self.activation,
                                            lam, self.negative_slope)
        grads = gradient_penalty_backward(np.full(n, 1.0 / n), cache)
        for layer, dW, db in zip(self.linear_layers(), grads["weights"],
                                 grads["biases"]):
            layer.grads["weight"] = layer.grads.get("weight", 0.0) + dW
            layer.grads["bias"] = layer.grads.get("bias", 0.0) + db
        return float(p.mean()), cache["grad_norm"]

    def layer_norms(self) -> np.ndarray:
        """Exact largest singular value (SVD) of every weight the critic computes with."""
        return np.array([np.linalg.norm(W, 2) for W in self.weights_and_biases()[0]])

    def lipschitz_bound(self) -> float:
        """Product of :meth:`layer_norms`, times the activation's Lipschitz constant per hidden layer."""
        return float(np.prod(self.layer_norms()) * ACTIVATION_LIPSCHITZ[self.activation] ** self.depth)

    def sigma_estimates(self) -> tuple[np.ndarray, np.ndarray]:
        """For spectral norm: ``(u^T W v, exact sigma_1(W))`` of every raw weight."""
        est, exact = [], []
        for layer in self.linear_layers():
            sn = layer.parametrization
            W = np.asarray(sn.params["weight"], dtype=np.float64)
            est.append(float(sn.u @ W @ sn.v))
            exact.append(float(np.linalg.norm(W, 2)))
        return np.array(est), np.array(exact)

    def clip_(self, c: float) -> None:
        """Clip every parameter to ``[-c, c]`` in place (WGAN's weight clipping)."""
        for layer in self.linear_layers():
            for v in layer.params.values():
                np.clip(v, -c, c, out=v)


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


class GAN:
    """Generator, critic, their Adam optimizers and one training step of each.

    Parameters
    ----------
    loss : ``"wasserstein"`` or ``"nonsaturating"``
    method : ``"none"``, ``"clip"``, ``"gp"`` or ``"sn"`` (see the module docstring)
    hidden, depth : widths and number of hidden layers of both networks
    latent_dim : dimension of the generator's Gaussian noise
    activation : the critic's activation (``"relu"``, ``"leaky_relu"``, ``"tanh"``, ``"silu"``)
    lr, betas : Adam's, for both networks
    clip : :math:`c` of weight clipping
    lam : :math:`\\lambda` of the gradient penalty
    n_power_iterations : power steps per critic step under spectral norm
    seed : the networks' initialization and the noise
    """

    def __init__(self, loss: str = "wasserstein", method: str = "none", hidden: int = 64, depth: int = 3,
                 latent_dim: int = 2, activation: str = "relu", lr: float = 1e-3,
                 betas: tuple[float, float] = (0.5, 0.9), clip: float = 0.01, lam: float = 10.0,
                 n_power_iterations: int = 1, seed: int = 0) -> None:
        if loss not in LOSSES:
            raise ValueError(f"GAN: loss must be one of {LOSSES}, got {loss!r}")
        if method not in METHODS:
            raise ValueError(f"GAN: method must be one of {METHODS}, got {method!r}")
        if method == "gp" and loss != "wasserstein":
            raise ValueError("GAN: the gradient penalty is implemented for the Wasserstein loss only")
        self.loss, self.method = loss, method
        self.clip, self.lam, self.latent_dim = float(clip), float(lam), int(latent_dim)
        rng = np.random.default_rng(seed)
        self.rng = np.random.default_rng(rng.integers(2**63))
        self.generator = mlp_generator(latent_dim, hidden, depth, 2, rng)
        self.critic = MLPCritic(2, hidden, depth, activation, spectral_norm=method == "sn",
                                n_power_iterations=n_power_iterations, seed=rng)
        if method == "clip":
            self.critic.clip_(self.clip)
        self.opt_g = nn.Adam(self.generator, lr=lr, betas=betas)
        self.opt_d = nn.Adam(self.critic, lr=lr, betas=betas)
        self.critic_seconds: list[float] = []

    def sample(self, n: int) -> np.ndarray:
        """``n`` generated points (the generator's forward pass; its cache is overwritten)."""
        return self.generator(self.rng.standard_normal((n, self.latent_dim)))

    def critic_step(self, real: np.ndarray) -> dict[str, float]:
        """One update of the critic on a batch of real points and as many
        fake ones; timed."""
        t0 = time.perf_counter()
        b = len(real)
        fake = self.sample(b)
        self.critic.train()
        self.critic.zero_grad()
        d = self.critic(np.concatenate([real, fake]))[:, 0]
        d_real, d_fake = d[:b], d[b:]
        if self.loss == "wasserstein":
            value = float(d_fake.mean() - d_real.mean())
            dd = np.concatenate([np.full(b, -1.0 / b), np.full(b, 1.0 / b)])
        else:
            value = float(_softplus(-d_real).mean() + _softplus(d_fake).mean())
            dd = np.concatenate([-sigmoid(-d_real) / b, sigmoid(d_fake) / b])
        self.critic.backward(dd[:, None])
        out = {"loss": value}
        if self.method == "gp":
            eps = self.rng.random((b, 1))
            penalty, _ = self.critic.gradient_penalty(
                eps * real + (1 - eps) * fake, self.lam)
            out["penalty"] = penalty
        self.opt_d.step()
        if self.method == "clip":
            self.critic.clip_(self.clip)
        self.critic_seconds.append(time.perf_counter() - t0)
        return out

    def generator_step(self, batch_size: int) -> float:
        """One update of the generator (the critic in eval mode: no power step, gradients discarded)."""
        z = self.rng.standard_normal((batch_size, self.latent_dim))
        fake = self.generator(z)
        self.critic.eval()
        d = self.critic(fake)[:, 0]
        if self.loss == "wasserstein":
            value, dd = float(-d.mean()), np.full(batch_size, -1.0 / batch_size)
        else:
            value, dd = float(_softplus(-d).mean()), -sigmoid(-d) / batch_size
        dx = self.critic.backward(dd[:, None])
        self.critic.zero_grad()
        self.critic.train()
        self.generator.zero_grad()
        self.generator.backward(dx)
        self.opt_g.step()
        return value
