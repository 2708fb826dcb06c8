r"""Numerical gradient checking: the instrument every backward pass in npnorm is judged by.

A backward pass computes, for a scalar loss :math:`L`, the gradient of :math:`L` with respect to
every input and parameter. To check it without trusting any other code we build the scalar

.. math::  L(\theta) = \sum_i \mathrm{dout}_i \, f(\theta)_i ,

whose gradient is exactly what ``backward(dout)`` claims to return, and estimate
:math:`\partial L / \partial \theta_j` for every element :math:`\theta_j` by central differences.

Three choices make the check trustworthy:

* **float64.** Central differences lose about half of the available digits; in float32 that leaves
  three or four, too few to tell a right backward pass from a slightly wrong one.
* **A random upstream gradient.** With ``dout = 1`` (or ``loss = out.sum()``) the true input
  gradient of every mean-centring normalizer is exactly zero, so a backward pass that returns zeros -
  or forgets a term that vanishes in that special case - passes. A random ``dout`` has no such blind
  spot. The default is random; ``dout="ones"`` exists only to demonstrate the pitfall.
* **A fourth-order stencil.** The estimate

  .. math:: \frac{\partial L}{\partial \theta_j} \approx
            \frac{-L(\theta_j + 2h) + 8L(\theta_j + h) - 8L(\theta_j - h) + L(\theta_j - 2h)}{12h}

  has truncation error :math:`O(h^4)` instead of the :math:`O(h^2)` of the two-point formula
  :math:`(L(\theta_j+h) - L(\theta_j-h))/2h`, so a larger step can be used and the round-off error
  :math:`\sim \epsilon_{mach} |L| / h` shrinks with it: typically ``1e-12`` absolute instead of
  ``1e-10``. Pass ``stencil=2`` for the textbook two-point formula.

The comparison is the elementwise relative error with a floored denominator,

.. math:: r_j = \frac{|a_j - n_j|}{\max(|a_j| + |n_j|,\ \text{floor})},

reported per input as its maximum and the index where it occurs. The floor keeps gradients that are
(almost) exactly zero from turning round-off noise into a huge relative error. It is the larger of a
fixed ``floor`` (``1e-4``) and what the numerical estimate can resolve at all: evaluating
:math:`L` in float64 carries a round-off of about :math:`\epsilon_{mach} \sum_i |\mathrm{dout}_i f_i|`,
which the difference quotient divides by :math:`h`, so

.. math:: \text{floor} = \max\Big(10^{-4},\ \frac{10\,\epsilon_{mach} \sum_i |\mathrm{dout}_i f_i| / h}{\text{tolerance}}\Big).

Entries below that floor are judged by their absolute error against the round-off level; everything
larger by its relative error. A gradient that is truly zero (for example a bias followed by batch
norm) therefore passes when the estimate is zero up to round-off, and fails when it is not.
"""

from __future__ import annotations

import copy
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_TOLERANCE",
    "GradcheckError",
    "GradientComparison",
    "GradcheckReport",
    "numerical_gradient",
    "relative_error",
    "compare_gradients",
    "check_gradients",
    "check_layer",
    "make_upstream",
]

#: Relative error below which an analytic gradient is accepted (float64, fourth-order stencil).
DEFAULT_TOLERANCE = 1e-7
#: Floor for the denominator of the relative error.
DEFAULT_FLOOR = 1e-4
#: Step sizes that work for the fourth-order and the two-point stencil on O(1)-scaled inputs.
DEFAULT_STEP = {4: 1e-3, 2: 1e-6}


class GradcheckError(AssertionError):
    """Raised when an analytic gradient disagrees with central differences."""

    def __init__(self, report: GradcheckReport):
        self.report = report
        super().__init__(str(report))


def roundoff_floor(out: np.ndarray, dout: np.ndarray, h: float, tolerance: float, floor: float = DEFAULT_FLOOR) -> float:
    """The denominator floor for a check: ``floor``, or larger where round-off in ``sum(dout * out)``
    divided by ``h`` would dominate relative errors of entries smaller than it (see the module docstring)."""
    noise = 10 * np.finfo(np.float64).eps * float(np.sum(np.abs(np.asarray(dout, np.float64) * np.asarray(out, np.float64)))) / h
    return max(floor, noise / tolerance)


