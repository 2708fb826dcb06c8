r"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, 2018): balancing the tasks of a multi-task
network by normalizing their gradient norms.

The network minimizes :math:`\sum_i w_i L_i` over :math:`T` tasks. Let :math:`W` be the last shared
layer, :math:`g_i = \lVert\nabla_W L_i\rVert_2` the norm of task :math:`i`'s unweighted gradient
there, and

.. math::
   G_i = \lVert\nabla_W (w_i L_i)\rVert_2 = w_i\,g_i, \qquad \bar G = \frac1T\sum_j G_j, \qquad
   \tilde L_i = \frac{L_i(t)}{L_i(0)}, \qquad r_i = \frac{\tilde L_i}{\frac1T\sum_j \tilde L_j}.

A task that has trained less (large :math:`r_i`) should get a larger gradient. GradNorm moves the
weights to reduce

.. math:: L_{\text{grad}} = \sum_i \big|\,G_i - \bar G\, r_i^{\alpha}\,\big|                 \tag{GradNorm}

with the target :math:`\bar G r_i^\alpha` held constant (the paper differentiates through
:math:`G_i` only). Since :math:`G_i = w_i g_i` and :math:`g_i` does not depend on :math:`w_i`,

.. math:: \frac{\partial L_{\text{grad}}}{\partial w_i} = \operatorname{sign}\!\big(G_i - \bar G r_i^\alpha\big)\; g_i ,
                                                                                        \tag{GradNorm-back}

no second-order derivative is needed. After the step the weights are renormalized to
:math:`\sum_i w_i = T`. :math:`\alpha` (default 1.5, a common choice) sets how strongly slow tasks
are pulled up.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_positive_int

__all__ = ["GradNorm", "gradnorm_weight_grad"]


def gradnorm_weight_grad(weights: np.ndarray, grad_norms: np.ndarray,
                         loss_ratios: np.ndarray,
                         alpha: float) -> tuple[np.ndarray, float]:
    """Equation (GradNorm-back): ``(dL_grad/dw, L_grad)`` for task weights
    ``weights``, unweighted gradient norms ``grad_norms`` (:math:`g_i`) and
    loss ratios ``loss_ratios`` (:math:`\\tilde L_i`)."""
    w = np.asarray(weights, dtype=np.float64)
    g = np.asarray(grad_norms, dtype=np.float64)
    Lt = np.asarray(loss_ratios, dtype=np.float64)
    G = w * g
    r = Lt / Lt.mean()
    target = G.mean() * r ** alpha            # a constant in the derivative
    return np.sign(G - target) * g, float(np.abs(G - target).sum())


class GradNorm:
    """The task weights of GradNorm and their update.

    ``gn = GradNorm(T, alpha=1.5, lr=0.025)``; each training step, after computing the tasks'
    losses and the norms of their unweighted gradients at the last shared layer, call
    ``gn.step(losses, grad_norms)``; use ``gn.weights`` to weight the losses of the next step.
    The first call records :math:`L_i(0)`.
    """

    def __init__(self, num_tasks: int, alpha: float = 1.5, lr: float = 0.025) -> None:
        self.num_tasks = check_positive_int(num_tasks, "num_tasks", "GradNorm")
        self.alpha, self.lr = float(alpha), float(lr)
        self.weights = np.ones(self.num_tasks)
        self.initial_losses: np.ndarray | None = None
        self.last_loss_grad = float("nan")

    def step(self, losses, grad_norms) -> np.ndarray:
        losses = np.asarray(losses, dtype=np.float64)
        if self.initial_losses is None:
            self.initial_losses = losses.copy()
        dw, self.last_loss_grad = gradnorm_weight_grad(self.weights, grad_norms, losses / self.initial_losses,
                                                       self.alpha)
        w = np.maximum(self.weights - self.lr * dw, 1e-6)
        self.weights = w * self.num_tasks / w.sum()
        return self.weights
