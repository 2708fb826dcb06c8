"""Chapter 5 - AdaIN.

Adaptive instance normalization (AdaIN) gives the content features the
per-channel statistics of the style features:

    AdaIN(x, s) = sigma(s) * (x - mu(x)) / sigma(x) + mu(s)

with mu and sigma taken per (sample, channel) over the positions, sigma(z) =
sqrt(var(z) + eps) with the biased variance. It is instance norm whose gamma
and beta are computed from another input - so the gradient flows to **both**
inputs: the content ``x`` and the style ``s``.

Shapes: content ``(N, C, H, W)``, style ``(N, C, H', W')`` - the positions may
differ in number.

Tasks
-----
5.1  adain_forward and adain_backward (to the content and to the style)

Self-check: ``.venv/bin/python exercises/ch5_adain.py``.
Full check: ``make check TASK=5`` (in a notebook: ``%run -m npnorm.check 5``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npnorm.exercises import fingerprint


def adain_forward(
    content: np.ndarray, style: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, dict[str, Any]]:
    """AdaIN of ``content`` with the statistics of ``style``.

    Parameters
    ----------
    content : ndarray, shape (N, C, *spatial)
    style : ndarray, shape (N, C, *spatial_s)
    eps : float
        Inside both square roots.

    Returns
    -------
    out : ndarray, shape of ``content``
    cache : dict for :func:`adain_backward`

    Hints
    -----
    * ``axes = tuple(range(2, content.ndim))``, ``keepdims=True``: statistics
      of shape (N, C, 1, 1).
    """
    # BEGIN TASK 5.1: AdaIN forward and backward to content and style
    axes = tuple(range(2, content.ndim))
    c_mu = content.mean(axis=axes, keepdims=True)
    c_c = content - c_mu
    c_rstd = 1.0 / np.sqrt(np.mean(c_c * c_c, axis=axes, keepdims=True) + eps)
    x_hat = c_c * c_rstd
    s_mu = style.mean(axis=axes, keepdims=True)
    s_c = style - s_mu
    s_std = np.sqrt(np.mean(s_c * s_c, axis=axes, keepdims=True) + eps)
    out = s_std * x_hat + s_mu
    cache = {"x_hat": x_hat, "c_rstd": c_rstd, "s_c": s_c, "s_std": s_std,
             "axes": axes}
    return out, cache
    # END TASK 5.1


def adain_backward(
    dout: np.ndarray, cache: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Backward pass of :func:`adain_forward`: returns ``(dcontent, dstyle)``.

    * Content: instance-norm backward with ``gamma = sigma(s)``:
      ``dx = r_x (g - mean(g) - x_hat mean(g x_hat))``, ``g = sigma(s) *
      dout``.
    * Style: ``out`` depends on ``s`` only through ``mu(s)`` and ``sigma(s)``,
      with ``d out / d mu(s) = 1`` and ``d out / d sigma(s) = x_hat``; then
      ``d mu(s) / d s = 1/m_s`` and ``d sigma(s) / d s = (s - mu(s)) / (m_s
      sigma(s))``, where ``m_s`` is the number of style positions.

    Returns
    -------
    dcontent : ndarray, shape of content
    dstyle : ndarray, shape of style

    Hints
    -----
    * Sum ``dout`` and ``dout * x_hat`` over the **content** positions; spread
      them over the **style** positions. When the two have different sizes a
      wrong ``m`` shows immediately.

    Self-check: ``self_check_5_1`` below.
    """
    # BEGIN TASK 5.1: AdaIN forward and backward to content and style
    x_hat, c_rstd, axes = cache["x_hat"], cache["c_rstd"], cache["axes"]
    s_c, s_std = cache["s_c"], cache["s_std"]
    g = dout * s_std
    dcontent = c_rstd * (
        g - g.mean(axis=axes, keepdims=True)
        - x_hat * np.mean(g * x_hat, axis=axes, keepdims=True))
    m_s = int(np.prod(s_c.shape[2:]))
    dmu_s = dout.sum(axis=axes, keepdims=True)
    dsigma_s = np.sum(dout * x_hat, axis=axes, keepdims=True)
    dstyle = dmu_s / m_s + dsigma_s * s_c / (m_s * s_std)
    return dcontent, dstyle
    # END TASK 5.1


# -- self-checks: `.venv/bin/python exercises/ch5_adain.py` -------------------

def self_check_5_1() -> float:
    """Task 5.1: out, dcontent and dstyle for a content (2, 3, 3, 3) and a
    style (2, 3, 4, 2), every element weighted; you should get about
    -105.9085."""
    rng = np.random.default_rng(5)
    content = 1.0 + 2.0 * rng.standard_normal((2, 3, 3, 3))
    # one channel where eps matters
    spread = np.array([0.005, 0.5, 0.5]).reshape(1, 3, 1, 1)
    style = -2.0 + spread * rng.standard_normal((2, 3, 4, 2))
    dout = rng.standard_normal((2, 3, 3, 3))
    out, cache = adain_forward(content, style)
    dcontent, dstyle = adain_backward(dout, cache)
    return fingerprint(out=(out, content.shape),
                       dcontent=(dcontent, content.shape),
                       dstyle=(dstyle, style.shape))


if __name__ == "__main__":
    from npnorm.exercises import self_check_main

    self_check_main(globals())