def relative_error(analytic: np.ndarray, numeric: np.ndarray, floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """Elementwise ``|a - n| / max(|a| + |n|, floor)``."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    return np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), floor)


def numerical_gradient(
    f: Callable[[], np.ndarray],
    x: np.ndarray,
    dout: np.ndarray,
    h: float | None = None,
    stencil: int = 4,
    indices: Sequence[tuple[int, ...]] | None = None,
) -> np.ndarray:
    """Central-difference estimate of ``d/dx sum(dout * f())``.

    ``f`` takes no arguments and must read ``x`` (which is perturbed in
    place, one element at a time, and restored afterwards). ``indices``
    restricts the estimate to some elements (the others are left as NaN);
    by default every element is perturbed.
    """
    if stencil not in DEFAULT_STEP:
        raise ValueError(f"stencil must be 2 or 4, got {stencil!r}")
    if h is None:
        h = DEFAULT_STEP[stencil]
    if x.dtype != np.float64:
        raise TypeError("numerical_gradient needs a float64 array to "
                        f"perturb, got {x.dtype}")
    dout = np.asarray(dout, dtype=np.float64)

    def loss() -> float:
        out = np.asarray(f(), dtype=np.float64)
        if out.shape != dout.shape:
            raise ValueError(f"f() returned shape {out.shape} but dout has "
                             f"shape {dout.shape}")
        return float(np.sum(out * dout))

    grad = (np.full(x.shape, np.nan) if indices is not None
            else np.zeros(x.shape))
    it = indices if indices is not None else np.ndindex(x.shape)
    for idx in it:
        old = x[idx]
        if stencil == 2:
            x[idx] = old + h
            lp = loss()
            x[idx] = old - h
            lm = loss()
            grad[idx] = (lp - lm) / (2 * h)
        else:
            x[idx] = old + 2 * h
            lp2 = loss()
            x[idx] = old + h
            lp1 = loss()
            x[idx] = old - h
            lm1 = loss()
            x[idx] = old - 2 * h
            lm2 = loss()
            grad[idx] = (-lp2 + 8 * lp1 - 8 * lm1 + lm2) / (12 * h)
        x[idx] = old
    return grad


@dataclass
class GradientComparison:
    """The comparison of one analytic gradient with its numerical estimate."""

    name: str
    shape: tuple[int, ...]
    max_rel_error: float
    worst_index: tuple[int, ...]
    analytic_at_worst: float
    numeric_at_worst: float
    tolerance: float
    hint: str = ""
    analytic: np.ndarray | None = field(default=None, repr=False)
    numeric: np.ndarray | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        return bool(self.max_rel_error <= self.tolerance)


@dataclass
class GradcheckReport:
    """Per-gradient results of one gradient check; ``str(report)`` is a table a learner can read."""

    label: str
    comparisons: list[GradientComparison]
    tolerance: float
    upstream: str
    problems: list[str] = field(default_factory=list)
    floor: float = DEFAULT_FLOOR

    @property
    def passed(self) -> bool:
        return not self.problems and all(c.passed for c in self.comparisons)

    @property
    def max_rel_error(self) -> float:
        return max((c.max_rel_error for c in self.comparisons), default=0.0)

    def __getitem__(self, name: str) -> GradientComparison:
        for c in self.comparisons:
            if c.name == name:
                return c
        raise KeyError(name)

    def raise_if_failed(self) -> GradcheckReport:
        if not self.passed:
            raise GradcheckError(self)
        return self

    def __str__(self) -> str:
        """The report, every line at most 79 characters (it is printed in the book)."""
        verdict = "passed" if self.passed else "FAILED"
        width = 10          # a longer name gets a line of its own, so the table stays narrow
        wrap = textwrap.TextWrapper(width=79, subsequent_indent="     ", break_on_hyphens=False)
        lines = [f"Gradient check {verdict} for {self.label}"]
        lines += wrap.wrap(f"  (float64, {self.upstream} upstream gradient, tolerance {self.tolerance:.0e}, "
                           f"denominator floor {self.floor:.0e})")
        lines += [
            f"  {'gradient':<{width}}{'shape':<13}{'max rel. error':<16}{'worst index':<14}"
            f"{'analytic':>12}{'numerical':>12}",
        ]
        for c in self.comparisons:
            flag = "ok" if c.passed else "FAIL"
            name = c.name
            if len(name) >= width:
                lines.append(f"  {name}")
                name = ""
            lines.append(
                f"  {name:<{width}}{str(c.shape):<13}{c.max_rel_error:<9.2e}{flag:<7}"
                f"{str(c.worst_index):<14}{c.analytic_at_worst:>12.4e}{c.numeric_at_worst:>12.4e}"
            )
        for p in self.problems:
            lines += wrap.wrap(f"  problem: {p}")
        for c in self.comparisons:
            if not c.passed:
                lines += wrap.wrap(
                    f"  -> d{c.name} is wrong: at index {c.worst_index} your backward gives "
                    f"{c.analytic_at_worst:.6g}, central differences give {c.numeric_at_worst:.6g}. "
                    f"A correct float64 backward scores below {c.tolerance:.0e} (typically 1e-12 to 1e-9)."
                )
                if c.hint:
                    lines += wrap.wrap(f"     hint: {c.hint}")
        return "\n".join(lines)


def _diagnose(analytic: np.ndarray, numeric: np.ndarray) -> str:
    """A short hint about the most common ways a backward pass goes wrong."""
    a = analytic.ravel()
    n = numeric.ravel()
    if not np.all(np.isfinite(a)):
        return "the analytic gradient contains NaN or Inf."
    scale = np.max(np.abs(n))
    if scale == 0:
        return "the true gradient is zero here, but yours is not."
    if np.max(np.abs(a)) <= 1e-12 * scale:
        return "your gradient is all zeros: is the term for this argument missing or never returned?"
    ratio = float(np.dot(a, n) / np.dot(n, n))
    if abs(ratio - 1.0) < 1e-5 and np.allclose(a, n, rtol=1e-5, atol=1e-7 * scale):
        return (
            "the two agree to about 5 digits everywhere, so this looks like round-off in the numerical "
            "estimate rather than a wrong formula: is the input ill-conditioned (a tiny variance)? "
            "Try a smaller or larger step h."
        )
    if np.allclose(a, ratio * n, rtol=1e-6, atol=1e-9 * scale):
        if np.isclose(ratio, -1.0):
            return "your gradient has the wrong sign everywhere."
        return (
            f"your gradient is the true one times {ratio:.6g} everywhere: look for a wrong constant "
            "factor (1/N vs 1/(N-1), a missing 2, a scale applied twice)."
        )
    if np.allclose(a.reshape(analytic.shape).sum(), n.sum(), rtol=1e-6, atol=1e-9 * scale * n.size):
        return (
            "your gradient sums to the right total but is distributed wrongly: a term that depends on "
            "each element (such as x_hat * mean(g * x_hat)) may be missing or wrong."
        )
    return "compare your backward pass term by term with the derivation; check reduced axes and broadcasting."


def compare_gradients(
    name: str,
    analytic: np.ndarray | None,
    numeric: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
    floor: float = DEFAULT_FLOOR,
) -> GradientComparison:
    """Compare one analytic gradient with its numerical estimate (NaN entries of ``numeric`` are skipped)."""
    numeric = np.asarray(numeric, dtype=np.float64)
    if analytic is None:
        analytic_arr = np.zeros_like(numeric)
        hint = "backward returned None for this argument."
        err = np.full(numeric.shape, np.inf)
    else:
        analytic_arr = np.asarray(analytic, dtype=np.float64)
        if analytic_arr.shape != numeric.shape:
            return GradientComparison(
                name, numeric.shape, float("inf"), (), float("nan"), float("nan"), tolerance,
                hint=f"your gradient has shape {analytic_arr.shape}, expected {numeric.shape} "
                "(the gradient of an argument has that argument's shape).",
                analytic=analytic_arr, numeric=numeric,
            )
        err = relative_error(analytic_arr, numeric, floor)
        err = np.where(np.isnan(numeric), 0.0, err)
        err = np.where(np.isfinite(analytic_arr) | np.isnan(numeric), err, np.inf)
        hint = ""
    if err.size == 0:
        return GradientComparison(name, numeric.shape, 0.0, (), 0.0, 0.0, tolerance)
    flat = int(np.argmax(err))
    worst = tuple(int(i) for i in np.unravel_index(flat, err.shape))
    comp = GradientComparison(
        name=name,
        shape=tuple(numeric.shape),
        max_rel_error=float(err.flat[flat]),
        worst_index=worst,
        analytic_at_worst=float(analytic_arr.flat[flat]),
        numeric_at_worst=float(numeric.flat[flat]),
        tolerance=tolerance,
        analytic=analytic_arr,
        numeric=numeric,
    )
    if not comp.passed and not hint:
        mask = ~np.isnan(numeric)
        hint = _diagnose(analytic_arr[mask], numeric[mask])
    comp.hint = hint
    return comp


def make_upstream(shape: tuple[int, ...], dout: str | np.ndarray | None, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """The upstream gradient for a check and its description: random N(0, 1) by default."""
    if dout is None or (isinstance(dout, str) and dout == "random"):
        return rng.standard_normal(shape), "random"
    if isinstance(dout, str) and dout == "ones":
        return np.ones(shape), "all-ones (blind to many bugs!)"
    arr = np.asarray(dout, dtype=np.float64)
    if arr.shape != tuple(shape):
        raise ValueError(f"dout has shape {arr.shape}, but the output has shape {tuple(shape)}")
    return arr, "given"


def _pick_indices(shape: tuple[int, ...], samples: int | None, rng: np.random.Generator):
    size = int(np.prod(shape))
    if samples is None or samples >= size:
        return None
    flat = rng.choice(size, size=samples, replace=False)
    return [tuple(int(i) for i in np.unravel_index(k, shape)) for k in flat]


def _require_float64(name: str, arr: np.ndarray) -> None:
    if arr.dtype != np.float64:
        raise TypeError(
            f"gradient checks run in float64, but {name} has dtype {arr.dtype}: central differences in "
            "float32 keep too few digits to judge a backward pass. Build the check in float64."
        )


def check_gradients(
    forward: Callable[..., tuple[np.ndarray, Any]],
    backward: Callable[[np.ndarray, Any], Any],
    inputs: Mapping[str, np.ndarray],
    *,
    dout: str | np.ndarray | None = None,
    seed: int = 0,
    h: float | None = None,
    stencil: int = 4,
    tolerance: float = DEFAULT_TOLERANCE,
    floor: float = DEFAULT_FLOOR,
    wrt: Sequence[str] | None = None,
    samples: int | None = None,
    label: str | None = None,
    raise_on_failure: bool = True,
) -> GradcheckReport:
    """Check a pure ``forward(**inputs) -> (out, cache)`` / ``backward(dout, cache)`` pair.

    ``backward`` returns the gradients in the order of ``inputs`` (a tuple, or a single array when
    there is one input), or a dict keyed by input name. ``wrt`` restricts the check to some inputs
    (the others are treated as constants, e.g. ``eps``-like arrays); ``samples`` checks a random subset
    of each array's elements.
    """
    rng = np.random.default_rng(seed)
    names = [k for k, v in inputs.items() if isinstance(v, np.ndarray)]
    wrt = list(wrt) if wrt is not None else names
    for k in wrt:
        _require_float64(k, np.asarray(inputs[k]))
    # private copies: the caller's arrays are never perturbed
    values = {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
    out, cache = forward(**values)
    upstream, desc = make_upstream(np.shape(out), dout, rng)
    floor = roundoff_floor(out, upstream, h if h is not None else DEFAULT_STEP[stencil], tolerance, floor)
    grads = backward(upstream.copy(), cache)
    if isinstance(grads, Mapping):
        by_name = dict(grads)
    else:
        if not isinstance(grads, tuple):
            grads = (grads,)
        by_name = dict(zip(names, grads))

    comparisons = []
    problems = []
    for k in wrt:
        x = values[k]
        idx = _pick_indices(x.shape, samples, rng)
        num = numerical_gradient(lambda: forward(**values)[0], x, upstream, h=h, stencil=stencil, indices=idx)
        if k not in by_name:
            problems.append(f"backward returned no gradient for '{k}'")
            continue
        comparisons.append(compare_gradients(k, by_name[k], num, tolerance, floor))
    report = GradcheckReport(label or getattr(forward, "__name__", "forward"), comparisons, tolerance, desc, problems, floor)
    if raise_on_failure:
        report.raise_if_failed()
    return report


def check_layer(
    layer: Any,
    *inputs: np.ndarray,
    dout: str | np.ndarray | None = None,
    seed: int = 0,
    h: float | None = None,
    stencil: int = 4,
    tolerance: float = DEFAULT_TOLERANCE,
    floor: float = DEFAULT_FLOOR,
    params: bool | Sequence[str] = True,
    check_inputs: bool = True,
    input_names: Sequence[str] | None = None,
    constant_inputs: Sequence[str] = (),
    samples: int | None = None,
    raise_on_failure: bool = True,
) -> GradcheckReport:
    """Gradient-check a layer with respect to every input and every parameter.

    The layer is deep-copied before anything runs, and every evaluation starts from that copy, so
    buffers the forward pass updates (running statistics, power-iteration vectors, random dropout
    masks) are the same in every evaluation and the layer passed in is left untouched. The layer's
    current mode (``train()`` / ``eval()``) is the one checked.

    ``params`` selects the parameters to check (``True``: all, ``False``: none, or a list of names);
    ``check_inputs=False`` skips the input gradients. Integer inputs (token ids, labels) are not
    differentiable: they are passed through unchanged and not checked (the layer's ``backward``
    returns ``None`` in their place). The input gradient(s) are compared under the
    names in ``input_names`` (default ``x`` for one
    input, ``input0``, ``input1``, ... for several); the parameters under their names in
    ``layer.params``.

    ``constant_inputs`` names inputs that are not differentiated (integer class labels, style
    indices): they are passed unchanged and never perturbed, and ``backward`` returns gradients for
    the other inputs only, in order.
    """
    rng = np.random.default_rng(seed)
    if input_names is None:
        input_names = ["x"] if len(inputs) == 1 else [f"input{i}" for i in range(len(inputs))]
    if len(input_names) != len(inputs):
        raise ValueError(f"got {len(inputs)} inputs but {len(input_names)} input_names")
    unknown = set(constant_inputs) - set(input_names)
    if unknown:
        raise ValueError(f"constant_inputs {sorted(unknown)} are not among the input names {list(input_names)}")
    # constant inputs (class labels, style indices, token ids) are data, not something to
    # differentiate: named in constant_inputs, or of an integer dtype. They are passed unchanged and
    # never perturbed or compared.
    const = [name in constant_inputs or np.issubdtype(np.asarray(x).dtype, np.integer)
             for name, x in zip(input_names, inputs)]
    xs = [np.array(x) if c else np.array(x, dtype=np.float64) for x, c in zip(inputs, const)]
    for name, original, c in zip(input_names, inputs, const):
        if not c:
            _require_float64(name, np.asarray(original))
    snapshot = copy.deepcopy(layer)
    param_names = list(snapshot.params) if params is True else list(params or [])
    for k in param_names:
        _require_float64(f"parameter '{k}'", snapshot.params[k])

    work = copy.deepcopy(snapshot)
    out = work(*[x.copy() for x in xs])
    upstream, desc = make_upstream(np.shape(out), dout, rng)
    floor = roundoff_floor(out, upstream, h if h is not None else DEFAULT_STEP[stencil], tolerance, floor)
    dx = work.backward(upstream.copy())
    n_diff = len(xs) - sum(const)
    dxs = dx if isinstance(dx, tuple) else (() if dx is None and n_diff == 0 else (dx,))
    problems = []
    if n_diff and len(dxs) != n_diff:
        problems.append(f"backward returned {len(dxs)} input gradients for {n_diff} differentiable inputs")

    def run() -> np.ndarray:
        return copy.deepcopy(snapshot)(*[x.copy() for x in xs])

    comparisons = []
    diff = [(name, x) for name, x, c in zip(input_names, xs, const) if not c]
    for i, (name, x) in enumerate(diff if check_inputs else []):
        num = numerical_gradient(run, x, upstream, h=h, stencil=stencil, indices=_pick_indices(x.shape, samples, rng))
        comparisons.append(compare_gradients(name, dxs[i] if i < len(dxs) else None, num, tolerance, floor))
    for k in param_names:
        p = snapshot.params[k]
        num = numerical_gradient(run, p, upstream, h=h, stencil=stencil, indices=_pick_indices(p.shape, samples, rng))
        if k not in work.grads:
            problems.append(f"backward did not fill layer.grads['{k}']")
            continue
        comparisons.append(compare_gradients(k, work.grads[k], num, tolerance, floor))
    mode = "train" if getattr(layer, "training", True) else "eval"
    report = GradcheckReport(f"{type(layer).__name__} ({mode} mode)", comparisons, tolerance, desc, problems, floor)
    if raise_on_failure:
        report.raise_if_failed()
    return report
