"""Chapter 12 - Keeping a critic Lipschitz.

A Wasserstein critic must be 1-Lipschitz. Two ways to get there, one task
each:

* the **gradient penalty** (WGAN-GP) adds
  ``lam * mean((||grad_x D(x)|| - 1)**2)`` to the critic's loss; its
  gradient with respect to the critic's parameters differentiates an input
  gradient - a double backward. Task 12.1 derives it for a critic with one
  hidden Tanh layer.
* **spectral normalization** divides every layer by a power-iteration
  estimate of its largest singular value; the product of the normalized
  layers' true spectral norms bounds the critic's Lipschitz constant.
  Task 12.2 computes that bound after one power step.

Tasks
-----
12.1  penalty_backward - the gradient penalty's gradients dW, db, dw for a
      one-hidden-layer critic
12.2  sn_lipschitz_bound - the Lipschitz bound of a spectrally normalized
      MLP after one power step

Self-check: ``.venv/bin/python exercises/ch12_lipschitz.py``.
Full check: ``make check TASK=12`` (in a notebook:
``%run -m npnorm.check 12``).
"""

from __future__ import annotations

import numpy as np

from npnorm.exercises import fingerprint


def critic(x: np.ndarray, W: np.ndarray, b: np.ndarray, w: np.ndarray,
           c: float = 0.0) -> np.ndarray:
    """``D(x) = tanh(x W^T + b) @ w + c`` for ``x`` of shape (N, d), ``W``
    (H, d), ``b`` (H,), ``w`` (H,) (given; not a task). Returns shape
    (N,)."""
    return np.tanh(x @ W.T + b) @ w + c


def input_gradient(x: np.ndarray, W: np.ndarray, b: np.ndarray,
                   w: np.ndarray) -> np.ndarray:
    """``grad_x D(x)`` per sample, shape (N, d): ``g = ((1 - t**2) * w) @ W``
    with ``t = tanh(x W^T + b)`` (given; not a task)."""
    t = np.tanh(x @ W.T + b)
    return ((1.0 - t * t) * w) @ W


def gradient_penalty(x: np.ndarray, W: np.ndarray, b: np.ndarray,
                     w: np.ndarray, lam: float = 10.0) -> float:
    """``P = lam * mean_n (||g_n|| - 1)**2`` with
    ``g = input_gradient(x, W, b, w)`` (given; not a task)."""
    g = input_gradient(x, W, b, w)
    return float(lam * np.mean((np.linalg.norm(g, axis=1) - 1.0) ** 2))


def penalty_backward(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, w: np.ndarray,
    lam: float = 10.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gradients of :func:`gradient_penalty` with respect to ``W``, ``b``
    and ``w``.

    With ``z = x W^T + b``, ``t = tanh(z)``, ``m = 1 - t**2`` (so
    ``m' = -2 t m``), ``r = m * w`` and ``g = r W`` (one row per sample),
    ``n = ||g||`` per row:

    * ``delta = dP/dg = (2 lam / N) (n - 1) g / n``;
    * ``g = r W`` gives ``dW = r^T delta`` and ``dr = delta W^T``;
    * ``r = m * w`` gives ``dw = sum_n dr * m`` and ``dm = dr * w``;
    * ``m = 1 - tanh(z)**2`` gives ``dz = dm * (-2 t m)`` - the term a ReLU
      critic would not have;
    * ``z = x W^T + b`` gives ``dW += dz^T x`` and ``db = sum_n dz``.

    Parameters
    ----------
    x : ndarray (N, d); W : ndarray (H, d); b : ndarray (H,);
    w : ndarray (H,); lam : float

    Returns
    -------
    dW : ndarray (H, d); db : ndarray (H,); dw : ndarray (H,)

    Hints
    -----
    * ``W`` is reached twice: directly in ``g = r W`` and through ``z``. Add
      both.
    * Check yourself against central differences of
      :func:`gradient_penalty`.

    Self-check: ``self_check_12_1`` below.
    """
    # BEGIN TASK 12.1: the gradient penalty's double backward
    n_samples = x.shape[0]
    t = np.tanh(x @ W.T + b)
    m = 1.0 - t * t
    r = m * w
    g = r @ W
    norm = np.linalg.norm(g, axis=1, keepdims=True)
    delta = (2.0 * lam / n_samples) * (norm - 1.0) * g / norm
    dW = r.T @ delta
    dr = delta @ W.T
    dw = np.sum(dr * m, axis=0)
    dz = dr * w * (-2.0 * t * m)
    dW = dW + dz.T @ x
    db = np.sum(dz, axis=0)
    return dW, db, dw
    # END TASK 12.1


def l2_normalize(a: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """``a / max(||a||, eps)`` (given)."""
    return a / max(float(np.linalg.norm(a)), eps)


def sn_lipschitz_bound(
    weights: list[np.ndarray], us: list[np.ndarray]
) -> tuple[float, np.ndarray]:
    """The Lipschitz bound of an MLP whose layers are spectrally normalized
    with one power step each.

    For every weight ``W`` (shape (out, in)) and its persistent vector ``u``
    (shape (out,)), run one power step in the paper's order,
    ``v = normalize(W^T u)``, ``u = normalize(W v)``, estimate
    ``sigma_hat = u^T W v`` and normalize ``W_sn = W / sigma_hat``. With
    1-Lipschitz activations the network is Lipschitz with constant at most
    the product of the **exact** spectral norms of the ``W_sn``
    (``np.linalg.norm(W_sn, 2)``).

    Returns
    -------
    bound : float
        ``prod_k ||W_k / sigma_hat_k||_2`` - at least 1, since
        ``sigma_hat <= sigma_1``.
    sigma_hats : ndarray (number of layers,)

    Hints
    -----
    * Do not modify the ``u`` passed in.
    * ``np.linalg.norm(M, 2)`` is the largest singular value of a matrix
      ``M``.

    Self-check: ``self_check_12_2`` below.
    """
    # BEGIN TASK 12.2: the Lipschitz bound of a spectrally normalized MLP
    bound, sigma_hats = 1.0, []
    for W, u in zip(weights, us):
        v = l2_normalize(W.T @ u)
        u = l2_normalize(W @ v)
        sigma_hat = float(u @ W @ v)
        sigma_hats.append(sigma_hat)
        bound *= float(np.linalg.norm(W / sigma_hat, 2))
    return bound, np.array(sigma_hats)
    # END TASK 12.2


# -- self-checks: `.venv/bin/python exercises/ch12_lipschitz.py` -------------
# Each returns one number made of every element of every result
# (npnorm.exercises.fingerprint).

def _one_hidden(seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 1.5, (8, 2))
    W = rng.standard_normal((5, 2))
    b = rng.uniform(-0.5, 0.5, 5)
    w = rng.standard_normal(5)
    return x, W, b, w


def self_check_12_1() -> float:
    """Task 12.1: dW, db and dw for the critic of seed 12 with lam = 10,
    every element weighted; you should get about -6.449949."""
    x, W, b, w = _one_hidden(12)
    dW, db, dw = penalty_backward(x, W, b, w, 10.0)
    return fingerprint(dW=(dW, (5, 2)), db=(db, (5,)), dw=(dw, (5,)))


def self_check_12_2() -> float:
    """Task 12.2: the bound and the three sigma_hats of a 2-16-16-1 MLP after
    one power step from random u, every element weighted; you should get
    about 16.81559 (the bound alone would be 1 if the power iteration had
    converged)."""
    rng = np.random.default_rng(122)
    sizes = (2, 16, 16, 1)
    weights = [rng.standard_normal((o, i))
               for i, o in zip(sizes[:-1], sizes[1:])]
    us = [l2_normalize(rng.standard_normal(o)) for o in sizes[1:]]
    bound, sigma_hats = sn_lipschitz_bound(weights, us)
    return fingerprint(bound=(bound, ()), sigma_hats=(sigma_hats, (3,)))


if __name__ == "__main__":
    from npnorm.exercises import self_check_main

    self_check_main(globals())
